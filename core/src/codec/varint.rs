//! Bincode's variable-length integers by hand, for the stored-record codec that skips serde on
//! the hot paths (`record`). A value up to 250 is one byte; above, a marker byte says whether 2,
//! 4 or 8 little-endian bytes follow.

/// Marker: a `u16` follows.
pub(super) const U16_MARKER: u8 = 251;
/// Marker: a `u32` follows.
pub(super) const U32_MARKER: u8 = 252;
/// Marker: a `u64` follows.
pub(super) const U64_MARKER: u8 = 253;

/// Appends bincode's varint of `value`: one byte up to 250, else a marker and the value in the
/// fewest of 2, 4 or 8 little-endian bytes (the same for every unsigned width that can hold it).
#[inline(always)]
pub(super) fn put_varint(out: &mut Vec<u8>, value: u64) {
    if let Some(byte) = u8::try_from(value).ok().filter(|&byte| byte < U16_MARKER) {
        out.push(byte);
    } else if let Ok(short) = u16::try_from(value) {
        out.push(U16_MARKER);
        out.extend_from_slice(&short.to_le_bytes());
    } else if let Ok(word) = u32::try_from(value) {
        out.push(U32_MARKER);
        out.extend_from_slice(&word.to_le_bytes());
    } else {
        out.push(U64_MARKER);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// The unread rest of an input.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    /// The next `len` bytes; `None` if fewer remain.
    pub(super) fn take_slice(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(len)?;
        self.bytes = rest;
        Some(head)
    }

    /// Passes over `len` bytes; `None` if fewer remain.
    pub(super) fn skip(&mut self, len: usize) -> Option<()> {
        self.bytes = self.bytes.get(len..)?;
        Some(())
    }

    /// A varint as bincode reads a `u32` (which refuses the 8-byte form).
    #[inline]
    pub(super) fn varint_u32(&mut self) -> Option<u64> {
        match self.byte()? {
            U16_MARKER => Some(u64::from(u16::from_le_bytes(self.take()?))),
            U32_MARKER => Some(u64::from(u32::from_le_bytes(self.take()?))),
            byte if byte < U16_MARKER => Some(u64::from(byte)),
            _ => None,
        }
    }

    /// A varint as bincode reads a `u64`.
    #[inline]
    pub(super) fn varint_u64(&mut self) -> Option<u64> {
        match self.byte()? {
            U16_MARKER => Some(u64::from(u16::from_le_bytes(self.take()?))),
            U32_MARKER => Some(u64::from(u32::from_le_bytes(self.take()?))),
            U64_MARKER => Some(u64::from_le_bytes(self.take()?)),
            byte if byte < U16_MARKER => Some(u64::from(byte)),
            _ => None,
        }
    }
}
