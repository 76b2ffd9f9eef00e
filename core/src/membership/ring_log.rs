//! The versioned ring: an ordered log of membership changes, replayed onto an empty ring.
//!
//! Why a log and not the token table: [`Ring`] keeps private invariants (member indices inside
//! its token list, dense rack indices) that a deserialized value from the network could break, and
//! its accessors index by them. Replaying changes through `Ring::add_node` / `Ring::remove_node`
//! builds the ring only through its own checked API, so bytes from a peer can at worst be refused,
//! never make a malformed ring. Token allocation is a pure function of the ring so far, so every
//! node that replays the same log gets the same tokens.
//!
//! The version is `(changes, fingerprint)`: a longer log wins, and two different logs of the same
//! length (concurrent operator changes on two nodes) are ordered by a stable hash of their
//! encoding, so every node picks the same one. The losing change is reported as
//! [`super::MembershipEvent::RingChangeDiscarded`] on the node that made it, never lost silently.

use super::MembershipConfig;
use crate::hash::hash_bytes;
use crate::id::NodeId;
use crate::ring::{Member, NodeLocation, Ring, RingError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// One operator change to the ring.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RingChange {
    /// A node joins: it takes vnodes carved out of the most loaded members.
    Join(Member),
    /// A node decommissioned itself after handing off its data; it leaves the ring.
    Leave(NodeId),
    /// An operator removed a dead node; survivors re-replicate its ranges.
    Remove(NodeId),
}

impl RingChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            RingChange::Join(member) => member.id,
            RingChange::Leave(id) | RingChange::Remove(id) => *id,
        }
    }
}

/// The ring as it travels: the vnode setting and the ordered changes since the empty ring.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RingLog {
    /// Vnodes per unit of weight (must equal the receiver's configuration).
    pub vnodes_per_node: u32,
    /// Changes in the order they were applied.
    pub changes: Vec<RingChange>,
}

/// The version of a ring log: more changes win; equal lengths are ordered by fingerprint.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RingVersion {
    /// Number of changes in the log.
    pub changes: u64,
    /// Stable hash of the encoded log, breaking ties between different logs of one length.
    pub fingerprint: u64,
}

/// Why a ring log or a ring change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingLogError {
    /// The log was built with another vnode setting than this node's.
    VnodesMismatch {
        /// In the log.
        got: u32,
        /// In this node's configuration.
        expected: u32,
    },
    /// More changes than `ring_changes_max`.
    TooManyChanges(usize),
    /// A datacenter or rack name longer than `location_name_bytes_max`.
    LocationNameTooLong(NodeId),
    /// A change the ring refuses (joining twice, removing a non-member, bad weight).
    Ring(RingError),
}

impl fmt::Display for RingLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingLogError::VnodesMismatch { got, expected } => {
                write!(f, "ring log has {got} vnodes per node, expected {expected}")
            }
            RingLogError::TooManyChanges(count) => write!(f, "ring log has {count} changes"),
            RingLogError::LocationNameTooLong(id) => write!(f, "{id} has a too long location"),
            RingLogError::Ring(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for RingLogError {}

/// A validated ring log with the ring it builds. Only [`RingState::build`] makes one, so holding
/// one proves the log replays cleanly under this node's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingState {
    log: RingLog,
    ring: Ring,
    version: RingVersion,
    /// Nodes whose last change is a leave or remove (and that are not members now).
    departed: BTreeSet<NodeId>,
}

impl RingState {
    /// The empty ring (version zero).
    pub fn empty(vnodes_per_node: u32) -> Self {
        let log = RingLog {
            vnodes_per_node,
            changes: Vec::new(),
        };
        RingState {
            version: RingVersion::default(),
            ring: Ring::new(vnodes_per_node),
            log,
            departed: BTreeSet::new(),
        }
    }

    /// Replays `log` onto an empty ring under `config`'s limits. Pure; the version is computed
    /// here from the log itself, never taken from a peer's claim.
    pub fn build(log: RingLog, config: &MembershipConfig) -> Result<Self, RingLogError> {
        if log.vnodes_per_node != config.vnodes_per_node {
            return Err(RingLogError::VnodesMismatch {
                got: log.vnodes_per_node,
                expected: config.vnodes_per_node,
            });
        }
        if log.changes.len() > config.ring_changes_max {
            return Err(RingLogError::TooManyChanges(log.changes.len()));
        }
        let mut ring = Ring::new(log.vnodes_per_node);
        let mut departed = BTreeSet::new();
        for change in &log.changes {
            apply(&mut ring, &mut departed, change, config)?;
        }
        let version = version_of(&log);
        Ok(RingState {
            log,
            ring,
            version,
            departed,
        })
    }

    /// Checks a state built elsewhere (by a driver, once for many nodes) against this node's
    /// limits: the checks [`RingState::build`] makes that depend on the configuration. The
    /// others (joining twice, removing a non-member) hold for any state that was built at all.
    pub fn check_limits(&self, config: &MembershipConfig) -> Result<(), RingLogError> {
        if self.log.vnodes_per_node != config.vnodes_per_node {
            return Err(RingLogError::VnodesMismatch {
                got: self.log.vnodes_per_node,
                expected: config.vnodes_per_node,
            });
        }
        if self.log.changes.len() > config.ring_changes_max {
            return Err(RingLogError::TooManyChanges(self.log.changes.len()));
        }
        for change in &self.log.changes {
            if let RingChange::Join(member) = change {
                if location_too_long(&member.location, config) {
                    return Err(RingLogError::LocationNameTooLong(member.id));
                }
            }
        }
        Ok(())
    }

    /// The same state as [`RingState::build`] of `log`, built from `self` when `log` extends
    /// `self`'s log: only the new changes are applied. Token allocation is a pure function of
    /// the ring so far, so the prefix needs no replay (a replay of `n` joins costs `n` token
    /// allocations, and every node adopts every ring version). `self` must have been built
    /// under `config`.
    pub fn rebuild(&self, log: RingLog, config: &MembershipConfig) -> Result<Self, RingLogError> {
        let prefix = self.log.changes.len();
        let extends = log.vnodes_per_node == self.log.vnodes_per_node
            && log.changes.len() >= prefix
            && log.changes[..prefix] == self.log.changes[..];
        if !extends || log.vnodes_per_node != config.vnodes_per_node {
            return Self::build(log, config);
        }
        if log.changes.len() > config.ring_changes_max {
            return Err(RingLogError::TooManyChanges(log.changes.len()));
        }
        let mut ring = self.ring.clone();
        let mut departed = self.departed.clone();
        for change in &log.changes[prefix..] {
            apply(&mut ring, &mut departed, change, config)?;
        }
        let version = version_of(&log);
        Ok(RingState {
            log,
            ring,
            version,
            departed,
        })
    }

    /// The state after one more change: a new version, or the reason the change is refused.
    /// Pure: `self` is unchanged, so a planner can try changes without committing to them.
    pub fn with_change(
        &self,
        change: RingChange,
        config: &MembershipConfig,
    ) -> Result<Self, RingLogError> {
        if self.log.changes.len() >= config.ring_changes_max {
            return Err(RingLogError::TooManyChanges(self.log.changes.len() + 1));
        }
        let mut ring = self.ring.clone();
        let mut departed = self.departed.clone();
        apply(&mut ring, &mut departed, &change, config)?;
        let mut log = self.log.clone();
        log.changes.push(change);
        let version = version_of(&log);
        Ok(RingState {
            log,
            ring,
            version,
            departed,
        })
    }

    /// The log (what gossip carries).
    pub fn log(&self) -> &RingLog {
        &self.log
    }

    /// The ring the log builds.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The version of the log.
    pub fn version(&self) -> RingVersion {
        self.version
    }

    /// True if `node`'s last change removed it from the ring (leave or remove).
    pub fn has_departed(&self, node: NodeId) -> bool {
        self.departed.contains(&node)
    }

    /// Nodes whose last change removed them from the ring.
    pub fn departed(&self) -> &BTreeSet<NodeId> {
        &self.departed
    }

    /// Changes of `self` that `newer` does not contain after their common prefix: what adopting
    /// `newer` throws away. Empty when `newer` extends `self`.
    pub fn discarded_by(&self, newer: &RingState) -> Vec<RingChange> {
        let common = self
            .log
            .changes
            .iter()
            .zip(&newer.log.changes)
            .take_while(|(a, b)| a == b)
            .count();
        let kept = &newer.log.changes[common..];
        self.log.changes[common..]
            .iter()
            .filter(|change| !kept.contains(change))
            .cloned()
            .collect()
    }
}

fn apply(
    ring: &mut Ring,
    departed: &mut BTreeSet<NodeId>,
    change: &RingChange,
    config: &MembershipConfig,
) -> Result<(), RingLogError> {
    match change {
        RingChange::Join(member) => {
            if location_too_long(&member.location, config) {
                return Err(RingLogError::LocationNameTooLong(member.id));
            }
            ring.add_node(member.id, member.location.clone())
                .map_err(RingLogError::Ring)?;
            departed.remove(&member.id);
        }
        RingChange::Leave(id) | RingChange::Remove(id) => {
            ring.remove_node(*id).map_err(RingLogError::Ring)?;
            departed.insert(*id);
        }
    }
    Ok(())
}

fn location_too_long(location: &NodeLocation, config: &MembershipConfig) -> bool {
    location.datacenter.len() > config.location_name_bytes_max
        || location.rack.len() > config.location_name_bytes_max
}

impl RingLog {
    /// The log's version (no validation: [`RingState::build`] checks the log itself).
    pub fn version(&self) -> RingVersion {
        version_of(self)
    }
}

fn version_of(log: &RingLog) -> RingVersion {
    RingVersion {
        changes: log.changes.len() as u64,
        fingerprint: hash_bytes(&crate::codec::encode_value(log)),
    }
}
