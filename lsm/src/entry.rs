//! What the tree stores for a key, and its encoding (shared by WAL records and SSTable blocks).
//!
//! ```text
//! entry = 1 | value_len u32 | value                      (value stored inline)
//!       | 2 | segment u64 | offset u64 | frame_len u32    (value in the value log)
//!       | 3 | deleted_at_ms u64                           (tombstone)
//! ```

use crate::bytes_io::{Cursor, PutBytes};
use bytes::Bytes;

/// Where a separated value lives: one frame of a value-log segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ValuePointer {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    /// Length of the whole frame (header + key + value).
    pub(crate) frame_len: u32,
}

/// The newest state of a key in one source (memtable or table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A value stored in the tree.
    Inline(Bytes),
    /// A value stored in the value log.
    Pointer(ValuePointer),
    /// A delete, with the wall-clock time it happened (for `tombstone_grace_ms`).
    Tombstone { deleted_at_ms: u64 },
}

/// An [`Entry`] borrowed from the bytes it is decoded from: a decoder can walk and check a
/// block's entries before it knows how many there are, without copying any inline value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryRef<'a> {
    Inline(&'a [u8]),
    Pointer(ValuePointer),
    Tombstone { deleted_at_ms: u64 },
}

impl<'a> EntryRef<'a> {
    /// The one decoder of the entry encoding ([`Entry::decode`] copies what this borrows).
    pub(crate) fn decode(cursor: &mut Cursor<'a>, value_bytes_max: usize) -> Result<Self, String> {
        match cursor.u8()? {
            KIND_INLINE => Ok(EntryRef::Inline(cursor.slice32(value_bytes_max)?)),
            KIND_POINTER => Ok(EntryRef::Pointer(ValuePointer {
                segment: cursor.u64()?,
                offset: cursor.u64()?,
                frame_len: cursor.u32()?,
            })),
            KIND_TOMBSTONE => Ok(EntryRef::Tombstone {
                deleted_at_ms: cursor.u64()?,
            }),
            other => Err(format!("unknown entry kind {other}")),
        }
    }

    /// The owned entry (an inline value is copied).
    pub(crate) fn to_entry(self) -> Entry {
        match self {
            EntryRef::Inline(value) => Entry::Inline(Bytes::copy_from_slice(value)),
            EntryRef::Pointer(p) => Entry::Pointer(p),
            EntryRef::Tombstone { deleted_at_ms } => Entry::Tombstone { deleted_at_ms },
        }
    }
}

const KIND_INLINE: u8 = 1;
const KIND_POINTER: u8 = 2;
const KIND_TOMBSTONE: u8 = 3;

impl Entry {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Entry::Inline(value) => {
                out.put_u8(KIND_INLINE);
                out.put_slice32(value);
            }
            Entry::Pointer(p) => {
                out.put_u8(KIND_POINTER);
                out.put_u64(p.segment);
                out.put_u64(p.offset);
                out.put_u32(p.frame_len);
            }
            Entry::Tombstone { deleted_at_ms } => {
                out.put_u8(KIND_TOMBSTONE);
                out.put_u64(*deleted_at_ms);
            }
        }
    }

    pub(crate) fn decode(cursor: &mut Cursor<'_>, value_bytes_max: usize) -> Result<Self, String> {
        EntryRef::decode(cursor, value_bytes_max).map(|e| e.to_entry())
    }

    /// Approximate bytes in memory / on disk, for size limits.
    pub(crate) fn size_bytes(&self) -> usize {
        match self {
            Entry::Inline(v) => 5 + v.len(),
            Entry::Pointer(_) => 21,
            Entry::Tombstone { .. } => 9,
        }
    }
}

/// Encodes a key and entry as one record payload: `key_len u32 | key | entry`.
pub(crate) fn encode_keyed(out: &mut Vec<u8>, key: &[u8], entry: &Entry) {
    out.put_slice32(key);
    entry.encode(out);
}

/// Decodes what [`encode_keyed`] wrote.
pub(crate) fn decode_keyed<'a>(
    cursor: &mut Cursor<'a>,
    key_bytes_max: usize,
    value_bytes_max: usize,
) -> Result<(&'a [u8], Entry), String> {
    let key = cursor.slice32(key_bytes_max)?;
    let entry = Entry::decode(cursor, value_bytes_max)?;
    Ok((key, entry))
}
