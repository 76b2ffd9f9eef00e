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
mod trees;

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
    RingCatalog, RingLog, RingState, RingVersion,
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
    /// Conditional writes: the acceptor's held replies (rounds live in the coordinator).
    paxos: paxos::Paxos,
    /// `membership`'s input count when `finish_input` last found its invariants holding: the
    /// check walks the member table, and most inputs of a node never reach the machine.
    membership_checked_at: Option<u64>,
    /// The incarnation and whether it was durable when `finish_input` last found the
    /// incarnation's invariant holding over every id in flight: an id keeps its incarnation, so
    /// while neither changes, only the ids tracked since need a look (a coordinator holds tens).
    incarnation_checked: Option<(u32, bool)>,
    /// The ring's range count when `finish_input` last found anti-entropy's invariant over the
    /// trees holding (with the trees unchanged since, and the same count, it still holds).
    trees_checked_ranges: Option<usize>,
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
            paxos: paxos::Paxos::default(),
            membership_checked_at: None,
            incarnation_checked: None,
            trees_checked_ranges: None,
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
        self.anti_entropy.adopt_ring();
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
        self.coordinator.in_flight.len()
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

    #[expect(
        clippy::too_many_lines,
        reason = "the message dispatch table: one arm per message kind"
    )]
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
            message @ (Message::PaxosPrepare { .. }
            | Message::PaxosPromise { .. }
            | Message::PaxosPropose { .. }
            | Message::PaxosAccept { .. }
            | Message::PaxosCommit { .. }) => self.paxos.handle_message(
                &mut self.ctx,
                &mut self.coordinator,
                &mut self.handover,
                from,
                message,
            ),
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
        while let Some((op, operation)) = self.coordinator.in_flight.pop_due(now.monotonic) {
            self.on_deadline(now, op, operation);
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
        self.on_send_failed(now, to, message);
        self.finish_input();
    }

    /// The next effect to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.ctx.outputs.pop_front()
    }

    /// When `handle_timeout` should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.coordinator.in_flight.next_deadline(),
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
            self.check_invariants_since(self.membership_checked_at, self.incarnation_checked, true);
            self.membership_checked_at = self.membership.as_ref().map(Membership::inputs);
            self.incarnation_checked = Some((self.ctx.incarnation, self.ctx.incarnation_durable()));
            self.trees_checked_ranges = Some(self.ctx.ring.range_count());
        }
        // Checked above, or never checked on this node: either way no longer owed a check.
        self.coordinator.in_flight.clear_changed();
        self.ctx.trees.clear_changed();
        self.hints.clear_changed();
        self.handover.clear_changed();
    }

    /// Internal consistency; panics only on a bug in this crate.
    pub fn check_invariants(&self) {
        self.check_invariants_since(None, None, false);
    }

    /// [`Node::check_invariants`], skipping the membership machine's own (a walk of its table)
    /// when it has taken no input since its count was `membership_checked_at`, and with
    /// `changed_only`, walking only the operations in flight that changed since the last check
    /// (`coordinator::InFlight`; tests walk them all as well), skipping anti-entropy's check
    /// of the trees when neither they nor the ring's range count changed since it last held
    /// (see `trees`), and skipping the hint store's and the handover's checks when no input
    /// reached them since (each notes its own inputs; tests check them all the same). The
    /// incarnation's check looks only at the ids tracked since the last check when the
    /// incarnation and its durability are what they were then (`incarnation_checked`).
    fn check_invariants_since(
        &self,
        membership_checked_at: Option<u64>,
        incarnation_checked: Option<(u32, bool)>,
        changed_only: bool,
    ) {
        self.ctx.durability.check_invariants();
        if changed_only {
            self.coordinator.check_changed_invariants();
        }
        if !changed_only || cfg!(test) {
            self.coordinator.check_invariants();
        }
        let incarnation_unchanged = changed_only
            && incarnation_checked == Some((self.ctx.incarnation, self.ctx.incarnation_durable()));
        if incarnation_unchanged {
            let ids = self
                .coordinator
                .in_flight
                .changed_ids()
                .chain(self.hints.replay_ids());
            self.incarnation.check_invariants(&self.ctx, ids);
        }
        if !incarnation_unchanged || cfg!(test) {
            let ids = self
                .coordinator
                .in_flight
                .ids()
                .chain(self.hints.replay_ids());
            self.incarnation.check_invariants(&self.ctx, ids);
        }
        gossip::check_invariants(&self.ctx, self.membership.as_ref(), membership_checked_at);
        if !changed_only || self.handover.changed() || cfg!(test) {
            self.handover.check_invariants(&self.ctx.my_ranges);
        }
        self.paxos.check_invariants(&self.ctx.durability);
        self.ctx.scan_index.check_invariants();
        if !changed_only || self.hints.changed() || cfg!(test) {
            self.hints.check_invariants();
        }
        let trees_unchanged = !self.ctx.trees.changed()
            && self.trees_checked_ranges == Some(self.ctx.ring.range_count());
        if !changed_only || !trees_unchanged || cfg!(test) {
            self.anti_entropy
                .check_invariants(&self.ctx.trees, &self.ctx.ring);
        }
        self.ctx.tree_rebuild.check_invariants(&self.ctx.ring);
    }
}

// ---- dispatch: replica, hints, anti-entropy, tree rebuild ----
impl<S: Storage> Node<S> {
    fn serve_read(&mut self, from: NodeId, op: crate::id::OperationId, key: &[u8]) {
        self.replica.serve_read(&mut self.ctx, from, op, key);
    }

    fn serve_write(
        &mut self,
        from: NodeId,
        op: crate::id::OperationId,
        key: bytes::Bytes,
        record: crate::version::Record,
    ) {
        self.replica
            .serve_write(&mut self.ctx, from, op, key, record);
    }

    fn serve_hinted_write(
        &mut self,
        from: NodeId,
        op: crate::id::OperationId,
        key: bytes::Bytes,
        record: crate::version::Record,
        owner: NodeId,
    ) {
        self.hints
            .serve_hinted_write(&mut self.ctx, from, op, key, record, owner);
    }

    /// Work released by durability, routed by what waited: a replica's acknowledgement, the
    /// coordinator's own copy, a handover mark or a Paxos reply.
    fn after_persist(&mut self, then: durability::AfterPersist) {
        match then {
            durability::AfterPersist::AckRemote { to, op, key_digest } => {
                replica::Replica::acknowledge(
                    &mut self.ctx,
                    to,
                    op,
                    key_digest,
                    Ok(replica::Applied::Now),
                );
            }
            durability::AfterPersist::AckLocal(op) => self.on_local_write_durable(op),
            durability::AfterPersist::HandoverDurable(mark) => self.handover.on_durable(mark),
            durability::AfterPersist::PaxosReply(number) => self.paxos_reply_durable(number),
            durability::AfterPersist::Nothing => {}
        }
    }

    /// Work that waited on a sync that failed, routed as in `after_persist`.
    fn after_persist_failed(&mut self, then: durability::AfterPersist) {
        match then {
            durability::AfterPersist::AckRemote { to, op, key_digest } => {
                let refused = Err(crate::message::ReplicaError::Storage);
                replica::Replica::acknowledge(&mut self.ctx, to, op, key_digest, refused);
            }
            durability::AfterPersist::AckLocal(op) => {
                let id = self.ctx.id;
                self.on_write_reply(id, op, None, Err(crate::message::ReplicaError::Storage));
            }
            durability::AfterPersist::PaxosReply(number) => self.paxos_reply_failed(number),
            // A poisoned node never becomes durable: its handover stays pending.
            durability::AfterPersist::HandoverDurable(_) | durability::AfterPersist::Nothing => {}
        }
    }

    fn store_hint(
        &mut self,
        owner: NodeId,
        key: bytes::Bytes,
        record: &crate::version::Record,
        then: durability::AfterPersist,
    ) -> Result<replica::Applied, crate::message::ReplicaError> {
        self.hints.store(&mut self.ctx, owner, key, record, then)
    }

    fn on_hint_replay_reply(
        &mut self,
        from: NodeId,
        op: crate::id::OperationId,
        key_digest: Option<u64>,
        ok: bool,
    ) -> bool {
        self.hints
            .on_replay_reply(&mut self.ctx, from, op, key_digest, ok)
    }

    fn rebuild_hints(&mut self) {
        self.hints.rebuild(&mut self.ctx);
    }

    fn arm_hint_replay(&mut self, now: Now) {
        hints::HintStore::arm_replay(&mut self.ctx, now);
    }

    fn replay_hints(&mut self, now: Now) {
        self.hints
            .replay(&mut self.ctx, self.membership.as_ref(), now);
    }

    fn hints_adopt_ring(&mut self) {
        self.hints.adopt_ring(&self.ctx.ring);
    }

    /// Hints waiting, per owner: (count, bytes).
    pub fn pending_hints(&self) -> std::collections::BTreeMap<NodeId, (usize, u64)> {
        self.hints.pending()
    }

    /// Hint counters.
    pub fn hint_stats(&self) -> &hints::HintStats {
        &self.hints.stats
    }

    fn rebuild_trees(&mut self) {
        self.ctx.rebuild_indexes();
    }

    /// Operator: compare every range this node replicates (and offer every range it holds but no
    /// longer replicates) with the other replicas now, back to back, instead of waiting for the
    /// periodic sweep. Returns the rounds scheduled. Works even with periodic anti-entropy off.
    pub fn start_repair(&mut self, now: Now) -> usize {
        let rounds = self.anti_entropy.start_repair(&mut self.ctx, now);
        self.finish_input();
        rounds
    }

    /// Anti-entropy rounds still to run for an operator's repair.
    pub fn repair_rounds_left(&self) -> usize {
        self.anti_entropy.repair_rounds_left
    }

    /// Anti-entropy counters.
    pub fn anti_entropy_stats(&self) -> &AntiEntropyStats {
        &self.anti_entropy.stats
    }

    fn arm_anti_entropy(&mut self, now: Now) {
        antientropy::AntiEntropy::arm(&mut self.ctx, now);
    }

    fn anti_entropy_round(&mut self, now: Now) {
        self.anti_entropy.round(&mut self.ctx, now);
    }

    fn on_ae_roots(&mut self, from: NodeId, roots: Vec<(u32, u64)>) {
        self.anti_entropy.on_roots(&mut self.ctx, from, roots);
    }

    fn on_ae_interior(&mut self, from: NodeId, range: u32, hashes: Vec<u64>) {
        self.anti_entropy
            .on_interior(&mut self.ctx, from, range, hashes);
    }

    fn on_ae_leaves(&mut self, from: NodeId, range: u32, groups: Vec<(u8, Vec<u64>)>) {
        self.anti_entropy
            .on_leaves(&mut self.ctx, from, range, groups);
    }

    fn on_ae_digests(
        &mut self,
        from: NodeId,
        range: u32,
        leaves: Vec<u16>,
        entries: Vec<(bytes::Bytes, u64)>,
    ) {
        self.anti_entropy
            .on_digests(&mut self.ctx, from, range, leaves, entries);
    }

    fn on_ae_records(
        &mut self,
        from: NodeId,
        records: Vec<(bytes::Bytes, crate::version::Record)>,
        want: Vec<bytes::Bytes>,
    ) {
        self.anti_entropy
            .on_records(&mut self.ctx, from, records, want);
    }

    fn cancel_tree_rebuild(&mut self) {
        self.ctx.tree_rebuild.cancel();
    }

    /// Rebuild counters.
    pub fn tree_rebuild_stats(&self) -> &TreeRebuildStats {
        self.ctx.tree_rebuild.stats()
    }
}

// ---- dispatch: paxos and send failures ----
impl<S: Storage> Node<S> {
    /// The Paxos proposer at work on this node's state (see `paxos::Proposer`).
    fn paxos_proposer(&mut self) -> paxos::Proposer<'_, S> {
        self.paxos
            .proposer(&mut self.ctx, &mut self.coordinator, &mut self.handover)
    }

    /// Starts a conditional write's Paxos round (see `paxos`).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    fn start_paxos(
        &mut self,
        now: Now,
        request: RequestId,
        key: bytes::Bytes,
        intent: paxos::Intent,
        needed: u8,
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        self.paxos_proposer()
            .start(now, request, key, intent, needed, replicas, deadline);
    }

    /// A write reply for a Paxos round; `false` if `op` is not one.
    fn paxos_on_write_reply(
        &mut self,
        now: Now,
        from: NodeId,
        op: crate::id::OperationId,
        digest: Option<u64>,
        result: Result<(), crate::message::ReplicaError>,
    ) -> bool {
        self.paxos_proposer()
            .on_write_reply(now, from, op, digest, result)
    }

    /// A Paxos round's tracked deadline passed (its entry is already removed).
    fn paxos_deadline(
        &mut self,
        now: Now,
        op: crate::id::OperationId,
        operation: paxos::PaxosOperation,
    ) {
        self.paxos_proposer().on_deadline(now, op, operation);
    }

    /// The persist a held Paxos reply waited for is durable.
    fn paxos_reply_durable(&mut self, number: u64) {
        let (ctx, coordinator, handover) =
            (&mut self.ctx, &mut self.coordinator, &mut self.handover);
        self.paxos
            .handle_persisted(ctx, coordinator, handover, number);
    }

    /// The persist a held Paxos reply waited for failed.
    fn paxos_reply_failed(&mut self, number: u64) {
        let (ctx, coordinator, handover) =
            (&mut self.ctx, &mut self.coordinator, &mut self.handover);
        self.paxos
            .handle_persist_failed(ctx, coordinator, handover, number);
    }

    /// A message the driver could not queue goes to the mechanism whose it was: a request an
    /// operation waits for comes back as its replica's `Busy` refusal, through the same path
    /// as a refusal received (see `send_failure`).
    fn on_send_failed(&mut self, now: Now, to: NodeId, message: Message) {
        match self.send_failures.record(message) {
            send_failure::SendFailure::Refused(refusal) => self.serve_message(now, to, refusal),
            send_failure::SendFailure::ScanRefused(request) => {
                self.on_scan_send_failed(to, &request);
            }
            send_failure::SendFailure::Dropped(_) => {}
        }
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
        let seed_ring = gossip::SeedRing::Built(Box::new(seed_ring));
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

    /// Shares ring states with the other nodes of this process that hold `rings`
    /// ([`RingCatalog`]): the simulator hands one to all its nodes. Without gossip membership
    /// the ring never changes: a no-op.
    pub fn share_rings(&mut self, rings: RingCatalog) {
        if let Some(machine) = self.membership.as_mut() {
            machine.share_rings(rings);
        }
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

// ---- dispatch: handover and scan ----
use crate::client::Consistency;
use crate::id::OperationId;
use crate::message::{HandoverPage, ReplicaError, ScanPage};
use crate::version::Record;
use bytes::Bytes;

impl<S: Storage> Node<S> {
    fn handover_load(&mut self) {
        self.handover.load(&mut self.ctx);
    }

    fn handover_forget_all(&mut self) {
        self.handover.forget_all(&mut self.ctx);
    }

    /// The driver started this node on an empty disk in place of a ring member's lost one (a
    /// replaced machine; `wipe` in the simulator). ABD's majorities tolerate crashes, not
    /// amnesia: counted at once, this node and a replica that missed a write would make a read
    /// majority that misses a write a majority acknowledged (swarm seed 4709). So, like a node
    /// that skipped a ring, it is ready nowhere until it has pulled each range it replicates
    /// from a majority of its ready replicas. The state is persisted at once, whatever the
    /// level, so a crash during the pulls cannot bring it back ready.
    ///
    /// The node cannot tell this itself: a replaced machine and a member of a cluster starting
    /// for the first time both find an empty store on a ring that lists them, and only the
    /// latter may count at once (nobody holds anything yet). Levels other than `linearizable`
    /// ignore readiness: there a wipe is one lost copy; writes acknowledged by W >= 2 replicas
    /// survive it on another, and anti-entropy and the pulls refill the node. Called on any
    /// other node it costs only availability (it re-pulls what it holds).
    pub fn start_as_replacement(&mut self) {
        self.handover.start_as_replacement(&mut self.ctx);
        self.finish_input();
    }

    fn handover_recorded(&self) -> bool {
        self.handover.recorded()
    }

    fn handover_adopt(&mut self, held: Ring) {
        self.handover.adopt(&mut self.ctx, held);
    }

    /// Counters of the handover mechanism.
    pub fn handover_stats(&self) -> &HandoverStats {
        self.handover.stats()
    }

    /// Ranges this node replicates but does not count for in linearizable quorums yet.
    pub fn ranges_not_ready(&self) -> usize {
        self.handover.ranges_not_ready()
    }

    /// Fencing and readiness first (see `handover`), then a plain replica read.
    fn serve_lin_read(&mut self, from: NodeId, op: OperationId, key: &[u8], epoch: u64) {
        if self
            .handover
            .admit_read(&mut self.ctx, from, op, key, epoch)
        {
            self.serve_read(from, op, key);
        }
    }

    /// Fencing and readiness first (see `handover`), then a plain replica write.
    fn serve_lin_write(
        &mut self,
        from: NodeId,
        op: OperationId,
        key: Bytes,
        record: Record,
        epoch: u64,
    ) {
        if self
            .handover
            .admit_write(&mut self.ctx, from, op, &key, epoch)
        {
            self.serve_write(from, op, key, record);
        }
    }

    fn handover_round(&mut self, now: Now) {
        self.handover.handle_round(&mut self.ctx, now);
    }

    fn on_handover_pull(
        &mut self,
        from: NodeId,
        epoch: u64,
        previous: u64,
        ranges: Vec<u32>,
        start: Bytes,
    ) {
        self.handover
            .handle_pull(&mut self.ctx, from, epoch, previous, ranges, start);
    }

    fn on_handover_page(
        &mut self,
        from: NodeId,
        epoch: u64,
        start: Bytes,
        page: Result<HandoverPage, ReplicaError>,
    ) {
        self.handover
            .handle_page(&mut self.ctx, from, epoch, start, page);
    }

    fn start_scan(
        &mut self,
        now: Now,
        request: RequestId,
        from: u64,
        keys_max: u32,
        level: Option<Consistency>,
    ) {
        let (ctx, coordinator) = (&mut self.ctx, &mut self.coordinator);
        scan::start_scan(ctx, coordinator, now, request, from, keys_max, level);
    }

    fn start_count(&mut self, now: Now, request: RequestId) {
        scan::start_count(&mut self.ctx, &mut self.coordinator, now, request);
    }

    fn serve_scan_range(
        &mut self,
        from_node: NodeId,
        op: OperationId,
        from: u64,
        to: u64,
        keys_max: u32,
    ) {
        scan::serve_scan_range(&mut self.ctx, from_node, op, from, to, keys_max);
    }

    fn serve_count_live(&mut self, from: NodeId, op: OperationId) {
        scan::serve_count_live(&mut self.ctx, from, op);
    }

    fn on_scan_reply(
        &mut self,
        from_node: NodeId,
        op: OperationId,
        from: u64,
        page: Result<ScanPage, ReplicaError>,
    ) {
        let (ctx, coordinator) = (&mut self.ctx, &mut self.coordinator);
        scan::on_scan_reply(ctx, coordinator, from_node, op, from, page);
    }

    fn on_count_reply(&mut self, from: NodeId, op: OperationId, ranges: Vec<(u64, u64)>) {
        scan::on_count_reply(&mut self.ctx, &mut self.coordinator, from, op, ranges);
    }

    fn on_scan_send_failed(&mut self, to: NodeId, message: &Message) {
        scan::on_scan_send_failed(&mut self.ctx, &mut self.coordinator, to, message);
    }

    fn on_scan_deadline(&mut self, operation: scan::ScanOperation) {
        scan::on_scan_deadline(&mut self.ctx, operation);
    }
}

// ---- dispatch: coordinator ----
impl<S: Storage> Node<S> {
    /// The other mechanisms' state the coordinator consults (see `coordinator::Neighbours`).
    fn neighbours(
        &mut self,
    ) -> (
        &mut coordinator::Coordinator,
        &mut context::Context<S>,
        coordinator::Neighbours<'_>,
    ) {
        let neighbours = coordinator::Neighbours {
            handover: &mut self.handover,
            membership: self.membership.as_ref(),
        };
        (&mut self.coordinator, &mut self.ctx, neighbours)
    }

    /// A client request, routed by kind: the cluster-wide ones to `scan`, a conditional write
    /// to `paxos` once the coordinator has resolved its level, everything else to the
    /// coordinator.
    pub(super) fn start_request(&mut self, now: Now, request: RequestId, body: ClientRequest) {
        match body {
            ClientRequest::Scan {
                from,
                keys_max,
                consistency,
            } => return self.start_scan(now, request, from, keys_max, consistency),
            ClientRequest::CountKeys => return self.start_count(now, request),
            _ => {}
        }
        let (coordinator, ctx, mut nb) = self.neighbours();
        let paxos = coordinator.start_request(ctx, &mut nb, now, request, body);
        self.send_hand_offs();
        if let Some(p) = paxos {
            self.start_paxos(
                now, p.request, p.key, p.intent, p.needed, p.replicas, p.deadline,
            );
        }
    }

    /// A replica's answer to a read round trip (see `Coordinator::on_read_reply`).
    pub(super) fn on_read_reply(
        &mut self,
        from: NodeId,
        op: crate::id::OperationId,
        key_digest: Option<u64>,
        record: Result<Option<crate::version::Record>, crate::message::ReplicaError>,
    ) {
        let (coordinator, ctx, mut nb) = self.neighbours();
        coordinator.on_read_reply(ctx, &mut nb, from, op, key_digest, record);
    }

    /// A write acknowledgement or refusal, routed by what `op` is: a hint replay, a Paxos
    /// commit or write-back, or a coordinated write.
    pub(super) fn on_write_reply(
        &mut self,
        from: NodeId,
        op: crate::id::OperationId,
        key_digest: Option<u64>,
        result: Result<(), crate::message::ReplicaError>,
    ) {
        if self.on_hint_replay_reply(from, op, key_digest, result.is_ok()) {
            return;
        }
        let now = Now {
            monotonic: self.ctx.last_monotonic,
            wall: self.ctx.last_wall,
        };
        if self.paxos_on_write_reply(now, from, op, key_digest, result) {
            return;
        }
        self.coordinator
            .on_write_reply(&mut self.ctx, from, op, key_digest, result);
    }

    /// This node's own copy of a write it coordinates (or a Paxos commit) is durable.
    pub(super) fn on_local_write_durable(&mut self, op: crate::id::OperationId) {
        self.coordinator.fan_out(&mut self.ctx, op);
        let id = self.ctx.id;
        self.on_write_reply(id, op, None, Ok(()));
    }

    /// The coordinating replica's answer to a forwarded put.
    pub(super) fn on_forward_reply(
        &mut self,
        from: NodeId,
        op: crate::id::OperationId,
        key_digest: u64,
        outcome: crate::message::ForwardedOutcome,
    ) {
        self.coordinator
            .on_forward_reply(&mut self.ctx, from, op, key_digest, outcome);
    }

    /// A replica was asked to coordinate a vector-clock put.
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one message, destructured"
    )]
    pub(super) fn serve_coordinate_put(
        &mut self,
        now: Now,
        from: NodeId,
        op: crate::id::OperationId,
        key: bytes::Bytes,
        value: Option<bytes::Bytes>,
        context: crate::version::VersionVector,
        needed: u8,
    ) {
        let (coordinator, ctx, mut nb) = self.neighbours();
        coordinator.serve_coordinate_put(ctx, &mut nb, now, from, op, key, value, context, needed);
    }

    /// A client-facing node asks this replica to apply an increment.
    pub(super) fn serve_coordinate_increment(
        &mut self,
        now: Now,
        from: NodeId,
        op: crate::id::OperationId,
        key: bytes::Bytes,
        delta: i64,
        needed: u8,
    ) {
        let (coordinator, ctx, mut nb) = self.neighbours();
        coordinator.serve_coordinate_increment(ctx, &mut nb, now, from, op, key, delta, needed);
        self.send_hand_offs();
    }

    /// An operation's deadline passed, routed by kind: Paxos rounds and scans to their
    /// mechanisms, the rest to the coordinator.
    fn on_deadline(
        &mut self,
        now: Now,
        op: crate::id::OperationId,
        operation: coordinator::Operation,
    ) {
        let (coordinator, ctx, mut nb) = self.neighbours();
        match coordinator.on_deadline(ctx, &mut nb, now, op, operation) {
            coordinator::Expired::Done => {}
            coordinator::Expired::Paxos(paxos) => self.paxos_deadline(now, op, *paxos),
            coordinator::Expired::Scan(scan) => self.on_scan_deadline(scan),
        }
        self.send_hand_offs();
    }

    /// Records a message from `from` for failing fast (see `fail_fast`).
    pub(super) fn note_heard(&mut self, from: NodeId, now: Instant) {
        let gossip = self.membership.is_some();
        self.coordinator.note_heard(&self.ctx, gossip, from, now);
    }

    /// Sends the hinted copies the coordinator decided, in order; a copy for this node itself
    /// goes to the hint store, and its durability (or refusal) back to the coordinator.
    fn send_hand_offs(&mut self) {
        for hand_off in std::mem::take(&mut self.coordinator.hand_offs) {
            let coordinator::HandOff {
                op,
                fallback,
                intended,
                key,
                record,
            } = hand_off;
            self.hints.stats.handed_off += 1;
            if fallback != self.ctx.id {
                let message = Message::HintedWrite {
                    op,
                    key,
                    record,
                    for_node: intended,
                };
                self.ctx.send(fallback, message);
                continue;
            }
            match self.store_hint(
                intended,
                key,
                &record,
                durability::AfterPersist::AckLocal(op),
            ) {
                Ok(replica::Applied::Now) => {
                    self.coordinator.on_local_write_durable(&mut self.ctx, op);
                }
                Ok(replica::Applied::Pending) => {}
                Err(e) => {
                    let id = self.ctx.id;
                    self.coordinator
                        .on_write_reply(&mut self.ctx, id, op, None, Err(e));
                }
            }
        }
    }
}
