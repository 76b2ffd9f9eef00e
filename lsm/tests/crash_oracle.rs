//! Seed sweeps of the crash-consistency oracle (`ringkv_lsm::oracle`).
//!
//! More seeds: `RINGKV_LSM_SEEDS=10000 cargo test -p ringkv-lsm --release --test crash_oracle`.
//! One seed: `RINGKV_LSM_SEED=N cargo test -p ringkv-lsm --release --test crash_oracle replay_one_seed`.

use ringkv_lsm::oracle::{crash_oracle, OracleConfig, OracleReport};

fn seeds() -> u64 {
    std::env::var("RINGKV_LSM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

#[test]
fn oracle_holds_across_seeds() {
    let config = OracleConfig::default();
    let mut total = OracleReport::default();
    for seed in 0..seeds() {
        let r = crash_oracle(seed, &config).unwrap_or_else(|e| panic!("{e}"));
        total.writes += r.writes;
        total.acknowledged_writes += r.acknowledged_writes;
        total.unacknowledged_kept += r.unacknowledged_kept;
        total.unacknowledged_lost += r.unacknowledged_lost;
        total.crashes += r.crashes;
        total.poisonings += r.poisonings;
        total.flushes += r.flushes;
        total.compactions += r.compactions;
        total.gc_segments += r.gc_segments;
        total.bit_flips_detected += r.bit_flips_detected;
        total.bit_flips_harmless += r.bit_flips_harmless;
    }
    println!("{total:?}");
    // The sweep must actually exercise every path it claims to check.
    assert!(total.crashes > 0 && total.acknowledged_writes > 0);
    assert!(total.unacknowledged_kept > 0 && total.unacknowledged_lost > 0);
    assert!(total.flushes > 0 && total.compactions > 0 && total.gc_segments > 0);
    assert!(total.poisonings > 0 && total.bit_flips_detected > 0);
}

#[test]
fn replay_one_seed() {
    if let Some(seed) = std::env::var("RINGKV_LSM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let report = crash_oracle(seed, &OracleConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        println!("{report:?}");
    }
}

#[test]
fn oracle_catches_a_disk_whose_fsync_lies() {
    let config = OracleConfig {
        broken_fsync: true,
        fsync_failures: false,
        bit_flip: false,
        ..OracleConfig::default()
    };
    let failures = (0..20)
        .filter(|&seed| crash_oracle(seed, &config).is_err())
        .count();
    assert!(
        failures >= 10,
        "only {failures} of 20 seeds caught acknowledging before durability"
    );
}
