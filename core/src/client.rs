//! What clients ask of a coordinator and what they get back.
//!
//! Every reply is one of three kinds, because "failed" and "did not happen" must not be confused
//! (PITFALLS): a success, a failure known to have had no effect (`Unavailable` for reads,
//! `Rejected`, `Busy`), or `Indeterminate` for a write that may or may not take effect.

use crate::version::{VersionVector, WriteVersion};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// How many replicas a request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica.
    One,
    /// A majority of n.
    Quorum,
    /// All n replicas.
    All,
    /// An explicit count.
    Count(u8),
    /// A majority of the replicas in the coordinator's own datacenter (the others are still
    /// written, without waiting for them).
    LocalQuorum,
    /// A majority of the replicas in every datacenter.
    EachQuorum,
    /// Linearizable (ABD): a majority of n in two phases. A read queries a majority and writes the
    /// newest version back to a majority before answering; a write queries a majority for the
    /// highest version and writes a strictly higher one to a majority. Strict quorums only, never
    /// fallback replicas. Last-write-wins mode only (refused in vector-clock mode).
    Linearizable,
}

impl Consistency {
    /// Replies needed for a cluster with `n` replicas; `None` if the level asks for more than n or
    /// for none.
    pub fn required(self, n: u8) -> Option<u8> {
        let needed = match self {
            Consistency::One => 1,
            // For the datacenter levels the real count is computed per request from placement.
            Consistency::Quorum
            | Consistency::Linearizable
            | Consistency::LocalQuorum
            | Consistency::EachQuorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Count(c) => c,
        };
        (1..=n).contains(&needed).then_some(needed)
    }
}

/// The causal context a read returns and a put may carry back: opaque to clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct CausalContext(pub VersionVector);

/// A client request to a coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
        /// Level, or the cluster default.
        consistency: Option<Consistency>,
    },
    /// Write a value.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// The context of the read this write follows (vector-clock mode), if any.
        context: Option<CausalContext>,
        /// Level, or the cluster default.
        consistency: Option<Consistency>,
    },
    /// Delete a key (writes a tombstone version).
    Delete {
        /// The key.
        key: Bytes,
        /// The context of the read this delete follows (vector-clock mode), if any.
        context: Option<CausalContext>,
        /// Level, or the cluster default.
        consistency: Option<Consistency>,
    },
}

impl ClientRequest {
    /// The key the request is about.
    pub fn key(&self) -> &Bytes {
        match self {
            ClientRequest::Get { key, .. }
            | ClientRequest::Put { key, .. }
            | ClientRequest::Delete { key, .. } => key,
        }
    }
}

/// Why a request was refused before it had any effect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestError {
    /// The key is empty or longer than `key_bytes_max`.
    KeyTooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than `value_bytes_max`.
    ValueTooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The level asks for more replicas than n, or none.
    InvalidConsistency,
    /// The ring has no members.
    NoReplicas,
    /// The write would leave more than `siblings_max` siblings: read, resolve, write with context.
    TooManySiblings {
        /// The limit.
        max: usize,
    },
    /// The coordinator is at `requests_in_flight_max`.
    Busy,
    /// A replica's storage refused the write (for example it is poisoned by a failed fsync).
    StorageUnavailable,
    /// Keys beginning with bytes 0xFF 0xFF are reserved for the node's own records (hints).
    ReservedKey,
    /// The `linearizable` level needs last-write-wins versions; this cluster uses vector clocks,
    /// whose siblings have no single newest version to write back.
    LinearizableNeedsLww,
    /// The write would leave more than `record_bytes_max` value bytes over the key's siblings:
    /// read, resolve, write with context. (Last on purpose: variants are encoded by position.)
    SiblingsTooLarge {
        /// The value bytes the record would hold.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The outcome of a client request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientReply {
    /// A read found live values (one in lww mode; all siblings in vector-clock mode).
    Found {
        /// The values.
        values: Vec<Bytes>,
        /// Context to pass to a later put or delete.
        context: CausalContext,
        /// Replicas that answered before the reply.
        acks: u8,
    },
    /// A read found no live value.
    NotFound {
        /// Context to pass to a later put or delete.
        context: CausalContext,
        /// Replicas that answered before the reply.
        acks: u8,
    },
    /// A write is durable on `acks` replicas, at least the number required.
    Written {
        /// The version written.
        version: WriteVersion,
        /// Replicas that acknowledged durably before the reply.
        acks: u8,
    },
    /// A read could not gather enough replies in time; nothing changed.
    Unavailable {
        /// Replies received.
        acks: u8,
        /// Replies required.
        needed: u8,
    },
    /// A write did not gather enough acknowledgements in time: it may or may not take effect.
    Indeterminate {
        /// Durable acknowledgements received.
        acks: u8,
        /// Acknowledgements required.
        needed: u8,
    },
    /// Refused before it had any effect.
    Rejected(RequestError),
}
