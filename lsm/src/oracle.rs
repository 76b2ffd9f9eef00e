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
    format!("replay: cargo test -p ringkv-lsm --release --test crash_oracle -- --exact replay_one_seed with RINGKV_LSM_SEED={seed}{holes}")
}

/// Runs the oracle for one seed; `Err` describes the first violation and how to replay it.
pub fn crash_oracle(seed: u64, config: &OracleConfig) -> Result<OracleReport, String> {
    let fail = |what: String| {
        Err(format!(
            "seed {seed}: {what}\n{}",
            replay_hint(seed, config)
        ))
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6c73_6d5f_6f72_636c);
    let fs = SimFs::new(SimFsOptions {
        fsync_lies: config.broken_fsync,
        ..SimFsOptions::seeded(seed)
    });
    let mut lsm = match Lsm::open(fs, config.lsm.clone()) {
        Ok(lsm) => lsm,
        Err(e) => return fail(format!("open of an empty disk failed: {e}")),
    };
    let mut report = OracleReport {
        seed,
        ..OracleReport::default()
    };
    // `base`: the state after every acknowledged write; `pending`: later writes, in order.
    let mut base: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut pending: Vec<Op> = Vec::new();
    let mut now_ms: u64 = 0;
    let ops_per_cycle = config.ops / (config.crashes + 1).max(1);
    let key_count = config.keys.max(1);
    let mut op_index: u64 = 0;
    for cycle in 0..=config.crashes {
        let mut armed = false;
        for _ in 0..ops_per_cycle {
            op_index += 1;
            now_ms += rng.gen_range(0..200);
            if config.fsync_failures && !armed && rng.gen_ratio(1, 400) {
                lsm.fs_mut().fail_next_fsync();
                armed = true;
            }
            if config.disk_full && rng.gen_ratio(1, 25) {
                // Full (a few bytes to a few KiB left) or empty again, half the time each.
                let capacity = if rng.gen_bool(0.5) {
                    let used = lsm.fs_mut().used_bytes();
                    Some(used + rng.gen_range(0..6000))
                } else {
                    None
                };
                lsm.fs_mut().set_capacity_bytes_max(capacity);
            }
            let key = Bytes::from(format!("key{:04}", rng.gen_range(0..key_count)));
            let roll = rng.gen_range(0..100);
            let result: Result<(), LsmError> = if roll < 50 {
                let len = match rng.gen_range(0..10) {
                    0..=5 => rng.gen_range(0..40),
                    6..=8 => rng.gen_range(49..600),
                    _ => rng.gen_range(600..3000),
                };
                let mut value = format!("{seed}:{op_index}:").into_bytes();
                value.resize(value.len().max(len), b'x');
                let value = Bytes::from(value);
                write_until_done(&mut lsm, now_ms, |l| l.put(key.clone(), value.clone())).map(
                    |()| {
                        report.writes += 1;
                        pending.push(Op::Put(key.clone(), value));
                    },
                )
            } else if roll < 62 {
                write_until_done(&mut lsm, now_ms, |l| l.delete(key.clone(), now_ms)).map(|()| {
                    report.writes += 1;
                    pending.push(Op::Delete(key.clone()));
                })
            } else if roll < 76 {
                lsm.sync().map(|()| {
                    report.acknowledged_writes += pending.len() as u64;
                    for op in pending.drain(..) {
                        apply(&mut base, &op);
                    }
                })
            } else if roll < 80 {
                lsm.flush()
            } else if roll < 92 {
                lsm.compact_step(now_ms, rng.gen_range(100..8000))
                    .map(|_| ())
            } else if roll < 95 {
                lsm.gc_value_log_step().map(|_| ())
            } else {
                // A read must see the staged writes.
                let mut expect = base.clone();
                for op in &pending {
                    apply(&mut expect, op);
                }
                match lsm.get(&key) {
                    Ok(got) if got.as_ref() == expect.get(&key) => Ok(()),
                    Ok(got) => {
                        return fail(format!(
                            "cycle {cycle}: get({key:?}) = {got:?}, model says {:?}",
                            expect.get(&key)
                        ))
                    }
                    Err(e) => return fail(format!("cycle {cycle}: get failed: {e}")),
                }
            };
            if let Err(e) = &result {
                if config.disk_full && e.is_no_space() {
                    // Refused for space: no effect (the write was not added to the model), and
                    // the engine is not poisoned.
                    if lsm.poisoned().is_some() {
                        return fail(format!("cycle {cycle}: a full disk poisoned ({e})"));
                    }
                    let mut expect = base.clone();
                    for op in &pending {
                        apply(&mut expect, op);
                    }
                    match lsm.get(&key) {
                        Ok(got) if got.as_ref() == expect.get(&key) => {}
                        other => {
                            return fail(format!(
                                "cycle {cycle}: after a refusal for space get({key:?}) = \
                                 {other:?}, model says {:?}",
                                expect.get(&key)
                            ))
                        }
                    }
                    continue;
                }
            }
            if let Err(e) = result {
                if !armed {
                    return fail(format!(
                        "cycle {cycle}: operation failed with no fault injected: {e}"
                    ));
                }
                // A failed fsync must poison: writes and syncs fail from now on, reads go on.
                if lsm.poisoned().is_none() {
                    return fail(format!(
                        "cycle {cycle}: a failed fsync did not poison ({e})"
                    ));
                }
                if !matches!(
                    lsm.put(key.clone(), Bytes::from_static(b"after")),
                    Err(LsmError::Poisoned(_))
                ) {
                    return fail("a poisoned engine accepted a write".into());
                }
                if !matches!(lsm.sync(), Err(LsmError::Poisoned(_))) {
                    return fail("a poisoned engine retried a sync".into());
                }
                report.poisonings += 1;
                break;
            }
        }
        let stats = lsm.stats();
        report.flushes += stats.flushes;
        report.compactions += stats.compactions;
        report.gc_segments += stats.gc_segments;

        // Crash and recover.
        let mut fs = lsm.into_fs();
        let mode = if config.sector_holes {
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
        report.crashes += 1;
        if config.disk_full && rng.gen_bool(0.5) {
            // Restart on a full disk: recovery must fit in the space the reserve held.
            let used = fs.used_bytes();
            fs.set_capacity_bytes_max(Some(used));
        }
        lsm = match Lsm::open(fs, config.lsm.clone()) {
            Ok(lsm) => lsm,
            Err(e) => {
                let text = e.to_string();
                let durable: Vec<String> = durable_lens
                    .iter()
                    .filter(|(n, _)| text.contains(n.as_str()))
                    .map(|(n, l)| format!("{n} held {l} durable bytes before the crash"))
                    .collect();
                return fail(format!(
                    "cycle {cycle}: recovery after a {mode:?} crash failed: {e} ({})",
                    if durable.is_empty() {
                        "names no file that existed".to_string()
                    } else {
                        durable.join("; ")
                    }
                ));
            }
        };
        let recovered = match read_all(&mut lsm) {
            Ok(r) => r,
            Err(e) => return fail(format!("cycle {cycle}: reading after recovery failed: {e}")),
        };
        let mut candidate = base.clone();
        let mut kept = None;
        for k in 0..=pending.len() {
            if k > 0 {
                apply(&mut candidate, &pending[k - 1]);
            }
            if candidate == recovered {
                kept = Some(k);
                break;
            }
        }
        let Some(kept) = kept else {
            let lost: Vec<_> = base
                .iter()
                .filter(|(k, v)| recovered.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .take(5)
                .collect();
            return fail(format!(
                "cycle {cycle}: after a {mode:?} crash the recovered state ({} keys) is no prefix of \
                 the writes (acknowledged {} keys, {} unacknowledged writes); keys differing from \
                 the acknowledged state: {lost:?}",
                recovered.len(),
                base.len(),
                pending.len()
            ));
        };
        report.unacknowledged_kept += kept as u64;
        report.unacknowledged_lost += (pending.len() - kept) as u64;
        base = candidate;
        pending.clear();
        // Point reads agree with the scan.
        for k in 0..key_count {
            let key = format!("key{k:04}");
            match lsm.get(key.as_bytes()) {
                Ok(got) if got.as_ref() == base.get(key.as_bytes()) => {}
                other => {
                    return fail(format!(
                        "cycle {cycle}: get({key}) = {other:?} after recovery, scan says {:?}",
                        base.get(key.as_bytes())
                    ))
                }
            }
        }
    }
    if config.disk_full {
        // Space back: writes are accepted again without a restart.
        lsm.fs_mut().set_capacity_bytes_max(None);
        let key = Bytes::from_static(b"key-after-full");
        if let Err(e) = write_until_done(&mut lsm, now_ms, |l| {
            l.put(key.clone(), Bytes::from_static(b"v"))
        })
        .and_then(|()| lsm.sync())
        {
            return fail(format!("space came back but a write still failed: {e}"));
        }
        base.insert(key, Bytes::from_static(b"v"));
        if lsm.space_short() {
            return fail("space came back but the engine is still short of space".into());
        }
    }
    if config.bit_flip {
        flip_one_bit(seed, lsm, &base, &mut rng, &mut report, config)?;
    }
    Ok(report)
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
