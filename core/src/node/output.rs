//! What a node asks its driver to do.

use crate::client::ClientReply;
use crate::id::{NodeId, RequestId};
use crate::membership::MemberStatus;
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
    /// The failure detector changed its judgement of a member.
    MemberStatus {
        /// The member.
        node: NodeId,
        /// Its previous status.
        from: MemberStatus,
        /// Its new status.
        to: MemberStatus,
    },
    /// A member not known before entered the membership table.
    MemberDiscovered {
        /// The member.
        node: NodeId,
        /// Its status on arrival.
        status: MemberStatus,
    },
    /// The node adopted a new ring version (its own operator change or one spread by gossip).
    RingChanged {
        /// Changes in the ring log.
        changes: u64,
        /// Fingerprint of the log.
        fingerprint: u64,
    },
    /// A full rebuild of the hash trees found ranges whose stored data differed from what the
    /// trees had been told (data changed on disk behind the engine's back); anti-entropy repairs.
    TreeRebuildMismatch {
        /// Ranges that differed.
        ranges: u64,
    },
    /// An operator change made on this node lost to a concurrent change elsewhere; issue it
    /// again if it is still wanted.
    RingChangeDiscarded {
        /// The node the change was about.
        node: NodeId,
    },
}
