//! Helpers shared by the workspace-level tests in `tests/tests/`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use sim::disk::{is_storage_scenario, StorageScenario};
use sim::report::RunReport;
use sim::scenario::{CiSpec, Expect};
use sim::swarm::{is_swarm_scenario, run_swarm_seed, SwarmFile};
use sim::{run_seed, RunOptions, Scenario};
use std::path::PathBuf;

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

/// The names (file stems) of every scenario file in `scenarios/`, sorted.
pub fn scenario_names() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "toml" {
                return None;
            }
            path.file_stem()?.to_str().map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// A file of `scenarios/` of whichever kind it is: a cluster scenario, a storage-only scenario
/// (`kind = "storage"`) or a swarm file (`[swarm]`), as the simulator's command line tells them
/// apart.
pub enum ScenarioFile {
    /// A cluster scenario (`sim::Scenario`).
    Cluster(Scenario),
    /// The LSM engine's crash oracle on the simulated disk.
    Storage(StorageScenario),
    /// Each seed draws its own cluster and fault mix.
    Swarm(SwarmFile),
}

impl ScenarioFile {
    /// Reads and validates the shipped scenario `name`, whatever its kind.
    pub fn load(name: &str) -> Result<ScenarioFile, String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(scenario_path(name));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let loaded = if is_storage_scenario(&text) {
            StorageScenario::load(&path).map(ScenarioFile::Storage)
        } else if is_swarm_scenario(&text) {
            SwarmFile::load(&path).map(ScenarioFile::Swarm)
        } else {
            Scenario::load(&path).map(ScenarioFile::Cluster)
        };
        loaded.map_err(|e| e.to_string())
    }

    /// The file's `[ci]` table, if it has one.
    pub fn ci(&self) -> Option<&CiSpec> {
        match self {
            ScenarioFile::Cluster(s) => s.ci.as_ref(),
            ScenarioFile::Storage(s) => s.ci.as_ref(),
            ScenarioFile::Swarm(s) => s.ci.as_ref(),
        }
    }

    /// What every seed is expected to show (a swarm file has no `expect`: every seed passes).
    pub fn expect(&self) -> Expect {
        match self {
            ScenarioFile::Cluster(s) => s.expect,
            ScenarioFile::Storage(s) => s.expect,
            ScenarioFile::Swarm(_) => Expect::Pass,
        }
    }

    /// Runs one seed; `path` is the file as the replay command names it. A storage run knows no
    /// options: its determinism is judged by the caller running it twice.
    pub fn run_seed(
        &self,
        path: &str,
        seed: u64,
        options: RunOptions,
    ) -> Result<RunReport, String> {
        match self {
            ScenarioFile::Cluster(s) => run_seed(s, path, seed, options).map(|run| run.report),
            ScenarioFile::Storage(s) => Ok(s.run_seed(path, seed)),
            ScenarioFile::Swarm(s) => run_swarm_seed(s, path, seed, options).map(|run| run.report),
        }
    }
}
