//! ringkv-lsm beside fjall (crate, in process) and RocksDB (Debian's `db_bench`, a child process),
//! in the same run, on the same data-directory disk, with the same keys (100 bytes), values
//! (1 KiB and 10 KiB, half random and half repetitive) and operation counts. Engines run
//! interleaved (ours, fjall, RocksDB, ours, ...) for several rounds; the table prints the median
//! of each engine's numbers and the median of the per-round ratios (ours ÷ peer).
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
//! (distinct keys × (key + value)).
//!
//! Run: `benches/engine-compare.sh [--rounds N] [--scale F] [--dir DIR]` (see benches/README.md).

#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark aborts on any error")]

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_lsm::fs::StdFs;
use ringkv_lsm::{Lsm, LsmConfig, WriteOutcome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Barrier, Condvar, Mutex};
use std::time::Instant;

const KEY_BYTES: usize = 100;

/// One benchmark configuration (a value size), sized for a default run of a few minutes on a
/// 2-core machine.
#[derive(Clone, Copy, Debug)]
struct Size {
    value_bytes: usize,
    /// Keys in the range and writes per unsynced phase (fill, overwrite), reads per read phase.
    ops: u64,
    /// Writes per synced phase with one writer.
    synced_ops_1: u64,
    /// Writes per synced phase with 8 writers (all threads together).
    synced_ops_8: u64,
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

/// Measurements of one engine in one round: row name -> value.
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
}

struct OursInner {
    lsm: Lsm<StdFs>,
    /// Every write up to this sequence number is durable.
    durable_seq: u64,
    /// A leader is fsyncing (outside the lock).
    syncing: bool,
    writes: u64,
}

impl OursShared {
    fn open(dir: &Path) -> Self {
        let lsm = Lsm::open(StdFs::open(dir).unwrap(), LsmConfig::default()).unwrap();
        OursShared {
            inner: Mutex::new(OursInner {
                lsm,
                durable_seq: 0,
                syncing: false,
                writes: 0,
            }),
            synced: Condvar::new(),
        }
    }

    /// Leader/follower group commit: a writer stages its put under the lock; if a sync is in
    /// flight it waits for it (that sync may not cover it, but the next leader will cover
    /// every write staged meanwhile); otherwise it leads: `sync_begin` under the lock, the
    /// fsync outside it (other writers stage meanwhile), `sync_finish` under the lock.
    fn put(&self, key: Bytes, value: Bytes, synced: bool) {
        let mut g = self.inner.lock().unwrap();
        let bytes = (key.len() + value.len()) as u64;
        let seq = loop {
            match g.lsm.put(key.clone(), value.clone()).unwrap() {
                WriteOutcome::Written { seq } => break seq,
                WriteOutcome::Stalled { .. } => {
                    g.lsm.compact_step(0, 4 << 20).unwrap();
                }
            }
        };
        // Incremental compaction in proportion to what was written, and a value-log collection
        // attempt every 256 writes (what `LsmStorage` does in the node).
        g.lsm.compact_step(0, bytes * 4 + 4096).unwrap();
        g.writes += 1;
        if g.writes & 0xff == 0 {
            g.lsm.gc_value_log_step().unwrap();
        }
        if !synced {
            return;
        }
        while g.durable_seq < seq {
            if g.syncing {
                g = self.synced.wait(g).unwrap();
                continue;
            }
            g.syncing = true;
            let mut ticket = g.lsm.sync_begin().unwrap();
            drop(g);
            let result = ticket.fsync();
            g = self.inner.lock().unwrap();
            g.lsm.sync_finish(result).unwrap();
            g.durable_seq = g.durable_seq.max(ticket.covers_seq());
            g.syncing = false;
            self.synced.notify_all();
        }
    }

    fn get(&self, key: &[u8]) -> bool {
        self.inner.lock().unwrap().lsm.get(key).unwrap().is_some()
    }
}

enum InProc {
    Ours(Box<OursShared>),
    Fjall(fjall::Database, fjall::Keyspace),
}

impl InProc {
    fn open(kind: EngineKind, dir: &Path) -> Self {
        match kind {
            EngineKind::Ours => InProc::Ours(Box::new(OursShared::open(dir))),
            EngineKind::Fjall => {
                let db = fjall::Database::builder(dir).open().unwrap();
                let ks = db
                    .keyspace("main", fjall::KeyspaceCreateOptions::default)
                    .unwrap();
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

    /// Write amplification the engine counts itself, if it does.
    fn own_write_amplification(&self) -> Option<f64> {
        match self {
            InProc::Ours(o) => Some(o.inner.lock().unwrap().lsm.stats().write_amplification()),
            InProc::Fjall(..) => None,
        }
    }
}

/// `ops` random writes over keys `0..keys`, split over `threads` threads; returns ops/s.
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
) -> f64 {
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
    (per_thread * threads) as f64 / t.elapsed().as_secs_f64()
}

fn read_phase(engine: &InProc, seed: u64, keys: u64, ops: u64, missing: bool) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t = Instant::now();
    let mut found = 0u64;
    for _ in 0..ops {
        let i = rng.gen_range(0..keys);
        let k = if missing { key(keys + i) } else { key(i) };
        found += u64::from(engine.get(&k));
    }
    let rate = ops as f64 / t.elapsed().as_secs_f64();
    assert!(missing == (found == 0), "missing-key reads found {found}");
    rate
}

fn fresh_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

fn run_in_process(kind: EngineKind, size: Size, root: &Path, pool: &ValuePool) -> Results {
    let mut r = Results::new();
    let v = size.value_bytes;
    let n = size.ops;
    let dir = root.join(format!("{}-{v}", kind.name()));

    // One writer, unsynced: fill, overwrite, reads; write and space amplification.
    fresh_dir(&dir);
    let before = written_bytes();
    let e = InProc::open(kind, &dir);
    r.insert(
        "fill_1_unsynced".into(),
        write_phase(&e, pool, 1, n, n, v, 1, false),
    );
    r.insert(
        "overwrite_1_unsynced".into(),
        write_phase(&e, pool, 2, n, n, v, 1, false),
    );
    r.insert("read".into(), read_phase(&e, 3, n, n, false));
    r.insert("missing".into(), read_phase(&e, 4, n, n, true));
    if let Some(wa) = e.own_write_amplification() {
        r.insert("own_wa".into(), wa);
    }
    drop(e);
    let user = 2.0 * n as f64 * (KEY_BYTES + v) as f64;
    r.insert("wa".into(), (written_bytes() - before) as f64 / user);
    let live = expected_distinct(n, 2 * n) * (KEY_BYTES + v) as f64;
    r.insert("sa".into(), dir_bytes(&dir) as f64 / live);

    // Eight writers, unsynced.
    fresh_dir(&dir);
    let e = InProc::open(kind, &dir);
    r.insert(
        "fill_8_unsynced".into(),
        write_phase(&e, pool, 5, n, n, v, 8, false),
    );
    r.insert(
        "overwrite_8_unsynced".into(),
        write_phase(&e, pool, 6, n, n, v, 8, false),
    );
    drop(e);

    // Synced, one then eight writers, each on a fresh store of `synced_ops` keys.
    for (threads, ops) in [(1u64, size.synced_ops_1), (8, size.synced_ops_8)] {
        fresh_dir(&dir);
        let e = InProc::open(kind, &dir);
        r.insert(
            format!("fill_{threads}_synced"),
            write_phase(&e, pool, 7, ops, ops, v, threads, true),
        );
        r.insert(
            format!("overwrite_{threads}_synced"),
            write_phase(&e, pool, 8, ops, ops, v, threads, true),
        );
        drop(e);
    }
    let _ = std::fs::remove_dir_all(&dir);
    r
}

// ------------------------------------------------------------------ RocksDB (db_bench)

/// Runs `db_bench` once; returns ops/s per benchmark name.
fn db_bench(dir: &Path, args: &[String]) -> BTreeMap<String, f64> {
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
        if let Some(at) = words.iter().position(|w| *w == "ops/sec") {
            if at > 0 {
                if let Ok(rate) = words[at - 1].parse::<f64>() {
                    rates.insert(name.trim().to_string(), rate);
                }
            }
        }
    }
    rates
}

fn run_rocksdb(size: Size, root: &Path) -> Results {
    let mut r = Results::new();
    let v = size.value_bytes;
    let n = size.ops;
    let dir = root.join(format!("rocksdb-{v}"));
    let common = |keys: u64, writes: u64, threads: u64, sync: bool| -> Vec<String> {
        vec![
            format!("--num={keys}"),
            format!("--writes={}", writes / threads),
            format!("--reads={keys}"),
            format!("--key_size={KEY_BYTES}"),
            format!("--value_size={v}"),
            format!("--threads={threads}"),
            format!("--sync={}", u8::from(sync)),
            "--compression_type=lz4".into(),
            "--compression_ratio=0.5".into(),
            // The same block-cache budget as ringkv-lsm's default.
            "--cache_size=67108864".into(),
            "--histogram=0".into(),
            "--statistics=0".into(),
            "--seed=42".into(),
        ]
    };
    let get = |rates: &BTreeMap<String, f64>, name: &str| -> f64 {
        *rates
            .get(name)
            .unwrap_or_else(|| panic!("db_bench printed no rate for {name}"))
    };

    fresh_dir(&dir);
    let before = written_bytes();
    let mut args = common(n, n, 1, false);
    args.push("--benchmarks=fillrandom,overwrite,readrandom,readmissing".into());
    let rates = db_bench(&dir, &args);
    r.insert("fill_1_unsynced".into(), get(&rates, "fillrandom"));
    r.insert("overwrite_1_unsynced".into(), get(&rates, "overwrite"));
    r.insert("read".into(), get(&rates, "readrandom"));
    r.insert("missing".into(), get(&rates, "readmissing"));
    let user = 2.0 * n as f64 * (KEY_BYTES + v) as f64;
    r.insert("wa".into(), (written_bytes() - before) as f64 / user);
    let live = expected_distinct(n, 2 * n) * (KEY_BYTES + v) as f64;
    r.insert("sa".into(), dir_bytes(&dir) as f64 / live);

    fresh_dir(&dir);
    let mut args = common(n, n, 8, false);
    args.push("--benchmarks=fillrandom,overwrite".into());
    let rates = db_bench(&dir, &args);
    r.insert("fill_8_unsynced".into(), get(&rates, "fillrandom"));
    r.insert("overwrite_8_unsynced".into(), get(&rates, "overwrite"));

    for (threads, ops) in [(1u64, size.synced_ops_1), (8, size.synced_ops_8)] {
        fresh_dir(&dir);
        let mut args = common(ops, ops, threads, true);
        args.push("--benchmarks=fillrandom,overwrite".into());
        let rates = db_bench(&dir, &args);
        r.insert(format!("fill_{threads}_synced"), get(&rates, "fillrandom"));
        r.insert(
            format!("overwrite_{threads}_synced"),
            get(&rates, "overwrite"),
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

/// A row of the table: key in `Results`, label, whether higher is better, and the targets
/// (minimum ratio for throughput, maximum for amplification) against fjall and RocksDB.
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

/// The issue-5 target for a row, as (minimum ratio to fjall, minimum ratio to RocksDB), both on
/// the "better" side (for amplification the ratio is inverted before comparing).
fn targets(row: &Row, value_bytes: usize) -> (f64, f64) {
    let big = value_bytes > 1024;
    let write = row.key.starts_with("fill") || row.key.starts_with("overwrite");
    let rocks = if !big {
        0.8
    } else if write && row.key.ends_with("unsynced") {
        // "at least 1.5x RocksDB on 10 KiB random fill and overwrite"; read as the unsynced
        // rows, where the engine (not the fsync) is measured. Synced rows are reported too.
        1.5
    } else {
        f64::NAN
    };
    (1.0, rocks)
}

fn verdict(ratio: f64, higher_is_better: bool, target: f64) -> String {
    if target.is_nan() || ratio.is_nan() {
        return String::new();
    }
    let better = if higher_is_better { ratio } else { 1.0 / ratio };
    if better >= target {
        format!("≥{target} met")
    } else {
        format!("≥{target} MISSED")
    }
}

fn report(
    sizes: &[Size],
    all: &BTreeMap<(usize, EngineKind), Vec<Results>>,
    engines: &[EngineKind],
) {
    let has = |k: EngineKind| engines.contains(&k);
    println!();
    println!("| workload | ringkv-lsm | fjall | RocksDB | ours ÷ fjall | ours ÷ RocksDB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let fmt = |x: f64| {
        if x.is_nan() {
            "–".to_string()
        } else if x >= 100.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.2}")
        }
    };
    for size in sizes {
        let v = size.value_bytes;
        let kib = v / 1024;
        let runs = |k: EngineKind| all.get(&(v, k)).cloned().unwrap_or_default();
        let ours = runs(EngineKind::Ours);
        for row in ROWS {
            let med = |rs: &Vec<Results>| {
                median(rs.iter().filter_map(|r| r.get(row.key)).copied().collect())
            };
            let ratio = |peer: &Vec<Results>| {
                median(
                    ours.iter()
                        .zip(peer.iter())
                        .filter_map(|(a, b)| Some(a.get(row.key)? / b.get(row.key)?))
                        .collect(),
                )
            };
            let (t_fjall, t_rocks) = targets(row, v);
            let fjall = runs(EngineKind::Fjall);
            let rocks = runs(EngineKind::Rocks);
            let r_fjall = if has(EngineKind::Fjall) {
                ratio(&fjall)
            } else {
                f64::NAN
            };
            let r_rocks = if has(EngineKind::Rocks) {
                ratio(&rocks)
            } else {
                f64::NAN
            };
            println!(
                "| {kib} KiB {} | {} | {} | {} | {} {} | {} {} |",
                row.label,
                fmt(med(&ours)),
                fmt(med(&fjall)),
                fmt(med(&rocks)),
                fmt(r_fjall),
                verdict(r_fjall, row.higher_is_better, t_fjall),
                fmt(r_rocks),
                verdict(r_rocks, row.higher_is_better, t_rocks),
            );
        }
    }
    println!();
    println!("Group commit (synced writes, 8 writers ÷ 1 writer, median over rounds; target ≥3 for ours):");
    for size in sizes {
        for k in engines {
            let rs = all
                .get(&(size.value_bytes, *k))
                .cloned()
                .unwrap_or_default();
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
                "- {} KiB {}: fill {:.1}×, overwrite {:.1}×",
                size.value_bytes / 1024,
                k.name(),
                gain("fill"),
                gain("overwrite")
            );
        }
    }
    for size in sizes {
        let rs = all
            .get(&(size.value_bytes, EngineKind::Ours))
            .cloned()
            .unwrap_or_default();
        let own = median(rs.iter().filter_map(|r| r.get("own_wa")).copied().collect());
        println!(
            "- {} KiB ringkv-lsm write amplification by its own counters: {own:.2}",
            size.value_bytes / 1024
        );
    }
}

fn main() {
    let mut rounds = 5usize;
    let mut scale = 1.0f64;
    let mut root = PathBuf::from("target/engine-compare");
    let mut engines = vec![EngineKind::Ours, EngineKind::Fjall, EngineKind::Rocks];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|s| s.parse().ok()).unwrap(),
            "--scale" => scale = args.next().and_then(|s| s.parse().ok()).unwrap(),
            "--dir" => root = PathBuf::from(args.next().unwrap()),
            "--engines" => {
                engines = args
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|e| match e {
                        "ours" => EngineKind::Ours,
                        "fjall" => EngineKind::Fjall,
                        "rocksdb" => EngineKind::Rocks,
                        other => panic!("unknown engine {other} (ours, fjall, rocksdb)"),
                    })
                    .collect();
            }
            other => panic!("unknown argument {other}: --rounds N --scale F --dir DIR --engines ours,fjall,rocksdb"),
        }
    }
    let scaled = |x: u64| ((x as f64 * scale) as u64).max(8);
    let sizes = [
        Size {
            value_bytes: 1024,
            ops: scaled(60_000),
            synced_ops_1: scaled(200),
            synced_ops_8: scaled(1_200),
        },
        Size {
            value_bytes: 10 * 1024,
            ops: scaled(6_000),
            synced_ops_1: scaled(160),
            synced_ops_8: scaled(800),
        },
    ];
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "engine-compare: {rounds} interleaved rounds, data in {} ({})",
        root.display(),
        sizes
            .iter()
            .map(|s| format!(
                "{} KiB: {} keys, {} writes per unsynced phase, {}/{} per synced phase",
                s.value_bytes / 1024,
                s.ops,
                s.ops,
                s.synced_ops_1,
                s.synced_ops_8
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let pool = ValuePool::new();
    let mut all: BTreeMap<(usize, EngineKind), Vec<Results>> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..rounds {
        for size in &sizes {
            for kind in &engines {
                let t = Instant::now();
                let r = match kind {
                    EngineKind::Rocks => run_rocksdb(*size, &root),
                    k => run_in_process(*k, *size, &root, &pool),
                };
                eprintln!(
                    "round {round} {} KiB {}: {:.1}s {:?}",
                    size.value_bytes / 1024,
                    kind.name(),
                    t.elapsed().as_secs_f64(),
                    r.iter()
                        .map(|(k, v)| format!("{k}={v:.2}"))
                        .collect::<Vec<_>>()
                );
                all.entry((size.value_bytes, *kind)).or_default().push(r);
            }
        }
    }
    report(&sizes, &all, &engines);
    println!();
    println!("total time {:.0}s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&root);
}
