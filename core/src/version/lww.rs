//! Last-write-wins versions, and the expiry a last-write-wins record may carry (TTL).
//!
//! An expiry is part of the stored record, not of the storage engine: a write with a TTL is an
//! ordinary last-write-wins write whose record also holds `expires_at_micros`, an absolute hybrid
//! time on the same clock as [`LwwVersion::timestamp_micros`]. Merges, hints, read repair and
//! anti-entropy carry it unchanged, and an expired record keeps winning by version like a
//! tombstone does, so an older value can never come back from behind it (PITFALLS: "Deleted data
//! comes back"). Only a reader decides that a record is expired, against its own hybrid now.

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
///
/// Encoded through [`LwwRecordWire`]: a record without an expiry has exactly the bytes records
/// had before expiries existed (so stored data and scenario fingerprints are unchanged), and a
/// tombstone never carries an expiry (a deleted key has nothing left to expire; the constructors
/// drop it, and the encoding could not hold it).
#[derive(Clone, Debug, Eq, Deserialize)]
#[serde(from = "LwwRecordWire")]
pub struct LwwRecord {
    /// The version of the write that produced this value.
    pub version: LwwVersion,
    /// The value, or `None` for a delete.
    pub value: Option<Bytes>,
    /// Hybrid time (µs) from which the value reads as absent; `None`: never expires. Always `None`
    /// for a tombstone.
    pub expires_at_micros: Option<u64>,
}

/// Equal when every field is, as a derived equality; a value compared with a clone of itself
/// (read repair compares each replica's record with the merge, which is a clone of one of them)
/// is equal without reading its bytes.
impl PartialEq for LwwRecord {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.expires_at_micros == other.expires_at_micros
            && match (&self.value, &other.value) {
                (Some(a), Some(b)) => (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b,
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}

/// Hashes as records did before expiries when there is none, so the simulator's trace
/// fingerprints (folded from hashed events) of runs without TTLs do not change.
impl std::hash::Hash for LwwRecord {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.version.hash(state);
        self.value.hash(state);
        if let Some(expires_at_micros) = self.expires_at_micros {
            expires_at_micros.hash(state);
        }
    }
}

impl LwwRecord {
    /// A value written at `version` that expires at `expires_at_micros` (if any).
    pub fn value(version: LwwVersion, value: Bytes, expires_at_micros: Option<u64>) -> Self {
        LwwRecord {
            version,
            value: Some(value),
            expires_at_micros,
        }
    }

    /// A value or a tombstone with no expiry: what every write was before TTLs.
    pub fn plain(version: LwwVersion, value: Option<Bytes>) -> Self {
        LwwRecord {
            version,
            value,
            expires_at_micros: None,
        }
    }

    /// True if the record holds a value that has expired at hybrid time `now_micros`.
    pub fn is_expired_at(&self, now_micros: u64) -> bool {
        self.value.is_some() && self.expires_at_micros.is_some_and(|e| now_micros >= e)
    }

    /// The value a reader whose hybrid now is `now_micros` sees: `None` for a tombstone or an
    /// expired value.
    pub fn live_value_at(&self, now_micros: u64) -> Option<&Bytes> {
        if self.is_expired_at(now_micros) {
            return None;
        }
        self.value.as_ref()
    }

    /// Since when (hybrid µs) the record has been dead for every reader: a tombstone since its
    /// write, an expired value since its expiry; `None` while it may still be read. Compaction
    /// drops a record only once this is older than the tombstone grace period.
    pub fn dead_since_micros(&self) -> Option<u64> {
        match (&self.value, self.expires_at_micros) {
            (None, _) => Some(self.version.timestamp_micros),
            (Some(_), Some(expires)) => Some(expires),
            (Some(_), None) => None,
        }
    }
}

/// When a write's value expires, as a request carries it to the coordinator. Relative expiries
/// are resolved against the write's own version timestamp, so every replica stores the same
/// absolute expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpiresAt {
    /// This many milliseconds after the write's timestamp (`EX`, `PX`, `EXPIRE`, `PEXPIRE`).
    AfterMillis(u64),
    /// At this hybrid time in microseconds (`EXAT`/`PXAT` and `EXPIREAT`/`PEXPIREAT` scaled, or an
    /// expiry kept from a read, `KEEPTTL`).
    AtMicros(u64),
}

impl ExpiresAt {
    /// The absolute expiry of a write stamped `timestamp_micros`.
    pub fn resolve(self, timestamp_micros: u64) -> u64 {
        match self {
            ExpiresAt::AfterMillis(ms) => timestamp_micros.saturating_add(ms.saturating_mul(1000)),
            ExpiresAt::AtMicros(at) => at,
        }
    }
}

/// The encoded form of [`LwwRecord`]. bincode writes an `Option` as a tag byte 0/1 and a small
/// enum variant index as the same single byte, so `Tombstone` and `Value` encode exactly as
/// `None` and `Some(value)` did; `Expiring` is new (tag 2), and old data decodes unchanged.
#[derive(Deserialize)]
struct LwwRecordWire {
    version: LwwVersion,
    body: LwwBodyWire,
}

#[derive(Deserialize)]
enum LwwBodyWire {
    Tombstone,
    Value(#[serde(deserialize_with = "bytes_from_slice")] Bytes),
    Expiring {
        #[serde(deserialize_with = "bytes_from_slice")]
        value: Bytes,
        expires_at_micros: u64,
    },
}

/// [`LwwRecordWire`] borrowing the record it encodes, for [`Serialize`]: the same names, fields
/// and variants, so every format writes the same bytes, without the clone of the record (and
/// two reference-count updates of its value) that serialising through an owned wire value cost
/// on every message sent.
#[derive(Serialize)]
#[serde(rename = "LwwRecordWire")]
struct LwwRecordWireRef<'a> {
    version: &'a LwwVersion,
    body: LwwBodyWireRef<'a>,
}

#[derive(Serialize)]
#[serde(rename = "LwwBodyWire")]
enum LwwBodyWireRef<'a> {
    Tombstone,
    Value(&'a Bytes),
    Expiring {
        value: &'a Bytes,
        expires_at_micros: u64,
    },
}

impl Serialize for LwwRecord {
    /// As [`LwwRecordWire`] (see [`LwwRecord`]).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = match (&self.value, self.expires_at_micros) {
            (None, _) => LwwBodyWireRef::Tombstone,
            (Some(value), None) => LwwBodyWireRef::Value(value),
            (Some(value), Some(expires_at_micros)) => LwwBodyWireRef::Expiring {
                value,
                expires_at_micros,
            },
        };
        LwwRecordWireRef {
            version: &self.version,
            body,
        }
        .serialize(serializer)
    }
}

/// Deserialises a value as `Bytes`' own `Deserialize` does (the same inputs accepted, the same
/// result), but asks for borrowed bytes: bincode then hands over a slice of its input, copied
/// once into the value, where asking for an owned buffer (as `Bytes` does) made it allocate a
/// zeroed vector and copy into that (about a tenth of a simulated run's CPU, issue #15). The
/// length is claimed against the decoder's limit and checked against the input the same way on
/// both paths, with the same errors.
fn bytes_from_slice<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Bytes;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("byte array")
        }

        fn visit_seq<V: serde::de::SeqAccess<'de>>(self, mut seq: V) -> Result<Bytes, V::Error> {
            let len = seq.size_hint().unwrap_or(0).min(4096);
            let mut values: Vec<u8> = Vec::with_capacity(len);
            while let Some(value) = seq.next_element()? {
                values.push(value);
            }
            Ok(Bytes::from(values))
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v.as_bytes()))
        }

        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Bytes, E> {
            Ok(Bytes::from(v.into_bytes()))
        }
    }
    deserializer.deserialize_bytes(Visitor)
}

impl From<LwwRecordWire> for LwwRecord {
    fn from(wire: LwwRecordWire) -> Self {
        let (value, expires_at_micros) = match wire.body {
            LwwBodyWire::Tombstone => (None, None),
            LwwBodyWire::Value(value) => (Some(value), None),
            LwwBodyWire::Expiring {
                value,
                expires_at_micros,
            } => (Some(value), Some(expires_at_micros)),
        };
        LwwRecord {
            version: wire.version,
            value,
            expires_at_micros,
        }
    }
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
            expires_at_micros: None,
        })
    }

    /// Equality is field-wise equality, whether or not two values share their bytes.
    #[test]
    fn equality_is_field_wise_shared_bytes_or_not() {
        let version = LwwVersion {
            timestamp_micros: 4,
            node: NodeId(1),
            nonce: 2,
        };
        let bytes = Bytes::from(vec![5u8; 64]);
        let values = [
            None,
            Some(bytes.clone()),
            Some(bytes.slice(..32)),
            Some(bytes.slice(32..)),
            Some(Bytes::from(vec![5u8; 64])),
            Some(Bytes::from(vec![6u8; 64])),
            Some(Bytes::new()),
        ];
        let mut records = Vec::new();
        for value in &values {
            for expires_at_micros in [None, Some(9)] {
                for version in [version, LwwVersion::default()] {
                    records.push(LwwRecord {
                        version,
                        value: value.clone(),
                        expires_at_micros,
                    });
                }
            }
        }
        for a in &records {
            for b in &records {
                let field_wise = a.version == b.version
                    && a.value.as_deref() == b.value.as_deref()
                    && a.expires_at_micros == b.expires_at_micros;
                assert_eq!(a == b, field_wise, "{a:?} vs {b:?}");
            }
        }
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

    #[test]
    fn records_without_expiry_encode_as_before_and_expiring_ones_round_trip() {
        /// The record as it was encoded before expiries existed.
        #[derive(Serialize)]
        struct Before {
            version: LwwVersion,
            value: Option<Bytes>,
        }
        let version = LwwVersion {
            timestamp_micros: 1_767_225_600_000_000,
            node: NodeId(3),
            nonce: 77,
        };
        for value in [None, Some(Bytes::from_static(b"v"))] {
            let old = crate::codec::encode_value(&Before {
                version,
                value: value.clone(),
            });
            let new = crate::codec::encode_value(&LwwRecord::plain(version, value.clone()));
            assert_eq!(old, new);
            let decoded: LwwRecord = crate::codec::decode_value(&old).expect("old bytes decode");
            assert_eq!(decoded, LwwRecord::plain(version, value));
        }
        let expiring = LwwRecord::value(version, Bytes::from_static(b"v"), Some(5));
        let bytes = crate::codec::encode_value(&expiring);
        assert_eq!(
            crate::codec::decode_value::<LwwRecord>(&bytes),
            Ok(expiring)
        );
    }

    #[test]
    fn an_expired_value_reads_as_absent_but_still_wins_by_version() {
        let version = |ts| LwwVersion {
            timestamp_micros: ts,
            node: NodeId(1),
            nonce: 0,
        };
        let old = Record::Lww(LwwRecord::plain(
            version(5),
            Some(Bytes::from_static(b"old")),
        ));
        let expiring = Record::Lww(LwwRecord::value(
            version(10),
            Bytes::from_static(b"new"),
            Some(20),
        ));
        for merged in [old.merge(&expiring), expiring.merge(&old)] {
            assert_eq!(merged.live_values_at(19), vec![Bytes::from_static(b"new")]);
            assert!(merged.live_values_at(20).is_empty(), "expired at 20");
            assert!(
                merged.live_values_at(u64::MAX).is_empty(),
                "never the old value"
            );
        }
        let Record::Lww(r) = expiring else { return };
        assert_eq!(r.dead_since_micros(), Some(20));
        assert_eq!(
            LwwRecord::plain(version(7), None).dead_since_micros(),
            Some(7)
        );
        assert_eq!(ExpiresAt::AfterMillis(3).resolve(10), 3_010);
        assert_eq!(ExpiresAt::AtMicros(3).resolve(10), 3);
    }
}
