//! The same seed gives the same trace, and different seeds different ones. Which seeds of which
//! scenarios CI runs twice to compare fingerprints is each scenario's `[ci] determinism_seeds`,
//! run by `scenario_contracts.rs`.

use sim::RunOptions;

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
