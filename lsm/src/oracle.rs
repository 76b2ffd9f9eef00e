//! The crash-consistency oracle: a seeded random workload of puts, deletes, syncs, flushes,
//! compactions and value-log collections on a [`SimFs`], crashed at random points (unsynced bytes
//! lost, partly kept, torn, or kept or lost per 512-byte sector with lost sectors read as zeros),
//! recovered and checked against a model (a `BTreeMap` plus the writes not yet acknowledged), as
//! issue 5 asks:
//!
//! * every acknowledged (synced) write is present after recovery;
//! * of the unacknowledged writes, a prefix in order is present: never a hole, a reordering or a
//!   value that was not written;
//! * reads before the crash see staged writes;
//! * a failed fsync poisons the engine (writes and syncs fail, reads go on);
//! * with [`OracleConfig::disk_full`], a disk that fills up and empties again at random: a write
//!   refused for space has no effect (never read, never recovered), nothing is poisoned, and
//!   writes are accepted again once space is back, across crashes and recoveries on a full disk;
//! * a flipped bit in a table, a sealed value-log segment or the manifest yields an error naming
//!   that file, never wrong data.
//!
//! The simulator can run it per seed (`crash_oracle(seed, &config)`); the engine's tests sweep
//! seeds with it and show that it catches a disk whose fsync lies.

use crate::config::LsmConfig;
use crate::engine::Lsm;
use crate::error::LsmError;
use crate::fs::{CrashMode, FileSystem, SimFs, SimFsOptions};
use crate::outcome::WriteOutcome;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// The crash modes drawn when [`OracleConfig::sector_holes`] is off: every mode but
/// [`CrashMode::Sectors`] (so [`CrashMode::SectorPrefix`]'s zero-filled tails are drawn).
pub const HOLE_FREE_CRASH_MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepRandomPrefix,
    CrashMode::TearLastWrite,
    CrashMode::SectorPrefix,
];

/// What the oracle runs.
#[derive(Clone, Debug)]
pub struct OracleConfig {
    /// Operations per seed (over all crash cycles).
    pub ops: usize,
    /// Distinct keys (few keys make overwrites, deletes and compactions interact).
    pub keys: usize,
    /// Crashes per seed.
    pub crashes: usize,
    /// Inject fsync failures (each operation has a small chance to arm one).
    pub fsync_failures: bool,
    /// After the last recovery, flip one bit in a table, sealed segment or the manifest.
    pub bit_flip: bool,
    /// Run on a broken disk whose fsync lies (the oracle must then fail): for its own test.
    pub broken_fsync: bool,
    /// Let crashes leave holes: draw [`CrashMode::Sectors`] (unsynced sectors kept or lost
    /// independently, lost ones read as zeros) besides the hole-free modes. On by default: WAL
    /// recovery cuts the log at the first bad frame past the synced length its sync markers
    /// claim, dropping the (unacknowledged) frames after a hole (FORMAT.md).
    pub sector_holes: bool,
    /// Fill the disk and give space back at random (off by default, so that existing seeds
    /// draw what they always drew): every operation may then fail with `NoSpace`.
    pub disk_full: bool,
    /// Switch the engine's fault points on (`crate::faults`, BUGGIFY): dangerous-but-legal
    /// choices (early flushes, tiny compaction steps, early value-log rotation and collection,
    /// early WAL writes) are taken at random. On by default: the oracle is a simulation.
    pub fault_points: bool,
    /// The engine configuration (tiny limits exercise every path).
    pub lsm: LsmConfig,
}

impl Default for OracleConfig {
    fn default() -> Self {
        OracleConfig {
            ops: 400,
            keys: 40,
            crashes: 3,
            fsync_failures: true,
            bit_flip: true,
            broken_fsync: false,
            sector_holes: true,
            disk_full: false,
            fault_points: true,
            lsm: LsmConfig::tiny_for_tests(),
        }
    }
}

/// What one seed did (all counts), for the simulator's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OracleReport {
    /// The seed.
    pub seed: u64,
    /// Puts and deletes staged.
    pub writes: u64,
    /// Writes acknowledged by a successful sync.
    pub acknowledged_writes: u64,
    /// Unacknowledged writes that recovery kept (a prefix, as allowed).
    pub unacknowledged_kept: u64,
    /// Unacknowledged writes that recovery dropped.
    pub unacknowledged_lost: u64,
    /// Crashes and recoveries.
    pub crashes: u64,
    /// Injected fsync failures that poisoned the engine.
    pub poisonings: u64,
    /// Flushes, compactions and value-log collections run (engine counters, summed).
    pub flushes: u64,
    /// Compactions finished.
    pub compactions: u64,
    /// Value-log segments collected.
    pub gc_segments: u64,
    /// Bit flips reported as corruption naming the file.
    pub bit_flips_detected: u64,
    /// Bit flips that changed nothing a read could see (e.g. in a dead value).
    pub bit_flips_harmless: u64,
    /// How often each engine fault site fired (`crate::faults`; absent: never), so a sweep can
    /// report the sites that never fired.
    pub faults_fired: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug)]
enum Op {
    Put(Bytes, Bytes),
    Delete(Bytes),
}

fn apply(state: &mut BTreeMap<Bytes, Bytes>, op: &Op) {
    match op {
        Op::Put(k, v) => {
            state.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            state.remove(k);
        }
    }
}

fn replay_hint(seed: u64, config: &OracleConfig) -> String {
    let holes = if config.sector_holes {
        ""
    } else {
        " RINGKV_LSM_SECTOR_HOLES=0"
    };
    let full = if config.disk_full {
        " RINGKV_LSM_DISK_FULL=1"
    } else {
        ""
    };
    format!("replay: cargo test -p ringkv-lsm --release --test crash_oracle -- --exact replay_one_seed with RINGKV_LSM_SEED={seed}{holes}{full}")
}

/// Runs the oracle for one seed; `Err` describes the first violation and how to replay it.
pub fn crash_oracle(seed: u64, config: &OracleConfig) -> Result<OracleReport, String> {
    let mut run = Run {
        seed,
        config,
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6c73_6d5f_6f72_636c),
        report: OracleReport {
            seed,
            ..OracleReport::default()
        },
        base: BTreeMap::new(),
        pending: Vec::new(),
        now_ms: 0,
        op_index: 0,
    };
    let fs = SimFs::new(SimFsOptions {
        fsync_lies: config.broken_fsync,
        fault_points: config.fault_points,
        ..SimFsOptions::seeded(seed)
    });
    let mut lsm = match Lsm::open(fs, config.lsm.clone()) {
        Ok(lsm) => lsm,
        Err(e) => return run.fail(format!("open of an empty disk failed: {e}")),
    };
    for cycle in 0..=config.crashes {
        run.cycle(&mut lsm, cycle)?;
        let stats = lsm.stats();
        run.report.flushes += stats.flushes;
        run.report.compactions += stats.compactions;
        run.report.gc_segments += stats.gc_segments;
        lsm = run.crash_and_recover(lsm, cycle)?;
    }
    if config.disk_full {
        run.space_comes_back(&mut lsm)?;
    }
    if let Some(points) = lsm.fs_mut().fault_points() {
        run.report.faults_fired = points.fired().clone();
    }
    if config.bit_flip {
        flip_one_bit(seed, lsm, &run.base, &mut run.rng, &mut run.report, config)?;
    }
    Ok(run.report)
}

/// One seed's run: the model (the acknowledged state and the writes staged since) and the
/// seeded draws that drive the workload.
struct Run<'a> {
    seed: u64,
    config: &'a OracleConfig,
    rng: ChaCha8Rng,
    report: OracleReport,
    /// The state after every acknowledged write.
    base: BTreeMap<Bytes, Bytes>,
    /// Later writes, in order.
    pending: Vec<Op>,
    now_ms: u64,
    op_index: u64,
}

impl Run<'_> {
    fn fail<T>(&self, what: String) -> Result<T, String> {
        Err(format!(
            "seed {}: {what}\n{}",
            self.seed,
            replay_hint(self.seed, self.config)
        ))
    }

    fn key_count(&self) -> usize {
        self.config.keys.max(1)
    }

    /// The model's state with the staged writes applied: what a read must see.
    fn expected(&self) -> BTreeMap<Bytes, Bytes> {
        let mut expect = self.base.clone();
        for op in &self.pending {
            apply(&mut expect, op);
        }
        expect
    }

    /// The random operations of one cycle, up to the next crash (a poisoning ends it early).
    fn cycle(&mut self, lsm: &mut Lsm<SimFs>, cycle: usize) -> Result<(), String> {
        let ops_per_cycle = self.config.ops / (self.config.crashes + 1).max(1);
        let mut armed = false;
        for _ in 0..ops_per_cycle {
            self.op_index += 1;
            self.now_ms += self.rng.gen_range(0..200);
            if self.config.fsync_failures && !armed && self.rng.gen_ratio(1, 400) {
                lsm.fs_mut().fail_next_fsync();
                armed = true;
            }
            if self.config.disk_full && self.rng.gen_ratio(1, 25) {
                self.fill_or_empty_disk(lsm);
            }
            let key = Bytes::from(format!("key{:04}", self.rng.gen_range(0..self.key_count())));
            let result = self.random_op(lsm, cycle, &key)?;
            if let Err(e) = &result {
                if self.config.disk_full && e.is_no_space() {
                    self.check_refusal(lsm, cycle, &key, e)?;
                    continue;
                }
            }
            if let Err(e) = result {
                self.check_poisoned(lsm, cycle, &key, armed, &e)?;
                self.report.poisonings += 1;
                break;
            }
        }
        Ok(())
    }

    /// Full (a few bytes to a few KiB left) or empty again, half the time each.
    fn fill_or_empty_disk(&mut self, lsm: &mut Lsm<SimFs>) {
        let capacity = if self.rng.gen_bool(0.5) {
            let used = lsm.fs_mut().used_bytes();
            Some(used + self.rng.gen_range(0..6000))
        } else {
            None
        };
        lsm.fs_mut().set_capacity_bytes_max(capacity);
    }

    /// One drawn operation on `key`; its engine result, or a violation seen by a read.
    fn random_op(
        &mut self,
        lsm: &mut Lsm<SimFs>,
        cycle: usize,
        key: &Bytes,
    ) -> Result<Result<(), LsmError>, String> {
        let roll = self.rng.gen_range(0..100);
        let now_ms = self.now_ms;
        Ok(if roll < 50 {
            let value = self.random_value();
            write_until_done(lsm, now_ms, |l| l.put(key.clone(), value.clone())).map(|()| {
                self.report.writes += 1;
                self.pending.push(Op::Put(key.clone(), value));
            })
        } else if roll < 62 {
            write_until_done(lsm, now_ms, |l| l.delete(key.clone(), now_ms)).map(|()| {
                self.report.writes += 1;
                self.pending.push(Op::Delete(key.clone()));
            })
        } else if roll < 76 {
            lsm.sync().map(|()| {
                self.report.acknowledged_writes += self.pending.len() as u64;
                for op in self.pending.drain(..) {
                    apply(&mut self.base, &op);
                }
            })
        } else if roll < 80 {
            lsm.flush()
        } else if roll < 86 {
            // A bounded part of a flush job: crashes land between its steps, and between its
            // freeze and its install.
            lsm.flush_step(self.rng.gen_range(100..8000)).map(|_| ())
        } else if roll < 92 {
            lsm.compact_step(now_ms, self.rng.gen_range(100..8000))
                .map(|_| ())
        } else if roll < 95 {
            // A bounded part of a collection: crashes land between its steps too.
            lsm.collect_value_log_step(self.rng.gen_range(100..8000))
                .map(|_| ())
        } else {
            // A read must see the staged writes.
            let expect = self.expected();
            match lsm.get(key) {
                Ok(got) if got.as_ref() == expect.get(key) => Ok(()),
                Ok(got) => {
                    return self.fail(format!(
                        "cycle {cycle}: get({key:?}) = {got:?}, model says {:?}",
                        expect.get(key)
                    ))
                }
                Err(e) => return self.fail(format!("cycle {cycle}: get failed: {e}")),
            }
        })
    }

    /// A value naming its seed and operation: short, above the separation threshold, or long.
    fn random_value(&mut self) -> Bytes {
        let len = match self.rng.gen_range(0..10) {
            0..=5 => self.rng.gen_range(0..40),
            6..=8 => self.rng.gen_range(49..600),
            _ => self.rng.gen_range(600..3000),
        };
        let mut value = format!("{}:{}:", self.seed, self.op_index).into_bytes();
        value.resize(value.len().max(len), b'x');
        Bytes::from(value)
    }

    /// Refused for space: no effect (the write was not added to the model), and the engine is
    /// not poisoned.
    fn check_refusal(
        &self,
        lsm: &mut Lsm<SimFs>,
        cycle: usize,
        key: &Bytes,
        e: &LsmError,
    ) -> Result<(), String> {
        if lsm.poisoned().is_some() {
            return self.fail(format!("cycle {cycle}: a full disk poisoned ({e})"));
        }
        let expect = self.expected();
        match lsm.get(key) {
            Ok(got) if got.as_ref() == expect.get(key) => Ok(()),
            other => self.fail(format!(
                "cycle {cycle}: after a refusal for space get({key:?}) = {other:?}, model says {:?}",
                expect.get(key)
            )),
        }
    }

    /// A failure is allowed only from an injected fsync failure, which must poison: writes and
    /// syncs fail from now on, reads go on.
    fn check_poisoned(
        &self,
        lsm: &mut Lsm<SimFs>,
        cycle: usize,
        key: &Bytes,
        armed: bool,
        e: &LsmError,
    ) -> Result<(), String> {
        if !armed {
            return self.fail(format!(
                "cycle {cycle}: operation failed with no fault injected: {e}"
            ));
        }
        if lsm.poisoned().is_none() {
            return self.fail(format!(
                "cycle {cycle}: a failed fsync did not poison ({e})"
            ));
        }
        if !matches!(
            lsm.put(key.clone(), Bytes::from_static(b"after")),
            Err(LsmError::Poisoned(_))
        ) {
            return self.fail("a poisoned engine accepted a write".into());
        }
        if !matches!(lsm.sync(), Err(LsmError::Poisoned(_))) {
            return self.fail("a poisoned engine retried a sync".into());
        }
        Ok(())
    }

    /// Crashes the disk (a drawn mode), recovers, and checks the recovered state against the
    /// model.
    fn crash_and_recover(&mut self, lsm: Lsm<SimFs>, cycle: usize) -> Result<Lsm<SimFs>, String> {
        let mut fs = lsm.into_fs();
        let mode = if self.config.sector_holes {
            fs.random_crash_mode_among(&CrashMode::ALL)
        } else {
            fs.random_crash_mode_among(&HOLE_FREE_CRASH_MODES)
        };
        // What each file held durably before the crash, to tell a failure in the unsynced tail
        // (a crash artefact recovery must absorb) from one in fsynced bytes.
        let durable_lens: Vec<(String, u64)> = fs
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| fs.durable_len(&n).map(|l| (n, l)))
            .collect();
        fs.crash(mode);
        self.report.crashes += 1;
        if self.config.disk_full && self.rng.gen_bool(0.5) {
            // Restart on a full disk: recovery must fit in the space the reserve held.
            let used = fs.used_bytes();
            fs.set_capacity_bytes_max(Some(used));
        }
        let mut lsm = match Lsm::open(fs, self.config.lsm.clone()) {
            Ok(lsm) => lsm,
            Err(e) => {
                let text = e.to_string();
                let durable: Vec<String> = durable_lens
                    .iter()
                    .filter(|(n, _)| text.contains(n.as_str()))
                    .map(|(n, l)| format!("{n} held {l} durable bytes before the crash"))
                    .collect();
                return self.fail(format!(
                    "cycle {cycle}: recovery after a {mode:?} crash failed: {e} ({})",
                    if durable.is_empty() {
                        "names no file that existed".to_string()
                    } else {
                        durable.join("; ")
                    }
                ));
            }
        };
        self.check_recovered(&mut lsm, cycle, mode)?;
        Ok(lsm)
    }

    /// The recovered state is the acknowledged one plus a prefix of the writes after it; point
    /// reads agree with the scan. The prefix found becomes the acknowledged state.
    fn check_recovered(
        &mut self,
        lsm: &mut Lsm<SimFs>,
        cycle: usize,
        mode: CrashMode,
    ) -> Result<(), String> {
        let recovered = match read_all(lsm) {
            Ok(r) => r,
            Err(e) => {
                return self.fail(format!("cycle {cycle}: reading after recovery failed: {e}"))
            }
        };
        let mut candidate = self.base.clone();
        let mut kept = None;
        for k in 0..=self.pending.len() {
            if k > 0 {
                apply(&mut candidate, &self.pending[k - 1]);
            }
            if candidate == recovered {
                kept = Some(k);
                break;
            }
        }
        let Some(kept) = kept else {
            let lost: Vec<_> = (self.base)
                .iter()
                .filter(|(k, v)| recovered.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .take(5)
                .collect();
            return self.fail(format!(
                "cycle {cycle}: after a {mode:?} crash the recovered state ({} keys) is no prefix of \
                 the writes (acknowledged {} keys, {} unacknowledged writes); keys differing from \
                 the acknowledged state: {lost:?}",
                recovered.len(),
                self.base.len(),
                self.pending.len()
            ));
        };
        self.report.unacknowledged_kept += kept as u64;
        self.report.unacknowledged_lost += (self.pending.len() - kept) as u64;
        self.base = candidate;
        self.pending.clear();
        for k in 0..self.key_count() {
            let key = format!("key{k:04}");
            match lsm.get(key.as_bytes()) {
                Ok(got) if got.as_ref() == self.base.get(key.as_bytes()) => {}
                other => {
                    return self.fail(format!(
                        "cycle {cycle}: get({key}) = {other:?} after recovery, scan says {:?}",
                        self.base.get(key.as_bytes())
                    ))
                }
            }
        }
        Ok(())
    }

    /// Space back: writes are accepted again without a restart.
    fn space_comes_back(&mut self, lsm: &mut Lsm<SimFs>) -> Result<(), String> {
        lsm.fs_mut().set_capacity_bytes_max(None);
        let key = Bytes::from_static(b"key-after-full");
        if let Err(e) = write_until_done(lsm, self.now_ms, |l| {
            l.put(key.clone(), Bytes::from_static(b"v"))
        })
        .and_then(|()| lsm.sync())
        {
            return self.fail(format!("space came back but a write still failed: {e}"));
        }
        self.base.insert(key, Bytes::from_static(b"v"));
        if lsm.space_short() {
            return self.fail("space came back but the engine is still short of space".into());
        }
        Ok(())
    }
}

/// Runs a write, absorbing `Stalled` with compaction steps (bounded).
fn write_until_done(
    lsm: &mut Lsm<SimFs>,
    now_ms: u64,
    mut write: impl FnMut(&mut Lsm<SimFs>) -> Result<WriteOutcome, LsmError>,
) -> Result<(), LsmError> {
    for _ in 0..10_000 {
        match write(lsm)? {
            WriteOutcome::Written { .. } => return Ok(()),
            WriteOutcome::Stalled { .. } => {
                lsm.compact_step(now_ms, 1 << 20)?;
            }
        }
    }
    Err(LsmError::Poisoned(
        "write stalled for 10000 compaction steps".into(),
    ))
}

fn read_all(lsm: &mut Lsm<SimFs>) -> Result<BTreeMap<Bytes, Bytes>, LsmError> {
    Ok(lsm.scan(b"", None, usize::MAX)?.into_iter().collect())
}

fn flip_one_bit(
    seed: u64,
    lsm: Lsm<SimFs>,
    model: &BTreeMap<Bytes, Bytes>,
    rng: &mut ChaCha8Rng,
    report: &mut OracleReport,
    config: &OracleConfig,
) -> Result<(), String> {
    let fail = |what: String| {
        Err(format!(
            "seed {seed}: {what}\n{}",
            replay_hint(seed, config)
        ))
    };
    let mut fs = lsm.into_fs();
    let names = fs.list().map_err(|e| e.to_string())?;
    // The WAL and the active value-log segment are excluded: a flip in their last record cannot
    // be told from a torn write, which recovery legitimately truncates (FORMAT.md, limits).
    let active_vlog = names.iter().filter(|n| n.ends_with(".vlog")).max().cloned();
    let targets: Vec<String> = names
        .into_iter()
        .filter(|n| {
            n.ends_with(".sst")
                || n == "MANIFEST"
                || (n.ends_with(".vlog") && Some(n) != active_vlog.as_ref())
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let target = targets[rng.gen_range(0..targets.len())].clone();
    if fs.flip_random_bit(&target).is_none() {
        return Ok(());
    }
    let names_file = |e: &LsmError| e.to_string().contains(&target);
    let mut lsm = match Lsm::open(fs, config.lsm.clone()) {
        Ok(lsm) => lsm,
        Err(e) if names_file(&e) => {
            report.bit_flips_detected += 1;
            return Ok(());
        }
        Err(e) => {
            return fail(format!(
                "flip in {target}: open failed without naming it: {e}"
            ))
        }
    };
    let mut detected = false;
    match read_all(&mut lsm) {
        Ok(got) if &got == model => {}
        Ok(_) => return fail(format!("flip in {target}: a scan returned wrong data")),
        Err(e) if names_file(&e) => detected = true,
        Err(e) => {
            return fail(format!(
                "flip in {target}: scan error does not name it: {e}"
            ))
        }
    }
    for k in 0..config.keys.max(1) {
        let key = format!("key{k:04}");
        match lsm.get(key.as_bytes()) {
            Ok(got) if got.as_ref() == model.get(key.as_bytes()) => {}
            Ok(got) => {
                return fail(format!(
                    "flip in {target}: get({key}) returned {got:?}, model {:?}",
                    model.get(key.as_bytes())
                ))
            }
            Err(e) if names_file(&e) => detected = true,
            Err(e) => return fail(format!("flip in {target}: get error does not name it: {e}")),
        }
    }
    if detected {
        report.bit_flips_detected += 1;
    } else {
        report.bit_flips_harmless += 1;
    }
    Ok(())
}
