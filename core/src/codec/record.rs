//! A hand-written decoder for the stored record every read returns, and the encoder of the one
//! every write stores: a last-write-wins [`Record`] (a value, a value with an expiry, or a
//! tombstone). Through serde, bincode encoded into a vector that grew three times per record (a
//! reallocation and a copy of the value each time, about 4% of a SET's instructions); here the
//! vector is sized once. Through serde, bincode decodes
//! the value into a fresh vector (zeroed, then copied) and wraps it; here the value is a slice of
//! the stored bytes, which the engine already holds in one buffer (a value-log frame or a cached
//! block). For a 10 KiB value that was a zeroing and a copy of 10 KiB on every read (issue #15).
//!
//! The encoder writes serde's bytes exactly, and leaves every other record kind to serde. The
//! decoder's result is serde's, exactly: any input this decoder does not accept whole (another record
//! kind, a cut or damaged encoding, a trailing byte) yields `None`, and the caller decodes it
//! with serde, so a malformed record gets serde's own error. The tests compare both decoders on
//! every shape, on varint boundaries and on damaged input.

use super::frame::Frame;
use super::varint::{put_varint, Reader};
use crate::id::NodeId;
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;

/// `Record::Lww`'s variant index.
const LWW_VARIANT: u64 = 0;
/// The body's variant indexes (`LwwBodyWire` in `version::lww`).
const TOMBSTONE_BODY: u64 = 0;
const VALUE_BODY: u64 = 1;
const EXPIRING_BODY: u64 = 2;

/// Most bytes of a last-write-wins record besides its value: the variant, a 64-bit timestamp,
/// two 32-bit numbers, the body's variant, the value's length and a 64-bit expiry.
const LWW_OVERHEAD_BYTES_MAX: usize = 1 + 9 + 5 + 5 + 1 + 9 + 9;

/// The bytes of `record` as serde writes them, if it is a last-write-wins record; `None` for any
/// other kind.
pub(super) fn encode(record: &Record) -> Option<Vec<u8>> {
    let Record::Lww(record) = record else {
        return None;
    };
    let mut out = Vec::with_capacity(encoded_bytes_max(record));
    put_lww(&mut out, record);
    Some(out)
}

/// An upper bound of what [`put_lww`] appends for `record`, to size a buffer once.
pub(super) fn encoded_bytes_max(record: &LwwRecord) -> usize {
    record.value.as_ref().map_or(0, Bytes::len) + LWW_OVERHEAD_BYTES_MAX
}

/// Appends the bytes serde writes for `Record::Lww(record)`.
pub(super) fn put_lww(out: &mut Vec<u8>, record: &LwwRecord) {
    put_varint(out, LWW_VARIANT);
    put_varint(out, record.version.timestamp_micros);
    put_varint(out, u64::from(record.version.node.0));
    put_varint(out, u64::from(record.version.nonce));
    match (&record.value, record.expires_at_micros) {
        (None, _) => put_varint(out, TOMBSTONE_BODY),
        (Some(value), expiry) => {
            put_varint(
                out,
                if expiry.is_some() {
                    EXPIRING_BODY
                } else {
                    VALUE_BODY
                },
            );
            put_varint(out, value.len() as u64);
            out.extend_from_slice(value);
            if let Some(expires_at_micros) = expiry {
                put_varint(out, expires_at_micros);
            }
        }
    }
}

/// The record `bytes` encode, if they are a whole last-write-wins record; `None` for anything
/// else, valid or not.
pub(super) fn decode(bytes: &Bytes) -> Option<Record> {
    let frame = Frame::Shared(bytes);
    let mut reader = Reader::new(bytes);
    let record = read_lww(&mut reader, frame)?;
    (reader.remaining() == 0).then_some(Record::Lww(record))
}

/// Reads what [`put_lww`] writes, from `reader` over `frame`: the value is taken as `frame`
/// allows (a slice of a shared frame, a copy out of a borrowed one). `None` if the next bytes
/// are not a last-write-wins record.
pub(super) fn read_lww(reader: &mut Reader<'_>, frame: Frame<'_>) -> Option<LwwRecord> {
    if reader.varint_u32()? != LWW_VARIANT {
        return None;
    }
    let version = LwwVersion {
        timestamp_micros: reader.varint_u64()?,
        node: NodeId(u32::try_from(reader.varint_u32()?).ok()?),
        nonce: u32::try_from(reader.varint_u32()?).ok()?,
    };
    let body = reader.varint_u32()?;
    let value = match body {
        TOMBSTONE_BODY => None,
        VALUE_BODY | EXPIRING_BODY => Some(frame.byte_string(reader)?),
        _ => return None,
    };
    let expires_at_micros = if body == EXPIRING_BODY {
        Some(reader.varint_u64()?)
    } else {
        None
    };
    Some(LwwRecord {
        version,
        value,
        expires_at_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_value, encode_value};
    use crate::version::{CounterRecord, Record};

    fn lww(
        timestamp_micros: u64,
        node: u32,
        nonce: u32,
        value: Option<&[u8]>,
        expiry: Option<u64>,
    ) -> Record {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros,
                node: NodeId(node),
                nonce,
            },
            value: value.map(Bytes::copy_from_slice),
            expires_at_micros: if value.is_some() { expiry } else { None },
        })
    }

    /// Values either side of every varint width.
    const BOUNDARIES: [u64; 9] = [
        0,
        1,
        250,
        251,
        65_535,
        65_536,
        4_294_967_295,
        4_294_967_296,
        u64::MAX,
    ];

    fn shapes() -> Vec<Record> {
        let mut records = Vec::new();
        for &wide in &BOUNDARIES {
            let narrow = u32::try_from(wide).unwrap_or(u32::MAX);
            records.push(lww(wide, narrow, narrow, Some(b"v"), None));
            records.push(lww(wide, 1, 2, None, None));
            records.push(lww(3, narrow, 4, Some(b""), Some(wide)));
        }
        for len in [0, 1, 250, 251, 1024, 10_240, 70_000] {
            let value = vec![7u8; len];
            records.push(lww(9, 2, 5, Some(&value), None));
            records.push(lww(9, 2, 5, Some(&value), Some(123)));
        }
        records
    }

    #[test]
    fn decodes_exactly_what_serde_decodes_and_shares_the_buffer() {
        for record in shapes() {
            let bytes = Bytes::from(encode_value(&record));
            let fast = decode(&bytes).expect("a whole last-write-wins record");
            assert_eq!(fast, record);
            assert_eq!(decode_value::<Record>(&bytes), Ok(fast.clone()));
            if let Record::Lww(LwwRecord { value: Some(v), .. }) = &fast {
                if !v.is_empty() {
                    let inside = bytes.as_ptr_range();
                    assert!(
                        inside.contains(&v.as_ptr()),
                        "the value is a slice, not a copy"
                    );
                }
            }
        }
    }

    #[test]
    fn encodes_exactly_what_serde_encodes_in_one_allocation() {
        let mut records = shapes();
        // An expiry on a tombstone is not part of its encoding (serde drops it too).
        records.push(Record::Lww(LwwRecord {
            version: LwwVersion::default(),
            value: None,
            expires_at_micros: Some(77),
        }));
        for record in records {
            let fast = encode(&record).expect("a last-write-wins record");
            assert_eq!(fast, encode_value(&record), "{record:?}");
            assert!(fast.capacity() <= fast.len() + LWW_OVERHEAD_BYTES_MAX);
        }
        assert_eq!(encode(&Record::Counter(CounterRecord::default())), None);
    }

    #[test]
    fn leaves_other_records_and_damaged_bytes_to_serde() {
        let counter = Record::Counter(CounterRecord::default());
        assert_eq!(decode(&Bytes::from(encode_value(&counter))), None);
        for record in shapes().into_iter().take(12) {
            let valid = encode_value(&record);
            for cut in 0..valid.len() {
                assert_eq!(
                    decode(&Bytes::copy_from_slice(&valid[..cut])),
                    None,
                    "cut at {cut}"
                );
            }
            let mut longer = valid.clone();
            longer.push(0);
            assert_eq!(decode(&Bytes::from(longer)), None, "a trailing byte");
            // Every single-byte change: whatever the fast path accepts, serde decodes the same.
            for at in 0..valid.len() {
                for flip in [1u8, 0x80, 0xff] {
                    let mut damaged = valid.clone();
                    damaged[at] ^= flip;
                    let damaged = Bytes::from(damaged);
                    if let Some(fast) = decode(&damaged) {
                        assert_eq!(
                            decode_value::<Record>(&damaged),
                            Ok(fast),
                            "byte {at} ^ {flip}"
                        );
                    }
                }
            }
        }
    }
}
