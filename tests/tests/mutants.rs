//! The mutation-testing set in `tests/mutants/` stays usable as core changes.
//!
//! Each `tests/mutants/NAME.patch` plants one bug in core, and its header names the scenarios and
//! seeds that must catch it (`tests/mutants/run.sh NAME` builds the mutant and prints the kill
//! table). A patch that no longer applies means core changed under the mutant: the test below
//! fails, so the mutant (and with it the seeds that catch it) is re-derived instead of silently
//! testing nothing. Building and running every mutant takes tens of minutes, so that part is an
//! ignored test: `cargo test --release -p ringkv-tests --test mutants -- --ignored`.

use ringkv_tests::load;
use sim::scenario::Expect;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The acceptance criterion of the mutation set (issue #11).
const MUTANTS_MIN: usize = 12;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One patch and what its header says.
struct Mutant {
    name: String,
    path: PathBuf,
    bug: String,
    /// (scenario, first seed, end seed exclusive)
    kills: Vec<(String, u64, u64)>,
}

fn parse_range(text: &str) -> Option<(u64, u64)> {
    let (from, to) = text.split_once("..")?;
    let (from, to) = (from.parse().ok()?, to.parse().ok()?);
    (from < to).then_some((from, to))
}

fn mutants() -> Vec<Mutant> {
    let dir = workspace().join("tests/mutants");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/mutants exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable patch");
            let field = |name: &str| -> Vec<String> {
                let prefix = format!("# {name}:");
                text.lines()
                    .filter_map(|l| l.strip_prefix(prefix.as_str()))
                    .map(|v| v.trim().to_string())
                    .collect()
            };
            let file = path.display().to_string();
            let kills = field("kill")
                .iter()
                .map(|row| {
                    let (scenario, seeds) = row.split_once(' ').unwrap_or_else(|| {
                        panic!("{file}: kill row '{row}' is not 'SCENARIO A..B'")
                    });
                    let (from, to) = parse_range(seeds.trim()).unwrap_or_else(|| {
                        panic!("{file}: kill row '{row}' has no seed range A..B")
                    });
                    (scenario.to_string(), from, to)
                })
                .collect();
            Mutant {
                name: field("mutant").join(" "),
                bug: field("bug").join(" "),
                kills,
                path,
            }
        })
        .collect()
}

#[test]
fn every_mutant_names_itself_its_bug_and_scenarios_that_load() {
    let all = mutants();
    assert!(
        all.len() >= MUTANTS_MIN,
        "{} mutants in tests/mutants (need >= {MUTANTS_MIN})",
        all.len()
    );
    for m in &all {
        let stem = m.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        assert_eq!(
            m.name,
            stem,
            "{}: '# mutant:' must name the file",
            m.path.display()
        );
        assert!(!m.bug.is_empty(), "{}: no '# bug:' line", m.name);
        assert!(!m.kills.is_empty(), "{}: no '# kill:' row", m.name);
        for (scenario, _, _) in &m.kills {
            // Panics with the loader's message if the scenario is missing or invalid.
            let loaded = load(scenario);
            assert_eq!(
                loaded.expect,
                Expect::Pass,
                "{}: kill scenario {scenario} must expect pass, so a kill is a real failure",
                m.name
            );
        }
    }
}

/// Fails when core changed under a mutant: the mutant must be re-derived (and its kill seeds
/// re-checked with `tests/mutants/run.sh NAME`).
#[test]
fn every_mutant_patch_still_applies_to_the_tree() {
    let root = workspace();
    let stale: Vec<String> = mutants()
        .iter()
        .filter_map(|m| {
            let out = Command::new("git")
                .arg("apply")
                .arg("--check")
                .arg(&m.path)
                .current_dir(&root)
                .output()
                .expect("git runs");
            (!out.status.success()).then(|| {
                format!(
                    "{}: {}",
                    m.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
        })
        .collect();
    assert!(
        stale.is_empty(),
        "these mutants no longer apply (core changed under them; re-derive each and re-run \
         tests/mutants/run.sh NAME):\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_script_lists_every_mutant_once() {
    let out = Command::new("bash")
        .arg(workspace().join("tests/mutants/run.sh"))
        .arg("--list")
        .output()
        .expect("bash runs");
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let names: Vec<String> = mutants().into_iter().map(|m| m.name).collect();
    assert_eq!(listed, names);
}

/// Builds and runs every mutant (tens of minutes): each must be killed on at least half of the
/// seeds of one of its kill rows. The killing seeds it prints are the regression seeds of each
/// named bug, re-derived on every run.
#[test]
#[ignore = "builds the simulator once per mutant; run before changing core or a scenario"]
fn every_mutant_is_killed() {
    let status = Command::new("bash")
        .arg(Path::new(&workspace()).join("tests/mutants/run.sh"))
        .status()
        .expect("bash runs");
    assert!(
        status.success(),
        "some mutant survived or no longer builds (table above)"
    );
}
