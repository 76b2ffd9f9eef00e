//! Reads: ask the plan's replicas, merge what R of them answer, and answer the client. At the
//! linearizable level (ABD) the same round trip is the query phase of a read or a write, and a
//! version is then written to a majority (the newest one found, back; or a higher one, for a
//! write) before the client hears anything.
//!
//! That second ABD phase starts here rather than in `write` because what it writes is decided by
//! the query's answer and its purpose ([`ReadPurpose`]); `write` only carries it out. A reply
//! counts only from a node the read asked and about the same key, since a late reply to another
//! round trip must never become this key's answer.

use super::request::Plan;
use super::sloppy::hand_off_point;
use super::{acks, quorum_of, settled, Coordinator, Neighbours, Operation, Origin, WriteOperation};
use crate::client::{CausalContext, ClientReply, RequestError};
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::{Message, ReplicaError};
use crate::node::context::Context;
use crate::quorum::{Quorum, Recorded};
use crate::storage::Storage;
use crate::time::Instant;
use crate::version::{ExpiresAt, LwwRecord, LwwVersion, Record, WriteVersion};
use bytes::Bytes;
use rand::Rng;

/// What a read round trip is for.
#[derive(Debug)]
pub(super) struct ReadStart {
    pub(super) request: RequestId,
    pub(super) purpose: ReadPurpose,
    pub(super) key: Bytes,
    /// Linearizable level: the ring epoch it starts on.
    pub(super) epoch: Option<u64>,
    /// A `GetExpiring` read.
    pub(super) with_expiry: bool,
}

/// Why a read round trip was started.
#[derive(Debug)]
pub(in crate::node) enum ReadPurpose {
    /// A plain read at one/quorum/all: answer with the merge of R replies.
    Plain,
    /// ABD read, query phase: then write the newest version back to a majority.
    LinearizableRead,
    /// ABD write, query phase: then write a strictly higher version to a majority.
    LinearizableWrite {
        /// The value to write, `None` for a delete.
        value: Option<Bytes>,
        /// When the value expires (TTL), resolved against the version the write gets.
        expires: Option<ExpiresAt>,
    },
}

/// A read waiting for replica replies.
#[derive(Debug)]
pub(in crate::node) struct ReadOperation {
    pub(super) request: RequestId,
    pub(super) purpose: ReadPurpose,
    pub(super) key: Bytes,
    /// The level, as replies state it.
    pub(super) needed: u8,
    /// Who was asked (replicas, then fallbacks of a sloppy read) and who answered or refused:
    /// each replica counts once, and a refusal never also as an answer (a duplicated or
    /// retried refusal, or a refusal followed by an answer, is stale).
    pub(super) quorum: Quorum,
    pub(super) merged: Option<Record>,
    /// Refusals that were `Busy` (back-pressure): a read that fails with only such refusals is
    /// rejected as `Busy`, the typed signal to back off, rather than `Unavailable`.
    pub(super) refused_busy: u8,
    /// What each replica answered, for read repair.
    pub(super) records: Vec<(NodeId, Option<Record>)>,
    /// The client has its answer; the operation lives on only to repair late or stale replicas.
    pub(super) replied: bool,
    /// Sloppy quorum: the request's real deadline, while the tracked one is the hand-off point.
    pub(super) sloppy_final: Option<Instant>,
    /// Linearizable level: the ring epoch the operation started on (replicas on another ring
    /// refuse it; see `handover`).
    pub(super) epoch: Option<u64>,
    /// A `GetExpiring` read: the answer carries the value's expiry (see `command::ttl`).
    pub(super) with_expiry: bool,
}

impl Coordinator {
    pub(super) fn start_read<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        start: ReadStart,
        plan: Plan,
    ) {
        let ReadStart {
            request,
            purpose,
            key,
            epoch,
            with_expiry,
        } = start;
        let Plan {
            needed,
            groups,
            replicas,
            deadline,
            ..
        } = plan;
        let op = ctx.allocate_operation();
        let grouped = groups.is_some();
        if epoch.is_none()
            && matches!(purpose, ReadPurpose::Plain)
            && !grouped
            && needed == 1
            && replicas.as_slice() == [ctx.id]
        {
            return Self::read_only_here(ctx, request, &key, with_expiry, deadline);
        }
        let read = ReadOperation {
            request,
            purpose,
            key: key.clone(),
            needed,
            quorum: quorum_of(replicas.clone(), needed, groups),
            merged: None,
            refused_busy: 0,
            records: Vec::with_capacity(replicas.len()),
            replied: false,
            sloppy_final: None,
            epoch,
            with_expiry,
        };
        let mut read = read;
        let mut tracked = deadline;
        // Datacenter levels never hand off: a read at `local_quorum` / `each_quorum` is answered
        // only by majorities of its datacenter groups, which stand-ins outside the groups cannot
        // form (issue #11, item 5; writes at those levels already never hand off).
        if ctx.config.cluster.sloppy_quorum
            && matches!(read.purpose, ReadPurpose::Plain)
            && !grouped
        {
            read.sloppy_final = Some(deadline);
            let started = ctx.last_monotonic;
            tracked = hand_off_point(ctx, started, deadline);
        }
        self.track(op, Operation::Read(Box::new(read)), tracked);
        for replica in replicas {
            if replica == ctx.id {
                let record = match epoch {
                    Some(epoch) => nb
                        .handover
                        .lin_admit(ctx, epoch, &key)
                        .and_then(|()| ctx.local_record(&key)),
                    None => ctx.local_record(&key),
                };
                let id = ctx.id;
                self.on_read_reply(ctx, nb, id, op, None, record);
            } else {
                let key = key.clone();
                let message = match epoch {
                    Some(epoch) => Message::LinRead { op, key, epoch },
                    None => Message::Read { op, key },
                };
                ctx.send(replica, message);
            }
        }
    }

    /// A plain read whose one replica is this node (n = 1, or a level of one answer with only
    /// this node in the plan): answered within the call, so it is never tracked. Its outputs,
    /// random draws and counters are those the tracked path gives for the same read (a tracked
    /// read of one replica settles on its own copy, and has nothing to repair): the tracking
    /// was two ordered-map insertions and removals and a boxed operation per GET, about 10% of
    /// its instructions (issue #15).
    fn read_only_here<S: Storage>(
        ctx: &mut Context<S>,
        request: RequestId,
        key: &Bytes,
        with_expiry: bool,
        deadline: Instant,
    ) {
        if ctx.config.cluster.sloppy_quorum {
            // The tracked path draws its hand-off point (a fault point in simulation) even
            // though this read settles before it: draw it too, so the seed's draws stay the same.
            let started = ctx.last_monotonic;
            let _ = hand_off_point(ctx, started, deadline);
        }
        let reply = match ctx.local_record(key) {
            Ok(record) => {
                ctx.observe_record(record.as_ref());
                let now_micros = ctx.hybrid_now_micros();
                read_reply(record, 1, now_micros, with_expiry)
            }
            Err(ReplicaError::Busy) => ClientReply::Rejected(RequestError::Busy),
            Err(_) => ClientReply::Unavailable { acks: 0, needed: 1 },
        };
        ctx.reply(request, reply);
    }

    /// A replica's answer to a read round trip. `key_digest` is `None` only for this node's own
    /// copy; a reply from a node the operation did not ask, or about another key, is stale (a
    /// late reply matched to the wrong operation must never become another key's answer).
    pub(in crate::node) fn on_read_reply<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        from: NodeId,
        op: OperationId,
        key_digest: Option<u64>,
        record: Result<Option<Record>, ReplicaError>,
    ) {
        let Some(Operation::Read(read)) = self.in_flight.get_mut(op) else {
            ctx.stats.stale_replies += 1;
            return;
        };
        if !reply_matches(read.quorum.voters(), &read.key, from, key_digest) {
            ctx.stats.stale_replies += 1;
            return;
        }
        if read.quorum.record(from, record.is_ok()) == Recorded::Stale {
            ctx.stats.stale_replies += 1;
            return;
        }
        match record {
            Ok(record) => {
                read.records.push((from, record.clone()));
                if let Some(record) = record {
                    read.merged = Some(match read.merged.take() {
                        Some(merged) => merged.merge(&record),
                        None => record,
                    });
                }
            }
            Err(e) => read.refused_busy += u8::from(e == ReplicaError::Busy),
        }
        let answered = read.quorum.acks();
        let all_in = read.quorum.all_answered();
        if read.replied {
            if all_in {
                if let Some(Operation::Read(read)) = self.untrack(op) {
                    self.read_repair(ctx, *read);
                }
            }
            return;
        }
        let (met, unreachable) = settled(&read.quorum);
        let plain = matches!(read.purpose, ReadPurpose::Plain);
        if met && plain && ctx.config.cluster.read_repair && !all_in {
            // Answer now; keep collecting the other replicas' answers to repair them.
            read.replied = true;
            let (request, merged, with_expiry) =
                (read.request, read.merged.clone(), read.with_expiry);
            ctx.observe_record(merged.as_ref());
            let now_micros = ctx.hybrid_now_micros();
            let reply = read_reply(merged, acks(answered), now_micros, with_expiry);
            ctx.reply(request, reply);
            return;
        }
        if met || unreachable {
            if let Some((deadline, Operation::Read(read))) = self.untrack_with_deadline(op) {
                let merged = read.merged.clone();
                ctx.observe_record(merged.as_ref());
                if !met {
                    let reply = if usize::from(read.refused_busy) == read.quorum.refusals() {
                        ClientReply::Rejected(RequestError::Busy)
                    } else {
                        ClientReply::Unavailable {
                            acks: acks(answered),
                            needed: read.needed,
                        }
                    };
                    ctx.reply(read.request, reply);
                    return;
                }
                self.after_read_quorum(ctx, nb, *read, deadline, acks(answered));
            }
        }
    }

    /// A read gathered its quorum: answer (plain), or start the second ABD phase.
    fn after_read_quorum<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        read: ReadOperation,
        deadline: Instant,
        answered: u8,
    ) {
        match read.purpose {
            ReadPurpose::Plain => {
                let now_micros = ctx.hybrid_now_micros();
                let reply = read_reply(read.merged.clone(), answered, now_micros, read.with_expiry);
                ctx.reply(read.request, reply);
                if ctx.config.cluster.read_repair {
                    self.read_repair(ctx, read);
                }
            }
            ReadPurpose::LinearizableRead => {
                let now_micros = ctx.hybrid_now_micros();
                let reply = read_reply(read.merged.clone(), answered, now_micros, read.with_expiry);
                let Some(record) = read.merged else {
                    // No replica of the majority holds anything: nothing to make visible.
                    ctx.reply(read.request, reply);
                    return;
                };
                if ctx.config.cluster.unsafe_skip_write_back {
                    ctx.reply(read.request, reply);
                    return;
                }
                let version = match &record {
                    Record::Lww(r) => WriteVersion::Lww(r.version),
                    // The write-back carries the counter's state; its epoch names it.
                    Record::Counter(r) => WriteVersion::Lww(r.epoch),
                    Record::Causal(_) => {
                        let reply = ClientReply::Rejected(RequestError::LinearizableNeedsLww);
                        ctx.reply(read.request, reply);
                        return;
                    }
                };
                // Write the newest version back to a majority before answering, so no later read
                // can see an older one (PITFALLS: "R + W > N is not linearizability").
                let origin = Origin::WriteBack {
                    request: read.request,
                    reply,
                };
                let quorum = Quorum::count(read.quorum.voters().to_vec(), usize::from(read.needed));
                let write = WriteOperation::new(
                    origin,
                    read.key,
                    (record, version),
                    read.needed,
                    quorum,
                    (None, read.epoch),
                );
                self.launch_write(ctx, nb, write, deadline);
            }
            ReadPurpose::LinearizableWrite { ref value, expires } => {
                let value = value.clone();
                self.write_above(ctx, nb, read, deadline, (value, expires));
            }
        }
    }

    /// The second phase of an ABD write: a version strictly above every one the query phase
    /// saw, written to a majority.
    fn write_above<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        read: ReadOperation,
        deadline: Instant,
        (value, expires): (Option<Bytes>, Option<ExpiresAt>),
    ) {
        let highest = match &read.merged {
            Some(Record::Lww(r)) => Some(r.version),
            // A SET over a counter must outrank the counter's epoch to replace it.
            Some(Record::Counter(r)) => Some(r.epoch),
            _ => None,
        };
        let stamp = ctx.stamp(ctx.last_wall);
        let timestamp_micros = highest.map_or(stamp, |h| stamp.max(h.timestamp_micros + 1));
        ctx.clock.observe(timestamp_micros);
        ctx.raise_clock_floor(timestamp_micros);
        let version = LwwVersion {
            timestamp_micros,
            node: ctx.id,
            nonce: ctx.rng.gen(),
        };
        let record = LwwRecord {
            version,
            expires_at_micros: value
                .as_ref()
                .and(expires)
                .map(|e| e.resolve(timestamp_micros)),
            value,
        };
        let write = WriteOperation::new(
            Origin::Client(read.request),
            read.key,
            (Record::Lww(record), WriteVersion::Lww(version)),
            read.needed,
            Quorum::count(read.quorum.voters().to_vec(), usize::from(read.needed)),
            (None, read.epoch),
        );
        self.launch_write(ctx, nb, write, deadline);
    }
}

/// Whether a read reply may count for an operation over `replicas` and `key`: it comes from one
/// of them and names the same key (`None`: this node's own copy, read in the same input). A pure
/// policy.
fn reply_matches(replicas: &[NodeId], key: &[u8], from: NodeId, key_digest: Option<u64>) -> bool {
    replicas.contains(&from) && key_digest.is_none_or(|d| d == crate::id::key_digest(key))
}

/// The client's view of the merged record of a read, judged at the coordinator's hybrid now:
/// expiry is decided after the merge, never per replica, so the newest version always wins
/// even when it has expired (an older value behind it must not come back). `with_expiry`: a
/// `GetExpiring` read, answered with the value's expiry.
fn read_reply(merged: Option<Record>, acks: u8, now_micros: u64, with_expiry: bool) -> ClientReply {
    let context = match &merged {
        Some(Record::Causal(record)) => CausalContext(record.clock.clone()),
        _ => CausalContext::default(),
    };
    let values = merged
        .as_ref()
        .map(|r| r.live_values_at(now_micros))
        .unwrap_or_default();
    if let (true, Some(Record::Lww(record)), [value]) = (with_expiry, &merged, values.as_slice()) {
        return ClientReply::FoundExpiring {
            value: value.clone(),
            expires_at_micros: record.expires_at_micros,
            now_micros,
            acks,
        };
    }
    if values.is_empty() {
        ClientReply::NotFound { context, acks }
    } else {
        ClientReply::Found {
            values,
            context,
            acks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_reply_counts_only_from_an_asked_replica_about_the_same_key() {
        let replicas = [NodeId(1), NodeId(2)];
        let key = b"k";
        let digest = crate::id::key_digest(key);
        assert!(reply_matches(&replicas, key, NodeId(1), Some(digest)));
        assert!(reply_matches(&replicas, key, NodeId(2), None));
        assert!(!reply_matches(&replicas, key, NodeId(3), Some(digest)));
        let other = crate::id::key_digest(b"other");
        assert!(!reply_matches(&replicas, key, NodeId(1), Some(other)));
    }
}
