//! The coordinator side: turn a client request into replica round trips and answer after R reads
//! or W durable writes, or with a typed outcome at the deadline.

use super::durability::AfterPersist;
use super::replica::Applied;
use super::{Node, NodeEvent};
use crate::buggify;
use crate::client::{CausalContext, ClientReply, ClientRequest, Consistency, RequestError};
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::{ForwardedOutcome, Message, ReplicaError};
use crate::quorum::{Group, Quorum, QuorumOutcome, Recorded};
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::{
    CausalRecord, ConflictMode, ExpiresAt, LwwRecord, LwwVersion, Record, VersionVector,
    WriteVersion,
};
use bytes::Bytes;
use rand::Rng;
use std::time::Duration;

/// Most forwarded puts remembered for de-duplication.
const SERVED_FORWARDS_MAX: usize = 4096;

/// The coordinator's state: operations in flight with their deadlines, datacenter groups,
/// forwarded puts already served, and when each member was last heard from.
#[derive(Default)]
pub(super) struct Coordinator {
    pub(super) operations: std::collections::BTreeMap<OperationId, (Instant, Operation)>,
    pub(super) deadlines: std::collections::BTreeSet<(Instant, OperationId)>,
    pub(super) served_forwards: std::collections::BTreeSet<(NodeId, OperationId)>,
    pub(super) served_forwards_order: std::collections::VecDeque<(NodeId, OperationId)>,
    /// When each ring member was last heard from directly (any message): evidence that
    /// overrides a stale `Down` verdict for failing fast (see `fail_fast`).
    pub(super) heard_from: std::collections::BTreeMap<NodeId, Instant>,
}

impl Coordinator {
    pub(super) fn track(&mut self, op: OperationId, operation: Operation, deadline: Instant) {
        self.operations.insert(op, (deadline, operation));
        self.deadlines.insert((deadline, op));
    }

    pub(super) fn untrack(&mut self, op: OperationId) -> Option<Operation> {
        self.untrack_with_deadline(op)
            .map(|(_, operation)| operation)
    }

    pub(super) fn untrack_with_deadline(
        &mut self,
        op: OperationId,
    ) -> Option<(Instant, Operation)> {
        let (deadline, operation) = self.operations.remove(&op)?;
        self.deadlines.remove(&(deadline, op));
        Some((deadline, operation))
    }

    pub(super) fn remember_forward(
        &mut self,
        key: (NodeId, OperationId),
        duplicates: &mut u64,
    ) -> bool {
        if !self.served_forwards.insert(key) {
            *duplicates += 1;
            return false;
        }
        self.served_forwards_order.push_back(key);
        if self.served_forwards_order.len() > SERVED_FORWARDS_MAX {
            if let Some(old) = self.served_forwards_order.pop_front() {
                self.served_forwards.remove(&old);
            }
        }
        true
    }
}

/// Who is waiting for a write's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// A client of this node.
    Client(RequestId),
    /// The write-back phase of a linearizable read: answer `reply` once the newest version is
    /// durable on a majority.
    WriteBack {
        /// The client's request.
        request: RequestId,
        /// The read's answer, held until the write-back completes.
        reply: ClientReply,
    },
    /// A client-facing node that forwarded a put here.
    Forward {
        /// That node.
        from: NodeId,
        /// Its round-trip id.
        op: OperationId,
        /// Digest of the key, echoed in the reply.
        key_digest: u64,
    },
}

/// Why a read round trip was started.
#[derive(Debug)]
pub(super) enum ReadPurpose {
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
pub(super) struct ReadOperation {
    request: RequestId,
    purpose: ReadPurpose,
    key: Bytes,
    /// The level, as replies state it.
    needed: u8,
    /// Who was asked (replicas, then fallbacks of a sloppy read) and who answered or refused:
    /// each replica counts once, and a refusal never also as an answer (a duplicated or
    /// retried refusal, or a refusal followed by an answer, is stale).
    quorum: Quorum,
    merged: Option<Record>,
    /// Refusals that were `Busy` (back-pressure): a read that fails with only such refusals is
    /// rejected as `Busy`, the typed signal to back off, rather than `Unavailable`.
    refused_busy: u8,
    /// What each replica answered, for read repair.
    records: Vec<(NodeId, Option<Record>)>,
    /// The client has its answer; the operation lives on only to repair late or stale replicas.
    replied: bool,
    /// Sloppy quorum: the request's real deadline, while the tracked one is the hand-off point.
    sloppy_final: Option<Instant>,
    /// Linearizable level: the ring epoch the operation started on (replicas on another ring
    /// refuse it; see `handover`).
    epoch: Option<u64>,
    /// A `GetExpiring` read: the answer carries the value's expiry (see `command::ttl`).
    with_expiry: bool,
}

/// A write waiting for durable acknowledgements.
#[derive(Debug)]
pub(super) struct WriteOperation {
    origin: Origin,
    key: Bytes,
    record: Record,
    version: WriteVersion,
    /// The level, as replies state it.
    needed: u8,
    /// The replicas, their stand-ins (sloppy quorum) and their answers: a stand-in counts as
    /// the replica it stands in for, each replica once, a refusal never also as an
    /// acknowledgement.
    quorum: Quorum,
    /// Some refusal was a storage failure, which may come after the write was staged (a failed
    /// fsync): its bytes may still reach the disk, so the write is not known to have had no
    /// effect (PITFALLS: "Failed is not the same as did-not-happen").
    storage_failed: bool,
    /// Refusals that were `Busy` (back-pressure: a full queue or a full hint store). A write
    /// every replica refused with `Busy` is rejected as `Busy`, a typed signal to back off.
    refused_busy: u8,
    /// A fault point sent some replica two copies: one may have applied while the other was
    /// refused (or not queued), so a refusal no longer proves "no effect".
    copies_doubled: bool,
    /// Some refusal was a full disk (before any effect): a write refused by every replica is
    /// then answered as out of disk space.
    out_of_space: bool,
    /// Vector-clock writes go to the other replicas only after the local copy is durable.
    fanned_out: bool,
    /// Sloppy-quorum state, for last-write-wins writes below the linearizable level.
    sloppy: Option<Sloppy>,
    /// Linearizable level: the ring epoch of the operation (its query phase's).
    epoch: Option<u64>,
}

/// A write that may use fallback nodes (PITFALLS: hints are bounded and replayed, never a
/// substitute for anti-entropy).
#[derive(Debug)]
pub(super) struct Sloppy {
    /// The request's real deadline; the tracked deadline is first the hand-off point.
    final_deadline: Instant,
    /// Fallbacks were sent hinted copies for the replicas that had not acknowledged.
    hinted: bool,
    /// The client already has its answer (W was met); the operation lives on to hint.
    replied: bool,
}

/// A vector-clock put forwarded to a replica of the key.
#[derive(Debug)]
pub(super) struct ForwardOperation {
    request: RequestId,
    key: Bytes,
    value: Option<Bytes>,
    context: VersionVector,
    needed: u8,
    candidates: Vec<NodeId>,
    attempt: usize,
    deadline: Instant,
    /// An increment (`CoordinateIncrement`) rather than a put: it has one candidate only, since
    /// a second replica applying it after the first did would count it twice.
    delta: Option<i64>,
}

/// Work in flight at a coordinator.
#[derive(Debug)]
pub(super) enum Operation {
    Read(ReadOperation),
    Write(WriteOperation),
    Forward(ForwardOperation),
    /// A scan page or a key count (see `scan`).
    Scan(super::scan::ScanOperation),
    /// A conditional write's Paxos round (see `paxos`).
    Paxos(Box<super::paxos::PaxosOperation>),
}

impl Operation {
    pub(super) fn check_invariants(&self) {
        match self {
            Operation::Read(r) => {
                r.quorum.check_invariants();
                assert!(
                    r.replied || !r.quorum.is_met(),
                    "reads with a quorum are answered"
                );
                assert_eq!(r.quorum.acks(), r.records.len(), "one record per answer");
            }
            Operation::Write(w) => {
                w.quorum.check_invariants();
                assert!(
                    w.sloppy.as_ref().is_some_and(|s| s.replied || s.hinted) || !w.quorum.is_met(),
                    "finished writes are removed"
                );
                assert!(
                    w.sloppy.is_some() || w.quorum.stand_ins().is_empty(),
                    "stand-ins for a strict write"
                );
            }
            Operation::Forward(f) => assert!(f.attempt < f.candidates.len()),
            Operation::Scan(scan) => scan.check_invariants(),
            Operation::Paxos(p) => p.check_invariants(),
        }
    }
}

impl<S: Storage> Node<S> {
    pub(super) fn start_request(&mut self, now: Now, request: RequestId, body: ClientRequest) {
        // The cluster-wide requests have no key (see `scan`).
        match body {
            ClientRequest::Scan {
                from,
                keys_max,
                consistency,
            } => return self.start_scan(now, request, from, keys_max, consistency),
            ClientRequest::CountKeys => return self.start_count(now, request),
            _ => {}
        }
        if let Err(e) = self.admit(&body) {
            self.ctx.reply(request, ClientReply::Rejected(e));
            return;
        }
        if let ClientRequest::Increment {
            key,
            delta,
            consistency,
        } = body
        {
            self.start_increment(now, request, key, delta, consistency);
            return;
        }
        let cluster = &self.ctx.config.cluster;
        let (level, default) = match &body {
            // Scans were served above; they read, so they default to `r`.
            ClientRequest::Get { consistency, .. }
            | ClientRequest::GetExpiring { consistency, .. }
            | ClientRequest::Scan { consistency, .. } => (*consistency, cluster.r),
            ClientRequest::CountKeys => (None, cluster.r),
            ClientRequest::Put { consistency, .. }
            | ClientRequest::Delete { consistency, .. }
            | ClientRequest::PutExpiring { consistency, .. }
            | ClientRequest::Increment { consistency, .. } => (*consistency, cluster.w),
            // Conditional writes take the linearizable path whatever the level (as Cassandra's
            // IF NOT EXISTS always uses Paxos).
            ClientRequest::Conditional { .. } => (Some(Consistency::Linearizable), cluster.w),
        };
        let n = cluster.n;
        let Some(needed) = level
            .or(cluster.consistency)
            .map_or(Some(default), |l| l.required(n))
        else {
            self.ctx.reply(
                request,
                ClientReply::Rejected(RequestError::InvalidConsistency),
            );
            return;
        };
        let expiring = matches!(
            body,
            ClientRequest::PutExpiring { .. } | ClientRequest::GetExpiring { .. }
        );
        if expiring && cluster.conflict != ConflictMode::Lww {
            self.ctx
                .reply(request, ClientReply::Rejected(RequestError::ExpiryNeedsLww));
            return;
        }
        let linearizable = level.or(cluster.consistency) == Some(Consistency::Linearizable);
        if linearizable && cluster.conflict != ConflictMode::Lww {
            self.ctx.reply(
                request,
                ClientReply::Rejected(RequestError::LinearizableNeedsLww),
            );
            return;
        }
        let replicas = self.ctx.ring.preference_list(body.key(), usize::from(n));
        let mut needed = needed;
        let mut groups = None;
        if let Some(Consistency::LocalQuorum | Consistency::EachQuorum) =
            level.or(cluster.consistency)
        {
            let each = level.or(cluster.consistency) == Some(Consistency::EachQuorum);
            let found = datacenter_groups(&self.ctx.ring, &replicas, self.ctx.id, each);
            if found.is_empty() {
                self.ctx.reply(
                    request,
                    ClientReply::Rejected(RequestError::InvalidConsistency),
                );
                return;
            }
            needed = needs(found.iter().map(|g| g.needed).sum());
            groups = Some(found);
        }
        if replicas.len() < usize::from(needed) {
            let e = if replicas.is_empty() {
                RequestError::NoReplicas
            } else {
                RequestError::InvalidConsistency
            };
            self.ctx.reply(request, ClientReply::Rejected(e));
            return;
        }
        if let Some(short) =
            self.replicas_down(&body, linearizable, &replicas, needed, groups.as_deref())
        {
            self.ctx.reply(request, ClientReply::Rejected(short));
            return;
        }
        let deadline = now
            .monotonic
            .saturating_add(self.ctx.config.cluster.request_timeout());
        if linearizable {
            // Conditional writes are Paxos rounds (see `paxos`); plain reads and writes at this
            // level stay ABD. Mixing plain and conditional writes on one key is not
            // linearizable (as in Cassandra, mixing LWT and non-LWT writes).
            let purpose = match body {
                // Scans and increments were dispatched at the top; never reached here.
                ClientRequest::Get { .. }
                | ClientRequest::GetExpiring { .. }
                | ClientRequest::Scan { .. }
                | ClientRequest::CountKeys
                | ClientRequest::Increment { .. } => ReadPurpose::LinearizableRead,
                ClientRequest::Put { ref value, .. } => ReadPurpose::LinearizableWrite {
                    value: Some(value.clone()),
                    expires: None,
                },
                ClientRequest::PutExpiring {
                    ref value, expires, ..
                } => ReadPurpose::LinearizableWrite {
                    value: Some(value.clone()),
                    expires: Some(expires),
                },
                ClientRequest::Delete { .. } => ReadPurpose::LinearizableWrite {
                    value: None,
                    expires: None,
                },
                ClientRequest::Conditional {
                    ref condition,
                    ref value,
                    ..
                } => {
                    let intent = super::paxos::Intent::Conditional {
                        condition: condition.clone(),
                        value: value.clone(),
                    };
                    let key = body.key().clone();
                    self.start_paxos(now, request, key, intent, needed, replicas, deadline);
                    return;
                }
            };
            let key = body.key().clone();
            self.handover.activate(&mut self.ctx);
            let epoch = Some(self.handover.epoch());
            let with_expiry = matches!(body, ClientRequest::GetExpiring { .. });
            self.start_read(
                request,
                purpose,
                key,
                (needed, None),
                replicas,
                deadline,
                epoch,
                with_expiry,
            );
            return;
        }
        match body {
            ClientRequest::Get { key, .. } | ClientRequest::GetExpiring { key, .. } => {
                let with_expiry = expiring;
                self.start_read(
                    request,
                    ReadPurpose::Plain,
                    key,
                    (needed, groups),
                    replicas,
                    deadline,
                    None,
                    with_expiry,
                )
            }
            ClientRequest::Put {
                key,
                value,
                context,
                ..
            } => self.start_write(
                now,
                request,
                key,
                (Some(value), None),
                context,
                (needed, groups),
                replicas,
                deadline,
            ),
            ClientRequest::PutExpiring {
                key,
                value,
                expires,
                ..
            } => self.start_write(
                now,
                request,
                key,
                (Some(value), Some(expires)),
                None,
                (needed, groups),
                replicas,
                deadline,
            ),
            ClientRequest::Delete { key, context, .. } => self.start_write(
                now,
                request,
                key,
                (None, None),
                context,
                (needed, groups),
                replicas,
                deadline,
            ),
            // Served above by `scan`.
            ClientRequest::Scan { .. } | ClientRequest::CountKeys => {}
            // Dispatched at the top.
            ClientRequest::Increment { .. } => {}
            // Always linearizable, handled above.
            ClientRequest::Conditional { .. } => {}
        }
    }

    /// Limits checked before a request has any effect.
    fn admit(&self, body: &ClientRequest) -> Result<(), RequestError> {
        let cluster = &self.ctx.config.cluster;
        let key = body.key();
        if key.is_empty() || key.len() > cluster.key_bytes_max {
            return Err(RequestError::KeyTooLarge {
                bytes: key.len(),
                max: cluster.key_bytes_max,
            });
        }
        if key.starts_with(super::hints::RESERVED_PREFIX) {
            return Err(RequestError::ReservedKey);
        }
        let value = match body {
            ClientRequest::Put { value, .. } | ClientRequest::PutExpiring { value, .. } => {
                Some(value)
            }
            ClientRequest::Conditional { value, .. } => value.as_ref(),
            _ => None,
        };
        if let Some(value) = value {
            if value.len() > cluster.value_bytes_max {
                return Err(RequestError::ValueTooLarge {
                    bytes: value.len(),
                    max: cluster.value_bytes_max,
                });
            }
        }
        if self.coordinator.operations.len() >= cluster.requests_in_flight_max {
            return Err(RequestError::Busy);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- reads

    #[expect(
        clippy::too_many_arguments,
        reason = "two call sites; a struct would only rename them"
    )]
    fn start_read(
        &mut self,
        request: RequestId,
        purpose: ReadPurpose,
        key: Bytes,
        (needed, groups): (u8, Option<Vec<Group>>),
        replicas: Vec<NodeId>,
        deadline: Instant,
        epoch: Option<u64>,
        with_expiry: bool,
    ) {
        let op = self.ctx.allocate_operation();
        let grouped = groups.is_some();
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
        if self.ctx.config.cluster.sloppy_quorum
            && matches!(read.purpose, ReadPurpose::Plain)
            && !grouped
        {
            read.sloppy_final = Some(deadline);
            let handoff = self
                .ctx
                .last_monotonic
                .saturating_add(Duration::from_millis(
                    self.ctx.config.cluster.sloppy_after_ms,
                ));
            tracked = handoff.min(deadline);
        }
        self.coordinator.track(op, Operation::Read(read), tracked);
        for replica in replicas {
            if replica == self.ctx.id {
                let record = match epoch {
                    Some(epoch) => self
                        .handover
                        .lin_admit(&mut self.ctx, epoch, &key)
                        .and_then(|()| self.ctx.local_record(&key)),
                    None => self.ctx.local_record(&key),
                };
                let id = self.ctx.id;
                self.on_read_reply(id, op, None, record);
            } else {
                let key = key.clone();
                let message = match epoch {
                    Some(epoch) => Message::LinRead { op, key, epoch },
                    None => Message::Read { op, key },
                };
                self.ctx.send(replica, message);
            }
        }
    }

    /// A replica's answer to a read round trip. `key_digest` is `None` only for this node's own
    /// copy; a reply from a node the operation did not ask, or about another key, is stale (a
    /// late reply matched to the wrong operation must never become another key's answer).
    pub(super) fn on_read_reply(
        &mut self,
        from: NodeId,
        op: OperationId,
        key_digest: Option<u64>,
        record: Result<Option<Record>, ReplicaError>,
    ) {
        let Some((_, Operation::Read(read))) = self.coordinator.operations.get_mut(&op) else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        if !reply_matches(read.quorum.voters(), &read.key, from, key_digest) {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        if read.quorum.record(from, record.is_ok()) == Recorded::Stale {
            self.ctx.stats.stale_replies += 1;
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
                if let Some(Operation::Read(read)) = self.coordinator.untrack(op) {
                    self.read_repair(read);
                }
            }
            return;
        }
        let (met, unreachable) = settled(&read.quorum);
        let plain = matches!(read.purpose, ReadPurpose::Plain);
        if met && plain && self.ctx.config.cluster.read_repair && !all_in {
            // Answer now; keep collecting the other replicas' answers to repair them.
            read.replied = true;
            let (request, merged, with_expiry) =
                (read.request, read.merged.clone(), read.with_expiry);
            self.ctx.observe_record(merged.as_ref());
            let now_micros = self.ctx.hybrid_now_micros();
            let reply = read_reply(merged, acks(answered), now_micros, with_expiry);
            self.ctx.reply(request, reply);
            return;
        }
        if met || unreachable {
            if let Some((deadline, Operation::Read(read))) =
                self.coordinator.untrack_with_deadline(op)
            {
                let merged = read.merged.clone();
                self.ctx.observe_record(merged.as_ref());
                if !met {
                    let reply = if usize::from(read.refused_busy) == read.quorum.refusals() {
                        ClientReply::Rejected(RequestError::Busy)
                    } else {
                        ClientReply::Unavailable {
                            acks: acks(answered),
                            needed: read.needed,
                        }
                    };
                    self.ctx.reply(read.request, reply);
                    return;
                }
                self.after_read_quorum(read, deadline, acks(answered));
            }
        }
    }

    /// A read gathered its quorum: answer (plain), or start the second ABD phase.
    fn after_read_quorum(&mut self, read: ReadOperation, deadline: Instant, answered: u8) {
        match read.purpose {
            ReadPurpose::Plain => {
                let now_micros = self.ctx.hybrid_now_micros();
                let reply = read_reply(read.merged.clone(), answered, now_micros, read.with_expiry);
                self.ctx.reply(read.request, reply);
                if self.ctx.config.cluster.read_repair {
                    self.read_repair(read);
                }
            }
            ReadPurpose::LinearizableRead => {
                let now_micros = self.ctx.hybrid_now_micros();
                let reply = read_reply(read.merged.clone(), answered, now_micros, read.with_expiry);
                let Some(record) = read.merged else {
                    // No replica of the majority holds anything: nothing to make visible.
                    self.ctx.reply(read.request, reply);
                    return;
                };
                if self.ctx.config.cluster.unsafe_skip_write_back {
                    self.ctx.reply(read.request, reply);
                    return;
                }
                let version = match &record {
                    Record::Lww(r) => WriteVersion::Lww(r.version),
                    // The write-back carries the counter's state; its epoch names it.
                    Record::Counter(r) => WriteVersion::Lww(r.epoch),
                    Record::Causal(_) => {
                        let reply = ClientReply::Rejected(RequestError::LinearizableNeedsLww);
                        self.ctx.reply(read.request, reply);
                        return;
                    }
                };
                // Write the newest version back to a majority before answering, so no later read
                // can see an older one (PITFALLS: "R + W > N is not linearizability").
                let write = WriteOperation {
                    origin: Origin::WriteBack {
                        request: read.request,
                        reply,
                    },
                    key: read.key,
                    record,
                    version,
                    needed: read.needed,
                    quorum: Quorum::count(read.quorum.voters().to_vec(), usize::from(read.needed)),
                    storage_failed: false,
                    refused_busy: 0,
                    copies_doubled: false,
                    out_of_space: false,
                    fanned_out: false,
                    sloppy: None,
                    epoch: read.epoch,
                };
                self.launch_write(write, deadline);
            }
            ReadPurpose::LinearizableWrite { value, expires } => {
                let highest = match &read.merged {
                    Some(Record::Lww(r)) => Some(r.version),
                    // A SET over a counter must outrank the counter's epoch to replace it.
                    Some(Record::Counter(r)) => Some(r.epoch),
                    _ => None,
                };
                let stamp = self.ctx.stamp(self.ctx.last_wall);
                let timestamp_micros = highest.map_or(stamp, |h| stamp.max(h.timestamp_micros + 1));
                self.ctx.clock.observe(timestamp_micros);
                self.ctx.raise_clock_floor(timestamp_micros);
                let version = LwwVersion {
                    timestamp_micros,
                    node: self.ctx.id,
                    nonce: self.ctx.rng.gen(),
                };
                let record = LwwRecord {
                    version,
                    expires_at_micros: value
                        .as_ref()
                        .and(expires)
                        .map(|e| e.resolve(timestamp_micros)),
                    value,
                };
                let write = WriteOperation {
                    origin: Origin::Client(read.request),
                    key: read.key,
                    record: Record::Lww(record),
                    version: WriteVersion::Lww(version),
                    needed: read.needed,
                    quorum: Quorum::count(read.quorum.voters().to_vec(), usize::from(read.needed)),
                    storage_failed: false,
                    refused_busy: 0,
                    copies_doubled: false,
                    out_of_space: false,
                    fanned_out: false,
                    sloppy: None,
                    epoch: read.epoch,
                };
                self.launch_write(write, deadline);
            }
        }
    }

    /// Sends the merged record to every replica that answered with something older or nothing.
    /// Fire and forget: merging is idempotent, and anti-entropy covers what this misses.
    fn read_repair(&mut self, read: ReadOperation) {
        let Some(merged) = read.merged else { return };
        for (node, record) in &read.records {
            if record.as_ref() == Some(&merged) {
                continue;
            }
            self.ctx.stats.read_repairs += 1;
            if *node == self.ctx.id {
                let _ = self
                    .ctx
                    .apply(read.key.clone(), &merged, AfterPersist::Nothing);
            } else {
                let message = Message::Write {
                    op: OperationId(0),
                    key: read.key.clone(),
                    record: merged.clone(),
                };
                self.ctx.send(*node, message);
            }
        }
    }

    // ---------------------------------------------------------------- writes

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    fn start_write(
        &mut self,
        now: Now,
        request: RequestId,
        key: Bytes,
        (value, expires): (Option<Bytes>, Option<ExpiresAt>),
        context: Option<CausalContext>,
        (needed, groups): (u8, Option<Vec<Group>>),
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let grouped = groups.is_some();
        match self.ctx.config.cluster.conflict {
            ConflictMode::Lww => {
                let version = LwwVersion {
                    timestamp_micros: self.ctx.stamp(now.wall),
                    node: self.ctx.id,
                    nonce: self.ctx.rng.gen(),
                };
                let record = Record::Lww(LwwRecord {
                    version,
                    expires_at_micros: value
                        .as_ref()
                        .and(expires)
                        .map(|e| e.resolve(version.timestamp_micros)),
                    value,
                });
                let write = WriteOperation {
                    origin: Origin::Client(request),
                    key,
                    record,
                    version: WriteVersion::Lww(version),
                    needed,
                    quorum: quorum_of(replicas, needed, groups),
                    storage_failed: false,
                    refused_busy: 0,
                    copies_doubled: false,
                    out_of_space: false,
                    fanned_out: false,
                    sloppy: None,
                    epoch: None,
                };
                if self.ctx.config.cluster.sloppy_quorum && !grouped {
                    let handoff = now.monotonic.saturating_add(Duration::from_millis(
                        self.ctx.config.cluster.sloppy_after_ms,
                    ));
                    let mut write = write;
                    write.sloppy = Some(Sloppy {
                        final_deadline: deadline,
                        hinted: false,
                        replied: false,
                    });
                    let op = self.launch_write(write, handoff.min(deadline));
                    self.stand_in_for_down(op);
                } else {
                    self.launch_write(write, deadline);
                }
            }
            ConflictMode::VectorClock => {
                let context = context.map(|c| c.0).unwrap_or_default();
                if replicas.contains(&self.ctx.id) {
                    let origin = Origin::Client(request);
                    self.coordinate_causal_put(
                        origin,
                        key,
                        value,
                        context,
                        (needed, groups),
                        replicas,
                        deadline,
                    );
                } else {
                    self.forward_put(
                        now, request, key, value, context, needed, replicas, deadline,
                    );
                }
            }
        }
    }

    /// Registers a write and sends it out (lww: everyone at once; vector clock: local copy first).
    fn launch_write(&mut self, write: WriteOperation, deadline: Instant) -> OperationId {
        let op = self.ctx.allocate_operation();
        // A new dot, or a new slot of this replica's counter, is durable here before any other
        // replica holds it: after a crash this replica can never issue it again differently.
        let local_first = matches!(
            write.version,
            WriteVersion::Dot(_) | WriteVersion::Counter(_)
        );
        let is_replica = write.quorum.voters().contains(&self.ctx.id);
        let key = write.key.clone();
        let record = write.record.clone();
        let epoch = write.epoch;
        self.coordinator
            .track(op, Operation::Write(write), deadline);
        if is_replica {
            // Linearizable: this node's copy counts only on the same ring and once it holds the
            // range; a refused copy is not applied (see `handover`).
            let admitted = epoch.map_or(Ok(()), |epoch| {
                self.handover.lin_admit(&mut self.ctx, epoch, &key)
            });
            match admitted.and_then(|()| self.ctx.apply(key, &record, AfterPersist::AckLocal(op))) {
                Ok(Applied::Now) => self.on_local_write_durable(op),
                Ok(Applied::Pending) => {}
                Err(e) => {
                    let id = self.ctx.id;
                    self.on_write_reply(id, op, None, Err(e));
                }
            }
        }
        if !local_first || !is_replica {
            self.fan_out(op);
        }
        op
    }

    /// Sends the write to every other replica.
    fn fan_out(&mut self, op: OperationId) {
        let Some((_, Operation::Write(write))) = self.coordinator.operations.get_mut(&op) else {
            return;
        };
        if write.fanned_out {
            return;
        }
        write.fanned_out = true;
        let targets: Vec<NodeId> = write
            .quorum
            .voters()
            .iter()
            .copied()
            .filter(|&r| r != self.ctx.id)
            .collect();
        let (key, record, epoch) = (write.key.clone(), write.record.clone(), write.epoch);
        for target in targets {
            let (key, record) = (key.clone(), record.clone());
            let message = match epoch {
                Some(epoch) => Message::LinWrite {
                    op,
                    key,
                    record,
                    epoch,
                },
                None => Message::Write { op, key, record },
            };
            if buggify!(
                self.ctx.faults,
                &mut self.ctx.rng,
                "coordinator/duplicate-write"
            ) {
                // Exercise idempotence: replicas must tolerate a duplicated write.
                if let Some((_, Operation::Write(write))) = self.coordinator.operations.get_mut(&op)
                {
                    write.copies_doubled = true;
                }
                self.ctx.send(target, message.clone());
            }
            self.ctx.send(target, message);
        }
    }

    /// This node's own copy of a write it coordinates is durable.
    pub(super) fn on_local_write_durable(&mut self, op: OperationId) {
        // Vector-clock writes fan out only now: the new dot is durable here, so a restart of this
        // replica can never create the same dot again. Before counting this copy: with W = 1 it
        // completes the write, and a write fanned out only after that was never sent to the
        // other replicas at all (it lived on this node alone until anti-entropy; swarm 2204).
        self.fan_out(op);
        let id = self.ctx.id;
        self.on_write_reply(id, op, None, Ok(()));
    }

    /// A replica's (or fallback's) acknowledgement of a write round trip, or of a hint replay.
    /// `key_digest` is `None` only for this node's own copy; a reply about another key is stale.
    pub(super) fn on_write_reply(
        &mut self,
        from: NodeId,
        op: OperationId,
        key_digest: Option<u64>,
        result: Result<(), ReplicaError>,
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
        let Some((_, Operation::Write(write))) = self.coordinator.operations.get_mut(&op) else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        if key_digest.is_some_and(|d| d != crate::id::key_digest(&write.key)) {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        // A fallback's acknowledgement counts for the replica it stands in for, once.
        if write.quorum.record(from, result.is_ok()) == Recorded::Stale {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        match result {
            Ok(()) => {}
            Err(e) => {
                write.storage_failed |= e == ReplicaError::Storage;
                write.refused_busy += u8::from(e == ReplicaError::Busy);
                write.out_of_space |= e == ReplicaError::NoSpace;
            }
        }
        let acked = write.quorum.acks();
        let replicas = write.quorum.voters().len();
        let (met, unreachable) = settled(&write.quorum);
        if let Some(sloppy) = &mut write.sloppy {
            if sloppy.replied {
                if acked >= replicas {
                    self.coordinator.untrack(op);
                }
                return;
            }
            if met && acked < replicas && !sloppy.hinted {
                // Answer now; stay until the hand-off point to hint for replicas still silent.
                sloppy.replied = true;
                let origin = write.origin.clone();
                let (outcome, needed) = (written(write, acks(acked)), write.needed);
                self.finish_write(origin, needed, outcome);
                return;
            }
            if !met && !sloppy.hinted {
                return; // fallbacks may still make up the difference at the hand-off point
            }
        }
        if met || unreachable {
            if let Some(Operation::Write(write)) = self.coordinator.untrack(op) {
                let outcome = if met {
                    written(&write, acks(acked))
                } else if acked == 0
                    && write.quorum.refusals() == replicas
                    && !write.storage_failed
                    && !write.copies_doubled
                {
                    // Every replica refused before applying it (busy, not ready, another ring,
                    // a full disk).
                    let error = if usize::from(write.refused_busy) == write.quorum.refusals() {
                        RequestError::Busy
                    } else if write.out_of_space {
                        RequestError::OutOfDiskSpace
                    } else {
                        RequestError::StorageUnavailable
                    };
                    ForwardedOutcome::Rejected(error)
                } else {
                    ForwardedOutcome::Indeterminate { acks: acks(acked) }
                };
                self.finish_write(write.origin, write.needed, outcome);
            }
        }
    }

    fn finish_write(&mut self, origin: Origin, needed: u8, outcome: ForwardedOutcome) {
        match origin {
            Origin::Client(request) => {
                let reply = match outcome {
                    ForwardedOutcome::Written { version, acks } => {
                        ClientReply::Written { version, acks }
                    }
                    ForwardedOutcome::Indeterminate { acks } => {
                        ClientReply::Indeterminate { acks, needed }
                    }
                    ForwardedOutcome::Rejected(e) => ClientReply::Rejected(e),
                    ForwardedOutcome::Counted { value, acks } => {
                        ClientReply::Counted { value, acks }
                    }
                };
                self.ctx.reply(request, reply);
            }
            Origin::WriteBack { request, reply } => {
                let reply = match outcome {
                    ForwardedOutcome::Written { .. } | ForwardedOutcome::Counted { .. } => reply,
                    ForwardedOutcome::Indeterminate { acks } => {
                        ClientReply::Unavailable { acks, needed }
                    }
                    ForwardedOutcome::Rejected(e) => ClientReply::Rejected(e),
                };
                self.ctx.reply(request, reply);
            }
            Origin::Forward {
                from,
                op,
                key_digest,
            } => {
                let reply = Message::CoordinatePutReply {
                    op,
                    key_digest,
                    outcome,
                };
                self.ctx.send(from, reply);
            }
        }
    }

    // ---------------------------------------------------------------- vector-clock puts

    /// Creates the new dot from this replica's own record and writes it (local copy first).
    #[expect(
        clippy::too_many_arguments,
        reason = "two call sites with different origins"
    )]
    fn coordinate_causal_put(
        &mut self,
        origin: Origin,
        key: Bytes,
        value: Option<Bytes>,
        context: VersionVector,
        (needed, groups): (u8, Option<Vec<Group>>),
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let local = match self.ctx.local_record_for_write(&key) {
            Ok(Some(Record::Causal(record))) => record,
            Ok(_) => CausalRecord::default(),
            Err(_) => {
                let outcome = ForwardedOutcome::Rejected(RequestError::StorageUnavailable);
                self.finish_write(origin, needed, outcome);
                return;
            }
        };
        let (mut record, dot) = local.update(self.ctx.actor, &context, value);
        record.prune(
            self.ctx.config.cluster.clock_entries_max,
            &replicas,
            self.ctx.actor,
        );
        if record.siblings.len() > self.ctx.config.cluster.siblings_max {
            let max = self.ctx.config.cluster.siblings_max;
            self.finish_write(
                origin,
                needed,
                ForwardedOutcome::Rejected(RequestError::TooManySiblings { max }),
            );
            return;
        }
        // The record travels whole in one message; past the codec's limit no replica could
        // receive it, and the key would be unreplicable.
        let bytes: usize = record
            .siblings
            .iter()
            .map(|(_, value)| value.as_ref().map_or(0, Bytes::len))
            .sum();
        if bytes > self.ctx.config.cluster.record_bytes_max {
            let max = self.ctx.config.cluster.record_bytes_max;
            self.finish_write(
                origin,
                needed,
                ForwardedOutcome::Rejected(RequestError::SiblingsTooLarge { bytes, max }),
            );
            return;
        }
        let write = WriteOperation {
            origin,
            key,
            record: Record::Causal(record),
            version: WriteVersion::Dot(dot),
            needed,
            quorum: quorum_of(replicas, needed, groups),
            storage_failed: false,
            refused_busy: 0,
            copies_doubled: false,
            out_of_space: false,
            fanned_out: false,
            sloppy: None,
            epoch: None,
        };
        self.launch_write(write, deadline);
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
        op: OperationId,
        key: Bytes,
        value: Option<Bytes>,
        context: VersionVector,
        needed: u8,
    ) {
        if !self
            .coordinator
            .remember_forward((from, op), &mut self.ctx.stats.duplicate_forwards)
        {
            return;
        }
        let n = usize::from(self.ctx.config.cluster.n);
        let replicas = self.ctx.ring.preference_list(&key, n);
        let valid = (1..=replicas.len()).contains(&usize::from(needed));
        if !replicas.contains(&self.ctx.id)
            || !valid
            || self.coordinator.operations.len() >= self.ctx.config.cluster.requests_in_flight_max
        {
            let outcome = ForwardedOutcome::Rejected(RequestError::Busy);
            let key_digest = crate::id::key_digest(&key);
            let reply = Message::CoordinatePutReply {
                op,
                key_digest,
                outcome,
            };
            self.ctx.send(from, reply);
            return;
        }
        let deadline = now
            .monotonic
            .saturating_add(self.ctx.config.cluster.request_timeout());
        let key_digest = crate::id::key_digest(&key);
        let origin = Origin::Forward {
            from,
            op,
            key_digest,
        };
        self.coordinate_causal_put(
            origin,
            key,
            value,
            context,
            (needed, None),
            replicas,
            deadline,
        );
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    fn forward_put(
        &mut self,
        now: Now,
        request: RequestId,
        key: Bytes,
        value: Option<Bytes>,
        context: VersionVector,
        needed: u8,
        candidates: Vec<NodeId>,
        deadline: Instant,
    ) {
        let op = self.ctx.allocate_operation();
        // Replicas the failure detector judges down are tried last (stable order otherwise).
        let mut candidates = candidates;
        candidates.sort_by_key(|&c| self.is_down(c));
        let forward = ForwardOperation {
            request,
            key,
            value,
            context,
            needed,
            candidates,
            attempt: 0,
            deadline,
            delta: None,
        };
        let attempt_deadline = self.attempt_deadline(now, &forward);
        self.send_forward(op, &forward);
        self.coordinator
            .track(op, Operation::Forward(forward), attempt_deadline);
    }

    /// Each candidate replica gets an equal slice of the request timeout.
    fn attempt_deadline(&self, now: Now, forward: &ForwardOperation) -> Instant {
        let slices = u32::try_from(forward.candidates.len()).unwrap_or(1).max(1);
        let slice = self.ctx.config.cluster.request_timeout() / slices;
        now.monotonic
            .saturating_add(slice.max(Duration::from_millis(1)))
            .min(forward.deadline)
    }

    fn send_forward(&mut self, op: OperationId, forward: &ForwardOperation) {
        let target = forward.candidates[forward.attempt];
        let message = match forward.delta {
            Some(delta) => Message::CoordinateIncrement {
                op,
                key: forward.key.clone(),
                delta,
                needed: forward.needed,
            },
            None => Message::CoordinatePut {
                op,
                key: forward.key.clone(),
                value: forward.value.clone(),
                context: forward.context.clone(),
                needed: forward.needed,
            },
        };
        self.ctx.send(target, message);
    }

    /// The coordinating replica's answer to a forwarded put; only a candidate already tried (an
    /// earlier attempt may still have finished), about the same key, is heard.
    pub(super) fn on_forward_reply(
        &mut self,
        from: NodeId,
        op: OperationId,
        key_digest: u64,
        outcome: ForwardedOutcome,
    ) {
        let expected = match self.coordinator.operations.get(&op) {
            Some((_, Operation::Forward(f))) => {
                f.candidates
                    .get(..=f.attempt)
                    .is_some_and(|tried| tried.contains(&from))
                    && crate::id::key_digest(&f.key) == key_digest
            }
            _ => false,
        };
        if !expected {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        if let Some(Operation::Forward(forward)) = self.coordinator.untrack(op) {
            let attempted_before = forward.attempt > 0;
            let outcome = match outcome {
                // An earlier attempt may still apply, so a refusal now is not "no effect".
                ForwardedOutcome::Rejected(_) if attempted_before => {
                    ForwardedOutcome::Indeterminate { acks: 0 }
                }
                other => other,
            };
            self.finish_write(Origin::Client(forward.request), forward.needed, outcome);
        }
    }

    // ---------------------------------------------------------------- counters

    /// Replicates the counter state an increment left on this replica (local copy first, then
    /// the others; with sloppy quorum, fallbacks keep hints for silent replicas). The state is
    /// merged by per-actor maximum wherever it lands, so copies, retries and hints are harmless.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    pub(super) fn launch_counter_write(
        &mut self,
        now: Now,
        origin: Origin,
        key: Bytes,
        counter: crate::version::CounterRecord,
        dot: crate::version::CounterDot,
        needed: u8,
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let sloppy = self.ctx.config.cluster.sloppy_quorum.then_some(Sloppy {
            final_deadline: deadline,
            hinted: false,
            replied: false,
        });
        let tracked = if sloppy.is_some() {
            let handoff = now.monotonic.saturating_add(Duration::from_millis(
                self.ctx.config.cluster.sloppy_after_ms,
            ));
            handoff.min(deadline)
        } else {
            deadline
        };
        let write = WriteOperation {
            origin,
            key,
            record: Record::Counter(counter),
            version: WriteVersion::Counter(dot),
            needed,
            quorum: quorum_of(replicas, needed, None),
            storage_failed: false,
            refused_busy: 0,
            copies_doubled: false,
            out_of_space: false,
            fanned_out: false,
            sloppy,
            epoch: None,
        };
        let op = self.launch_write(write, tracked);
        self.stand_in_for_down(op);
    }

    /// Sends an increment to one replica of the key to apply (this node is not one): the first
    /// the failure detector does not judge down. Never retried on another replica: the first
    /// may have applied it, and a second would count it again; a silent replica makes the
    /// outcome indeterminate.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    pub(super) fn forward_increment(
        &mut self,
        now: Now,
        request: RequestId,
        key: Bytes,
        delta: i64,
        needed: u8,
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let mut candidates = replicas;
        candidates.sort_by_key(|&c| self.is_down(c));
        candidates.truncate(1);
        let op = self.ctx.allocate_operation();
        let forward = ForwardOperation {
            request,
            key,
            value: None,
            context: VersionVector::default(),
            needed,
            candidates,
            attempt: 0,
            deadline,
            delta: Some(delta),
        };
        let attempt_deadline = self.attempt_deadline(now, &forward);
        self.send_forward(op, &forward);
        self.coordinator
            .track(op, Operation::Forward(forward), attempt_deadline);
    }

    /// Answers an origin at once, for refusals before any effect.
    pub(super) fn refuse_write(&mut self, origin: Origin, needed: u8, error: RequestError) {
        self.finish_write(origin, needed, ForwardedOutcome::Rejected(error));
    }

    // ---------------------------------------------------------------- sloppy quorum

    /// The hand-off point of a sloppy write: every replica that has not acknowledged gets a
    /// stand-in, the next node along the ring not already involved, which stores a hint for it.
    fn hand_off(&mut self, now: Now, op: OperationId, mut write: WriteOperation) {
        let Some(sloppy) = write.sloppy.as_mut() else {
            return;
        };
        sloppy.hinted = true;
        let quorum = &mut write.quorum;
        let silent: Vec<NodeId> = quorum
            .voters()
            .iter()
            .copied()
            .filter(|r| !quorum.acked().contains(r))
            .filter(|&r| !quorum.has_stand_in(r))
            .collect();
        let mut involved: Vec<NodeId> = quorum.voters().to_vec();
        involved.extend(quorum.stand_ins().iter().map(|&(f, _)| f));
        let mut sends = Vec::new();
        let walk = self.fallback_walk(&write.key);
        for intended in silent {
            let Some(fallback) = crate::node::hints::choose_fallback(&walk, &involved) else {
                break;
            };
            involved.push(fallback);
            quorum.add_stand_in(fallback, intended);
            sends.push((fallback, intended));
        }
        let (replied, final_deadline) = (sloppy.replied, sloppy.final_deadline);
        let (key, record) = (write.key.clone(), write.record.clone());
        if replied {
            // The client has its answer: the hints are fire-and-forget.
            for (fallback, intended) in sends {
                self.send_hint(
                    OperationId(0),
                    fallback,
                    intended,
                    key.clone(),
                    record.clone(),
                );
            }
            return;
        }
        let deadline = final_deadline.max(now.monotonic);
        self.coordinator
            .track(op, Operation::Write(write), deadline);
        for (fallback, intended) in sends {
            self.send_hint(op, fallback, intended, key.clone(), record.clone());
        }
    }

    fn send_hint(
        &mut self,
        op: OperationId,
        fallback: NodeId,
        intended: NodeId,
        key: Bytes,
        record: Record,
    ) {
        self.hints.stats.handed_off += 1;
        if fallback == self.ctx.id {
            match self.store_hint(intended, key, &record, AfterPersist::AckLocal(op)) {
                Ok(Applied::Now) => self.on_local_write_durable(op),
                Ok(Applied::Pending) => {}
                Err(e) => {
                    let id = self.ctx.id;
                    self.on_write_reply(id, op, None, Err(e));
                }
            }
        } else {
            let message = Message::HintedWrite {
                op,
                key,
                record,
                for_node: intended,
            };
            self.ctx.send(fallback, message);
        }
    }

    /// `key`'s ring walk without the nodes the failure detector judges down: where stand-ins
    /// for silent or failed replicas are taken from (`hints::choose_fallback`), in order.
    fn fallback_walk(&self, key: &[u8]) -> Vec<NodeId> {
        let walk = self.ctx.ring.preference_list(key, self.ctx.ring.len());
        walk.into_iter().filter(|&n| !self.is_down(n)).collect()
    }

    /// A sloppy write need not wait for the hand-off point for replicas the failure detector
    /// already judges down: their stand-ins get hinted copies at once, and their acknowledgements
    /// count for the replicas they stand in for.
    fn stand_in_for_down(&mut self, op: OperationId) {
        let Some((_, Operation::Write(write))) = self.coordinator.operations.get(&op) else {
            return;
        };
        let down: Vec<NodeId> = write
            .quorum
            .voters()
            .iter()
            .copied()
            .filter(|&r| r != self.ctx.id && self.is_down(r) && !write.quorum.acked().contains(&r))
            .collect();
        if down.is_empty() {
            return;
        }
        let mut involved: Vec<NodeId> = write.quorum.voters().to_vec();
        let mut sends = Vec::new();
        let walk = self.fallback_walk(&write.key);
        for intended in down {
            let Some(fallback) = crate::node::hints::choose_fallback(&walk, &involved) else {
                break;
            };
            involved.push(fallback);
            sends.push((fallback, intended));
        }
        let Some((_, Operation::Write(write))) = self.coordinator.operations.get_mut(&op) else {
            return;
        };
        if write.sloppy.is_none() {
            return;
        }
        for &(fallback, intended) in &sends {
            write.quorum.add_stand_in(fallback, intended);
        }
        let (key, record) = (write.key.clone(), write.record.clone());
        for (fallback, intended) in sends {
            self.send_hint(op, fallback, intended, key.clone(), record.clone());
        }
    }

    // ---------------------------------------------------------------- deadlines

    pub(super) fn on_deadline(&mut self, now: Now, op: OperationId) {
        // The deadline entry was already removed by the caller.
        let Some((_, operation)) = self.coordinator.operations.remove(&op) else {
            return;
        };
        match operation {
            Operation::Read(read) if read.replied => self.read_repair(read),
            Operation::Read(mut read) if read.sloppy_final.is_some() => {
                // Sloppy read: ask as many fallbacks as replicas are still silent.
                let deadline = read
                    .sloppy_final
                    .take()
                    .unwrap_or(now.monotonic)
                    .max(now.monotonic);
                let silent = read
                    .quorum
                    .voters()
                    .len()
                    .saturating_sub(read.quorum.acks());
                let walk = self.fallback_walk(&read.key);
                let mut targets = Vec::new();
                for _ in 0..silent {
                    let Some(fallback) =
                        crate::node::hints::choose_fallback(&walk, read.quorum.voters())
                    else {
                        break;
                    };
                    read.quorum.add_voter(fallback);
                    targets.push(fallback);
                }
                let key = read.key.clone();
                self.coordinator.track(op, Operation::Read(read), deadline);
                for target in targets {
                    if target == self.ctx.id {
                        let record = self.ctx.local_record(&key);
                        self.on_read_reply(target, op, None, record);
                    } else {
                        self.ctx.send(
                            target,
                            Message::Read {
                                op,
                                key: key.clone(),
                            },
                        );
                    }
                }
            }
            Operation::Read(read) => {
                // Also a linearizable write still in its query phase: nothing was written yet.
                let reply = ClientReply::Unavailable {
                    acks: acks(read.quorum.acks()),
                    needed: read.needed,
                };
                self.ctx.reply(read.request, reply);
            }
            Operation::Write(write) if write.sloppy.as_ref().is_some_and(|s| !s.hinted) => {
                self.hand_off(now, op, write);
            }
            Operation::Write(write) => {
                if !write.sloppy.as_ref().is_some_and(|s| s.replied) {
                    let outcome = ForwardedOutcome::Indeterminate {
                        acks: acks(write.quorum.acks()),
                    };
                    self.finish_write(write.origin, write.needed, outcome);
                }
            }
            Operation::Paxos(paxos) => self.paxos_deadline(now, op, *paxos),
            Operation::Forward(mut forward) => {
                if forward.attempt + 1 < forward.candidates.len()
                    && now.monotonic < forward.deadline
                {
                    forward.attempt += 1;
                    let next = forward.candidates[forward.attempt];
                    self.ctx
                        .outputs
                        .push_back(super::Output::Event(NodeEvent::ForwardRetried { next }));
                    self.send_forward(op, &forward);
                    let attempt_deadline = self.attempt_deadline(now, &forward);
                    self.coordinator
                        .track(op, Operation::Forward(forward), attempt_deadline);
                } else {
                    let outcome = ForwardedOutcome::Indeterminate { acks: 0 };
                    self.finish_write(Origin::Client(forward.request), forward.needed, outcome);
                }
            }
            Operation::Scan(scan) => self.on_scan_deadline(scan),
        }
    }
}

/// For `local_quorum` (only the coordinator's datacenter) or `each_quorum` (every datacenter):
/// the replicas of each counted datacenter with the majority needed of them. A pure policy.
pub(super) fn datacenter_groups(
    ring: &crate::ring::Ring,
    replicas: &[NodeId],
    me: NodeId,
    each: bool,
) -> Vec<Group> {
    let mut by_datacenter: std::collections::BTreeMap<&str, Vec<NodeId>> =
        std::collections::BTreeMap::new();
    for &replica in replicas {
        if let Some(dc) = ring.datacenter_of(replica) {
            by_datacenter.entry(dc).or_default().push(replica);
        }
    }
    let mine = ring.datacenter_of(me);
    by_datacenter
        .into_iter()
        .filter(|(dc, _)| each || Some(*dc) == mine)
        .map(|(_, members)| {
            let needed = members.len() / 2 + 1;
            Group { members, needed }
        })
        .collect()
}

/// The tracker for a level: `needed` of all replicas, or every group's own quorum for the
/// datacenter levels.
fn quorum_of(replicas: Vec<NodeId>, needed: u8, groups: Option<Vec<Group>>) -> Quorum {
    match groups {
        Some(groups) => Quorum::grouped(replicas, groups),
        None => Quorum::count(replicas, usize::from(needed)),
    }
}

/// (met, can no longer be met) for an operation's quorum. A grouped quorum is never given up
/// early: it waits for its deadline, as it always has (a group that can no longer reach its
/// majority is only known to fail at the deadline).
fn settled(quorum: &Quorum) -> (bool, bool) {
    match quorum.outcome() {
        QuorumOutcome::Met { .. } => (true, false),
        QuorumOutcome::Failed { .. } => (false, !quorum.is_grouped()),
        QuorumOutcome::Pending => (false, false),
    }
}

/// Whether a read reply may count for an operation over `replicas` and `key`: it comes from one
/// of them and names the same key (`None`: this node's own copy, read in the same input). A pure
/// policy.
fn reply_matches(replicas: &[NodeId], key: &[u8], from: NodeId, key_digest: Option<u64>) -> bool {
    replicas.contains(&from) && key_digest.is_none_or(|d| d == crate::id::key_digest(key))
}

/// A count as the `u8` a level is expressed in.
fn needs(count: usize) -> u8 {
    u8::try_from(count).unwrap_or(u8::MAX)
}

/// Clamps a count into the `u8` replies carry (n is at most 16).
fn acks(count: usize) -> u8 {
    u8::try_from(count).unwrap_or(u8::MAX)
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

/// The outcome of a write that met its quorum: an increment answers with the counter's value
/// on the replica that applied it (the state it replicated), any other write with its version.
fn written(write: &WriteOperation, acks: u8) -> ForwardedOutcome {
    match (&write.record, write.version) {
        (Record::Counter(counter), WriteVersion::Counter(_)) => ForwardedOutcome::Counted {
            // The applying replica refused any increment that left `i64`.
            value: i64::try_from(counter.value()).unwrap_or(i64::MAX),
            acks,
        },
        (_, version) => ForwardedOutcome::Written { version, acks },
    }
}
