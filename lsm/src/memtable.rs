//! The memtable: the active table that writes go into, and the frozen one a flush is turning into
//! a level-0 table. A flush freezes the active table first, so what it writes is a fixed snapshot
//! whatever happens meanwhile; it releases the frozen table once the table is installed, or thaws
//! it back (under anything written since) when the flush is undone.

use crate::entry::Entry;
use bytes::Bytes;
use ringkv_core::hash::IdHashing;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::Bound;

/// A memtable entry. Large values are separated *at flush* (deferred WiscKey): until then they
/// live in the WAL record and here, so a synced write costs one fsync (the WAL's) and the value
/// log is written in large sequential appends, never per write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemEntry {
    Inline(Bytes),
    /// A value above the separation threshold, written with sequence `seq`; it goes to the value
    /// log when the memtable is flushed.
    Pending {
        value: Bytes,
        seq: u64,
    },
    Tombstone(u64),
}

impl MemEntry {
    /// The entry with the value resolved (for reads and scans).
    pub(crate) fn to_resolved_entry(&self) -> Entry {
        match self {
            MemEntry::Inline(v) | MemEntry::Pending { value: v, .. } => Entry::Inline(v.clone()),
            MemEntry::Tombstone(ms) => Entry::Tombstone { deleted_at_ms: *ms },
        }
    }

    /// What the entry costs in memory, with its key (the memtable's bound counts this).
    pub(crate) fn size_bytes(&self, key: &[u8]) -> usize {
        key.len()
            + 48
            + match self {
                MemEntry::Inline(v) | MemEntry::Pending { value: v, .. } => v.len(),
                MemEntry::Tombstone(_) => 0,
            }
    }
}

/// What write `seq` puts in the WAL record and in the memtable: `value` (`None`: a tombstone
/// stamped `deleted_at_ms`), to be separated at flush if longer than `separation_threshold_bytes`.
pub(crate) fn entries_of_write(
    value: Option<Bytes>,
    deleted_at_ms: u64,
    seq: u64,
    separation_threshold_bytes: usize,
) -> (Entry, MemEntry) {
    match value {
        Some(v) if v.len() > separation_threshold_bytes => (
            Entry::Inline(v.clone()),
            MemEntry::Pending { value: v, seq },
        ),
        Some(v) => (Entry::Inline(v.clone()), MemEntry::Inline(v)),
        None => (
            Entry::Tombstone { deleted_at_ms },
            MemEntry::Tombstone(deleted_at_ms),
        ),
    }
}

/// One sorted table, its size, and a filter of its keys.
#[derive(Clone, Debug, Default)]
struct Table {
    entries: BTreeMap<Bytes, MemEntry>,
    bytes: usize,
    filter: KeyFilter,
}

impl Table {
    fn insert(&mut self, key: Bytes, mem: MemEntry) {
        self.bytes += mem.size_bytes(&key);
        self.filter.add(&key, &self.entries);
        if let Some(old) = self.entries.insert(key.clone(), mem) {
            self.bytes -= old.size_bytes(&key);
        }
    }

    fn get(&self, key: &[u8]) -> Option<&MemEntry> {
        if !self.filter.may_contain(key) {
            return None;
        }
        self.entries.get(key)
    }
}

/// Filter bits per key the table holds (at most twice that after the filter grows): with
/// three bits per key in one 64-bit word, about 3% of absent keys pass.
const FILTER_BITS_PER_KEY: usize = 16;
/// The smallest filter, in words.
const FILTER_WORDS_MIN: usize = 64;

/// A blocked bloom filter of a table's keys, so that a read of a key the table lacks (a GET of
/// a missing key; the read before the first write of a key) costs one hash and one word instead
/// of a tree search, whose key comparisons miss the cache at every level (issue #15: that search
/// was most of a missing key's GET). It grows with the table, doubling and refilled from the
/// table's keys, so it never answers "absent" for a key the table holds.
///
/// Keys are chosen by clients and the hash is a fixed one: keys made to collide only make the
/// filter answer "maybe" (a tree search, as without it), never a wrong "absent".
#[derive(Clone, Debug, Default)]
struct KeyFilter {
    /// A power-of-two number of words, or none before the first key.
    words: Vec<u64>,
}

impl KeyFilter {
    /// The word and the three bits of `key`.
    fn slot(&self, key: &[u8]) -> (usize, u64) {
        let hash = IdHashing::default().hash_one(key);
        let index = (hash as usize) & (self.words.len() - 1);
        let bits = (1u64 << ((hash >> 40) & 63))
            | (1u64 << ((hash >> 46) & 63))
            | (1u64 << ((hash >> 52) & 63));
        (index, bits)
    }

    /// Adds `key`, first growing (and refilling from `held`, the keys already in the table) if
    /// one more key would leave fewer than [`FILTER_BITS_PER_KEY`] bits per key.
    fn add(&mut self, key: &[u8], held: &BTreeMap<Bytes, MemEntry>) {
        let wanted = (held.len() + 1) * FILTER_BITS_PER_KEY;
        if self.words.len() * 64 < wanted {
            let words = (wanted.div_ceil(64) * 2)
                .next_power_of_two()
                .max(FILTER_WORDS_MIN);
            self.words = vec![0; words];
            for held_key in held.keys() {
                self.set(held_key);
            }
        }
        self.set(key);
    }

    fn set(&mut self, key: &[u8]) {
        let (index, bits) = self.slot(key);
        self.words[index] |= bits;
    }

    /// False only if `key` was never added.
    fn may_contain(&self, key: &[u8]) -> bool {
        if self.words.is_empty() {
            return false;
        }
        let (index, bits) = self.slot(key);
        self.words[index] & bits == bits
    }
}

/// The active and the frozen memtable.
#[derive(Debug, Default)]
pub(crate) struct MemTable {
    active: Table,
    /// The table a flush in progress is writing out; `None` between flushes.
    frozen: Option<Table>,
}

impl MemTable {
    /// Bytes held by the active table (the bound that triggers a flush).
    pub(crate) fn active_bytes(&self) -> usize {
        self.active.bytes
    }

    /// No entry in either table.
    pub(crate) fn is_empty(&self) -> bool {
        self.active.entries.is_empty() && self.frozen.as_ref().is_none_or(|f| f.entries.is_empty())
    }

    /// Stages `key = mem` in the active table.
    pub(crate) fn insert(&mut self, key: Bytes, mem: MemEntry) {
        self.active.insert(key, mem);
    }

    /// The newest entry for `key`: the active table first, then the frozen one.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&MemEntry> {
        self.active
            .get(key)
            .or_else(|| self.frozen.as_ref().and_then(|f| f.get(key)))
    }

    /// Freezes the active table for a flush; writes go to a new, empty active table.
    pub(crate) fn freeze(&mut self) {
        assert!(self.frozen.is_none(), "one flush at a time");
        self.frozen = Some(std::mem::take(&mut self.active));
    }

    /// The frozen table, in key order (empty if none).
    pub(crate) fn frozen(&self) -> impl Iterator<Item = (&Bytes, &MemEntry)> {
        self.frozen.iter().flat_map(|f| f.entries.iter())
    }

    /// The frozen entries after `key` (all of them if `None`), in key order: where a flush job
    /// resumes.
    pub(crate) fn frozen_after(
        &self,
        key: Option<Bytes>,
    ) -> impl Iterator<Item = (&Bytes, &MemEntry)> {
        let from = key.map_or(Bound::Unbounded, Bound::Excluded);
        self.frozen
            .iter()
            .flat_map(move |f| f.entries.range((from.clone(), Bound::Unbounded)))
    }

    /// Whether a frozen table exists (a flush job is under way).
    pub(crate) fn has_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// The flush installed its table: the frozen entries are durable there.
    pub(crate) fn release_frozen(&mut self) {
        self.frozen = None;
    }

    /// The flush was undone: the frozen entries become active again, under anything written
    /// since (newer).
    pub(crate) fn thaw(&mut self) {
        let Some(mut frozen) = self.frozen.take() else {
            return;
        };
        for (key, mem) in std::mem::take(&mut self.active.entries) {
            frozen.insert(key, mem);
        }
        self.active = frozen;
    }

    /// Up to `count` resolved entries from `from` on, over both tables (active wins), in key
    /// order.
    pub(crate) fn chunk(&self, from: Bound<Bytes>, count: usize) -> Vec<(Bytes, Entry)> {
        let range = |t: &Table| -> Vec<(Bytes, Entry)> {
            t.entries
                .range((from.clone(), Bound::Unbounded))
                .take(count)
                .map(|(k, m)| (k.clone(), m.to_resolved_entry()))
                .collect()
        };
        let Some(frozen) = &self.frozen else {
            return range(&self.active);
        };
        // The first `count` keys of the union lie among the first `count` of each table.
        let mut merged: BTreeMap<Bytes, Entry> = range(frozen).into_iter().collect();
        merged.extend(range(&self.active));
        merged.into_iter().take(count).collect()
    }

    /// Panics if the sizes disagree with the entries (a bug). Counting is linear in the
    /// entries: debug builds only.
    pub(crate) fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            for t in std::iter::once(&self.active).chain(&self.frozen) {
                let bytes: usize = t.entries.iter().map(|(k, m)| m.size_bytes(k)).sum();
                assert_eq!(bytes, t.bytes, "memtable size out of step with its entries");
                assert!(
                    t.entries.keys().all(|k| t.filter.may_contain(k)),
                    "the key filter lost a key the table holds"
                );
            }
        }
    }
}

/// Cursor over the memtable in chunks, yielding resolved entries (scans only).
pub(crate) struct MemCursor {
    chunk: Vec<(Bytes, Entry)>,
    pos: usize,
    next_from: Option<Bound<Bytes>>,
}

const MEM_CHUNK_ENTRIES: usize = 256;

impl MemCursor {
    /// A cursor at the first key `>= start`.
    pub(crate) fn new(mem: &MemTable, start: &[u8]) -> Self {
        let mut cursor = MemCursor {
            chunk: Vec::new(),
            pos: 0,
            next_from: Some(Bound::Included(Bytes::copy_from_slice(start))),
        };
        cursor.fill(mem);
        cursor
    }

    fn fill(&mut self, mem: &MemTable) {
        self.chunk.clear();
        self.pos = 0;
        let Some(from) = self.next_from.take() else {
            return;
        };
        self.chunk = mem.chunk(from, MEM_CHUNK_ENTRIES);
        if self.chunk.len() == MEM_CHUNK_ENTRIES {
            self.next_from = self.chunk.last().map(|(k, _)| Bound::Excluded(k.clone()));
        }
    }

    /// The entry under the cursor.
    pub(crate) fn current(&self) -> Option<(&Bytes, &Entry)> {
        self.chunk.get(self.pos).map(|(k, e)| (k, e))
    }

    /// Moves to the next entry.
    pub(crate) fn advance(&mut self, mem: &MemTable) {
        self.pos += 1;
        if self.pos >= self.chunk.len() {
            self.fill(mem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn inline(s: &str) -> MemEntry {
        MemEntry::Inline(b(s))
    }

    fn every_key_found(mem: &MemTable) {
        for i in 0..5_000 {
            assert_eq!(
                mem.get(format!("key:{i:012}").as_bytes()),
                Some(&inline("v")),
                "{i}"
            );
        }
    }

    #[test]
    fn the_key_filter_keeps_every_key_through_growth_freeze_and_thaw_and_turns_most_others_away() {
        let mut mem = MemTable::default();
        for i in 0..5_000 {
            mem.insert(b(&format!("key:{i:012}")), inline("v"));
            if i == 2_000 {
                mem.freeze();
            }
        }
        mem.check_invariants();
        every_key_found(&mem);
        // Absent keys: the filter answers for both tables; a few pass (false positives) and
        // then miss in the tree.
        let passed = (5_000..25_000)
            .filter(|i| {
                let key = format!("key:{i:012}");
                assert_eq!(mem.get(key.as_bytes()), None);
                mem.active.filter.may_contain(key.as_bytes())
            })
            .count();
        assert!(
            passed < 20_000 / 10,
            "{passed} of 20,000 absent keys passed the filter"
        );
        mem.thaw();
        mem.check_invariants();
        every_key_found(&mem);
        // An empty table holds nothing.
        assert_eq!(MemTable::default().get(b"key"), None);
    }

    #[test]
    fn sizes_follow_overwrites() {
        let mut mem = MemTable::default();
        mem.insert(b("k"), inline("12345"));
        mem.insert(b("k"), inline("1"));
        assert_eq!(mem.active_bytes(), 1 + 48 + 1);
        mem.check_invariants();
    }

    #[test]
    fn a_frozen_table_is_read_under_the_active_one_and_thaws_beneath_it() {
        let mut mem = MemTable::default();
        mem.insert(b("a"), inline("old"));
        mem.insert(b("b"), inline("frozen"));
        mem.freeze();
        assert_eq!(mem.active_bytes(), 0);
        mem.insert(b("a"), inline("new"));
        assert_eq!(mem.get(b"a"), Some(&inline("new")));
        assert_eq!(mem.get(b"b"), Some(&inline("frozen")));
        assert_eq!(mem.frozen().count(), 2);
        let chunk = mem.chunk(Bound::Unbounded, 10);
        assert_eq!(
            chunk,
            vec![
                (b("a"), Entry::Inline(b("new"))),
                (b("b"), Entry::Inline(b("frozen")))
            ]
        );
        mem.thaw();
        assert_eq!(mem.get(b"a"), Some(&inline("new")), "newer writes win");
        assert_eq!(mem.frozen().count(), 0);
        mem.check_invariants();
        mem.freeze();
        mem.release_frozen();
        assert!(mem.is_empty());
    }

    #[test]
    fn a_cursor_walks_chunks_in_order() {
        let mut mem = MemTable::default();
        for i in 0..600 {
            mem.insert(b(&format!("k{i:04}")), inline("v"));
        }
        let mut cursor = MemCursor::new(&mem, b"k0100");
        let mut seen = 0;
        while let Some((k, _)) = cursor.current() {
            assert_eq!(k, &b(&format!("k{:04}", 100 + seen)));
            seen += 1;
            cursor.advance(&mem);
        }
        assert_eq!(seen, 500);
    }
}
