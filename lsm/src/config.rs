//! Engine configuration: every limit has its unit last in its name, and `validate` checks them all
//! before an engine is built (STYLE.md section 3).

use crate::error::LsmError;
use crate::table::DecodeLimits;

/// Configuration of an [`crate::Lsm`] engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsmConfig {
    /// Longest key accepted (keys are about 100 bytes in ringkv).
    pub key_bytes_max: usize,
    /// Longest value accepted; longer values are refused with `ValueTooLarge`.
    pub value_bytes_max: usize,
    /// The memtable is frozen and flushed to a level-0 table once it holds this many bytes (a
    /// new one fills meanwhile: up to twice this is held while a flush job runs).
    pub memtable_bytes_max: usize,
    /// WAL records are buffered in memory up to this many bytes before being written (a `sync`
    /// always writes and fsyncs the buffer).
    pub wal_buffer_bytes: usize,
    /// Zeros appended ahead of the WAL's records whenever a write reaches the end of its file,
    /// so that most syncs write over zeros already on disk and leave the file's size (and its
    /// inode) alone: a faster fsync (`wal.rs`, "Preallocation"). 0 (the default) turns it off;
    /// it doubles the bytes written to WAL files, which only synced writes gain from.
    pub wal_preallocate_bytes: u64,
    /// Target uncompressed size of a data block.
    pub block_bytes: usize,
    /// Bloom filter bits per key (about 1% false positives at 10).
    pub bloom_bits_per_key: usize,
    /// Compress data blocks with LZ4.
    pub compression: bool,
    /// Values longer than this go to the value log; the tree keeps a pointer (WiscKey).
    pub value_separation_threshold_bytes: usize,
    /// A value-log segment is sealed and a new one started past this size.
    pub vlog_segment_bytes_max: u64,
    /// A sealed segment is garbage-collected once this percentage of it is known garbage.
    pub vlog_gc_garbage_percent_min: u64,
    /// Compaction cuts output tables at about this size.
    pub table_bytes_target: u64,
    /// Level 0 is compacted into level 1 at this many tables.
    pub level0_compaction_tables: usize,
    /// Writes report `Stalled` while level 0 holds this many tables and the memtable is full.
    pub level0_stall_tables: usize,
    /// Size target of level 1; each deeper level is `level_size_multiplier` times larger.
    pub level1_bytes_max: u64,
    /// Growth factor between levels.
    pub level_size_multiplier: u64,
    /// Number of levels (including level 0).
    pub levels: usize,
    /// A tombstone is dropped at the last level only once it is this old (anti-entropy must have
    /// had the time to spread the delete; PITFALLS, "deleted data comes back").
    pub tombstone_grace_ms: u64,
    /// Bound of the data-block cache.
    pub block_cache_bytes: usize,
    /// The share of table indexes and bloom filters; past it they borrow the block cache's
    /// (which shrinks to make room), so they stay cached at large data sets (`store.rs`).
    pub index_cache_bytes: usize,
    /// Bound of the row cache: whole values by key, written through by puts and filled by
    /// reads (`row_cache.rs`); 0 (the default) turns it off. Written values stay alive past
    /// their memtable while cached, which a CPU-bound bulk load pays for (benches/README.md).
    pub row_cache_bytes: usize,
}

impl Default for LsmConfig {
    fn default() -> Self {
        LsmConfig {
            key_bytes_max: 4096,
            value_bytes_max: 1 << 20,
            memtable_bytes_max: 16 << 20,
            wal_buffer_bytes: 256 << 10,
            wal_preallocate_bytes: 0,
            block_bytes: 4096,
            bloom_bits_per_key: 10,
            compression: true,
            value_separation_threshold_bytes: 1024,
            vlog_segment_bytes_max: 128 << 20,
            vlog_gc_garbage_percent_min: 50,
            table_bytes_target: 8 << 20,
            level0_compaction_tables: 4,
            level0_stall_tables: 16,
            level1_bytes_max: 64 << 20,
            level_size_multiplier: 10,
            levels: 7,
            tombstone_grace_ms: 10 * 24 * 3600 * 1000,
            block_cache_bytes: 64 << 20,
            index_cache_bytes: 16 << 20,
            row_cache_bytes: 0,
        }
    }
}

impl LsmConfig {
    /// A configuration with tiny limits, so that small tests flush, compact, rotate and collect
    /// value-log segments often.
    pub fn tiny_for_tests() -> Self {
        LsmConfig {
            key_bytes_max: 256,
            value_bytes_max: 64 << 10,
            memtable_bytes_max: 4 << 10,
            wal_buffer_bytes: 512,
            // Not a multiple of a sector, and smaller than some batches: writes straddle the end
            // of the zeros often.
            wal_preallocate_bytes: 700,
            block_bytes: 256,
            value_separation_threshold_bytes: 48,
            vlog_segment_bytes_max: 8 << 10,
            vlog_gc_garbage_percent_min: 30,
            table_bytes_target: 4 << 10,
            level0_compaction_tables: 3,
            level0_stall_tables: 6,
            level1_bytes_max: 12 << 10,
            level_size_multiplier: 4,
            levels: 4,
            tombstone_grace_ms: 1000,
            block_cache_bytes: 16 << 10,
            index_cache_bytes: 8 << 10,
            row_cache_bytes: 4 << 10,
            ..LsmConfig::default()
        }
    }

    /// Bytes of disk the engine holds in reserve (`health.rs`, "Out of disk space"): released
    /// when a write meets a full disk, so that the writes already staged (at most the WAL buffer
    /// and a seal) can still be written and synced, and recovery at open has room. Twice the
    /// WAL buffer plus 1 MiB for the seal, a sync marker, a manifest and file-system metadata.
    pub fn space_reserve_bytes(&self) -> u64 {
        (2 * self.wal_buffer_bytes as u64) + (1 << 20)
    }

    /// Checks every limit; an engine is only built from a valid configuration.
    pub fn validate(&self) -> Result<(), LsmError> {
        let fail = |why: &str| Err(LsmError::InvalidConfig(why.to_string()));
        if self.key_bytes_max == 0 || self.key_bytes_max > (1 << 20) {
            return fail("key_bytes_max must be in 1..=1 MiB");
        }
        if self.value_bytes_max == 0 || self.value_bytes_max > (256 << 20) {
            return fail("value_bytes_max must be in 1..=256 MiB");
        }
        if self.memtable_bytes_max < 1024 {
            return fail("memtable_bytes_max must be at least 1 KiB");
        }
        if self.wal_preallocate_bytes > (256 << 20) {
            return fail("wal_preallocate_bytes must be at most 256 MiB");
        }
        if self.block_bytes < 64 || self.block_bytes > (4 << 20) {
            return fail("block_bytes must be in 64..=4 MiB");
        }
        if self.bloom_bits_per_key == 0 || self.bloom_bits_per_key > 40 {
            return fail("bloom_bits_per_key must be in 1..=40");
        }
        if self.vlog_segment_bytes_max < 1024 {
            return fail("vlog_segment_bytes_max must be at least 1 KiB");
        }
        if self.vlog_gc_garbage_percent_min == 0 || self.vlog_gc_garbage_percent_min > 100 {
            return fail("vlog_gc_garbage_percent_min must be in 1..=100");
        }
        if self.table_bytes_target < 1024 {
            return fail("table_bytes_target must be at least 1 KiB");
        }
        if self.level0_compaction_tables < 2
            || self.level0_stall_tables <= self.level0_compaction_tables
        {
            return fail("need 2 <= level0_compaction_tables < level0_stall_tables");
        }
        if self.level_size_multiplier < 2 || self.levels < 2 || self.levels > 16 {
            return fail("need level_size_multiplier >= 2 and levels in 2..=16");
        }
        if self.level1_bytes_max < self.table_bytes_target {
            return fail("level1_bytes_max must be at least table_bytes_target");
        }
        Ok(())
    }

    /// Refuses an empty key or one longer than `key_bytes_max`.
    pub(crate) fn check_key(&self, key: &[u8]) -> Result<(), LsmError> {
        if key.is_empty() || key.len() > self.key_bytes_max {
            return Err(LsmError::InvalidKey {
                len: key.len(),
                max: self.key_bytes_max,
            });
        }
        Ok(())
    }

    /// Refuses a value longer than `value_bytes_max`.
    pub(crate) fn check_value(&self, value: &[u8]) -> Result<(), LsmError> {
        if value.len() > self.value_bytes_max {
            return Err(LsmError::ValueTooLarge {
                len: value.len(),
                max: self.value_bytes_max,
            });
        }
        Ok(())
    }

    /// What table decoding accepts: keys, values and blocks within these limits.
    pub(crate) fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            key_bytes_max: self.key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            block_bytes_max: self.block_bytes_max(),
        }
    }

    /// The largest payload of a WAL record or value-log frame: a key, a value and framing.
    pub(crate) fn frame_payload_bytes_max(&self) -> usize {
        self.key_bytes_max + self.value_bytes_max + 64
    }

    /// Size target of `level` (level >= 1).
    pub(crate) fn level_bytes_max(&self, level: usize) -> u64 {
        let mut bytes = self.level1_bytes_max;
        for _ in 1..level {
            bytes = bytes.saturating_mul(self.level_size_multiplier);
        }
        bytes
    }

    /// The largest block (uncompressed), index or filter the decoder accepts.
    pub(crate) fn block_bytes_max(&self) -> usize {
        // A block is cut once it reaches block_bytes, so it exceeds it by at most one entry; an
        // index or a filter grows with the table, bounded by memtable and table size.
        (self.block_bytes
            + self.key_bytes_max
            + self
                .value_separation_threshold_bytes
                .max(self.value_bytes_max)
            + 64)
            .max(self.memtable_bytes_max * 2)
            .max(64 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_tiny_are_valid() {
        assert_eq!(LsmConfig::default().validate(), Ok(()));
        assert_eq!(LsmConfig::tiny_for_tests().validate(), Ok(()));
        let bad = LsmConfig {
            level0_stall_tables: 2,
            ..LsmConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
