//! Sloppy quorum: when replicas stay silent until the hand-off point (or are already judged down),
//! ask stand-ins along the key's ring walk instead, so a write or read still meets its level
//! while some replicas are unreachable.
//!
//! A write's stand-in acknowledges for the replica it stands in for, once, and keeps a hint to
//! deliver later (bounded and replayed, never a substitute for anti-entropy: PITFALLS); a read's
//! fallback answers from its own copy. This node's own staged copy is never given a stand-in: it
//! answers for itself, and a fallback spent on it is one a cut-off replica did not get.

use super::{Coordinator, HandOff, Neighbours, Operation, ReadOperation, WriteOperation};
use crate::buggify;
use crate::id::{NodeId, OperationId};
use crate::membership::Membership;
use crate::message::Message;
use crate::node::context::Context;
use crate::node::gossip::is_down;
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::Record;
use bytes::Bytes;
use rand::Rng;
use std::time::Duration;

/// A write that may use fallback nodes (PITFALLS: hints are bounded and replayed, never a
/// substitute for anti-entropy).
#[derive(Debug)]
pub(in crate::node) struct Sloppy {
    /// The request's real deadline; the tracked deadline is first the hand-off point.
    pub(super) final_deadline: Instant,
    /// Fallbacks were sent hinted copies for the replicas that had not acknowledged.
    pub(super) hinted: bool,
    /// The client already has its answer (W was met); the operation lives on to hint.
    pub(super) replied: bool,
}

impl Coordinator {
    /// The hand-off point of a sloppy write: every replica that has not acknowledged gets a
    /// stand-in, the next node along the ring not already involved, which stores a hint for it.
    pub(super) fn hand_off<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        op: OperationId,
        mut write: WriteOperation,
    ) {
        let Some(sloppy) = write.sloppy.as_mut() else {
            return;
        };
        sloppy.hinted = true;
        let quorum = &mut write.quorum;
        // This node's own copy is not silent while it waits for its fsync: it is staged here and
        // answers for itself (durable, or refused by a failed fsync). Giving it a stand-in spent a
        // fallback that a replica cut off by the network needed (hints-race seed 11: two
        // fallbacks, one to this node's slow fsync, the cut-off replica left with no hint and,
        // with anti-entropy off, an acknowledged write it never received).
        let id = ctx.id;
        let silent: Vec<NodeId> = quorum
            .voters()
            .iter()
            .copied()
            .filter(|r| !quorum.acked().contains(r))
            .filter(|&r| !quorum.has_stand_in(r))
            .filter(|&r| r != id || quorum.has_answered(r))
            .collect();
        let mut involved: Vec<NodeId> = quorum.voters().to_vec();
        involved.extend(quorum.stand_ins().iter().map(|&(f, _)| f));
        let mut sends = Vec::new();
        let walk = fallback_walk(ctx, nb.membership, &write.key);
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
            self.send_hints(OperationId(0), sends, &key, &record);
            return;
        }
        let deadline = final_deadline.max(now.monotonic);
        self.track(op, Operation::Write(Box::new(write)), deadline);
        self.send_hints(op, sends, &key, &record);
    }

    /// Queues hinted copies for the node to send, in order (a fallback that is this node stores
    /// the hint itself, which is the hint store's business: see `Node::send_hand_offs`).
    fn send_hints(
        &mut self,
        op: OperationId,
        sends: Vec<(NodeId, NodeId)>,
        key: &Bytes,
        record: &Record,
    ) {
        for (fallback, intended) in sends {
            self.hand_offs.push(HandOff {
                op,
                fallback,
                intended,
                key: key.clone(),
                record: record.clone(),
            });
        }
    }

    /// A sloppy write need not wait for the hand-off point for replicas the failure detector
    /// already judges down: their stand-ins get hinted copies at once, and their acknowledgements
    /// count for the replicas they stand in for.
    pub(super) fn stand_in_for_down<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        op: OperationId,
    ) {
        let Some(Operation::Write(write)) = self.in_flight.get(op) else {
            return;
        };
        let down: Vec<NodeId> = write
            .quorum
            .voters()
            .iter()
            .copied()
            .filter(|&r| {
                r != ctx.id && is_down(nb.membership, r) && !write.quorum.acked().contains(&r)
            })
            .collect();
        if down.is_empty() {
            return;
        }
        let mut involved: Vec<NodeId> = write.quorum.voters().to_vec();
        let mut sends = Vec::new();
        let walk = fallback_walk(ctx, nb.membership, &write.key);
        for intended in down {
            let Some(fallback) = crate::node::hints::choose_fallback(&walk, &involved) else {
                break;
            };
            involved.push(fallback);
            sends.push((fallback, intended));
        }
        let Some(Operation::Write(write)) = self.in_flight.get_mut(op) else {
            return;
        };
        if write.sloppy.is_none() {
            return;
        }
        for &(fallback, intended) in &sends {
            write.quorum.add_stand_in(fallback, intended);
        }
        let (key, record) = (write.key.clone(), write.record.clone());
        self.send_hints(op, sends, &key, &record);
    }

    /// The hand-off point of a sloppy read: ask as many fallbacks as replicas are still silent,
    /// each for its own copy, until the real deadline.
    pub(super) fn read_hand_off<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        nb: &mut Neighbours<'_>,
        now: Now,
        op: OperationId,
        mut read: ReadOperation,
    ) {
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
        let walk = fallback_walk(ctx, nb.membership, &read.key);
        let mut targets = Vec::new();
        for _ in 0..silent {
            let Some(fallback) = crate::node::hints::choose_fallback(&walk, read.quorum.voters())
            else {
                break;
            };
            read.quorum.add_voter(fallback);
            targets.push(fallback);
        }
        let key = read.key.clone();
        self.track(op, Operation::Read(Box::new(read)), deadline);
        for target in targets {
            if target == ctx.id {
                let record = ctx.local_record(&key);
                self.on_read_reply(ctx, nb, target, op, None, record);
            } else {
                let key = key.clone();
                ctx.send(target, Message::Read { op, key });
            }
        }
    }
}

/// When a sloppy operation started at `from` hands off to fallbacks: `sloppy_after_ms` later,
/// never after `deadline`.
pub(super) fn hand_off_point<S>(ctx: &mut Context<S>, from: Instant, deadline: Instant) -> Instant {
    let mut after_ms = ctx.config.cluster.sloppy_after_ms;
    if buggify!(ctx.faults, &mut ctx.rng, "coordinator/hand-off-early") {
        // Anywhere earlier in the legal window: more hints for replicas that were only slow
        // (merged idempotently where they land), never fewer copies.
        after_ms = ctx.rng.gen_range(0..=after_ms);
    }
    from.saturating_add(Duration::from_millis(after_ms))
        .min(deadline)
}

/// `key`'s ring walk without the nodes the failure detector judges down: where stand-ins
/// for silent or failed replicas are taken from (`hints::choose_fallback`), in order.
fn fallback_walk<S>(ctx: &Context<S>, membership: Option<&Membership>, key: &[u8]) -> Vec<NodeId> {
    let walk = ctx.ring.preference_list(key, ctx.ring.len());
    walk.into_iter()
        .filter(|&n| !is_down(membership, n))
        .collect()
}
