//! What clients ask of a coordinator and what they get back.
//!
//! Every reply is one of three kinds, because "failed" and "did not happen" must not be confused
//! (PITFALLS): a success, a failure known to have had no effect (`Unavailable` for reads,
//! `Rejected`, `Busy`), or `Indeterminate` for a write that may or may not take effect.

use crate::version::{ConflictMode, ExpiresAt, VersionVector, WriteVersion};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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
    /// fallback replicas. Last-write-wins mode only (refused in vector-clock mode). Conditional
    /// writes are per-key Paxos rounds instead (`node::paxos`); plain writes and conditional
    /// writes on the same key are not linearizable together.
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

/// A level or conflict-mode name that is not one: names the bad text and what exists, so the
/// node's flags, its TOML, client commands and scenarios all report it the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    /// What was given.
    pub text: String,
    /// What kind of name was expected and which exist.
    pub expected: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not {}", self.text, self.expected)
    }
}

impl std::error::Error for NameError {}

const LEVEL_NAMES_EXPECTED: &str =
    "a level (one, quorum, all, local_quorum, each_quorum, linearizable or a count of replicas)";

/// Parses the level names once for every driver (case-insensitive): `one`, `quorum`, `all`,
/// `local_quorum`, `each_quorum`, `linearizable` or a replica count of at least 1. The one
/// parser means the node cannot refuse a level the simulator proves, as it once did.
impl FromStr for Consistency {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let level = match text.to_ascii_lowercase().as_str() {
            "one" => Consistency::One,
            "quorum" => Consistency::Quorum,
            "all" => Consistency::All,
            "local_quorum" => Consistency::LocalQuorum,
            "each_quorum" => Consistency::EachQuorum,
            "linearizable" => Consistency::Linearizable,
            other => match other.parse::<u8>() {
                Ok(count) if count > 0 => Consistency::Count(count),
                _ => {
                    return Err(NameError {
                        text: text.to_string(),
                        expected: LEVEL_NAMES_EXPECTED,
                    })
                }
            },
        };
        Ok(level)
    }
}

/// Renders the name [`FromStr`] parses back, so a level round-trips through text.
impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::One => f.write_str("one"),
            Consistency::Quorum => f.write_str("quorum"),
            Consistency::All => f.write_str("all"),
            Consistency::Count(count) => write!(f, "{count}"),
            Consistency::LocalQuorum => f.write_str("local_quorum"),
            Consistency::EachQuorum => f.write_str("each_quorum"),
            Consistency::Linearizable => f.write_str("linearizable"),
        }
    }
}

/// Parses `lww` or `vector-clock` (`vector_clock` too): the conflict mode names every driver
/// accepts.
impl FromStr for ConflictMode {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "lww" => Ok(ConflictMode::Lww),
            "vector-clock" | "vector_clock" => Ok(ConflictMode::VectorClock),
            _ => Err(NameError {
                text: text.to_string(),
                expected: "a conflict mode (lww or vector-clock)",
            }),
        }
    }
}

/// Renders the name [`FromStr`] parses back (`lww`, `vector-clock`).
impl fmt::Display for ConflictMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictMode::Lww => "lww",
            ConflictMode::VectorClock => "vector-clock",
        })
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
    /// One page of a cluster-wide scan (`SCAN`; see `node::scan`): the live keys whose ring
    /// position (token) is at or after `from`, in token order, up to the end of the first ring
    /// range (or run of ranges with the same replicas) holding `from`. Answered by
    /// [`ClientReply::ScanPage`]. (Appended: variants are encoded by position.)
    Scan {
        /// The first token not yet covered (0 to start a scan).
        from: u64,
        /// About how many keys each replica returns (a hint, as Redis's `COUNT`).
        keys_max: u32,
        /// Level (a replica count; `linearizable` scans at a majority), or the cluster default
        /// read level.
        consistency: Option<Consistency>,
    },
    /// An estimate of the live keys in the cluster (`DBSIZE`): every member counts the live keys
    /// of each range it replicates, and the coordinator sums, per range, the largest count.
    /// Answered by [`ClientReply::KeyCount`]. (Appended: variants are encoded by position.)
    CountKeys,
    /// Add `delta` to the key's counter (`INCR`, `INCRBY`, `DECR`, `DECRBY`): applied once, by
    /// one replica to its own slot, then replicated as state (see `version::counter`). Last on
    /// purpose: variants are encoded by position.
    Increment {
        /// The key.
        key: Bytes,
        /// What to add (negative: subtract).
        delta: i64,
        /// Level (`one`, `quorum`, `all` or a count), or the cluster default.
        consistency: Option<Consistency>,
    },
    /// Write a value that expires (TTL; last-write-wins mode only). An ordinary last-write-wins
    /// put whose record also holds the absolute expiry, resolved against the write's version.
    /// (Appended: variants are encoded by position.)
    PutExpiring {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// When it expires.
        expires: ExpiresAt,
        /// Level, or the cluster default.
        consistency: Option<Consistency>,
    },
    /// Read a key and, if it is live, its expiry (TTL, `KEEPTTL`, `EXPIRE`; last-write-wins mode
    /// only): answered `FoundExpiring` or `NotFound`. (Appended: variants are encoded by
    /// position.)
    GetExpiring {
        /// The key.
        key: Bytes,
        /// Level, or the cluster default.
        consistency: Option<Consistency>,
    },
    /// Write `value` only if the key's current value meets `condition` (`SET NX|XX|GET`,
    /// `KV.CAS`). Always on the linearizable path, whatever the level (per-key Paxos, see
    /// `node::paxos`); the reply is `ClientReply::Conditional` and carries the value the
    /// condition was judged on. (Last on purpose: variants are encoded by position.)
    Conditional {
        /// The key.
        key: Bytes,
        /// What the current value must be for the write to happen.
        condition: WriteCondition,
        /// The value to write (`None`: a delete).
        value: Option<Bytes>,
    },
}

/// The condition of a [`ClientRequest::Conditional`] write, judged on the key's current live
/// value (a tombstone is absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteCondition {
    /// Always write (`SET ... GET` without `NX`/`XX`): only the previous value is wanted.
    Always,
    /// `NX`: only if the key has no live value.
    Absent,
    /// `XX`: only if the key has a live value.
    Present,
    /// `KV.CAS ... VALUE expected`: only if the live value is exactly these bytes.
    Equals(Bytes),
}

impl WriteCondition {
    /// Whether `current` (the key's live value, `None` if absent) meets the condition. A pure
    /// policy.
    pub fn holds(&self, current: Option<&Bytes>) -> bool {
        match self {
            WriteCondition::Always => true,
            WriteCondition::Absent => current.is_none(),
            WriteCondition::Present => current.is_some(),
            WriteCondition::Equals(expected) => current == Some(expected),
        }
    }
}

/// The key of the requests that have none (`Scan`, `CountKeys`).
static NO_KEY: Bytes = Bytes::new();

impl ClientRequest {
    /// The key the request is about (empty for the cluster-wide `Scan` and `CountKeys`, which
    /// the coordinator serves before it looks at a key).
    pub fn key(&self) -> &Bytes {
        match self {
            ClientRequest::Get { key, .. }
            | ClientRequest::Put { key, .. }
            | ClientRequest::Delete { key, .. }
            | ClientRequest::Increment { key, .. }
            | ClientRequest::PutExpiring { key, .. }
            | ClientRequest::GetExpiring { key, .. }
            | ClientRequest::Conditional { key, .. } => key,
            ClientRequest::Scan { .. } | ClientRequest::CountKeys => &NO_KEY,
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
    /// A replica's disk is full: the write was refused with no effect; writes are accepted again
    /// once space is freed, without a restart. (Last on purpose: variants are encoded by
    /// position.)
    OutOfDiskSpace,
    /// An increment found a plain value that is not an integer (Redis: "value is not an integer
    /// or out of range"). Refused before any effect.
    NotAnInteger,
    /// An increment would take the counter past a signed 64-bit integer (Redis: "increment or
    /// decrement would overflow"). Refused before any effect.
    IncrementOverflow,
    /// Counters need last-write-wins mode and a plain level (`one`, `quorum`, `all` or a count):
    /// a PN-counter has no single newest version for the linearizable level to write back, and
    /// vector-clock siblings have no integer to count from.
    CountersNeedLww,
    /// Expiries (TTL) need last-write-wins records; this cluster uses vector clocks, whose
    /// siblings have no single version an expiry could belong to. (Appended: variants are
    /// encoded by position.)
    ExpiryNeedsLww,
    /// The failure detector judges so many of the nodes the request needs `Down` (its replicas;
    /// any ring member for sloppy quorum; per datacenter group for `local_quorum` and
    /// `each_quorum`) that the others could not be enough: refused at once, before anything was
    /// sent, instead of waiting out the request timeout. No effect, so a retry is safe. (Last on
    /// purpose: variants are encoded by position.)
    ReplicasDown {
        /// Nodes not judged `Down` that could answer (in the first short group, for the
        /// datacenter levels).
        reachable: u8,
        /// Replies the level requires of them.
        needed: u8,
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
    /// One page of a scan: live keys in token order (no tombstones), and where the next page
    /// starts (`None`: the whole ring has been walked). (Appended: encoded by position.)
    ScanPage {
        /// The live keys of the page.
        keys: Vec<Bytes>,
        /// The `from` of the next page, or `None` when the scan is over.
        next: Option<u64>,
        /// Replicas that answered before the reply.
        acks: u8,
    },
    /// `DBSIZE`: an estimate of the live keys (exact on a one-node cluster whose members all
    /// answered). (Appended: encoded by position.)
    KeyCount {
        /// Live keys, summed over ranges.
        live_keys: u64,
        /// Members that answered in time.
        answered: u32,
        /// Members asked.
        members: u32,
    },
    /// An increment is durable on `acks` replicas (at least the number required); `value` is the
    /// counter as the replica that applied it saw it just after (concurrent increments applied
    /// elsewhere, for example across a partition, may be missing from it). Last on purpose:
    /// variants are encoded by position.
    Counted {
        /// The counter's value after the increment, on the replica that applied it.
        value: i64,
        /// Replicas that acknowledged durably before the reply.
        acks: u8,
    },
    /// A `GetExpiring` read found a live value. (Appended: variants are encoded by position.)
    FoundExpiring {
        /// The value.
        value: Bytes,
        /// Its absolute expiry (hybrid µs), `None` if it never expires.
        expires_at_micros: Option<u64>,
        /// The coordinator's hybrid now when it judged the value live: the remaining time to
        /// live is `expires_at_micros - now_micros`, on one clock.
        now_micros: u64,
        /// Replicas that answered before the reply.
        acks: u8,
    },
    /// A conditional write ended with a known outcome: written durably on a majority
    /// (`applied`), or known not to have been written because the condition did not hold.
    /// Either way `previous` is the key's live value the condition was judged on, at a point
    /// between request and reply (`None`: absent). (Last on purpose: variants are encoded by
    /// position.)
    Conditional {
        /// The condition held and the write is durable on a majority.
        applied: bool,
        /// The live value the condition was judged on.
        previous: Option<Bytes>,
        /// The version written, when applied.
        version: Option<WriteVersion>,
        /// Replicas that acknowledged the last phase durably before the reply.
        acks: u8,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_name_round_trips_and_bad_names_are_named() {
        for level in [
            Consistency::One,
            Consistency::Quorum,
            Consistency::All,
            Consistency::Count(2),
            Consistency::LocalQuorum,
            Consistency::EachQuorum,
            Consistency::Linearizable,
        ] {
            assert_eq!(level.to_string().parse::<Consistency>(), Ok(level));
        }
        assert_eq!("LOCAL_QUORUM".parse(), Ok(Consistency::LocalQuorum));
        for bad in ["0", "", "local-quorom", "300"] {
            let error = bad.parse::<Consistency>().err().map(|e| e.to_string());
            let error = error.unwrap_or_else(|| panic!("`{bad}` parsed as a level"));
            assert!(error.contains(&format!("`{bad}`")), "{error}");
            assert!(error.contains("each_quorum"), "{error}");
        }
    }

    #[test]
    fn conflict_modes_round_trip_and_bad_names_are_named() {
        for mode in [ConflictMode::Lww, ConflictMode::VectorClock] {
            assert_eq!(mode.to_string().parse::<ConflictMode>(), Ok(mode));
        }
        assert_eq!("vector_clock".parse(), Ok(ConflictMode::VectorClock));
        let error = "crdt".parse::<ConflictMode>().err().map(|e| e.to_string());
        let error = error.unwrap_or_else(|| panic!("`crdt` parsed as a conflict mode"));
        assert!(
            error.contains("`crdt`") && error.contains("vector-clock"),
            "{error}"
        );
    }
}
