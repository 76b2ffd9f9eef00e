//! Last-write-wins versions.

use crate::id::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A last-write-wins version: ordered by timestamp, then node, then a random nonce. The nonce makes
/// two different writes with the same (timestamp, node) — possible after a restart with a wall
/// clock set back — still totally ordered, so replicas converge on one of them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct LwwVersion {
    /// Hybrid-logical-clock timestamp in microseconds.
    pub timestamp_micros: u64,
    /// The coordinator that stamped it.
    pub node: NodeId,
    /// Random tie-breaker.
    pub nonce: u32,
}

/// A last-write-wins register value: `None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LwwRecord {
    /// The version of the write that produced this value.
    pub version: LwwVersion,
    /// The value, or `None` for a delete.
    pub value: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Record;

    fn record(ts: u64, node: u32, value: Option<&'static [u8]>) -> Record {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: ts,
                node: NodeId(node),
                nonce: 0,
            },
            value: value.map(Bytes::from_static),
        })
    }

    #[test]
    fn highest_version_wins_in_any_order() {
        let a = record(5, 1, Some(b"a"));
        let b = record(5, 2, Some(b"b"));
        let c = record(3, 9, None);
        assert_eq!(a.merge(&b), b);
        assert_eq!(b.merge(&a), b);
        assert_eq!(a.merge(&b).merge(&c), c.merge(&b).merge(&a));
        assert_eq!(b.merge(&b), b);
    }

    #[test]
    fn tombstone_wins_when_newer() {
        let put = record(5, 1, Some(b"a"));
        let delete = record(6, 1, None);
        let merged = put.merge(&delete);
        assert!(merged.live_values().is_empty());
    }
}
