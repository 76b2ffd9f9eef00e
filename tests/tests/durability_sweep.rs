//! The durability check passes on 500 seeds of every shipped scenario (n=3, r=2, w=2), and fails on
//! every seed of a deliberately broken configuration, so it is a check that can fail.

use ringkv_tests::{describe, load, unexpected_seeds};
use sim::RunOptions;

const SEEDS: std::ops::Range<u64> = 0..500;

fn sweep(name: &str) {
    let scenario = load(name);
    assert_eq!(
        (
            scenario.cluster.config.n,
            scenario.cluster.config.r,
            scenario.cluster.config.w
        ),
        (3, 2, 2)
    );
    assert!(
        scenario.check.durability,
        "{name} must run the durability check"
    );
    let bad = unexpected_seeds(name, SEEDS, RunOptions::default());
    assert!(
        bad.is_empty(),
        "{} seeds of {name} failed:\n{}",
        bad.len(),
        describe(&bad)
    );
}

#[test]
fn partition_durable_on_500_seeds() {
    sweep("partition");
}

#[test]
fn crash_restart_durable_on_500_seeds() {
    sweep("crash-restart");
}

#[test]
fn clock_skew_durable_on_500_seeds() {
    sweep("clock-skew");
}

#[test]
fn acknowledging_before_persisting_is_caught_on_every_seed() {
    let scenario = load("broken-ack-before-persist");
    assert!(scenario.cluster.unsafe_ack_before_persist);
    // `expect = "violation"`: a seed is unexpected when the durability check does NOT fail.
    let missed = unexpected_seeds("broken-ack-before-persist", 0..100, RunOptions::default());
    assert!(
        missed.is_empty(),
        "lost writes went unnoticed on {} seeds:\n{}",
        missed.len(),
        describe(&missed)
    );
}

#[test]
fn the_same_broken_scenario_passes_when_acks_wait_for_fsync() {
    // Control: identical faults with the safe configuration lose nothing, so the failures above
    // come from acknowledging early and not from the scenario itself.
    let mut scenario = load("broken-ack-before-persist");
    scenario.cluster.unsafe_ack_before_persist = false;
    for seed in 0..50 {
        let run = sim::run_seed(&scenario, "control", seed, RunOptions::default()).expect("runs");
        assert!(run.report.ok(), "seed {seed}: {:?}", run.report.checks);
    }
}
