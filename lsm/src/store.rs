//! Access to tables through the two byte-bounded caches (index+filter per table, data blocks),
//! and cursors over sorted runs of tables used by scans and compaction.

use crate::bloom;
use crate::cache::LruCache;
use crate::entry::Entry;
use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::table::{Block, DecodeLimits, TableMeta, TableReader};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// The file system plus the caches in front of the tables.
///
/// Tables' indexes and filters come first: past their own share they borrow the block cache's,
/// which shrinks to make room (and grows back when tables go). A fixed share went wrong at
/// 8 GiB of node records (issue #15): the indexes and filters outgrew their 16 MiB and every
/// probe of a table reloaded and re-parsed them (2.7k present and 14k absent gets per second).
/// Every lookup probes several tables' filters, far more often than it reads any one block.
/// They stay caches of their own: mixed into one index with the blocks (and values), those
/// probes missed the CPU's caches and a node's GETs fell 5%.
#[derive(Debug)]
pub(crate) struct TableStore<F: FileSystem> {
    pub(crate) fs: F,
    pub(crate) limits: DecodeLimits,
    /// The indexes' own share; the block cache lends them the rest of its bound.
    index_cache_bytes: usize,
    block_cache_bytes: usize,
    readers: LruCache<u64, Arc<TableReader>>,
    blocks: LruCache<(u64, usize), Block>,
    /// The last blocks read around the block cache (`block` with `cache` off), newest last.
    /// Why: a value-log collection looks up every key of its victim segment, and a segment's
    /// values were written by flushes in key order, so consecutive lookups land in the same
    /// block; read, unsealed and decoded again per key, those lookups were a third of a
    /// collection's time and a tenth of a node's under 1 KiB SETs (perf, issue #15).
    recent: VecDeque<((u64, usize), Block)>,
}

/// Blocks kept in [`TableStore::recent`]: one per table a collection's lookups go through at a
/// time (a level-0 table or two and one per deeper level).
const RECENT_BLOCKS_MAX: usize = 8;

impl<F: FileSystem> TableStore<F> {
    pub(crate) fn new(
        fs: F,
        limits: DecodeLimits,
        index_cache_bytes: usize,
        block_cache_bytes: usize,
    ) -> Self {
        TableStore {
            fs,
            limits,
            index_cache_bytes,
            block_cache_bytes,
            readers: LruCache::new(index_cache_bytes + block_cache_bytes),
            blocks: LruCache::new(block_cache_bytes),
            recent: VecDeque::new(),
        }
    }

    /// The block cache keeps what the indexes leave of its bound.
    fn lend_block_share(&mut self) {
        let borrowed = self
            .readers
            .used_bytes()
            .saturating_sub(self.index_cache_bytes);
        (self.blocks).set_capacity(self.block_cache_bytes.saturating_sub(borrowed));
    }

    /// The index and filter of table `id`, from the index cache or disk.
    pub(crate) fn reader(&mut self, id: u64) -> Result<Arc<TableReader>, LsmError> {
        if let Some(r) = self.readers.get(&id) {
            return Ok(r);
        }
        let reader = Arc::new(TableReader::open(&mut self.fs, id, &self.limits)?);
        self.readers
            .insert(id, reader.clone(), reader.charge_bytes());
        self.lend_block_share();
        Ok(reader)
    }

    /// Block `i` of table `id`; through the block cache when `cache` (foreground reads), around
    /// it otherwise (maintenance must not evict the working set): then a block already cached
    /// is still used, and one read is kept among the few [`TableStore::recent`] ones.
    pub(crate) fn block(
        &mut self,
        id: u64,
        reader: &TableReader,
        i: usize,
        cache: bool,
    ) -> Result<Block, LsmError> {
        if cache {
            if let Some(b) = self.blocks.get(&(id, i)) {
                return Ok(b);
            }
        } else if let Some(b) = self.blocks.peek(&(id, i)).or_else(|| {
            let recent = self.recent.iter().find(|(at, _)| *at == (id, i));
            recent.map(|(_, b)| b.clone())
        }) {
            return Ok(b);
        }
        let block = reader.read_block(&mut self.fs, i, &self.limits)?;
        if cache {
            let charge = block.memory_bytes();
            self.blocks.insert((id, i), block.clone(), charge);
        } else {
            if self.recent.len() >= RECENT_BLOCKS_MAX {
                self.recent.pop_front();
            }
            self.recent.push_back(((id, i), block.clone()));
        }
        Ok(block)
    }

    /// The entry for `key` in table `id`, if the table holds one; its block through the cache
    /// when `cache`.
    pub(crate) fn get(
        &mut self,
        id: u64,
        key: &[u8],
        hash: u64,
        cache: bool,
    ) -> Result<Option<Entry>, LsmError> {
        let reader = self.reader(id)?;
        if !reader.may_contain(hash) {
            return Ok(None);
        }
        let Some(i) = reader.block_for(key) else {
            return Ok(None);
        };
        let block = self.block(id, &reader, i, cache)?;
        Ok(block.get(key).cloned())
    }

    /// The newest entry for `key` in the tables of `levels`: level 0 newest first, then one
    /// table per deeper level, with bloom-filter skips. Blocks go through the cache when
    /// `cache` (a foreground read); maintenance's lookups pass `false`, so that a value-log
    /// collection, which looks up every key of its victim, does not push out what reads use.
    pub(crate) fn lookup(
        &mut self,
        levels: &[Vec<TableMeta>],
        key: &[u8],
        cache: bool,
    ) -> Result<Option<Entry>, LsmError> {
        let hash = bloom::key_hash(key);
        // Tables are probed as they are found, newest first, so a hit in level 0 or 1 (most
        // reads) never range-checks the deeper levels, and nothing is collected first.
        for (level, tables) in levels.iter().enumerate() {
            if level == 0 {
                for t in tables {
                    if t.smallest.as_ref() <= key && key <= t.largest.as_ref() {
                        if let Some(entry) = self.get(t.id, key, hash, cache)? {
                            return Ok(Some(entry));
                        }
                    }
                }
            } else {
                let i = tables.partition_point(|t| t.largest.as_ref() < key);
                if let Some(t) = tables.get(i).filter(|t| t.smallest.as_ref() <= key) {
                    if let Some(entry) = self.get(t.id, key, hash, cache)? {
                        return Ok(Some(entry));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Forgets everything cached about table `id` (it was deleted).
    pub(crate) fn evict_table(&mut self, id: u64) {
        self.readers.remove(&id);
        self.blocks.retain(|(table, _)| *table != id);
        self.recent.retain(|((table, _), _)| *table != id);
        self.lend_block_share();
    }

    /// Cache statistics: (block hits, block misses, block bytes, index bytes).
    pub(crate) fn cache_stats(&self) -> (u64, u64, usize, usize) {
        (
            self.blocks.hits,
            self.blocks.misses,
            self.blocks.used_bytes(),
            self.readers.used_bytes(),
        )
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
            self.pos = block.lower_bound(k);
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
    pub(crate) fn current(&self) -> Option<(&[u8], &Entry)> {
        let block = self.block.as_ref()?;
        (self.pos < block.len()).then(|| (block.key(self.pos), block.entry(self.pos)))
    }

    /// The current key as a slice of its block's buffer (no copy), if the run is not exhausted.
    pub(crate) fn current_key_bytes(&self) -> Option<Bytes> {
        let block = self.block.as_ref()?;
        (self.pos < block.len()).then(|| block.key_bytes(self.pos))
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

    #[test]
    fn indexes_borrow_the_block_share_and_give_it_back() {
        let limits = DecodeLimits {
            key_bytes_max: 64,
            value_bytes_max: 4096,
            block_bytes_max: 1 << 20,
        };
        // An index share too small for one table's index and filter.
        let mut store = TableStore::new(SimFs::seeded(2), limits, 16, 1 << 16);
        for id in [7, 8] {
            let mut b = TableBuilder::create(&mut store.fs, id, 64, 10, false).expect("create");
            for i in 0..200u32 {
                let key = format!("key{i:05}");
                let value = Entry::Inline(Bytes::from_static(b"table value"));
                b.add(&mut store.fs, key.as_bytes(), &value).expect("add");
            }
            b.finish(&mut store.fs).expect("finish");
        }
        let seven = store.reader(7).expect("reader");
        let eight = store.reader(8).expect("reader");
        // Both stay cached past their share: the block cache lent them its room.
        assert!(Arc::ptr_eq(&seven, &store.reader(7).expect("cached")));
        assert!(Arc::ptr_eq(&eight, &store.reader(8).expect("cached")));
        let borrowed = store.readers.used_bytes() - 16;
        assert!(borrowed > 0);
        assert_eq!(store.blocks.capacity_bytes(), (1 << 16) - borrowed);
        // A block read fits in what is left, and a dropped table gives its room back.
        store.block(7, &seven, 0, true).expect("block");
        assert!(store.blocks.used_bytes() > 0);
        assert!(store.blocks.used_bytes() <= store.blocks.capacity_bytes());
        store.evict_table(7);
        store.evict_table(8);
        assert_eq!(store.readers.used_bytes(), 0);
        assert_eq!(store.blocks.capacity_bytes(), 1 << 16);
    }
}
