//! Cluster and node configuration, validated once before any machine is built.
//!
//! Every setting is declared once, here (and in [`crate::membership::MembershipConfig`] for
//! gossip): a serde section with its default and its validation. The node's TOML file and the
//! simulator's scenario `[cluster]` table embed these sections and add only their own fields
//! (addresses and secrets; simulator-only knobs), so a setting the simulator proves is one an
//! operator can set, under the same name, with the same default and the same limits. Fields
//! marked `#[serde(skip)]` are not settings: a driver derives them (`simulation`, the test
//! knobs, membership seeds).

mod fields;

pub use fields::setting_names;

use crate::client::Consistency;
use crate::id::NodeId;
use crate::version::ConflictMode;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Settings every node of a cluster must agree on. As a file section every field is optional
/// (missing ones take [`ClusterConfig::default`]) and unknown keys are refused; level and
/// conflict names are the text their `FromStr` parses (`quorum`, `vector-clock`), and
/// `replicas_per_datacenter` is a table (`{ dc1 = 3, dc2 = 2 }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Replicas per key.
    pub n: u8,
    /// Default replies a read waits for.
    pub r: u8,
    /// Default durable acknowledgements a write waits for.
    pub w: u8,
    /// Default level for requests that do not name one; `None` means "use r and w".
    #[serde(
        with = "fields::optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub consistency: Option<Consistency>,
    /// How concurrent writes are resolved.
    #[serde(with = "fields::text")]
    pub conflict: ConflictMode,
    /// Vnodes per unit of node weight.
    pub vnodes_per_node: u32,
    /// A coordinator answers with a typed failure when a request is not done after this long.
    pub request_timeout_ms: u64,
    /// Largest key accepted.
    pub key_bytes_max: usize,
    /// Largest value accepted.
    pub value_bytes_max: usize,
    /// Most value bytes one key's record may hold over all its siblings (vector clocks): a
    /// record travels whole in one peer message, so it must stay well below the codec's limit.
    pub record_bytes_max: usize,
    /// Most siblings a key may hold in vector-clock mode; a put that would exceed it is refused.
    pub siblings_max: usize,
    /// Most entries in a key's version vector before the pruning rule applies.
    pub clock_entries_max: usize,
    /// Most requests one node coordinates at once; more are refused as `Busy`.
    pub requests_in_flight_max: usize,
    /// Allow fallback replicas when preferred ones are down (the failure-handling issue).
    pub sloppy_quorum: bool,
    /// With `sloppy_quorum`: how long a write waits for its replicas before handing the silent
    /// ones' copies to fallback nodes as hints.
    pub sloppy_after_ms: u64,
    /// Most hints kept for one owner.
    pub hints_per_target_max: usize,
    /// Most hint bytes kept for one owner.
    pub hint_bytes_per_target_max: u64,
    /// Hints still undelivered this long after the fallback stored them (its monotonic clock) are
    /// counted as aged and replayed first; they are never deleted for their age (`node::hints`).
    pub hint_age_max_ms: u64,
    /// Time between hint replay rounds.
    pub hint_replay_interval_ms: u64,
    /// Most hints replayed per round (the replay rate limit).
    pub hint_replays_per_round: usize,
    /// After answering a read, write the newest version to replicas that answered with an older
    /// one (or nothing).
    pub read_repair: bool,
    /// Time between anti-entropy rounds; 0 turns anti-entropy off.
    pub anti_entropy_interval_ms: u64,
    /// Ranges compared per anti-entropy round (the byte budget: a round sends at most this many
    /// roots, and leaves only for the ranges that differ).
    pub anti_entropy_ranges_per_round: usize,
    /// Most records in one anti-entropy repair message; the rest wait for a later round.
    pub anti_entropy_records_per_message_max: usize,
    /// Replicas per datacenter name, e.g. `[("dc1", 3), ("dc2", 2)]` (Cassandra's
    /// NetworkTopologyStrategy); the counts must add up to `n`, and datacenters not listed hold no
    /// replica. Empty: `n` replicas spread as evenly as the datacenters allow. Kept in name
    /// order (a file's table is one).
    #[serde(with = "fields::name_counts")]
    pub replicas_per_datacenter: Vec<(String, u8)>,
    /// Time between the starts of two full rebuilds of the hash trees from storage (0 = never).
    /// A rebuild catches what per-write updates cannot see: data that changed or vanished on
    /// disk behind the engine's back (bit rot). It runs in steps, one per anti-entropy round.
    pub tree_rebuild_interval_ms: u64,
    /// Keys read from storage per rebuild step (the throttle).
    pub tree_rebuild_keys_per_step: usize,
    /// Set only by the simulator: fault points (`buggify!`) fire, invariants are checked after
    /// every input even in release builds, and the `unsafe_*` test knobs are accepted. A runtime
    /// setting rather than a cargo feature, because feature unification switched the old `sim`
    /// feature on in node builds made with `--workspace`; no driver but the simulator sets it,
    /// and the node's configuration cannot (it is no file setting).
    #[serde(skip)]
    pub simulation: bool,
    /// TEST ONLY: acknowledge writes before they are durable. Accepted by `validate` only with
    /// `simulation`, so the simulator can show the durability check catches it. No file
    /// setting: the scenario format declares it among its simulator-only knobs.
    #[serde(skip)]
    pub unsafe_ack_before_persist: bool,
    /// TEST ONLY: linearizable reads skip the write-back phase (`simulation` only), so the
    /// simulator can show the linearizability checker catches the anomaly (no file setting).
    #[serde(skip)]
    pub unsafe_skip_write_back: bool,
    /// TEST ONLY: every replica silently ignores every n-th write it receives (0 = never;
    /// `simulation` only), so the simulator can show the convergence checker catches divergence
    /// (no file setting).
    #[serde(skip)]
    pub unsafe_drop_every_nth_write: u32,
    /// TEST ONLY: replicas merge counter states by adding their slots instead of taking each
    /// slot's maximum (`simulation` only), so the simulator can show the counters check catches
    /// an increment counted twice (no file setting).
    #[serde(skip)]
    pub unsafe_counter_merge_adds: bool,
    /// TEST ONLY: coordinators ignore expiries when they answer reads (`simulation` only), so
    /// the simulator can show the TTL check catches a value read past its expiry (no file
    /// setting).
    #[serde(skip)]
    pub unsafe_ignore_expiry: bool,
    /// TEST ONLY: a planted Paxos bug (`simulation` only), so the simulator can show its `cas`
    /// check catches it (no file setting).
    #[serde(skip)]
    pub unsafe_paxos_flaw: crate::node::PaxosFlaw,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            n: 3,
            r: 2,
            w: 2,
            consistency: None,
            conflict: ConflictMode::Lww,
            vnodes_per_node: 64,
            request_timeout_ms: 1_000,
            key_bytes_max: 1024,
            value_bytes_max: 1 << 20,
            record_bytes_max: 8 << 20,
            siblings_max: 64,
            clock_entries_max: 16,
            requests_in_flight_max: 10_000,
            sloppy_quorum: false,
            sloppy_after_ms: 200,
            hints_per_target_max: 100_000,
            hint_bytes_per_target_max: 1 << 30,
            hint_age_max_ms: 3 * 3_600_000,
            hint_replay_interval_ms: 500,
            hint_replays_per_round: 256,
            read_repair: true,
            anti_entropy_interval_ms: 1000,
            anti_entropy_ranges_per_round: 64,
            replicas_per_datacenter: Vec::new(),
            tree_rebuild_interval_ms: 3_600_000,
            tree_rebuild_keys_per_step: 1_024,
            anti_entropy_records_per_message_max: 256,
            simulation: false,
            unsafe_ack_before_persist: false,
            unsafe_skip_write_back: false,
            unsafe_paxos_flaw: crate::node::PaxosFlaw::None,
            unsafe_drop_every_nth_write: 0,
            unsafe_counter_merge_adds: false,
            unsafe_ignore_expiry: false,
        }
    }
}

/// A configuration value out of range, naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending field, as it is spelled in configuration files.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn check(ok: bool, field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            reason: reason.into(),
        })
    }
}

impl ClusterConfig {
    /// Checks every field; machines are only built from a validated configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_replication()?;
        self.check_limits()?;
        self.check_hints()?;
        self.check_repair()?;
        self.check_level()?;
        self.check_test_knobs()?;
        Ok(())
    }

    /// n, r, w, virtual nodes and the request timeout.
    fn check_replication(&self) -> Result<(), ConfigError> {
        check((1..=16).contains(&self.n), "n", "must be between 1 and 16")?;
        check(
            (1..=self.n).contains(&self.r),
            "r",
            format!("must be between 1 and n ({})", self.n),
        )?;
        check(
            (1..=self.n).contains(&self.w),
            "w",
            format!("must be between 1 and n ({})", self.n),
        )?;
        check(
            (1..=crate::ring::VNODES_PER_NODE_MAX).contains(&self.vnodes_per_node),
            "vnodes_per_node",
            format!("must be between 1 and {}", crate::ring::VNODES_PER_NODE_MAX),
        )?;
        check(
            (1..=3_600_000).contains(&self.request_timeout_ms),
            "request_timeout_ms",
            "must be between 1 and 3600000",
        )?;
        Ok(())
    }

    /// Size and concurrency limits.
    fn check_limits(&self) -> Result<(), ConfigError> {
        check(
            (1..=65_536).contains(&self.key_bytes_max),
            "key_bytes_max",
            "must be between 1 and 65536",
        )?;
        // A record travels whole in one peer message: half the codec's limit leaves room for
        // the key, the version and the message around it.
        let record_limit = crate::codec::MESSAGE_BYTES_MAX / 2;
        check(
            (1..=record_limit).contains(&self.value_bytes_max),
            "value_bytes_max",
            format!("must be between 1 and {record_limit} (half the peer message limit)"),
        )?;
        check(
            (self.value_bytes_max..=record_limit).contains(&self.record_bytes_max),
            "record_bytes_max",
            format!(
                "must be between value_bytes_max and {record_limit} (half the peer message limit)"
            ),
        )?;
        check(
            (1..=4096).contains(&self.siblings_max),
            "siblings_max",
            "must be between 1 and 4096",
        )?;
        check(
            usize::from(self.n) <= self.clock_entries_max && self.clock_entries_max <= 1024,
            "clock_entries_max",
            "must be at least n and at most 1024",
        )?;
        check(
            (1..=1_000_000).contains(&self.requests_in_flight_max),
            "requests_in_flight_max",
            "must be between 1 and 1000000",
        )?;
        Ok(())
    }

    /// Sloppy quorum and hinted handoff.
    fn check_hints(&self) -> Result<(), ConfigError> {
        check(
            (1..=self.request_timeout_ms).contains(&self.sloppy_after_ms),
            "sloppy_after_ms",
            "must be between 1 and request_timeout_ms",
        )?;
        check(
            (1..=100_000_000).contains(&self.hints_per_target_max),
            "hints_per_target_max",
            "must be between 1 and 100000000",
        )?;
        check(
            self.hint_bytes_per_target_max >= 1,
            "hint_bytes_per_target_max",
            "must be at least 1",
        )?;
        check(
            self.hint_age_max_ms >= 1,
            "hint_age_max_ms",
            "must be at least 1",
        )?;
        check(
            (1..=3_600_000).contains(&self.hint_replay_interval_ms),
            "hint_replay_interval_ms",
            "must be between 1 and 3600000",
        )?;
        check(
            (1..=100_000).contains(&self.hint_replays_per_round),
            "hint_replays_per_round",
            "must be between 1 and 100000",
        )?;
        Ok(())
    }

    /// Anti-entropy, tree rebuilds and the datacenter layout.
    fn check_repair(&self) -> Result<(), ConfigError> {
        check(
            self.anti_entropy_interval_ms <= 3_600_000,
            "anti_entropy_interval_ms",
            "must be at most 3600000 (0 turns anti-entropy off)",
        )?;
        if !self.replicas_per_datacenter.is_empty() {
            let total: u32 = self
                .replicas_per_datacenter
                .iter()
                .map(|(_, count)| u32::from(*count))
                .sum();
            check(
                total == u32::from(self.n),
                "replicas_per_datacenter",
                format!("adds up to {total} replicas, but n is {}", self.n),
            )?;
            let mut names: Vec<&str> = Vec::new();
            for (name, count) in &self.replicas_per_datacenter {
                check(
                    !name.is_empty() && name.len() <= 64 && !names.contains(&name.as_str()),
                    "replicas_per_datacenter",
                    "datacenter names must be 1 to 64 bytes and listed once",
                )?;
                check(
                    *count >= 1,
                    "replicas_per_datacenter",
                    format!("{name} must hold at least one replica (leave it out instead)"),
                )?;
                names.push(name);
            }
        }
        check(
            (1..=1_000_000).contains(&self.tree_rebuild_keys_per_step),
            "tree_rebuild_keys_per_step",
            "must be between 1 and 1000000",
        )?;
        check(
            (1..=100_000).contains(&self.anti_entropy_ranges_per_round),
            "anti_entropy_ranges_per_round",
            "must be between 1 and 100000",
        )?;
        check(
            (1..=100_000).contains(&self.anti_entropy_records_per_message_max),
            "anti_entropy_records_per_message_max",
            "must be between 1 and 100000",
        )?;
        Ok(())
    }

    /// The default consistency level against n and the conflict mode.
    fn check_level(&self) -> Result<(), ConfigError> {
        if let Some(level) = self.consistency {
            check(
                level.required(self.n).is_some(),
                "consistency",
                format!("{level} needs more replicas than n ({})", self.n),
            )?;
            // Every request naming no level would be refused (issue #17 item 8): ABD orders
            // writes by timestamp, which vector clocks do not give.
            check(
                !(level == Consistency::Linearizable && self.conflict == ConflictMode::VectorClock),
                "consistency",
                "linearizable needs conflict = \"lww\" (vector clocks have no total order)",
            )?;
        }
        Ok(())
    }

    /// TEST ONLY knobs exist only in simulation.
    fn check_test_knobs(&self) -> Result<(), ConfigError> {
        check(
            !self.unsafe_ack_before_persist || self.simulation,
            "unsafe_ack_before_persist",
            "exists only to test the simulator's durability check",
        )?;
        check(
            !self.unsafe_skip_write_back || self.simulation,
            "unsafe_skip_write_back",
            "exists only to test the simulator's linearizability check",
        )?;
        check(
            !self.unsafe_ignore_expiry || self.simulation,
            "unsafe_ignore_expiry",
            "exists only to test the simulator's TTL check",
        )?;
        check(
            self.unsafe_paxos_flaw == crate::node::PaxosFlaw::None || self.simulation,
            "unsafe_paxos_flaw",
            "exists only to test the simulator's compare-and-set check",
        )?;
        check(
            self.unsafe_drop_every_nth_write == 0 || self.simulation,
            "unsafe_drop_every_nth_write",
            "exists only to test the simulator's convergence check",
        )?;
        check(
            !self.unsafe_counter_merge_adds || self.simulation,
            "unsafe_counter_merge_adds",
            "exists only to test the simulator's counters check",
        )?;
        Ok(())
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Configuration of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Cluster-wide settings.
    pub cluster: ClusterConfig,
    /// Seed of the node's own random number generator (nonces, sim fault points, the data epoch
    /// of an empty store). Give every process its own: a replaced disk started with the seed of
    /// the previous process would draw the same data epoch and repeat its dots.
    pub rng_seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ClusterConfig::default().validate(), Ok(()));
    }

    #[test]
    fn a_linearizable_default_with_vector_clocks_is_refused() {
        let config = ClusterConfig {
            consistency: Some(Consistency::Linearizable),
            conflict: ConflictMode::VectorClock,
            ..ClusterConfig::default()
        };
        let error = config.validate().expect_err("refused");
        assert_eq!(error.field, "consistency");
        assert!(error.reason.contains("lww"), "{}", error.reason);
        let lww = ClusterConfig {
            conflict: ConflictMode::Lww,
            ..config
        };
        assert_eq!(lww.validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let config = ClusterConfig {
            r: 4,
            ..ClusterConfig::default()
        };
        assert_eq!(config.validate().map_err(|e| e.field), Err("r"));
        let config = ClusterConfig {
            clock_entries_max: 2,
            ..ClusterConfig::default()
        };
        assert_eq!(
            config.validate().map_err(|e| e.field),
            Err("clock_entries_max")
        );
        let config = ClusterConfig {
            consistency: Some(Consistency::Count(5)),
            ..ClusterConfig::default()
        };
        assert_eq!(config.validate().map_err(|e| e.field), Err("consistency"));
    }

    #[test]
    fn a_section_reads_missing_keys_as_defaults_and_refuses_unknown_ones() {
        let empty: ClusterConfig = toml::from_str("").expect("an empty section");
        assert_eq!(empty, ClusterConfig::default());
        let config: ClusterConfig = toml::from_str(
            "n = 5\nconsistency = \"local_quorum\"\nconflict = \"vector_clock\"\n\
             replicas_per_datacenter = { dc2 = 2, dc1 = 3 }\n",
        )
        .expect("parses");
        assert_eq!(config.n, 5);
        assert_eq!(config.consistency, Some(Consistency::LocalQuorum));
        assert_eq!(config.conflict, ConflictMode::VectorClock);
        assert_eq!(
            config.replicas_per_datacenter,
            vec![("dc1".to_string(), 3), ("dc2".to_string(), 2)],
            "in name order"
        );
        assert_eq!(config.r, ClusterConfig::default().r);
        for (text, mentions) in [
            ("bogus = 1", "bogus"),
            ("consistency = \"quorom\"", "quorom"),
            ("conflict = \"newest\"", "newest"),
            ("simulation = true", "simulation"),
            (
                "unsafe_ack_before_persist = true",
                "unsafe_ack_before_persist",
            ),
            ("n = 300", "u8"),
        ] {
            let error = toml::from_str::<ClusterConfig>(text).expect_err(text);
            assert!(error.to_string().contains(mentions), "{text}: {error}");
        }
    }

    #[test]
    fn a_section_round_trips_through_its_text() {
        let config = ClusterConfig {
            consistency: Some(Consistency::Count(2)),
            conflict: ConflictMode::VectorClock,
            replicas_per_datacenter: vec![("dc1".to_string(), 2), ("dc2".to_string(), 1)],
            ..ClusterConfig::default()
        };
        let text = toml::to_string(&config).expect("renders");
        assert_eq!(toml::from_str::<ClusterConfig>(&text), Ok(config));
    }

    #[test]
    fn unsafe_knobs_are_refused_outside_simulation() {
        type Knob = fn(&mut ClusterConfig);
        let knobs: [(&str, Knob); 5] = [
            ("unsafe_ignore_expiry", |c| c.unsafe_ignore_expiry = true),
            ("unsafe_ack_before_persist", |c| {
                c.unsafe_ack_before_persist = true
            }),
            ("unsafe_skip_write_back", |c| {
                c.unsafe_skip_write_back = true
            }),
            ("unsafe_drop_every_nth_write", |c| {
                c.unsafe_drop_every_nth_write = 3
            }),
            ("unsafe_counter_merge_adds", |c| {
                c.unsafe_counter_merge_adds = true
            }),
        ];
        for (field, set) in knobs {
            let mut config = ClusterConfig::default();
            set(&mut config);
            assert_eq!(config.validate().map_err(|e| e.field), Err(field));
            config.simulation = true;
            assert_eq!(config.validate(), Ok(()), "{field} in simulation");
        }
    }
}
