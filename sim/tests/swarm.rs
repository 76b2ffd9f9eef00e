//! Swarm mode: the draw is deterministic, covers every knob, and redraws only what the loader
//! refuses. The seeds CI runs (each drawing its own cluster and fault mix, every one passing every
//! check that applies) are the `[ci]` table of `scenarios/swarm.toml`, run by
//! `tests/tests/scenario_contracts.rs`.

use sim::swarm::{run_swarm_seed, SwarmFile, DRAW_ATTEMPTS_MAX};
use sim::RunOptions;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// As the replay command prints it (relative to the workspace).
const PATH: &str = "scenarios/swarm.toml";

fn swarm() -> SwarmFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(PATH);
    SwarmFile::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(PATH);
    std::fs::read_to_string(path).expect("swarm.toml is readable")
}

#[test]
fn the_same_seed_draws_the_same_scenario_and_runs_to_the_same_fingerprint() {
    let swarm = swarm();
    for seed in [3, 17, 101] {
        let (a, b) = (
            swarm.draw(seed).expect("draws"),
            swarm.draw(seed).expect("draws"),
        );
        assert_eq!(a.toml, b.toml, "seed {seed} drew two scenarios");
        assert_eq!(a.knobs, b.knobs);
        let options = RunOptions {
            check_determinism: true,
            ..RunOptions::default()
        };
        let run = run_swarm_seed(&swarm, PATH, seed, options).expect("runs");
        let determinism = run
            .report
            .checks
            .iter()
            .find(|(name, _)| *name == "determinism")
            .map(|(_, verdict)| verdict.word());
        assert_eq!(determinism, Some("pass"), "seed {seed}");
    }
    // Neighbouring seeds draw different combinations.
    assert_ne!(
        swarm.draw(1).expect("draws").toml,
        swarm.draw(2).expect("draws").toml
    );
}

#[test]
fn the_summary_and_the_json_line_carry_what_was_drawn() {
    let run = run_swarm_seed(&swarm(), PATH, 5, RunOptions::default()).expect("runs");
    let summary = run.report.render(false);
    assert!(
        summary.contains("drawn        swarm level="),
        "no drawn line in\n{summary}"
    );
    let json = run.report.to_json();
    assert!(json.contains("\"drawn\": {\"level\": \""), "{json}");
    assert!(json.ends_with("}}"), "drawn is the last field: {json}");
    assert!(json.contains("--seed 5\""), "{json}");
}

#[test]
fn two_thousand_draws_cover_every_knob() {
    let swarm = swarm();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for seed in 0..2000 {
        let drawn = swarm.draw(seed).expect("draws");
        for (name, value) in &drawn.knobs {
            let value = value.to_string();
            let value = match name.as_str() {
                // Only the kind of change, not which node or when.
                "membership" => value.split(' ').next().unwrap_or("").to_string(),
                "nemesis" | "checks" => {
                    for part in value.split(',') {
                        seen.insert(format!("{name}={part}"));
                    }
                    continue;
                }
                _ => value,
            };
            seen.insert(format!("{name}={value}"));
        }
        if drawn
            .knobs
            .iter()
            .any(|(name, _)| name == "replicas_per_datacenter")
        {
            seen.insert("replicas_per_datacenter".into());
        }
    }
    let wanted = [
        "level=default",
        "level=one",
        "level=quorum",
        "level=all",
        "level=linearizable",
        "level=local_quorum",
        "level=each_quorum",
        "conflict=lww",
        "conflict=vector-clock",
        "sloppy_quorum=true",
        "sloppy_quorum=false",
        "gossip=true",
        "gossip=false",
        "engine=memory",
        "engine=lsm",
        "datacenters=1",
        "datacenters=2",
        "read_repair=true",
        "read_repair=false",
        "membership=none",
        "membership=join",
        "membership=leave",
        "membership=remove",
        "nemesis=none",
        "nemesis=partitions",
        "nemesis=crashes",
        "nemesis=clock_jumps",
        "nemesis=pauses",
        "checks=durability",
        "checks=linearizable",
        "checks=convergence",
        "key_distribution=zipf",
        "local_coordinators=true",
        "replicas_per_datacenter",
        "redraws=1",
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !seen.contains(*w))
        .collect();
    assert!(missing.is_empty(), "never drawn: {missing:?}");
}

#[test]
fn linearizability_is_checked_exactly_at_the_linearizable_level() {
    let swarm = swarm();
    for seed in 0..500 {
        let drawn = swarm.draw(seed).expect("draws");
        let linearizable = drawn.scenario.cluster.config.consistency
            == Some(ringkv_core::Consistency::Linearizable);
        assert_eq!(
            drawn.scenario.check.linearizable, linearizable,
            "seed {seed}"
        );
        if linearizable {
            assert_eq!(
                drawn.scenario.cluster.config.conflict,
                ringkv_core::ConflictMode::Lww,
                "seed {seed}"
            );
            assert!(!drawn.scenario.cluster.config.sloppy_quorum, "seed {seed}");
            // Issue #11 item 1: no ring change at this level until the fix is merged.
            assert!(
                drawn
                    .scenario
                    .faults
                    .iter()
                    .all(|f| f.join.is_none() && f.leave.is_none() && f.remove.is_none()),
                "seed {seed}"
            );
        }
    }
}

#[test]
fn combinations_the_loader_refuses_are_redrawn_and_never_run() {
    // Every replica count above the ring: the loader refuses n > nodes, so every seed must draw
    // again until the ring is large enough.
    let refusing = text()
        .replace("nodes = [3, 6]", "nodes = [2, 6]")
        .replace("replicas = [1, 2, 3, 3, 3, 4, 5]", "replicas = [5]");
    let swarm = SwarmFile::parse("refusing.toml", &refusing).expect("parses");
    let mut redrawn = 0;
    for seed in 0..200 {
        let drawn = swarm.draw(seed).expect("draws");
        assert!(
            drawn.scenario.cluster.nodes >= 5,
            "seed {seed} runs a refused combination"
        );
        let redraws = drawn
            .knobs
            .iter()
            .find(|(name, _)| name == "redraws")
            .map(|(_, value)| value.to_string());
        redrawn += usize::from(redraws.as_deref() != Some("0"));
    }
    assert!(redrawn > 0, "no seed had to draw again");
    // Nothing valid to draw: the seed says so instead of running something else.
    let impossible = text()
        .replace("nodes = [3, 6]", "nodes = [1, 1]")
        .replace("replicas = [1, 2, 3, 3, 3, 4, 5]", "replicas = [3]");
    let swarm = SwarmFile::parse("impossible.toml", &impossible).expect("parses");
    let error = swarm.draw(0).expect_err("nothing drawable");
    assert!(
        error.contains(&format!("{DRAW_ATTEMPTS_MAX} attempts")),
        "{error}"
    );
}

#[test]
fn a_bad_swarm_file_names_the_field() {
    let bad = text().replace("gossip = 0.5", "gossip = 1.5");
    let error = SwarmFile::parse("bad.toml", &bad).expect_err("probability");
    assert_eq!(error.field.as_deref(), Some("swarm.gossip"));
    let bad = text().replace("quarantine = [", "quarantine = [\"no-such-bug\", ");
    let error = SwarmFile::parse("bad.toml", &bad).expect_err("unknown quarantine");
    assert_eq!(error.field.as_deref(), Some("swarm.quarantine"));
    let bad = text().replace("levels = [", "levels = [\"sometimes\", ");
    let error = SwarmFile::parse("bad.toml", &bad).expect_err("unknown level");
    assert_eq!(error.field.as_deref(), Some("swarm.levels"));
}

#[test]
fn a_quarantine_that_changes_a_draw_says_so() {
    // The same seeds drawn with swarm.toml's quarantines and with none: a seed draws a different
    // scenario exactly when it says it was quarantined, so nothing is left out silently.
    let swarm = swarm();
    let text = text();
    let start = text.find("quarantine = [").expect("a quarantine list");
    let end = start + text[start..].find(']').expect("a closed list");
    let mut emptied = text.clone();
    emptied.replace_range(start..=end, "quarantine = []");
    let open = SwarmFile::parse("open.toml", &emptied).expect("parses");
    let mut quarantined = 0;
    for seed in 0..300 {
        let drawn = swarm.draw(seed).expect("draws");
        // In the `quarantined` knob, or in the knob of the fault left out.
        let said = drawn.knobs.iter().any(|(name, value)| {
            name == "quarantined" || value.to_string().starts_with("quarantined")
        });
        let changed = open.draw(seed).expect("draws").toml != drawn.toml;
        assert_eq!(said, changed, "seed {seed}");
        quarantined += usize::from(said);
    }
    assert!(quarantined > 0 || swarm.swarm.quarantine.is_empty());
}
