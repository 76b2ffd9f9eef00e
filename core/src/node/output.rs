//! What a node asks its driver to do.

use crate::client::ClientReply;
use crate::id::{NodeId, RequestId};
use crate::message::Message;

/// Names one request to make staged writes durable. Tokens increase; a later token covers every
/// write staged before an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub u64);

/// An effect for the driver to carry out, drained with `Node::poll_output`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// Deliver `message` to node `to`.
    Send {
        /// The destination.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Call `storage_mut().sync()`, then `handle_persisted(token)` (or `handle_persist_failed`).
    /// Acknowledgements that depend on durability wait for it.
    Persist {
        /// The persist request.
        token: PersistToken,
    },
    /// Answer the client request `request`.
    Reply {
        /// The driver's request id.
        request: RequestId,
        /// The outcome.
        reply: ClientReply,
    },
    /// Something an operator should see.
    Event(NodeEvent),
}

/// Notable things that happened inside a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeEvent {
    /// A sync failed: the node refuses writes until it is restarted and recovered.
    StoragePoisoned {
        /// The storage's reason.
        reason: String,
    },
    /// A storage call failed outside a sync.
    StorageError {
        /// The storage's reason.
        reason: String,
    },
    /// A forwarded put got no answer from one replica and was sent to the next.
    ForwardRetried {
        /// The replica that was tried next.
        next: NodeId,
    },
}
