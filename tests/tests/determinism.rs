//! The same seed gives the same trace fingerprint: 100 seeds of every shipped scenario run twice.

use ringkv_tests::{describe, unexpected_seeds, PASSING_SCENARIOS};
use sim::RunOptions;

fn twice(name: &str) {
    let options = RunOptions {
        trace: false,
        check_determinism: true,
    };
    let bad = unexpected_seeds(name, 0..100, options);
    assert!(
        bad.is_empty(),
        "{name}: nondeterministic or failing seeds:\n{}",
        describe(&bad)
    );
}

#[test]
fn partition_is_deterministic() {
    twice(PASSING_SCENARIOS[0]);
}

#[test]
fn crash_restart_is_deterministic() {
    twice(PASSING_SCENARIOS[1]);
}

#[test]
fn clock_skew_is_deterministic() {
    twice(PASSING_SCENARIOS[2]);
}

#[test]
fn broken_scenario_is_deterministic_too() {
    let scenario = ringkv_tests::load("broken-ack-before-persist");
    let options = RunOptions {
        trace: false,
        check_determinism: true,
    };
    for seed in 0..20 {
        let run = sim::run_seed(&scenario, "broken", seed, options).expect("runs");
        let determinism = run
            .report
            .checks
            .iter()
            .find(|(n, _)| *n == "determinism")
            .map(|(_, v)| v.word());
        assert_eq!(determinism, Some("pass"), "seed {seed}");
    }
}

#[test]
fn different_seeds_give_different_fingerprints() {
    let scenario = ringkv_tests::load("partition");
    let a = sim::run_seed(&scenario, "p", 42, RunOptions::default()).expect("runs");
    let b = sim::run_seed(&scenario, "p", 43, RunOptions::default()).expect("runs");
    assert_ne!(a.report.fingerprint, b.report.fingerprint);
}

#[test]
fn the_trace_is_reproducible_line_for_line() {
    let scenario = ringkv_tests::load("crash-restart");
    let options = RunOptions {
        trace: true,
        check_determinism: false,
    };
    let a = sim::run_seed(&scenario, "c", 7, options).expect("runs");
    let b = sim::run_seed(&scenario, "c", 7, options).expect("runs");
    assert!(a.trace.len() > 1000);
    assert_eq!(a.trace, b.trace);
}

#[test]
fn gossip_membership_is_deterministic() {
    // Gossip draws its peers from the node's seeded RNG and reorders nothing by hash: two runs
    // of a seed must give the same trace, operator ring changes and detections included.
    let options = RunOptions {
        trace: false,
        check_determinism: true,
    };
    for name in ["gossip-5", "node-join", "dc-replicas"] {
        let bad = unexpected_seeds(name, 0..20, options);
        assert!(
            bad.is_empty(),
            "{name}: nondeterministic or failing seeds:\n{}",
            describe(&bad)
        );
    }
}
