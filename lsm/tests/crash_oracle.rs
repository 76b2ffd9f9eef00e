//! Seed sweeps of the crash-consistency oracle (`ringkv_lsm::oracle`).
//!
//! More seeds: `RINGKV_LSM_SEEDS=10000 cargo test -p ringkv-lsm --release --test crash_oracle`.
//! One seed: `RINGKV_LSM_SEED=N cargo test -p ringkv-lsm --release --test crash_oracle replay_one_seed`
//! (holes are drawn by default, as in every sweep; `RINGKV_LSM_SECTOR_HOLES=0` replays a seed of a
//! sweep run with `sector_holes: false`).

use bytes::Bytes;
use ringkv_lsm::fs::{CrashMode, FileSystem, SimFs};
use ringkv_lsm::oracle::{crash_oracle, OracleConfig, OracleReport};
use ringkv_lsm::{Lsm, LsmConfig, LsmError, WriteOutcome};

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
        for (site, n) in r.faults_fired {
            *total.faults_fired.entry(site).or_default() += n;
        }
    }
    println!("{total:?}");
    // Every engine fault site (BUGGIFY) fired somewhere in the sweep: a site that never fires
    // tests nothing.
    let never: Vec<&str> = ringkv_lsm::faults::SITES
        .into_iter()
        .filter(|site| !total.faults_fired.contains_key(site))
        .collect();
    assert!(never.is_empty(), "fault sites that never fired: {never:?}");
    // The sweep must actually exercise every path it claims to check.
    assert!(total.crashes > 0 && total.acknowledged_writes > 0);
    assert!(total.unacknowledged_kept > 0 && total.unacknowledged_lost > 0);
    assert!(total.flushes > 0 && total.compactions > 0 && total.gc_segments > 0);
    assert!(total.poisonings > 0 && total.bit_flips_detected > 0);
}

#[test]
fn fault_points_are_off_unless_switched_on_and_change_nothing_then() {
    // Off, the oracle runs exactly as it did before fault points existed: no site is counted.
    let off = OracleConfig {
        fault_points: false,
        ..OracleConfig::default()
    };
    for seed in 0..20 {
        let r = crash_oracle(seed, &off).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            r.faults_fired.is_empty(),
            "seed {seed}: {:?}",
            r.faults_fired
        );
    }
    // On, a seed replays identically (the draws are seeded).
    let on = OracleConfig::default();
    let a = crash_oracle(7, &on).unwrap_or_else(|e| panic!("{e}"));
    let b = crash_oracle(7, &on).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, b);
}

#[test]
fn replay_one_seed() {
    if let Some(seed) = std::env::var("RINGKV_LSM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let config = OracleConfig {
            sector_holes: std::env::var("RINGKV_LSM_SECTOR_HOLES").map_or(true, |v| v != "0"),
            disk_full: std::env::var("RINGKV_LSM_DISK_FULL").is_ok_and(|v| v == "1"),
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

/// Crashes that leave holes (`CrashMode::Sectors`: an unsynced sector lost, a later one kept),
/// drawn by default: recovery cuts the WAL at the first bad frame past the synced length its sync
/// markers claim, dropping every later frame (FORMAT.md), so the oracle must hold with them.
#[test]
fn oracle_holds_with_sector_holes() {
    let config = OracleConfig {
        sector_holes: true,
        ..OracleConfig::default()
    };
    for seed in 0..seeds() {
        crash_oracle(seed, &config).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Holes are tolerated only in the unsynced tail: a corrupted byte in the part of the WAL that a
/// sync marker says was fsynced is still reported as corruption naming the WAL, after any crash
/// mode (holes included), never cut like a torn tail.
#[test]
fn a_corrupted_byte_in_the_synced_part_of_the_wal_is_reported_naming_it() {
    let config = LsmConfig::tiny_for_tests();
    let mut checked = 0;
    for seed in 0..40u64 {
        let mut lsm = Lsm::open(SimFs::seeded(seed), config.clone()).expect("open");
        let wal = |fs: &mut SimFs| {
            fs.list()
                .expect("list")
                .into_iter()
                .find(|n| n.ends_with(".wal"))
                .expect("a wal")
        };
        let put = |lsm: &mut Lsm<SimFs>, i: u64| {
            let value = Bytes::from(format!("value {seed} {i} {}", "x".repeat((i % 7) as usize)));
            assert!(matches!(
                lsm.put(Bytes::from(format!("k{i:03}")), value),
                Ok(WriteOutcome::Written { .. })
            ));
        };
        // Batch A, synced; batch B (whose first frame is a marker covering A), synced; batch C
        // (with a marker covering B) not synced, lost or holed by the crash.
        for i in 0..4 {
            put(&mut lsm, i);
        }
        lsm.sync().expect("sync");
        let name = wal(lsm.fs_mut());
        // Batch A's bytes: the durable file up to its last nonzero byte (a preallocating WAL has
        // zeros after its records; the records may end in zero bytes, so this is a lower bound).
        let synced = lsm.fs_mut().read_all(&name).expect("read");
        let covered = synced
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i as u64 + 1);
        for i in 4..8 {
            put(&mut lsm, i);
        }
        lsm.sync().expect("sync");
        for i in 8..14 {
            put(&mut lsm, i);
        }
        let mut fs = lsm.into_fs();
        let mode = CrashMode::ALL[(seed % CrashMode::ALL.len() as u64) as usize];
        fs.crash(mode);
        // Byte `seed * 13 % covered` of batch A: below the marker's claim.
        let bit = (seed * 13 % covered) * 8 + seed % 8;
        assert!(fs.flip_bit(&name, bit));
        match Lsm::open(fs, config.clone()) {
            Err(e @ LsmError::Corrupt { .. }) => {
                assert_eq!(e.file(), Some(name.as_str()), "{e}");
                assert!(e.to_string().contains("synced part"), "{e}");
            }
            other => panic!("seed {seed} ({mode:?}): a flip at bit {bit} of {name}: {other:?}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 40);
}

/// A disk that fills up and empties again at random (issue 17, item 6): refusals for space have
/// no effect, nothing is poisoned by them, restarts on a full disk recover, and writes are
/// accepted again once space is back, without a restart; every acknowledged write survives.
#[test]
fn oracle_holds_on_a_disk_that_fills_up() {
    let config = OracleConfig {
        disk_full: true,
        ..OracleConfig::default()
    };
    for seed in 0..seeds() {
        crash_oracle(seed, &config).unwrap_or_else(|e| panic!("{e}"));
    }
}
