//! Every scenario in `scenarios/` runs in CI: a scenario added to the folder is swept here without
//! anyone remembering to write a test for it. Each must be as expected (pass, or the violation it
//! claims) on every seed of the sweep; the long sweeps of selected scenarios live in their own tests.
//! Storage-only scenarios (`kind = "storage"`) and swarm files have their own sweeps
//! (`storage_sweep.rs`, `sim/tests/swarm.rs`).

use ringkv_tests::{describe, unexpected_seeds};
use sim::RunOptions;

/// Seeds per scenario here (the 100-node scenario is slow per seed and gets fewer).
const SEEDS_PER_SCENARIO: u64 = 20;
const SEEDS_OF_LARGE_SCENARIOS: u64 = 2;

fn scenario_names() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "toml" {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            // Storage scenarios and swarm files have their own sweeps (storage_sweep.rs,
            // sim/tests/swarm.rs). gossip-1000 costs minutes of CPU per seed (README, "Simulator
            // speed"): it is run by hand until it is fast enough for CI.
            if path.file_stem().is_some_and(|stem| stem == "gossip-1000") {
                return None;
            }
            if text
                .lines()
                .any(|line| line.trim() == "kind = \"storage\"" || line.trim() == "[swarm]")
            {
                return None;
            }
            path.file_stem()?.to_str().map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_scenario_is_as_expected() {
    let names = scenario_names();
    assert!(names.len() >= 18, "scenarios/ lists only {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let seeds = if name.contains("100") {
            SEEDS_OF_LARGE_SCENARIOS
        } else {
            SEEDS_PER_SCENARIO
        };
        let bad = unexpected_seeds(name, 0..seeds, RunOptions::default());
        if !bad.is_empty() {
            failures.push(format!(
                "{name}: {} of {seeds} seeds not as expected\n{}",
                bad.len(),
                describe(&bad)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
