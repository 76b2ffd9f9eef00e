//! The simulator's side of gossip membership: starting nodes with their membership machine,
//! issuing operator ring changes on one node (gossip spreads them), measuring how long failure
//! detection takes, and checking at the end that every node converged on the same ring.

use super::{NodeState, World, NANOS_PER_MS};
use crate::world::storage::SimStorage;
use ringkv_core::membership::{
    MemberStatus, MembershipConfig, MembershipError, RingCatalog, RingChange, RingLog, RingState,
};
use ringkv_core::node::AdminError;
use ringkv_core::ring::Member;
use ringkv_core::{ConfigError, Node, NodeConfig, NodeId, Now, Ring};

/// How often an operator retries removing a node the cluster does not judge `Down` yet, or a
/// change that found no running member to issue it on.
pub const REMOVE_RETRY_MS: u64 = 500;

/// Gossip settings and the initial ring log every node starts from.
#[derive(Clone, Debug)]
pub struct GossipSetup {
    /// Membership settings shared by all nodes.
    pub config: MembershipConfig,
    /// The initial members, as joins in id order.
    pub seed_ring: RingLog,
    /// `seed_ring` built once for every node start (`None` if it does not build: each start
    /// then reports why).
    pub seed_state: Option<RingState>,
    /// Ring states the nodes hand each other, so each ring version is built and placed once per
    /// run instead of once per node (`ringkv_core::membership::RingCatalog`).
    pub rings: RingCatalog,
}

impl GossipSetup {
    /// The setup for a cluster whose initial members are `members` (in id order).
    pub fn new(config: MembershipConfig, members: &[Member]) -> GossipSetup {
        let changes = members
            .iter()
            .map(|m| RingChange::Join(m.clone()))
            .collect();
        let seed_ring = RingLog {
            vnodes_per_node: config.vnodes_per_node,
            changes,
        };
        GossipSetup {
            seed_state: RingState::build(seed_ring.clone(), &config).ok(),
            seed_ring,
            config,
            rings: RingCatalog::new(),
        }
    }
}

/// Starts (or restarts) a node: with gossip it recovers its membership state from storage,
/// without it takes the simulator's ring.
pub fn start_node(
    config: NodeConfig,
    gossip: Option<&GossipSetup>,
    ring: &Ring,
    storage: SimStorage,
    now: Now,
) -> Result<Node<SimStorage>, ConfigError> {
    match gossip {
        Some(setup) => {
            let mut node = match &setup.seed_state {
                Some(state) => Node::with_membership_state(
                    config,
                    setup.config.clone(),
                    state.clone(),
                    storage,
                    now,
                ),
                None => Node::with_membership(
                    config,
                    setup.config.clone(),
                    setup.seed_ring.clone(),
                    storage,
                    now,
                ),
            }?;
            node.share_rings(setup.rings.clone());
            Ok(node)
        }
        None => Node::new(config, ring.clone(), storage, now),
    }
}

/// An operator's ring change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AdminChange {
    /// Add a member.
    Join(Member),
    /// Decommission a member.
    Leave(NodeId),
    /// Remove a dead member.
    Remove(NodeId),
}

/// A detection being timed: since when `target` should be seen as `want` by every running node.
#[derive(Clone, Debug)]
pub struct Watch {
    target: u32,
    since_ns: u64,
    want: MemberStatus,
}

/// Failure-detection figures of one run.
#[derive(Clone, Debug, Default)]
pub struct GossipFigures {
    /// Gossip messages sent.
    pub messages: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// Milliseconds from a crash until every running node judged the node `Down`.
    pub down_ms: Vec<f64>,
    /// Milliseconds from a restart until every running node judged the node `Alive` again.
    pub alive_ms: Vec<f64>,
    /// Operator changes refused (other than a remove retried until the node is `Down`).
    pub admin_refused: Vec<String>,
}

impl std::fmt::Display for AdminChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminChange::Join(member) => write!(f, "join n{}", member.id.0),
            AdminChange::Leave(node) => write!(f, "leave n{}", node.0),
            AdminChange::Remove(node) => write!(f, "remove n{}", node.0),
        }
    }
}

impl AdminChange {
    /// Whether the simulator's ring (what the operator asked for) still wants this change: a
    /// retry is dropped once it no longer does.
    pub(super) fn still_wanted(&self, ring: &Ring) -> bool {
        match self {
            AdminChange::Join(member) => ring.contains(member.id),
            AdminChange::Leave(node) | AdminChange::Remove(node) => !ring.contains(*node),
        }
    }
}

impl World {
    /// Issues `change` the way an operator would: on one running member that holds the newest
    /// ring (so the change extends it rather than racing it). Gossip spreads the result.
    pub(super) fn admin_change(&mut self, change: AdminChange) {
        let target = match &change {
            AdminChange::Join(member) => member.id,
            AdminChange::Leave(node) | AdminChange::Remove(node) => *node,
        };
        let Some(issuer) = self.admin_issuer(target) else {
            // Every other member is crashed or paused: an operator waits and tries again (the
            // liveness phase restarts and resumes them all, so this ends). Dropping the change
            // left the rings short of what was asked for (swarm seed 4454, a leave).
            let at = self.now + REMOVE_RETRY_MS * NANOS_PER_MS;
            self.schedule(at, super::Event::AdminRetry(change));
            return;
        };
        let now = self.now_for(issuer);
        let Some(node) = self.node_mut(issuer) else {
            return;
        };
        let result = match change.clone() {
            AdminChange::Join(member) => node.admin_join(now, member),
            AdminChange::Leave(id) => node.admin_leave(now, id),
            AdminChange::Remove(id) => node.admin_remove(now, id),
        };
        self.drain(issuer);
        match result {
            Ok(_) => {}
            Err(AdminError::Membership(MembershipError::NotDown { .. }))
                if matches!(change, AdminChange::Remove(_)) =>
            {
                // Not judged down yet where it was issued: an operator waits and tries again.
                let at = self.now + REMOVE_RETRY_MS * NANOS_PER_MS;
                self.schedule(at, super::Event::AdminRemove { node: target.0 });
            }
            Err(e) => self
                .gossip_figures
                .admin_refused
                .push(format!("{change:?} on n{issuer}: {e}")),
        }
    }

    /// The running, unpaused ring member other than `target` with the newest ring (lowest id on
    /// ties).
    fn admin_issuer(&self, target: NodeId) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, slot)| {
                *i != target.0 as usize
                    && slot.paused_until.is_none()
                    && self.ring.contains(NodeId(*i as u32))
            })
            .filter_map(|(i, slot)| match &slot.state {
                NodeState::Up(node) => node.membership().map(|m| (m.ring_version(), i)),
                _ => None,
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, i)| i)
    }

    /// Starts timing how long the cluster takes to judge `target` as `want`.
    pub(super) fn watch(&mut self, target: u32, want: MemberStatus) {
        if self.gossip.is_none() {
            return;
        }
        self.watches.retain(|w| w.target != target);
        let watch = Watch {
            target,
            since_ns: self.now,
            want,
        };
        if !self.watch_met(&watch) {
            self.watches.push(watch);
        }
    }

    /// After a status change somewhere: records every watch that is now met everywhere.
    pub(super) fn check_watches(&mut self) {
        let watches = std::mem::take(&mut self.watches);
        for watch in watches {
            if self.watch_met(&watch) {
                let ms = (self.now - watch.since_ns) as f64 / 1e6;
                match watch.want {
                    MemberStatus::Alive => self.gossip_figures.alive_ms.push(ms),
                    _ => self.gossip_figures.down_ms.push(ms),
                }
            } else {
                self.watches.push(watch);
            }
        }
    }

    fn watch_met(&self, watch: &Watch) -> bool {
        self.nodes.iter().enumerate().all(|(i, slot)| {
            let NodeState::Up(node) = &slot.state else {
                return true;
            };
            if i == watch.target as usize {
                return true;
            }
            let status = node.member_status(NodeId(watch.target));
            match watch.want {
                MemberStatus::Alive => status == Some(MemberStatus::Alive),
                // A removed node is `Left`: it no longer needs detecting.
                _ => matches!(status, Some(MemberStatus::Down | MemberStatus::Left)),
            }
        })
    }

    /// With gossip: `None` when every running node holds the same ring with the members the
    /// operator asked for; otherwise what differs.
    pub fn ring_disagreement(&self) -> Option<String> {
        self.gossip.as_ref()?;
        if let Some(refused) = self.gossip_figures.admin_refused.first() {
            return Some(format!("operator change refused: {refused}"));
        }
        let wanted: Vec<NodeId> = self.ring.members().iter().map(|m| m.id).collect();
        let mut first: Option<(usize, &Ring)> = None;
        for (i, slot) in self.nodes.iter().enumerate() {
            let NodeState::Up(node) = &slot.state else {
                continue;
            };
            let held: Vec<NodeId> = node.ring().members().iter().map(|m| m.id).collect();
            if held != wanted {
                return Some(format!(
                    "n{i} has ring members {held:?}, the operator asked for {wanted:?}"
                ));
            }
            match first {
                None => first = Some((i, node.ring())),
                Some((j, ring)) if ring != node.ring() => {
                    return Some(format!("n{i} and n{j} hold different rings"));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The ring the nodes converged on (gossip), or the simulator's ring.
    pub fn nodes_ring(&self) -> &Ring {
        if self.gossip.is_some() {
            for slot in &self.nodes {
                if let NodeState::Up(node) = &slot.state {
                    return node.ring();
                }
            }
        }
        &self.ring
    }
}
