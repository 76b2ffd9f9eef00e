//! Issue #16 item 5: a fault site that never fires tests nothing. This sweep runs the scenarios
//! below over their seeds, adds up every `buggify!` site's reaches and firings from the seeds'
//! reports, prints the table, and fails naming each registered site
//! (`ringkv_core::buggify::registered_sites`) that never fired.
//!
//! A new site that fails here is either unreachable from these scenarios (add the scenario that
//! reaches it to [`SWEEP`], keeping the whole sweep under about a minute of CPU in release) or
//! reached too rarely to fire (a site fires at 5% of its reaches on a quarter of seeds: put it
//! where the choice is made often enough to matter). The same table, for any scenario and seed
//! range, is `sim SCENARIO.toml --seeds A..B --buggify-report`; this test's own is printed with
//! `cargo test --release -p ringkv-tests --test buggify_sweep -- --nocapture`.

use sim::disk::{is_storage_scenario, StorageScenario};
use sim::report::{RunReport, SeedLine, SweepTotals};
use sim::swarm::{is_swarm_scenario, run_swarm_seed, SwarmFile};
use sim::{run_seed, RunOptions};
use std::ops::Range;
use std::path::Path;

/// The scenarios of the sweep and their seeds: the swarm reaches most mechanisms under drawn
/// faults; the others are where a mechanism is busiest (the LSM engine under crashes, the crash
/// oracle, gossip among 20 nodes, hints, anti-entropy, read repair, Paxos rounds, scans, ring
/// handovers at the linearizable level, vector-clock forwarded puts).
const SWEEP: &[(&str, Range<u64>)] = &[
    ("swarm", 0..120),
    ("crash-restart-lsm", 0..16),
    ("disk-crash", 0..16),
    ("gossip-20", 0..8),
    ("hints-only", 0..16),
    ("anti-entropy", 0..16),
    ("read-repair", 0..16),
    ("cas", 0..16),
    ("scan", 0..16),
    ("linearizable-ring-change", 0..16),
    ("vector-clock", 0..16),
];

/// The report of `seed` of the shipped scenario `name`, whatever its kind.
fn run(name: &str, seed: u64) -> RunReport {
    let path = ringkv_tests::scenario_path(name);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{path} seed {seed}: {e}") };
    if is_storage_scenario(&text) {
        let scenario = StorageScenario::load(&file).unwrap_or_else(|e| fail(&e));
        return scenario.run_seed(&path, seed);
    }
    let options = RunOptions::default();
    let run = if is_swarm_scenario(&text) {
        let swarm = SwarmFile::load(&file).unwrap_or_else(|e| fail(&e));
        run_swarm_seed(&swarm, &path, seed, options)
    } else {
        run_seed(&ringkv_tests::load(name), &path, seed, options)
    };
    run.unwrap_or_else(|e| fail(&e)).report
}

#[test]
fn every_registered_fault_site_fires_in_the_sweep() {
    let mut totals = SweepTotals::default();
    for (name, seeds) in SWEEP {
        for seed in seeds.clone() {
            // The report's own JSON line, as `sim --json` prints it and a `--jobs` parent
            // reads it back: the table is built from what a sweep on the command line sees.
            let line = SeedLine::Report(Box::new(run(name, seed).line()));
            let read = SeedLine::parse(&line.to_json()).expect("a seed's line reads back");
            totals.add(&read);
        }
    }
    println!("{}", totals.buggify_table());
    let never = totals.sites_never_fired();
    let scenarios: Vec<String> = SWEEP
        .iter()
        .map(|(name, seeds)| format!("{name} {}..{}", seeds.start, seeds.end))
        .collect();
    assert!(
        never.is_empty(),
        "registered fault sites that never fired over {} seeds ({}): {}",
        totals.seeds,
        scenarios.join(", "),
        never.join(", ")
    );
    let unregistered: Vec<&String> = totals
        .buggify
        .keys()
        .filter(|site| !ringkv_core::buggify::registered_sites().any(|r| r == site.as_str()))
        .collect();
    assert!(
        unregistered.is_empty(),
        "sites reached but not registered in core/src/buggify.rs: {unregistered:?}"
    );
}
