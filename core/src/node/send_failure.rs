//! Back-pressure: what a send the driver could not queue means to the protocol.
//!
//! A driver (the production node's per-peer queues, the simulator's bounded links) never decides
//! what an unsent message means; it only reports "could not queue" through
//! [`Node::handle_send_failed`](super::Node::handle_send_failed) (or
//! [`Input::SendFailed`](crate::drive::Input::SendFailed)), and this module decides, from a pure
//! table over the message ([`SendFailureClass::of`]), so the simulator runs the very decisions
//! the shipped binary makes:
//!
//! * **A request to a replica** (read, write, hinted write, hint replay) is counted by its
//!   coordinator as that replica's refusal, [`ReplicaError::Busy`], through the same path as a
//!   refusal that came back over the network. That path counts a replica once: a refusal after
//!   an answer (or an answer after a refusal) is stale, so a replica is never both. The client
//!   gets a typed outcome at once instead of waiting for the deadline: a write may still meet
//!   W elsewhere or hand off hints, or ends `Indeterminate` once W is out of reach (another
//!   replica may still apply it; only a write every replica refused is `Rejected(Busy)`); a
//!   read that can no longer meet R is `Rejected(Busy)` when every refusal was `Busy` (the
//!   typed signal to back off), `Unavailable` otherwise.
//! * **A forwarded put** never reached the replica that would coordinate it: it is answered
//!   `Rejected(Busy)` on that replica's behalf (or `Indeterminate` if an earlier attempt may
//!   still apply, as for any refusal after a retry).
//! * **A reply to a coordinator** (read, write or forwarded-put reply) is **dropped and
//!   counted**. Why not held and retried: the coordinator already turns a reply that never
//!   arrives into a typed outcome at its deadline (a reply lost on the network is the same
//!   case), so holding adds no outcome the protocol lacks; holding would need a second input
//!   from every driver ("the queue has room again"), a second bound and its own overflow rule;
//!   and a reply released late mostly reaches an operation that already ended. A full queue
//!   towards a coordinator means that link is the bottleneck, and shedding there is what lets
//!   it recover.
//! * **Fire-and-forget traffic** (read repair, hints sent after the client was answered,
//!   anti-entropy, handover pages, gossip) is dropped and counted: the next anti-entropy round,
//!   handover pull or gossip round repeats it, as it would after a message lost on the network.
//!
//! An oversized message (the codec's typed `TooLarge` at encode) is reported the same way: it
//! could not be queued either.

use crate::id::{key_digest, OperationId};
use crate::message::{ForwardedOutcome, Message, ReplicaError};
use crate::RequestError;

/// How a message that could not be queued is treated (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFailureClass {
    /// A coordinator's request to a replica: counted as that replica's refusal.
    Request,
    /// A replica's reply to a coordinator: dropped; the coordinator's deadline covers it.
    Reply,
    /// Traffic a later round repeats: dropped.
    Repeatable,
}

impl SendFailureClass {
    /// The class of `message`: a pure table, so every message kind is decided here once.
    pub fn of(message: &Message) -> SendFailureClass {
        match message {
            Message::Read { .. }
            | Message::Write { .. }
            | Message::LinRead { .. }
            | Message::LinWrite { .. }
            | Message::HintedWrite { .. }
            | Message::CoordinatePut { .. }
            | Message::ScanRange { .. }
            | Message::CountLive { .. }
            | Message::CoordinateIncrement { .. }
            | Message::PaxosPrepare { .. }
            | Message::PaxosPropose { .. }
            | Message::PaxosCommit { .. } => SendFailureClass::Request,
            Message::ReadReply { .. }
            | Message::WriteReply { .. }
            | Message::CoordinatePutReply { .. }
            | Message::ScanRangeReply { .. }
            | Message::CountLiveReply { .. }
            | Message::PaxosPromise { .. }
            | Message::PaxosAccept { .. } => SendFailureClass::Reply,
            Message::AeRoots { .. }
            | Message::AeInterior { .. }
            | Message::AeLeaves { .. }
            | Message::AeDigests { .. }
            | Message::AeRecords { .. }
            | Message::HandoverPull { .. }
            | Message::HandoverPage { .. }
            | Message::Gossip(_) => SendFailureClass::Repeatable,
        }
    }
}

/// Sends the driver could not queue, by what became of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendFailureStats {
    /// Requests counted as their replica's `Busy` refusal (forwarded puts answered `Busy`).
    pub requests_refused: u64,
    /// Replies to coordinators dropped (their deadline gives the outcome).
    pub replies_dropped: u64,
    /// Fire-and-forget messages dropped (a later round repeats them).
    pub repeatable_dropped: u64,
}

/// What becomes of a message the driver could not queue: a value, decided by [`route`].
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SendFailure {
    /// A request an operation waits for: answered by this refusal, the reply its replica would
    /// have sent had it refused `Busy`, delivered through the path of a received reply.
    Refused(Message),
    /// A scan or count request: its operation decides what the missing page means (see `scan`).
    ScanRefused(Message),
    /// Dropped and counted: a reply (its coordinator's deadline covers it) or traffic a later
    /// round repeats (including requests no operation waits for).
    Dropped(SendFailureClass),
}

/// Where the unsent `message` goes (see the module documentation). A pure table.
pub(super) fn route(message: Message) -> SendFailure {
    let busy = ReplicaError::Busy;
    match message {
        Message::Read { op, key } | Message::LinRead { op, key, .. } if op != NO_REPLY => {
            SendFailure::Refused(Message::ReadReply {
                op,
                key_digest: key_digest(&key),
                record: Err(busy),
            })
        }
        Message::Write { op, key, .. }
        | Message::LinWrite { op, key, .. }
        | Message::HintedWrite { op, key, .. }
        | Message::PaxosCommit { op, key, .. }
            if op != NO_REPLY =>
        {
            SendFailure::Refused(Message::WriteReply {
                op,
                key_digest: key_digest(&key),
                result: Err(busy),
            })
        }
        Message::PaxosPrepare { op, key, .. } => SendFailure::Refused(Message::PaxosPromise {
            op,
            key_digest: key_digest(&key),
            result: Err(busy),
        }),
        Message::PaxosPropose { op, key, .. } => SendFailure::Refused(Message::PaxosAccept {
            op,
            key_digest: key_digest(&key),
            result: Err(busy),
        }),
        Message::CoordinatePut { op, key, .. } | Message::CoordinateIncrement { op, key, .. } => {
            SendFailure::Refused(Message::CoordinatePutReply {
                op,
                key_digest: key_digest(&key),
                outcome: ForwardedOutcome::Rejected(RequestError::Busy),
            })
        }
        Message::ScanRange { .. } | Message::CountLive { .. } => SendFailure::ScanRefused(message),
        other => SendFailure::Dropped(SendFailureClass::of(&other)),
    }
}

impl SendFailureStats {
    /// Routes the unsent `message` and counts what becomes of it.
    pub(super) fn record(&mut self, message: Message) -> SendFailure {
        let failure = route(message);
        match &failure {
            SendFailure::Refused(_) | SendFailure::ScanRefused(_) => self.requests_refused += 1,
            SendFailure::Dropped(SendFailureClass::Reply) => self.replies_dropped += 1,
            // Requests with no operation waiting (read repair, hints sent after the
            // client's answer) are fire-and-forget like the rest.
            SendFailure::Dropped(SendFailureClass::Request | SendFailureClass::Repeatable) => {
                self.repeatable_dropped += 1;
            }
        }
        failure
    }
}

/// The operation id of requests nobody waits for (read repair, late hints): no reply is matched.
const NO_REPLY: OperationId = OperationId(0);

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn every_message_kind_has_a_class() {
        let key = Bytes::from_static(b"k");
        let table = [
            (
                Message::Read {
                    op: OperationId(1),
                    key: key.clone(),
                },
                SendFailureClass::Request,
            ),
            (
                Message::ReadReply {
                    op: OperationId(1),
                    key_digest: 1,
                    record: Ok(None),
                },
                SendFailureClass::Reply,
            ),
            (
                Message::WriteReply {
                    op: OperationId(1),
                    key_digest: 1,
                    result: Ok(()),
                },
                SendFailureClass::Reply,
            ),
            (
                Message::AeRoots { roots: Vec::new() },
                SendFailureClass::Repeatable,
            ),
        ];
        for (message, class) in table {
            assert_eq!(SendFailureClass::of(&message), class, "{message:?}");
        }
    }

    fn tombstone() -> crate::version::Record {
        crate::version::Record::Lww(crate::version::LwwRecord {
            version: crate::version::LwwVersion {
                timestamp_micros: 1,
                node: crate::id::NodeId(1),
                nonce: 0,
            },
            value: None,
            expires_at_micros: None,
        })
    }

    /// Messages and their fates, one of each route.
    fn fates() -> Vec<(Message, SendFailure)> {
        let (key, op, busy) = (Bytes::from_static(b"k"), OperationId(7), ReplicaError::Busy);
        let key_digest = key_digest(&key);
        let (hinted, ballot) = (crate::id::NodeId(2), crate::message::Ballot::default());
        vec![
            (
                Message::Read {
                    op,
                    key: key.clone(),
                },
                SendFailure::Refused(Message::ReadReply {
                    op,
                    key_digest,
                    record: Err(busy),
                }),
            ),
            (
                Message::HintedWrite {
                    op,
                    key: key.clone(),
                    record: tombstone(),
                    for_node: hinted,
                },
                SendFailure::Refused(Message::WriteReply {
                    op,
                    key_digest,
                    result: Err(busy),
                }),
            ),
            (
                Message::PaxosPrepare {
                    op,
                    key: key.clone(),
                    ballot,
                    epoch: 0,
                },
                SendFailure::Refused(Message::PaxosPromise {
                    op,
                    key_digest,
                    result: Err(busy),
                }),
            ),
            (
                Message::CountLive { op },
                SendFailure::ScanRefused(Message::CountLive { op }),
            ),
            // Read repair: nobody waits, so it is dropped like any repeatable message.
            (
                Message::Write {
                    op: NO_REPLY,
                    key,
                    record: tombstone(),
                },
                SendFailure::Dropped(SendFailureClass::Request),
            ),
            (
                Message::WriteReply {
                    op,
                    key_digest,
                    result: Ok(()),
                },
                SendFailure::Dropped(SendFailureClass::Reply),
            ),
        ]
    }

    #[test]
    fn a_request_someone_waits_for_comes_back_as_its_replicas_busy_refusal() {
        for (message, fate) in fates() {
            assert_eq!(route(message.clone()), fate, "{message:?}");
        }
    }

    #[test]
    fn every_failure_is_counted_once_by_its_fate() {
        let mut stats = SendFailureStats::default();
        for (message, fate) in fates() {
            assert_eq!(stats.record(message), fate);
        }
        let counted = SendFailureStats {
            requests_refused: 4,
            replies_dropped: 1,
            repeatable_dropped: 1,
        };
        assert_eq!(stats, counted);
    }
}
