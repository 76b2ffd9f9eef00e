//! Writes that only a replica of the key may coordinate, and their forwarding: a vector-clock put
//! (its new dot comes from that replica's own record) and an increment (applied once, to that
//! replica's own slot; see `counter`). A node that is not a replica forwards the write to one, and
//! the replica serves each forward once.
//!
//! Why retries differ: a put whose attempt times out is tried on the next candidate, since two
//! replicas applying it make at worst two dots (siblings); an increment never is, since a second
//! replica would count it again. Either way a silent candidate makes the outcome indeterminate,
//! never failed.

use super::{quorum_of, Coordinator, Neighbours, Operation, Origin, WriteOperation};
use crate::buggify;
use crate::client::RequestError;
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::{ForwardedOutcome, Message};
use crate::node::context::Context;
use crate::node::gossip::is_down;
use crate::node::NodeEvent;
use crate::quorum::Group;
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::{CausalRecord, Record, VersionVector, WriteVersion};
use bytes::Bytes;
use std::time::Duration;

/// Most forwarded puts remembered for de-duplication.
pub(super) const SERVED_FORWARDS_MAX: usize = 4096;

/// A vector-clock put forwarded to a replica of the key.
#[derive(Debug)]
pub(in crate::node) struct ForwardOperation {
    pub(super) request: RequestId,
    pub(super) key: Bytes,
    pub(super) value: Option<Bytes>,
    pub(super) context: VersionVector,
    pub(super) needed: u8,
    pub(super) candidates: Vec<NodeId>,
    pub(super) attempt: usize,
    pub(super) deadline: Instant,
    /// An increment (`CoordinateIncrement`) rather than a put: it has one candidate only, since
    /// a second replica applying it after the first did would count it twice.
    pub(super) delta: Option<i64>,
}

impl Coordinator {
    pub(in crate::node) fn remember_forward(
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

    /// Creates the new dot from this replica's own record and writes it (local copy first).
    #[expect(
        clippy::too_many_arguments,
        reason = "two call sites with different origins"
    )]
    pub(super) fn coordinate_causal_put<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        origin: Origin,
        key: Bytes,
        value: Option<Bytes>,
        context: VersionVector,
        (needed, groups): (u8, Option<Vec<Group>>),
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let local = match ctx.local_record_for_write(&key) {
            Ok(Some(Record::Causal(record))) => record,
            Ok(_) => CausalRecord::default(),
            Err(_) => {
                let outcome = ForwardedOutcome::Rejected(RequestError::StorageUnavailable);
                self.finish_write(ctx, origin, needed, outcome);
                return;
            }
        };
        let (mut record, dot) = local.update(ctx.actor, &context, value);
        record.prune(ctx.config.cluster.clock_entries_max, &replicas, ctx.actor);
        if record.siblings.len() > ctx.config.cluster.siblings_max {
            let max = ctx.config.cluster.siblings_max;
            self.finish_write(
                ctx,
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
        if bytes > ctx.config.cluster.record_bytes_max {
            let max = ctx.config.cluster.record_bytes_max;
            self.finish_write(
                ctx,
                origin,
                needed,
                ForwardedOutcome::Rejected(RequestError::SiblingsTooLarge { bytes, max }),
            );
            return;
        }
        let write = WriteOperation::new(
            origin,
            key,
            (Record::Causal(record), WriteVersion::Dot(dot)),
            needed,
            quorum_of(replicas, needed, groups),
            (None, None),
        );
        self.launch_write(ctx, nb, write, deadline);
    }

    /// A replica was asked to coordinate a vector-clock put.
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one message, destructured"
    )]
    pub(in crate::node) fn serve_coordinate_put<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        from: NodeId,
        op: OperationId,
        key: Bytes,
        value: Option<Bytes>,
        context: VersionVector,
        needed: u8,
    ) {
        if !self.remember_forward((from, op), &mut ctx.stats.duplicate_forwards) {
            return;
        }
        let n = usize::from(ctx.config.cluster.n);
        let replicas = ctx.ring.preference_list(&key, n);
        let valid = (1..=replicas.len()).contains(&usize::from(needed));
        if !replicas.contains(&ctx.id)
            || !valid
            || self.in_flight.len() >= ctx.config.cluster.requests_in_flight_max
        {
            let outcome = ForwardedOutcome::Rejected(RequestError::Busy);
            let key_digest = crate::id::key_digest(&key);
            let reply = Message::CoordinatePutReply {
                op,
                key_digest,
                outcome,
            };
            ctx.send(from, reply);
            return;
        }
        let deadline = now
            .monotonic
            .saturating_add(ctx.config.cluster.request_timeout());
        let key_digest = crate::id::key_digest(&key);
        let origin = Origin::Forward {
            from,
            op,
            key_digest,
        };
        self.coordinate_causal_put(
            ctx,
            nb,
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
    pub(super) fn forward_put<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        request: RequestId,
        key: Bytes,
        value: Option<Bytes>,
        context: VersionVector,
        needed: u8,
        candidates: Vec<NodeId>,
        deadline: Instant,
    ) {
        let op = ctx.allocate_operation();
        // Replicas the failure detector judges down are tried last (stable order otherwise).
        let mut candidates = candidates;
        candidates.sort_by_key(|&c| is_down(nb.membership, c));
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
        let attempt_deadline = attempt_deadline(ctx, now, &forward);
        self.send_forward(ctx, op, &forward);
        self.track(op, Operation::Forward(forward), attempt_deadline);
    }

    fn send_forward<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        op: OperationId,
        forward: &ForwardOperation,
    ) {
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
        ctx.send(target, message);
    }

    /// The coordinating replica's answer to a forwarded put; only a candidate already tried (an
    /// earlier attempt may still have finished), about the same key, is heard.
    pub(in crate::node) fn on_forward_reply<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        from: NodeId,
        op: OperationId,
        key_digest: u64,
        outcome: ForwardedOutcome,
    ) {
        let expected = match self.in_flight.get(op) {
            Some(Operation::Forward(f)) => {
                f.candidates
                    .get(..=f.attempt)
                    .is_some_and(|tried| tried.contains(&from))
                    && crate::id::key_digest(&f.key) == key_digest
            }
            _ => false,
        };
        if !expected {
            ctx.stats.stale_replies += 1;
            return;
        }
        if let Some(Operation::Forward(forward)) = self.untrack(op) {
            let attempted_before = forward.attempt > 0;
            let outcome = match outcome {
                // An earlier attempt may still apply, so a refusal now is not "no effect".
                ForwardedOutcome::Rejected(_) if attempted_before => {
                    ForwardedOutcome::Indeterminate { acks: 0 }
                }
                other => other,
            };
            self.finish_write(
                ctx,
                Origin::Client(forward.request),
                forward.needed,
                outcome,
            );
        }
    }

    /// Sends an increment to one replica of the key to apply (this node is not one): the first
    /// the failure detector does not judge down. Never retried on another replica: the first
    /// may have applied it, and a second would count it again; a silent replica makes the
    /// outcome indeterminate.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    pub(in crate::node) fn forward_increment<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        request: RequestId,
        key: Bytes,
        delta: i64,
        needed: u8,
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let mut candidates = replicas;
        candidates.sort_by_key(|&c| is_down(nb.membership, c));
        candidates.truncate(1);
        let op = ctx.allocate_operation();
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
        let attempt_deadline = attempt_deadline(ctx, now, &forward);
        self.send_forward(ctx, op, &forward);
        self.track(op, Operation::Forward(forward), attempt_deadline);
    }

    /// A forwarded put's attempt timed out: try the next candidate while the request's deadline
    /// allows, else the outcome is unknown (the silent candidate may have applied it).
    pub(super) fn retry_forward<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        now: Now,
        op: OperationId,
        mut forward: ForwardOperation,
    ) {
        if forward.attempt + 1 < forward.candidates.len() && now.monotonic < forward.deadline {
            forward.attempt += 1;
            let next = forward.candidates[forward.attempt];
            ctx.outputs
                .push_back(crate::node::Output::Event(NodeEvent::ForwardRetried {
                    next,
                }));
            self.send_forward(ctx, op, &forward);
            let attempt_deadline = attempt_deadline(ctx, now, &forward);
            self.track(op, Operation::Forward(forward), attempt_deadline);
        } else {
            let outcome = ForwardedOutcome::Indeterminate { acks: 0 };
            let origin = Origin::Client(forward.request);
            self.finish_write(ctx, origin, forward.needed, outcome);
        }
    }
}

/// Each candidate replica gets an equal slice of the request timeout.
fn attempt_deadline<S>(ctx: &mut Context<S>, now: Now, forward: &ForwardOperation) -> Instant {
    let retry = forward.attempt + 1 < forward.candidates.len();
    if retry && buggify!(ctx.faults, &mut ctx.rng, "coordinator/forward-retry") {
        // Try the next candidate early, while this one may still apply the put: both may
        // then apply it (two dots, siblings at worst), and a late reply from either counts.
        return now
            .monotonic
            .saturating_add(Duration::from_millis(1))
            .min(forward.deadline);
    }
    let slices = u32::try_from(forward.candidates.len()).unwrap_or(1).max(1);
    let slice = ctx.config.cluster.request_timeout() / slices;
    now.monotonic
        .saturating_add(slice.max(Duration::from_millis(1)))
        .min(forward.deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_puts_are_served_once_and_remembered_within_a_bound() {
        let mut coordinator = Coordinator::default();
        let mut duplicates = 0;
        let first = (NodeId(1), OperationId(1));
        assert!(coordinator.remember_forward(first, &mut duplicates));
        assert!(!coordinator.remember_forward(first, &mut duplicates));
        assert_eq!(duplicates, 1);
        for i in 2..=(SERVED_FORWARDS_MAX as u64 + 1) {
            assert!(coordinator.remember_forward((NodeId(1), OperationId(i)), &mut duplicates));
        }
        coordinator.check_invariants();
        assert_eq!(coordinator.served_forwards.len(), SERVED_FORWARDS_MAX);
        // The oldest was forgotten to make room: a duplicate that late is served again (the
        // bound is what keeps the memory finite; forwards retry within a request timeout).
        assert!(coordinator.remember_forward(first, &mut duplicates));
        assert_eq!(duplicates, 1);
    }
}
