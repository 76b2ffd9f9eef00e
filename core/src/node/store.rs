//! The node's local data: reads and staged writes against the storage engine, with the
//! durability bookkeeping every acknowledgement waits on, and the indexes derived from what is
//! stored (anti-entropy hash trees, the scan token index, a tree rebuild's shadow). Every
//! mechanism that reads or writes local data goes through here, so the indexes never miss a
//! write whoever made it.

use super::context::Context;
use super::durability::AfterPersist;
use super::replica::Applied;
use super::scan::is_live;
use super::{NodeEvent, Output};
use crate::antientropy::RangeTree;
use crate::message::ReplicaError;
use crate::ring::Ring;
use crate::storage::{Storage, StorageError};
use crate::version::{merge_into, Record};
use bytes::Bytes;

/// Keys read per storage scan call while rebuilding the indexes.
const REBUILD_SCAN_BATCH: usize = 4096;

impl<S: Storage> Context<S> {
    /// Reads the local record, reporting storage errors as an event. After a failed sync the
    /// record is served if it is durable, and refused if its key was staged since the last
    /// completed sync: such a record may vanish at restart, and a read that returned it could
    /// then go backwards (issue 17, item 7; `durability`).
    pub(super) fn local_record(&mut self, key: &[u8]) -> Result<Option<Record>, ReplicaError> {
        if !self.durability.readable(key) {
            return Err(ReplicaError::Storage);
        }
        self.storage.get(key).map_err(|e| {
            self.outputs
                .push_back(Output::Event(NodeEvent::StorageError {
                    reason: e.to_string(),
                }));
            ReplicaError::Storage
        })
    }

    /// The local record as a write merges into it: refused at once on poisoned storage, which
    /// can stage nothing, so the write is refused before any effect.
    pub(super) fn local_record_for_write(
        &mut self,
        key: &[u8],
    ) -> Result<Option<Record>, ReplicaError> {
        if self.durability.is_poisoned() {
            return Err(ReplicaError::Storage);
        }
        self.local_record(key)
    }

    /// Merges `record` into storage and arranges for `then` once it (and anything staged before
    /// it) is durable. The stored record after the merge always includes `record`.
    pub(super) fn apply(
        &mut self,
        key: Bytes,
        record: &Record,
        then: AfterPersist,
    ) -> Result<Applied, ReplicaError> {
        self.apply_with(key, record, then, |_, local, incoming| {
            merge_into(local, incoming)
        })
    }

    /// [`Self::apply`] with the merge given: a write received from a coordinator merges through
    /// `merge_received`, where the broken-counters scenario plants its bug.
    pub(super) fn apply_with(
        &mut self,
        key: Bytes,
        record: &Record,
        then: AfterPersist,
        merge: impl Fn(&Self, Option<&Record>, &Record) -> Option<Record>,
    ) -> Result<Applied, ReplicaError> {
        let local = self.local_record_for_write(&key)?;
        if let Some(merged) = merge(self, local.as_ref(), record) {
            self.stage(key, merged)?;
        }
        if matches!(then, AfterPersist::Nothing) {
            return Ok(Applied::Now);
        }
        self.wait_durable(then)
    }

    /// Stages a record in storage.
    pub(super) fn stage(&mut self, key: Bytes, record: Record) -> Result<(), ReplicaError> {
        if self.durability.is_poisoned() {
            return Err(ReplicaError::Storage);
        }
        // The anti-entropy tree learns the record only once storage holds it: a tree that
        // claimed a refused write would hide the difference from every peer.
        match self.storage.put(key.clone(), record.clone()) {
            Ok(()) => {
                self.tree_update(&key, &record);
                self.durability.staged_one();
                self.durability.staged_key(&key);
                Ok(())
            }
            Err(e) => {
                let refused = if matches!(e, StorageError::NoSpace(_)) {
                    // Refused before any effect, poisoning nothing (issue 17, item 6).
                    ReplicaError::NoSpace
                } else {
                    ReplicaError::Storage
                };
                self.outputs
                    .push_back(Output::Event(NodeEvent::StorageError {
                        reason: e.to_string(),
                    }));
                Err(refused)
            }
        }
    }

    /// Queues `then` behind everything staged so far (or reports it can run now).
    pub(super) fn wait_durable(&mut self, then: AfterPersist) -> Result<Applied, ReplicaError> {
        if self.config.cluster.unsafe_ack_before_persist {
            return Ok(Applied::Now);
        }
        if self.durability.is_poisoned() {
            // Nothing becomes durable after a failed sync: a waiter queued now would never be
            // released (the failed sync already refused the ones waiting then).
            return Err(ReplicaError::Storage);
        }
        Ok(match self.durability.after_pending(then) {
            Some(_) => Applied::Now,
            None => Applied::Pending,
        })
    }

    /// Keeps the hybrid clock ahead of every timestamp seen, so causally later writes win.
    pub(super) fn observe_record(&mut self, record: Option<&Record>) {
        match record {
            Some(Record::Lww(r)) => self.clock.observe(r.version.timestamp_micros),
            Some(Record::Counter(r)) => self.clock.observe(r.epoch.timestamp_micros),
            _ => {}
        }
    }

    /// Folds a staged write into the indexes: its range's tree, the scan index and a tree
    /// rebuild's shadow. Called only by `stage` (and `rebuild_indexes`), so no write that storage
    /// holds is missing from an index, whichever mechanism made it.
    fn tree_update(&mut self, key: &Bytes, record: &Record) {
        if key.starts_with(super::hints::RESERVED_PREFIX) {
            return; // hints are not replicated data
        }
        // The token and its range once, for both indexes.
        let token = Ring::key_hash(key);
        let range = self.ring.range_index_for_hash(token);
        self.scan_index
            .update_at(range, token, key, is_live(record));
        if let Some(range) = range {
            self.trees.update(range, key, record);
        }
        self.tree_rebuild.track(&self.ring, key, record);
    }

    /// Rebuilds every index (the hash trees and the scan index) from storage: at start-up and on
    /// every ring change (ranges moved); a later full tree rebuild (`tree_rebuild`) catches bit
    /// rot.
    pub(super) fn rebuild_indexes(&mut self) {
        self.trees.clear();
        self.scan_index.clear();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let batch = match self.storage.scan(&start, REBUILD_SCAN_BATCH) {
                Ok(batch) => batch,
                Err(e) => {
                    self.outputs
                        .push_back(Output::Event(NodeEvent::StorageError {
                            reason: e.to_string(),
                        }));
                    return;
                }
            };
            let Some((last, _)) = batch.last() else { break };
            let mut next = last.to_vec();
            next.push(0);
            let done = batch.len() < REBUILD_SCAN_BATCH;
            for (key, record) in &batch {
                self.tree_update(key, record);
                // Stamps after a restart stay above everything this node stores. The clock floor
                // is a bound set a window ahead, not a stamp: folding it in here (this rebuild
                // also runs on every ring change) would push the clock up to a window ahead of
                // the wall clock on a running node, and its next writes would beat later writes
                // of nodes whose clocks agree with it (lost updates, gossip-20 seeds 3, ...).
                // `load_clock_floor` folds it in once, at start-up, where it is needed.
                if key.as_ref() != super::CLOCK_FLOOR_KEY {
                    self.observe_record(Some(record));
                }
            }
            if done {
                break;
            }
            start = next;
        }
    }

    /// The tree of `range`, created empty if none (a peer may ask about a range not held yet),
    /// to read its hashes.
    pub(super) fn tree_mut(&mut self, range: u32) -> &mut RangeTree {
        self.trees.read(range)
    }

    /// How a replica merges a record a coordinator wrote to it. TEST ONLY knob
    /// `unsafe_counter_merge_adds` (the broken-counters scenario) plants the wrong merge that
    /// adds slots, so the simulator's counters check can be seen to catch it.
    pub(super) fn merge_received(
        &self,
        local: Option<&crate::version::Record>,
        incoming: &crate::version::Record,
    ) -> Option<crate::version::Record> {
        use crate::version::Record;
        if self.config.cluster.unsafe_counter_merge_adds {
            if let (Some(Record::Counter(mine)), Record::Counter(theirs)) = (local, incoming) {
                return Some(Record::Counter(mine.join_adding(theirs)));
            }
        }
        crate::version::merge_into(local, incoming)
    }
}

/// A last-write-wins record of one value, at timestamp `ts`, by node 0: the unit tests' write.
#[cfg(test)]
pub(super) fn test_record(ts: u64) -> Record {
    Record::Lww(crate::version::LwwRecord {
        version: crate::version::LwwVersion {
            timestamp_micros: ts,
            node: crate::id::NodeId(0),
            nonce: 0,
        },
        value: Some(Bytes::from_static(b"v")),
        expires_at_micros: None,
    })
}

/// The unit tests' clock `ms` milliseconds in (monotonic and wall alike).
#[cfg(test)]
pub(super) fn test_now(ms: u64) -> crate::time::Now {
    crate::time::Now {
        monotonic: crate::time::Instant::from_nanos(ms * 1_000_000),
        wall: crate::time::WallMicros(ms * 1_000),
    }
}

/// A context for the unit tests of one mechanism: node `me` of a ring of `nodes` nodes (one
/// rack each, 8 tokens each), over fresh memory storage, its incarnation already durable (as a
/// driver makes it before any input). Built through `Node::new` so it is exactly a node's body.
#[cfg(test)]
pub(super) fn test_context(
    me: u32,
    nodes: u32,
    cluster: crate::config::ClusterConfig,
) -> Context<crate::storage::MemStorage> {
    use crate::ring::NodeLocation;
    let mut ring = Ring::new(8);
    for i in 0..nodes {
        let location = NodeLocation {
            datacenter: "dc".into(),
            rack: format!("r{i}"),
            weight: 1,
        };
        ring.add_node(crate::id::NodeId(i), location)
            .expect("fresh node");
    }
    let config = crate::config::NodeConfig {
        id: crate::id::NodeId(me),
        cluster,
        rng_seed: u64::from(me),
    };
    let start = crate::time::Now {
        monotonic: crate::time::Instant::from_nanos(1),
        wall: crate::time::WallMicros(1_000_000),
    };
    let node =
        super::Node::new(config, ring, crate::storage::MemStorage::new(), start).expect("valid");
    let mut ctx = node.ctx;
    while let Some(output) = ctx.outputs.pop_front() {
        if let Output::Persist { token } = output {
            ctx.storage.sync().expect("memory sync");
            assert!(ctx.durability.persisted(token).is_empty());
        }
    }
    assert!(ctx.incarnation_durable());
    ctx
}
