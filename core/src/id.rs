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

/// The coordinator's name for one replica round trip (a read or write sent to replicas). Unique
/// per coordinator incarnation: replies carrying an unknown id are late or duplicated and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OperationId(pub u64);
