//! Storage-only scenarios: the LSM engine on the simulated disk, crashed at random points and
//! checked against a model (a `BTreeMap` plus the list of acknowledged writes).
//!
//! The simulated disk itself ([`SimFs`]) lives in `ringkv-lsm` beside the file-system trait, so the
//! engine's own tests use it too; it is re-exported here as the simulator's disk. A scenario file
//! with `kind = "storage"` selects this runner:
//!
//! ```toml
//! kind = "storage"
//! name = "disk-crash"
//! description = "what it proves"
//! expect = "pass"
//! [oracle]
//! ops = 400            # operations per seed, over all crash cycles
//! keys = 40            # distinct keys
//! crashes = 3          # crashes (with torn tails and lost unsynced bytes) per seed
//! fsync_failures = true
//! bit_flip = true
//! broken_fsync = false # a disk whose fsync lies: the oracle must fail
//! ```

use crate::checks::Verdict;
use crate::fingerprint::Fingerprint;
use crate::report::{OpCounts, RunReport};
use crate::scenario::{CiSpec, Expect, ScenarioError};
use ringkv_lsm::oracle::{crash_oracle, OracleConfig};
use serde::Deserialize;
use std::path::Path;

pub use ringkv_lsm::fs::{SimFs, SimFsOptions};

/// A storage-only scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageScenario {
    /// Always `"storage"`.
    pub kind: String,
    /// Short name.
    pub name: String,
    /// What the scenario proves.
    pub description: String,
    /// Expected outcome.
    #[serde(default)]
    pub expect: Expect,
    /// The oracle's parameters.
    pub oracle: OracleSpec,
    /// The CI contract (seed count only: a storage run has no thresholds to judge).
    pub ci: Option<CiSpec>,
}

/// `[oracle]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleSpec {
    /// Operations per seed.
    pub ops: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Crashes per seed.
    pub crashes: usize,
    /// Inject fsync failures.
    #[serde(default = "yes")]
    pub fsync_failures: bool,
    /// Flip a bit after the last recovery.
    #[serde(default = "yes")]
    pub bit_flip: bool,
    /// TEST ONLY: a disk whose fsync lies.
    #[serde(default)]
    pub broken_fsync: bool,
}

fn yes() -> bool {
    true
}

/// True if the file at `path` declares `kind = "storage"`.
pub fn is_storage_scenario(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| {
            t.get("kind")
                .and_then(|k| k.as_str().map(|k| k == "storage"))
        })
        .unwrap_or(false)
}

impl StorageScenario {
    /// Reads and validates a storage scenario.
    pub fn load(path: &Path) -> Result<StorageScenario, ScenarioError> {
        let file = path.display().to_string();
        let error = |field: Option<&str>, reason: String| ScenarioError {
            file: file.clone(),
            field: field.map(str::to_string),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| error(None, format!("cannot read: {e}")))?;
        let scenario: StorageScenario = toml::from_str(&text)
            .map_err(|e| error(None, e.to_string().trim().replace('\n', " ")))?;
        let o = &scenario.oracle;
        let checks = [
            (scenario.kind == "storage", "kind", "must be \"storage\""),
            (
                !scenario.description.trim().is_empty(),
                "description",
                "must say what the scenario proves",
            ),
            (
                (1..=1_000_000).contains(&o.ops),
                "oracle.ops",
                "must be between 1 and 1000000",
            ),
            (
                (1..=1_000_000).contains(&o.keys),
                "oracle.keys",
                "must be between 1 and 1000000",
            ),
            (
                o.crashes <= 10_000,
                "oracle.crashes",
                "must be at most 10000",
            ),
        ];
        for (ok, field, reason) in checks {
            if !ok {
                return Err(error(Some(field), reason.to_string()));
            }
        }
        if let Some(ci) = &scenario.ci {
            ci.validate_without_thresholds(scenario.expect)
                .map_err(|(field, reason)| error(Some(&field), reason))?;
        }
        Ok(scenario)
    }

    /// Runs one seed of the crash oracle.
    pub fn run_seed(&self, path: &str, seed: u64) -> RunReport {
        let config = OracleConfig {
            ops: self.oracle.ops,
            keys: self.oracle.keys,
            crashes: self.oracle.crashes,
            fsync_failures: self.oracle.fsync_failures,
            bit_flip: self.oracle.bit_flip,
            broken_fsync: self.oracle.broken_fsync,
            ..OracleConfig::default()
        };
        let mut fingerprint = Fingerprint::default();
        // The engine's fault sites are counted as a cluster run's are.
        let (oracle, buggify) = ringkv_core::buggify::record(|| crash_oracle(seed, &config));
        let (verdict, ops, events) = match oracle {
            Ok(report) => {
                fingerprint.add(&format!("{report:?}"));
                let detail = format!(
                    "{} acknowledged writes all recovered over {} crashes; of the unacknowledged, {} kept as a prefix and {} lost; {} poisonings, {} flushes, {} compactions, {} value-log segments collected, {} bit flips reported naming the file",
                    report.acknowledged_writes,
                    report.crashes,
                    report.unacknowledged_kept,
                    report.unacknowledged_lost,
                    report.poisonings,
                    report.flushes,
                    report.compactions,
                    report.gc_segments,
                    report.bit_flips_detected
                );
                let ops = OpCounts {
                    ok: report.acknowledged_writes,
                    failed: 0,
                    indeterminate: report.writes - report.acknowledged_writes,
                };
                (Verdict::Pass(detail), ops, report.writes)
            }
            Err(why) => {
                fingerprint.add(&why);
                (Verdict::Fail(why), OpCounts::default(), 0)
            }
        };
        RunReport {
            scenario: self.name.clone(),
            path: path.to_string(),
            seed,
            expect: self.expect,
            drawn: Vec::new(),
            swarm: Vec::new(),
            ops,
            availability: 1.0,
            availability_time: crate::report::TimeAvailability::default(),
            latency_p50_ms: 0.0,
            latency_p99_ms: 0.0,
            events,
            messages: (0, 0, 0),
            faults: u64::try_from(self.oracle.crashes).unwrap_or(u64::MAX),
            anti_entropy: (0, 0),
            sends_failed: Vec::new(),
            rejections: Vec::new(),
            hints: (0, 0, 0, 0, 0, 0),
            gossip: None,
            nodes: 0,
            sim_ms: 0,
            wall_ms: 0,
            checks: vec![("crash-oracle", verdict)],
            buggify: buggify.into_iter().collect(),
            fingerprint: fingerprint.hex(),
        }
    }
}
