//! The row cache (`row_cache.rs`) answers exactly what the full lookup would, whatever runs
//! between reads: puts and deletes (written through), flush steps, compaction steps that drop
//! values their owner calls dead, value-log collection. Two engines on identical correct disks
//! take the same random operations, one with a row cache small enough to evict all the time and
//! one without; every read must agree, and the cached one must really have answered some.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_lsm::fs::SimFs;
use ringkv_lsm::{Lsm, LsmConfig, WriteOutcome};

const KEYS: u32 = 48;

/// Values starting with `D` are dead since time 0 for their owner: compaction drops them at the
/// last level once past the grace.
fn dead_since(value: &[u8]) -> Option<u64> {
    (value.first() == Some(&b'D')).then_some(0)
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("k{i:03}"))
}

/// Small (inline) and large (value-log) values, some of them dead.
fn value(rng: &mut ChaCha8Rng, i: u32, version: u32) -> Bytes {
    let dead = rng.gen_ratio(1, 5);
    // Mostly small (inline) and separated values, sometimes one too large to be written through.
    let len = match rng.gen_range(0..20) {
        0 => 5000,
        1..=8 => 120,
        _ => 12,
    };
    let mut v = format!("{}{i}-{version}-", if dead { 'D' } else { 'L' }).into_bytes();
    v.resize(len, b'.');
    Bytes::from(v)
}

fn open(row_cache_bytes: usize) -> Lsm<SimFs> {
    let config = LsmConfig {
        row_cache_bytes,
        level0_stall_tables: 64,
        ..LsmConfig::tiny_for_tests()
    };
    let mut lsm = Lsm::open(SimFs::seeded(7), config).expect("open");
    lsm.set_dead_since(dead_since);
    lsm
}

fn written(outcome: Result<WriteOutcome, ringkv_lsm::LsmError>) {
    match outcome.expect("write") {
        WriteOutcome::Written { .. } => {}
        WriteOutcome::Stalled { .. } => panic!("level 0 is deep enough in this test"),
    }
}

/// Applies one random operation to both engines; returns whether it was a read.
fn step(rng: &mut ChaCha8Rng, engines: &mut [Lsm<SimFs>; 2], now_ms: &mut u64, n: u32) -> bool {
    let i = rng.gen_range(0..KEYS);
    match rng.gen_range(0..100) {
        0..=34 => {
            let v = value(rng, i, n);
            for lsm in engines.iter_mut() {
                written(lsm.put(key(i), v.clone()));
            }
        }
        35..=41 => {
            for lsm in engines.iter_mut() {
                written(lsm.delete(key(i), *now_ms));
            }
        }
        42..=84 => {
            let [cached, plain] = engines;
            let got = cached.get(&key(i)).expect("cached read");
            let want = plain.get(&key(i)).expect("plain read");
            assert_eq!(got, want, "key {i} after {n} operations");
            return true;
        }
        85..=89 => {
            for lsm in engines.iter_mut() {
                lsm.flush_step(512).expect("flush step");
            }
        }
        90..=96 => {
            // Time passes, so that dead values and tombstones get past the grace.
            *now_ms += 300;
            for lsm in engines.iter_mut() {
                lsm.compact_step(*now_ms, 2048).expect("compaction step");
            }
        }
        _ => {
            for lsm in engines.iter_mut() {
                lsm.collect_value_log_step(1024).expect("collection step");
            }
        }
    }
    false
}

#[test]
fn the_row_cache_answers_what_the_full_lookup_would() {
    for seed in 0..24u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Room for a handful of rows: eviction runs all the time.
        let mut engines = [open(1200), open(0)];
        let mut now_ms = 0;
        let mut reads = 0;
        for n in 0..3_000 {
            reads += u64::from(step(&mut rng, &mut engines, &mut now_ms, n));
        }
        for i in 0..KEYS {
            let [cached, plain] = &mut engines;
            assert_eq!(
                cached.get(&key(i)).expect("read"),
                plain.get(&key(i)).expect("read")
            );
        }
        let [cached, plain] = &engines;
        cached.check_invariants();
        let stats = cached.stats();
        assert!(
            stats.row_cache_hits > 0,
            "seed {seed}: the cache answered no read"
        );
        assert!(
            stats.row_cache_misses > 0,
            "seed {seed}: the cache never missed"
        );
        assert!(stats.row_cache_bytes <= 1200);
        assert_eq!(plain.stats().row_cache_hits, 0, "off means off");
        assert!(reads > 1000, "seed {seed}: {reads} reads");
        assert!(stats.compactions > 0, "seed {seed}: no compaction ran");
    }
}

/// A dead value written through the cache reads as absent once compaction has dropped it at the
/// last level, not as the cached row.
#[test]
fn a_dropped_dead_value_is_forgotten_by_the_cache() {
    let mut lsm = open(64 << 10);
    written(lsm.put(key(1), Bytes::from_static(b"Dgone")));
    written(lsm.put(key(2), Bytes::from_static(b"Lkept")));
    assert_eq!(
        lsm.get(&key(1)).expect("read"),
        Some(Bytes::from_static(b"Dgone"))
    );
    assert!(lsm.stats().row_cache_hits >= 1, "answered by the cache");
    for round in 0..6u32 {
        written(lsm.put(key(100 + round), Bytes::from_static(b"Lfiller")));
        lsm.flush().expect("flush");
    }
    let now_ms = 1_000_000;
    for _ in 0..10_000 {
        if lsm.compact_step(now_ms, 4096).expect("compact") == ringkv_lsm::CompactionProgress::Idle
        {
            break;
        }
    }
    assert_eq!(lsm.get(&key(1)).expect("read"), None, "dropped, so absent");
    assert_eq!(
        lsm.get(&key(2)).expect("read"),
        Some(Bytes::from_static(b"Lkept"))
    );
}
