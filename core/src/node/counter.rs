//! The counter path: `INCR`/`INCRBY`/`DECR`/`DECRBY` as PN-counter increments.
//!
//! An increment *message* is not idempotent; the counter *state* is (`version::counter`). So
//! each increment is applied exactly once, by one replica of the key, to that replica's own
//! slot, from its own stored record; only the resulting state travels further. The path, like
//! the vector-clock forwarded put:
//! 1. The client-facing node applies the increment itself if it is a replica of the key;
//!    otherwise it sends it (`CoordinateIncrement`) to ONE replica, the first one not judged
//!    down, and never retries it on another (the first may have applied it: a retry elsewhere
//!    would count it twice). A lost message or a silent replica makes the reply indeterminate.
//!    A duplicated message is dropped by the receiver's forward de-duplication.
//! 2. The applying replica reads its record (a counter, a plain integer or tombstone to convert,
//!    or nothing), raises its own slot, stages the new state and waits until it is durable
//!    before any other replica sees it (a crash before that loses the increment on every copy
//!    together, never half of it).
//! 3. It then writes the state to the other replicas as an ordinary write (merged by per-actor
//!    maximum; with sloppy quorum fallbacks keep hints for silent replicas) and acknowledges
//!    once W copies are durable, answering the counter's value as it saw it.
//!
//! So an increment stays available while one replica of the key is reachable from the
//! client-facing node and W copies (with sloppy quorum, fallbacks count) can be made durable.

use super::context::Context;
use super::coordinator::{Coordinator, Neighbours, Origin};
use crate::client::{ClientReply, Consistency, RequestError};
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::{ForwardedOutcome, Message};
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::counter::{self, CounterError};
use crate::version::ConflictMode;
use bytes::Bytes;

impl Coordinator {
    /// A client's increment, at this (client-facing) node.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's fields, destructured, and the state they need"
    )]
    pub(super) fn start_increment<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        request: RequestId,
        key: Bytes,
        delta: i64,
        consistency: Option<Consistency>,
    ) {
        let cluster = &ctx.config.cluster;
        let n = cluster.n;
        let needed = match increment_quorum(cluster.conflict, consistency.or(cluster.consistency)) {
            Ok(None) => Some(cluster.w),
            Ok(Some(level)) => level.required(n),
            Err(e) => {
                ctx.reply(request, ClientReply::Rejected(e));
                return;
            }
        };
        let Some(needed) = needed else {
            let e = RequestError::InvalidConsistency;
            ctx.reply(request, ClientReply::Rejected(e));
            return;
        };
        let replicas = ctx.ring.preference_list(&key, usize::from(n));
        if replicas.len() < usize::from(needed) {
            let e = if replicas.is_empty() {
                RequestError::NoReplicas
            } else {
                RequestError::InvalidConsistency
            };
            ctx.reply(request, ClientReply::Rejected(e));
            return;
        }
        let deadline = now
            .monotonic
            .saturating_add(ctx.config.cluster.request_timeout());
        if replicas.contains(&ctx.id) {
            let origin = Origin::Client(request);
            self.apply_increment(ctx, nb, now, origin, key, delta, needed, replicas, deadline);
        } else {
            self.forward_increment(
                ctx, nb, now, request, key, delta, needed, replicas, deadline,
            );
        }
    }

    /// A client-facing node asks this replica to apply an increment.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's fields, destructured, and the state they need"
    )]
    pub(super) fn serve_coordinate_increment<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        from: NodeId,
        op: OperationId,
        key: Bytes,
        delta: i64,
        needed: u8,
    ) {
        // A duplicated message must not count the increment twice.
        if !self.remember_forward((from, op), &mut ctx.stats.duplicate_forwards) {
            return;
        }
        let key_digest = crate::id::key_digest(&key);
        let origin = Origin::Forward {
            from,
            op,
            key_digest,
        };
        let n = usize::from(ctx.config.cluster.n);
        let replicas = ctx.ring.preference_list(&key, n);
        let valid = (1..=replicas.len()).contains(&usize::from(needed));
        if !replicas.contains(&ctx.id)
            || !valid
            || self.in_flight.len() >= ctx.config.cluster.requests_in_flight_max
        {
            self.refuse_write(ctx, origin, needed, RequestError::Busy);
            return;
        }
        if ctx.config.cluster.conflict != ConflictMode::Lww {
            self.refuse_write(ctx, origin, needed, RequestError::CountersNeedLww);
            return;
        }
        let deadline = now
            .monotonic
            .saturating_add(ctx.config.cluster.request_timeout());
        self.apply_increment(ctx, nb, now, origin, key, delta, needed, replicas, deadline);
    }

    /// Applies an increment to this replica's own slot and replicates the resulting state.
    #[expect(
        clippy::too_many_arguments,
        reason = "two call sites with different origins"
    )]
    fn apply_increment<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        origin: Origin,
        key: Bytes,
        delta: i64,
        needed: u8,
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        let local = match ctx.local_record_for_write(&key) {
            Ok(local) => local,
            Err(_) => {
                self.refuse_write(ctx, origin, needed, RequestError::StorageUnavailable);
                return;
            }
        };
        let applied = counter::counter_of(local.as_ref())
            .and_then(|current| counter::increment(&current, ctx.actor, delta));
        let (state, dot) = match applied {
            Ok(applied) => applied,
            Err(e) => {
                self.refuse_write(ctx, origin, needed, refusal(e));
                return;
            }
        };
        // The epoch is a version other records are compared with: keep the clock above it.
        ctx.clock.observe(state.epoch.timestamp_micros);
        self.launch_counter_write(
            ctx, nb, now, origin, key, state, dot, needed, replicas, deadline,
        );
    }
}

/// Which levels an increment accepts: `None` (the cluster's `w`) or a plain count. A pure
/// policy.
fn increment_quorum(
    conflict: ConflictMode,
    level: Option<Consistency>,
) -> Result<Option<Consistency>, RequestError> {
    if conflict != ConflictMode::Lww {
        return Err(RequestError::CountersNeedLww);
    }
    match level {
        None => Ok(None),
        Some(Consistency::One | Consistency::Quorum | Consistency::All | Consistency::Count(_)) => {
            Ok(level)
        }
        Some(Consistency::Linearizable | Consistency::LocalQuorum | Consistency::EachQuorum) => {
            Err(RequestError::CountersNeedLww)
        }
    }
}

/// The client-visible refusal of an increment that could not apply.
fn refusal(error: CounterError) -> RequestError {
    match error {
        CounterError::NotAnInteger => RequestError::NotAnInteger,
        CounterError::Overflow => RequestError::IncrementOverflow,
    }
}

/// The reply a forwarding node sends when it cannot even consider an increment (held inputs
/// refused before the incarnation is durable, see `incarnation`).
pub(super) fn refused_increment(op: OperationId, key: &[u8], error: RequestError) -> Message {
    Message::CoordinatePutReply {
        op,
        key_digest: crate::id::key_digest(key),
        outcome: ForwardedOutcome::Rejected(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_take_plain_levels_in_lww_mode_only() {
        let lww = ConflictMode::Lww;
        assert_eq!(increment_quorum(lww, None), Ok(None));
        for level in [
            Consistency::One,
            Consistency::Quorum,
            Consistency::All,
            Consistency::Count(2),
        ] {
            assert_eq!(increment_quorum(lww, Some(level)), Ok(Some(level)));
        }
        for level in [
            Consistency::Linearizable,
            Consistency::LocalQuorum,
            Consistency::EachQuorum,
        ] {
            assert_eq!(
                increment_quorum(lww, Some(level)),
                Err(RequestError::CountersNeedLww)
            );
        }
        assert_eq!(
            increment_quorum(ConflictMode::VectorClock, None),
            Err(RequestError::CountersNeedLww)
        );
    }
}
