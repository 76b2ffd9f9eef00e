//! Keeping the `linearizable` level (ABD) safe across ring changes.
//!
//! ABD is safe because every read majority meets every completed write majority. A ring change
//! breaks that: a new replica starts empty, rack-aware placement can move two of a key's three
//! replicas at once, and nodes adopt a change at different times. Two mechanisms restore it:
//!
//! - **Fencing by ring epoch.** An epoch is a fingerprint of the ring a node holds. Every
//!   linearizable read and write carries the epoch its coordinator started on, and a replica on
//!   another ring refuses it (`ReplicaError::RingMismatch`, counted) without applying it. So a
//!   replica that has adopted a ring never again helps an operation of an older one complete.
//! - **Readiness.** A replica counts toward linearizable quorums for a range only once it holds
//!   the range (`ReplicaError::NotReady` otherwise, counted; a refused write is not applied). On
//!   adopting a ring that is its previous ring plus exactly one join, leave or removal, a replica
//!   stays ready for a range if it was a ready replica of every previous range overlapping it and
//!   the range has at least as many replicas as before (so the carried replicas of any majority
//!   are a majority of the previous set). Any other range is pulled: it becomes ready once its
//!   records have been merged from (a) a majority of its current replicas that are ready on the
//!   same ring, or (b) for every overlapping previous range, a majority of its previous replicas
//!   that hold the new ring and were ready for it when they adopted the new ring directly from the
//!   previous one (the puller counts itself when it was one of them). Readiness is recorded only
//!   after the merged records and the record saying so are durable.
//!
//! Why that is enough (the argument the tests and scenarios check): a completed write was
//! acknowledged by a majority of ready replicas on its ring. A read on the same ring meets it as
//! in plain ABD. A read on the next ring asks ready replicas only: either all of them were carried
//! (then they are a majority of the previous set, and each acknowledged the write before it
//! adopted the new ring, after which it refuses the old one), or one of them pulled from a majority
//! of the previous set after each of those had adopted the new ring, so that majority meets the
//! write's and the pull saw it. Earlier rings follow by induction, because every vouching set is
//! itself a majority of ready replicas on its ring. Conversely, once an operation on the new ring
//! completes, a majority of the previous replicas hold the new ring (carried ones directly, or the
//! ones a pull required), so no operation of the previous ring can gather a majority again.
//! Answering a pull, and acknowledging a write, happens only once the answerer's ring is durable,
//! so a crash cannot take a replica back to a ring it had already left. Two concurrent changes of
//! the same ring (gossip ties) each need a majority of the previous replicas adopting them
//! directly, and a replica adopts at most one successor directly, so at most one of them can ever
//! serve a key.
//!
//! Restarts: the epoch and the ranges not ready are recorded under [`HANDOVER_KEY`] whenever
//! they change (once the node has seen linearizable traffic, or from the start when that is the
//! cluster's level). A restart onto the recorded ring restores them; onto any other ring the node
//! is ready nowhere. With no record at all the node takes itself for a fresh member of the ring it
//! is started with (ready everywhere): true for a first start, and with gossip a node that has a
//! ring newer than the seed but no record is treated as ready nowhere. Without gossip the driver
//! must not restart a node whose record was never made durable onto a ring it never held; the
//! simulator restarts onto the current ring, so that case needs a crash before the first sync
//! after a change.
//!
//! Replaced machines: a node started on an empty disk in place of a member's lost one holds
//! nothing, whatever ring it starts on, and its store cannot tell it from a first start. The
//! driver says so ([`Node::start_as_replacement`]) and the node is ready nowhere until it has
//! pulled, exactly as after a skipped ring.
//!
//! What it costs: while a range is being pulled, linearizable operations on keys whose ready
//! replicas are fewer than a majority fail (`Unavailable` or `Indeterminate`, honestly), and a
//! node that skips a ring (gossip delivering two changes at once, or a restart onto a ring other
//! than the one it recorded) is not ready anywhere until it has pulled from current replicas.
//! Levels other than `linearizable` ignore readiness and epochs.

use super::context::Context;
use super::durability::AfterPersist;
use super::timers::Timer;
use crate::codec;
use crate::id::{NodeId, OperationId};
use crate::message::{HandoverPage, Message, ReplicaError};
use crate::ring::Ring;
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where a node keeps its handover state (reserved: never replicated or served).
pub const HANDOVER_KEY: &[u8] = b"\xff\xffmeta/handover";

/// Time between two rounds of pull requests while some range is not ready.
const PULL_INTERVAL_MS: u64 = 200;

/// Keys scanned to answer one pull page.
const PAGE_KEYS_MAX: usize = 256;

/// Value bytes in one pull page (the page ends early past this).
const PAGE_BYTES_MAX: usize = 1 << 20;

/// Counters a driver may report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandoverStats {
    /// Linearizable requests refused because the coordinator holds another ring.
    pub refused_ring_mismatch: u64,
    /// Linearizable requests refused because this replica does not hold the range yet.
    pub refused_not_ready: u64,
    /// Pull pages requested.
    pub pulls_sent: u64,
    /// Records merged from pull pages.
    pub records_pulled: u64,
    /// Ranges that became ready by pulling.
    pub ranges_ready: u64,
    /// Ring adoptions that were not a single change from the ring held (readiness lost).
    pub rings_skipped: u64,
}

/// The fingerprint of a ring, its change count included: equal rings place every key alike and
/// have the same history length, so they are one epoch. (Two different histories of equal length
/// ending in the same ring would share an epoch; with gossip that takes concurrent operator
/// changes that undo each other, which the ring log's tie-break discards on all but one side.)
pub fn ring_epoch(ring: &Ring) -> u64 {
    ring.epoch()
}

/// What survives a restart.
#[derive(Serialize, Deserialize)]
struct PersistedHandover {
    epoch: u64,
    not_ready: Vec<u32>,
}

/// The ring held just before the current one, when the current one is it plus one change.
#[derive(Clone, Debug)]
pub(super) struct Previous {
    epoch: u64,
    ring: Ring,
    not_ready: BTreeSet<u32>,
}

/// A pull in progress from one answerer: its ranges are fixed for the whole scan.
#[derive(Clone, Debug)]
struct Session {
    ranges: Vec<u32>,
    start: Bytes,
    first: bool,
    ready_now: BTreeSet<u32>,
    ready_before: BTreeSet<u32>,
}

/// The readiness mechanism's state.
#[derive(Debug)]
pub(super) struct Handover {
    epoch: u64,
    /// Ranges of the held ring this node replicates but does not count for yet.
    not_ready: BTreeSet<u32>,
    previous: Option<Previous>,
    /// The current epoch's record is durable (this node may vouch on it).
    durable: bool,
    epoch_mark: u64,
    next_mark: u64,
    /// Ranges pulled whole, ready once the record with this mark is durable.
    pending: BTreeMap<u32, u64>,
    sessions: BTreeMap<NodeId, Session>,
    vouched_now: BTreeMap<u32, BTreeSet<NodeId>>,
    vouched_before: BTreeMap<u32, BTreeSet<NodeId>>,
    /// Linearizable traffic was seen (or is the cluster's level): persist and pull.
    active: bool,
    /// A handover record was found in storage at start.
    recorded: bool,
    stats: HandoverStats,
    /// Whether a method that can change the state the invariants read ran since
    /// [`Handover::clear_changed`] (each `&mut self` method sets it; the ranges replicated, the
    /// invariants' other input, change only with a ring, which [`Handover::adopt`] sees first):
    /// the node re-checks them only then.
    changed: bool,
}

impl Handover {
    /// A node starting on `ring`, ready everywhere (a fresh cluster member).
    pub(super) fn new(ring: &Ring, active: bool) -> Self {
        Handover {
            epoch: ring_epoch(ring),
            not_ready: BTreeSet::new(),
            previous: None,
            durable: true,
            epoch_mark: 0,
            next_mark: 1,
            pending: BTreeMap::new(),
            sessions: BTreeMap::new(),
            vouched_now: BTreeMap::new(),
            vouched_before: BTreeMap::new(),
            active,
            recorded: false,
            stats: HandoverStats::default(),
            changed: true,
        }
    }

    /// The epoch of the ring held.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    fn forget_pulls(&mut self) {
        self.changed = true;
        self.pending.clear();
        self.sessions.clear();
        self.vouched_now.clear();
        self.vouched_before.clear();
    }

    /// Whether the state may have changed since [`Handover::clear_changed`].
    pub(super) fn changed(&self) -> bool {
        self.changed
    }

    /// Forgets the changes so far (the invariants were checked after them).
    pub(super) fn clear_changed(&mut self) {
        self.changed = false;
    }

    /// Internal consistency; panics only on a bug in this crate.
    pub(super) fn check_invariants(&self, my_ranges: &[(u32, Vec<NodeId>)]) {
        for range in &self.not_ready {
            assert!(
                my_ranges.binary_search_by_key(range, |(r, _)| *r).is_ok(),
                "a range not ready is a range this node replicates"
            );
        }
        for (range, &mark) in &self.pending {
            assert!(
                self.not_ready.contains(range),
                "pending ranges are not ready yet"
            );
            assert!(
                mark < self.next_mark,
                "a pending range waits for a record already staged"
            );
        }
        assert!(
            self.epoch_mark < self.next_mark,
            "marks are handed out in order"
        );
        if let Some(previous) = &self.previous {
            assert_ne!(
                previous.epoch, self.epoch,
                "the previous ring is another ring"
            );
        }
    }

    /// Linearizable traffic: from now on the state is persisted and missing ranges are pulled.
    pub(super) fn activate<S: Storage>(&mut self, ctx: &mut Context<S>) {
        self.changed = true;
        if self.active {
            return;
        }
        self.active = true;
        if !self.not_ready.is_empty() || self.previous.is_some() {
            self.persist(ctx);
            self.arm(ctx, ctx.last_monotonic);
        }
    }

    /// Stages the state (ranges pending promotion counted as ready: they become so exactly when
    /// this record is durable) and arranges to be told when it is durable.
    pub(super) fn persist<S: Storage>(&mut self, ctx: &mut Context<S>) {
        self.changed = true;
        let mark = self.next_mark;
        self.next_mark += 1;
        let state = PersistedHandover {
            epoch: self.epoch,
            not_ready: self
                .not_ready
                .iter()
                .copied()
                .filter(|r| !self.pending.contains_key(r))
                .collect(),
        };
        if !self.durable {
            self.epoch_mark = mark;
        }
        let record = Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: mark,
                node: ctx.id,
                nonce: 0,
            },
            value: Some(Bytes::from(codec::encode_value(&state))),
            expires_at_micros: None,
        });
        if ctx.stage(Bytes::from_static(HANDOVER_KEY), record).is_err() {
            return; // storage failed: nothing becomes ready or durable
        }
        if let Ok(super::replica::Applied::Now) =
            ctx.wait_durable(AfterPersist::HandoverDurable(mark))
        {
            self.on_durable(mark);
        }
    }

    /// The handover record staged with `mark` (and everything before it) is durable.
    pub(super) fn on_durable(&mut self, mark: u64) {
        self.changed = true;
        let handover = self;
        if mark >= handover.epoch_mark {
            handover.durable = true;
        }
        let promoted: Vec<u32> = handover
            .pending
            .iter()
            .filter(|(_, &m)| m <= mark)
            .map(|(&r, _)| r)
            .collect();
        for range in promoted {
            handover.pending.remove(&range);
            handover.not_ready.remove(&range);
            handover.stats.ranges_ready += 1;
        }
    }

    /// Whether this node counts for `key` in linearizable quorums on its ring.
    pub(super) fn ready_for<S: Storage>(&self, ctx: &Context<S>, key: &[u8]) -> bool {
        let Some(range) = ctx.ring.range_index_for_hash(Ring::key_hash(key)) else {
            return false;
        };
        ctx.my_ranges
            .binary_search_by_key(&range, |(r, _)| *r)
            .is_ok()
            && !self.not_ready.contains(&range)
    }

    /// Fencing and readiness for a linearizable request on `key` started on `epoch` (counted when
    /// refused).
    pub(super) fn lin_admit<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        epoch: u64,
        key: &[u8],
    ) -> Result<(), ReplicaError> {
        self.changed = true;
        self.activate(ctx);
        let result = admit(self.epoch, epoch, self.ready_for(ctx, key));
        match result {
            Err(ReplicaError::RingMismatch) => self.stats.refused_ring_mismatch += 1,
            Err(ReplicaError::NotReady) => self.stats.refused_not_ready += 1,
            _ => {}
        }
        result
    }

    pub(super) fn arm<S: Storage>(&mut self, ctx: &mut Context<S>, now: Instant) {
        self.changed = true;
        if self.active && !self.not_ready.is_empty() {
            if !ctx.timers.is_armed(Timer::HandoverPull) {
                ctx.timers.arm(Timer::HandoverPull, now);
            }
        } else {
            ctx.timers.disarm(Timer::HandoverPull);
        }
    }
}

/// Fencing and readiness as one decision: may a replica on `mine` that is `ready` for the key
/// serve a linearizable request from a coordinator that started on `theirs`?
pub(super) fn admit(mine: u64, theirs: u64, ready: bool) -> Result<(), ReplicaError> {
    if mine != theirs {
        Err(ReplicaError::RingMismatch)
    } else if !ready {
        Err(ReplicaError::NotReady)
    } else {
        Ok(())
    }
}

/// A strict majority of `count` replicas.
pub(super) fn majority(count: usize) -> usize {
    count / 2 + 1
}

/// Whether `ring` is `previous` changed by exactly one join, leave or removal. Remembered by
/// the ring for the previous version its holders adopt it from (see [`Ring::follows`]).
pub(super) fn is_direct_successor(previous: &Ring, ring: &Ring) -> bool {
    ring.follows(previous, || replays_one_change(previous, ring))
}

/// [`is_direct_successor`], decided: the one change between the member lists replayed on a copy
/// of `previous` gives `ring`.
fn replays_one_change(previous: &Ring, ring: &Ring) -> bool {
    let before: BTreeSet<NodeId> = previous.members().iter().map(|m| m.id).collect();
    let after: BTreeSet<NodeId> = ring.members().iter().map(|m| m.id).collect();
    let added: Vec<_> = ring
        .members()
        .iter()
        .filter(|m| !before.contains(&m.id))
        .collect();
    let removed: Vec<NodeId> = before.difference(&after).copied().collect();
    let mut replay = previous.clone();
    let applied = match (added.as_slice(), removed.as_slice()) {
        ([member], []) => replay.add_node(member.id, member.location.clone()),
        ([], [id]) => replay.remove_node(*id),
        _ => return false,
    };
    applied.is_ok() && replay == *ring
}

/// An entry of a sorted token list: a bare token, or a ring's own entry (token, member index),
/// which [`overlapping_ranges`] reads in place rather than from a copy of every token.
pub(super) trait TokenEntry: Copy {
    /// The token.
    fn token(self) -> u64;
}

impl TokenEntry for u64 {
    fn token(self) -> u64 {
        self
    }
}

impl TokenEntry for (u64, u32) {
    fn token(self) -> u64 {
        self.0
    }
}

/// The ranges of a ring with sorted tokens `previous` that overlap range `index` of a ring with
/// sorted tokens `current` (range `i` is `(token i-1, token i]`, wrapping). A pure policy.
pub(super) fn overlapping_ranges<P: TokenEntry, C: TokenEntry>(
    previous: &[P],
    current: &[C],
    index: u32,
) -> Vec<u32> {
    let i = index as usize;
    if previous.is_empty() || i >= current.len() {
        return Vec::new();
    }
    if current.len() == 1 {
        return (0..previous.len())
            .filter_map(|j| u32::try_from(j).ok())
            .collect();
    }
    let high = current[i].token();
    let low = current[(i + current.len() - 1) % current.len()].token();
    let mut out = BTreeSet::new();
    // The previous range containing `high`.
    out.insert(previous.partition_point(|t| t.token() < high) % previous.len());
    // Every previous token strictly inside (low, high) starts another overlapping range. The
    // tokens are sorted, so those are one run (two when the range wraps), found by search: a
    // scan of every previous token per range ran on every ring adoption of every node.
    let above_low = previous.partition_point(|t| t.token() <= low);
    let below_high = previous.partition_point(|t| t.token() < high);
    if low < high {
        out.extend(above_low..below_high.max(above_low));
    } else {
        out.extend(above_low..previous.len());
        out.extend(0..below_high);
    }
    out.into_iter()
        .filter_map(|j| u32::try_from(j).ok())
        .collect()
}

/// Whether a pull made a range ready: (a) a majority of its current replicas vouched that they
/// are ready on the same ring, or (b) every overlapping previous range (`pieces`: its replicas
/// and who vouched for it) has a majority of vouchers among its replicas. A pure policy.
pub(super) fn pull_complete(
    replicas: &[NodeId],
    vouched_now: &BTreeSet<NodeId>,
    pieces: &[(Vec<NodeId>, BTreeSet<NodeId>)],
) -> bool {
    let now = replicas.iter().filter(|r| vouched_now.contains(r)).count();
    if !replicas.is_empty() && now >= majority(replicas.len()) {
        return true;
    }
    !pieces.is_empty()
        && pieces.iter().all(|(before, vouched)| {
            !before.is_empty()
                && before.iter().filter(|r| vouched.contains(r)).count() >= majority(before.len())
        })
}

fn sorted_tokens(ring: &Ring) -> &[(u64, u32)] {
    ring.token_entries()
}

/// Whether this node replicates range `range` of its ring (`my_ranges` is sorted by range).
fn replicates(my_ranges: &[(u32, Vec<NodeId>)], range: u32) -> bool {
    my_ranges.binary_search_by_key(&range, |(r, _)| *r).is_ok()
}

/// The answer to a linearizable read this replica refused (`error` says why).
fn read_refused(op: OperationId, key: &[u8], error: ReplicaError) -> Message {
    Message::ReadReply {
        op,
        key_digest: crate::id::key_digest(key),
        record: Err(error),
    }
}

/// The answer to a linearizable write this replica refused without applying it.
fn write_refused(op: OperationId, key: &[u8], error: ReplicaError) -> Message {
    Message::WriteReply {
        op,
        key_digest: crate::id::key_digest(key),
        result: Err(error),
    }
}

impl Handover {
    /// Restores the handover state at start: the recorded one if it is for this ring, every range
    /// not ready if it is for another ring, ready everywhere with no record (a fresh member).
    pub(super) fn load<S: Storage>(&mut self, ctx: &mut Context<S>) {
        self.changed = true;
        let persisted = match ctx.storage.get(HANDOVER_KEY) {
            Ok(Some(Record::Lww(LwwRecord {
                value: Some(bytes), ..
            }))) => codec::decode_value::<PersistedHandover>(&bytes).ok(),
            _ => None,
        };
        let Some(persisted) = persisted else { return };
        self.active = true;
        self.recorded = true;
        if persisted.epoch == self.epoch {
            self.not_ready = persisted
                .not_ready
                .into_iter()
                .filter(|&r| replicates(&ctx.my_ranges, r))
                .collect();
        } else {
            self.forget_all(ctx);
        }
        self.arm(ctx, ctx.last_monotonic);
    }

    /// Nothing is known to be held: every range must be pulled (a restart onto another ring).
    pub(super) fn forget_all<S: Storage>(&mut self, ctx: &mut Context<S>) {
        self.changed = true;
        self.not_ready = ctx.my_ranges.iter().map(|(r, _)| *r).collect();
        self.previous = None;
        self.durable = false;
        self.forget_pulls();
        if self.active {
            self.persist(ctx);
        }
        self.arm(ctx, ctx.last_monotonic);
    }

    /// The node replaces a member's lost disk (see `Node::start_as_replacement`): ready nowhere,
    /// and persisted at once whatever the level.
    pub(super) fn start_as_replacement<S: Storage>(&mut self, ctx: &mut Context<S>) {
        self.changed = true;
        self.active = true;
        self.forget_all(ctx);
    }

    /// Whether a handover record was found at start (see `Node::with_membership`).
    pub(super) fn recorded(&self) -> bool {
        self.recorded
    }

    /// Counters of the handover mechanism.
    pub(super) fn stats(&self) -> &HandoverStats {
        &self.stats
    }

    /// Ranges this node replicates but does not count for in linearizable quorums yet.
    pub(super) fn ranges_not_ready(&self) -> usize {
        self.not_ready.len()
    }

    /// The ring changed from `held` to `ctx.ring` (already installed, with `my_ranges`).
    pub(super) fn adopt<S: Storage>(&mut self, ctx: &mut Context<S>, held: Ring) {
        self.changed = true;
        let epoch = ring_epoch(&ctx.ring);
        if epoch == self.epoch {
            return;
        }
        let previous = is_direct_successor(&held, &ctx.ring).then(|| Previous {
            epoch: self.epoch,
            ring: held,
            not_ready: std::mem::take(&mut self.not_ready),
        });
        if previous.is_none() {
            self.stats.rings_skipped += 1;
        }
        self.not_ready = ranges_not_carried(ctx, previous.as_ref());
        self.epoch = epoch;
        self.previous = previous;
        self.durable = false;
        self.forget_pulls();
        if self.active {
            self.persist(ctx);
            self.arm(ctx, ctx.last_monotonic);
        }
    }

    /// Admits a linearizable read of `key` started on `epoch`: true if it is to be served as a
    /// plain read; a refusal is answered (and counted) here.
    #[must_use]
    pub(super) fn admit_read<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key: &[u8],
        epoch: u64,
    ) -> bool {
        self.changed = true;
        match self.lin_admit(ctx, epoch, key) {
            Ok(()) => true,
            Err(e) => {
                ctx.send(from, read_refused(op, key, e));
                false
            }
        }
    }

    /// Admits a linearizable write, as [`Self::admit_read`]: a refused write is not applied.
    #[must_use]
    pub(super) fn admit_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key: &[u8],
        epoch: u64,
    ) -> bool {
        self.changed = true;
        match self.lin_admit(ctx, epoch, key) {
            Ok(()) => true,
            Err(e) => {
                ctx.send(from, write_refused(op, key, e));
                false
            }
        }
    }

    /// A pull round: every answerer that can help with a range not ready gets its current page
    /// request again (idempotent: a lost request or page is simply asked for once more).
    pub(super) fn handle_round<S: Storage>(&mut self, ctx: &mut Context<S>, now: Now) {
        self.changed = true;
        ctx.timers.disarm(Timer::HandoverPull);
        if !self.active || self.not_ready.is_empty() {
            return;
        }
        ctx.timers.arm(
            Timer::HandoverPull,
            now.monotonic
                .saturating_add(Duration::from_millis(PULL_INTERVAL_MS)),
        );
        let wanted = self.pull_targets(ctx);
        let epoch = self.epoch;
        let previous = self.previous.as_ref().map_or(0, |p| p.epoch);
        for (peer, ranges) in wanted {
            let session = self.sessions.entry(peer).or_insert_with(|| Session {
                ranges: ranges.into_iter().collect(),
                start: Bytes::new(),
                first: true,
                ready_now: BTreeSet::new(),
                ready_before: BTreeSet::new(),
            });
            let message = Message::HandoverPull {
                epoch,
                previous,
                ranges: session.ranges.clone(),
                start: session.start.clone(),
            };
            self.stats.pulls_sent += 1;
            ctx.send(peer, message);
        }
    }

    /// Who can help with each range not ready and not pending: its current replicas, and the
    /// replicas of the previous ranges overlapping it.
    fn pull_targets<S: Storage>(&self, ctx: &Context<S>) -> BTreeMap<NodeId, BTreeSet<u32>> {
        let n = usize::from(ctx.config.cluster.n);
        let current_tokens = sorted_tokens(&ctx.ring);
        let previous_tokens = self.previous.as_ref().map(|p| sorted_tokens(&p.ring));
        let mut wanted: BTreeMap<NodeId, BTreeSet<u32>> = BTreeMap::new();
        for &range in &self.not_ready {
            if self.pending.contains_key(&range) {
                continue;
            }
            let Ok(i) = ctx.my_ranges.binary_search_by_key(&range, |(r, _)| *r) else {
                continue;
            };
            for &peer in &ctx.my_ranges[i].1 {
                wanted.entry(peer).or_default().insert(range);
            }
            if let (Some(p), Some(tokens)) = (&self.previous, &previous_tokens) {
                for piece in overlapping_ranges(tokens, current_tokens, range) {
                    for peer in p.ring.range_replicas(piece, n) {
                        if peer != ctx.id {
                            wanted.entry(peer).or_default().insert(range);
                        }
                    }
                }
            }
        }
        wanted
    }

    /// Answers one page of a pull: only on the puller's ring, and only once that ring is durable
    /// here (so a crash cannot bring this node back to the ring it left).
    pub(super) fn handle_pull<S: Storage>(
        &self,
        ctx: &mut Context<S>,
        from: NodeId,
        epoch: u64,
        previous: u64,
        ranges: Vec<u32>,
        start: Bytes,
    ) {
        let page = self.page(ctx, epoch, previous, &ranges, &start);
        ctx.send(from, Message::HandoverPage { epoch, start, page });
    }

    fn page<S: Storage>(
        &self,
        ctx: &mut Context<S>,
        epoch: u64,
        previous: u64,
        ranges: &[u32],
        start: &Bytes,
    ) -> Result<HandoverPage, ReplicaError> {
        if epoch != self.epoch {
            return Err(ReplicaError::RingMismatch);
        }
        if !self.durable {
            return Err(ReplicaError::NotReady);
        }
        let count = ctx.ring.range_count();
        if ranges.len() > count || ranges.iter().any(|&r| r as usize >= count) {
            return Err(ReplicaError::Busy);
        }
        let wanted: BTreeSet<u32> = ranges.iter().copied().collect();
        let mut keys_max = PAGE_KEYS_MAX;
        if crate::buggify!(ctx.faults, &mut ctx.rng, "handover/page-size") {
            // Any page size is legal: the puller resumes after the last key scanned, and a range
            // is vouched for only by what every page of the pull vouched for.
            keys_max = ctx.rng.gen_range(1..=8);
        }
        let (records, next) = page_records(ctx, &wanted, start, keys_max)?;
        let ready_now = ranges
            .iter()
            .copied()
            .filter(|&r| replicates(&ctx.my_ranges, r) && !self.not_ready.contains(&r))
            .collect();
        let ready_before = self.ready_before(ctx, previous, &wanted);
        Ok(HandoverPage {
            records,
            next,
            ready_now,
            ready_before: ready_before.into_iter().collect(),
        })
    }

    /// The previous ranges overlapping `wanted` that this node was a ready replica of when it
    /// adopted the current ring directly from the puller's `previous` one.
    fn ready_before<S: Storage>(
        &self,
        ctx: &Context<S>,
        previous: u64,
        wanted: &BTreeSet<u32>,
    ) -> BTreeSet<u32> {
        let mut ready_before = BTreeSet::new();
        let Some(p) = self.previous.as_ref().filter(|p| p.epoch == previous) else {
            return ready_before;
        };
        let n = usize::from(ctx.config.cluster.n);
        let current_tokens = sorted_tokens(&ctx.ring);
        let previous_tokens = sorted_tokens(&p.ring);
        for &range in wanted {
            for piece in overlapping_ranges(previous_tokens, current_tokens, range) {
                if !p.not_ready.contains(&piece)
                    && p.ring.range_replicas(piece, n).contains(&ctx.id)
                {
                    ready_before.insert(piece);
                }
            }
        }
        ready_before
    }

    /// A page arrived: merge its records; on the last page count what the answerer vouched for
    /// and promote every range whose pull is complete.
    pub(super) fn handle_page<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        epoch: u64,
        start: Bytes,
        page: Result<HandoverPage, ReplicaError>,
    ) {
        self.changed = true;
        if epoch != self.epoch {
            ctx.stats.stale_replies += 1;
            return;
        }
        let Some(session) = self.sessions.get(&from) else {
            ctx.stats.stale_replies += 1;
            return;
        };
        if session.start != start {
            ctx.stats.stale_replies += 1;
            return;
        }
        let page = match page {
            Ok(page) => page,
            Err(_) => {
                // Not on this ring or not durable yet: start over in a later round.
                self.sessions.remove(&from);
                return;
            }
        };
        let wanted: BTreeSet<u32> = session.ranges.iter().copied().collect();
        self.stats.records_pulled += merge_records(ctx, &wanted, page.records);
        let Some(session) = self.sessions.get_mut(&from) else {
            return;
        };
        let now: BTreeSet<u32> = page
            .ready_now
            .into_iter()
            .filter(|r| wanted.contains(r))
            .collect();
        session.vouch(now, page.ready_before.into_iter().collect());
        match page.next {
            Some(next) => {
                session.start = next;
                let message = Message::HandoverPull {
                    epoch,
                    previous: self.previous.as_ref().map_or(0, |p| p.epoch),
                    ranges: session.ranges.clone(),
                    start: session.start.clone(),
                };
                self.stats.pulls_sent += 1;
                ctx.send(from, message);
            }
            None => {
                if let Some(done) = self.sessions.remove(&from) {
                    for range in done.ready_now {
                        self.vouched_now.entry(range).or_default().insert(from);
                    }
                    for piece in done.ready_before {
                        self.vouched_before.entry(piece).or_default().insert(from);
                    }
                }
                self.promote_pulled(ctx);
            }
        }
    }

    /// Ranges whose pull is complete wait for their record to be durable, then count.
    fn promote_pulled<S: Storage>(&mut self, ctx: &mut Context<S>) {
        self.changed = true;
        let n = usize::from(ctx.config.cluster.n);
        let current_tokens = sorted_tokens(&ctx.ring);
        let previous_tokens = self.previous.as_ref().map(|p| sorted_tokens(&p.ring));
        let empty = BTreeSet::new();
        let mut complete = Vec::new();
        for &range in &self.not_ready {
            if self.pending.contains_key(&range) {
                continue;
            }
            let Ok(i) = ctx.my_ranges.binary_search_by_key(&range, |(r, _)| *r) else {
                continue;
            };
            let mut replicas = ctx.my_ranges[i].1.clone();
            replicas.push(ctx.id);
            let vouched_now = self.vouched_now.get(&range).unwrap_or(&empty);
            let mut pieces = Vec::new();
            if let (Some(p), Some(tokens)) = (&self.previous, &previous_tokens) {
                for piece in overlapping_ranges(tokens, current_tokens, range) {
                    let before = p.ring.range_replicas(piece, n);
                    let mut vouched = self.vouched_before.get(&piece).cloned().unwrap_or_default();
                    if before.contains(&ctx.id) && !p.not_ready.contains(&piece) {
                        vouched.insert(ctx.id);
                    }
                    pieces.push((before, vouched));
                }
            }
            if pull_complete(&replicas, vouched_now, &pieces) {
                complete.push(range);
            }
        }
        if complete.is_empty() {
            return;
        }
        let mark = self.next_mark;
        for range in complete {
            self.pending.insert(range, mark);
        }
        self.persist(ctx);
    }
}

impl Session {
    /// What the answerer vouched for on one page: on a multi-page pull only what it vouched for
    /// on every page counts (its readiness may change in between).
    fn vouch(&mut self, now: BTreeSet<u32>, before: BTreeSet<u32>) {
        if self.first {
            self.ready_now = now;
            self.ready_before = before;
            self.first = false;
        } else {
            self.ready_now = self.ready_now.intersection(&now).copied().collect();
            self.ready_before = self.ready_before.intersection(&before).copied().collect();
        }
    }
}

/// The ranges of `ctx.ring` this node replicates that a ring change does not carry: all of
/// them without a direct `previous`, else those not covered by ready replicas of the previous
/// ring with at least as many replicas now (see the module documentation).
fn ranges_not_carried<S>(ctx: &Context<S>, previous: Option<&Previous>) -> BTreeSet<u32> {
    let n = usize::from(ctx.config.cluster.n);
    let current_tokens = sorted_tokens(&ctx.ring);
    let previous_tokens = previous.map(|p| sorted_tokens(&p.ring));
    let mut not_ready = BTreeSet::new();
    for (range, peers) in &ctx.my_ranges {
        let carried = match (previous, &previous_tokens) {
            (Some(p), Some(tokens)) => {
                let pieces = overlapping_ranges(tokens, current_tokens, *range);
                !pieces.is_empty()
                    && pieces.iter().all(|piece| {
                        let before = p.ring.range_replicas(*piece, n);
                        before.contains(&ctx.id)
                            && !p.not_ready.contains(piece)
                            && peers.len() + 1 >= before.len()
                    })
            }
            _ => false,
        };
        if !carried {
            not_ready.insert(*range);
        }
    }
    not_ready
}

/// Records of `wanted` ranges from `start`, at most `keys_max` keys scanned and about
/// [`PAGE_BYTES_MAX`] value bytes, and where the next page starts (`None`: the scan is done).
#[expect(
    clippy::type_complexity,
    reason = "the page's two parts, named at the one call site"
)]
fn page_records<S: Storage>(
    ctx: &mut Context<S>,
    wanted: &BTreeSet<u32>,
    start: &Bytes,
    keys_max: usize,
) -> Result<(Vec<(Bytes, Record)>, Option<Bytes>), ReplicaError> {
    let batch = ctx
        .storage
        .scan(start, keys_max)
        .map_err(|_| ReplicaError::Storage)?;
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let full = batch.len() == keys_max;
    let mut last: Option<Bytes> = None;
    for (key, record) in batch {
        if key.starts_with(super::hints::RESERVED_PREFIX) {
            last = None;
            break; // reserved keys sort last and are never replicated
        }
        let in_range = ctx
            .ring
            .range_index_for_hash(Ring::key_hash(&key))
            .is_some_and(|r| wanted.contains(&r));
        if in_range {
            bytes += record_bytes(&record);
            records.push((key.clone(), record));
        }
        last = Some(key);
        if bytes > PAGE_BYTES_MAX {
            break;
        }
    }
    let next = last.filter(|_| full || bytes > PAGE_BYTES_MAX).map(|last| {
        let mut after = last.to_vec();
        after.push(0);
        Bytes::from(after)
    });
    Ok((records, next))
}

/// Merges a page's records of `wanted` ranges into local storage; returns how many applied.
fn merge_records<S: Storage>(
    ctx: &mut Context<S>,
    wanted: &BTreeSet<u32>,
    records: Vec<(Bytes, Record)>,
) -> u64 {
    let mut merged = 0;
    for (key, record) in records {
        let in_range = !key.starts_with(super::hints::RESERVED_PREFIX)
            && ctx
                .ring
                .range_index_for_hash(Ring::key_hash(&key))
                .is_some_and(|r| wanted.contains(&r));
        if in_range && ctx.apply(key, &record, AfterPersist::Nothing).is_ok() {
            merged += 1;
        }
    }
    merged
}

/// Value bytes of a record, for the page budget.
fn record_bytes(record: &Record) -> usize {
    match record {
        Record::Counter(_) => record.value_bytes(),
        Record::Lww(r) => r.value.as_ref().map_or(0, Bytes::len),
        Record::Causal(r) => r
            .siblings
            .iter()
            .map(|(_, v)| v.as_ref().map_or(0, Bytes::len))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::NodeLocation;

    fn location(rack: &str) -> NodeLocation {
        NodeLocation {
            datacenter: "dc0".into(),
            rack: rack.into(),
            weight: 1,
        }
    }

    fn ring(nodes: u32) -> Ring {
        let mut ring = Ring::new(8);
        for i in 0..nodes {
            let rack = format!("r{}", i % 3);
            ring.add_node(NodeId(i), location(&rack)).expect("add");
        }
        ring
    }

    #[test]
    fn admit_fences_other_rings_and_refuses_until_ready() {
        // (mine, theirs, ready) → outcome
        let table = [
            (1, 1, true, Ok(())),
            (1, 1, false, Err(ReplicaError::NotReady)),
            (2, 1, true, Err(ReplicaError::RingMismatch)),
            (1, 2, true, Err(ReplicaError::RingMismatch)),
            (1, 2, false, Err(ReplicaError::RingMismatch)),
        ];
        for (mine, theirs, ready, want) in table {
            assert_eq!(admit(mine, theirs, ready), want, "{mine} {theirs} {ready}");
        }
    }

    #[test]
    fn pull_complete_needs_a_majority_now_or_of_every_previous_piece() {
        let n = |ids: &[u32]| ids.iter().map(|&i| NodeId(i)).collect::<Vec<_>>();
        let s = |ids: &[u32]| ids.iter().map(|&i| NodeId(i)).collect::<BTreeSet<_>>();
        // (current replicas, vouched now, pieces, complete?)
        type Piece = (Vec<NodeId>, BTreeSet<NodeId>);
        type Row = (Vec<NodeId>, BTreeSet<NodeId>, Vec<Piece>, bool);
        let table: Vec<Row> = vec![
            (n(&[0, 1, 5]), s(&[0, 1]), vec![], true),
            (n(&[0, 1, 5]), s(&[0]), vec![], false),
            // A voucher that is not a current replica does not count.
            (n(&[0, 1, 5]), s(&[0, 3]), vec![], false),
            (
                n(&[0, 1, 5]),
                s(&[]),
                vec![(n(&[0, 1, 2]), s(&[1, 2]))],
                true,
            ),
            (n(&[0, 1, 5]), s(&[]), vec![(n(&[0, 1, 2]), s(&[2]))], false),
            // Every overlapping previous range needs its own majority.
            (
                n(&[0, 1, 5]),
                s(&[]),
                vec![(n(&[0, 1, 2]), s(&[0, 1])), (n(&[2, 3, 4]), s(&[2, 0]))],
                false,
            ),
            (
                n(&[0, 1, 5]),
                s(&[]),
                vec![(n(&[0, 1, 2]), s(&[0, 1])), (n(&[2, 3, 4]), s(&[2, 4]))],
                true,
            ),
            (n(&[0, 1, 5]), s(&[]), vec![], false),
        ];
        for (i, (replicas, now, pieces, want)) in table.into_iter().enumerate() {
            assert_eq!(pull_complete(&replicas, &now, &pieces), want, "row {i}");
        }
    }

    #[test]
    fn overlapping_ranges_cover_splits_merges_and_the_wrap() {
        // (previous tokens, current tokens, range index, overlapping previous ranges)
        type Row = (Vec<u64>, Vec<u64>, u32, Vec<u32>);
        let table: Vec<Row> = vec![
            // A join splits previous range 1 (10, 20] at 15.
            (vec![10, 20, 30], vec![10, 15, 20, 30], 1, vec![1]),
            (vec![10, 20, 30], vec![10, 15, 20, 30], 2, vec![1]),
            // The wrapping range (30, 10] overlaps previous range 0 only.
            (vec![10, 20, 30], vec![10, 15, 20, 30], 0, vec![0]),
            // A removal merges previous ranges 1 and 2 into (10, 30].
            (vec![10, 20, 30], vec![10, 30], 1, vec![1, 2]),
            // Removing the token 10 makes the wrapping range (30, 20] cover 0 and 1.
            (vec![10, 20, 30], vec![20, 30], 0, vec![0, 1]),
            // One token: the whole ring.
            (vec![10, 20, 30], vec![25], 0, vec![0, 1, 2]),
            (vec![], vec![25], 0, vec![]),
        ];
        for (previous, current, index, want) in table {
            assert_eq!(
                overlapping_ranges(&previous, &current, index),
                want,
                "{previous:?} {current:?} {index}"
            );
        }
    }

    #[test]
    fn overlapping_ranges_agree_with_the_definition_on_random_rings() {
        use rand::{Rng, SeedableRng};
        // The definition: the previous range holding `high`, and every previous token strictly
        // inside (low, high], wrapping.
        fn by_definition(previous: &[u64], current: &[u64], i: usize) -> Vec<u32> {
            let high = current[i];
            let low = current[(i + current.len() - 1) % current.len()];
            let mut out = BTreeSet::new();
            out.insert(previous.partition_point(|&t| t < high) % previous.len());
            for (j, &t) in previous.iter().enumerate() {
                let inside = if low < high {
                    t > low && t < high
                } else {
                    t > low || t < high
                };
                if inside {
                    out.insert(j);
                }
            }
            out.into_iter().map(|j| j as u32).collect()
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
        for _ in 0..300 {
            let mut tokens = |count: usize| {
                let mut t: Vec<u64> = (0..count).map(|_| rng.gen_range(0..64)).collect();
                t.sort_unstable();
                t.dedup();
                t
            };
            let (previous, current) = (tokens(12), tokens(12));
            if previous.is_empty() || current.len() < 2 {
                continue;
            }
            for i in 0..current.len() {
                assert_eq!(
                    overlapping_ranges(&previous, &current, i as u32),
                    by_definition(&previous, &current, i),
                    "{previous:?} {current:?} {i}"
                );
            }
        }
    }

    #[test]
    fn direct_successor_is_one_join_or_one_removal() {
        let base = ring(5);
        let mut joined = base.clone();
        joined.add_node(NodeId(5), location("r2")).expect("join");
        let mut removed = base.clone();
        removed.remove_node(NodeId(2)).expect("remove");
        let mut two = joined.clone();
        two.remove_node(NodeId(1)).expect("remove");
        assert!(is_direct_successor(&base, &joined));
        assert!(is_direct_successor(&base, &removed));
        assert!(!is_direct_successor(&base, &two), "two changes at once");
        assert!(!is_direct_successor(&base, &base), "no change");
        // A join undone by a removal is a later ring, not the earlier one again (no ABA).
        let mut undone = joined.clone();
        undone.remove_node(NodeId(5)).expect("remove");
        assert_ne!(ring_epoch(&undone), ring_epoch(&base));
        assert!(is_direct_successor(&joined, &undone));
        assert!(!is_direct_successor(&base, &undone));
        // A join of the same node at another place is another ring.
        let mut elsewhere = base.clone();
        elsewhere.add_node(NodeId(5), location("r0")).expect("join");
        assert!(!is_direct_successor(&joined, &elsewhere));
    }

    /// The answer a ring remembers for one previous ring is given for that ring's clones only:
    /// asked again, about clones, or about other previous rings, every answer is the replay's.
    #[test]
    fn a_remembered_successor_answer_matches_the_replay() {
        let base = ring(5);
        let mut joined = base.clone();
        joined.add_node(NodeId(5), location("r2")).expect("join");
        let mut two = joined.clone();
        two.remove_node(NodeId(1)).expect("remove");
        let mut other = base.clone();
        other.add_node(NodeId(6), location("r1")).expect("join");
        for _ in 0..2 {
            for (previous, next) in [
                (&base, &joined),
                (&base, &two),
                (&joined, &two),
                (&other, &joined),
                (&base, &base),
            ] {
                let want = replays_one_change(previous, next);
                assert_eq!(is_direct_successor(previous, next), want);
                assert_eq!(is_direct_successor(&previous.clone(), &next.clone()), want);
            }
        }
    }

    #[test]
    fn majority_is_strict() {
        for (count, want) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
            assert_eq!(majority(count), want);
        }
    }

    // ------------------------------------------------------------ the struct alone

    use super::super::context::Context;
    use super::super::durability::Durability;
    use super::super::timers::Timers;
    use crate::buggify::FaultPoints;
    use crate::node::NodeStats;
    use crate::version::{ActorId, HybridClock};
    use rand::SeedableRng;

    /// A context for node `id` on `ring` at n = 3, over an empty store: what a `Handover` needs,
    /// without the rest of a node.
    fn context(id: u32, ring: &Ring) -> Context<MemStorage> {
        let config = node_config(id);
        let my_ranges = super::super::antientropy::my_ranges(ring, NodeId(id), 3);
        Context {
            id: NodeId(id),
            faults: FaultPoints::new(config.rng_seed, false),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(config.rng_seed),
            config,
            ring: ring.clone(),
            my_ranges,
            storage: MemStorage::new(),
            durability: Durability::default(),
            clock: HybridClock::default(),
            clock_floor: 0,
            actor: ActorId::new(NodeId(id), Default::default()),
            last_wall: WallMicros::default(),
            last_monotonic: Instant::ZERO,
            outputs: VecDeque::new(),
            incarnation: 1,
            incarnation_sequence: 0,
            next_operation: 1,
            stats: NodeStats::default(),
            trees: Default::default(),
            scan_index: Default::default(),
            tree_rebuild: Default::default(),
            timers: Timers::default(),
        }
    }

    /// Syncs everything staged and tells `handover` which of its records became durable.
    fn sync(handover: &mut Handover, ctx: &mut Context<MemStorage>) {
        let Some(token) = ctx.durability.take_persist_request() else {
            return;
        };
        ctx.storage.sync().expect("sync");
        for waiter in ctx.durability.persisted(token) {
            if let AfterPersist::HandoverDurable(mark) = waiter {
                handover.on_durable(mark);
            }
        }
    }

    fn sent(ctx: &mut Context<MemStorage>) -> Vec<(NodeId, Message)> {
        ctx.outputs
            .drain(..)
            .filter_map(|output| match output {
                Output::Send { to, message } => Some((to, message)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn adopting_one_join_keeps_carried_ranges_and_pulls_the_rest_once_active() {
        let base = ring(3);
        let new = joined(&base);
        // Node 0 of the base ring: every range it keeps was carried over the single join.
        let mut old = context(0, &base);
        let mut carried = Handover::new(&base, true);
        old.ring = new.clone();
        old.my_ranges = super::super::antientropy::my_ranges(&new, NodeId(0), 3);
        carried.adopt(&mut old, base.clone());
        carried.check_invariants(&old.my_ranges);
        assert_eq!(carried.ranges_not_ready(), 0);
        assert_eq!(carried.epoch(), ring_epoch(&new));
        assert!(!carried.durable, "the new epoch is not durable yet");
        sync(&mut carried, &mut old);
        assert!(carried.durable);
        // The joining node 3 replicates ranges nobody carried for it.
        let mut fresh = context(3, &base);
        let mut joining = Handover::new(&base, false);
        fresh.ring = new.clone();
        fresh.my_ranges = super::super::antientropy::my_ranges(&new, NodeId(3), 3);
        joining.adopt(&mut fresh, base.clone());
        joining.check_invariants(&fresh.my_ranges);
        assert_eq!(joining.ranges_not_ready(), fresh.my_ranges.len());
        assert!(
            !fresh.timers.is_armed(Timer::HandoverPull),
            "inactive: no pulls, no record"
        );
        assert_eq!(fresh.durability.take_persist_request(), None);
        joining.activate(&mut fresh);
        joining.check_invariants(&fresh.my_ranges);
        assert!(fresh.timers.is_armed(Timer::HandoverPull));
        assert!(fresh.durability.take_persist_request().is_some());
    }

    #[test]
    fn a_pull_is_answered_only_on_the_same_durable_ring_and_pages_are_exact() {
        let base = ring(3);
        let mut ctx = context(1, &base);
        let mut handover = Handover::new(&base, true);
        let epoch = handover.epoch();
        let ranges: Vec<u32> = ctx.my_ranges.iter().map(|(r, _)| *r).collect();
        for i in 0..40 {
            let key = Bytes::from(format!("key{i}"));
            let record = Record::Lww(LwwRecord {
                version: LwwVersion {
                    timestamp_micros: 1,
                    node: NodeId(1),
                    nonce: 0,
                },
                value: Some(Bytes::from_static(b"v")),
                expires_at_micros: None,
            });
            ctx.stage(key, record).expect("staged");
        }
        let page = |h: &Handover, ctx: &mut Context<MemStorage>, e: u64| {
            h.handle_pull(ctx, NodeId(0), e, 0, ranges.clone(), Bytes::new());
            match sent(ctx).pop() {
                Some((_, Message::HandoverPage { page, .. })) => page,
                other => panic!("a pull is always answered: {other:?}"),
            }
        };
        assert_eq!(
            page(&handover, &mut ctx, epoch + 1).map(|_| ()),
            Err(ReplicaError::RingMismatch)
        );
        handover.durable = false;
        assert_eq!(
            page(&handover, &mut ctx, epoch).map(|_| ()),
            Err(ReplicaError::NotReady),
            "a ring not yet durable here is not vouched on"
        );
        handover.durable = true;
        let page = page(&handover, &mut ctx, epoch).expect("answered");
        assert_eq!(page.next, None, "40 keys fit one page");
        assert_eq!(page.ready_now, ranges, "ready everywhere it replicates");
        let wanted: BTreeSet<u32> = ranges.iter().copied().collect();
        let held = (0..40)
            .map(|i| Bytes::from(format!("key{i}")))
            .filter(|k| {
                base.range_index_for_hash(Ring::key_hash(k))
                    .is_some_and(|r| wanted.contains(&r))
            })
            .count();
        assert_eq!(page.records.len(), held, "every key of the ranges asked");
        // Paged by hand: every key once, in order, whatever the page size.
        let mut start = Bytes::new();
        let mut seen = Vec::new();
        loop {
            let (records, next) = page_records(&mut ctx, &wanted, &start, 7).expect("page");
            seen.extend(records.into_iter().map(|(k, _)| k));
            match next {
                Some(next) => start = next,
                None => break,
            }
        }
        let all: Vec<Bytes> = page.records.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(seen, all);
    }

    #[test]
    fn a_multi_page_pull_vouches_only_for_what_every_page_vouched_for() {
        let set = |ids: &[u32]| ids.iter().copied().collect::<BTreeSet<u32>>();
        let mut session = Session {
            ranges: vec![1, 2, 3],
            start: Bytes::new(),
            first: true,
            ready_now: BTreeSet::new(),
            ready_before: BTreeSet::new(),
        };
        session.vouch(set(&[1, 2, 3]), set(&[4]));
        assert_eq!(session.ready_now, set(&[1, 2, 3]));
        session.vouch(set(&[1, 3]), set(&[4, 5]));
        assert_eq!(session.ready_now, set(&[1, 3]));
        assert_eq!(
            session.ready_before,
            set(&[4]),
            "nothing added after the first page"
        );
    }

    #[test]
    fn the_record_restores_readiness_on_its_ring_and_nothing_on_another() {
        let base = ring(3);
        let new = joined(&base);
        let mut ctx = context(3, &base);
        let mut handover = Handover::new(&base, true);
        ctx.ring = new.clone();
        ctx.my_ranges = super::super::antientropy::my_ranges(&new, NodeId(3), 3);
        handover.adopt(&mut ctx, base.clone());
        let missing = handover.ranges_not_ready();
        assert!(missing > 0);
        sync(&mut handover, &mut ctx);
        // A restart on the same ring.
        let mut again = Handover::new(&new, false);
        again.load(&mut ctx);
        again.check_invariants(&ctx.my_ranges);
        assert!(again.recorded() && again.active);
        assert_eq!(again.ranges_not_ready(), missing);
        // A restart on another ring: ready nowhere, and the record says so.
        let mut other = new.clone();
        other.remove_node(NodeId(1)).expect("remove");
        ctx.ring = other.clone();
        ctx.my_ranges = super::super::antientropy::my_ranges(&other, NodeId(3), 3);
        let mut moved = Handover::new(&other, false);
        moved.load(&mut ctx);
        moved.check_invariants(&ctx.my_ranges);
        assert_eq!(moved.ranges_not_ready(), ctx.my_ranges.len());
        assert!(ctx.timers.is_armed(Timer::HandoverPull));
    }

    // ------------------------------------------------------------ node-level

    use crate::client::{ClientReply, ClientRequest, Consistency};
    use crate::config::{ClusterConfig, NodeConfig};
    use crate::id::{OperationId, RequestId};
    use crate::node::{Node, Output, PersistToken};
    use crate::storage::MemStorage;
    use crate::time::{Now, WallMicros};
    use crate::version::ConflictMode;
    use std::collections::VecDeque;

    /// Four nodes (3 is a spare outside the ring at first), every request linearizable; messages
    /// delivered in FIFO order, persists completed when the test says so.
    struct Cluster {
        nodes: Vec<Node<MemStorage>>,
        in_flight: VecDeque<(NodeId, NodeId, Message)>,
        persists: Vec<Vec<PersistToken>>,
        replies: Vec<(RequestId, ClientReply)>,
        now: Now,
    }

    fn node_config(i: u32) -> NodeConfig {
        NodeConfig {
            id: NodeId(i),
            cluster: ClusterConfig {
                conflict: ConflictMode::Lww,
                consistency: Some(Consistency::Linearizable),
                ..ClusterConfig::default()
            },
            rng_seed: u64::from(i),
        }
    }

    impl Cluster {
        fn new() -> Cluster {
            let ring = ring(3);
            let now = Now {
                monotonic: Instant::from_nanos(1),
                wall: WallMicros(1_000_000),
            };
            let nodes = (0..4)
                .map(|i| Node::new(node_config(i), ring.clone(), MemStorage::new(), now))
                .collect::<Result<_, _>>()
                .expect("ok");
            Cluster {
                nodes,
                in_flight: VecDeque::new(),
                persists: vec![Vec::new(); 4],
                replies: Vec::new(),
                now: Now {
                    monotonic: Instant::from_nanos(1),
                    wall: WallMicros(1_000_000),
                },
            }
        }

        fn drain(&mut self, i: usize) {
            while let Some(output) = self.nodes[i].poll_output() {
                match output {
                    Output::Send { to, message } => {
                        self.in_flight.push_back((NodeId(i as u32), to, message))
                    }
                    Output::Persist { token } => self.persists[i].push(token),
                    Output::Reply { request, reply } => self.replies.push((request, reply)),
                    Output::Event(_) => {}
                }
            }
        }

        /// Delivers, persists and fires due timers until nothing moves (or `rounds` run out).
        fn settle(&mut self, rounds: usize) {
            for _ in 0..rounds {
                while let Some((from, to, message)) = self.in_flight.pop_front() {
                    let i = to.0 as usize;
                    self.nodes[i].handle_message(self.now, from, message);
                    self.drain(i);
                }
                for i in 0..self.nodes.len() {
                    for token in std::mem::take(&mut self.persists[i]) {
                        self.nodes[i].storage_mut().sync().expect("sync");
                        self.nodes[i].handle_persisted(self.now, token);
                        self.drain(i);
                    }
                }
                self.now.monotonic = self
                    .now
                    .monotonic
                    .saturating_add(Duration::from_millis(PULL_INTERVAL_MS));
                for i in 0..self.nodes.len() {
                    self.nodes[i].handle_timeout(self.now);
                    self.drain(i);
                }
            }
        }

        fn client(&mut self, at: usize, id: u64, body: ClientRequest) -> Option<ClientReply> {
            self.nodes[at].handle_client(self.now, RequestId(id), body);
            self.drain(at);
            self.settle(3);
            self.replies
                .iter()
                .find(|(r, _)| r.0 == id)
                .map(|(_, reply)| reply.clone())
        }

        fn update_ring(&mut self, ring: &Ring) {
            for i in 0..self.nodes.len() {
                self.nodes[i].update_ring(ring.clone());
                self.drain(i);
            }
        }

        /// Asks node `at` directly for `key` as a coordinator on `epoch` would.
        fn lin_read(&mut self, at: usize, key: &Bytes, epoch: u64) -> Message {
            let op = OperationId(999);
            let message = Message::LinRead {
                op,
                key: key.clone(),
                epoch,
            };
            self.nodes[at].handle_message(self.now, NodeId(0), message);
            let mut answer = None;
            while let Some(output) = self.nodes[at].poll_output() {
                if let Output::Send { message, .. } = output {
                    answer = Some(message);
                }
            }
            answer.expect("a replica always answers")
        }
    }

    fn put(key: &Bytes, value: &'static str) -> ClientRequest {
        ClientRequest::Put {
            key: key.clone(),
            value: Bytes::from_static(value.as_bytes()),
            context: None,
            consistency: None,
        }
    }

    fn joined(base: &Ring) -> Ring {
        let mut ring = base.clone();
        ring.add_node(NodeId(3), location("r0")).expect("join");
        ring
    }

    /// A key that node 3 replicates on `ring`.
    fn key_on_3(ring: &Ring) -> Bytes {
        (0..1000)
            .map(|i| Bytes::from(format!("key{i}")))
            .find(|k| ring.preference_list(k, 3).contains(&NodeId(3)))
            .expect("node 3 replicates some key")
    }

    fn record_of(message: &Message) -> Result<Option<Record>, ReplicaError> {
        match message {
            Message::ReadReply { record, .. } => record.clone(),
            other => panic!("not a read reply: {other:?}"),
        }
    }

    #[test]
    fn a_joined_replica_refuses_until_it_pulled_its_ranges_then_holds_every_write() {
        let mut c = Cluster::new();
        let base = c.nodes[0].ring().clone();
        let new = joined(&base);
        let key = key_on_3(&new);
        let written = c.client(0, 1, put(&key, "before the join"));
        assert!(
            matches!(written, Some(ClientReply::Written { .. })),
            "{written:?}"
        );
        // Every node adopts the join; nothing is delivered yet, so node 3 has pulled nothing.
        c.update_ring(&new);
        assert!(
            c.nodes[3].ranges_not_ready() > 0,
            "a new replica starts not ready"
        );
        for i in 0..3 {
            assert_eq!(
                c.nodes[i].ranges_not_ready(),
                0,
                "n{i}: carried over one join"
            );
        }
        let (old, now) = (ring_epoch(&base), ring_epoch(&new));
        assert_eq!(
            record_of(&c.lin_read(3, &key, now)),
            Err(ReplicaError::NotReady)
        );
        assert_eq!(
            record_of(&c.lin_read(3, &key, old)),
            Err(ReplicaError::RingMismatch)
        );
        assert_eq!(
            record_of(&c.lin_read(1, &key, old)),
            Err(ReplicaError::RingMismatch)
        );
        assert!(c.nodes[3].handover_stats().refused_not_ready >= 1);
        assert!(c.nodes[1].handover_stats().refused_ring_mismatch >= 1);
        // Pulls run on the node's timer; promotion waits for durability.
        c.settle(10);
        assert_eq!(c.nodes[3].ranges_not_ready(), 0, "pulled and durable");
        assert!(c.nodes[3].handover_stats().ranges_ready > 0);
        let held = record_of(&c.lin_read(3, &key, now)).expect("ready now");
        let value = held.as_ref().map(Record::live_values).unwrap_or_default();
        assert_eq!(value, vec![Bytes::from_static(b"before the join")]);
    }

    #[test]
    fn readiness_survives_a_restart_on_the_same_ring_and_not_on_another() {
        let mut c = Cluster::new();
        let base = c.nodes[0].ring().clone();
        let new = joined(&base);
        c.update_ring(&new);
        // Make node 3's not-ready record durable without letting it pull.
        for token in std::mem::take(&mut c.persists[3]) {
            c.nodes[3].storage_mut().sync().expect("sync");
            c.nodes[3].handle_persisted(c.now, token);
        }
        let missing = c.nodes[3].ranges_not_ready();
        assert!(missing > 0);
        let node = c.nodes.remove(3);
        let storage = node.into_storage();
        let again = Node::new(node_config(3), new.clone(), storage, c.now).expect("ok");
        assert_eq!(again.ranges_not_ready(), missing, "the record is restored");
        // Restarted onto yet another ring: it cannot know what it holds.
        let storage = again.into_storage();
        let mut other = new.clone();
        other.remove_node(NodeId(1)).expect("remove");
        let moved = Node::new(node_config(3), other.clone(), storage, c.now).expect("ok");
        let mine = other
            .tokens()
            .enumerate()
            .filter(|(i, _)| {
                other
                    .range_replicas(u32::try_from(*i).expect("small"), 3)
                    .contains(&NodeId(3))
            })
            .count();
        assert_eq!(moved.ranges_not_ready(), mine, "every range must be pulled");
    }

    #[test]
    fn skipping_a_ring_loses_readiness_and_pulling_from_current_replicas_restores_it() {
        let mut c = Cluster::new();
        let base = c.nodes[0].ring().clone();
        let new = joined(&base);
        let key = key_on_3(&new);
        c.client(0, 1, put(&key, "v1"));
        // Node 0 jumps two changes at once (gossip can deliver that); the others step through.
        let mut two = new.clone();
        two.remove_node(NodeId(2)).expect("remove");
        for i in 1..4 {
            c.nodes[i].update_ring(new.clone());
            c.drain(i);
        }
        c.settle(10);
        for i in 1..4 {
            c.nodes[i].update_ring(two.clone());
            c.drain(i);
        }
        c.nodes[0].update_ring(two.clone());
        c.drain(0);
        assert!(
            c.nodes[0].ranges_not_ready() > 0,
            "a skipped ring proves nothing"
        );
        assert_eq!(c.nodes[0].handover_stats().rings_skipped, 1);
        c.settle(20);
        for i in [0, 1, 3] {
            assert_eq!(
                c.nodes[i].ranges_not_ready(),
                0,
                "n{i} ready on the final ring"
            );
        }
        let read = c.client(
            3,
            2,
            ClientRequest::Get {
                key: key.clone(),
                consistency: None,
            },
        );
        match read {
            Some(ClientReply::Found { values, .. }) => {
                assert_eq!(values, vec![Bytes::from_static(b"v1")])
            }
            other => panic!("expected the value written before both changes: {other:?}"),
        }
    }

    #[test]
    fn a_replaced_machine_refuses_until_it_pulled_then_holds_what_a_majority_acknowledged() {
        let mut c = Cluster::new();
        let ring = c.nodes[0].ring().clone();
        let key = Bytes::from_static(b"wiped");
        let written = c.client(0, 1, put(&key, "acknowledged"));
        assert!(
            matches!(written, Some(ClientReply::Written { .. })),
            "{written:?}"
        );
        // Node 1's machine is replaced: a new, empty disk, and the driver says so.
        let fresh = Node::new(node_config(1), ring.clone(), MemStorage::new(), c.now).expect("ok");
        assert_eq!(
            fresh.ranges_not_ready(),
            0,
            "an empty store alone reads as a first start"
        );
        c.nodes[1] = fresh;
        c.persists[1].clear();
        c.nodes[1].start_as_replacement();
        c.drain(1);
        let mine = c.nodes[1].ctx.my_ranges.len();
        assert!(mine > 0);
        assert_eq!(c.nodes[1].ranges_not_ready(), mine, "ready nowhere");
        let epoch = ring_epoch(&ring);
        assert_eq!(
            record_of(&c.lin_read(1, &key, epoch)),
            Err(ReplicaError::NotReady),
            "the empty replica must not answer for what it lost"
        );
        // A crash before pulling brings it back not ready: the record was persisted at once.
        for token in std::mem::take(&mut c.persists[1]) {
            c.nodes[1].storage_mut().sync().expect("sync");
            c.nodes[1].handle_persisted(c.now, token);
        }
        let node = c.nodes.remove(1);
        let again =
            Node::new(node_config(1), ring.clone(), node.into_storage(), c.now).expect("ok");
        assert_eq!(
            again.ranges_not_ready(),
            mine,
            "still ready nowhere after a crash"
        );
        c.nodes.insert(1, again);
        c.drain(1);
        c.settle(10);
        assert_eq!(
            c.nodes[1].ranges_not_ready(),
            0,
            "pulled back from the others"
        );
        let held = record_of(&c.lin_read(1, &key, epoch)).expect("ready now");
        let value = held.as_ref().map(Record::live_values).unwrap_or_default();
        assert_eq!(value, vec![Bytes::from_static(b"acknowledged")]);
    }
}
