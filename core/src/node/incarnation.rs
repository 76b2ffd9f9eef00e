//! The node's incarnation: a number kept in its own storage and bumped durably at every start, so
//! the operation ids of one process are never reused by the next (STYLE: "Identity survives
//! restarts").
//!
//! Why: replies are matched to operations by id. With ids restarting at 1 in every process, a late
//! reply to a previous process's round trip was taken as the answer to a new operation on another
//! key, and a linearizable read wrote that key's record back under the wrong key (issue #11,
//! item 2). The incarnation fills the high half of every `OperationId`.
//!
//! The bump must be durable before the first id of the new incarnation leaves the node: a crash
//! before the sync would let the next start read the old number and bump to the same one again.
//! Until the bump is durable, inputs that would allocate ids (client requests, forwarded puts) wait
//! in a bounded queue and hint replay waits for its next round; a node that cannot persist never
//! coordinates.

use super::context::Context;
use crate::client::{ClientReply, ClientRequest, RequestError};
use crate::codec;
use crate::id::{key_digest, NodeId, OperationId, RequestId};
use crate::message::{ForwardedOutcome, Message};
use crate::storage::Storage;
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;
use std::collections::VecDeque;

/// Where the incarnation lives (reserved key, never replicated).
pub const INCARNATION_KEY: &[u8] = b"\xff\xffmeta/incarnation";

/// An input that allocates operation ids, held until the incarnation is durable.
#[derive(Debug)]
pub(super) enum Deferred {
    /// A client request.
    Client(RequestId, ClientRequest),
    /// A message from a peer (a forwarded put).
    Message(NodeId, Box<Message>),
}

/// The incarnation after `stored`, the number the previous process persisted (`None` on a fresh
/// data directory). A pure policy; 0 is never returned, so no allocated id is `OperationId(0)`.
pub fn next_incarnation(stored: Option<u32>) -> u32 {
    stored.unwrap_or(0).saturating_add(1).max(1)
}

/// The incarnation mechanism: bumps the number at start and holds the inputs that would allocate
/// ids until the bump is durable. The number itself is in the context (`Context::incarnation`),
/// where every mechanism allocates ids from it.
#[derive(Debug, Default)]
pub(super) struct Incarnation {
    /// Inputs that allocate ids, held until the incarnation is durable (at most
    /// `requests_in_flight_max`), oldest first.
    held: VecDeque<Deferred>,
}

impl Incarnation {
    /// At start-up: reads the previous incarnation and stages the next one.
    pub(super) fn bump<S: Storage>(&mut self, ctx: &mut Context<S>) {
        let stored = match ctx.storage.get(INCARNATION_KEY) {
            Ok(Some(Record::Lww(LwwRecord {
                value: Some(bytes), ..
            }))) => codec::decode_value::<u32>(&bytes).ok(),
            _ => None,
        };
        ctx.incarnation = next_incarnation(stored);
        Self::stage(ctx);
    }

    /// Stages the incarnation record. If storage refuses it (a full disk), nothing may stand for
    /// its durability: the sequence is set past anything durable, and the next held input
    /// tries again (the disk may have room by then; issue 17, item 6).
    fn stage<S: Storage>(ctx: &mut Context<S>) {
        let record = Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: u64::from(ctx.incarnation),
                node: ctx.id,
                nonce: 0,
            },
            value: Some(Bytes::from(codec::encode_value(&ctx.incarnation))),
            expires_at_micros: None,
        });
        // If staging fails the sequence stays ahead of anything durable and the node does not
        // coordinate: the safe outcome for a node whose storage refuses writes.
        ctx.incarnation_sequence = match ctx.stage(Bytes::from_static(INCARNATION_KEY), record) {
            Ok(()) => ctx.durability.staged().max(1),
            Err(_) => u64::MAX,
        };
    }

    /// Holds `input` until the incarnation is durable, or gives it back if it need not wait.
    /// Past `requests_in_flight_max` held inputs, or on storage that can no longer persist, the
    /// input is refused instead (busy, or storage unavailable): refused before any effect.
    pub(super) fn defer<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        input: Deferred,
    ) -> Result<(), Deferred> {
        if ctx.incarnation_durable() {
            return Err(input);
        }
        if ctx.incarnation_sequence == u64::MAX && !ctx.durability.is_poisoned() {
            Self::stage(ctx);
        }
        let refusal = if ctx.durability.is_poisoned() {
            Some(RequestError::StorageUnavailable)
        } else if ctx.incarnation_sequence == u64::MAX {
            // Still refused (a full disk): answered now rather than held until space is back.
            Some(RequestError::OutOfDiskSpace)
        } else if self.held.len() >= ctx.config.cluster.requests_in_flight_max {
            Some(RequestError::Busy)
        } else {
            None
        };
        match refusal {
            Some(e) => refuse(ctx, input, e),
            None => self.held.push_back(input),
        }
        Ok(())
    }

    /// Storage failed before the incarnation became durable: every held input is refused.
    pub(super) fn refuse_all<S>(&mut self, ctx: &mut Context<S>) {
        while let Some(input) = self.held.pop_front() {
            refuse(ctx, input, RequestError::StorageUnavailable);
        }
    }

    /// The held inputs, oldest first, once the incarnation is durable (none before): the node
    /// starts them (`Node::release_deferred`), as if they had just arrived.
    pub(super) fn release<S>(&mut self, ctx: &Context<S>) -> VecDeque<Deferred> {
        if !ctx.incarnation_durable() {
            return VecDeque::new();
        }
        std::mem::take(&mut self.held)
    }

    /// How many inputs are held.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Identity across restarts: every id in flight (`ids`) is of this incarnation, and none
    /// exists before the incarnation is durable; inputs are held only while it is not, and never
    /// more than the bound.
    pub(super) fn check_invariants<S>(
        &self,
        ctx: &Context<S>,
        ids: impl IntoIterator<Item = OperationId>,
    ) {
        assert!(ctx.incarnation >= 1, "incarnation 0 is never used");
        let durable = ctx.incarnation_durable();
        for op in ids {
            assert_eq!(
                op.incarnation(),
                ctx.incarnation,
                "an id of another incarnation"
            );
            assert!(
                durable,
                "an id allocated before the incarnation was durable"
            );
        }
        assert!(
            !durable || self.held.is_empty(),
            "held inputs are released once the incarnation is durable"
        );
        assert!(
            self.held.len() <= ctx.config.cluster.requests_in_flight_max,
            "more inputs held than requests_in_flight_max"
        );
    }
}

/// Answers `input` with the refusal `e`, before it had any effect.
fn refuse<S>(ctx: &mut Context<S>, input: Deferred, e: RequestError) {
    match input {
        Deferred::Client(request, _) => ctx.reply(request, ClientReply::Rejected(e)),
        Deferred::Message(from, message) => {
            let (op, key) = match *message {
                Message::CoordinatePut { op, key, .. } => (op, key),
                Message::CoordinateIncrement { op, key, .. } => {
                    let reply = super::counter::refused_increment(op, &key, e);
                    ctx.send(from, reply);
                    return;
                }
                // Only requests that allocate ids are held; anything else has no one waiting.
                _ => return,
            };
            let reply = Message::CoordinatePutReply {
                op,
                key_digest: key_digest(&key),
                outcome: ForwardedOutcome::Rejected(e),
            };
            ctx.send(from, reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_start_at_one_and_only_grow() {
        assert_eq!(next_incarnation(None), 1);
        assert_eq!(next_incarnation(Some(0)), 1);
        assert_eq!(next_incarnation(Some(41)), 42);
        assert_eq!(next_incarnation(Some(u32::MAX)), u32::MAX);
    }

    use crate::client::Consistency;
    use crate::config::{ClusterConfig, NodeConfig};
    use crate::node::Output;
    use crate::ring::{NodeLocation, Ring};
    use crate::storage::MemStorage;

    /// The context of node 0 of a one-node cluster over `storage`, holding at most `held_max`
    /// inputs: the incarnation mechanism alone, without a node around it.
    fn context(storage: MemStorage, held_max: usize) -> Context<MemStorage> {
        let mut ring = Ring::new(16);
        let location = NodeLocation {
            datacenter: "dc0".into(),
            rack: "rack0".into(),
            weight: 1,
        };
        ring.add_node(NodeId(0), location).expect("fresh");
        let config = NodeConfig {
            id: NodeId(0),
            cluster: ClusterConfig {
                n: 1,
                requests_in_flight_max: held_max,
                ..ClusterConfig::default()
            },
            rng_seed: 1,
        };
        Context::new(config, ring, storage)
    }

    fn get(request: u64) -> Deferred {
        let body = ClientRequest::Get {
            key: Bytes::from_static(b"k"),
            consistency: Some(Consistency::One),
        };
        Deferred::Client(RequestId(request), body)
    }

    /// Completes the pending persist, as a driver would.
    fn persist(ctx: &mut Context<MemStorage>) {
        let token = ctx.durability.take_persist_request().expect("a persist");
        ctx.storage.sync().expect("sync");
        assert!(ctx.durability.persisted(token).is_empty());
    }

    fn rejections(ctx: &mut Context<MemStorage>) -> Vec<(RequestId, RequestError)> {
        ctx.outputs
            .drain(..)
            .filter_map(|output| match output {
                Output::Reply {
                    request,
                    reply: ClientReply::Rejected(e),
                } => Some((request, e)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn inputs_wait_for_the_bump_to_be_durable_and_are_released_in_arrival_order() {
        let mut ctx = context(MemStorage::new(), 2);
        let mut incarnation = Incarnation::default();
        incarnation.bump(&mut ctx);
        assert_eq!(ctx.incarnation, 1);
        assert!(!ctx.incarnation_durable());
        for request in 1..=3 {
            assert!(incarnation.defer(&mut ctx, get(request)).is_ok());
        }
        assert_eq!(incarnation.held(), 2);
        assert_eq!(
            rejections(&mut ctx),
            vec![(RequestId(3), RequestError::Busy)],
            "past the bound an input is refused, not held"
        );
        assert!(incarnation.release(&ctx).is_empty(), "not durable yet");
        incarnation.check_invariants(&ctx, []);

        persist(&mut ctx);
        let released: Vec<RequestId> = incarnation
            .release(&ctx)
            .into_iter()
            .map(|input| match input {
                Deferred::Client(request, _) => request,
                Deferred::Message(..) => panic!("only client requests were held"),
            })
            .collect();
        assert_eq!(released, vec![RequestId(1), RequestId(2)]);
        let op = ctx.allocate_operation();
        assert_eq!(op.incarnation(), 1);
        incarnation.check_invariants(&ctx, [op]);
        assert!(
            matches!(
                incarnation.defer(&mut ctx, get(4)),
                Err(Deferred::Client(RequestId(4), _))
            ),
            "a durable incarnation holds nothing"
        );
    }

    #[test]
    fn every_start_on_the_same_storage_takes_the_next_number() {
        let mut storage = MemStorage::new();
        for expected in 1..=3 {
            let mut ctx = context(storage, 8);
            let mut incarnation = Incarnation::default();
            incarnation.bump(&mut ctx);
            assert_eq!(ctx.incarnation, expected);
            persist(&mut ctx);
            storage = ctx.storage;
        }
    }

    #[test]
    fn storage_that_fails_refuses_every_held_input_and_every_new_one() {
        let mut ctx = context(MemStorage::new(), 8);
        let mut incarnation = Incarnation::default();
        incarnation.bump(&mut ctx);
        assert!(incarnation.defer(&mut ctx, get(1)).is_ok());
        let forwarded = Message::CoordinatePut {
            op: OperationId(9),
            key: Bytes::from_static(b"k"),
            value: Some(Bytes::from_static(b"v")),
            context: crate::version::VersionVector::default(),
            needed: 1,
        };
        let input = Deferred::Message(NodeId(1), Box::new(forwarded));
        assert!(incarnation.defer(&mut ctx, input).is_ok());
        assert_eq!(incarnation.held(), 2);

        assert!(ctx.durability.poison().is_empty());
        incarnation.refuse_all(&mut ctx);
        assert_eq!(incarnation.held(), 0);
        assert!(incarnation.defer(&mut ctx, get(2)).is_ok());
        incarnation.check_invariants(&ctx, []);
        let outputs: Vec<Output> = ctx.outputs.drain(..).collect();
        assert!(
            matches!(
                &outputs[..],
                [
                    Output::Reply {
                        request: RequestId(1),
                        reply: ClientReply::Rejected(RequestError::StorageUnavailable),
                    },
                    Output::Send {
                        to: NodeId(1),
                        message: Message::CoordinatePutReply {
                            op: OperationId(9),
                            outcome: ForwardedOutcome::Rejected(RequestError::StorageUnavailable),
                            ..
                        },
                    },
                    Output::Reply {
                        request: RequestId(2),
                        reply: ClientReply::Rejected(RequestError::StorageUnavailable),
                    },
                ]
            ),
            "{outputs:?}"
        );
    }

    #[test]
    #[should_panic(expected = "before the incarnation was durable")]
    fn an_id_before_the_bump_is_durable_is_a_bug() {
        let mut ctx = context(MemStorage::new(), 8);
        let mut incarnation = Incarnation::default();
        incarnation.bump(&mut ctx);
        incarnation.check_invariants(&ctx, [OperationId::new(1, 1)]);
    }
}
