//! ringkv-lsm beside fjall (crate, in process) and RocksDB (Debian's `db_bench`, a child process),
//! in the same run, on the same data-directory disk, with the same keys (100 bytes), values
//! (half random and half repetitive) and operation counts. Engines run interleaved (ours, fjall,
//! RocksDB, ours, ...) for several rounds; the table prints the median of each engine's numbers
//! and the median of the per-round ratios (ours ÷ peer).
//!
//! Three row sets: 1 KiB values (ringkv-lsm keeps them inline), the node's real record (a 1 KiB
//! value plus the record header, with the node's engine configuration: the record is above the
//! separation threshold, so it goes to the value log) and 10 KiB values (separated). Where
//! ringkv-lsm separates values, RocksDB runs integrated BlobDB and fjall its key-value
//! separation, both with ringkv-lsm's threshold.
//!
//! Fairness (issue #15): every engine gets bloom filters at 10 bits per key, the same memory
//! budget for caches (ringkv-lsm's block + value + index + row caches), LZ4 on table data blocks at
//! every level, and no compression of the WAL or of separated values (ringkv-lsm's value log and
//! WAL cannot compress, so the peers are configured the same way). Each phase's duration is kept
//! and phases shorter than one second are listed under the table.
//!
//! Like is compared with like (PITFALLS, storage): "unsynced" rows never fsync in the measured
//! loop (RocksDB `--sync=0`, fjall without `persist`, ours without `sync`); "synced" rows make
//! every write durable before it is acknowledged (RocksDB `--sync=1`, fjall
//! `persist(SyncAll)` after each insert, ours `sync` after each put). With 8 writer threads
//! RocksDB and fjall use their own concurrency; ours is single-threaded (sans-IO style), so the
//! threads share it behind a `Mutex` with a leader/follower group commit over the engine's split
//! sync (`Lsm::sync_begin`, fsync outside the lock, `Lsm::sync_finish`): one fsync covers every
//! write staged before it, and writers keep staging while it runs.
//!
//! Write amplification is the bytes each engine passed to `write` calls (`wchar` of
//! `/proc/self/io`, which includes reaped children such as `db_bench`) over the bytes of keys and
//! values written, for the single-writer unsynced run (fill, overwrite, reads, close). Space
//! amplification is the size of the data directory after close over the live bytes
//! (expected distinct keys × (key + value)).
//!
//! `--size-gb F` sizes every row set to F GiB of live data and runs only the single-writer
//! unsynced phases (fill, overwrite, reads), long enough for compaction and value-log collection
//! to reach a steady state.
//!
//! Run: `benches/engine-compare.sh [--rounds N] [--scale F | --size-gb F] [--sets 1k,node,10k]
//! [--dir DIR]` (see benches/README.md).

#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark aborts on any error")]

use bytes::Bytes;

/// The node's allocator (`node/src/main.rs`): ringkv-lsm runs here as it runs in the node, and
/// fjall, in this process too, gets the same one. (RocksDB's `db_bench` keeps its own.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_lsm::fs::{FsError, StdFs};
use ringkv_lsm::maintenance::MaintenanceScheduler;
use ringkv_lsm::{Lsm, LsmConfig, LsmStorage, WriteOutcome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Instant;

const KEY_BYTES: usize = 100;

/// Bloom filter bits per key given to every engine.
const BLOOM_BITS_PER_KEY: usize = 10;

/// In the `--size-gb` mode a read phase stops after this long: reads that miss every cache
/// could otherwise run for hours.
const READ_SECONDS_MAX_LARGE: f64 = 60.0;

/// A phase shorter than this is listed as too short to trust.
const PHASE_SECONDS_MIN: f64 = 1.0;

/// One row set of the table: a value size, the engine configuration of ours, and the counts.
#[derive(Clone, Debug)]
struct RowSet {
    /// Name on the command line (`--sets`).
    name: &'static str,
    /// Label in the table.
    label: String,
    value_bytes: usize,
    /// Keys in the range, and writes per unsynced phase (fill, overwrite).
    keys: u64,
    /// Gets of present keys.
    reads: u64,
    /// Gets of absent keys.
    missing_reads: u64,
    /// Writes per synced phase with one writer.
    synced_ops_1: u64,
    /// Writes per synced phase with 8 writers (all threads together).
    synced_ops_8: u64,
    /// Only the single-writer unsynced run (the `--size-gb` mode).
    single_writer_only: bool,
    /// Read phases stop after this long even if their count is not reached (`--size-gb`).
    read_seconds_max: Option<f64>,
    /// ringkv-lsm's configuration.
    lsm: LsmConfig,
}

impl RowSet {
    /// ringkv-lsm separates values longer than this; the peers get the same threshold.
    fn separation_threshold_bytes(&self) -> usize {
        self.lsm.value_separation_threshold_bytes
    }

    fn separated(&self) -> bool {
        self.value_bytes > self.separation_threshold_bytes()
    }

    /// ringkv-lsm's cache memory: block cache, value cache (a quarter of the block cache, see
    /// `recovery.rs`), the index/filter cache and the row cache. Every engine gets this budget.
    fn cache_budget_bytes(&self) -> u64 {
        (self.lsm.block_cache_bytes
            + self.lsm.block_cache_bytes / 4
            + self.lsm.index_cache_bytes
            + self.lsm.row_cache_bytes) as u64
    }

    fn record_bytes(&self) -> usize {
        KEY_BYTES + self.value_bytes
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EngineKind {
    Ours,
    Fjall,
    Rocks,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Ours => "ringkv-lsm",
            EngineKind::Fjall => "fjall",
            EngineKind::Rocks => "RocksDB",
        }
    }
}

/// Measurements of one engine in one round: row name -> value. A phase's duration is kept under
/// `secs/<row>`.
type Results = BTreeMap<String, f64>;

// ------------------------------------------------------------------ data

fn key(i: u64) -> Vec<u8> {
    let mut k = format!("user/{:016x}/", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes();
    k.resize(KEY_BYTES, b'k');
    k
}

/// Random bytes to take value halves from (generating fresh random bytes per write would cost
/// more than some engines' writes).
struct ValuePool(Vec<u8>);

impl ValuePool {
    fn new() -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        ValuePool((0..(4 << 20)).map(|_| rng.gen()).collect())
    }

    /// Half random, half repetitive (like db_bench's `--compression_ratio=0.5`).
    fn value(&self, rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
        let start = rng.gen_range(0..self.0.len() - len);
        let mut v = self.0[start..start + len / 2].to_vec();
        v.resize(len, b'v');
        v
    }
}

/// Bytes of the record the node stores for a plain `SET` of `value_bytes` (last-write-wins,
/// no expiry), encoded as the node encodes it: the value plus the record header.
fn node_record_bytes(value_bytes: usize) -> usize {
    use ringkv_core::version::{LwwRecord, LwwVersion};
    let version = LwwVersion {
        // A 2026 hybrid timestamp in microseconds and a full-width nonce: the header's varints
        // at their real lengths.
        timestamp_micros: 1_780_000_000_000_000,
        node: ringkv_core::NodeId(1),
        nonce: 0x9e37_79b9,
    };
    let record = ringkv_core::Record::Lww(LwwRecord::plain(
        version,
        Some(Bytes::from(vec![0u8; value_bytes])),
    ));
    ringkv_core::codec::encode_value(&record).len()
}

/// The engine configuration `ringkv-node` runs with by default (`[storage]` defaults).
fn node_lsm_config() -> LsmConfig {
    ringkv_node::config::FileConfig::dev()
        .validate()
        .unwrap()
        .storage
        .lsm
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// Bytes this process (and its reaped children) passed to write calls.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Expected distinct keys after `writes` uniform random writes over `keys` keys.
fn expected_distinct(keys: u64, writes: u64) -> f64 {
    keys as f64 * (1.0 - (-(writes as f64) / keys as f64).exp())
}

// ------------------------------------------------------------------ in-process engines

/// ringkv-lsm shared by writer threads: the engine plus the group-commit state.
struct OursShared {
    inner: Mutex<OursInner>,
    /// Signalled when a sync finishes.
    synced: Condvar,
    /// Results of flush fsyncs that ran on their own threads, for the next writer to hand to
    /// the engine.
    flush_fsyncs_done: Arc<Mutex<Vec<FlushFsyncDone>>>,
}

/// A flush job and the result of its fsync.
type FlushFsyncDone = (u64, Result<(), FsError>);

struct OursInner {
    storage: LsmStorage<StdFs>,
    /// The node's maintenance scheduler with its `[storage]` defaults, on this run's clock: the
    /// engine is maintained as `ringkv-node` maintains it (flush jobs, compaction and value-log
    /// collection in bounded steps), not by a loop of the harness's own.
    maintenance: MaintenanceScheduler,
    started: Instant,
    /// Every write up to this sequence number is durable.
    durable_seq: u64,
    /// A leader is fsyncing (outside the lock).
    syncing: bool,
}

impl OursInner {
    fn now(&self) -> ringkv_core::Instant {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        ringkv_core::Instant::from_nanos(nanos)
    }
}

impl OursShared {
    fn open(dir: &Path, config: &LsmConfig) -> Self {
        let lsm = Lsm::open(StdFs::open(dir).unwrap(), config.clone()).unwrap();
        let storage = LsmStorage::new(lsm);
        let settings = ringkv_node::config::FileConfig::dev()
            .validate()
            .unwrap()
            .storage
            .maintenance();
        let started = Instant::now();
        let zero = ringkv_core::Instant::from_nanos(0);
        let maintenance =
            MaintenanceScheduler::new(settings, zero, storage.maintenance_state()).unwrap();
        OursShared {
            inner: Mutex::new(OursInner {
                storage,
                maintenance,
                started,
                durable_seq: 0,
                syncing: false,
            }),
            synced: Condvar::new(),
            flush_fsyncs_done: Arc::default(),
        }
    }

    /// Leader/follower group commit: a writer stages its put under the lock; if a sync is in
    /// flight it waits for it (that sync may not cover it, but the next leader will cover
    /// every write staged meanwhile); otherwise it leads: `sync_begin` under the lock, the
    /// fsync outside it (other writers stage meanwhile), `sync_finish` under the lock. After
    /// each put the scheduler may run a maintenance step, as the node's driver does after each
    /// batch; a flush job's fsync runs on a thread of its own, as on the node.
    fn put(&self, key: Bytes, value: Bytes, synced: bool) {
        let mut g = self.inner.lock().unwrap();
        let seq = loop {
            match g.storage.lsm_mut().put(key.clone(), value.clone()).unwrap() {
                WriteOutcome::Written { seq } => break seq,
                WriteOutcome::Stalled { .. } => {
                    g.storage.lsm_mut().compact_step(0, 4 << 20).unwrap();
                }
            }
        };
        self.maintain(&mut g);
        if !synced {
            return;
        }
        while g.durable_seq < seq {
            if g.syncing {
                g = self.synced.wait(g).unwrap();
                continue;
            }
            g.syncing = true;
            let mut ticket = g.storage.lsm_mut().sync_begin().unwrap();
            drop(g);
            let result = ticket.fsync();
            g = self.inner.lock().unwrap();
            g.storage.lsm_mut().sync_finish(result).unwrap();
            g.durable_seq = g.durable_seq.max(ticket.covers_seq());
            g.syncing = false;
            self.synced.notify_all();
        }
    }

    /// Hands finished flush fsyncs to the engine, runs the step the scheduler says is due, and
    /// starts the fsync of a flush job whose files are written on a thread of its own.
    fn maintain(&self, g: &mut OursInner) {
        let done = std::mem::take(&mut *self.flush_fsyncs_done.lock().unwrap());
        for (job, result) in done {
            g.storage.lsm_mut().flush_fsynced(job, result).unwrap();
        }
        let now = g.now();
        let state = g.storage.maintenance_state();
        if let Some(step) = g.maintenance.poll_step(now, state) {
            g.storage.maintain(step, 0).unwrap();
        }
        if let Some(mut fsync) = g.storage.lsm_mut().take_flush_fsync() {
            let done = Arc::clone(&self.flush_fsyncs_done);
            std::thread::spawn(move || {
                let result = fsync.fsync();
                done.lock().unwrap().push((fsync.job(), result));
            });
        }
    }

    fn get(&self, key: &[u8]) -> bool {
        let mut g = self.inner.lock().unwrap();
        g.storage.lsm_mut().get(key).unwrap().is_some()
    }
}

enum InProc {
    Ours(Box<OursShared>),
    Fjall(fjall::Database, fjall::Keyspace),
}

/// fjall configured like the others (see the crate doc): the shared cache budget, bloom filters
/// at 10 bits per key on every level (its default is a 0.01% false-positive rate on level 0),
/// LZ4 data blocks on every level (its default leaves levels 0 and 1 uncompressed), no journal
/// compression (its default compresses values of 4 KiB and more), and for the separated row sets
/// its key-value separation with ringkv-lsm's threshold and uncompressed blobs.
fn open_fjall(dir: &Path, set: &RowSet) -> (fjall::Database, fjall::Keyspace) {
    use fjall::config::{
        BloomConstructionPolicy, CompressionPolicy, FilterPolicy, FilterPolicyEntry,
    };
    use fjall::{CompressionType, KvSeparationOptions};
    let db = fjall::Database::builder(dir)
        .cache_size(set.cache_budget_bytes())
        .journal_compression(CompressionType::None)
        .open()
        .unwrap();
    let separation = set.separated().then(|| {
        // fjall separates values of at least the threshold; ringkv-lsm values above it.
        let threshold = u32::try_from(set.separation_threshold_bytes() + 1).unwrap();
        KvSeparationOptions::default()
            .separation_threshold(threshold)
            .compression(CompressionType::None)
    });
    let ks = db
        .keyspace("main", || {
            fjall::KeyspaceCreateOptions::default()
                .filter_policy(FilterPolicy::all(FilterPolicyEntry::Bloom(
                    BloomConstructionPolicy::BitsPerKey(BLOOM_BITS_PER_KEY as f32),
                )))
                .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
                .with_kv_separation(separation)
        })
        .unwrap();
    (db, ks)
}

impl InProc {
    fn open(kind: EngineKind, dir: &Path, set: &RowSet) -> Self {
        match kind {
            EngineKind::Ours => InProc::Ours(Box::new(OursShared::open(dir, &set.lsm))),
            EngineKind::Fjall => {
                let (db, ks) = open_fjall(dir, set);
                InProc::Fjall(db, ks)
            }
            EngineKind::Rocks => unreachable!("RocksDB runs as db_bench"),
        }
    }

    fn put(&self, key: Vec<u8>, value: Vec<u8>, synced: bool) {
        match self {
            InProc::Ours(o) => o.put(Bytes::from(key), Bytes::from(value), synced),
            InProc::Fjall(db, ks) => {
                ks.insert(key, value).unwrap();
                if synced {
                    db.persist(fjall::PersistMode::SyncAll).unwrap();
                }
            }
        }
    }

    fn get(&self, key: &[u8]) -> bool {
        match self {
            InProc::Ours(o) => o.get(key),
            InProc::Fjall(_, ks) => ks.get(key).unwrap().is_some(),
        }
    }

    /// What the engine counts itself about its maintenance, for the report.
    fn own_counters(&self, r: &mut Results) {
        match self {
            InProc::Ours(o) => {
                let stats = o.inner.lock().unwrap().storage.lsm().stats();
                r.insert("own_wa".into(), stats.write_amplification());
                r.insert("own_flushes".into(), stats.flushes as f64);
                r.insert("own_compactions".into(), stats.compactions as f64);
                r.insert("own_gc_segments".into(), stats.gc_segments as f64);
                r.insert("own_stalls".into(), stats.stalls as f64);
            }
            InProc::Fjall(_, ks) => {
                r.insert("own_blob_files".into(), ks.blob_file_count() as f64);
            }
        }
    }
}

/// `ops` random writes over keys `0..keys`, split over `threads` threads; returns (ops/s, s).
#[allow(clippy::too_many_arguments)]
fn write_phase(
    engine: &InProc,
    pool: &ValuePool,
    seed: u64,
    keys: u64,
    ops: u64,
    value_bytes: usize,
    threads: u64,
    synced: bool,
) -> (f64, f64) {
    let barrier = Barrier::new(threads as usize + 1);
    let per_thread = ops / threads;
    let t = std::thread::scope(|s| {
        for th in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + th);
                barrier.wait();
                for _ in 0..per_thread {
                    let k = key(rng.gen_range(0..keys));
                    let v = pool.value(&mut rng, value_bytes);
                    engine.put(k, v, synced);
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    let secs = t.elapsed().as_secs_f64();
    ((per_thread * threads) as f64 / secs, secs)
}

/// Up to `set.reads` (or `set.missing_reads`) gets of random present (or absent) keys, cut at
/// `set.read_seconds_max` if set; returns (ops/s, s).
fn read_phase(engine: &InProc, seed: u64, set: &RowSet, missing: bool) -> (f64, f64) {
    let keys = set.keys;
    let ops = if missing {
        set.missing_reads
    } else {
        set.reads
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t = Instant::now();
    let mut found = 0u64;
    let mut done = 0u64;
    while done < ops {
        let i = rng.gen_range(0..keys);
        let k = if missing { key(keys + i) } else { key(i) };
        found += u64::from(engine.get(&k));
        done += 1;
        if done & 1023 == 0
            && set
                .read_seconds_max
                .is_some_and(|max| t.elapsed().as_secs_f64() >= max)
        {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // Random fill and overwrite leave about 1 - e^-2 of the range present, so present-key gets
    // find most, not all, of their keys; absent-key gets must find none.
    assert!(
        missing == (found == 0),
        "{done} reads of {} keys found {found}",
        if missing { "absent" } else { "present" }
    );
    (done as f64 / secs, secs)
}

fn fresh_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

/// Records a phase's rate and duration (and shows progress: a large run takes long).
fn record(r: &mut Results, row: &str, (rate, secs): (f64, f64)) {
    eprintln!("  {row}: {rate:.0} ops/s in {secs:.1} s");
    r.insert(row.to_string(), rate);
    r.insert(format!("secs/{row}"), secs);
}

fn run_in_process(kind: EngineKind, set: &RowSet, root: &Path, pool: &ValuePool) -> Results {
    let mut r = Results::new();
    let v = set.value_bytes;
    let n = set.keys;
    let dir = root.join(format!("{}-{}", kind.name(), set.name));

    // One writer, unsynced: fill, overwrite, reads; write and space amplification.
    fresh_dir(&dir);
    let before = written_bytes();
    let e = InProc::open(kind, &dir, set);
    record(
        &mut r,
        "fill_1_unsynced",
        write_phase(&e, pool, 1, n, n, v, 1, false),
    );
    record(
        &mut r,
        "overwrite_1_unsynced",
        write_phase(&e, pool, 2, n, n, v, 1, false),
    );
    record(&mut r, "read", read_phase(&e, 3, set, false));
    record(&mut r, "missing", read_phase(&e, 4, set, true));
    e.own_counters(&mut r);
    drop(e);
    amplification(&mut r, set, before, &dir);
    if set.single_writer_only {
        let _ = std::fs::remove_dir_all(&dir);
        return r;
    }

    // Eight writers, unsynced.
    fresh_dir(&dir);
    let e = InProc::open(kind, &dir, set);
    record(
        &mut r,
        "fill_8_unsynced",
        write_phase(&e, pool, 5, n, n, v, 8, false),
    );
    record(
        &mut r,
        "overwrite_8_unsynced",
        write_phase(&e, pool, 6, n, n, v, 8, false),
    );
    drop(e);

    // Synced, one then eight writers, each on a fresh store of `synced_ops` keys.
    for (threads, ops) in [(1u64, set.synced_ops_1), (8, set.synced_ops_8)] {
        fresh_dir(&dir);
        let e = InProc::open(kind, &dir, set);
        record(
            &mut r,
            &format!("fill_{threads}_synced"),
            write_phase(&e, pool, 7, ops, ops, v, threads, true),
        );
        record(
            &mut r,
            &format!("overwrite_{threads}_synced"),
            write_phase(&e, pool, 8, ops, ops, v, threads, true),
        );
        drop(e);
    }
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Write amplification since `before` (fill and overwrite: 2 × keys writes) and space
/// amplification of `dir` against the expected live bytes.
fn amplification(r: &mut Results, set: &RowSet, before: u64, dir: &Path) {
    let n = set.keys;
    let user = 2.0 * n as f64 * set.record_bytes() as f64;
    r.insert("wa".into(), (written_bytes() - before) as f64 / user);
    let live = expected_distinct(n, 2 * n) * set.record_bytes() as f64;
    r.insert("sa".into(), dir_bytes(dir) as f64 / live);
    r.insert("live_gb".into(), live / f64::from(1u32 << 30));
}

// ------------------------------------------------------------------ RocksDB (db_bench)

/// Runs `db_bench` once; returns (ops/s, seconds) per benchmark name.
fn db_bench(dir: &Path, args: &[String]) -> BTreeMap<String, (f64, f64)> {
    let out = Command::new("db_bench")
        .arg(format!("--db={}", dir.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("db_bench: {e} (run benches/engine-compare.sh to install it)"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "db_bench failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rates = BTreeMap::new();
    for line in text.lines() {
        // "fillrandom   :      25.811 micros/op 38454 ops/sec 0.520 seconds ..."
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let before = |unit: &str| -> Option<f64> {
            let at = words.iter().position(|w| *w == unit)?;
            words.get(at.checked_sub(1)?)?.parse().ok()
        };
        if let (Some(rate), Some(secs)) = (before("ops/sec"), before("seconds")) {
            rates.insert(name.trim().to_string(), (rate, secs));
        }
    }
    rates
}

/// db_bench's options shared by every run of a row set: the same keys, values, bloom filters,
/// cache budget (index and filter blocks charged to it, level 0's pinned, as fjall pins its
/// first levels' and ours holds them in its index cache), LZ4 at every level, WAL uncompressed
/// (its default), and integrated BlobDB with ringkv-lsm's threshold, uncompressed blobs and blob
/// garbage collection for the separated row sets.
fn rocksdb_common(set: &RowSet, keys: u64, threads: u64, sync: bool) -> Vec<String> {
    let mut args = vec![
        format!("--num={keys}"),
        format!("--key_size={KEY_BYTES}"),
        format!("--value_size={}", set.value_bytes),
        format!("--threads={threads}"),
        format!("--sync={}", u8::from(sync)),
        "--compression_type=lz4".into(),
        "--compression_ratio=0.5".into(),
        format!("--bloom_bits={BLOOM_BITS_PER_KEY}"),
        format!("--cache_size={}", set.cache_budget_bytes()),
        "--cache_index_and_filter_blocks=1".into(),
        "--pin_l0_filter_and_index_blocks_in_cache=1".into(),
        // Index and filter blocks get the share of the budget ringkv-lsm keeps for them (its
        // index cache) as RocksDB's high-priority pool, so data blocks cannot push them out:
        // without it, RocksDB's reads at 2 GiB re-read index blocks on most gets.
        format!(
            "--cache_high_pri_pool_ratio={:.4}",
            set.lsm.index_cache_bytes as f64 / set.cache_budget_bytes() as f64
        ),
        // Two-level (partitioned) indexes and filters, the top level pinned: RocksDB's own
        // remedy when they are charged to the cache. Without it, at 8 GiB each 64 MiB table's
        // whole index block is read and parsed again on most gets (854 present and 1,489
        // absent gets per second, 2026-12-07).
        "--partition_index_and_filters=1".into(),
        "--pin_top_level_index_and_filter=1".into(),
        "--histogram=0".into(),
        "--statistics=0".into(),
        "--seed=42".into(),
    ];
    if set.separated() {
        args.extend([
            "--enable_blob_files=1".into(),
            // RocksDB separates values of at least `min_blob_size`; ringkv-lsm values above
            // its threshold.
            format!("--min_blob_size={}", set.separation_threshold_bytes() + 1),
            "--blob_compression_type=none".into(),
            "--enable_blob_garbage_collection=1".into(),
        ]);
    }
    args
}

fn run_rocksdb(set: &RowSet, root: &Path) -> Results {
    let mut r = Results::new();
    let n = set.keys;
    let dir = root.join(format!("rocksdb-{}", set.name));
    let get = |r: &mut Results, rates: &BTreeMap<String, (f64, f64)>, bench: &str, row: &str| {
        let m = *rates
            .get(bench)
            .unwrap_or_else(|| panic!("db_bench printed no rate for {bench}"));
        record(r, row, m);
    };

    // One writer, unsynced; the reads run in their own db_bench invocations on the same store
    // (db_bench has one `--reads` count for every read benchmark).
    fresh_dir(&dir);
    let before = written_bytes();
    let mut args = rocksdb_common(set, n, 1, false);
    args.push(format!("--writes={n}"));
    args.push("--benchmarks=fillrandom,overwrite".into());
    let rates = db_bench(&dir, &args);
    get(&mut r, &rates, "fillrandom", "fill_1_unsynced");
    get(&mut r, &rates, "overwrite", "overwrite_1_unsynced");
    for (bench, row, reads) in [
        ("readrandom", "read", set.reads),
        ("readmissing", "missing", set.missing_reads),
    ] {
        let mut args = rocksdb_common(set, n, 1, false);
        args.push("--use_existing_db=1".into());
        args.push(format!("--reads={reads}"));
        if let Some(max) = set.read_seconds_max {
            args.push(format!("--duration={}", max as u64));
        }
        args.push(format!("--benchmarks={bench}"));
        let rates = db_bench(&dir, &args);
        get(&mut r, &rates, bench, row);
    }
    amplification(&mut r, set, before, &dir);
    if set.single_writer_only {
        let _ = std::fs::remove_dir_all(&dir);
        return r;
    }

    fresh_dir(&dir);
    let mut args = rocksdb_common(set, n, 8, false);
    args.push(format!("--writes={}", n / 8));
    args.push("--benchmarks=fillrandom,overwrite".into());
    let rates = db_bench(&dir, &args);
    get(&mut r, &rates, "fillrandom", "fill_8_unsynced");
    get(&mut r, &rates, "overwrite", "overwrite_8_unsynced");

    for (threads, ops) in [(1u64, set.synced_ops_1), (8, set.synced_ops_8)] {
        fresh_dir(&dir);
        let mut args = rocksdb_common(set, ops, threads, true);
        args.push(format!("--writes={}", ops / threads));
        args.push("--benchmarks=fillrandom,overwrite".into());
        let rates = db_bench(&dir, &args);
        get(
            &mut r,
            &rates,
            "fillrandom",
            &format!("fill_{threads}_synced"),
        );
        get(
            &mut r,
            &rates,
            "overwrite",
            &format!("overwrite_{threads}_synced"),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    r
}

// ------------------------------------------------------------------ report

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A row of the table: key in `Results`, label, whether higher is better.
struct Row {
    key: &'static str,
    label: &'static str,
    higher_is_better: bool,
}

const ROWS: &[Row] = &[
    Row {
        key: "fill_1_unsynced",
        label: "random fill, 1 writer, unsynced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "overwrite_1_unsynced",
        label: "overwrite, 1 writer, unsynced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "fill_8_unsynced",
        label: "random fill, 8 writers, unsynced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "overwrite_8_unsynced",
        label: "overwrite, 8 writers, unsynced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "fill_1_synced",
        label: "random fill, 1 writer, synced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "overwrite_1_synced",
        label: "overwrite, 1 writer, synced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "fill_8_synced",
        label: "random fill, 8 writers, synced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "overwrite_8_synced",
        label: "overwrite, 8 writers, synced (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "read",
        label: "random read (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "missing",
        label: "missing-key read (ops/s)",
        higher_is_better: true,
    },
    Row {
        key: "wa",
        label: "write amplification (lower is better)",
        higher_is_better: false,
    },
    Row {
        key: "sa",
        label: "space amplification (lower is better)",
        higher_is_better: false,
    },
];

/// Issue 15's target for every row, against both peers: at least 1.0× on throughput, no worse
/// (at most 1.0×) on amplification. A report, never a pass/fail.
fn verdict(ratio: f64, higher_is_better: bool) -> &'static str {
    if ratio.is_nan() {
        return "";
    }
    let better = if higher_is_better { ratio } else { 1.0 / ratio };
    if better >= 1.0 {
        "met"
    } else {
        "MISSED"
    }
}

fn fmt_number(x: f64) -> String {
    if x.is_nan() {
        "–".to_string()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

type AllResults = BTreeMap<(&'static str, EngineKind), Vec<Results>>;

fn report_table(sets: &[RowSet], all: &AllResults, engines: &[EngineKind]) {
    println!();
    println!("| workload | ringkv-lsm | fjall | RocksDB | ours ÷ fjall | ours ÷ RocksDB |");
    println!("|---|---:|---:|---:|---:|---:|");
    for set in sets {
        let runs = |k: EngineKind| all.get(&(set.name, k)).cloned().unwrap_or_default();
        let ours = runs(EngineKind::Ours);
        for row in ROWS {
            let med = |rs: &Vec<Results>| {
                median(rs.iter().filter_map(|r| r.get(row.key)).copied().collect())
            };
            let ratio = |peer: EngineKind| {
                if !engines.contains(&peer) {
                    return f64::NAN;
                }
                median(
                    ours.iter()
                        .zip(runs(peer).iter())
                        .filter_map(|(a, b)| Some(a.get(row.key)? / b.get(row.key)?))
                        .collect(),
                )
            };
            let values =
                [EngineKind::Ours, EngineKind::Fjall, EngineKind::Rocks].map(|k| med(&runs(k)));
            if values.iter().all(|x| x.is_nan()) {
                continue;
            }
            let (r_fjall, r_rocks) = (ratio(EngineKind::Fjall), ratio(EngineKind::Rocks));
            println!(
                "| {} {} | {} | {} | {} | {} {} | {} {} |",
                set.label,
                row.label,
                fmt_number(values[0]),
                fmt_number(values[1]),
                fmt_number(values[2]),
                fmt_number(r_fjall),
                verdict(r_fjall, row.higher_is_better),
                fmt_number(r_rocks),
                verdict(r_rocks, row.higher_is_better),
            );
        }
    }
}

fn report_group_commit(sets: &[RowSet], all: &AllResults, engines: &[EngineKind]) {
    println!();
    println!("Group commit (synced writes, 8 writers ÷ 1 writer, median over rounds):");
    for set in sets.iter().filter(|s| !s.single_writer_only) {
        for k in engines {
            let rs = all.get(&(set.name, *k)).cloned().unwrap_or_default();
            let gain = |w: &str| {
                median(
                    rs.iter()
                        .filter_map(|r| {
                            Some(
                                r.get(&format!("{w}_8_synced"))?
                                    / r.get(&format!("{w}_1_synced"))?,
                            )
                        })
                        .collect(),
                )
            };
            println!(
                "- {} {}: fill {:.1}×, overwrite {:.1}×",
                set.label,
                k.name(),
                gain("fill"),
                gain("overwrite")
            );
        }
    }
}

/// The engines' own maintenance counters (single-writer unsynced run, median over rounds), and
/// every phase shorter than `PHASE_SECONDS_MIN` (median duration over rounds).
fn report_counters_and_phases(sets: &[RowSet], all: &AllResults, engines: &[EngineKind]) {
    println!();
    println!("Maintenance counters (single-writer unsynced run, median over rounds):");
    for set in sets {
        for k in engines {
            let rs = all.get(&(set.name, *k)).cloned().unwrap_or_default();
            let med = |key: &str| median(rs.iter().filter_map(|r| r.get(key)).copied().collect());
            let counters: Vec<String> = [
                ("own_wa", "write amplification by its own counters"),
                ("own_flushes", "flushes"),
                ("own_compactions", "compactions"),
                ("own_gc_segments", "value-log segments collected"),
                ("own_stalls", "write stalls"),
                ("own_blob_files", "blob files after the run"),
                ("live_gb", "live GiB"),
            ]
            .iter()
            .filter(|(key, _)| !med(key).is_nan())
            .map(|(key, label)| format!("{label} {}", fmt_number(med(key))))
            .collect();
            println!("- {} {}: {}", set.label, k.name(), counters.join(", "));
        }
    }
    println!();
    println!("Phases shorter than {PHASE_SECONDS_MIN} s (median duration over rounds):");
    let mut short = 0;
    for set in sets {
        for k in engines {
            let rs = all.get(&(set.name, *k)).cloned().unwrap_or_default();
            for row in ROWS {
                let key = format!("secs/{}", row.key);
                let secs = median(rs.iter().filter_map(|r| r.get(&key)).copied().collect());
                if secs < PHASE_SECONDS_MIN {
                    short += 1;
                    println!("- {} {} {}: {secs:.2} s", set.label, k.name(), row.label);
                }
            }
        }
    }
    if short == 0 {
        println!("- none");
    }
}

// ------------------------------------------------------------------ configuration

/// The row sets at `scale` × the default counts, or sized to `size_gb` GiB of live data (then
/// single-writer unsynced phases only).
fn row_sets(scale: f64, size_gb: Option<f64>) -> Vec<RowSet> {
    let scaled = |x: u64| ((x as f64 * scale) as u64).max(8);
    let node_value_bytes = node_record_bytes(1024);
    let base = |name, label: String, value_bytes, keys, synced: (u64, u64), lsm| RowSet {
        name,
        label,
        value_bytes,
        keys: scaled(keys),
        // Present-key gets run at 0.2-0.4 M/s, absent-key gets at 0.5-2 M/s: counts that keep
        // both phases near or above a second.
        reads: scaled(300_000),
        // Synced counts are a compromise with this disk's fsync latency, which moves between
        // about 0.1 and 3.5 ms from minute to minute: in the fast regime the synced phases are
        // shorter than a second (listed under the table), in the slow one they take 3-10 s.
        missing_reads: scaled(1_500_000),
        synced_ops_1: scaled(synced.0),
        synced_ops_8: scaled(synced.1),
        single_writer_only: false,
        read_seconds_max: None,
        lsm,
    };
    let mut sets = vec![
        base(
            "1k",
            "1 KiB".into(),
            1024,
            250_000,
            (1_000, 4_000),
            LsmConfig::default(),
        ),
        base(
            "node",
            format!("node record ({node_value_bytes} B)"),
            node_value_bytes,
            250_000,
            (1_000, 4_000),
            node_lsm_config(),
        ),
        base(
            "10k",
            "10 KiB".into(),
            10 * 1024,
            60_000,
            (800, 3_000),
            LsmConfig::default(),
        ),
    ];
    if let Some(gb) = size_gb {
        for set in &mut sets {
            // Random fill then random overwrite of n keys leaves 1 - e^-2 of them live.
            let live_fraction = 1.0 - (-2.0f64).exp();
            let bytes = gb * f64::from(1u32 << 30) / live_fraction;
            set.keys = (bytes / set.record_bytes() as f64).ceil() as u64;
            set.reads = 1_000_000;
            set.missing_reads = 3_000_000;
            set.single_writer_only = true;
            set.read_seconds_max = Some(READ_SECONDS_MAX_LARGE);
        }
    }
    sets
}

/// Says, once per run, how each engine is configured (what makes the comparison fair).
fn print_configuration(sets: &[RowSet]) {
    println!("Configuration (same for every engine unless stated):");
    println!(
        "- bloom filters: {BLOOM_BITS_PER_KEY} bits/key for all three (ringkv-lsm \
         bloom_bits_per_key, fjall BitsPerKey on every level, RocksDB --bloom_bits)"
    );
    println!(
        "- compression: LZ4 on table data blocks at every level (fjall's default leaves L0/L1 \
         raw; set to all-LZ4 here); WAL/journal raw for all three; separated values raw for all \
         three (ringkv-lsm's value log cannot compress; fjall blobs and RocksDB blob files set \
         to none)"
    );
    println!(
        "- memtables (defaults): ringkv-lsm 16 MiB, fjall 64 MiB, RocksDB 64 MiB write buffer"
    );
    for set in sets {
        println!(
            "- {}: {} keys ({} B values, {:.2} GiB written per unsynced phase), {} present / {} \
             absent gets, {} / {} synced writes; cache budget {} MiB each (ringkv-lsm block \
             {} + value {} + index {} + row {}, indexes may borrow the block share; fjall \
             cache_size; \
             RocksDB --cache_size with index and filter blocks in it, their share as its \
             high-priority pool); {}",
            set.label,
            set.keys,
            set.value_bytes,
            (set.keys * set.record_bytes() as u64) as f64 / f64::from(1u32 << 30),
            set.reads,
            set.missing_reads,
            set.synced_ops_1,
            set.synced_ops_8,
            set.cache_budget_bytes() >> 20,
            set.lsm.block_cache_bytes >> 20,
            set.lsm.block_cache_bytes >> 22,
            set.lsm.index_cache_bytes >> 20,
            set.lsm.row_cache_bytes >> 20,
            if set.separated() {
                format!(
                    "values separated by all three (above {} B: ringkv-lsm value log, fjall \
                     KV separation, RocksDB BlobDB with blob GC)",
                    set.separation_threshold_bytes()
                )
            } else {
                format!(
                    "values inline for all three (ringkv-lsm separates above {} B)",
                    set.separation_threshold_bytes()
                )
            }
        );
    }
}

struct Args {
    rounds: usize,
    scale: f64,
    size_gb: Option<f64>,
    root: PathBuf,
    engines: Vec<EngineKind>,
    sets: Vec<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 3,
        scale: 1.0,
        size_gb: None,
        root: PathBuf::from("target/engine-compare"),
        engines: vec![EngineKind::Ours, EngineKind::Fjall, EngineKind::Rocks],
        sets: vec!["1k".into(), "node".into(), "10k".into()],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--rounds" => a.rounds = value().parse().unwrap(),
            "--scale" => a.scale = value().parse().unwrap(),
            "--size-gb" => a.size_gb = Some(value().parse().unwrap()),
            "--dir" => a.root = PathBuf::from(value()),
            "--sets" => a.sets = value().split(',').map(str::to_string).collect(),
            "--engines" => {
                a.engines = value()
                    .split(',')
                    .map(|e| match e {
                        "ours" => EngineKind::Ours,
                        "fjall" => EngineKind::Fjall,
                        "rocksdb" => EngineKind::Rocks,
                        other => panic!("unknown engine {other} (ours, fjall, rocksdb)"),
                    })
                    .collect();
            }
            other => panic!(
                "unknown argument {other}: --rounds N --scale F --size-gb F --sets 1k,node,10k \
                 --dir DIR --engines ours,fjall,rocksdb"
            ),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    let sets: Vec<RowSet> = row_sets(args.scale, args.size_gb)
        .into_iter()
        .filter(|s| args.sets.iter().any(|n| n == s.name))
        .collect();
    assert!(!sets.is_empty(), "--sets names none of 1k, node, 10k");
    std::fs::create_dir_all(&args.root).unwrap();
    println!(
        "engine-compare: {} interleaved rounds, data in {}",
        args.rounds,
        args.root.display()
    );
    print_configuration(&sets);
    let pool = ValuePool::new();
    let mut all = AllResults::new();
    let started = Instant::now();
    for round in 0..args.rounds {
        for set in &sets {
            for kind in &args.engines {
                let t = Instant::now();
                let r = match kind {
                    EngineKind::Rocks => run_rocksdb(set, &args.root),
                    k => run_in_process(*k, set, &args.root, &pool),
                };
                eprintln!(
                    "round {round} {} {}: {:.1}s {:?}",
                    set.label,
                    kind.name(),
                    t.elapsed().as_secs_f64(),
                    r.iter()
                        .map(|(k, v)| format!("{k}={v:.2}"))
                        .collect::<Vec<_>>()
                );
                all.entry((set.name, *kind)).or_default().push(r);
            }
        }
    }
    report_table(&sets, &all, &args.engines);
    report_group_commit(&sets, &all, &args.engines);
    report_counters_and_phases(&sets, &all, &args.engines);
    println!();
    println!("total time {:.0}s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&args.root);
}
