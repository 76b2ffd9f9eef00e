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

use super::coordinator::Operation;
use super::Node;
use crate::client::{ClientReply, Consistency, RequestError};
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::{Message, ReplicaError, ScanPage};
use crate::ring::Ring;
use crate::storage::Storage;
use crate::time::Now;
use crate::version::{merge_into, CausalRecord, LwwRecord, Record};
use bytes::Bytes;
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
    !record.live_values().is_empty()
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
    pub(super) fn update(&mut self, range: Option<u32>, key: &Bytes, live: bool) {
        let token = Ring::key_hash(key);
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
            ScanOperation::Page(page) => {
                assert!(
                    page.answered.len() < usize::from(page.needed),
                    "a page with its replies is answered"
                );
                assert!(page.answered.iter().all(|a| page.replicas.contains(a)));
                assert!(page.refused.iter().all(|r| !page.answered.contains(r)));
                assert_eq!(page.answered.len(), page.pages.len());
                assert!(page.from <= page.to);
            }
            ScanOperation::Count(count) => {
                assert!(count.answered.len() < count.members.len());
                assert!(count.answered.iter().all(|a| count.members.contains(a)));
            }
        }
    }
}

fn acks(count: usize) -> u8 {
    u8::try_from(count).unwrap_or(u8::MAX)
}

impl<S: Storage> Node<S> {
    /// `ClientRequest::Scan`: one page from `from`.
    pub(super) fn start_scan(
        &mut self,
        now: Now,
        request: RequestId,
        from: u64,
        keys_max: u32,
        level: Option<Consistency>,
    ) {
        if self.operations_in_flight() >= self.ctx.config.cluster.requests_in_flight_max {
            self.ctx
                .reply(request, ClientReply::Rejected(RequestError::Busy));
            return;
        }
        let cluster = &self.ctx.config.cluster;
        let n = cluster.n;
        // A scan is not linearizable: it reads a majority at that level and at the datacenter
        // levels (a replica count is what a page can wait for).
        let needed = match level.or(cluster.consistency) {
            None => Some(cluster.r),
            Some(
                Consistency::Linearizable | Consistency::LocalQuorum | Consistency::EachQuorum,
            ) => Consistency::Quorum.required(n),
            Some(level) => level.required(n),
        };
        let Some(needed) = needed else {
            let reply = ClientReply::Rejected(RequestError::InvalidConsistency);
            self.ctx.reply(request, reply);
            return;
        };
        let (to, replicas) = page_interval(&self.ctx.ring, from, usize::from(n));
        if replicas.len() < usize::from(needed) {
            let e = if replicas.is_empty() {
                RequestError::NoReplicas
            } else {
                RequestError::InvalidConsistency
            };
            self.ctx.reply(request, ClientReply::Rejected(e));
            return;
        }
        let keys_max = keys_max.clamp(1, SCAN_PAGE_KEYS_MAX);
        let op = self.ctx.allocate_operation();
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
            .saturating_add(self.ctx.config.cluster.request_timeout());
        self.coordinator
            .track(op, Operation::Scan(ScanOperation::Page(page)), deadline);
        for replica in replicas {
            if replica == self.ctx.id {
                let page = self.scan_page(from, to, keys_max);
                self.on_scan_reply(replica, op, from, page);
            } else {
                let message = Message::ScanRange {
                    op,
                    from,
                    to,
                    keys_max,
                };
                self.ctx.send(replica, message);
            }
        }
    }

    /// `ClientRequest::CountKeys`: ask every member for its live-key counters.
    pub(super) fn start_count(&mut self, now: Now, request: RequestId) {
        if self.operations_in_flight() >= self.ctx.config.cluster.requests_in_flight_max {
            self.ctx
                .reply(request, ClientReply::Rejected(RequestError::Busy));
            return;
        }
        let members: Vec<NodeId> = self.ctx.ring.members().iter().map(|m| m.id).collect();
        if members.is_empty() {
            let reply = ClientReply::Rejected(RequestError::NoReplicas);
            self.ctx.reply(request, reply);
            return;
        }
        let op = self.ctx.allocate_operation();
        let count = CountOperation {
            request,
            members: members.clone(),
            answered: Vec::new(),
            per_range: BTreeMap::new(),
        };
        let deadline = now
            .monotonic
            .saturating_add(self.ctx.config.cluster.request_timeout());
        self.coordinator
            .track(op, Operation::Scan(ScanOperation::Count(count)), deadline);
        for member in members {
            if member == self.ctx.id {
                let ranges = self.live_counts();
                self.on_count_reply(member, op, ranges);
            } else {
                self.ctx.send(member, Message::CountLive { op });
            }
        }
    }

    /// This replica's page of `from..=to`, values emptied.
    pub(super) fn scan_page(
        &mut self,
        from: u64,
        to: u64,
        keys_max: u32,
    ) -> Result<ScanPage, ReplicaError> {
        let keys_max = keys_max.clamp(1, SCAN_PAGE_KEYS_MAX) as usize;
        let (keys, truncated) =
            self.ctx
                .scan_index
                .page(from, to, keys_max, SCAN_PAGE_KEY_BYTES_MAX);
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            // A key the engine no longer holds (its record collected) is simply absent.
            if let Some(record) = self.ctx.local_record(&key)? {
                records.push((key, without_values(&record)));
            }
        }
        Ok(ScanPage { records, truncated })
    }

    /// (token ending each range this node replicates, its live keys here).
    pub(super) fn live_counts(&self) -> Vec<(u64, u64)> {
        let tokens: Vec<u64> = self.ctx.ring.tokens().map(|(t, _)| t).collect();
        self.ctx
            .my_ranges
            .iter()
            .filter_map(|(range, _)| {
                let token = tokens.get(*range as usize)?;
                Some((*token, self.ctx.scan_index.live_in(*range)))
            })
            .collect()
    }

    pub(super) fn serve_scan_range(
        &mut self,
        from_node: NodeId,
        op: OperationId,
        from: u64,
        to: u64,
        keys_max: u32,
    ) {
        let page = if from > to {
            Err(ReplicaError::Busy)
        } else {
            self.scan_page(from, to, keys_max)
        };
        let reply = Message::ScanRangeReply { op, from, page };
        self.ctx.send(from_node, reply);
    }

    pub(super) fn serve_count_live(&mut self, from: NodeId, op: OperationId) {
        let ranges = self.live_counts();
        self.ctx.send(from, Message::CountLiveReply { op, ranges });
    }

    /// A replica's page (or refusal) for a scan round trip; stale replies are counted and
    /// ignored.
    pub(super) fn on_scan_reply(
        &mut self,
        from_node: NodeId,
        op: OperationId,
        from: u64,
        page: Result<ScanPage, ReplicaError>,
    ) {
        let Some((_, Operation::Scan(ScanOperation::Page(scan)))) =
            self.coordinator.operations.get_mut(&op)
        else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        if scan.from != from
            || !scan.replicas.contains(&from_node)
            || scan.answered.contains(&from_node)
            || scan.refused.contains(&from_node)
        {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        match page {
            Ok(page) => {
                scan.answered.push(from_node);
                scan.pages.push(page);
            }
            Err(_) => scan.refused.push(from_node),
        }
        let met = scan.answered.len() >= usize::from(scan.needed);
        let hopeless =
            scan.replicas.len().saturating_sub(scan.refused.len()) < usize::from(scan.needed);
        if !met && !hopeless {
            return;
        }
        let Some(Operation::Scan(ScanOperation::Page(scan))) = self.coordinator.untrack(op) else {
            return;
        };
        let reply = if met {
            let (keys, next) = merge_pages(&scan.pages, scan.to, self.ctx.hybrid_now_micros());
            ClientReply::ScanPage {
                keys,
                next,
                acks: acks(scan.answered.len()),
            }
        } else {
            ClientReply::Unavailable {
                acks: acks(scan.answered.len()),
                needed: scan.needed,
            }
        };
        self.ctx.reply(scan.request, reply);
    }

    /// A member's live-key counters for a `DBSIZE` round trip.
    pub(super) fn on_count_reply(
        &mut self,
        from: NodeId,
        op: OperationId,
        ranges: Vec<(u64, u64)>,
    ) {
        let Some((_, Operation::Scan(ScanOperation::Count(count)))) =
            self.coordinator.operations.get_mut(&op)
        else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        if !count.members.contains(&from) || count.answered.contains(&from) {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        count.answered.push(from);
        for (token, live) in ranges {
            let best = count.per_range.entry(token).or_default();
            *best = (*best).max(live);
        }
        if count.answered.len() < count.members.len() {
            return;
        }
        if let Some(Operation::Scan(operation)) = self.coordinator.untrack(op) {
            self.finish_scan_operation(operation);
        }
    }

    /// A replica could not be sent a scan page request: it counts as its refusal. (A member
    /// that cannot be asked for its key count stays silent: the count finishes at its deadline
    /// with what the others reported.)
    pub(super) fn on_scan_send_failed(&mut self, to: NodeId, message: &Message) {
        if let Message::ScanRange { op, from, .. } = *message {
            self.on_scan_reply(to, op, from, Err(ReplicaError::Busy));
        }
    }

    /// The deadline of a scan operation: a page is unavailable; a count answers with what the
    /// members that answered reported (an estimate), or unavailable if none did.
    pub(super) fn on_scan_deadline(&mut self, operation: ScanOperation) {
        self.finish_scan_operation(operation);
    }

    fn finish_scan_operation(&mut self, operation: ScanOperation) {
        match operation {
            ScanOperation::Page(scan) => {
                let reply = ClientReply::Unavailable {
                    acks: acks(scan.answered.len()),
                    needed: scan.needed,
                };
                self.ctx.reply(scan.request, reply);
            }
            ScanOperation::Count(count) if count.answered.is_empty() => {
                let reply = ClientReply::Unavailable {
                    acks: 0,
                    needed: acks(count.members.len()),
                };
                self.ctx.reply(count.request, reply);
            }
            ScanOperation::Count(count) => {
                let reply = ClientReply::KeyCount {
                    live_keys: count.per_range.values().sum(),
                    answered: u32::try_from(count.answered.len()).unwrap_or(u32::MAX),
                    members: u32::try_from(count.members.len()).unwrap_or(u32::MAX),
                };
                self.ctx.reply(count.request, reply);
            }
        }
    }
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
