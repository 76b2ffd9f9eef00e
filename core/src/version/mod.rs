//! Versions and conflict resolution, one mode per cluster.
//!
//! * `lww`: every write carries a [`LwwVersion`] stamped by its coordinator's hybrid logical
//!   clock; the highest version wins. Simple and compact, but concurrent writes lose data
//!   silently (PITFALLS: "Last-write-wins loses acknowledged writes"), so it is an explicit choice.
//! * `vector-clock`: every key holds a [`CausalRecord`], a dotted causal container: one dot per
//!   write event, concurrent writes kept as siblings, and a put carrying the context a read
//!   returned supersedes exactly the siblings that read saw.
//!
//! All merges here are pure, commutative, associative and idempotent, so replicas converge no
//! matter how messages are duplicated or reordered.

mod actor;
mod causal;
mod clock;
pub mod counter;
mod lww;

pub use actor::{ActorId, DataEpoch};
pub use causal::{CausalRecord, Dot, VersionVector};
pub use clock::HybridClock;
pub use counter::{CounterDot, CounterRecord};
pub use lww::{ExpiresAt, LwwRecord, LwwVersion};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// How concurrent writes to one key are resolved. Chosen per cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ConflictMode {
    /// Highest (timestamp, node, nonce) wins.
    #[default]
    Lww,
    /// Dotted version vectors; concurrent writes become siblings.
    VectorClock,
}

/// What a replica stores for one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Record {
    /// Last-write-wins register.
    Lww(LwwRecord),
    /// Dotted causal container.
    Causal(CausalRecord),
    /// A PN-counter (`INCR` and friends). Last on purpose: variants are encoded by position.
    Counter(CounterRecord),
}

/// The identity of one acknowledged write, reported to clients and checked by the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum WriteVersion {
    /// A last-write-wins version.
    Lww(LwwVersion),
    /// The dot of a vector-clock write event.
    Dot(Dot),
    /// The slot an increment left (last on purpose: variants are encoded by position).
    Counter(CounterDot),
}

impl Record {
    /// The merge of two records of one key. Records of different modes cannot meet in a correctly
    /// configured cluster; if they do, the local record (`self`) is kept so nothing local is lost.
    pub fn merge(&self, incoming: &Record) -> Record {
        match (self, incoming) {
            (Record::Lww(a), Record::Lww(b)) => Record::Lww(if b.version > a.version {
                b.clone()
            } else {
                a.clone()
            }),
            (Record::Causal(a), Record::Causal(b)) => Record::Causal(a.join(b)),
            (Record::Counter(a), Record::Counter(b)) => Record::Counter(a.join(b)),
            // A counter made from a plain value carries that value's version as its epoch, so
            // at equal versions the counter wins; a newer plain value (a SET or DEL) replaces it.
            (Record::Lww(plain), Record::Counter(counter))
            | (Record::Counter(counter), Record::Lww(plain)) => {
                if counter.epoch >= plain.version {
                    Record::Counter(counter.clone())
                } else {
                    Record::Lww(plain.clone())
                }
            }
            _ => self.clone(),
        }
    }

    /// True if this record already contains the effect of `version` (that write or one that
    /// superseded it).
    pub fn includes(&self, version: &WriteVersion) -> bool {
        match (self, version) {
            (Record::Lww(r), WriteVersion::Lww(v)) => r.version >= *v,
            (Record::Causal(r), WriteVersion::Dot(d)) => r.clock.contains(*d),
            (Record::Counter(r), WriteVersion::Counter(d)) => r.includes(d),
            (Record::Counter(r), WriteVersion::Lww(v)) => r.epoch >= *v,
            (Record::Lww(r), WriteVersion::Counter(d)) => r.version > d.epoch,
            _ => false,
        }
    }

    /// The live values: one at most for lww, every non-tombstone sibling for vector clocks.
    pub fn live_values(&self) -> Vec<Bytes> {
        match self {
            Record::Lww(r) => r.value.iter().cloned().collect(),
            Record::Causal(r) => r.live_values().cloned().collect(),
            Record::Counter(r) => vec![Bytes::from(r.value().to_string())],
        }
    }

    /// The values a reader whose hybrid now is `now_micros` sees: like [`Record::live_values`],
    /// except that an expired last-write-wins value is absent. Callers merge records first and
    /// judge expiry after: a replica that dropped an expired record before the merge would let an
    /// older version of the key win (PITFALLS: "Deleted data comes back").
    pub fn live_values_at(&self, now_micros: u64) -> Vec<Bytes> {
        match self {
            Record::Lww(r) => r.live_value_at(now_micros).into_iter().cloned().collect(),
            Record::Causal(_) | Record::Counter(_) => self.live_values(),
        }
    }

    /// Bytes of values held, for limits and accounting.
    pub fn value_bytes(&self) -> usize {
        match self {
            Record::Lww(r) => r.value.as_ref().map_or(0, Bytes::len),
            Record::Causal(r) => r
                .siblings
                .iter()
                .filter_map(|(_, v)| v.as_ref())
                .map(Bytes::len)
                .sum(),
            Record::Counter(r) => r.value().to_string().len(),
        }
    }
}

/// Merges an optional local record with an incoming one; `None` when the incoming record adds
/// nothing (so the replica need not write).
pub fn merge_into(local: Option<&Record>, incoming: &Record) -> Option<Record> {
    match local {
        None => Some(incoming.clone()),
        Some(existing) => {
            let merged = existing.merge(incoming);
            (merged != *existing).then_some(merged)
        }
    }
}
