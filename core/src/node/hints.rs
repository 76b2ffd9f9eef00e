//! Hinted handoff (PITFALLS: "Hints that grow without bound hurt more than the outage").
//!
//! A fallback node that stands in for a silent replica stores the write as a hint, durably,
//! through the same persist-before-ack handshake, under a reserved key
//! (`HINT_PREFIX | intended node | key`). Hints are replayed to their owner a few per round and
//! deleted only after the owner acknowledged them durably. Each owner's queue is bounded in count
//! and bytes and hints expire after `hint_age_max_ms`; what does not fit or expires is counted and
//! left to anti-entropy, never silently dropped.

use super::durability::AfterPersist;
use super::replica::Applied;
use super::Node;
use crate::id::{NodeId, OperationId};
use crate::message::{Message, ReplicaError};
use crate::storage::Storage;
use crate::time::Now;
use crate::version::{merge_into, Record};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
    /// Hints older than `hint_age_max_ms`, or for owners that left the ring, deleted unsent
    /// (left to anti-entropy).
    pub expired: u64,
}

/// One owner's queue of hints: storage key → bytes.
#[derive(Clone, Debug, Default)]
pub(super) struct HintQueue {
    keys: BTreeMap<Bytes, u64>,
    bytes: u64,
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

impl<S: Storage> Node<S> {
    /// Reloads the hint queues from storage (at start-up).
    pub(super) fn rebuild_hints(&mut self) {
        self.hints.clear();
        let Ok(batch) = self.storage.scan(HINT_PREFIX, usize::MAX >> 1) else {
            return;
        };
        for (stored, record) in batch {
            if !stored.starts_with(HINT_PREFIX) {
                break;
            }
            if let Some((owner, _)) = parse_hint_key(&stored) {
                let queue = self.hints.entry(owner).or_default();
                let size = stored.len() as u64 + record.value_bytes() as u64;
                queue.bytes += size;
                queue.keys.insert(stored, size);
            }
        }
    }

    /// Stores a hint for `owner` and arranges `then` once it is durable.
    pub(super) fn store_hint(
        &mut self,
        owner: NodeId,
        key: Bytes,
        record: &Record,
        then: AfterPersist,
    ) -> Result<Applied, ReplicaError> {
        if !self.ring.contains(owner) {
            // The owner left the ring: nobody will ever take this hint, so refuse it rather than
            // acknowledge a copy that cannot count.
            return Err(ReplicaError::Busy);
        }
        let stored = hint_key(owner, &key);
        let size = stored.len() as u64 + record.value_bytes() as u64;
        let cluster = &self.config.cluster;
        let queue = self.hints.entry(owner).or_default();
        let fresh = !queue.keys.contains_key(&stored);
        if fresh
            && (queue.keys.len() >= cluster.hints_per_target_max
                || queue.bytes + size > cluster.hint_bytes_per_target_max)
        {
            self.hint_stats.overflowed += 1;
            return Err(ReplicaError::Busy);
        }
        let local = self
            .storage
            .get(&stored)
            .map_err(|_| ReplicaError::Storage)?;
        if let Some(merged) = merge_into(local.as_ref(), record) {
            if self.durability.is_poisoned() {
                return Err(ReplicaError::Storage);
            }
            self.storage
                .put(stored.clone(), merged)
                .map_err(|_| ReplicaError::Storage)?;
            self.durability.staged_one();
        }
        let queue = self.hints.entry(owner).or_default();
        let old = queue.keys.insert(stored, size).unwrap_or(0);
        queue.bytes = queue.bytes + size - old;
        self.hint_stats.stored += 1;
        self.wait_durable(then)
    }

    /// A coordinator asked this node to keep a hint for `owner`.
    pub(super) fn serve_hinted_write(
        &mut self,
        from: NodeId,
        op: OperationId,
        key: Bytes,
        record: Record,
        owner: NodeId,
    ) {
        self.observe_record(Some(&record));
        let then = AfterPersist::AckRemote { to: from, op };
        match self.store_hint(owner, key, &record, then) {
            Ok(Applied::Now) => self.send(from, Message::WriteReply { op, result: Ok(()) }),
            Ok(Applied::Pending) => {}
            Err(e) => self.send(from, Message::WriteReply { op, result: Err(e) }),
        }
    }

    /// Arms the replay timer lazily.
    pub(super) fn arm_hint_replay(&mut self, now: Now) {
        if self.config.cluster.sloppy_quorum && self.next_hint_replay.is_none() {
            let interval = self.config.cluster.hint_replay_interval_ms;
            self.next_hint_replay = Some(
                now.monotonic
                    .saturating_add(Duration::from_millis(interval)),
            );
        }
    }

    /// One replay round: up to `hint_replays_per_round` hints go to their owners.
    pub(super) fn replay_hints(&mut self, now: Now) {
        let cluster = self.config.cluster.clone();
        self.next_hint_replay = Some(
            now.monotonic
                .saturating_add(Duration::from_millis(cluster.hint_replay_interval_ms)),
        );
        // Replies to replays older than two rounds are not coming (the owner was unreachable):
        // forget them, so the hints are sent again.
        self.hint_round += 1;
        let round = self.hint_round;
        let stale: Vec<OperationId> = self
            .hint_replays
            .iter()
            .filter(|(_, (_, _, sent, _))| sent + 2 <= round)
            .map(|(&op, _)| op)
            .collect();
        for op in stale {
            if let Some((_, stored, _, _)) = self.hint_replays.remove(&op) {
                self.hints_in_flight.remove(&stored);
            }
        }
        self.drop_hints_of_departed();
        let mut budget = cluster.hint_replays_per_round;
        let owners: Vec<NodeId> = self.hints.keys().copied().collect();
        let age_max_micros = cluster.hint_age_max_ms.saturating_mul(1000);
        for owner in owners {
            // The failure detector says it is down: replaying now is wasted, but its hints still
            // age out on time.
            let owner_down = self.is_down(owner);
            let candidates: Vec<Bytes> = self.hints.get(&owner).map_or_else(Vec::new, |q| {
                q.keys
                    .keys()
                    .filter(|k| !self.hints_in_flight.contains(*k))
                    .take(budget)
                    .cloned()
                    .collect()
            });
            for stored in candidates {
                let Some((_, key)) = parse_hint_key(&stored) else {
                    continue;
                };
                let record = match self.storage.get(&stored) {
                    Ok(Some(record)) => record,
                    _ => {
                        self.forget_hint(owner, &stored);
                        continue;
                    }
                };
                let expired = match &record {
                    Record::Lww(r) => {
                        now.wall.0.saturating_sub(r.version.timestamp_micros) > age_max_micros
                    }
                    Record::Causal(_) => false,
                };
                if expired {
                    self.hint_stats.expired += 1;
                    self.delete_hint(owner, &stored);
                    continue;
                }
                if owner_down {
                    continue;
                }
                let op = self.allocate_operation();
                self.hint_replays
                    .insert(op, (owner, stored.clone(), round, record.clone()));
                self.hints_in_flight.insert(stored);
                self.hint_stats.replayed += 1;
                self.send(owner, Message::Write { op, key, record });
                budget -= 1;
                if budget == 0 {
                    return;
                }
            }
        }
    }

    /// The owner answered a replay: delete the hint once it holds it durably — but only if the
    /// hint still holds what was delivered. A newer write for the same owner and key may have been
    /// merged into the hint while the replay was in flight; deleting it then would lose an
    /// acknowledged write (found by the simulator: partition-sloppy, seed 639).
    pub(super) fn on_hint_replay_reply(&mut self, op: OperationId, ok: bool) -> bool {
        let Some((owner, stored, _, delivered)) = self.hint_replays.remove(&op) else {
            return false;
        };
        self.hints_in_flight.remove(&stored);
        if ok {
            let current = self.storage.get(&stored).ok().flatten();
            if current.as_ref() == Some(&delivered) {
                self.hint_stats.delivered += 1;
                self.delete_hint(owner, &stored);
            }
        }
        true
    }

    fn delete_hint(&mut self, owner: NodeId, stored: &Bytes) {
        if self.storage.delete(stored).is_ok() {
            self.durability.staged_one();
        }
        self.forget_hint(owner, stored);
    }

    fn forget_hint(&mut self, owner: NodeId, stored: &Bytes) {
        if let Some(queue) = self.hints.get_mut(&owner) {
            if let Some(size) = queue.keys.remove(stored) {
                queue.bytes -= size;
            }
            if queue.keys.is_empty() {
                self.hints.remove(&owner);
            }
        }
    }

    /// Deletes the hints of owners that are no longer ring members (left or removed): their ranges
    /// now belong to other replicas, which anti-entropy fills. Counted as expired.
    pub(super) fn drop_hints_of_departed(&mut self) {
        let departed: Vec<NodeId> = self
            .hints
            .keys()
            .copied()
            .filter(|o| !self.ring.contains(*o))
            .collect();
        for owner in departed {
            let keys: Vec<Bytes> = self
                .hints
                .get(&owner)
                .map_or_else(Vec::new, |q| q.keys.keys().cloned().collect());
            for stored in keys {
                self.hint_stats.expired += 1;
                self.delete_hint(owner, &stored);
            }
        }
    }

    /// Hints waiting, per owner: (count, bytes).
    pub fn pending_hints(&self) -> BTreeMap<NodeId, (usize, u64)> {
        self.hints
            .iter()
            .map(|(&owner, q)| (owner, (q.keys.len(), q.bytes)))
            .collect()
    }

    /// Hint counters.
    pub fn hint_stats(&self) -> &HintStats {
        &self.hint_stats
    }
}

/// Keys in flight for replay (kept beside the queues).
pub(super) type InFlightHints = BTreeSet<Bytes>;

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fallback_is_the_next_uninvolved_node_along_the_ring() {
        let walk = [NodeId(3), NodeId(1), NodeId(4), NodeId(0), NodeId(2)];
        assert_eq!(
            choose_fallback(&walk, &[NodeId(3), NodeId(1), NodeId(4)]),
            Some(NodeId(0))
        );
        assert_eq!(choose_fallback(&walk, &walk), None);
    }
}
