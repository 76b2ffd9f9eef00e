//! Who creates vector-clock dots: one incarnation of one node's *data*, not the node.
//!
//! Why: a replica computes its next dot for a key from its own stored record (`vv[actor] + 1`).
//! When a machine is replaced (its disk, synced data included, is gone) and the node starts
//! again under the same `NodeId`, its records are empty and its counters start again, so its new
//! dots would repeat dots it issued before; replicas still holding the old dot treat the new
//! write as already known and drop it (issue #11; swarm's "vector-clock-disk-wipe"). As Riak
//! regenerates a vnode id when a vnode's data is lost, the actor is the pair (node, data epoch):
//! the epoch is drawn from the node's seeded randomness when it starts on a store that holds none,
//! and is kept in the store's reserved meta (`node::DATA_EPOCH_KEY`), so a normal restart keeps
//! its actor and a wiped disk gets a new one. An actor whose data is gone never issues a dot
//! again, so "dot ≤ vv[actor] means known" stays true.

use crate::id::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One incarnation of a node's stored data: random, drawn when a store without one is first
/// used. 64 random bits make two incarnations of one node agree with probability 2^-64 per pair.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct DataEpoch(pub u64);

impl fmt::Display for DataEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The author of dots and the key of version-vector entries: a node's data incarnation.
/// Ordered by node, then epoch, so a vector's entries of one node sit together.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct ActorId {
    /// The node that holds the data.
    pub node: NodeId,
    /// Which incarnation of its data.
    pub epoch: DataEpoch,
}

impl ActorId {
    /// The actor of `node`'s data incarnation `epoch`.
    pub const fn new(node: NodeId, epoch: DataEpoch) -> ActorId {
        ActorId { node, epoch }
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_of_one_node_are_told_apart_by_epoch_and_sorted_by_node_first() {
        let old = ActorId::new(NodeId(2), DataEpoch(9));
        let new = ActorId::new(NodeId(2), DataEpoch(3));
        let other = ActorId::new(NodeId(1), DataEpoch(u64::MAX));
        assert_ne!(old, new);
        let mut sorted = vec![old, new, other];
        sorted.sort();
        assert_eq!(sorted, vec![other, new, old]);
        assert_eq!(old.to_string(), "n2.0000000000000009");
    }
}
