//! Cluster-wide scans (`SCAN`, `KEYS`) and the live-key estimate (`DBSIZE`).
//!
//! **The cursor is a ring position.** A scan walks the token space `0..=u64::MAX` upwards; a
//! page covers `from..=to`, where `to` ends the ring range holding `from` (extended over the
//! following ranges while they have the same replicas, so a small cluster is walked in few
//! pages). The coordinator asks that interval's replicas (the read level's count of them, never
//! fallbacks: a fallback holds no range) for their keys in token order, and ends the page at the
//! lowest last token of any replica that stopped early, so every answering replica has reported
//! every key up to the page's end. The next page starts one token after it. Tokens are
//! independent of the ring, so across a ring change the walk goes on where it was: no interval is
//! skipped or walked twice, only asked of the new ring's replicas.
//!
//! **What it guarantees.** A key written at `W` and neither deleted nor expired while the scan
//! runs is returned at least once when `R + W > N`: its page's `R` answering replicas include
//! one that stores it (a write quorum and a read quorum of the same replicas intersect).
//! Across a ring change the page's replicas are the new ring's, and a key is then found exactly
//! when a read of it at the same level would find it (the new replicas may still be receiving
//! the range; see `handover`). A key deleted at `W` before the scan is hidden (a tombstone on one
//! of the `R` replicas is newer than the value). Keys written or deleted during the scan may or
//! may not appear. Since the cursor only grows, a key appears at most once per scan.
//!
//! **Cost.** Each replica keeps a token index of the keys it stores (a `BTreeMap` from (token,
//! key) to liveness, whose `Bytes` keys share their buffers with the anti-entropy trees), updated
//! with every staged record and rebuilt with the trees. A page costs each replica
//! O(log keys + page) index steps and one storage read per key returned, never a walk of its
//! whole keyspace. Pages carry records with their values emptied (versions and liveness only),
//! bounded in keys and in key bytes.
//!
//! **DBSIZE** counts from the same index: each member keeps a live-key counter per range it
//! holds (adjusted on each staged record: O(1) per write), and answers with the counters of the
//! ranges it replicates; the coordinator takes, per range, the largest count any replica gave,
//! and sums. It is an estimate: replicas may disagree (a replica that missed a delete counts the
//! key), and a range none of whose replicas answered in time is missing. On a one-node cluster it
//! is exact.

use super::context::Context;
use super::coordinator::{Coordinator, Operation};
use crate::client::{ClientReply, Consistency, RequestError};
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::{Message, ReplicaError, ScanPage};
use crate::ring::Ring;
use crate::storage::Storage;
use crate::time::Now;
use crate::version::{merge_into, CausalRecord, LwwRecord, Record};
use bytes::Bytes;
use rand::Rng;
use std::collections::BTreeMap;

/// Most keys a replica returns for one page, whatever the client asked (Redis's `COUNT` is a
/// hint too): bounds the message and the work of one page.
pub const SCAN_PAGE_KEYS_MAX: u32 = 1000;

/// Key bytes after which a replica ends its page (plus the keys sharing the last token), so a
/// page stays far below the codec's message limit even with the longest keys.
pub const SCAN_PAGE_KEY_BYTES_MAX: usize = 1 << 20;

/// Consecutive ring ranges with the same replicas one page may cover.
pub const SCAN_RANGES_PER_PAGE_MAX: usize = 256;

/// True if `record` holds a live value: not a tombstone. The one place scans and `DBSIZE`
/// decide liveness (an expiry, once records carry one, is judged here too).
pub fn is_live(record: &Record) -> bool {
    // Without gathering the values (`Record::live_values` allocates them): once per staged write.
    match record {
        Record::Lww(r) => r.value.is_some(),
        Record::Causal(r) => r.live_values().next().is_some(),
        Record::Counter(_) => true,
    }
}

/// `record` with every value emptied: what a scan page needs (versions and liveness) without
/// the value bytes. Merging emptied records gives the same winner as merging the originals.
pub fn without_values(record: &Record) -> Record {
    let empty = |value: &Option<Bytes>| value.as_ref().map(|_| Bytes::new());
    match record {
        Record::Lww(r) => Record::Lww(LwwRecord {
            version: r.version,
            value: empty(&r.value),
            expires_at_micros: r.expires_at_micros,
        }),
        Record::Causal(r) => Record::Causal(CausalRecord {
            clock: r.clock.clone(),
            siblings: r.siblings.iter().map(|(dot, v)| (*dot, empty(v))).collect(),
        }),
        // A counter holds no value bytes, only slots: kept whole so merges pick the same state.
        Record::Counter(c) => Record::Counter(c.clone()),
    }
}

/// The interval one page covers, starting at `from`: to the end of the range holding `from`,
/// extended over the following ranges while their replicas are the same nodes (at most
/// [`SCAN_RANGES_PER_PAGE_MAX`] ranges, and never past the top of the token space). Returns
/// (last token, replicas). A pure policy over the ring.
pub fn page_interval(ring: &Ring, from: u64, n: usize) -> (u64, Vec<NodeId>) {
    let tokens: Vec<u64> = ring.tokens().map(|(t, _)| t).collect();
    let Some(first) = ring.range_index_for_hash(from) else {
        return (u64::MAX, Vec::new());
    };
    let replicas = ring.range_replicas(first, n);
    // The same nodes in another order (another primary) serve a page just as well.
    let sorted = |mut nodes: Vec<NodeId>| {
        nodes.sort_unstable();
        nodes
    };
    let set = sorted(replicas.clone());
    let mut index = first as usize;
    // Above the last token the range wraps to the first: it ends at the top of the space.
    if tokens.get(index).is_none_or(|&t| t < from) {
        return (u64::MAX, replicas);
    }
    let mut to = tokens[index];
    for _ in 1..SCAN_RANGES_PER_PAGE_MAX {
        index += 1;
        let Some(&next) = tokens.get(index) else {
            // The ranges above the last token belong to range 0.
            if sorted(ring.range_replicas(0, n)) == set {
                to = u64::MAX;
            }
            break;
        };
        let Ok(range) = u32::try_from(index) else {
            break;
        };
        if sorted(ring.range_replicas(range, n)) != set {
            break;
        }
        to = next;
    }
    (to, replicas)
}

/// The outcome of merging the replicas' pages of one interval: the live keys up to the page's
/// end, in token order, and the `from` of the next page. A pure policy, tested as a table.
pub fn merge_pages(pages: &[ScanPage], to: u64, now_micros: u64) -> (Vec<Bytes>, Option<u64>) {
    // Every replica reported every key up to its last token, or the whole interval.
    let end = pages
        .iter()
        .filter(|page| page.truncated)
        .filter_map(|page| page.records.last().map(|(key, _)| Ring::key_hash(key)))
        .min()
        .unwrap_or(to)
        .min(to);
    let mut merged: BTreeMap<(u64, Bytes), Record> = BTreeMap::new();
    for page in pages {
        for (key, record) in &page.records {
            let token = Ring::key_hash(key);
            if token > end {
                continue;
            }
            let slot = (token, key.clone());
            let next = merge_into(merged.get(&slot), record);
            if let Some(next) = next {
                merged.insert(slot, next);
            }
        }
    }
    let keys = merged
        .into_iter()
        // Expiry is judged after the merge, at the coordinator's hybrid now (as for reads): an
        // expired record still outranks older versions of its key.
        .filter(|(_, record)| !record.live_values_at(now_micros).is_empty())
        .map(|((_, key), _)| key)
        .collect();
    (keys, end.checked_add(1))
}

/// The token index of the keys a replica stores (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct ScanIndex {
    /// (token, key) → the stored record is live.
    keys: BTreeMap<(u64, Bytes), bool>,
    /// Range index of the current ring → live keys stored in it.
    live_per_range: BTreeMap<u32, u64>,
    /// Live entries of `keys`.
    live: u64,
}

impl ScanIndex {
    /// Forgets everything (the trees are about to be rebuilt from storage, maybe on a new ring).
    pub(super) fn clear(&mut self) {
        *self = ScanIndex::default();
    }

    /// `key` (in ring range `range`) now holds a record that is `live` or not.
    #[cfg(test)]
    pub(super) fn update(&mut self, range: Option<u32>, key: &Bytes, live: bool) {
        self.update_at(range, Ring::key_hash(key), key, live);
    }

    /// [`Self::update`] with `key`'s token (`Ring::key_hash`) already computed.
    pub(super) fn update_at(&mut self, range: Option<u32>, token: u64, key: &Bytes, live: bool) {
        debug_assert_eq!(token, Ring::key_hash(key));
        let was = self.keys.insert((token, key.clone()), live);
        let delta: i64 = match (was.unwrap_or(false), live) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        if delta == 0 {
            return;
        }
        self.live = self.live.saturating_add_signed(delta);
        if let Some(range) = range {
            let count = self.live_per_range.entry(range).or_default();
            *count = count.saturating_add_signed(delta);
        }
    }

    /// Up to `keys_max` keys (and `bytes_max` key bytes) with tokens in `from..=to`, plus the
    /// keys sharing the last one's token; and whether keys remain after them in the interval.
    pub(super) fn page(
        &self,
        from: u64,
        to: u64,
        keys_max: usize,
        bytes_max: usize,
    ) -> (Vec<Bytes>, bool) {
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        let mut last_token = None;
        for ((token, key), _) in self.keys.range((from, Bytes::new())..) {
            if *token > to {
                return (keys, false);
            }
            let full = keys.len() >= keys_max.max(1) || bytes >= bytes_max;
            if full && last_token != Some(*token) {
                return (keys, true);
            }
            bytes = bytes.saturating_add(key.len());
            last_token = Some(*token);
            keys.push(key.clone());
        }
        (keys, false)
    }

    /// Live keys held in range `range`.
    pub(super) fn live_in(&self, range: u32) -> u64 {
        self.live_per_range.get(&range).copied().unwrap_or(0)
    }

    /// Cheap checks (O(1): this runs after every input; the full recount is
    /// [`Self::check_counters`], run by the tests).
    pub(super) fn check_invariants(&self) {
        assert!(
            self.live <= self.keys.len() as u64,
            "more live keys than keys"
        );
    }

    /// The counters agree with a recount of the index (O(keys)).
    #[cfg(test)]
    fn check_counters(&self) {
        let live = self.keys.values().filter(|&&live| live).count() as u64;
        assert_eq!(live, self.live, "live counter");
        assert!(self.live_per_range.values().sum::<u64>() <= self.live);
    }
}

/// A scan page or a key count waiting for replies.
#[derive(Debug)]
pub(super) enum ScanOperation {
    /// One page of `SCAN`.
    Page(PageOperation),
    /// `DBSIZE`.
    Count(CountOperation),
}

/// One page: the interval, its replicas and their pages so far.
#[derive(Debug)]
pub(super) struct PageOperation {
    request: RequestId,
    from: u64,
    to: u64,
    needed: u8,
    replicas: Vec<NodeId>,
    answered: Vec<NodeId>,
    refused: Vec<NodeId>,
    pages: Vec<ScanPage>,
}

/// A key count: the members asked and the largest count per range so far.
#[derive(Debug)]
pub(super) struct CountOperation {
    request: RequestId,
    members: Vec<NodeId>,
    answered: Vec<NodeId>,
    per_range: BTreeMap<u64, u64>,
}

impl ScanOperation {
    pub(super) fn check_invariants(&self) {
        match self {
            ScanOperation::Page(page) => page.check_invariants(),
            ScanOperation::Count(count) => count.check_invariants(),
        }
    }

    /// The answer at the operation's deadline: a page is unavailable; a count answers with what
    /// the members that answered reported (an estimate), or unavailable if none did.
    fn expired_reply(&self) -> ClientReply {
        match self {
            ScanOperation::Page(page) => page.unavailable(),
            ScanOperation::Count(count) => count.reply(),
        }
    }

    fn request(&self) -> RequestId {
        match self {
            ScanOperation::Page(page) => page.request,
            ScanOperation::Count(count) => count.request,
        }
    }
}

/// Where a scan round trip stands after one reply: a value, decided by the operation alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// The reply matches nothing waiting (late, duplicated or from a node not asked): ignored.
    Stale,
    /// More replies are needed.
    Pending,
    /// Every reply needed arrived (or no longer can): the operation answers its client.
    Decided,
}

impl PageOperation {
    /// A replica's page (or refusal) of the interval starting at `from`.
    fn record(
        &mut self,
        from_node: NodeId,
        from: u64,
        page: Result<ScanPage, ReplicaError>,
    ) -> Progress {
        if self.from != from
            || !self.replicas.contains(&from_node)
            || self.answered.contains(&from_node)
            || self.refused.contains(&from_node)
        {
            return Progress::Stale;
        }
        match page {
            Ok(page) => {
                self.answered.push(from_node);
                self.pages.push(page);
            }
            Err(_) => self.refused.push(from_node),
        }
        if self.met() || self.hopeless() {
            Progress::Decided
        } else {
            Progress::Pending
        }
    }

    fn met(&self) -> bool {
        self.answered.len() >= usize::from(self.needed)
    }

    /// Too many replicas refused for the rest to make up the count.
    fn hopeless(&self) -> bool {
        self.replicas.len().saturating_sub(self.refused.len()) < usize::from(self.needed)
    }

    /// The client's answer once decided: the merged page, judged at the hybrid `now_micros`.
    fn reply(&self, now_micros: u64) -> ClientReply {
        if !self.met() {
            return self.unavailable();
        }
        let (keys, next) = merge_pages(&self.pages, self.to, now_micros);
        ClientReply::ScanPage {
            keys,
            next,
            acks: acks(self.answered.len()),
        }
    }

    fn unavailable(&self) -> ClientReply {
        ClientReply::Unavailable {
            acks: acks(self.answered.len()),
            needed: self.needed,
        }
    }

    fn check_invariants(&self) {
        assert!(self.needed >= 1, "a page waits for at least one replica");
        assert!(
            usize::from(self.needed) <= self.replicas.len(),
            "a page never waits for more replicas than it asked"
        );
        assert!(
            self.answered.len() < usize::from(self.needed),
            "a page with its replies is answered"
        );
        assert!(
            !self.hopeless(),
            "a page that can no longer be answered is answered"
        );
        assert!(self.answered.iter().all(|a| self.replicas.contains(a)));
        assert!(self.refused.iter().all(|r| self.replicas.contains(r)));
        assert!(self.refused.iter().all(|r| !self.answered.contains(r)));
        assert_eq!(self.answered.len(), self.pages.len());
        assert!(self.from <= self.to);
    }
}

impl CountOperation {
    /// A member's live-key counters: (token ending a range, live keys it holds there).
    fn record(&mut self, from: NodeId, ranges: Vec<(u64, u64)>) -> Progress {
        if !self.members.contains(&from) || self.answered.contains(&from) {
            return Progress::Stale;
        }
        self.answered.push(from);
        for (token, live) in ranges {
            let best = self.per_range.entry(token).or_default();
            *best = (*best).max(live);
        }
        if self.answered.len() < self.members.len() {
            Progress::Pending
        } else {
            Progress::Decided
        }
    }

    /// Per range the largest count any member gave, summed; unavailable if nobody answered.
    fn reply(&self) -> ClientReply {
        if self.answered.is_empty() {
            return ClientReply::Unavailable {
                acks: 0,
                needed: acks(self.members.len()),
            };
        }
        ClientReply::KeyCount {
            live_keys: self.per_range.values().sum(),
            answered: u32::try_from(self.answered.len()).unwrap_or(u32::MAX),
            members: u32::try_from(self.members.len()).unwrap_or(u32::MAX),
        }
    }

    fn check_invariants(&self) {
        assert!(self.answered.len() < self.members.len());
        assert!(self.answered.iter().all(|a| self.members.contains(a)));
        assert!(
            !self.answered.is_empty() || self.per_range.is_empty(),
            "counts come only from members that answered"
        );
    }
}

fn acks(count: usize) -> u8 {
    u8::try_from(count).unwrap_or(u8::MAX)
}

/// The replicas a page waits for at `level` (the cluster's when `None`): a scan is not
/// linearizable, so it reads a majority at that level and at the datacenter levels (a replica
/// count is what a page can wait for). `None`: no count fits the level.
fn page_needed(cluster: &crate::config::ClusterConfig, level: Option<Consistency>) -> Option<u8> {
    let n = cluster.n;
    match level.or(cluster.consistency) {
        None => Some(cluster.r),
        Some(Consistency::Linearizable | Consistency::LocalQuorum | Consistency::EachQuorum) => {
            Consistency::Quorum.required(n)
        }
        Some(level) => level.required(n),
    }
}

// The scan mechanism: coordinator side (pages and counts, tracked in the coordinator's
// operation table so their deadlines are ordered with every other operation's) and replica side
// (answers from the context's token index). Functions over the context and the table: a scan
// has no state of its own beyond its operations.

/// `ClientRequest::Scan`: one page from `from`.
pub(super) fn start_scan<S: Storage>(
    ctx: &mut Context<S>,
    coordinator: &mut Coordinator,
    now: Now,
    request: RequestId,
    from: u64,
    keys_max: u32,
    level: Option<Consistency>,
) {
    if coordinator.in_flight.len() >= ctx.config.cluster.requests_in_flight_max {
        ctx.reply(request, ClientReply::Rejected(RequestError::Busy));
        return;
    }
    let Some(needed) = page_needed(&ctx.config.cluster, level) else {
        let reply = ClientReply::Rejected(RequestError::InvalidConsistency);
        ctx.reply(request, reply);
        return;
    };
    let (to, replicas) = page_interval(&ctx.ring, from, usize::from(ctx.config.cluster.n));
    if replicas.len() < usize::from(needed) {
        let e = if replicas.is_empty() {
            RequestError::NoReplicas
        } else {
            RequestError::InvalidConsistency
        };
        ctx.reply(request, ClientReply::Rejected(e));
        return;
    }
    let keys_max = keys_max.clamp(1, SCAN_PAGE_KEYS_MAX);
    let op = ctx.allocate_operation();
    let page = PageOperation {
        request,
        from,
        to,
        needed,
        replicas: replicas.clone(),
        answered: Vec::new(),
        refused: Vec::new(),
        pages: Vec::new(),
    };
    let deadline = now
        .monotonic
        .saturating_add(ctx.config.cluster.request_timeout());
    coordinator.track(op, Operation::Scan(ScanOperation::Page(page)), deadline);
    for replica in replicas {
        if replica == ctx.id {
            let page = scan_page(ctx, from, to, keys_max);
            on_scan_reply(ctx, coordinator, replica, op, from, page);
        } else {
            let message = Message::ScanRange {
                op,
                from,
                to,
                keys_max,
            };
            ctx.send(replica, message);
        }
    }
}

/// `ClientRequest::CountKeys`: ask every member for its live-key counters.
pub(super) fn start_count<S: Storage>(
    ctx: &mut Context<S>,
    coordinator: &mut Coordinator,
    now: Now,
    request: RequestId,
) {
    if coordinator.in_flight.len() >= ctx.config.cluster.requests_in_flight_max {
        ctx.reply(request, ClientReply::Rejected(RequestError::Busy));
        return;
    }
    let members: Vec<NodeId> = ctx.ring.members().iter().map(|m| m.id).collect();
    if members.is_empty() {
        let reply = ClientReply::Rejected(RequestError::NoReplicas);
        ctx.reply(request, reply);
        return;
    }
    let op = ctx.allocate_operation();
    let count = CountOperation {
        request,
        members: members.clone(),
        answered: Vec::new(),
        per_range: BTreeMap::new(),
    };
    let deadline = now
        .monotonic
        .saturating_add(ctx.config.cluster.request_timeout());
    coordinator.track(op, Operation::Scan(ScanOperation::Count(count)), deadline);
    for member in members {
        if member == ctx.id {
            let ranges = live_counts(ctx);
            on_count_reply(ctx, coordinator, member, op, ranges);
        } else {
            ctx.send(member, Message::CountLive { op });
        }
    }
}

/// This replica's page of `from..=to`, values emptied.
fn scan_page<S: Storage>(
    ctx: &mut Context<S>,
    from: u64,
    to: u64,
    keys_max: u32,
) -> Result<ScanPage, ReplicaError> {
    let mut keys_max = keys_max.clamp(1, SCAN_PAGE_KEYS_MAX) as usize;
    if crate::buggify!(ctx.faults, &mut ctx.rng, "scan/page-size") {
        // Shorter than asked is legal (a replica bounds its own work): the coordinator ends the
        // page at this replica's last token, so the cursor stays exact.
        keys_max = ctx.rng.gen_range(1..=keys_max);
    }
    let (keys, truncated) = ctx
        .scan_index
        .page(from, to, keys_max, SCAN_PAGE_KEY_BYTES_MAX);
    let mut records = Vec::with_capacity(keys.len());
    for key in keys {
        // A key the engine no longer holds (its record collected) is simply absent.
        if let Some(record) = ctx.local_record(&key)? {
            records.push((key, without_values(&record)));
        }
    }
    Ok(ScanPage { records, truncated })
}

/// (token ending each range this node replicates, its live keys here).
fn live_counts<S>(ctx: &Context<S>) -> Vec<(u64, u64)> {
    let tokens: Vec<u64> = ctx.ring.tokens().map(|(t, _)| t).collect();
    ctx.my_ranges
        .iter()
        .filter_map(|(range, _)| {
            let token = tokens.get(*range as usize)?;
            Some((*token, ctx.scan_index.live_in(*range)))
        })
        .collect()
}

/// A coordinator asks this replica for its page of `from..=to`.
pub(super) fn serve_scan_range<S: Storage>(
    ctx: &mut Context<S>,
    from_node: NodeId,
    op: OperationId,
    from: u64,
    to: u64,
    keys_max: u32,
) {
    let page = if from > to {
        Err(ReplicaError::Busy)
    } else {
        scan_page(ctx, from, to, keys_max)
    };
    let reply = Message::ScanRangeReply { op, from, page };
    ctx.send(from_node, reply);
}

/// A coordinator asks this member for its live-key counters.
pub(super) fn serve_count_live<S>(ctx: &mut Context<S>, from: NodeId, op: OperationId) {
    let ranges = live_counts(ctx);
    ctx.send(from, Message::CountLiveReply { op, ranges });
}

/// A replica's page (or refusal) for a scan round trip; stale replies are counted and
/// ignored.
pub(super) fn on_scan_reply<S>(
    ctx: &mut Context<S>,
    coordinator: &mut Coordinator,
    from_node: NodeId,
    op: OperationId,
    from: u64,
    page: Result<ScanPage, ReplicaError>,
) {
    let progress = match coordinator.in_flight.get_mut(op) {
        Some(Operation::Scan(ScanOperation::Page(scan))) => scan.record(from_node, from, page),
        _ => Progress::Stale,
    };
    match progress {
        Progress::Stale => ctx.stats.stale_replies += 1,
        Progress::Pending => {}
        Progress::Decided => {
            if let Some(Operation::Scan(ScanOperation::Page(scan))) = coordinator.untrack(op) {
                let reply = scan.reply(ctx.hybrid_now_micros());
                ctx.reply(scan.request, reply);
            }
        }
    }
}

/// A member's live-key counters for a `DBSIZE` round trip.
pub(super) fn on_count_reply<S>(
    ctx: &mut Context<S>,
    coordinator: &mut Coordinator,
    from: NodeId,
    op: OperationId,
    ranges: Vec<(u64, u64)>,
) {
    let progress = match coordinator.in_flight.get_mut(op) {
        Some(Operation::Scan(ScanOperation::Count(count))) => count.record(from, ranges),
        _ => Progress::Stale,
    };
    match progress {
        Progress::Stale => ctx.stats.stale_replies += 1,
        Progress::Pending => {}
        Progress::Decided => {
            if let Some(Operation::Scan(ScanOperation::Count(count))) = coordinator.untrack(op) {
                ctx.reply(count.request, count.reply());
            }
        }
    }
}

/// A replica could not be sent a scan page request: it counts as its refusal. (A member
/// that cannot be asked for its key count stays silent: the count finishes at its deadline
/// with what the others reported.)
pub(super) fn on_scan_send_failed<S>(
    ctx: &mut Context<S>,
    coordinator: &mut Coordinator,
    to: NodeId,
    message: &Message,
) {
    if let Message::ScanRange { op, from, .. } = *message {
        on_scan_reply(ctx, coordinator, to, op, from, Err(ReplicaError::Busy));
    }
}

/// The deadline of a scan operation: a page is unavailable; a count answers with what the
/// members that answered reported (an estimate), or unavailable if none did.
pub(super) fn on_scan_deadline<S>(ctx: &mut Context<S>, operation: ScanOperation) {
    ctx.reply(operation.request(), operation.expired_reply());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::version::{LwwVersion, Record};

    fn lww(ts: u64, value: Option<&'static [u8]>) -> Record {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: ts,
                node: NodeId(1),
                nonce: 0,
            },
            value: value.map(Bytes::from_static),
            expires_at_micros: None,
        })
    }

    fn key(i: u32) -> Bytes {
        Bytes::from(format!("k{i}"))
    }

    /// Keys sorted by token, as an index holds them.
    fn by_token(count: u32) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = (0..count).map(key).collect();
        keys.sort_by_key(|k| (Ring::key_hash(k), k.clone()));
        keys
    }

    #[test]
    fn the_index_pages_in_token_order_and_says_when_keys_remain() {
        let mut index = ScanIndex::default();
        for i in 0..50 {
            index.update(Some(0), &key(i), i % 5 != 0);
        }
        index.check_invariants();
        index.check_counters();
        assert_eq!(index.live_in(0), 40);
        let all = by_token(50);
        let (first, truncated) = index.page(0, u64::MAX, 20, usize::MAX);
        assert!(truncated);
        assert_eq!(first, all[..20].to_vec());
        let next = Ring::key_hash(&first[19]) + 1;
        let (rest, truncated) = index.page(next, u64::MAX, 100, usize::MAX);
        assert!(!truncated);
        assert_eq!(rest, all[20..].to_vec());
        // An interval ending before the last key: not truncated, stops at `to`.
        let to = Ring::key_hash(&all[9]);
        assert_eq!(
            index.page(0, to, 100, usize::MAX),
            (all[..10].to_vec(), false)
        );
        // Deleting a live key moves the counters back.
        index.update(Some(0), &key(1), false);
        index.update(Some(0), &key(1), false);
        index.check_counters();
        assert_eq!(index.live_in(0), 39);
    }

    #[test]
    fn merged_pages_end_at_the_shortest_truncated_page_and_hide_tombstones() {
        let all = by_token(6);
        let page = |keys: &[Bytes], records: &[Record], truncated| ScanPage {
            records: keys.iter().cloned().zip(records.iter().cloned()).collect(),
            truncated,
        };
        // Replica a: keys 0..4 (truncated after 3); replica b: keys 0..6 with key 1 deleted
        // later and key 2 older than a's tombstone.
        let a = page(
            &all[..4],
            &[
                lww(1, Some(b"v")),
                lww(1, Some(b"v")),
                lww(5, None),
                lww(1, Some(b"v")),
            ],
            true,
        );
        let b = page(
            &all,
            &[
                lww(1, Some(b"v")),
                lww(3, None),
                lww(2, Some(b"v")),
                lww(1, Some(b"v")),
                lww(1, Some(b"v")),
                lww(1, Some(b"v")),
            ],
            false,
        );
        let (keys, next) = merge_pages(&[a.clone(), b.clone()], u64::MAX, 0);
        assert_eq!(keys, vec![all[0].clone(), all[3].clone()]);
        assert_eq!(next, Some(Ring::key_hash(&all[3]) + 1));
        // Neither truncated: the whole interval, and the next page starts after it.
        let whole = ScanPage {
            truncated: false,
            ..a
        };
        let to = Ring::key_hash(&all[5]);
        let (keys, next) = merge_pages(&[whole, b], to, 0);
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert_eq!(next, Some(to + 1));
        // The top of the token space ends the scan.
        assert_eq!(merge_pages(&[], u64::MAX, 0), (Vec::new(), None));
    }

    fn page_operation(replicas: &[u32], needed: u8) -> PageOperation {
        PageOperation {
            request: RequestId(7),
            from: 10,
            to: u64::MAX,
            needed,
            replicas: replicas.iter().map(|&i| NodeId(i)).collect(),
            answered: Vec::new(),
            refused: Vec::new(),
            pages: Vec::new(),
        }
    }

    fn one_key_page(i: u32) -> ScanPage {
        ScanPage {
            records: vec![(key(i), lww(1, Some(b"v")))],
            truncated: false,
        }
    }

    #[test]
    fn a_page_waits_for_its_count_ignores_strays_and_gives_up_when_too_many_refuse() {
        let mut page = page_operation(&[0, 1, 2], 2);
        page.check_invariants();
        // (from node, interval start, answer) → progress
        let steps = [
            (5, 10, Ok(one_key_page(1)), Progress::Stale), // not asked
            (0, 11, Ok(one_key_page(1)), Progress::Stale), // another page's reply
            (0, 10, Ok(one_key_page(1)), Progress::Pending),
            (0, 10, Ok(one_key_page(1)), Progress::Stale), // duplicated
            (1, 10, Err(ReplicaError::Busy), Progress::Pending),
            (1, 10, Ok(one_key_page(2)), Progress::Stale), // refused already
        ];
        for (i, (node, from, answer, want)) in steps.into_iter().enumerate() {
            assert_eq!(page.record(NodeId(node), from, answer), want, "step {i}");
            page.check_invariants();
        }
        assert_eq!(
            page.record(NodeId(2), 10, Ok(one_key_page(2))),
            Progress::Decided
        );
        match page.reply(0) {
            ClientReply::ScanPage { keys, next, acks } => {
                let mut want = vec![key(1), key(2)];
                want.sort_by_key(|k| (Ring::key_hash(k), k.clone()));
                assert_eq!((keys, next, acks), (want, None, 2));
            }
            other => panic!("met: {other:?}"),
        }
        // Two refusals of three leave too few replicas for two answers.
        let mut hopeless = page_operation(&[0, 1, 2], 2);
        let busy = || Err(ReplicaError::Busy);
        assert_eq!(hopeless.record(NodeId(0), 10, busy()), Progress::Pending);
        assert_eq!(hopeless.record(NodeId(1), 10, busy()), Progress::Decided);
        assert_eq!(
            hopeless.reply(0),
            ClientReply::Unavailable { acks: 0, needed: 2 }
        );
    }

    #[test]
    fn a_count_takes_the_largest_count_per_range_and_answers_with_what_it_has() {
        let mut count = CountOperation {
            request: RequestId(3),
            members: vec![NodeId(0), NodeId(1), NodeId(2)],
            answered: Vec::new(),
            per_range: BTreeMap::new(),
        };
        count.check_invariants();
        assert_eq!(
            count.reply(),
            ClientReply::Unavailable { acks: 0, needed: 3 },
            "nobody answered"
        );
        assert_eq!(
            count.record(NodeId(0), vec![(100, 4), (200, 1)]),
            Progress::Pending
        );
        assert_eq!(count.record(NodeId(0), vec![(100, 9)]), Progress::Stale);
        assert_eq!(count.record(NodeId(9), vec![(100, 9)]), Progress::Stale);
        count.check_invariants();
        let expired = ScanOperation::Count(count);
        assert_eq!(
            expired.expired_reply(),
            ClientReply::KeyCount {
                live_keys: 5,
                answered: 1,
                members: 3
            },
            "an estimate from those that answered"
        );
        let ScanOperation::Count(mut count) = expired else {
            unreachable!()
        };
        assert_eq!(
            count.record(NodeId(1), vec![(100, 6), (300, 2)]),
            Progress::Pending
        );
        assert_eq!(count.record(NodeId(2), vec![]), Progress::Decided);
        assert_eq!(
            count.reply(),
            ClientReply::KeyCount {
                live_keys: 6 + 1 + 2,
                answered: 3,
                members: 3
            }
        );
    }

    #[test]
    fn a_record_is_live_exactly_when_it_has_live_values() {
        use crate::version::{CounterRecord, Dot, VersionVector};
        let dot = |counter| Dot {
            actor: Default::default(),
            counter,
        };
        let causal = |siblings: Vec<(Dot, Option<Bytes>)>| {
            Record::Causal(CausalRecord {
                clock: VersionVector::default(),
                siblings,
            })
        };
        let records = [
            lww(1, Some(b"value")),
            lww(1, Some(b"")),
            lww(2, None),
            causal(vec![]),
            causal(vec![(dot(1), None)]),
            causal(vec![
                (dot(1), None),
                (dot(2), Some(Bytes::from_static(b"v"))),
            ]),
            Record::Counter(CounterRecord::default()),
        ];
        for record in records {
            assert_eq!(
                is_live(&record),
                !record.live_values().is_empty(),
                "{record:?}"
            );
        }
    }

    #[test]
    fn emptied_records_keep_their_winner_and_liveness() {
        let old = lww(1, Some(b"value"));
        let new = lww(2, None);
        let merged = merge_into(Some(&without_values(&old)), &without_values(&new));
        assert_eq!(merged, Some(without_values(&new)));
        assert!(is_live(&without_values(&old)));
        assert!(!is_live(&without_values(&new)));
        assert_eq!(without_values(&old).value_bytes(), 0);
    }

    #[test]
    fn a_page_interval_covers_whole_ranges_and_the_top_of_the_space() {
        use crate::ring::NodeLocation;
        let mut ring = Ring::new(8);
        for i in 0..5 {
            let location = NodeLocation {
                datacenter: "dc".into(),
                rack: format!("r{i}"),
                weight: 1,
            };
            ring.add_node(NodeId(i), location).expect("fresh");
        }
        let tokens: Vec<u64> = ring.tokens().map(|(t, _)| t).collect();
        // Walk the whole space page by page: contiguous, ends at the top, each page's
        // replicas are those of every key in it.
        let mut from = 0u64;
        let mut pages = 0;
        loop {
            let (to, replicas) = page_interval(&ring, from, 3);
            assert!(to >= from);
            let set = |mut nodes: Vec<NodeId>| {
                nodes.sort_unstable();
                nodes
            };
            assert_eq!(replicas, ring.preference_list_for_hash(from, 3));
            assert_eq!(set(replicas), set(ring.preference_list_for_hash(to, 3)));
            assert!(to == u64::MAX || tokens.contains(&to));
            pages += 1;
            match to.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        assert!(pages <= tokens.len() + 1);
        // With n = all members every range has the same replicas: one page.
        assert_eq!(page_interval(&ring, 0, 5).0, u64::MAX);
    }
}
