//! The coordinator side: turn a client request into replica round trips and answer after R reads
//! or W durable writes, or with a typed outcome at the deadline.
//!
//! [`Coordinator`] owns the operations in flight and their deadlines; each operation's answers
//! are a [`Quorum`] value. Its inputs take the node's shared [`Context`] and, where a decision
//! depends on them, the other mechanisms' state ([`Neighbours`]: the linearizable level's ring
//! epoch gate and the failure detector). Work that belongs to another mechanism is handed back
//! to the node as a value: a conditional write's Paxos round ([`PaxosStart`]), an expired Paxos
//! round or scan ([`Expired`]), and hinted copies a fallback that is this node must store
//! ([`HandOff`], drained by the node after every coordinator input). The counter path
//! (`counter`) and failing fast (`fail_fast`) are parts of coordinating: `impl Coordinator`
//! blocks of their own files.
//!
//! This file holds the state every path shares (the operations, their deadlines, the interface
//! to the node) and the two entry points that only dispatch: a client request
//! ([`Coordinator::start_request`]) and an expired deadline ([`Coordinator::on_deadline`]). Each
//! path is its own file, with `impl Coordinator` blocks of its own, so one can be read (and
//! changed) without the others:
//! - `request`: limits and the level resolved into a plan, before anything is sent;
//! - `read`: reads, and the query phase of the linearizable level (ABD);
//! - `repair`: read repair, best effort after a read;
//! - `write`: writes and the one place their answer is decided;
//! - `forward`: writes only a replica may coordinate (vector-clock puts, increments), forwarded;
//! - `sloppy`: stand-ins for silent or down replicas, at the hand-off point.

mod forward;
mod in_flight;
mod read;
mod repair;
mod request;
mod sloppy;
mod write;

use super::context::Context;
use super::handover::Handover;
use crate::client::{ClientReply, ClientRequest};
use crate::id::{NodeId, OperationId, RequestId};
use crate::membership::Membership;
use crate::message::ForwardedOutcome;
use crate::quorum::{Group, Quorum, QuorumOutcome};
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::Record;
use bytes::Bytes;
use forward::{ForwardOperation, SERVED_FORWARDS_MAX};
pub(super) use in_flight::InFlight;
use read::ReadOperation;
pub(super) use write::Origin;
use write::WriteOperation;

/// The coordinator's state: operations in flight with their deadlines (a datacenter level's groups
/// travel inside each operation's quorum), forwarded puts already served, when each member was
/// last heard from, and the hinted copies the last input decided.
#[derive(Default)]
pub(super) struct Coordinator {
    /// Operations in flight, each with its deadline.
    pub(super) in_flight: InFlight,
    pub(super) served_forwards: std::collections::BTreeSet<(NodeId, OperationId)>,
    pub(super) served_forwards_order: std::collections::VecDeque<(NodeId, OperationId)>,
    /// When each ring member was last heard from directly (any message): evidence that
    /// overrides a stale `Down` verdict for failing fast (see `fail_fast`).
    pub(super) heard_from: super::fail_fast::HeardFrom,
    /// Hinted copies decided by the last input, in order, for the node to send or store:
    /// empty between inputs.
    pub(super) hand_offs: Vec<HandOff>,
}

/// What the coordinator consults of the other mechanisms.
pub(super) struct Neighbours<'a> {
    /// The linearizable level's ring epochs and range readiness (see `handover`).
    pub(super) handover: &'a mut Handover,
    /// The failure detector, when the node runs with gossip.
    pub(super) membership: Option<&'a Membership>,
}

/// A hinted copy of a sloppy write for `fallback` to keep for `intended`.
#[derive(Debug)]
pub(super) struct HandOff {
    /// The write's id (`OperationId(0)`: fire-and-forget, the client has its answer).
    pub(super) op: OperationId,
    pub(super) fallback: NodeId,
    pub(super) intended: NodeId,
    pub(super) key: Bytes,
    pub(super) record: Record,
}

/// A conditional write's Paxos round, for the node to start (see `paxos`).
#[derive(Debug)]
pub(super) struct PaxosStart {
    pub(super) request: RequestId,
    pub(super) key: Bytes,
    pub(super) intent: super::paxos::Intent,
    /// A strict majority of `replicas`.
    pub(super) needed: u8,
    pub(super) replicas: Vec<NodeId>,
    pub(super) deadline: Instant,
}

/// What an expired deadline leaves for another mechanism.
#[derive(Debug)]
pub(super) enum Expired {
    /// Handled here.
    Done,
    /// A Paxos round's deadline (see `paxos`).
    Paxos(Box<super::paxos::PaxosOperation>),
    /// A scan page's or key count's deadline (see `scan`).
    Scan(super::scan::ScanOperation),
}

impl Coordinator {
    pub(super) fn track(&mut self, op: OperationId, operation: Operation, deadline: Instant) {
        self.in_flight.track(op, operation, deadline);
    }

    pub(super) fn untrack(&mut self, op: OperationId) -> Option<Operation> {
        self.untrack_with_deadline(op)
            .map(|(_, operation)| operation)
    }

    pub(super) fn untrack_with_deadline(
        &mut self,
        op: OperationId,
    ) -> Option<(Instant, Operation)> {
        self.in_flight.untrack_with_deadline(op)
    }

    /// Internal consistency; panics only on a bug in this crate. Pairs every operation with
    /// exactly one deadline, and checks every operation's own quorum.
    pub(super) fn check_invariants(&self) {
        self.in_flight.check_invariants();
        self.check_own_invariants();
    }

    /// [`Coordinator::check_invariants`] with only the operations changed since the last check
    /// walked (see `in_flight`), given that it held then.
    pub(super) fn check_changed_invariants(&self) {
        self.in_flight.check_changed();
        self.check_own_invariants();
    }

    /// Everything but the operations in flight.
    fn check_own_invariants(&self) {
        assert_eq!(self.served_forwards.len(), self.served_forwards_order.len());
        assert!(self.served_forwards_order.len() <= SERVED_FORWARDS_MAX);
        assert!(
            self.hand_offs.is_empty(),
            "hinted copies left unsent after an input"
        );
    }
}

/// Work in flight at a coordinator.
#[derive(Debug)]
pub(super) enum Operation {
    // Boxed: an operation is moved into and out of the tracking map once per request, and the
    // map shifts neighbours on insert and remove; moving kilobyte-sized values was 3% of a
    // GET's instructions (issue #15).
    Read(Box<ReadOperation>),
    Write(Box<WriteOperation>),
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

impl Coordinator {
    /// A keyed client request (scans and key counts are routed to `scan` before this): the
    /// limits, the level resolved into replicas and a quorum, then a plain or linearizable
    /// read or write. Returns the Paxos round to start for a conditional write, which the node
    /// hands to `paxos`.
    pub(super) fn start_request<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        request: RequestId,
        body: ClientRequest,
    ) -> Option<PaxosStart> {
        if let Err(e) = self.admit(ctx, &body) {
            ctx.reply(request, ClientReply::Rejected(e));
            return None;
        }
        if let ClientRequest::Increment {
            key,
            delta,
            consistency,
        } = body
        {
            self.start_increment(ctx, nb, now, request, key, delta, consistency);
            return None;
        }
        let plan = match self.plan(ctx, nb.membership, now, &body) {
            Ok(plan) => plan,
            Err(e) => {
                ctx.reply(request, ClientReply::Rejected(e));
                return None;
            }
        };
        if plan.linearizable {
            return self.start_linearizable(ctx, nb, request, body, plan);
        }
        self.start_plain(ctx, nb, now, request, body, plan);
        None
    }

    /// `op`'s tracked deadline passed (the caller already stopped tracking it: `operation`): a
    /// sloppy operation reaches its hand-off point, a forward tries its next candidate, anything
    /// else answers with what it has. A Paxos round or a scan is handed back to its mechanism.
    pub(super) fn on_deadline<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        op: OperationId,
        operation: Operation,
    ) -> Expired {
        match operation {
            Operation::Read(read) if read.replied => self.read_repair(ctx, *read),
            Operation::Read(read) if read.sloppy_final.is_some() => {
                self.read_hand_off(ctx, nb, now, op, *read);
            }
            Operation::Read(read) => {
                // Also a linearizable write still in its query phase: nothing was written yet.
                let reply = ClientReply::Unavailable {
                    acks: acks(read.quorum.acks()),
                    needed: read.needed,
                };
                ctx.reply(read.request, reply);
            }
            Operation::Write(write) if write.sloppy.as_ref().is_some_and(|s| !s.hinted) => {
                self.hand_off(ctx, nb, now, op, *write);
            }
            Operation::Write(write) => {
                if !write.sloppy.as_ref().is_some_and(|s| s.replied) {
                    let outcome = ForwardedOutcome::Indeterminate {
                        acks: acks(write.quorum.acks()),
                    };
                    self.finish_write(ctx, write.origin, write.needed, outcome);
                }
            }
            Operation::Paxos(paxos) => return Expired::Paxos(paxos),
            Operation::Forward(forward) => self.retry_forward(ctx, now, op, forward),
            Operation::Scan(scan) => return Expired::Scan(scan),
        }
        Expired::Done
    }
}

/// The tracker for a level: `needed` of all replicas, or every group's own quorum for the
/// datacenter levels.
fn quorum_of(replicas: Vec<NodeId>, needed: u8, groups: Option<Vec<Group>>) -> Quorum {
    match groups {
        Some(groups) => Quorum::grouped(replicas, groups),
        None => Quorum::count(replicas, usize::from(needed)),
    }
}

/// (met, can no longer be met) for an operation's quorum: for the datacenter levels, as soon
/// as one group's own quorum can no longer be met (a refused replica never counts later).
fn settled(quorum: &Quorum) -> (bool, bool) {
    match quorum.outcome() {
        QuorumOutcome::Met { .. } => (true, false),
        QuorumOutcome::Failed { .. } => (false, true),
        QuorumOutcome::Pending => (false, false),
    }
}

/// Clamps a count into the `u8` replies carry (n is at most 16).
fn acks(count: usize) -> u8 {
    u8::try_from(count).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::read::ReadPurpose;
    use super::*;
    use crate::version::VersionVector;

    fn at_ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn forward(candidates: &[u32]) -> Operation {
        Operation::Forward(ForwardOperation {
            request: RequestId(1),
            key: Bytes::from_static(b"k"),
            value: None,
            context: VersionVector::default(),
            needed: 1,
            candidates: candidates.iter().copied().map(NodeId).collect(),
            attempt: 0,
            deadline: at_ms(1_000),
            delta: None,
        })
    }

    fn read(replicas: &[u32], needed: u8) -> ReadOperation {
        let replicas: Vec<NodeId> = replicas.iter().copied().map(NodeId).collect();
        ReadOperation {
            request: RequestId(7),
            purpose: ReadPurpose::Plain,
            key: Bytes::from_static(b"k"),
            needed,
            quorum: quorum_of(replicas, needed, None),
            merged: None,
            refused_busy: 0,
            records: Vec::new(),
            replied: false,
            sloppy_final: None,
            epoch: None,
            with_expiry: false,
        }
    }

    #[test]
    fn operations_and_deadlines_stay_paired() {
        let mut coordinator = Coordinator::default();
        coordinator.track(OperationId(1), forward(&[1]), at_ms(30));
        coordinator.track(OperationId(2), forward(&[2]), at_ms(10));
        coordinator.track(OperationId(3), forward(&[3]), at_ms(20));
        coordinator.check_invariants();
        let order: Vec<u64> = coordinator
            .in_flight
            .deadlines()
            .map(|(_, op)| op.0)
            .collect();
        assert_eq!(order, vec![2, 3, 1], "deadlines are ordered by time");
        assert!(coordinator.untrack(OperationId(3)).is_some());
        assert!(
            coordinator.untrack(OperationId(3)).is_none(),
            "untracked twice"
        );
        let (deadline, _) = coordinator
            .untrack_with_deadline(OperationId(1))
            .expect("tracked");
        assert_eq!(deadline, at_ms(30));
        coordinator.check_invariants();
        assert_eq!(coordinator.in_flight.len(), 1);
        assert_eq!(coordinator.in_flight.deadlines().count(), 1);
    }

    #[test]
    #[should_panic(expected = "every operation has exactly one deadline")]
    fn an_operation_without_a_deadline_is_a_bug() {
        let mut coordinator = Coordinator::default();
        coordinator.track(OperationId(1), forward(&[1]), at_ms(30));
        coordinator.in_flight.drop_deadlines();
        coordinator.check_invariants();
    }

    #[test]
    #[should_panic(expected = "reads with a quorum are answered")]
    fn a_read_with_its_quorum_still_unanswered_is_a_bug() {
        let mut coordinator = Coordinator::default();
        let mut operation = read(&[1, 2, 3], 2);
        for node in [1, 2] {
            operation.quorum.record(NodeId(node), true);
            operation.records.push((NodeId(node), None));
        }
        coordinator.track(
            OperationId(1),
            Operation::Read(Box::new(operation)),
            at_ms(30),
        );
        coordinator.check_invariants();
    }

    #[test]
    fn grouped_and_counted_quorums_fail_as_soon_as_they_cannot_be_met() {
        let replicas = || vec![NodeId(1), NodeId(2), NodeId(3)];
        let mut counted = quorum_of(replicas(), 2, None);
        counted.record(NodeId(1), false);
        counted.record(NodeId(2), false);
        assert_eq!(settled(&counted), (false, true));
        let group = Group {
            members: replicas(),
            needed: 2,
        };
        let mut grouped = quorum_of(replicas(), 2, Some(vec![group]));
        grouped.record(NodeId(1), false);
        assert_eq!(settled(&grouped), (false, false));
        grouped.record(NodeId(2), false);
        assert_eq!(settled(&grouped), (false, true));
        let mut met = quorum_of(replicas(), 1, None);
        met.record(NodeId(3), true);
        assert_eq!(settled(&met), (true, false));
    }
}
