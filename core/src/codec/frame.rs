//! The frame a hand-written decoder reads, and where its byte strings come from: a frame the
//! caller holds as shared [`Bytes`] lends them as slices (no copy, no allocation of their own);
//! a borrowed frame can only give copies, as serde does.

use super::varint::Reader;
use bytes::Bytes;

/// The whole input of one decode.
#[derive(Clone, Copy)]
pub(super) enum Frame<'a> {
    /// Byte strings are slices of this buffer.
    Shared(&'a Bytes),
    /// Byte strings are copied out of these bytes.
    Borrowed(&'a [u8]),
}

impl<'a> Frame<'a> {
    /// All the bytes of the frame.
    pub(super) fn bytes(self) -> &'a [u8] {
        match self {
            Frame::Shared(bytes) => bytes,
            Frame::Borrowed(bytes) => bytes,
        }
    }

    /// A reader from the frame's first byte; [`Frame::byte_string`] expects one of these.
    pub(super) fn reader(self) -> Reader<'a> {
        Reader::new(self.bytes())
    }

    /// Reads a byte string as bincode writes one (a varint length, then the bytes) at the place
    /// of `reader`, which must read this frame. `None` if the frame is too short.
    pub(super) fn byte_string(self, reader: &mut Reader<'_>) -> Option<Bytes> {
        let len = usize::try_from(reader.varint_u64()?).ok()?;
        let whole = self.bytes();
        let start = whole.len().checked_sub(reader.remaining())?;
        let end = start.checked_add(len)?;
        let inside = whole.get(start..end)?;
        reader.skip(len)?;
        Some(match self {
            Frame::Shared(bytes) => bytes.slice(start..end),
            Frame::Borrowed(_) => Bytes::copy_from_slice(inside),
        })
    }
}
