//! The search memo: the set of (linearized operations, model state) pairs already explored.
//!
//! Wing & Gong's search is exponential without it; Lowe's improvement is to remember each
//! configuration reached and never explore it twice. Sets are bitsets over the key's operations,
//! stored back to back in one arena (no allocation per entry), and found through an
//! open-addressing table keyed by an incrementally maintained hash of the set (see
//! [`crate::search`]) combined with the state's hash.

use std::hash::Hash;

use crate::fxhash::hash_one;

/// Bytes the memo spends per entry besides the bitset itself (entry record and table slots).
pub const ENTRY_OVERHEAD_BYTES: usize = 48;

#[derive(Clone, Copy, Debug)]
struct Entry<S> {
    hash: u64,
    state: S,
}

/// A set of (bitset, state) pairs with exact membership (hash collisions are resolved by
/// comparing the bitsets and states).
#[derive(Debug)]
pub struct Memo<S> {
    words_per_set: usize,
    /// Each slot is `0` (empty) or `(hash >> 32) << 32 | (entry index + 1)`.
    slots: Vec<u64>,
    entries: Vec<Entry<S>>,
    arena: Vec<u64>,
}

impl<S: Copy + Eq + Hash> Memo<S> {
    /// An empty memo for sets of `words_per_set` 64-bit words.
    pub fn new(words_per_set: usize) -> Self {
        Self {
            words_per_set,
            slots: vec![0; 64],
            entries: Vec::new(),
            arena: Vec::new(),
        }
    }

    /// Number of configurations stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every entry, keeping the allocations for reuse.
    pub fn clear(&mut self) {
        if self.slots.len() > 1024 {
            // A table that once grew large would make every later clear slow.
            self.slots = vec![0; 1024];
        } else {
            self.slots.fill(0);
        }
        self.entries.clear();
        self.arena.clear();
    }

    /// Approximate heap bytes in use.
    pub fn bytes(&self) -> usize {
        self.slots.len() * 8
            + self.entries.capacity() * std::mem::size_of::<Entry<S>>()
            + self.arena.capacity() * 8
    }

    /// Inserts the configuration; returns false if it was already present.
    ///
    /// `set_hash` must be a function of `set` alone (the search keeps a Zobrist hash).
    #[inline]
    pub fn insert(&mut self, set_hash: u64, set: &[u64], state: S) -> bool {
        debug_assert_eq!(set.len(), self.words_per_set);
        let hash = set_hash ^ hash_one(&state).rotate_left(29);
        let tag = hash & 0xffff_ffff_0000_0000;
        let mask = self.slots.len() - 1;
        let mut slot = (hash as usize) & mask;
        loop {
            let value = self.slots[slot];
            if value == 0 {
                break;
            }
            if value & 0xffff_ffff_0000_0000 == tag {
                let index = (value & 0xffff_ffff) as usize - 1;
                let entry = self.entries[index];
                if entry.hash == hash && entry.state == state && self.set_of(index) == set {
                    return false;
                }
            }
            slot = (slot + 1) & mask;
        }
        let index = self.entries.len();
        self.entries.push(Entry { hash, state });
        self.arena.extend_from_slice(set);
        self.slots[slot] = tag | (index as u64 + 1);
        if self.entries.len() * 2 > self.slots.len() {
            self.grow();
        }
        true
    }

    fn set_of(&self, index: usize) -> &[u64] {
        &self.arena[index * self.words_per_set..(index + 1) * self.words_per_set]
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let mask = size - 1;
        let mut slots = vec![0u64; size];
        for (index, entry) in self.entries.iter().enumerate() {
            let mut slot = (entry.hash as usize) & mask;
            while slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            slots[slot] = (entry.hash & 0xffff_ffff_0000_0000) | (index as u64 + 1);
        }
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_membership_despite_equal_hashes() {
        let mut memo = Memo::new(2);
        assert!(memo.insert(7, &[1, 0], 3u64));
        assert!(!memo.insert(7, &[1, 0], 3u64));
        // Same hash, different set or state: distinct entries.
        assert!(memo.insert(7, &[2, 0], 3u64));
        assert!(memo.insert(7, &[1, 0], 4u64));
        for i in 0..1000u64 {
            assert!(memo.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), &[i, 1], 0u64));
        }
        for i in 0..1000u64 {
            assert!(!memo.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), &[i, 1], 0u64));
        }
        assert_eq!(memo.len(), 1003);
    }
}
