//! Seed sweeps of the crash-consistency oracle (`ringkv_lsm::oracle`).
//!
//! More seeds: `RINGKV_LSM_SEEDS=10000 cargo test -p ringkv-lsm --release --test crash_oracle`.
//! One seed: `RINGKV_LSM_SEED=N cargo test -p ringkv-lsm --release --test crash_oracle replay_one_seed`
//! (add `RINGKV_LSM_SECTOR_HOLES=1` for a seed of the sector-holes sweeps).

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
        let config = OracleConfig {
            sector_holes: std::env::var_os("RINGKV_LSM_SECTOR_HOLES").is_some(),
            ..OracleConfig::default()
        };
        let report = crash_oracle(seed, &config).unwrap_or_else(|e| panic!("{e}"));
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

/// Crashes that leave holes (`CrashMode::Sectors`: an unsynced sector lost, a later one kept).
/// The oracle must hold with them too, but today the engine's WAL recovery reports such a hole as
/// mid-log corruption (a bad frame followed by a valid one) instead of cutting the unsynced tail
/// there, so this sweep is ignored until the engine absorbs holes:
/// `cargo test -p ringkv-lsm --release --test crash_oracle -- --ignored`.
#[test]
#[ignore = "engine: a lost unsynced WAL sector followed by a kept one is reported as corruption"]
fn oracle_holds_with_sector_holes() {
    let config = OracleConfig {
        sector_holes: true,
        ..OracleConfig::default()
    };
    for seed in 0..seeds() {
        crash_oracle(seed, &config).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// With holes allowed, every seed either passes or fails in exactly one known way: recovery after a
/// `Sectors` crash rejects the WAL because a bad frame lying past the WAL's durable length (a lost
/// unsynced sector, read as zeros) is followed by a valid frame (a kept later sector). Acknowledged
/// data is never lost or wrong; the engine refuses to open instead. Any other failure is a new bug.
#[test]
fn sector_holes_fail_only_by_the_known_wal_misreport() {
    let config = OracleConfig {
        sector_holes: true,
        ..OracleConfig::default()
    };
    let mut misreports = 0;
    for seed in 0..seeds() {
        let Err(e) = crash_oracle(seed, &config) else {
            continue;
        };
        assert!(
            is_wal_hole_misreport(&e),
            "a failure other than the known WAL hole misreport:\n{e}"
        );
        misreports += 1;
    }
    println!(
        "{misreports} of {} seeds hit the WAL hole misreport",
        seeds()
    );
}

/// "recovery after a Sectors crash failed: corrupt file N.wal: bad frame at offset B (...) followed
/// by a valid frame at V (N.wal held D durable bytes before the crash)" with B >= D.
fn is_wal_hole_misreport(e: &str) -> bool {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &e[e.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let (Some(bad), Some(durable)) = (
        number_after("bad frame at offset "),
        number_after(".wal held "),
    ) else {
        return false;
    };
    e.contains("recovery after a Sectors crash failed: corrupt file ")
        && e.contains("followed by a valid frame at ")
        && bad >= durable
}
