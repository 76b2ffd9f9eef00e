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

/// The README shows the summary of this same run as its sample output, next to the claim that the
/// fingerprint is the same on every machine: the sample must be the pinned snapshot (only the
/// `wall time` line, which measures this machine, may differ).
#[test]
fn readme_sample_output_is_the_pinned_snapshot() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let snapshot = std::fs::read_to_string(
        root.join("tests/tests/snapshots/summary_snapshot__partition_seed_42_summary.snap"),
    )
    .expect("the pinned snapshot");
    let sample = readme_sample(&readme)
        .expect("README.md has a ```text block after '## What the simulator prints'");
    let pinned: Vec<&str> = snapshot
        .split("\n---\n")
        .nth(1)
        .expect("an insta snapshot has a header and a body")
        .lines()
        .filter(|line| !line.starts_with("wall time"))
        .collect();
    let shown: Vec<&str> = sample
        .lines()
        .filter(|line| !line.starts_with("wall time"))
        .collect();
    assert_eq!(
        shown, pinned,
        "README.md's sample output differs from the pinned snapshot: paste the output of \
         `cargo run --release -p sim -- scenarios/partition.toml --seed 42` into the README"
    );
}

/// The body of the first ```text block after the heading that introduces the sample output.
fn readme_sample(readme: &str) -> Option<&str> {
    let after_heading = readme.split("## What the simulator prints").nth(1)?;
    let block = after_heading.split("```text\n").nth(1)?;
    block.split("\n```").next()
}
