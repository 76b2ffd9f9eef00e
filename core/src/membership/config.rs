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
    /// Time between two protocol rounds of one node: each round probes one member (round-robin
    /// over a shuffled list) and pushes pending updates to `fanout` peers.
    pub gossip_interval_ms: u64,
    /// Peers each round's pending membership updates are pushed to, and helpers asked to probe
    /// a member indirectly when it does not answer a direct probe.
    pub fanout: usize,
    /// A probed member that answers neither the direct probe nor the indirect probes (sent half
    /// way) within this time is `Suspect`.
    pub suspect_after_ms: u64,
    /// The suspicion timeout: a member `Suspect` here for this long without refuting (raising
    /// its incarnation) is `Down`, and this node spreads that.
    pub down_after_ms: u64,
    /// Time between two full-state push-pull exchanges with one random peer (anti-entropy; it
    /// also contacts `Down` members now and then, so healed partitions and late seeds
    /// converge). Scaled up with the cluster size: see `push_pull_interval`.
    pub push_pull_interval_ms: u64,
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
            push_pull_interval_ms: 2_000,
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
        // A probe waits half of it for a direct answer, then half for the indirect ones; each
        // half must span more than a round trip and a round.
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
            self.push_pull_interval_ms >= self.gossip_interval_ms
                && self.push_pull_interval_ms <= 3_600_000,
            "push_pull_interval_ms",
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
        // Entry: node id (u32, at most 5 varint bytes) + incarnation (u64, at most 10) + the
        // liveness tag. Change: tag + node id + two names with their length prefixes + weight.
        const ENTRY_BYTES_MAX: usize = 5 + 10 + 1;
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

    /// Time from a probe that goes unanswered to `Down` at the prober: probe failure plus the
    /// suspicion timeout.
    pub fn down_after_total(&self) -> Duration {
        Duration::from_millis(self.suspect_after_ms.saturating_add(self.down_after_ms))
    }

    /// The suspicion timeout as a duration.
    pub fn down_after(&self) -> Duration {
        Duration::from_millis(self.down_after_ms)
    }

    /// Time between two push-pull exchanges in a cluster of `members`: the configured interval,
    /// times `max(1, ceil(log2(members)) - 4)` (as HashiCorp memberlist scales it): each
    /// exchange costs O(members) at both ends, so a large cluster exchanges more rarely while
    /// the cluster as a whole still runs many exchanges per interval (16 members: every
    /// interval; 100: every 3; 1,000: every 6).
    pub fn push_pull_interval(&self, members: usize) -> Duration {
        let log2 = usize::BITS - members.max(1).saturating_sub(1).leading_zeros();
        let scale = u64::from(log2.saturating_sub(4).max(1));
        Duration::from_millis(self.push_pull_interval_ms.saturating_mul(scale))
    }
}
