//! The trace fingerprint: a stable hash folded over every processed event. Two runs of one seed
//! must produce the same value on every machine; any divergence in behaviour changes it.
//!
//! Values can be megabytes, so byte strings contribute their length and first 32 bytes only (the
//! simulator's values begin with their unique write id, so this still tells any two apart).

use ringkv_core::hash::{fold_le_words, mix64};
use std::hash::{Hash, Hasher};

/// Bytes of each byte string that reach the fingerprint.
const PREFIX_BYTES: usize = 32;

/// An incremental, platform-independent hasher.
#[derive(Clone, Debug)]
pub struct Fingerprint {
    state: u64,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint {
            state: 0x6a09_e667_f3bc_c908,
        }
    }
}

impl Fingerprint {
    /// Folds one value in.
    pub fn add<T: Hash + ?Sized>(&mut self, value: &T) {
        value.hash(self);
    }

    /// The current fingerprint as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", mix64(self.state))
    }

    fn fold(&mut self, word: u64) {
        self.state = mix64(self.state ^ word).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        mix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.fold(bytes.len() as u64);
        fold_le_words(&bytes[..bytes.len().min(PREFIX_BYTES)], |word| {
            self.fold(word)
        });
    }

    fn write_u8(&mut self, i: u8) {
        self.fold(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.fold(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.fold(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.fold(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.fold(i as u64);
    }
    fn write_i64(&mut self, i: i64) {
        self.fold(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.fold(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_matter() {
        let mut a = Fingerprint::default();
        a.add(&1u64);
        a.add(&2u64);
        let mut b = Fingerprint::default();
        b.add(&2u64);
        b.add(&1u64);
        assert_ne!(a.hex(), b.hex());
        let mut c = Fingerprint::default();
        c.add(&1u64);
        c.add(&2u64);
        assert_eq!(a.hex(), c.hex());
    }

    /// Byte strings fold the words of the first version (a copy per 8-byte chunk, zero-padded):
    /// every fingerprint ever recorded depends on them.
    #[test]
    fn byte_strings_fold_padded_words() {
        let bytes: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..=bytes.len() {
            let mut expected = Fingerprint::default();
            expected.fold(len as u64);
            for chunk in bytes[..len.min(PREFIX_BYTES)].chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                expected.fold(u64::from_le_bytes(word));
            }
            let mut actual = Fingerprint::default();
            actual.write(&bytes[..len]);
            assert_eq!(actual.state, expected.state, "{len} bytes");
        }
    }
}
