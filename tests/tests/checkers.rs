//! Every checker is shown to fail on a deliberately broken system, and the anomaly scenarios are
//! shown to come from what they claim (a control run without the cause passes).

use ringkv_tests::load;
use sim::{run_seed, RunOptions, Scenario};

/// Outcome word of check `name` for each seed.
fn verdicts(scenario: &Scenario, name: &str, seeds: std::ops::Range<u64>) -> Vec<&'static str> {
    seeds
        .map(|seed| {
            let run = run_seed(scenario, "variant", seed, RunOptions::default()).expect("runs");
            let verdict = run
                .report
                .checks
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.word());
            verdict.expect("check present")
        })
        .collect()
}

fn quiet_network(scenario: &mut Scenario) {
    scenario.network.drop = 0.0;
    scenario.network.duplicate = 0.0;
    scenario.faults.clear();
    scenario.nemesis.partitions = false;
    scenario.nemesis.crashes = false;
    scenario.nemesis.pauses = false;
    scenario.nemesis.clock_jumps = false;
}

#[test]
fn convergence_holds_without_faults_and_catches_a_replica_that_drops_writes() {
    let mut scenario = load("partition");
    quiet_network(&mut scenario);
    scenario.workload.operations = 4000;
    scenario.check.convergence = true;
    // The repair mechanisms would heal the divergence this test needs the checker to see.
    scenario.cluster.config.read_repair = false;
    scenario.cluster.config.anti_entropy_interval_ms = 0;
    assert!(verdicts(&scenario, "convergence", 0..20)
        .iter()
        .all(|v| *v == "pass"));
    scenario.cluster.unsafe_drop_every_nth_write = 10;
    assert!(verdicts(&scenario, "convergence", 0..20)
        .iter()
        .all(|v| *v == "fail"));
}

#[test]
fn linearizability_catches_abd_without_write_back() {
    // quorum-new-old's adversarial latency, at the linearizable level.
    let mut scenario = load("quorum-new-old");
    scenario.cluster.config.consistency = Some(ringkv_core::Consistency::Linearizable);
    let with_write_back = verdicts(&scenario, "linearizable", 0..30);
    assert!(
        with_write_back.iter().all(|v| *v == "pass"),
        "{with_write_back:?}"
    );
    scenario.cluster.unsafe_skip_write_back = true;
    let without = verdicts(&scenario, "linearizable", 0..30);
    assert!(without.iter().all(|v| *v == "fail"), "{without:?}");
}

#[test]
fn lww_clock_skew_anomaly_comes_from_the_skew() {
    let mut scenario = load("lww-clock-skew");
    assert!(verdicts(&scenario, "linearizable", 0..20)
        .iter()
        .all(|v| *v == "fail"));
    scenario.clocks.skew_ms = 0;
    scenario.faults.clear();
    let control = verdicts(&scenario, "linearizable", 0..20);
    assert!(
        control.iter().all(|v| *v == "pass"),
        "without skew: {control:?}"
    );
}

#[test]
fn the_linearizable_level_survives_every_anomaly_scenario() {
    for name in ["lww-clock-skew", "quorum-new-old"] {
        let mut scenario = load(name);
        scenario.cluster.config.consistency = Some(ringkv_core::Consistency::Linearizable);
        let verdicts = verdicts(&scenario, "linearizable", 0..20);
        assert!(
            verdicts.iter().all(|v| *v == "pass"),
            "{name}: {verdicts:?}"
        );
    }
}

/// A vector-clock cluster whose default level is `linearizable` would refuse every request, so
/// core's configuration check refuses the cluster itself, naming the fix (issue #17 item 8).
#[test]
fn vector_clock_mode_refuses_the_linearizable_level() {
    let mut scenario = load("vector-clock");
    scenario.cluster.config.consistency = Some(ringkv_core::Consistency::Linearizable);
    scenario.workload.operations = 200;
    let refused = run_seed(&scenario, "vc-lin", 1, RunOptions::default())
        .err()
        .expect("the configuration is refused before anything runs");
    assert!(refused.contains("conflict = \"lww\""), "{refused}");
}
