//! The replica side: serve reads, merge writes, and acknowledge only once durable.

use super::context::Context;
use super::durability::AfterPersist;
use crate::id::{key_digest, NodeId, OperationId};
use crate::message::{Message, ReplicaError};
use crate::storage::Storage;
use crate::version::Record;
use bytes::Bytes;

/// The replica's own state.
#[derive(Default)]
pub(super) struct Replica {
    /// Writes received from coordinators (for the test-only drop knob).
    pub(super) writes_received: u64,
}

/// The result of merging a record into local storage.
#[derive(Debug)]
pub(super) enum Applied {
    /// Merged; acknowledge once the contained work is released by the pipeline.
    Pending,
    /// Nothing was pending: the caller may acknowledge now.
    Now,
}

impl Replica {
    /// A coordinator's `Read`: answers with the local record (or the refusal to read it).
    pub(super) fn serve_read<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key: &[u8],
    ) {
        let record = ctx.local_record(key);
        ctx.observe_record(record.as_ref().ok().and_then(Option::as_ref));
        let key_digest = key_digest(key);
        ctx.send(
            from,
            Message::ReadReply {
                op,
                key_digest,
                record,
            },
        );
    }

    /// A coordinator's `Write`: merged into local storage and acknowledged once durable (at
    /// once when nothing is pending; otherwise `AfterPersist::AckRemote` does it later).
    pub(super) fn serve_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key: Bytes,
        record: Record,
    ) {
        let nth = ctx.config.cluster.unsafe_drop_every_nth_write;
        if nth > 0 {
            self.writes_received += 1;
            if self.writes_received.is_multiple_of(u64::from(nth)) {
                return;
            }
        }
        ctx.observe_record(Some(&record));
        let key_digest = key_digest(&key);
        let then = AfterPersist::AckRemote {
            to: from,
            op,
            key_digest,
        };
        let applied = ctx.apply_with(key, &record, then, Context::merge_received);
        Self::acknowledge(ctx, from, op, key_digest, applied);
    }

    /// Answers a write round trip according to how its record was applied: now if it is
    /// already durable, never if it waits (the durability pipeline answers then), and at once
    /// with the refusal if it failed.
    pub(super) fn acknowledge<S>(
        ctx: &mut Context<S>,
        to: NodeId,
        op: OperationId,
        key_digest: u64,
        applied: Result<Applied, ReplicaError>,
    ) {
        let result = match applied {
            Ok(Applied::Now) => Ok(()),
            Ok(Applied::Pending) => return,
            Err(e) => Err(e),
        };
        ctx.send(
            to,
            Message::WriteReply {
                op,
                key_digest,
                result,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, NodeConfig};
    use crate::node::{Node, Output};
    use crate::ring::{NodeLocation, Ring};
    use crate::storage::{MemStorage, StorageError};
    use crate::time::{Instant, Now, WallMicros};
    use crate::version::{LwwRecord, LwwVersion};

    /// Storage whose reads go on after a failed sync, as the LSM engine's do (a poisoned engine
    /// is read-only, not unreadable).
    #[derive(Debug, Default)]
    struct ReadOnlyAfterFailure {
        inner: MemStorage,
        fail_next_sync: bool,
        /// Refuse puts as a full disk does (no effect, nothing poisoned).
        full: bool,
    }

    impl Storage for ReadOnlyAfterFailure {
        fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StorageError> {
            self.inner.get(key)
        }
        fn put(&mut self, key: Bytes, record: Record) -> Result<(), StorageError> {
            if self.full {
                return Err(StorageError::NoSpace("disk full".into()));
            }
            self.inner.put(key, record)
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), StorageError> {
            self.inner.delete(key)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            if std::mem::take(&mut self.fail_next_sync) {
                return Err(StorageError::Poisoned("injected fsync failure".into()));
            }
            self.inner.sync()
        }
        fn scan(
            &mut self,
            start: &[u8],
            limit: usize,
        ) -> Result<Vec<(Bytes, Record)>, StorageError> {
            self.inner.scan(start, limit)
        }
    }

    fn record(ts: u64) -> Record {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: ts,
                node: NodeId(1),
                nonce: 0,
            },
            value: Some(Bytes::from_static(b"v")),
            expires_at_micros: None,
        })
    }

    /// Feeds every `Persist` to storage (failing if the storage says so) and returns the
    /// `ReadReply` records sent.
    fn drain(
        node: &mut Node<ReadOnlyAfterFailure>,
        now: Now,
    ) -> Vec<Result<Option<Record>, ReplicaError>> {
        let mut replies = Vec::new();
        while let Some(output) = node.poll_output() {
            match output {
                Output::Persist { token } => match node.storage_mut().sync() {
                    Ok(()) => node.handle_persisted(now, token),
                    Err(e) => node.handle_persist_failed(now, token, e.to_string()),
                },
                Output::Send {
                    message: Message::ReadReply { record, .. },
                    ..
                } => replies.push(record),
                _ => {}
            }
        }
        replies
    }

    /// Issue 17, item 7: after a failed sync, a key whose record is durable is still read; a key
    /// staged after the last completed sync is refused (its record may vanish at restart, and a
    /// read returning it could go backwards).
    #[test]
    fn after_a_failed_sync_durable_records_are_read_and_unsynced_ones_refused() {
        let now = Now {
            monotonic: Instant::from_nanos(1),
            wall: WallMicros(1_000_000),
        };
        let mut ring = Ring::new(8);
        for i in 0..2 {
            let location = NodeLocation {
                datacenter: "dc".into(),
                rack: format!("r{i}"),
                weight: 1,
            };
            ring.add_node(NodeId(i), location).expect("fresh");
        }
        let config = NodeConfig {
            id: NodeId(0),
            cluster: ClusterConfig::default(),
            rng_seed: 0,
        };
        let mut node =
            Node::new(config, ring, ReadOnlyAfterFailure::default(), now).expect("valid config");
        drain(&mut node, now);
        let (durable, unsynced) = (
            Bytes::from_static(b"durable"),
            Bytes::from_static(b"unsynced"),
        );
        let write = |op: u64, key: &Bytes| Message::Write {
            op: OperationId(op),
            key: key.clone(),
            record: record(op),
        };
        node.handle_message(now, NodeId(1), write(1, &durable));
        drain(&mut node, now);
        node.storage_mut().fail_next_sync = true;
        node.handle_message(now, NodeId(1), write(2, &unsynced));
        drain(&mut node, now);
        let read = |op: u64, key: &Bytes| Message::Read {
            op: OperationId(op),
            key: key.clone(),
        };
        node.handle_message(now, NodeId(1), read(3, &durable));
        node.handle_message(now, NodeId(1), read(4, &unsynced));
        node.handle_message(now, NodeId(1), read(5, &Bytes::from_static(b"absent")));
        let replies = drain(&mut node, now);
        assert_eq!(
            replies,
            vec![Ok(Some(record(1))), Err(ReplicaError::Storage), Ok(None)]
        );
        // Writes stay refused: the engine never syncs again.
        node.handle_message(now, NodeId(1), write(6, &durable));
        drain(&mut node, now);
        node.check_invariants();
    }

    /// Issue 17, item 6: a write refused by a full disk had no effect, so a client is told so
    /// (out of disk space), not `INDETERMINATE` nor a failed fsync; once space is back the next
    /// write is accepted with no restart.
    #[test]
    fn a_write_refused_by_a_full_disk_is_answered_out_of_disk_space() {
        use crate::client::{ClientReply, ClientRequest, RequestError};
        use crate::id::RequestId;
        let now = Now {
            monotonic: Instant::from_nanos(1),
            wall: WallMicros(1_000_000),
        };
        let mut ring = Ring::new(8);
        let location = NodeLocation {
            datacenter: "dc".into(),
            rack: "r0".into(),
            weight: 1,
        };
        ring.add_node(NodeId(0), location).expect("fresh");
        let config = NodeConfig {
            id: NodeId(0),
            cluster: ClusterConfig {
                n: 1,
                r: 1,
                w: 1,
                ..ClusterConfig::default()
            },
            rng_seed: 0,
        };
        let mut node =
            Node::new(config, ring, ReadOnlyAfterFailure::default(), now).expect("valid config");
        drain(&mut node, now);
        let put = || ClientRequest::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            context: None,
            consistency: None,
        };
        let reply_to = |node: &mut Node<ReadOnlyAfterFailure>, id: u64| {
            node.handle_client(now, RequestId(id), put());
            let mut reply = None;
            while let Some(output) = node.poll_output() {
                match output {
                    Output::Persist { token } => {
                        node.storage_mut().sync().expect("sync");
                        node.handle_persisted(now, token);
                    }
                    Output::Reply { reply: result, .. } => reply = Some(result),
                    _ => {}
                }
            }
            reply.expect("a reply")
        };
        node.storage_mut().full = true;
        assert_eq!(
            reply_to(&mut node, 1),
            ClientReply::Rejected(RequestError::OutOfDiskSpace)
        );
        node.storage_mut().full = false;
        assert!(
            matches!(reply_to(&mut node, 2), ClientReply::Written { .. }),
            "writes come back with space, without a restart"
        );
        node.check_invariants();
    }
}
