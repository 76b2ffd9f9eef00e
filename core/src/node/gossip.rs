//! The node's side of gossip membership: it owns a [`Membership`] machine, feeds it gossip
//! messages and ticks, adopts the rings it converges on, and lets the coordinator route around
//! members the failure detector judges `Down`.
//!
//! Why the membership state lives in the node's own storage (under the reserved prefix, never
//! replicated): a restarted node must come back with a higher incarnation than any heartbeat it
//! gossiped before, and with the newest ring it knew, without each driver (simulator, tokio node)
//! having to persist them separately. A lost update is harmless: the incarnation is refuted upward
//! by gossip, and a stale ring is replaced by the newer one its peers gossip.

use super::timers::Timer;
use super::{Node, NodeEvent, Output};
use crate::codec;
use crate::config::{ConfigError, NodeConfig};
use crate::id::NodeId;
use crate::membership::{
    MemberStatus, Membership, MembershipConfig, MembershipError, MembershipEvent, MembershipOutput,
    RingLog, RingState, RingVersion,
};
use crate::message::Message;
use crate::ring::Member;
use crate::storage::Storage;
use crate::time::Now;
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a node keeps its own incarnation and ring log (reserved: never replicated or served).
pub const MEMBERSHIP_KEY: &[u8] = b"\xff\xffmeta/membership";

/// What survives a restart of the membership machine.
#[derive(Serialize, Deserialize)]
struct PersistedMembership {
    incarnation: u64,
    ring: RingLog,
}

/// Why an operator's membership command was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminError {
    /// The node was started without gossip membership (its ring is static).
    NoMembership,
    /// The membership machine refused the change.
    Membership(MembershipError),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::NoMembership => write!(f, "this node runs without gossip membership"),
            AdminError::Membership(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AdminError {}

/// Whether gossip judges `node` down (never, without gossip): for mechanisms that hold the
/// membership by reference rather than the whole node.
pub(super) fn is_down(membership: Option<&Membership>, node: NodeId) -> bool {
    membership.and_then(|m| m.status(node)) == Some(MemberStatus::Down)
}

impl<S: Storage> Node<S> {
    /// Builds a node whose ring and failure detection come from gossip. `seed_ring` is the
    /// cluster's initial ring log (or an empty log for a node that learns it from
    /// `membership.seeds`); a newer log persisted by an earlier run wins over it. The incarnation
    /// is one above the persisted one. The first gossip round is due at once (`poll_timeout`).
    pub fn with_membership(
        config: NodeConfig,
        membership: MembershipConfig,
        seed_ring: RingLog,
        storage: S,
        now: Now,
    ) -> Result<Self, ConfigError> {
        Self::start_with_membership(config, membership, SeedRing::Log(seed_ring), storage, now)
    }

    /// [`Node::with_membership`] with the seed ring already built: a driver that starts many
    /// nodes from one initial log builds it once (for the simulator's 1,000 nodes, one replay
    /// of 1,000 joins instead of 1,000). `seed_ring` is checked against `membership`'s limits.
    pub fn with_membership_state(
        config: NodeConfig,
        membership: MembershipConfig,
        seed_ring: RingState,
        storage: S,
        now: Now,
    ) -> Result<Self, ConfigError> {
        Self::start_with_membership(config, membership, SeedRing::Built(seed_ring), storage, now)
    }

    fn start_with_membership(
        config: NodeConfig,
        membership: MembershipConfig,
        seed_ring: SeedRing,
        mut storage: S,
        now: Now,
    ) -> Result<Self, ConfigError> {
        let as_config_error = |e: MembershipError| ConfigError {
            field: "membership",
            reason: e.to_string(),
        };
        let persisted = load_persisted(&mut storage);
        let seed_version = seed_ring.version();
        let incarnation = persisted
            .as_ref()
            .map_or(1, |p| p.incarnation.saturating_add(1));
        let (id, at) = (config.id, now.monotonic);
        let from_seed = |membership: MembershipConfig, seed_ring: SeedRing| match seed_ring {
            SeedRing::Log(log) => Membership::new(membership, id, incarnation, log, at),
            SeedRing::Built(state) => {
                Membership::with_ring_state(membership, id, incarnation, state, at)
            }
        };
        // A newer persisted ring wins; one that no longer builds (another vnode setting) is
        // ignored. Each candidate log is built once, by the machine itself.
        let machine = match persisted.filter(|p| p.ring.version() > seed_version) {
            Some(p) => Membership::new(membership.clone(), id, incarnation, p.ring, at)
                .or_else(|_| from_seed(membership, seed_ring)),
            None => from_seed(membership, seed_ring),
        }
        .map_err(as_config_error)?;
        let restored = machine.ring_version() != seed_version;
        let mut node = Node::new(config, machine.ring().clone(), storage)?;
        if restored && !node.handover_recorded() {
            // A ring newer than the seed but no handover record: this node cannot know which
            // ranges it holds, so it holds none until it has pulled them (see `handover`).
            node.handover_forget_all();
        }
        node.membership = Some(machine);
        node.persist_membership();
        node.finish_input();
        Ok(node)
    }

    /// The membership machine, when the node runs with gossip.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// Sets where this node serves clients; gossip spreads it so every node can name it in
    /// `KV.RING`. Without gossip membership there is nobody to tell: a no-op.
    pub fn set_client_address(&mut self, address: crate::membership::ClientAddress) {
        if let Some(machine) = self.membership.as_mut() {
            machine.set_client_address(address);
        }
    }

    /// What the failure detector says of `node` (`None` without gossip or for a stranger).
    pub fn member_status(&self, node: NodeId) -> Option<MemberStatus> {
        self.membership.as_ref()?.status(node)
    }

    /// Operator: `member` joins the ring. The change spreads by gossip; data moves by
    /// anti-entropy (each replica offers what the new owner lacks).
    pub fn admin_join(&mut self, now: Now, member: Member) -> Result<RingVersion, AdminError> {
        self.admin(now, |m, at| m.join(at, member))
    }

    /// Operator: `node` decommissions; it keeps serving and offering its ranges to their new
    /// owners until they hold them.
    pub fn admin_leave(&mut self, now: Now, node: NodeId) -> Result<RingVersion, AdminError> {
        self.admin(now, |m, at| m.leave(at, node))
    }

    /// Operator: the dead `node` is removed; survivors re-replicate its ranges.
    pub fn admin_remove(&mut self, now: Now, node: NodeId) -> Result<RingVersion, AdminError> {
        self.admin(now, |m, at| m.remove(at, node))
    }

    fn admin(
        &mut self,
        now: Now,
        change: impl FnOnce(
            &mut Membership,
            crate::time::Instant,
        ) -> Result<RingVersion, MembershipError>,
    ) -> Result<RingVersion, AdminError> {
        self.ctx.last_wall = now.wall;
        self.ctx.last_monotonic = now.monotonic;
        let machine = self.membership.as_mut().ok_or(AdminError::NoMembership)?;
        let result = change(machine, now.monotonic).map_err(AdminError::Membership);
        self.drain_membership(now);
        self.finish_input();
        result
    }

    /// True when the failure detector judges `node` failed (never without gossip).
    pub(super) fn is_down(&self, node: NodeId) -> bool {
        is_down(self.membership.as_ref(), node)
    }

    pub(super) fn on_gossip(
        &mut self,
        now: Now,
        from: NodeId,
        message: crate::membership::GossipMessage,
    ) {
        let Some(machine) = self.membership.as_mut() else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        machine.handle_message(now.monotonic, from, message);
        self.drain_membership(now);
    }

    /// Runs failure detection and a gossip round when due.
    pub(super) fn gossip_tick(&mut self, now: Now) {
        let Some(machine) = self.membership.as_mut() else {
            return;
        };
        if machine.poll_timeout().is_some_and(|at| at <= now.monotonic) {
            machine.handle_timeout(now.monotonic, &mut self.ctx.rng);
            self.drain_membership(now);
        }
    }

    fn drain_membership(&mut self, now: Now) {
        let mut outputs = Vec::new();
        if let Some(machine) = self.membership.as_mut() {
            while let Some(output) = machine.poll_output() {
                outputs.push(output);
            }
        }
        for output in outputs {
            match output {
                MembershipOutput::Send { to, message } => {
                    self.ctx.send(to, Message::Gossip(message))
                }
                MembershipOutput::Event(event) => self.on_membership_event(now, event),
            }
        }
    }

    fn on_membership_event(&mut self, now: Now, event: MembershipEvent) {
        match event {
            MembershipEvent::RingChanged { version } => {
                if let Some(ring) = self.membership.as_ref().map(|m| m.ring().clone()) {
                    self.adopt_ring(ring);
                }
                self.persist_membership();
                self.event(NodeEvent::RingChanged {
                    changes: version.changes,
                    fingerprint: version.fingerprint,
                });
            }
            MembershipEvent::IncarnationChanged { .. } => self.persist_membership(),
            MembershipEvent::StatusChanged { node, from, to } => {
                if to == MemberStatus::Alive && from == MemberStatus::Down {
                    // The owner is back: replay its hints now rather than at the next round.
                    self.ctx.timers.arm(Timer::HintReplay, now.monotonic);
                }
                self.event(NodeEvent::MemberStatus { node, from, to });
            }
            MembershipEvent::RingChangeDiscarded { change } => {
                self.event(NodeEvent::RingChangeDiscarded {
                    node: change.node(),
                });
            }
            MembershipEvent::Discovered { node, status } => {
                self.event(NodeEvent::MemberDiscovered { node, status });
            }
        }
    }

    fn event(&mut self, event: NodeEvent) {
        self.ctx.outputs.push_back(Output::Event(event));
    }

    /// Stages the incarnation and ring log; they become durable with the next persist.
    fn persist_membership(&mut self) {
        let Some(machine) = self.membership.as_ref() else {
            return;
        };
        let state = PersistedMembership {
            incarnation: machine.incarnation(),
            ring: machine.ring_state().log().clone(),
        };
        let record = Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: state.incarnation,
                node: self.ctx.id,
                nonce: 0,
            },
            value: Some(Bytes::from(codec::encode_value(&state))),
            expires_at_micros: None,
        });
        // A failure is reported by `stage` (and poisons nothing): gossip repairs both fields.
        let _ = self.ctx.stage(Bytes::from_static(MEMBERSHIP_KEY), record);
    }
}

/// The cluster's initial ring, as a log or already built.
enum SeedRing {
    Log(RingLog),
    Built(RingState),
}

impl SeedRing {
    fn version(&self) -> RingVersion {
        match self {
            SeedRing::Log(log) => log.version(),
            SeedRing::Built(state) => state.version(),
        }
    }
}

/// The membership state of an earlier run, if it is there and decodes.
fn load_persisted<S: Storage>(storage: &mut S) -> Option<PersistedMembership> {
    match storage.get(MEMBERSHIP_KEY) {
        Ok(Some(Record::Lww(LwwRecord {
            value: Some(bytes), ..
        }))) => codec::decode_value(&bytes).ok(),
        _ => None,
    }
}
