//! The one drive step: feed a node one input, then drain every output it produced.
//!
//! The crate's rule ("every input is followed by a full drain of the outputs before the next
//! input") is written here once. The simulator, the production node and the test harnesses all
//! drive a [`Node`] through [`drive`] (or [`drain`] after an input they fed themselves), so no
//! driver carries its own copy of the loop that could drift from the others.

use crate::client::{ClientReply, ClientRequest};
use crate::id::{NodeId, RequestId};
use crate::message::Message;
use crate::node::{Node, NodeEvent, Output, PersistToken};
use crate::storage::Storage;
use crate::time::{Instant, Now};

/// Where a driver carries out a node's effects. Each method is one kind of [`Output`].
pub trait Effects {
    /// Deliver `message` to node `to` (the driver may lose or delay it; if it cannot queue it,
    /// it feeds [`Input::SendFailed`] after the drain and decides nothing else).
    fn send(&mut self, to: NodeId, message: Message);
    /// Sync storage, then feed `handle_persisted(token)` or `handle_persist_failed`.
    fn persist(&mut self, token: PersistToken);
    /// Answer the client request `request`.
    fn reply(&mut self, request: RequestId, reply: ClientReply);
    /// Something an operator should see.
    fn event(&mut self, event: NodeEvent);
}

/// Collecting the outputs lets a driver that owns the node inside its own state carry them out
/// after the node is no longer borrowed; the order is the node's order.
impl Effects for Vec<Output> {
    fn send(&mut self, to: NodeId, message: Message) {
        self.push(Output::Send { to, message });
    }
    fn persist(&mut self, token: PersistToken) {
        self.push(Output::Persist { token });
    }
    fn reply(&mut self, request: RequestId, reply: ClientReply) {
        self.push(Output::Reply { request, reply });
    }
    fn event(&mut self, event: NodeEvent) {
        self.push(Output::Event(event));
    }
}

/// One input to a node, as a value (so a driver can queue or log inputs before feeding them).
#[derive(Clone, Debug)]
pub enum Input {
    /// A client request.
    Client {
        /// The driver's id for it, echoed in the reply.
        request: RequestId,
        /// The request.
        body: ClientRequest,
    },
    /// A message from another node.
    Message {
        /// The sender.
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// Time has passed (a timer fired, or the driver woke up).
    Timeout,
    /// Storage synced every write staged before `token`.
    Persisted(PersistToken),
    /// The sync for `token` failed: storage is poisoned.
    PersistFailed {
        /// The failed request.
        token: PersistToken,
        /// The storage's reason.
        reason: String,
    },
    /// The driver could not queue `message` for `to` (back-pressure or an oversized message):
    /// the node decides what that means (see [`Node::handle_send_failed`]).
    SendFailed {
        /// The intended recipient.
        to: NodeId,
        /// The message that was not sent.
        message: Message,
    },
}

/// Feeds `input` at `now`, then drains every output into `effects`. Returns when the node next
/// wants `handle_timeout` ([`Node::poll_timeout`] after the drain).
pub fn drive<S: Storage>(
    node: &mut Node<S>,
    now: Now,
    input: Input,
    effects: &mut impl Effects,
) -> Option<Instant> {
    match input {
        Input::Client { request, body } => node.handle_client(now, request, body),
        Input::Message { from, message } => node.handle_message(now, from, message),
        Input::Timeout => node.handle_timeout(now),
        Input::Persisted(token) => node.handle_persisted(now, token),
        Input::PersistFailed { token, reason } => node.handle_persist_failed(now, token, reason),
        Input::SendFailed { to, message } => node.handle_send_failed(now, to, message),
    }
    drain(node, effects)
}

/// Drains every output of `node` into `effects`, in order, and returns its next timeout. For
/// inputs that are not in [`Input`] (a ring update, an operator command): feed them, then call
/// this.
pub fn drain<S: Storage>(node: &mut Node<S>, effects: &mut impl Effects) -> Option<Instant> {
    while let Some(output) = node.poll_output() {
        match output {
            Output::Send { to, message } => effects.send(to, message),
            Output::Persist { token } => effects.persist(token),
            Output::Reply { request, reply } => effects.reply(request, reply),
            Output::Event(event) => effects.event(event),
        }
    }
    node.poll_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Consistency;
    use crate::config::{ClusterConfig, NodeConfig};
    use crate::ring::{NodeLocation, Ring};
    use crate::storage::{MemStorage, Storage};
    use crate::time::WallMicros;
    use bytes::Bytes;

    fn single_node() -> Node<MemStorage> {
        let id = NodeId(0);
        let mut ring = Ring::new(8);
        let location = NodeLocation {
            datacenter: "dc".into(),
            rack: "r0".into(),
            weight: 1,
        };
        ring.add_node(id, location).expect("fresh ring");
        let config = NodeConfig {
            id,
            cluster: ClusterConfig {
                n: 1,
                r: 1,
                w: 1,
                ..ClusterConfig::default()
            },
            rng_seed: 7,
        };
        Node::new(config, ring, MemStorage::new(), at(0)).expect("valid config")
    }

    fn at(ms: u64) -> Now {
        Now {
            monotonic: Instant::from_nanos(ms * 1_000_000),
            wall: WallMicros(ms * 1_000),
        }
    }

    #[test]
    fn a_put_is_answered_only_after_the_persist_it_asked_for() {
        let mut node = single_node();
        let mut outputs = Vec::new();
        let put = Input::Client {
            request: RequestId(1),
            body: ClientRequest::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                context: None,
                consistency: Some(Consistency::One),
            },
        };
        drive(&mut node, at(1), put, &mut outputs);
        // Every persist the node asks for is carried out; the reply may come only after one
        // (a fresh node first makes its incarnation durable, then the write).
        let mut persists = 0;
        let reply = loop {
            assert!(
                !outputs.iter().any(|o| matches!(o, Output::Reply { .. })),
                "no reply before the persist it waits for: {outputs:?}"
            );
            let token = outputs
                .iter()
                .find_map(|o| match o {
                    Output::Persist { token } => Some(*token),
                    _ => None,
                })
                .expect("a node waiting to answer a put asks for a persist");
            node.storage_mut().sync().expect("memory storage syncs");
            outputs.clear();
            persists += 1;
            drive(
                &mut node,
                at(1 + persists),
                Input::Persisted(token),
                &mut outputs,
            );
            if let Some(reply) = outputs.iter().find_map(|o| match o {
                Output::Reply { request, reply } => Some((*request, reply.clone())),
                _ => None,
            }) {
                break reply;
            }
            assert!(persists < 4, "the put is answered within a few persists");
        };
        assert!(
            matches!(reply, (RequestId(1), ClientReply::Written { .. })),
            "the put is answered once durable: {reply:?}"
        );
        assert!(node.poll_output().is_none(), "drive drains everything");
    }
}
