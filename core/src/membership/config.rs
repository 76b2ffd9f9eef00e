//! Limits and timings of the membership machine, validated once before a machine is built.

use crate::config::ConfigError;
use crate::id::NodeId;
use crate::ring::VNODES_PER_NODE_MAX;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of the gossip membership and failure detector. Every node of a cluster should use
/// the same values (the ring log is refused when `vnodes_per_node` differs). A file section
/// like [`crate::ClusterConfig`] (the node's `[membership]`, the scenario's `[cluster]`):
/// missing keys take the defaults, unknown ones are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// Time between two gossip rounds of one node.
    pub gossip_interval_ms: u64,
    /// Peers contacted per round (each contact is one request and one reply).
    pub fanout: usize,
    /// A member whose heartbeat has not advanced for this long is `Suspect`.
    pub suspect_after_ms: u64,
    /// A `Suspect` member whose heartbeat still has not advanced after this much more time is
    /// `Down` (the "longer confirmation time" rule; see the module doc for why not votes).
    pub down_after_ms: u64,
    /// Most members (of any status, this node included) one table holds; entries beyond it are
    /// dropped and counted, so a flood of invented ids cannot grow the table.
    pub members_max: usize,
    /// Most changes the ring log may hold; a join, leave or remove beyond it is refused.
    pub ring_changes_max: usize,
    /// Longest datacenter or rack name accepted in a ring change.
    pub location_name_bytes_max: usize,
    /// Vnodes per unit of weight of the ring this membership builds (must match the cluster's).
    /// No file setting: drivers copy the cluster's `vnodes_per_node`.
    #[serde(skip)]
    pub vnodes_per_node: u32,
    /// Nodes contacted when no other member is known (a joining node's way in). No file
    /// setting: drivers derive it (the node's peers, the scenario's initial ring).
    #[serde(skip)]
    pub seeds: Vec<NodeId>,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval_ms: 100,
            fanout: 3,
            suspect_after_ms: 1_000,
            down_after_ms: 2_000,
            members_max: 1_024,
            ring_changes_max: 1_024,
            location_name_bytes_max: 64,
            vnodes_per_node: 64,
            seeds: Vec::new(),
        }
    }
}

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

impl MembershipConfig {
    /// Checks every field; a machine is only built from a validated configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=60_000).contains(&self.gossip_interval_ms),
            "gossip_interval_ms",
            "must be between 1 and 60000",
        )?;
        check(
            (1..=16).contains(&self.fanout),
            "fanout",
            "must be between 1 and 16",
        )?;
        // A heartbeat needs a few rounds to reach everyone; a shorter suspicion time would suspect
        // healthy nodes as a matter of course.
        check(
            self.suspect_after_ms >= 3 * self.gossip_interval_ms
                && self.suspect_after_ms <= 3_600_000,
            "suspect_after_ms",
            "must be at least 3 gossip intervals and at most 3600000",
        )?;
        check(
            self.down_after_ms >= self.gossip_interval_ms && self.down_after_ms <= 3_600_000,
            "down_after_ms",
            "must be at least one gossip interval and at most 3600000",
        )?;
        check(
            (1..=10_000).contains(&self.members_max),
            "members_max",
            "must be between 1 and 10000",
        )?;
        check(
            (1..=65_536).contains(&self.ring_changes_max),
            "ring_changes_max",
            "must be between 1 and 65536",
        )?;
        check(
            (1..=1_024).contains(&self.location_name_bytes_max),
            "location_name_bytes_max",
            "must be between 1 and 1024",
        )?;
        check(
            (1..=VNODES_PER_NODE_MAX).contains(&self.vnodes_per_node),
            "vnodes_per_node",
            format!("must be between 1 and {VNODES_PER_NODE_MAX}"),
        )?;
        check(
            self.message_bytes_max() <= crate::codec::MESSAGE_BYTES_MAX,
            "ring_changes_max",
            format!(
                "with members_max and location_name_bytes_max, a gossip message could exceed \
                 {} bytes",
                crate::codec::MESSAGE_BYTES_MAX
            ),
        )?;
        check(
            self.seeds.len() <= self.members_max,
            "seeds",
            "must not list more nodes than members_max",
        )?;
        Ok(())
    }

    /// Upper bound on the encoded size of any gossip message this configuration lets a node
    /// send or accept: every entry at its widest varints plus a full ring log of the widest
    /// changes. `validate` keeps it within the codec's frame limit.
    pub fn message_bytes_max(&self) -> usize {
        // Entry: node id (u32, at most 5 varint bytes) + incarnation and heartbeat (u64, at most
        // 10 each). Change: tag + node id + two names with their length prefixes + weight.
        const ENTRY_BYTES_MAX: usize = 5 + 10 + 10;
        const FIXED_BYTES_MAX: usize = 64;
        let change_bytes_max = 1 + 5 + 2 * (self.location_name_bytes_max + 10) + 5;
        FIXED_BYTES_MAX
            .saturating_add(self.members_max.saturating_mul(ENTRY_BYTES_MAX))
            .saturating_add(self.ring_changes_max.saturating_mul(change_bytes_max))
    }

    /// The gossip interval as a duration.
    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    /// The suspicion time as a duration.
    pub fn suspect_after(&self) -> Duration {
        Duration::from_millis(self.suspect_after_ms)
    }

    /// Time from the last heartbeat progress to `Down`: suspicion plus confirmation.
    pub fn down_after_total(&self) -> Duration {
        Duration::from_millis(self.suspect_after_ms.saturating_add(self.down_after_ms))
    }
}
