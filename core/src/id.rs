//! Identifiers shared by every machine.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A physical node of the cluster. Stable for the node's lifetime (it names the node in version
/// stamps and hints), so it is configured, not generated.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The driver's name for one client request, echoed back in the reply. Unique per node while the
/// request is in flight; the core never interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// The coordinator's name for one replica round trip (a read or write sent to replicas).
///
/// Unique across the coordinator's incarnations, not only within one (STYLE: "Identity survives
/// restarts"): the high 32 bits are the node's incarnation, bumped durably at every start
/// (`node::incarnation`), the low 32 bits count round trips within it. A late reply to a previous
/// process therefore never names a live operation of the current one. Replies carrying an
/// unknown id are late or duplicated and ignored. Id 0 (incarnation 0) is never allocated: it
/// marks fire-and-forget sends whose replies are meaningless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OperationId(pub u64);

impl OperationId {
    /// The id of the `sequence`-th round trip of `incarnation`.
    pub const fn new(incarnation: u32, sequence: u32) -> OperationId {
        OperationId(((incarnation as u64) << 32) | sequence as u64)
    }

    /// The coordinator incarnation that allocated this id.
    pub const fn incarnation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A short, stable digest of a key, carried by every reply so a coordinator can check that a
/// reply is about the key its operation asked for (a reply matched to the wrong operation must
/// never be taken as an answer about another key).
pub fn key_digest(key: &[u8]) -> u64 {
    crate::hash::hash_bytes(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_of_different_incarnations_never_collide() {
        let first = OperationId::new(1, 7);
        let second = OperationId::new(2, 7);
        assert_ne!(first, second);
        assert_eq!(first.incarnation(), 1);
        assert_eq!(second.incarnation(), 2);
        assert_eq!(OperationId::new(3, u32::MAX).incarnation(), 3);
        assert_ne!(OperationId::new(1, 0), OperationId(0));
    }

    #[test]
    fn key_digests_tell_keys_apart() {
        assert_eq!(key_digest(b"key-1"), key_digest(b"key-1"));
        assert_ne!(key_digest(b"key-1"), key_digest(b"key-2"));
    }
}
