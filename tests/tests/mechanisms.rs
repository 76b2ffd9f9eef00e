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
    scenario.cluster.anti_entropy_interval_ms = 0;
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
