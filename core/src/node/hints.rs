//! Hinted handoff (PITFALLS: "Hints that grow without bound hurt more than the outage").
//!
//! A fallback node that stands in for a silent replica stores the write as a hint, durably,
//! through the same persist-before-ack handshake, under a reserved key
//! (`HINT_PREFIX | intended node | key`). Hints are replayed to their owner a few per round and
//! deleted only after the owner acknowledged holding what was delivered durably (merging makes
//! that "this version or a newer one").
//!
//! A hint may be the only durable copy of an acknowledged write: a coordinator cut off from all of
//! a key's replicas meets W through fallbacks alone. So a hint never expires (issue #11, item 3):
//! past `hint_age_max_ms` it is counted once as aged (`HintStats::aged`) and replayed ahead of
//! younger hints, and it stays until its owner holds it. Age is measured on this node's own
//! monotonic clock from when it stored the hint, never from the write's wall-clock timestamp, so
//! a wall clock stepping forward ages nothing (item 4); after a restart the age restarts
//! (conservatively) from the first replay round of the new process.
//!
//! Bounds, all kept: per owner at most `hints_per_target_max` hints and
//! `hint_bytes_per_target_max` bytes (key plus value), and a new hint is taken only for a ring
//! member, so the whole store is bounded by the number of owners ever in the ring times those.
//! A NEW hint that does not fit is refused (`HintStats::overflowed`): the fallback answers `Busy`,
//! so the refused copy does not count toward W and is never acknowledged; the write is then left
//! to the replicas and anti-entropy. Replay sends at most `hint_replays_per_round` hints per
//! `hint_replay_interval_ms`.
//!
//! An owner that left the ring (decommissioned or removed) will never take its hints, yet they may
//! still be the only copy of acknowledged writes, and anti-entropy cannot help: it moves what
//! replicas hold, and a hint is not a replica's record. So such a hint is re-homed
//! (`HintStats::rehomed`): replayed to a current replica of its key instead ([`rehome_target`]),
//! or applied here as this node's own copy when it now replicates the key, and deleted, as any
//! hint, only once that replica holds it durably. Anti-entropy then spreads it to the other
//! replicas. (Deleting such hints unsent lost writes acknowledged by one hint alone: the swarm
//! quarantine "sloppy-single-acknowledgement".)

use super::context::Context;
use super::durability::AfterPersist;
use super::gossip::is_down;
use super::replica::{Applied, Replica};
use super::timers::Timer;
use crate::id::{key_digest, NodeId, OperationId};
use crate::membership::Membership;
use crate::message::{Message, ReplicaError};
use crate::ring::Ring;
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::{merge_into, Record};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The hints this node keeps for others and their replay.
#[derive(Default)]
pub(super) struct HintStore {
    /// Hints per owner.
    queues: BTreeMap<NodeId, HintQueue>,
    /// Replays awaiting an answer, by their round-trip id.
    replays: BTreeMap<OperationId, Replay>,
    /// Replay rounds run by this process.
    round: u64,
    /// The storage keys of the hints carried by `replays` (never replayed twice at once).
    in_flight: InFlightHints,
    /// Counters (`delivered`, `replayed` and `rehomed`, which the invariants read, change only
    /// here).
    pub(super) stats: HintStats,
    /// Whether any input reached this store since [`HintStore::clear_changed`]: each method that
    /// takes `&mut self` from outside this file sets it, so the node re-checks the invariants
    /// (a walk of every queued hint) only after an input that could have changed what they read.
    changed: bool,
}

/// One hint replay awaiting its target's answer.
#[derive(Clone, Debug)]
pub(super) struct Replay {
    /// The node replayed to: the owner, or for an owner that left the ring a current replica of
    /// the key (this node itself when it replicates the key).
    target: NodeId,
    /// The hint's storage key.
    stored: Bytes,
    /// The replay round it was sent in.
    round: u64,
    /// The record delivered: the hint is deleted only if it still holds exactly this.
    delivered: Record,
}

/// Keys starting with this are the node's own (hints); clients may not use them.
pub const RESERVED_PREFIX: &[u8] = b"\xff\xff";

/// Where hints live in storage.
pub const HINT_PREFIX: &[u8] = b"\xff\xffhint/";

/// Hint counters, for operators and the simulator's report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HintStats {
    /// Hinted copies sent to fallbacks by this node as coordinator.
    pub handed_off: u64,
    /// Hints stored by this node as a fallback.
    pub stored: u64,
    /// Hints refused because the owner's queue was full (left to anti-entropy).
    pub overflowed: u64,
    /// Hints replayed to their owners (sends, including retries).
    pub replayed: u64,
    /// Hints the owner acknowledged durably, then deleted here.
    pub delivered: u64,
    /// Hints deleted without being delivered. Always 0 since no hint is: an aged one is kept
    /// (issue #11 item 3) and one whose owner left the ring is re-homed (`rehomed`). Kept for the
    /// operators' metrics and the simulator's summary, which report it.
    pub expired: u64,
    /// Hints whose owner left the ring, delivered instead to a current replica of their key (or
    /// made this node's own copy when it replicates the key), then deleted here. Also counted in
    /// `delivered`.
    pub rehomed: u64,
    /// Hints still undelivered `hint_age_max_ms` after this node stored them: counted once each,
    /// then replayed ahead of younger ones. Never deleted for their age.
    pub aged: u64,
}

/// What a queue knows of one stored hint.
#[derive(Clone, Copy, Debug)]
pub(super) struct HintEntry {
    /// Bytes counted against the owner's bound (storage key plus value).
    bytes: u64,
    /// When this node stored it, on its own monotonic clock. `None` for a hint found in storage
    /// at start-up, until the first replay round sets it (its age restarts with the process).
    stored_at: Option<Instant>,
    /// Already counted in `HintStats::aged`.
    aged: bool,
}

/// One owner's queue of hints: storage key → what is known of it.
#[derive(Clone, Debug, Default)]
pub(super) struct HintQueue {
    keys: BTreeMap<Bytes, HintEntry>,
    bytes: u64,
}

/// Whether a hint stored at `stored_at` is older than `age_max` at `now`: judged on the storing
/// node's monotonic clock only. A pure policy.
pub fn hint_aged(stored_at: Instant, now: Instant, age_max: Duration) -> bool {
    now.saturating_duration_since(stored_at) > age_max
}

/// Where a hint whose owner left the ring goes instead, among `replicas` (the key's replicas on
/// the current ring): this node (`me`) if it is one of them, so the hint becomes its own copy
/// with no round trip; otherwise a replica not judged down, taken in turn by replay `round`, so a
/// replica that never answers does not hold the hint back for ever. `None` while every replica is
/// judged down: the hint waits. A pure policy.
pub fn rehome_target(
    replicas: &[NodeId],
    me: NodeId,
    down: &[NodeId],
    round: u64,
) -> Option<NodeId> {
    if replicas.contains(&me) {
        return Some(me);
    }
    let live: Vec<NodeId> = replicas
        .iter()
        .copied()
        .filter(|r| !down.contains(r))
        .collect();
    let count = u64::try_from(live.len()).ok().filter(|&c| c > 0)?;
    let index = usize::try_from(round % count).ok()?;
    live.get(index).copied()
}

/// The first node along `walk` (the key's placement order) not in `involved`: the stand-in for a
/// silent replica. A pure policy.
pub fn choose_fallback(walk: &[NodeId], involved: &[NodeId]) -> Option<NodeId> {
    walk.iter().copied().find(|n| !involved.contains(n))
}

/// The storage key of a hint for `owner` about `key`.
pub fn hint_key(owner: NodeId, key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(HINT_PREFIX.len() + 4 + key.len());
    k.extend_from_slice(HINT_PREFIX);
    k.extend_from_slice(&owner.0.to_be_bytes());
    k.extend_from_slice(key);
    Bytes::from(k)
}

/// Splits a hint's storage key into (owner, key).
pub fn parse_hint_key(stored: &[u8]) -> Option<(NodeId, Bytes)> {
    let rest = stored.strip_prefix(HINT_PREFIX)?;
    let owner = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    Some((NodeId(owner), Bytes::copy_from_slice(rest.get(4..)?)))
}

impl HintStore {
    /// Reloads the hint queues from storage (at start-up).
    pub(super) fn rebuild<S: Storage>(&mut self, ctx: &mut Context<S>) {
        self.changed = true;
        self.queues.clear();
        let Ok(batch) = ctx.storage.scan(HINT_PREFIX, usize::MAX >> 1) else {
            return;
        };
        for (stored, record) in batch {
            if !stored.starts_with(HINT_PREFIX) {
                break;
            }
            if let Some((owner, _)) = parse_hint_key(&stored) {
                let queue = self.queues.entry(owner).or_default();
                let size = stored.len() as u64 + record.value_bytes() as u64;
                queue.bytes += size;
                let entry = HintEntry {
                    bytes: size,
                    stored_at: None,
                    aged: false,
                };
                queue.keys.insert(stored, entry);
            }
        }
    }

    /// Stores a hint for `owner` and arranges `then` once it is durable.
    pub(super) fn store<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        owner: NodeId,
        key: Bytes,
        record: &Record,
        then: AfterPersist,
    ) -> Result<Applied, ReplicaError> {
        self.changed = true;
        if !ctx.ring.contains(owner) {
            // The owner left the ring: nobody will ever take this hint, so refuse it rather than
            // acknowledge a copy that cannot count.
            return Err(ReplicaError::Busy);
        }
        let stored = hint_key(owner, &key);
        let size = stored.len() as u64 + record.value_bytes() as u64;
        let cluster = &ctx.config.cluster;
        // Looked at, not created: a refused hint must not leave an empty queue behind.
        let (held, held_bytes, fresh) = self.queues.get(&owner).map_or((0, 0, true), |queue| {
            (
                queue.keys.len(),
                queue.bytes,
                !queue.keys.contains_key(&stored),
            )
        });
        if fresh
            && (held >= cluster.hints_per_target_max
                || held_bytes + size > cluster.hint_bytes_per_target_max)
        {
            self.stats.overflowed += 1;
            return Err(ReplicaError::Busy);
        }
        let local = ctx
            .storage
            .get(&stored)
            .map_err(|_| ReplicaError::Storage)?;
        if let Some(merged) = merge_into(local.as_ref(), record) {
            if ctx.durability.is_poisoned() {
                return Err(ReplicaError::Storage);
            }
            ctx.storage
                .put(stored.clone(), merged)
                .map_err(|_| ReplicaError::Storage)?;
            ctx.durability.staged_one();
        }
        let now = ctx.last_monotonic;
        let queue = self.queues.entry(owner).or_default();
        // A newer write merged into an older hint keeps the older age: the hint's content has
        // been waiting since then.
        let entry = match queue.keys.get(&stored) {
            Some(old) => HintEntry {
                bytes: size,
                ..*old
            },
            None => HintEntry {
                bytes: size,
                stored_at: Some(now),
                aged: false,
            },
        };
        let old = queue.keys.insert(stored, entry).map_or(0, |e| e.bytes);
        queue.bytes = queue.bytes + size - old;
        self.stats.stored += 1;
        ctx.wait_durable(then)
    }

    /// A coordinator asked this node to keep a hint for `owner`: acknowledged as a replica's
    /// write is, once the hint is durable.
    pub(super) fn serve_hinted_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key: Bytes,
        record: Record,
        owner: NodeId,
    ) {
        self.changed = true;
        ctx.observe_record(Some(&record));
        let key_digest = key_digest(&key);
        let then = AfterPersist::AckRemote {
            to: from,
            op,
            key_digest,
        };
        let stored = self.store(ctx, owner, key, &record, then);
        Replica::acknowledge(ctx, from, op, key_digest, stored);
    }

    /// Arms the replay timer lazily (only sloppy quorums hand hints off).
    pub(super) fn arm_replay<S>(ctx: &mut Context<S>, now: Now) {
        if ctx.config.cluster.sloppy_quorum && !ctx.timers.is_armed(Timer::HintReplay) {
            let interval = ctx.config.cluster.hint_replay_interval_ms;
            ctx.timers.arm(
                Timer::HintReplay,
                now.monotonic
                    .saturating_add(Duration::from_millis(interval)),
            );
        }
    }

    /// One replay round: up to `hint_replays_per_round` hints go to their owners (or, for an
    /// owner that left the ring, to a current replica of the key). `membership` is the failure
    /// detector's view: an owner judged down is skipped this round.
    pub(super) fn replay<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        membership: Option<&Membership>,
        now: Now,
    ) {
        self.changed = true;
        let interval = ctx.config.cluster.hint_replay_interval_ms;
        ctx.timers.arm(
            Timer::HintReplay,
            now.monotonic
                .saturating_add(Duration::from_millis(interval)),
        );
        self.round += 1;
        self.forget_stale_replays();
        if !ctx.incarnation_durable() {
            return; // replays allocate operation ids; the next round will do
        }
        let mut budget = ctx.config.cluster.hint_replays_per_round;
        if crate::buggify!(ctx.faults, &mut ctx.rng, "hints/replay-batch") {
            // A smaller batch this round: the rest wait, as they would behind a full budget.
            budget = budget.min(1);
        }
        let mut owners: Vec<NodeId> = self.queues.keys().copied().collect();
        // Owners and each owner's hints in another order: no order is promised (aged first is
        // a preference), and delivery must not depend on one.
        let reorder = crate::buggify!(ctx.faults, &mut ctx.rng, "hints/replay-order");
        if reorder {
            owners.reverse();
        }
        let age_max = Duration::from_millis(ctx.config.cluster.hint_age_max_ms);
        for owner in owners {
            let mut candidates = self.age_hints(owner, now, age_max, budget);
            if reorder {
                candidates.reverse();
            }
            let departed = !ctx.ring.contains(owner);
            // The failure detector says it is down: replaying now is wasted; its hints wait.
            if !departed && is_down(membership, owner) {
                continue;
            }
            for stored in candidates {
                if !self.replay_one(ctx, membership, owner, departed, stored) {
                    continue;
                }
                budget -= 1;
                if budget == 0 {
                    return;
                }
            }
        }
    }

    /// Replies to replays older than two rounds are not coming (the target was unreachable):
    /// forget them, so the hints are sent again.
    fn forget_stale_replays(&mut self) {
        let round = self.round;
        let stale: Vec<OperationId> = self
            .replays
            .iter()
            .filter(|(_, replay)| replay.round + 2 <= round)
            .map(|(&op, _)| op)
            .collect();
        for op in stale {
            if let Some(replay) = self.replays.remove(&op) {
                self.in_flight.remove(&replay.stored);
            }
        }
    }

    /// Replays the hint stored under `stored` for `owner`; false when nothing was sent (the
    /// hint vanished from storage, or every replica of a departed owner's key is down).
    fn replay_one<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        membership: Option<&Membership>,
        owner: NodeId,
        departed: bool,
        stored: Bytes,
    ) -> bool {
        let Some((_, key)) = parse_hint_key(&stored) else {
            return false;
        };
        let record = match ctx.storage.get(&stored) {
            Ok(Some(record)) => record,
            _ => {
                self.forget_hint(owner, &stored);
                return false;
            }
        };
        let target = if departed {
            let replicas = ctx
                .ring
                .preference_list(&key, usize::from(ctx.config.cluster.n));
            let down: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|&r| is_down(membership, r))
                .collect();
            match rehome_target(&replicas, ctx.id, &down, self.round) {
                Some(target) => target,
                None => return false,
            }
        } else {
            owner
        };
        let op = ctx.allocate_operation();
        let replay = Replay {
            target,
            stored: stored.clone(),
            round: self.round,
            delivered: record.clone(),
        };
        self.replays.insert(op, replay);
        self.in_flight.insert(stored);
        self.stats.replayed += 1;
        if target == ctx.id {
            self.rehome_here(ctx, op, key, &record);
        } else {
            ctx.send(target, Message::Write { op, key, record });
        }
        true
    }

    /// Applies a hint whose owner left the ring as this node's own copy of the key (it replicates
    /// the key now); the hint goes once that copy is durable, through the same reply path as a
    /// replay (`on_replay_reply` from this node, with no key digest).
    fn rehome_here<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        op: OperationId,
        key: Bytes,
        record: &Record,
    ) {
        let id = ctx.id;
        match ctx.apply(key, record, AfterPersist::AckLocal(op)) {
            Ok(Applied::Now) => {
                self.on_replay_reply(ctx, id, op, None, true);
            }
            Ok(Applied::Pending) => {}
            Err(_) => {
                self.on_replay_reply(ctx, id, op, None, false);
            }
        }
    }

    /// Ages `owner`'s hints (counting the ones that just passed `age_max`) and picks up to
    /// `budget` not in flight for replay: aged ones first, then the rest, each in key order.
    fn age_hints(
        &mut self,
        owner: NodeId,
        now: Now,
        age_max: Duration,
        budget: usize,
    ) -> Vec<Bytes> {
        let Some(queue) = self.queues.get_mut(&owner) else {
            return Vec::new();
        };
        let (mut aged, mut young) = (Vec::new(), Vec::new());
        for (stored, entry) in queue.keys.iter_mut() {
            let stored_at = *entry.stored_at.get_or_insert(now.monotonic);
            let old = hint_aged(stored_at, now.monotonic, age_max);
            if old && !entry.aged {
                entry.aged = true;
                self.stats.aged += 1;
            }
            if self.in_flight.contains(stored) {
                continue;
            }
            let pick = if old { &mut aged } else { &mut young };
            if pick.len() < budget {
                pick.push(stored.clone());
            }
        }
        aged.extend(young);
        aged.truncate(budget);
        aged
    }

    /// The replay's target answered: delete the hint once it holds it durably — but only if the
    /// hint still holds what was delivered. A newer write for the same owner and key may have been
    /// merged into the hint while the replay was in flight; deleting it then would lose an
    /// acknowledged write (found by the simulator: partition-sloppy, seed 639).
    ///
    /// Only the target's reply about the hint's key counts: the owner's, or for an owner that left
    /// the ring the current replica it was re-homed to (`key_digest` `None`: this node's own copy,
    /// which only a hint re-homed here is). Any other reply carrying the id is stale and leaves
    /// the replay waiting. Returns whether `op` was a replay's id (so the reply is consumed).
    pub(super) fn on_replay_reply<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key_digest: Option<u64>,
        ok: bool,
    ) -> bool {
        self.changed = true;
        let Some(replay) = self.replays.get(&op) else {
            return false;
        };
        let about_key = match key_digest {
            None => replay.target == ctx.id,
            Some(digest) => parse_hint_key(&replay.stored)
                .is_some_and(|(_, key)| digest == crate::id::key_digest(&key)),
        };
        if from != replay.target || !about_key {
            ctx.stats.stale_replies += 1;
            return true;
        }
        let Some(replay) = self.replays.remove(&op) else {
            return false;
        };
        self.in_flight.remove(&replay.stored);
        let Some((owner, _)) = parse_hint_key(&replay.stored) else {
            return true;
        };
        if ok {
            let current = ctx.storage.get(&replay.stored).ok().flatten();
            if current.as_ref() == Some(&replay.delivered) {
                self.stats.delivered += 1;
                if replay.target != owner {
                    self.stats.rehomed += 1;
                }
                self.delete_hint(ctx, owner, &replay.stored);
            }
        }
        true
    }

    fn delete_hint<S: Storage>(&mut self, ctx: &mut Context<S>, owner: NodeId, stored: &Bytes) {
        if ctx.storage.delete(stored).is_ok() {
            ctx.durability.staged_one();
        }
        self.forget_hint(owner, stored);
    }

    fn forget_hint(&mut self, owner: NodeId, stored: &Bytes) {
        if let Some(queue) = self.queues.get_mut(&owner) {
            if let Some(entry) = queue.keys.remove(stored) {
                queue.bytes -= entry.bytes;
            }
            if queue.keys.is_empty() {
                self.queues.remove(&owner);
            }
        }
    }

    /// A new ring was adopted: replays in flight to a node that is no longer a member will never
    /// be answered, so they are forgotten now and their hints re-homed by the next round (see the
    /// module doc) rather than two rounds later.
    pub(super) fn adopt_ring(&mut self, ring: &Ring) {
        self.changed = true;
        let gone: Vec<OperationId> = self
            .replays
            .iter()
            .filter(|(_, replay)| !ring.contains(replay.target))
            .map(|(&op, _)| op)
            .collect();
        for op in gone {
            if let Some(replay) = self.replays.remove(&op) {
                self.in_flight.remove(&replay.stored);
            }
        }
    }

    /// Hints waiting, per owner: (count, bytes).
    pub(super) fn pending(&self) -> BTreeMap<NodeId, (usize, u64)> {
        self.queues
            .iter()
            .map(|(&owner, q)| (owner, (q.keys.len(), q.bytes)))
            .collect()
    }

    /// The ids of the replays awaiting an answer.
    pub(super) fn replay_ids(&self) -> impl Iterator<Item = OperationId> + '_ {
        self.replays.keys().copied()
    }

    /// Whether an input may have changed the store since [`HintStore::clear_changed`].
    pub(super) fn changed(&self) -> bool {
        self.changed
    }

    /// Forgets the inputs so far (the invariants were checked after them).
    pub(super) fn clear_changed(&mut self) {
        self.changed = false;
    }

    /// Internal consistency; panics only on a bug in this crate. Paired: a hint is in flight
    /// exactly when one replay carries it, and that hint is still queued for its owner (a hint
    /// is deleted only after its replay is answered); each queue's byte count is the sum of
    /// its entries and holds only its owner's hints.
    pub(super) fn check_invariants(&self) {
        let replaying: BTreeSet<&Bytes> = self.replays.values().map(|r| &r.stored).collect();
        assert_eq!(
            replaying.len(),
            self.replays.len(),
            "at most one replay per hint at a time"
        );
        assert!(
            self.in_flight.iter().eq(replaying.iter().copied()),
            "hints in flight are exactly the hints of replays awaiting an answer"
        );
        for replay in self.replays.values() {
            assert!(replay.round <= self.round, "a replay from a future round");
            let queued = parse_hint_key(&replay.stored)
                .and_then(|(owner, _)| self.queues.get(&owner))
                .is_some_and(|queue| queue.keys.contains_key(&replay.stored));
            assert!(queued, "a hint in flight is still in its owner's queue");
        }
        for (&owner, queue) in &self.queues {
            let bytes: u64 = queue.keys.values().map(|e| e.bytes).sum();
            assert_eq!(bytes, queue.bytes, "a queue's bytes are its hints' bytes");
            for stored in queue.keys.keys() {
                let parsed = parse_hint_key(stored).map(|(o, _)| o);
                assert_eq!(parsed, Some(owner), "a hint queued under another owner");
            }
        }
        assert!(self.stats.delivered <= self.stats.replayed);
        assert!(self.stats.rehomed <= self.stats.delivered);
    }
}

/// Keys in flight for replay (kept beside the queues).
pub(super) type InFlightHints = BTreeSet<Bytes>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::node::store::test_context;
    use crate::node::Output;
    use crate::storage::MemStorage;

    use crate::node::store::test_record as record;

    use crate::node::store::test_now as at;

    /// Completes what is staged (memory storage) and returns the writes sent: (to, op, key).
    fn settle(ctx: &mut Context<MemStorage>) -> Vec<(NodeId, OperationId, Bytes)> {
        if let Some(token) = ctx.durability.take_persist_request() {
            ctx.storage.sync().expect("memory sync");
            ctx.durability.persisted(token);
        }
        let mut sent = Vec::new();
        while let Some(output) = ctx.outputs.pop_front() {
            if let Output::Send {
                to,
                message: Message::Write { op, key, .. },
            } = output
            {
                sent.push((to, op, key));
            }
        }
        sent
    }

    fn queued(hints: &HintStore, owner: NodeId) -> usize {
        hints.pending().get(&owner).map_or(0, |&(count, _)| count)
    }

    #[test]
    fn a_hint_is_deleted_only_once_its_owner_holds_what_was_delivered() {
        let mut ctx = test_context(0, 3, ClusterConfig::default());
        let mut hints = HintStore::default();
        let (owner, key) = (NodeId(1), Bytes::from_static(b"k"));
        let digest = key_digest(&key);
        let stored = hints.store(
            &mut ctx,
            owner,
            key.clone(),
            &record(1),
            AfterPersist::Nothing,
        );
        assert!(stored.is_ok());
        settle(&mut ctx);
        hints.replay(&mut ctx, None, at(1));
        let sent = settle(&mut ctx);
        assert_eq!(sent.len(), 1, "{sent:?}");
        let (to, op, sent_key) = sent[0].clone();
        assert_eq!((to, sent_key), (owner, key.clone()));
        hints.check_invariants();
        // Another node's reply carrying the id is stale: the replay still waits.
        assert!(hints.on_replay_reply(&mut ctx, NodeId(2), op, Some(digest), true));
        assert_eq!(ctx.stats.stale_replies, 1);
        hints.check_invariants();
        // A newer write merged into the hint while its replay was in flight: the owner's
        // acknowledgement covers only the older record, so the hint stays (partition-sloppy 639).
        let merged = hints.store(
            &mut ctx,
            owner,
            key.clone(),
            &record(2),
            AfterPersist::Nothing,
        );
        assert!(merged.is_ok());
        assert!(hints.on_replay_reply(&mut ctx, owner, op, Some(digest), true));
        assert_eq!((queued(&hints, owner), hints.stats.delivered), (1, 0));
        hints.check_invariants();
        // The next round replays the newer record; its acknowledgement deletes the hint.
        hints.replay(&mut ctx, None, at(600));
        let sent = settle(&mut ctx);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(hints.on_replay_reply(&mut ctx, owner, sent[0].1, Some(digest), true));
        assert_eq!((queued(&hints, owner), hints.stats.delivered), (0, 1));
        assert_eq!(ctx.storage.get(&hint_key(owner, &key)).expect("read"), None);
        // An id that is not a replay's is left to the coordinator.
        assert!(!hints.on_replay_reply(&mut ctx, owner, op, Some(digest), true));
        hints.check_invariants();
    }

    #[test]
    fn a_full_queue_refuses_a_new_hint_but_still_merges_into_one_it_holds() {
        let cluster = ClusterConfig {
            hints_per_target_max: 1,
            ..ClusterConfig::default()
        };
        let mut ctx = test_context(0, 3, cluster);
        let mut hints = HintStore::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        let then = AfterPersist::Nothing;
        assert!(hints
            .store(&mut ctx, NodeId(1), a.clone(), &record(1), then)
            .is_ok());
        let refused = hints.store(&mut ctx, NodeId(1), b, &record(1), then);
        assert!(matches!(refused, Err(ReplicaError::Busy)));
        assert_eq!(hints.stats.overflowed, 1);
        assert!(hints
            .store(&mut ctx, NodeId(1), a, &record(2), then)
            .is_ok());
        // Another owner has its own bound; a node outside the ring gets no hint at all.
        let other = hints.store(
            &mut ctx,
            NodeId(2),
            Bytes::from_static(b"a"),
            &record(1),
            then,
        );
        assert!(other.is_ok());
        let outsider = hints.store(
            &mut ctx,
            NodeId(9),
            Bytes::from_static(b"a"),
            &record(1),
            then,
        );
        assert!(matches!(outsider, Err(ReplicaError::Busy)));
        assert_eq!(
            (queued(&hints, NodeId(1)), queued(&hints, NodeId(2))),
            (1, 1)
        );
        hints.check_invariants();
    }

    #[test]
    fn after_a_failed_sync_a_hint_is_refused_rather_than_left_waiting_for_ever() {
        let mut ctx = test_context(0, 3, ClusterConfig::default());
        let mut hints = HintStore::default();
        let key = Bytes::from_static(b"a");
        let then = AfterPersist::Nothing;
        let staged = hints.store(&mut ctx, NodeId(1), key.clone(), &record(1), then);
        assert!(matches!(staged, Ok(Applied::Pending)), "{staged:?}");
        let _refused_waiters = ctx.durability.poison();
        // The same record again: nothing to stage, but nothing will ever be durable either.
        let again = hints.store(&mut ctx, NodeId(1), key, &record(1), then);
        assert!(matches!(again, Err(ReplicaError::Storage)), "{again:?}");
    }

    #[test]
    fn a_refused_hint_leaves_no_queue_behind() {
        let cluster = ClusterConfig {
            hint_bytes_per_target_max: 1,
            ..ClusterConfig::default()
        };
        let mut ctx = test_context(0, 3, cluster);
        let mut hints = HintStore::default();
        let key = Bytes::from_static(b"a");
        let refused = hints.store(&mut ctx, NodeId(1), key, &record(1), AfterPersist::Nothing);
        assert!(matches!(refused, Err(ReplicaError::Busy)));
        assert_eq!(hints.stats.overflowed, 1);
        assert!(hints.pending().is_empty(), "{:?}", hints.pending());
    }

    #[test]
    fn a_replay_to_an_owner_that_left_the_ring_is_forgotten_and_the_hint_rehomed() {
        let mut ctx = test_context(0, 3, ClusterConfig::default());
        let mut hints = HintStore::default();
        let (owner, key) = (NodeId(1), Bytes::from_static(b"k"));
        let stored = hints.store(
            &mut ctx,
            owner,
            key.clone(),
            &record(1),
            AfterPersist::Nothing,
        );
        assert!(stored.is_ok());
        settle(&mut ctx);
        hints.replay(&mut ctx, None, at(1));
        assert_eq!(settle(&mut ctx).len(), 1);
        ctx.ring.remove_node(owner).expect("a member");
        hints.adopt_ring(&ctx.ring);
        assert!(hints.replays.is_empty(), "its answer will never come");
        hints.check_invariants();
        // The next round re-homes it to a current replica of the key (never the departed owner),
        // or applies it here as this node's own copy.
        hints.replay(&mut ctx, None, at(600));
        let sent = settle(&mut ctx);
        assert_eq!(hints.stats.replayed, 2);
        assert!(sent.iter().all(|&(to, _, _)| to != owner), "{sent:?}");
        hints.check_invariants();
    }

    #[test]
    #[should_panic(expected = "hints in flight are exactly")]
    fn a_hint_in_flight_without_its_replay_is_caught() {
        let mut hints = HintStore::default();
        hints.in_flight.insert(hint_key(NodeId(1), b"k"));
        hints.check_invariants();
    }

    #[test]
    fn hint_keys_round_trip_and_sort_by_owner() {
        let a = hint_key(NodeId(1), b"zz");
        let b = hint_key(NodeId(2), b"aa");
        assert!(a < b);
        assert_eq!(
            parse_hint_key(&a),
            Some((NodeId(1), Bytes::from_static(b"zz")))
        );
        assert_eq!(parse_hint_key(b"plain"), None);
    }

    #[test]
    fn hint_age_is_judged_on_the_storing_nodes_monotonic_clock() {
        let age_max = Duration::from_millis(3_000);
        let stored = Instant::from_nanos(5_000_000_000);
        assert!(!hint_aged(stored, stored, age_max));
        assert!(!hint_aged(
            stored,
            Instant::from_nanos(8_000_000_000),
            age_max
        ));
        assert!(hint_aged(
            stored,
            Instant::from_nanos(8_000_000_001),
            age_max
        ));
        // A clock that seems to run backwards (never on a monotonic clock) ages nothing.
        assert!(!hint_aged(stored, Instant::from_nanos(0), age_max));
    }

    #[test]
    fn a_departed_owners_hint_goes_here_if_this_node_replicates_the_key_else_to_a_live_replica() {
        let replicas = [NodeId(3), NodeId(1), NodeId(4)];
        // This node replicates the key: its own copy, whatever the round or the detector says.
        assert_eq!(
            rehome_target(&replicas, NodeId(1), &[NodeId(1)], 7),
            Some(NodeId(1))
        );
        // Otherwise the live replicas in turn, round by round.
        let me = NodeId(0);
        let turns: Vec<Option<NodeId>> = (0..4)
            .map(|round| rehome_target(&replicas, me, &[NodeId(1)], round))
            .collect();
        assert_eq!(
            turns,
            vec![
                Some(NodeId(3)),
                Some(NodeId(4)),
                Some(NodeId(3)),
                Some(NodeId(4))
            ]
        );
        // Every replica judged down, or none at all: the hint waits.
        assert_eq!(rehome_target(&replicas, me, &replicas, 0), None);
        assert_eq!(rehome_target(&[], me, &[], 0), None);
    }

    #[test]
    fn fallback_is_the_next_uninvolved_node_along_the_ring() {
        let walk = [NodeId(3), NodeId(1), NodeId(4), NodeId(0), NodeId(2)];
        assert_eq!(
            choose_fallback(&walk, &[NodeId(3), NodeId(1), NodeId(4)]),
            Some(NodeId(0))
        );
        assert_eq!(choose_fallback(&walk, &walk), None);
    }
}
