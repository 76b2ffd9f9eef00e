//! Each repair mechanism is shown to matter: turning it off makes its scenario fail. (That each
//! scenario passes with the mechanism on, with its availability, hint and detection bounds, is
//! the scenario's own `[ci]` contract, run by `scenario_contracts.rs`.)

use ringkv_tests::load;
use sim::{run_seed, RunOptions};

#[test]
fn without_anti_entropy_the_replicas_stay_divergent() {
    let mut scenario = load("anti-entropy");
    scenario.cluster.config.anti_entropy_interval_ms = 0;
    for seed in 0..20 {
        let run = run_seed(&scenario, "no-ae", seed, RunOptions::default()).expect("runs");
        let convergence = run
            .report
            .checks
            .iter()
            .find(|(n, _)| *n == "convergence")
            .map(|(_, v)| v.word());
        assert_eq!(
            convergence,
            Some("fail"),
            "seed {seed} converged without anti-entropy"
        );
        assert_eq!(run.report.anti_entropy, (0, 0));
    }
}

fn word(report: &sim::report::RunReport, check: &str) -> &'static str {
    report
        .checks
        .iter()
        .find(|(n, _)| *n == check)
        .map_or("missing", |(_, v)| v.word())
}

#[test]
fn without_sloppy_quorum_the_minority_side_is_unavailable() {
    let mut scenario = load("partition-sloppy");
    scenario.cluster.config.sloppy_quorum = false;
    for seed in 0..10 {
        let report = run_seed(&scenario, "strict", seed, RunOptions::default())
            .expect("runs")
            .report;
        assert!(
            report.availability < 0.99,
            "seed {seed}: availability {}",
            report.availability
        );
    }
}

#[test]
fn without_hints_and_anti_entropy_crashed_replicas_stay_behind() {
    let mut scenario = load("crash-restart-hints");
    scenario.cluster.config.sloppy_quorum = false;
    scenario.cluster.config.anti_entropy_interval_ms = 0;
    let diverged = (0..30)
        .filter(|&seed| {
            let report = run_seed(&scenario, "no-hints", seed, RunOptions::default())
                .expect("runs")
                .report;
            word(&report, "convergence") == "fail"
        })
        .count();
    // A seed whose crashes happen to miss every write can converge by luck; nearly all must not.
    assert!(
        diverged >= 25,
        "only {diverged} of 30 seeds diverged without hints and anti-entropy"
    );
}

#[test]
fn at_plain_quorum_a_datacenter_outage_costs_availability() {
    // Control: the same outage at `quorum` (4 of 6 replicas) cannot be served by either side.
    let mut scenario = load("dc-outage");
    scenario.cluster.config.consistency = Some(ringkv_core::Consistency::Quorum);
    for seed in 0..5 {
        let report = run_seed(&scenario, "dc-quorum", seed, RunOptions::default())
            .expect("runs")
            .report;
        // Requests on both sides time out for the whole outage (each costs a client a full
        // timeout, so they are few by count, but never zero).
        let unavailable = report.ops.failed + report.ops.indeterminate;
        assert!(
            unavailable >= 100,
            "seed {seed}: only {unavailable} requests failed at quorum"
        );
        assert!(
            report.availability < 0.98,
            "seed {seed}: availability {}",
            report.availability
        );
    }
}

#[test]
fn without_anti_entropy_a_joining_node_never_receives_its_data() {
    let mut scenario = load("node-join");
    scenario.cluster.config.anti_entropy_interval_ms = 0;
    scenario.cluster.config.read_repair = false;
    scenario.cluster.config.sloppy_quorum = false;
    let diverged = (0..10)
        .filter(|&seed| {
            let report = run_seed(&scenario, "join-no-ae", seed, RunOptions::default())
                .expect("runs")
                .report;
            word(&report, "convergence") == "fail"
        })
        .count();
    // Only keys overwritten after the join reach the new node without streaming; a seed whose
    // workload happened to rewrite all of them converges by luck.
    assert!(
        diverged >= 8,
        "only {diverged} of 10 seeds diverged without anti-entropy"
    );
}
