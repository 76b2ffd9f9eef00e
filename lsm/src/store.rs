//! Access to tables through one byte-bounded cache (each table's index and filter, decoded
//! blocks, separated values), and cursors over sorted runs of tables used by scans and
//! compaction.

use crate::bloom;
use crate::cache::LruCache;
use crate::entry::{Entry, ValuePointer};
use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::table::{Block, DecodeLimits, TableMeta, TableReader};
use bytes::Bytes;
use std::sync::Arc;

/// What the cache holds, by where it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKey {
    /// A table's index and bloom filter.
    Reader {
        table: u64,
    },
    Block {
        table: u64,
        index: usize,
    },
    Value {
        segment: u64,
        offset: u64,
    },
}

/// Two words, the kind folded into the first (ids stay far below 2^62): the cache's hash is
/// built for integers.
impl std::hash::Hash for StoreKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (first, second) = match *self {
            StoreKey::Reader { table } => (table << 2, 0),
            StoreKey::Block { table, index } => ((table << 2) | 1, index as u64),
            StoreKey::Value { segment, offset } => ((segment << 2) | 2, offset),
        };
        state.write_u64(first);
        state.write_u64(second);
    }
}

#[derive(Clone, Debug)]
enum Cached {
    Reader(Arc<TableReader>),
    Block(Block),
    Value(Bytes),
}

/// The file system plus the cache in front of the tables and the value log.
///
/// Indexes and filters, blocks and separated values share one budget, as in one LRU: what is
/// read most stays. A split in fixed parts went wrong at both ends (issue #15): with values
/// separated, tables hold only keys and pointers, so the block share sat idle while the values
/// got a quarter; and at 8 GiB the indexes and filters outgrew their fixed 16 MiB, so every
/// probe of a table reloaded them (2.7k present and 14k absent gets per second). A table's
/// index and filter are touched by every lookup that probes it, far more often than any one
/// block or value, so the LRU keeps them.
#[derive(Debug)]
pub(crate) struct TableStore<F: FileSystem> {
    pub(crate) fs: F,
    pub(crate) limits: DecodeLimits,
    cache: LruCache<StoreKey, Cached>,
    /// Lookups of blocks and values (not of indexes) the cache answered, and those it did not.
    data_hits: u64,
    data_misses: u64,
}

impl<F: FileSystem> TableStore<F> {
    pub(crate) fn new(fs: F, limits: DecodeLimits, cache_bytes: usize) -> Self {
        TableStore {
            fs,
            limits,
            cache: LruCache::new(cache_bytes),
            data_hits: 0,
            data_misses: 0,
        }
    }

    /// The index and filter of table `id`, from the index cache or disk.
    pub(crate) fn reader(&mut self, id: u64) -> Result<Arc<TableReader>, LsmError> {
        let key = StoreKey::Reader { table: id };
        if let Some(Cached::Reader(r)) = self.cache.get(&key) {
            return Ok(r);
        }
        let reader = Arc::new(TableReader::open(&mut self.fs, id, &self.limits)?);
        let charge = reader.charge_bytes();
        self.cache
            .insert(key, Cached::Reader(reader.clone()), charge);
        Ok(reader)
    }

    /// Block `i` of table `id`; through the block cache when `cache` (foreground reads), around
    /// it otherwise (compaction must not evict the working set).
    pub(crate) fn block(
        &mut self,
        id: u64,
        reader: &TableReader,
        i: usize,
        cache: bool,
    ) -> Result<Block, LsmError> {
        let key = StoreKey::Block {
            table: id,
            index: i,
        };
        if cache {
            if let Some(Cached::Block(b)) = self.cache.get(&key) {
                self.data_hits += 1;
                return Ok(b);
            }
            self.data_misses += 1;
        }
        let block = reader.read_block(&mut self.fs, i, &self.limits)?;
        if cache {
            let charge = block
                .iter()
                .map(|(k, e)| k.len() + e.size_bytes() + 32)
                .sum();
            self.cache.insert(key, Cached::Block(block.clone()), charge);
        }
        Ok(block)
    }

    /// The separated value `p` points at, if it is in the cache.
    pub(crate) fn cached_value(&mut self, p: &ValuePointer) -> Option<Bytes> {
        let key = StoreKey::Value {
            segment: p.segment,
            offset: p.offset,
        };
        if let Some(Cached::Value(v)) = self.cache.get(&key) {
            self.data_hits += 1;
            return Some(v);
        }
        self.data_misses += 1;
        None
    }

    /// Keeps a separated value just read (value-log segments are never rewritten, so an entry
    /// stays right until it ages out).
    pub(crate) fn cache_value(&mut self, p: &ValuePointer, value: Bytes) {
        let key = StoreKey::Value {
            segment: p.segment,
            offset: p.offset,
        };
        let charge = value.len() + 64;
        self.cache.insert(key, Cached::Value(value), charge);
    }

    /// The entry for `key` in table `id`, if the table holds one.
    pub(crate) fn get(
        &mut self,
        id: u64,
        key: &[u8],
        hash: u64,
    ) -> Result<Option<Entry>, LsmError> {
        let reader = self.reader(id)?;
        if !reader.may_contain(hash) {
            return Ok(None);
        }
        let Some(i) = reader.block_for(key) else {
            return Ok(None);
        };
        let block = self.block(id, &reader, i, true)?;
        Ok(block
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|at| block[at].1.clone()))
    }

    /// The newest entry for `key` in the tables of `levels`: level 0 newest first, then one
    /// table per deeper level, with bloom-filter skips.
    pub(crate) fn lookup(
        &mut self,
        levels: &[Vec<TableMeta>],
        key: &[u8],
    ) -> Result<Option<Entry>, LsmError> {
        let hash = bloom::key_hash(key);
        // Tables are probed as they are found, newest first, so a hit in level 0 or 1 (most
        // reads) never range-checks the deeper levels, and nothing is collected first.
        for (level, tables) in levels.iter().enumerate() {
            if level == 0 {
                for t in tables {
                    if t.smallest.as_ref() <= key && key <= t.largest.as_ref() {
                        if let Some(entry) = self.get(t.id, key, hash)? {
                            return Ok(Some(entry));
                        }
                    }
                }
            } else {
                let i = tables.partition_point(|t| t.largest.as_ref() < key);
                if let Some(t) = tables.get(i).filter(|t| t.smallest.as_ref() <= key) {
                    if let Some(entry) = self.get(t.id, key, hash)? {
                        return Ok(Some(entry));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Forgets everything cached about table `id` (it was deleted).
    pub(crate) fn evict_table(&mut self, id: u64) {
        self.cache.retain(|key| match *key {
            StoreKey::Reader { table } | StoreKey::Block { table, .. } => table != id,
            StoreKey::Value { .. } => true,
        });
    }

    /// Lookups of blocks and values the cache answered, and those it did not.
    pub(crate) fn cache_stats(&self) -> (u64, u64) {
        (self.data_hits, self.data_misses)
    }
}

/// A cursor over a sorted run: tables whose key ranges do not overlap, in key order (a level
/// >= 1, or a single level-0 table).
#[derive(Debug)]
pub(crate) struct RunCursor {
    tables: Vec<(u64, Bytes)>,
    table_pos: usize,
    reader: Option<Arc<TableReader>>,
    block_idx: usize,
    block: Option<Block>,
    pos: usize,
    cache: bool,
}

impl RunCursor {
    /// A cursor over `tables` (sorted, non-overlapping), not yet positioned.
    pub(crate) fn new(tables: &[TableMeta], cache: bool) -> Self {
        RunCursor {
            tables: tables.iter().map(|t| (t.id, t.largest.clone())).collect(),
            table_pos: 0,
            reader: None,
            block_idx: 0,
            block: None,
            pos: 0,
            cache,
        }
    }

    /// Positions the cursor at the first entry with key >= `key` (or the first entry).
    pub(crate) fn seek<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
        key: Option<&[u8]>,
    ) -> Result<(), LsmError> {
        self.table_pos = match key {
            Some(k) => self
                .tables
                .partition_point(|(_, largest)| largest.as_ref() < k),
            None => 0,
        };
        self.reader = None;
        self.block = None;
        if self.table_pos >= self.tables.len() {
            return Ok(());
        }
        let id = self.tables[self.table_pos].0;
        let reader = store.reader(id)?;
        self.block_idx = match key {
            Some(k) => reader.block_for(k).unwrap_or(reader.index.len()),
            None => 0,
        };
        self.reader = Some(reader);
        self.load_block(store)?;
        if let (Some(k), Some(block)) = (key, &self.block) {
            self.pos = block.partition_point(|(bk, _)| bk.as_ref() < k);
        }
        self.normalize(store)
    }

    fn load_block<F: FileSystem>(&mut self, store: &mut TableStore<F>) -> Result<(), LsmError> {
        self.pos = 0;
        self.block = None;
        let Some(reader) = self.reader.clone() else {
            return Ok(());
        };
        if self.block_idx < reader.index.len() {
            let id = self.tables[self.table_pos].0;
            self.block = Some(store.block(id, &reader, self.block_idx, self.cache)?);
        }
        Ok(())
    }

    /// Moves past exhausted blocks and tables.
    fn normalize<F: FileSystem>(&mut self, store: &mut TableStore<F>) -> Result<(), LsmError> {
        loop {
            match &self.block {
                Some(block) if self.pos < block.len() => return Ok(()),
                Some(_) => {
                    self.block_idx += 1;
                    self.load_block(store)?;
                }
                None => {
                    self.table_pos += 1;
                    if self.table_pos >= self.tables.len() {
                        self.reader = None;
                        return Ok(());
                    }
                    let id = self.tables[self.table_pos].0;
                    self.reader = Some(store.reader(id)?);
                    self.block_idx = 0;
                    self.load_block(store)?;
                }
            }
        }
    }

    /// The current entry, if the run is not exhausted.
    pub(crate) fn current(&self) -> Option<(&Bytes, &Entry)> {
        let block = self.block.as_ref()?;
        block.get(self.pos).map(|(k, e)| (k, e))
    }

    /// Steps to the next entry.
    pub(crate) fn advance<F: FileSystem>(
        &mut self,
        store: &mut TableStore<F>,
    ) -> Result<(), LsmError> {
        if self.block.is_some() {
            self.pos += 1;
            self.normalize(store)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;
    use crate::table::TableBuilder;

    fn value_at(offset: u64) -> ValuePointer {
        ValuePointer {
            segment: 3,
            offset,
            frame_len: 1100,
        }
    }

    #[test]
    fn blocks_and_values_share_one_budget_and_a_dropped_table_keeps_the_values() {
        let limits = DecodeLimits {
            key_bytes_max: 64,
            value_bytes_max: 4096,
            block_bytes_max: 1 << 20,
        };
        let mut store = TableStore::new(SimFs::seeded(2), limits, 4400);
        let mut b = TableBuilder::create(&mut store.fs, 7, 64, 10, false).expect("create");
        for k in ["a", "b", "c", "d"] {
            let value = Entry::Inline(Bytes::from_static(b"table value"));
            b.add(&mut store.fs, k.as_bytes(), &value).expect("add");
        }
        b.finish(&mut store.fs).expect("finish");
        let reader = store.reader(7).expect("reader");
        // Only blocks and values below: the reader is held here, its cache entry dropped.
        store.cache.remove(&StoreKey::Reader { table: 7 });
        store.block(7, &reader, 0, true).expect("block");
        let block_bytes = store.cache.used_bytes();
        assert!(
            block_bytes > 0 && block_bytes + 3 * 1064 <= 4400,
            "{block_bytes}"
        );
        // Three values of about 1 KiB fit beside the block: a budget split in fixed parts (a
        // quarter for values) held one.
        for offset in 0..3 {
            store.cache_value(&value_at(offset), Bytes::from(vec![7u8; 1000]));
        }
        assert!((0..3).all(|offset| store.cached_value(&value_at(offset)).is_some()));
        assert_eq!(store.cache.used_bytes(), block_bytes + 3 * 1064);
        // A fourth pushes out the least recently used entry, the block, not a value.
        store.cache_value(&value_at(3), Bytes::from(vec![7u8; 1000]));
        assert!((0..4).all(|offset| store.cached_value(&value_at(offset)).is_some()));
        assert_eq!(store.cache.used_bytes(), 4 * 1064);
        let (hits, misses) = store.cache_stats();
        store.block(7, &reader, 0, true).expect("block read again");
        assert_eq!(
            store.cache_stats(),
            (hits, misses + 1),
            "the block was evicted"
        );
        // Deleting a table forgets its blocks and keeps the values.
        store.evict_table(7);
        assert_eq!(
            store.cache.used_bytes(),
            3 * 1064,
            "its block and the oldest value gone"
        );
        assert!((1..4).all(|offset| store.cached_value(&value_at(offset)).is_some()));
        // A table's index and filter live in the same cache, and go with the table.
        store.reader(7).expect("reader");
        let reader_key = StoreKey::Reader { table: 7 };
        assert!(store.cache.get(&reader_key).is_some());
        store.evict_table(7);
        assert!(store.cache.get(&reader_key).is_none());
    }
}
