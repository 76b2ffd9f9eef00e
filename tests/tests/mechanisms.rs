//! Each repair mechanism is shown to matter: turning it off makes its scenario fail.

use ringkv_tests::{describe, load, unexpected_seeds};
use sim::{run_seed, RunOptions};

#[test]
fn anti_entropy_scenario_passes_200_seeds() {
    let bad = unexpected_seeds("anti-entropy", 0..200, RunOptions::default());
    assert!(bad.is_empty(), "{}", describe(&bad));
}

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

/// Runs `seeds` of scenario `name` and requires every seed to pass its checks with at least
/// `availability_min`; with `no_pending_hints`, also that no hint is left at the end.
fn every_seed_passes(
    name: &str,
    seeds: std::ops::Range<u64>,
    availability_min: f64,
    no_pending_hints: bool,
) {
    let scenario = load(name);
    for seed in seeds {
        let report = run_seed(&scenario, name, seed, RunOptions::default())
            .expect("runs")
            .report;
        assert!(report.ok(), "{name} seed {seed}: {:?}", report.checks);
        assert!(
            report.availability >= availability_min,
            "{name} seed {seed}: availability {}",
            report.availability
        );
        if no_pending_hints {
            assert_eq!(report.hints.5, 0, "{name} seed {seed}: hints left pending");
        }
    }
}

#[test]
fn partition_sloppy_stays_available_and_converges_on_200_seeds() {
    every_seed_passes("partition-sloppy", 0..200, 0.999, true);
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
fn crash_restart_hints_passes_200_seeds() {
    let bad = unexpected_seeds("crash-restart-hints", 0..200, RunOptions::default());
    assert!(bad.is_empty(), "{}", describe(&bad));
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
fn dc_outage_keeps_both_datacenters_writing_at_local_quorum_on_100_seeds() {
    every_seed_passes("dc-outage", 0..100, 0.99, false);
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
fn rolling_restart_stays_available_and_loses_nothing_on_100_seeds() {
    every_seed_passes("rolling-restart", 0..100, 0.99, true);
}

#[test]
fn node_join_and_leave_pass_100_seeds_each() {
    for name in ["node-join", "node-leave"] {
        every_seed_passes(name, 0..100, 0.99, true);
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

/// Gossip detection in the full simulator: a crash is judged `Down` by every running node after
/// the configured `suspect_after_ms + down_after_ms` (3 s) plus the few rounds its last heartbeat
/// takes to spread, and a restart is seen `Alive` everywhere within a few rounds.
fn detection_within_bounds(name: &str, seeds: std::ops::Range<u64>) {
    let scenario = load(name);
    let configured = (scenario.cluster.membership.suspect_after_ms
        + scenario.cluster.membership.down_after_ms) as f64;
    let round = scenario.cluster.membership.gossip_interval_ms as f64;
    for seed in seeds {
        let report = run_seed(&scenario, name, seed, RunOptions::default())
            .expect("runs")
            .report;
        assert!(report.ok(), "{name} seed {seed}: {:?}", report.checks);
        let gossip = report.gossip.as_ref().expect("gossip ran");
        // Node 1 crashes and restarts; node 2 crashes and is removed.
        assert_eq!(gossip.down_ms.len(), 2, "{name} seed {seed}: {gossip:?}");
        assert_eq!(gossip.alive_ms.len(), 1, "{name} seed {seed}: {gossip:?}");
        for &ms in &gossip.down_ms {
            assert!(
                ms >= configured - 4.0 * round && ms <= configured + 8.0 * round,
                "{name} seed {seed}: a crash took {ms} ms to be seen down everywhere"
            );
        }
        for &ms in &gossip.alive_ms {
            assert!(
                ms <= 8.0 * round,
                "{name} seed {seed}: a restart took {ms} ms to be seen alive everywhere"
            );
        }
    }
}

#[test]
fn gossip_detects_crashes_and_restarts_within_bounds_with_5_nodes() {
    detection_within_bounds("gossip-5", 0..40);
}

#[test]
fn gossip_detects_crashes_and_restarts_within_bounds_with_20_nodes() {
    detection_within_bounds("gossip-20", 0..3);
}

#[test]
fn uneven_replicas_per_datacenter_stay_available_and_converge_on_50_seeds() {
    every_seed_passes("dc-replicas", 0..50, 0.95, false);
}
