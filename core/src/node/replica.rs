//! The replica side: serve reads, merge writes, and acknowledge only once durable.

use super::durability::AfterPersist;
use super::{Node, NodeEvent, Output};
use crate::id::{key_digest, NodeId, OperationId};
use crate::message::{Message, ReplicaError};
use crate::storage::{Storage, StorageError};
use crate::version::{merge_into, Record};
use bytes::Bytes;

/// The result of merging a record into local storage.
pub(super) enum Applied {
    /// Merged; acknowledge once the contained work is released by the pipeline.
    Pending,
    /// Nothing was pending: the caller may acknowledge now.
    Now,
}

impl<S: Storage> Node<S> {
    /// Reads the local record, reporting storage errors as an event.
    pub(super) fn local_record(&mut self, key: &[u8]) -> Result<Option<Record>, ReplicaError> {
        if self.durability.is_poisoned() {
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

    pub(super) fn serve_read(&mut self, from: NodeId, op: OperationId, key: &[u8]) {
        let record = self.local_record(key);
        self.observe_record(record.as_ref().ok().and_then(Option::as_ref));
        let key_digest = key_digest(key);
        self.send(
            from,
            Message::ReadReply {
                op,
                key_digest,
                record,
            },
        );
    }

    pub(super) fn serve_write(
        &mut self,
        from: NodeId,
        op: OperationId,
        key: Bytes,
        record: Record,
    ) {
        let nth = self.config.cluster.unsafe_drop_every_nth_write;
        if nth > 0 {
            self.writes_received += 1;
            if self.writes_received.is_multiple_of(u64::from(nth)) {
                return;
            }
        }
        self.observe_record(Some(&record));
        let key_digest = key_digest(&key);
        let then = AfterPersist::AckRemote {
            to: from,
            op,
            key_digest,
        };
        match self.apply(key, &record, then) {
            Ok(Applied::Now) => self.after_persist(then),
            Ok(Applied::Pending) => {}
            Err(e) => self.send(
                from,
                Message::WriteReply {
                    op,
                    key_digest,
                    result: Err(e),
                },
            ),
        }
    }

    /// Merges `record` into storage and arranges for `then` once it (and anything staged before
    /// it) is durable. The stored record after the merge always includes `record`.
    pub(super) fn apply(
        &mut self,
        key: Bytes,
        record: &Record,
        then: AfterPersist,
    ) -> Result<Applied, ReplicaError> {
        let local = self.local_record(&key)?;
        if let Some(merged) = merge_into(local.as_ref(), record) {
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
        Ok(match self.durability.after_pending(then) {
            Some(_) => Applied::Now,
            None => Applied::Pending,
        })
    }

    pub(super) fn after_persist(&mut self, then: AfterPersist) {
        match then {
            AfterPersist::AckRemote { to, op, key_digest } => {
                let result = Ok(());
                let reply = Message::WriteReply {
                    op,
                    key_digest,
                    result,
                };
                self.send(to, reply);
            }
            AfterPersist::AckLocal(op) => self.on_local_write_durable(op),
            AfterPersist::HandoverDurable(mark) => self.on_handover_durable(mark),
            AfterPersist::Nothing => {}
        }
    }

    pub(super) fn after_persist_failed(&mut self, then: AfterPersist) {
        match then {
            AfterPersist::AckRemote { to, op, key_digest } => {
                let result = Err(ReplicaError::Storage);
                let reply = Message::WriteReply {
                    op,
                    key_digest,
                    result,
                };
                self.send(to, reply);
            }
            AfterPersist::AckLocal(op) => {
                let id = self.id;
                self.on_write_reply(id, op, None, Err(ReplicaError::Storage));
            }
            // A poisoned node never becomes durable: its handover stays pending.
            AfterPersist::HandoverDurable(_) | AfterPersist::Nothing => {}
        }
    }

    /// Keeps the hybrid clock ahead of every timestamp seen, so causally later writes win.
    pub(super) fn observe_record(&mut self, record: Option<&Record>) {
        if let Some(Record::Lww(r)) = record {
            self.clock.observe(r.version.timestamp_micros);
        }
    }
}
