//! Side-by-side benchmark of ringkv-lsm and fjall on the same disk, in the same run, printing
//! ratios (ours ÷ fjall, higher is better for throughput). Synced is compared with synced (every
//! write, or every group of 8 writes, fsynced before the next) and unsynced with unsynced.
//!
//! Run: `cargo run -p ringkv-lsm --release --example bench_vs_fjall [-- DIR]`

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
use std::path::{Path, PathBuf};
use std::time::Instant;

trait Engine {
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn get(&mut self, key: &[u8]) -> bool;
    fn sync(&mut self);
    fn disk_bytes(&self) -> u64;
}

struct Ours(Lsm<StdFs>, PathBuf);

impl Engine for Ours {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        loop {
            match self
                .0
                .put(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value))
                .unwrap()
            {
                WriteOutcome::Written { .. } => break,
                WriteOutcome::Stalled { .. } => {
                    self.0.compact_step(0, 4 << 20).unwrap();
                }
            }
        }
        // Incremental compaction in proportion to what was written (single-threaded engine).
        self.0
            .compact_step(0, 4 * (key.len() + value.len()) as u64)
            .unwrap();
    }
    fn get(&mut self, key: &[u8]) -> bool {
        self.0.get(key).unwrap().is_some()
    }
    fn sync(&mut self) {
        self.0.sync().unwrap();
    }
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.1)
    }
}

struct Fjall(fjall::Database, fjall::Keyspace, PathBuf);

impl Engine for Fjall {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.1.insert(key, value).unwrap();
    }
    fn get(&mut self, key: &[u8]) -> bool {
        self.1.get(key).unwrap().is_some()
    }
    fn sync(&mut self) {
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.2)
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

fn key(i: u64) -> Vec<u8> {
    // ~100-byte keys, as ringkv's.
    let mut k = format!("user/{:016x}/", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes();
    k.resize(100, b'k');
    k
}

fn value(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    // Half random, half repetitive: compressible like typical records.
    let mut v: Vec<u8> = (0..len / 2).map(|_| rng.gen()).collect();
    v.resize(len, b'v');
    v
}

struct Results {
    fill: f64,
    overwrite: f64,
    read: f64,
    missing: f64,
    synced_1: f64,
    synced_8: f64,
    space: f64,
}

fn run(engine: &mut dyn Engine, n: u64, value_len: usize, synced_n: u64) -> Results {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let user_bytes = n * (100 + value_len as u64);
    let t = Instant::now();
    for _ in 0..n {
        let i = rng.gen_range(0..n);
        engine.put(&key(i), &value(&mut rng, value_len));
    }
    engine.sync();
    let fill = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        let i = rng.gen_range(0..n);
        engine.put(&key(i), &value(&mut rng, value_len));
    }
    engine.sync();
    let overwrite = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        engine.get(&key(rng.gen_range(0..n)));
    }
    let read = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        engine.get(&key(n + rng.gen_range(0..n)));
    }
    let missing = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..synced_n {
        engine.put(&key(rng.gen_range(0..n)), &value(&mut rng, value_len));
        engine.sync();
    }
    let synced_1 = synced_n as f64 / t.elapsed().as_secs_f64();
    // Eight writers sharing one fsync (group commit): 8 writes, then one sync.
    let t = Instant::now();
    for _ in 0..synced_n {
        for _ in 0..8 {
            engine.put(&key(rng.gen_range(0..n)), &value(&mut rng, value_len));
        }
        engine.sync();
    }
    let synced_8 = (synced_n * 8) as f64 / t.elapsed().as_secs_f64();
    let space = engine.disk_bytes() as f64 / user_bytes as f64;
    Results {
        fill,
        overwrite,
        read,
        missing,
        synced_1,
        synced_8,
        space,
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ringkv-bench"));
    let _ = std::fs::remove_dir_all(&root);
    println!("| workload | ringkv-lsm | fjall | ratio (ours ÷ fjall) |");
    println!("|---|---:|---:|---:|");
    for (value_len, n, synced_n) in [(1024usize, 40_000u64, 300u64), (10 * 1024, 8_000, 200)] {
        let ours_dir = root.join(format!("ours-{value_len}"));
        let fjall_dir = root.join(format!("fjall-{value_len}"));
        let mut ours = Ours(
            Lsm::open(StdFs::open(&ours_dir).unwrap(), LsmConfig::default()).unwrap(),
            ours_dir.clone(),
        );
        let r_ours = run(&mut ours, n, value_len, synced_n);
        let stats = ours.0.stats();
        drop(ours);
        let db = fjall::Database::builder(&fjall_dir).open().unwrap();
        let ks = db
            .keyspace("main", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut theirs = Fjall(db, ks, fjall_dir.clone());
        let r_fjall = run(&mut theirs, n, value_len, synced_n);
        drop(theirs);
        let kib = value_len / 1024;
        for (name, a, b) in [
            ("random fill, unsynced (ops/s)", r_ours.fill, r_fjall.fill),
            (
                "overwrite, unsynced (ops/s)",
                r_ours.overwrite,
                r_fjall.overwrite,
            ),
            ("random read (ops/s)", r_ours.read, r_fjall.read),
            ("missing-key read (ops/s)", r_ours.missing, r_fjall.missing),
            (
                "synced write, 1 writer (ops/s)",
                r_ours.synced_1,
                r_fjall.synced_1,
            ),
            (
                "synced write, 8 per fsync (ops/s)",
                r_ours.synced_8,
                r_fjall.synced_8,
            ),
        ] {
            println!("| {kib} KiB {name} | {a:.0} | {b:.0} | {:.2} |", a / b);
        }
        println!(
            "| {kib} KiB space amplification (disk ÷ user bytes, lower is better) | {:.2} | {:.2} | {:.2} |",
            r_ours.space,
            r_fjall.space,
            r_ours.space / r_fjall.space
        );
        println!(
            "| {kib} KiB ringkv-lsm write amplification (disk written ÷ user bytes) | {:.2} | | |",
            stats.write_amplification()
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
