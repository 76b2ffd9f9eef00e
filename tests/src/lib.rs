//! Helpers shared by the workspace-level tests in `tests/tests/`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use sim::report::RunReport;
use sim::{run_seed, RunOptions, Scenario};
use std::path::PathBuf;

/// The shipped scenarios that must pass on every seed.
pub const PASSING_SCENARIOS: [&str; 3] = ["partition", "crash-restart", "clock-skew"];

/// Path of a shipped scenario, relative to the workspace (as the replay command prints it).
pub fn scenario_path(name: &str) -> String {
    format!("scenarios/{name}.toml")
}

/// Loads a shipped scenario.
pub fn load(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(scenario_path(name));
    match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Runs seeds `seeds` of `name` and returns every report whose outcome differs from `expect`.
pub fn unexpected_seeds(
    name: &str,
    seeds: std::ops::Range<u64>,
    options: RunOptions,
) -> Vec<RunReport> {
    let scenario = load(name);
    let path = scenario_path(name);
    seeds
        .filter_map(|seed| match run_seed(&scenario, &path, seed, options) {
            Ok(run) => (!run.report.as_expected()).then_some(run.report),
            Err(e) => panic!("{path} seed {seed}: {e}"),
        })
        .collect()
}

/// Runs seeds `seeds` of `name` with default options and fails naming every seed whose outcome
/// differs from the scenario's `expect`, with its replay command.
pub fn assert_seeds_as_expected(name: &str, seeds: std::ops::Range<u64>) {
    let bad = unexpected_seeds(name, seeds, RunOptions::default());
    assert!(
        bad.is_empty(),
        "{} seeds of {name} not as expected:\n{}",
        bad.len(),
        describe(&bad)
    );
}

/// A readable list of failing seeds with their replay commands and check details.
pub fn describe(reports: &[RunReport]) -> String {
    reports
        .iter()
        .take(5)
        .map(|r| {
            let checks: Vec<String> = r.checks.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            format!("{}\n    {}", r.replay_command(), checks.join("\n    "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
