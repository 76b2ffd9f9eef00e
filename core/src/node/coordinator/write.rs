//! Writes: stamp a version, stage this node's copy, send the others, and answer whoever waits
//! (a client, a linearizable read's write-back, a forwarding node) once W copies are durable.
//!
//! What a write in flight answers is the decision that can lose data or mislead a client, so its
//! rules sit together here: `Written` only once the quorum of durable acknowledgements is met,
//! `Rejected` only when every replica refused before any effect, and otherwise `Indeterminate`,
//! since a refused or silent copy may still have been applied (PITFALLS: "Failed is not the same
//! as did-not-happen"). [`Coordinator::settle_write`] decides as answers arrive;
//! [`Coordinator::finish_write`] delivers the outcome to whoever waits.

use super::request::Plan;
use super::sloppy::{hand_off_point, Sloppy};
use super::{acks, quorum_of, settled, Coordinator, Neighbours, Operation};
use crate::buggify;
use crate::client::{CausalContext, ClientReply, RequestError};
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::{ForwardedOutcome, Message, ReplicaError};
use crate::node::context::Context;
use crate::node::durability::AfterPersist;
use crate::node::replica::Applied;
use crate::quorum::{Quorum, Recorded};
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::{ConflictMode, ExpiresAt, LwwRecord, LwwVersion, Record, WriteVersion};
use bytes::Bytes;
use rand::Rng;

/// Who is waiting for a write's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::node) enum Origin {
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

/// A write waiting for durable acknowledgements.
#[derive(Debug)]
pub(in crate::node) struct WriteOperation {
    pub(super) origin: Origin,
    pub(super) key: Bytes,
    pub(super) record: Record,
    pub(super) version: WriteVersion,
    /// The level, as replies state it.
    pub(super) needed: u8,
    /// The replicas, their stand-ins (sloppy quorum) and their answers: a stand-in counts as
    /// the replica it stands in for, each replica once, a refusal never also as an
    /// acknowledgement.
    pub(super) quorum: Quorum,
    /// Some refusal was a storage failure, which may come after the write was staged (a failed
    /// fsync): its bytes may still reach the disk, so the write is not known to have had no
    /// effect (PITFALLS: "Failed is not the same as did-not-happen").
    pub(super) storage_failed: bool,
    /// Refusals that were `Busy` (back-pressure: a full queue or a full hint store). A write
    /// every replica refused with `Busy` is rejected as `Busy`, a typed signal to back off.
    pub(super) refused_busy: u8,
    /// A fault point sent some replica two copies: one may have applied while the other was
    /// refused (or not queued), so a refusal no longer proves "no effect".
    pub(super) copies_doubled: bool,
    /// Some refusal was a full disk (before any effect): a write refused by every replica is
    /// then answered as out of disk space.
    pub(super) out_of_space: bool,
    /// Vector-clock writes go to the other replicas only after the local copy is durable.
    pub(super) fanned_out: bool,
    /// Sloppy-quorum state, for last-write-wins writes below the linearizable level.
    pub(super) sloppy: Option<Sloppy>,
    /// Linearizable level: the ring epoch of the operation (its query phase's).
    pub(super) epoch: Option<u64>,
}

impl WriteOperation {
    /// A write of `record` at `version`, nothing answered yet; `sloppy` for last-write-wins
    /// writes that may hand off, `epoch` at the linearizable level.
    pub(super) fn new(
        origin: Origin,
        key: Bytes,
        (record, version): (Record, WriteVersion),
        needed: u8,
        quorum: Quorum,
        (sloppy, epoch): (Option<Sloppy>, Option<u64>),
    ) -> Self {
        WriteOperation {
            origin,
            key,
            record,
            version,
            needed,
            quorum,
            storage_failed: false,
            refused_busy: 0,
            copies_doubled: false,
            out_of_space: false,
            fanned_out: false,
            sloppy,
            epoch,
        }
    }
}

impl Coordinator {
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    pub(super) fn start_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        request: RequestId,
        key: Bytes,
        (value, expires): (Option<Bytes>, Option<ExpiresAt>),
        context: Option<CausalContext>,
        plan: Plan,
    ) {
        let Plan {
            needed,
            groups,
            replicas,
            deadline,
            ..
        } = plan;
        let grouped = groups.is_some();
        match ctx.config.cluster.conflict {
            ConflictMode::Lww => {
                let (record, version) = new_lww_record(ctx, now, value, expires);
                let write = WriteOperation::new(
                    Origin::Client(request),
                    key,
                    (record, WriteVersion::Lww(version)),
                    needed,
                    quorum_of(replicas, needed, groups),
                    (None, None),
                );
                if ctx.config.cluster.sloppy_quorum && !grouped {
                    let handoff = hand_off_point(ctx, now.monotonic, deadline);
                    let mut write = write;
                    write.sloppy = Some(Sloppy {
                        final_deadline: deadline,
                        hinted: false,
                        replied: false,
                    });
                    let op = self.launch_write(ctx, nb, write, handoff);
                    self.stand_in_for_down(ctx, nb, op);
                } else {
                    self.launch_write(ctx, nb, write, deadline);
                }
            }
            ConflictMode::VectorClock => {
                let context = context.map(|c| c.0).unwrap_or_default();
                if replicas.contains(&ctx.id) {
                    let origin = Origin::Client(request);
                    self.coordinate_causal_put(
                        ctx,
                        nb,
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
                        ctx, nb, now, request, key, value, context, needed, replicas, deadline,
                    );
                }
            }
        }
    }

    /// Registers a write and sends it out (lww: everyone at once; vector clock: local copy first).
    pub(super) fn launch_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        write: WriteOperation,
        deadline: Instant,
    ) -> OperationId {
        let op = ctx.allocate_operation();
        // A new dot, or a new slot of this replica's counter, is durable here before any other
        // replica holds it: after a crash this replica can never issue it again differently.
        let local_first = matches!(
            write.version,
            WriteVersion::Dot(_) | WriteVersion::Counter(_)
        );
        let is_replica = write.quorum.voters().contains(&ctx.id);
        let key = write.key.clone();
        let record = write.record.clone();
        let epoch = write.epoch;
        self.track(op, Operation::Write(Box::new(write)), deadline);
        if is_replica {
            // Linearizable: this node's copy counts only on the same ring and once it holds the
            // range; a refused copy is not applied (see `handover`).
            let admitted = epoch.map_or(Ok(()), |epoch| nb.handover.lin_admit(ctx, epoch, &key));
            match admitted.and_then(|()| ctx.apply(key, &record, AfterPersist::AckLocal(op))) {
                Ok(Applied::Now) => self.on_local_write_durable(ctx, op),
                Ok(Applied::Pending) => {}
                Err(e) => {
                    let id = ctx.id;
                    self.on_write_reply(ctx, id, op, None, Err(e));
                }
            }
        }
        if !local_first || !is_replica {
            self.fan_out(ctx, op);
        }
        op
    }

    /// Sends the write to every other replica.
    pub(in crate::node) fn fan_out<S: Storage>(&mut self, ctx: &mut Context<S>, op: OperationId) {
        let Some(Operation::Write(write)) = self.in_flight.get_mut(op) else {
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
            .filter(|&r| r != ctx.id)
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
            if buggify!(ctx.faults, &mut ctx.rng, "coordinator/duplicate-write") {
                // Exercise idempotence: replicas must tolerate a duplicated write.
                if let Some(Operation::Write(write)) = self.in_flight.get_mut(op) {
                    write.copies_doubled = true;
                }
                ctx.send(target, message.clone());
            }
            ctx.send(target, message);
        }
    }

    /// This node's own copy of a write it coordinates is durable.
    pub(in crate::node) fn on_local_write_durable<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        op: OperationId,
    ) {
        // Vector-clock writes fan out only now: the new dot is durable here, so a restart of this
        // replica can never create the same dot again. Before counting this copy: with W = 1 it
        // completes the write, and a write fanned out only after that was never sent to the
        // other replicas at all (it lived on this node alone until anti-entropy; swarm 2204).
        self.fan_out(ctx, op);
        let id = ctx.id;
        self.on_write_reply(ctx, id, op, None, Ok(()));
    }

    /// A replica's (or fallback's) acknowledgement of a write round trip, or of a hint replay.
    /// `key_digest` is `None` only for this node's own copy; a reply about another key is stale.
    pub(in crate::node) fn on_write_reply<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key_digest: Option<u64>,
        result: Result<(), ReplicaError>,
    ) {
        let Some(Operation::Write(write)) = self.in_flight.get_mut(op) else {
            ctx.stats.stale_replies += 1;
            return;
        };
        if key_digest.is_some_and(|d| d != crate::id::key_digest(&write.key)) {
            ctx.stats.stale_replies += 1;
            return;
        }
        // A fallback's acknowledgement counts for the replica it stands in for, once.
        if write.quorum.record(from, result.is_ok()) == Recorded::Stale {
            ctx.stats.stale_replies += 1;
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
        self.settle_write(ctx, op);
    }

    /// After an answer was recorded: answer the origin once the quorum is met or can no longer
    /// be, or (sloppy) once it is met before the hand-off point, which the write then waits for.
    fn settle_write<S: Storage>(&mut self, ctx: &mut Context<S>, op: OperationId) {
        let Some(Operation::Write(write)) = self.in_flight.get_mut(op) else {
            return;
        };
        let acked = write.quorum.acks();
        let replicas = write.quorum.voters().len();
        let (met, unreachable) = settled(&write.quorum);
        if let Some(sloppy) = &mut write.sloppy {
            if sloppy.replied {
                if acked >= replicas {
                    self.untrack(op);
                }
                return;
            }
            if met && acked < replicas && !sloppy.hinted {
                // Answer now; stay until the hand-off point to hint for replicas still silent.
                sloppy.replied = true;
                let origin = write.origin.clone();
                let (outcome, needed) = (written(write, acks(acked)), write.needed);
                self.finish_write(ctx, origin, needed, outcome);
                return;
            }
            if !met && !sloppy.hinted {
                return; // fallbacks may still make up the difference at the hand-off point
            }
        }
        if met || unreachable {
            if let Some(Operation::Write(write)) = self.untrack(op) {
                let outcome = if met {
                    written(&write, acks(acked))
                } else if acked == 0
                    && write.quorum.refused_voters() == replicas
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
                self.finish_write(ctx, write.origin, write.needed, outcome);
            }
        }
    }

    pub(super) fn finish_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        origin: Origin,
        needed: u8,
        outcome: ForwardedOutcome,
    ) {
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
                ctx.reply(request, reply);
            }
            Origin::WriteBack { request, reply } => {
                let reply = match outcome {
                    ForwardedOutcome::Written { .. } | ForwardedOutcome::Counted { .. } => reply,
                    ForwardedOutcome::Indeterminate { acks } => {
                        ClientReply::Unavailable { acks, needed }
                    }
                    ForwardedOutcome::Rejected(e) => ClientReply::Rejected(e),
                };
                ctx.reply(request, reply);
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
                ctx.send(from, reply);
            }
        }
    }

    /// Replicates the counter state an increment left on this replica (local copy first, then
    /// the others; with sloppy quorum, fallbacks keep hints for silent replicas). The state is
    /// merged by per-actor maximum wherever it lands, so copies, retries and hints are harmless.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    pub(in crate::node) fn launch_counter_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        origin: Origin,
        key: Bytes,
        counter: crate::version::CounterRecord,
        dot: crate::version::CounterDot,
        needed: u8,
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let sloppy = ctx.config.cluster.sloppy_quorum.then_some(Sloppy {
            final_deadline: deadline,
            hinted: false,
            replied: false,
        });
        let tracked = if sloppy.is_some() {
            hand_off_point(ctx, now.monotonic, deadline)
        } else {
            deadline
        };
        let write = WriteOperation::new(
            origin,
            key,
            (Record::Counter(counter), WriteVersion::Counter(dot)),
            needed,
            quorum_of(replicas, needed, None),
            (sloppy, None),
        );
        let op = self.launch_write(ctx, nb, write, tracked);
        self.stand_in_for_down(ctx, nb, op);
    }

    /// Answers an origin at once, for refusals before any effect.
    pub(in crate::node) fn refuse_write<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        origin: Origin,
        needed: u8,
        error: RequestError,
    ) {
        self.finish_write(ctx, origin, needed, ForwardedOutcome::Rejected(error));
    }
}

/// A new last-write-wins record stamped by this node now (its expiry resolved against the
/// stamp), and its version.
fn new_lww_record<S: Storage>(
    ctx: &mut Context<S>,
    now: Now,
    value: Option<Bytes>,
    expires: Option<ExpiresAt>,
) -> (Record, LwwVersion) {
    let version = LwwVersion {
        timestamp_micros: ctx.stamp(now.wall),
        node: ctx.id,
        nonce: ctx.rng.gen(),
    };
    let record = Record::Lww(LwwRecord {
        version,
        expires_at_micros: value
            .as_ref()
            .and(expires)
            .map(|e| e.resolve(version.timestamp_micros)),
        value,
    });
    (record, version)
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
