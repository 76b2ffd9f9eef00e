//! A hand-written decoder for the stored record every read returns: a last-write-wins
//! [`Record`] (a value, a value with an expiry, or a tombstone). Through serde, bincode decodes
//! the value into a fresh vector (zeroed, then copied) and wraps it; here the value is a slice of
//! the stored bytes, which the engine already holds in one buffer (a value-log frame or a cached
//! block). For a 10 KiB value that was a zeroing and a copy of 10 KiB on every read (issue #15).
//!
//! The result is serde's, exactly: any input this decoder does not accept whole (another record
//! kind, a cut or damaged encoding, a trailing byte) yields `None`, and the caller decodes it
//! with serde, so a malformed record gets serde's own error. The tests compare both decoders on
//! every shape, on varint boundaries and on damaged input.

use super::varint::Reader;
use crate::id::NodeId;
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;

/// `Record::Lww`'s variant index.
const LWW_VARIANT: u64 = 0;
/// The body's variant indexes (`LwwBodyWire` in `version::lww`).
const TOMBSTONE_BODY: u64 = 0;
const VALUE_BODY: u64 = 1;
const EXPIRING_BODY: u64 = 2;

/// The record `bytes` encode, if they are a whole last-write-wins record; `None` for anything
/// else, valid or not.
pub(super) fn decode(bytes: &Bytes) -> Option<Record> {
    let mut reader = Reader::new(bytes);
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
        VALUE_BODY | EXPIRING_BODY => {
            let len = usize::try_from(reader.varint_u64()?).ok()?;
            let start = bytes.len() - reader.remaining();
            reader.skip(len)?;
            Some(bytes.slice(start..start + len))
        }
        _ => return None,
    };
    let expires_at_micros = if body == EXPIRING_BODY {
        Some(reader.varint_u64()?)
    } else {
        None
    };
    if reader.remaining() != 0 {
        return None;
    }
    Some(Record::Lww(LwwRecord {
        version,
        value,
        expires_at_micros,
    }))
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
