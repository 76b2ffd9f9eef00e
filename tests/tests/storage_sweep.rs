//! The storage crash oracle holds on 2,000 seeds of `scenarios/disk-crash.toml` in CI (the README
//! gives the 10,000-seed command), and fails on every seed of the broken disk whose fsync lies.

use ringkv_tests::scenario_path;
use sim::disk::StorageScenario;
use std::path::PathBuf;

fn load(name: &str) -> StorageScenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(scenario_path(name));
    match StorageScenario::load(&path) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn disk_crash_oracle_holds_on_2000_seeds() {
    let scenario = load("disk-crash");
    let path = scenario_path("disk-crash");
    let failed: Vec<_> = (0..2000)
        .map(|seed| scenario.run_seed(&path, seed))
        .filter(|r| !r.as_expected())
        .map(|r| format!("{}: {:?}", r.replay_command(), r.checks))
        .collect();
    assert!(
        failed.is_empty(),
        "{} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn a_disk_whose_fsync_lies_is_caught_on_every_seed() {
    let scenario = load("broken-disk-fsync-lies");
    let path = scenario_path("broken-disk-fsync-lies");
    for seed in 0..100 {
        let report = scenario.run_seed(&path, seed);
        assert!(
            !report.ok(),
            "seed {seed}: the oracle did not notice lost acknowledged writes"
        );
        assert!(report.as_expected());
    }
}

#[test]
fn replicated_cluster_on_the_lsm_engine_loses_nothing_on_100_seeds() {
    let bad =
        ringkv_tests::unexpected_seeds("crash-restart-lsm", 0..100, sim::RunOptions::default());
    assert!(bad.is_empty(), "{}", ringkv_tests::describe(&bad));
}

#[test]
fn the_lsm_engine_on_the_simulated_disk_is_deterministic() {
    let options = sim::RunOptions {
        trace: false,
        check_determinism: true,
    };
    let bad = ringkv_tests::unexpected_seeds("crash-restart-lsm", 0..10, options);
    assert!(bad.is_empty(), "{}", ringkv_tests::describe(&bad));
}
