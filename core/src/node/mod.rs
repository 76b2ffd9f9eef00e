//! The node state machine: coordinator for client requests and replica for its share of keys.
//!
//! Inputs are `handle_client`, `handle_message`, `handle_timeout`, `handle_persisted`,
//! `handle_persist_failed` and `handle_send_failed` (back-pressure, see `send_failure`); after
//! each, the driver drains `poll_output` completely and then sleeps until `poll_timeout` (or the
//! next input). See the crate documentation for the full contract.

mod antientropy;
mod clock_floor;
mod context;
mod coordinator;
mod counter;
mod data_epoch;
mod durability;
mod fail_fast;
mod gossip;
mod handover;
pub mod hints;
mod incarnation;
mod output;
mod paxos;
mod replica;
pub mod scan;
mod send_failure;
mod store;
mod timers;
mod tree_rebuild;

pub use antientropy::AntiEntropyStats;
pub use clock_floor::CLOCK_FLOOR_KEY;
pub use data_epoch::DATA_EPOCH_KEY;
pub use gossip::{AdminError, MEMBERSHIP_KEY};
pub use handover::{ring_epoch, HandoverStats, HANDOVER_KEY};
pub use incarnation::INCARNATION_KEY;
pub use output::{NodeEvent, Output, PersistToken};
pub use paxos::{PaxosFlaw, PaxosState, PAXOS_PREFIX};
pub use send_failure::{SendFailureClass, SendFailureStats};
pub use tree_rebuild::TreeRebuildStats;

use crate::client::ClientRequest;
use crate::config::{ConfigError, NodeConfig};
use crate::id::{NodeId, RequestId};
use crate::membership::{
    ClientAddress, GossipMessage, MemberStatus, Membership, MembershipConfig, MembershipError,
    RingLog, RingState, RingVersion,
};
use crate::message::Message;
use crate::ring::{Member, Ring};
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::ActorId;
use timers::Timer;

/// Counters a driver may report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Client requests accepted.
    pub requests: u64,
    /// Messages received that matched no live operation (late or duplicated replies).
    pub stale_replies: u64,
    /// Duplicated forwarded puts ignored.
    pub duplicate_forwards: u64,
    /// Repair writes sent (or applied locally) after reads found stale replicas.
    pub read_repairs: u64,
}

/// One ringkv node, generic over its storage engine: the shared context and one state per
/// mechanism, composed here and dispatched to.
pub struct Node<S: Storage> {
    ctx: context::Context<S>,
    /// The incarnation bump and the inputs held until it is durable.
    incarnation: incarnation::Incarnation,
    coordinator: coordinator::Coordinator,
    replica: replica::Replica,
    hints: hints::HintStore,
    anti_entropy: antientropy::AntiEntropy,
    /// Gossip membership and failure detection, when the node runs with them.
    membership: Option<Membership>,
    /// Ring epochs and range readiness for the linearizable level across ring changes.
    handover: handover::Handover,
    /// Sends the driver could not queue, by what became of them.
    send_failures: SendFailureStats,
    /// Paxos replies waiting for their state to be durable (see `paxos`).
    paxos_replies: paxos::PaxosReplies,
}

impl<S: Storage> Node<S> {
    /// Builds a node over `storage` (which holds whatever survived a previous run), started at
    /// `now`. The ring is given whole here; membership changes arrive through the
    /// failure-handling machinery. Every periodic mechanism's first round is armed here,
    /// relative to `now` (the timer table is complete from the start: `poll_timeout` is its
    /// minimum, and no input arms anything lazily).
    pub fn new(
        config: NodeConfig,
        mut ring: Ring,
        storage: S,
        now: Now,
    ) -> Result<Self, ConfigError> {
        config.cluster.validate()?;
        ring.set_datacenter_replicas(&config.cluster.replicas_per_datacenter);
        let linearizable =
            config.cluster.consistency == Some(crate::client::Consistency::Linearizable);
        let handover = handover::Handover::new(&ring, linearizable);
        let mut node = Node {
            ctx: context::Context::new(config, ring, storage),
            incarnation: incarnation::Incarnation::default(),
            coordinator: coordinator::Coordinator::default(),
            replica: replica::Replica::default(),
            hints: hints::HintStore::default(),
            anti_entropy: antientropy::AntiEntropy::default(),
            membership: None,
            handover,
            send_failures: SendFailureStats::default(),
            paxos_replies: paxos::PaxosReplies::default(),
        };
        node.ctx.last_wall = now.wall;
        node.ctx.last_monotonic = now.monotonic;
        node.ctx.load_clock_floor();
        // Before the bump: the epoch is durable before any operation (and so any dot) starts.
        data_epoch::load(&mut node.ctx);
        node.incarnation.bump(&mut node.ctx);
        node.handover_load();
        node.rebuild_trees();
        node.rebuild_hints();
        node.arm_anti_entropy(now);
        node.arm_hint_replay(now);
        // Ask for the bump's persist at once: operations wait for it.
        node.finish_input();
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.ctx.id
    }

    /// The author of this node's vector-clock dots: its id and data epoch (see `data_epoch`).
    /// The epoch is 0 in last-write-wins clusters, which create no dots.
    pub fn actor(&self) -> ActorId {
        self.ctx.actor
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.ctx.config
    }

    /// The ring this node places keys with.
    pub fn ring(&self) -> &Ring {
        &self.ctx.ring
    }

    /// Adopts a new ring (a join, leave or removal decided by the operator or spread by gossip).
    /// Ranges are recomputed and the hash trees rebuilt from storage; anti-entropy then moves
    /// data to the new replicas (a node that no longer replicates a range offers its copy).
    /// Operations in flight finish with the replicas they started with.
    pub fn update_ring(&mut self, ring: Ring) {
        self.adopt_ring(ring);
        self.finish_input();
    }

    fn adopt_ring(&mut self, mut ring: Ring) {
        ring.set_datacenter_replicas(&self.ctx.config.cluster.replicas_per_datacenter);
        let held = std::mem::replace(&mut self.ctx.ring, ring);
        self.ctx.my_ranges = antientropy::my_ranges(
            &self.ctx.ring,
            self.ctx.id,
            usize::from(self.ctx.config.cluster.n),
        );
        self.handover_adopt(held);
        self.anti_entropy.cursor = 0;
        self.cancel_tree_rebuild();
        self.rebuild_trees();
        self.hints_adopt_ring();
    }

    /// The storage engine (for the driver's `sync` and for inspection).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.ctx.storage
    }

    /// The storage engine, read-only.
    pub fn storage(&self) -> &S {
        &self.ctx.storage
    }

    /// Gives the storage back, ending the node (a crash or shutdown).
    pub fn into_storage(self) -> S {
        self.ctx.storage
    }

    /// Counters.
    pub fn stats(&self) -> &NodeStats {
        &self.ctx.stats
    }

    /// Sends the driver could not queue (back-pressure), by what became of them.
    pub fn send_failure_stats(&self) -> &SendFailureStats {
        &self.send_failures
    }

    /// Requests and replica round trips in flight.
    pub fn operations_in_flight(&self) -> usize {
        self.coordinator.operations.len()
    }

    /// A client request. Its reply arrives as `Output::Reply` with the same `request` id.
    pub fn handle_client(&mut self, now: Now, request: RequestId, body: ClientRequest) {
        self.ctx.last_wall = now.wall;
        self.ctx.last_monotonic = now.monotonic;
        self.ctx.stats.requests += 1;
        if let Err(incarnation::Deferred::Client(request, body)) =
            self.defer_until_durable(incarnation::Deferred::Client(request, body))
        {
            self.start_request(now, request, body);
        }
        self.finish_input();
    }

    /// A message from another node.
    pub fn handle_message(&mut self, now: Now, from: NodeId, message: Message) {
        self.ctx.last_wall = now.wall;
        self.ctx.last_monotonic = now.monotonic;
        self.note_heard(from, now.monotonic);
        if matches!(
            message,
            Message::CoordinatePut { .. } | Message::CoordinateIncrement { .. }
        ) {
            // Coordinating it allocates operation ids.
            if let Err(incarnation::Deferred::Message(from, message)) =
                self.defer_until_durable(incarnation::Deferred::Message(from, Box::new(message)))
            {
                self.serve_message(now, from, *message);
            }
        } else {
            self.serve_message(now, from, message);
        }
        self.finish_input();
    }

    fn serve_message(&mut self, now: Now, from: NodeId, message: Message) {
        match message {
            Message::Read { op, key } => self.serve_read(from, op, &key),
            Message::Write { op, key, record } => self.serve_write(from, op, key, record),
            Message::CoordinatePut {
                op,
                key,
                value,
                context,
                needed,
            } => self.serve_coordinate_put(now, from, op, key, value, context, needed),
            Message::ReadReply {
                op,
                key_digest,
                record,
            } => self.on_read_reply(from, op, Some(key_digest), record),
            Message::WriteReply {
                op,
                key_digest,
                result,
            } => self.on_write_reply(from, op, Some(key_digest), result),
            Message::CoordinatePutReply {
                op,
                key_digest,
                outcome,
            } => self.on_forward_reply(from, op, key_digest, outcome),
            Message::HintedWrite {
                op,
                key,
                record,
                for_node,
            } => self.serve_hinted_write(from, op, key, record, for_node),
            Message::AeRoots { roots } => self.on_ae_roots(from, roots),
            Message::AeInterior { range, hashes } => self.on_ae_interior(from, range, hashes),
            Message::AeLeaves { range, groups } => self.on_ae_leaves(from, range, groups),
            Message::AeDigests {
                range,
                leaves,
                entries,
            } => self.on_ae_digests(from, range, leaves, entries),
            Message::AeRecords { records, want } => self.on_ae_records(from, records, want),
            Message::Gossip(gossip) => self.on_gossip(now, from, gossip),
            Message::LinRead { op, key, epoch } => self.serve_lin_read(from, op, &key, epoch),
            Message::LinWrite {
                op,
                key,
                record,
                epoch,
            } => self.serve_lin_write(from, op, key, record, epoch),
            Message::HandoverPull {
                epoch,
                previous,
                ranges,
                start,
            } => self.on_handover_pull(from, epoch, previous, ranges, start),
            Message::HandoverPage { epoch, start, page } => {
                self.on_handover_page(from, epoch, start, page)
            }
            Message::ScanRange {
                op,
                from: start,
                to,
                keys_max,
            } => self.serve_scan_range(from, op, start, to, keys_max),
            Message::ScanRangeReply {
                op,
                from: start,
                page,
            } => self.on_scan_reply(from, op, start, page),
            Message::CountLive { op } => self.serve_count_live(from, op),
            Message::CountLiveReply { op, ranges } => self.on_count_reply(from, op, ranges),
            Message::CoordinateIncrement {
                op,
                key,
                delta,
                needed,
            } => self.serve_coordinate_increment(now, from, op, key, delta, needed),
            Message::PaxosPrepare {
                op,
                key,
                ballot,
                epoch,
            } => self.serve_paxos_prepare(from, op, key, ballot, epoch),
            Message::PaxosPromise {
                op,
                key_digest,
                result,
            } => self.on_paxos_promise(from, op, key_digest, result),
            Message::PaxosPropose {
                op,
                key,
                ballot,
                proposal,
                epoch,
            } => self.serve_paxos_propose(from, op, key, ballot, proposal, epoch),
            Message::PaxosAccept {
                op,
                key_digest,
                result,
            } => self.on_paxos_accept(from, op, key_digest, result),
            Message::PaxosCommit {
                op,
                key,
                ballot,
                record,
                epoch,
            } => self.serve_paxos_commit(from, op, key, ballot, record, epoch),
        }
    }

    /// Time has reached `now`; expired deadlines fire. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Now) {
        self.ctx.last_wall = now.wall;
        self.ctx.last_monotonic = now.monotonic;
        self.gossip_tick(now);
        if self.ctx.timers.due(Timer::AntiEntropy, now.monotonic) {
            self.anti_entropy_round(now);
        }
        if self.ctx.timers.due(Timer::HintReplay, now.monotonic) {
            self.replay_hints(now);
        }
        if self.ctx.timers.due(Timer::HandoverPull, now.monotonic) {
            self.handover_round(now);
        }
        while let Some(&(deadline, op)) = self.coordinator.deadlines.first() {
            if deadline > now.monotonic {
                break;
            }
            self.coordinator.deadlines.remove(&(deadline, op));
            self.on_deadline(now, op);
        }
        self.finish_input();
    }

    /// Every write staged before `token` is durable (the driver called `storage_mut().sync()`).
    pub fn handle_persisted(&mut self, now: Now, token: PersistToken) {
        for waiter in self.ctx.durability.persisted(token) {
            self.after_persist(waiter);
        }
        self.release_deferred(now);
        self.finish_input();
    }

    /// The sync for `token` failed: storage is poisoned and is never asked to sync again.
    pub fn handle_persist_failed(&mut self, _now: Now, _token: PersistToken, reason: String) {
        self.ctx
            .outputs
            .push_back(Output::Event(NodeEvent::StoragePoisoned { reason }));
        for waiter in self.ctx.durability.poison() {
            self.after_persist_failed(waiter);
        }
        if !self.ctx.incarnation_durable() {
            self.refuse_deferred();
        }
        self.finish_input();
    }

    /// The driver could not queue `message` for `to` (the peer's queue is full or gone, or the
    /// message is too large to encode): nothing was sent. The node decides what that means (a
    /// request counts as the replica's `Busy` refusal, a reply or repeatable message is dropped
    /// and counted; see `send_failure`), so no driver holds protocol policy.
    pub fn handle_send_failed(&mut self, now: Now, to: NodeId, message: Message) {
        self.ctx.last_wall = now.wall;
        self.ctx.last_monotonic = now.monotonic;
        self.on_send_failed(to, message);
        self.finish_input();
    }

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.ctx.outputs.pop_front()
    }

    /// When `handle_timeout` should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.coordinator.deadlines.first().map(|&(t, _)| t),
            self.ctx.timers.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Emits a persist request for writes staged by this input, then checks invariants.
    fn finish_input(&mut self) {
        if let Some(token) = self.ctx.durability.take_persist_request() {
            self.ctx.outputs.push_back(Output::Persist { token });
        }
        if cfg!(any(test, debug_assertions)) || self.ctx.faults.enabled() {
            self.check_invariants();
        }
    }

    /// Internal consistency; panics only on a bug in this crate.
    pub fn check_invariants(&self) {
        self.ctx.durability.check_invariants();
        assert_eq!(
            self.coordinator.deadlines.len(),
            self.coordinator.operations.len(),
            "every operation has exactly one deadline"
        );
        for (deadline, op) in &self.coordinator.deadlines {
            let tracked = self.coordinator.operations.get(op).map(|(d, _)| d);
            assert_eq!(tracked, Some(deadline), "deadline of an unknown operation");
        }
        for (id, (_, op)) in &self.coordinator.operations {
            op.check_invariants(self.coordinator.op_groups.contains_key(id));
        }
        for id in self.coordinator.op_groups.keys() {
            assert!(
                self.coordinator.operations.contains_key(id),
                "groups of a finished operation"
            );
        }
        assert_eq!(
            self.coordinator.served_forwards.len(),
            self.coordinator.served_forwards_order.len()
        );
        let ids = self
            .coordinator
            .operations
            .keys()
            .chain(self.hints.replays.keys());
        self.incarnation.check_invariants(&self.ctx, ids.copied());
        gossip::check_invariants(&self.ctx, self.membership.as_ref());
        self.handover.check_invariants(&self.ctx.my_ranges);
        self.ctx.scan_index.check_invariants();
    }
}

// ---- dispatch: gossip, incarnation, data epoch ----
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
        let seed_ring = gossip::SeedRing::Log(seed_ring);
        Self::start_with_membership(config, membership, seed_ring, storage, now)
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
        let seed_ring = gossip::SeedRing::Built(seed_ring);
        Self::start_with_membership(config, membership, seed_ring, storage, now)
    }

    fn start_with_membership(
        config: NodeConfig,
        membership: MembershipConfig,
        seed_ring: gossip::SeedRing,
        mut storage: S,
        now: Now,
    ) -> Result<Self, ConfigError> {
        let (mut machine, restored) =
            gossip::start_machine(config.id, membership, seed_ring, &mut storage, now)?;
        let mut node = Node::new(config, machine.ring().clone(), storage, now)?;
        if restored && !node.handover_recorded() {
            // A ring newer than the seed but no handover record: this node cannot know which
            // ranges it holds, so it holds none until it has pulled them (see `handover`).
            node.handover_forget_all();
        }
        gossip::started(&mut node.ctx, &mut machine);
        node.membership = Some(machine);
        node.finish_input();
        Ok(node)
    }

    /// The membership machine, when the node runs with gossip.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// Sets where this node serves clients; gossip spreads it so every node can name it in
    /// `KV.RING`. Without gossip membership there is nobody to tell: a no-op.
    pub fn set_client_address(&mut self, address: ClientAddress) {
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
        change: impl FnOnce(&mut Membership, Instant) -> Result<RingVersion, MembershipError>,
    ) -> Result<RingVersion, AdminError> {
        self.ctx.last_wall = now.wall;
        self.ctx.last_monotonic = now.monotonic;
        let result = gossip::admin(self.membership.as_mut(), now, change);
        self.drain_membership(now);
        self.finish_input();
        result
    }

    /// True when the failure detector judges `node` failed (never without gossip).
    pub(super) fn is_down(&self, node: NodeId) -> bool {
        gossip::is_down(self.membership.as_ref(), node)
    }

    fn on_gossip(&mut self, now: Now, from: NodeId, message: GossipMessage) {
        gossip::handle_message(&mut self.ctx, self.membership.as_mut(), now, from, message);
        self.drain_membership(now);
    }

    fn gossip_tick(&mut self, now: Now) {
        gossip::handle_timeout(&mut self.ctx, self.membership.as_mut(), now);
        self.drain_membership(now);
    }

    /// Carries membership's outputs over; a ring it adopted is adopted by every mechanism
    /// between the outputs before and after it.
    fn drain_membership(&mut self, now: Now) {
        while let Some(version) = gossip::drain(&mut self.ctx, self.membership.as_mut(), now) {
            if let Some(ring) = self.membership.as_ref().map(|m| m.ring().clone()) {
                self.adopt_ring(ring);
            }
            gossip::ring_adopted(&mut self.ctx, self.membership.as_ref(), version);
        }
    }

    fn defer_until_durable(
        &mut self,
        input: incarnation::Deferred,
    ) -> Result<(), incarnation::Deferred> {
        self.incarnation.defer(&mut self.ctx, input)
    }

    fn refuse_deferred(&mut self) {
        self.incarnation.refuse_all(&mut self.ctx);
    }

    /// Starts the inputs held until the incarnation was durable, in arrival order.
    fn release_deferred(&mut self, now: Now) {
        for input in self.incarnation.release(&self.ctx) {
            match input {
                incarnation::Deferred::Client(request, body) => {
                    self.start_request(now, request, body)
                }
                incarnation::Deferred::Message(from, message) => {
                    self.serve_message(now, from, *message)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod gossip_tests;
