//! Pins the human summary of seed 42 of the partition scenario: any change in behaviour (message
//! counts, outcomes, fingerprint) shows up as a snapshot diff to review.

use sim::RunOptions;

#[test]
fn partition_seed_42_summary() {
    let scenario = ringkv_tests::load("partition");
    let run = sim::run_seed(
        &scenario,
        "scenarios/partition.toml",
        42,
        RunOptions::default(),
    )
    .expect("runs");
    insta::assert_snapshot!(run.report.render(false));
}
