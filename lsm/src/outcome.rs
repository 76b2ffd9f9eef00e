//! What the engine's operations report: outcomes of writes, compaction and value-log collection
//! steps, checkpoints, and the counters of write amplification and cache behaviour. Plain values,
//! shared by the engine and its components.

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Staged with this sequence number: visible now, durable after the next `sync`.
    Written {
        /// The write's sequence number.
        seq: u64,
    },
    /// Not written: the memtable is full and level 0 holds `level0_stall_tables` tables. Bounded
    /// back-pressure: the caller runs `compact_step` (or waits) and retries.
    Stalled {
        /// Tables in level 0.
        level0_tables: usize,
    },
}

/// What one `flush_step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushProgress {
    /// No flush is under way.
    Idle,
    /// Part of the frozen memtable was written; call again.
    InProgress,
    /// Every file is written; their fsync runs away from the engine (`take_flush_fsync`, then
    /// `flush_fsynced`), or is still out.
    AwaitingFsync,
    /// The table is installed.
    Installed,
}

/// What one `compact_step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionProgress {
    /// No level is over its target.
    Idle,
    /// A compaction is under way; call again.
    InProgress {
        /// Entry bytes merged by this step.
        processed_bytes: u64,
    },
    /// A compaction finished and its result is installed.
    Finished {
        /// The level compacted from.
        level: usize,
        /// Tables written.
        output_tables: usize,
    },
    /// A table was moved down a level without rewriting it.
    Moved {
        /// The level it left.
        level: usize,
    },
}

/// What one step of value-log collection (`collect_value_log_step`, `gc_value_log_step`) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcOutcome {
    /// No sealed segment holds enough garbage.
    Idle,
    /// A collection is under way: its next step is owed.
    InProgress {
        /// The segment being collected.
        segment: u64,
    },
    /// A segment was rewritten and removed.
    Collected {
        /// The removed segment.
        segment: u64,
        /// Bytes of live values copied forward.
        live_bytes: u64,
        /// Size of the removed segment.
        segment_bytes: u64,
    },
}

/// What [`crate::Lsm::checkpoint`] linked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The sequence number of the last write the checkpoint holds.
    pub last_seq: u64,
    /// Tables linked.
    pub tables: usize,
    /// Sealed value-log segments linked.
    pub segments: usize,
    /// Bytes of the linked files (shared with the live store, not copied, on real disks).
    pub bytes: u64,
}

/// Counters for write amplification and cache behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmStats {
    /// Key and value bytes the user asked to write.
    pub user_bytes: u64,
    /// Bytes appended to WAL files.
    pub wal_bytes: u64,
    /// Bytes appended to the value log (user writes and GC rewrites).
    pub vlog_bytes: u64,
    /// Bytes of tables written by flushes.
    pub flush_bytes: u64,
    /// Bytes of tables written by compactions.
    pub compaction_bytes: u64,
    /// Memtable flushes.
    pub flushes: u64,
    /// Compactions finished (trivial moves included).
    pub compactions: u64,
    /// Value-log segments collected.
    pub gc_segments: u64,
    /// Writes refused with `Stalled`.
    pub stalls: u64,
    /// Writes that filled the memtable while a flush job was still under way, and waited for
    /// it to finish in place (its steps came too slowly).
    pub flush_stalls: u64,
    /// Writes refused because the disk was full (`health.rs`, "Out of disk space").
    pub no_space_refusals: u64,
    /// Block-cache hits.
    pub block_cache_hits: u64,
    /// Block-cache misses.
    pub block_cache_misses: u64,
    /// Reads the row cache answered.
    pub row_cache_hits: u64,
    /// Reads the row cache could not answer (the full lookup ran).
    pub row_cache_misses: u64,
    /// Bytes the row cache holds (rows charged with their overhead).
    pub row_cache_bytes: u64,
}

impl LsmStats {
    /// Bytes written to disk per user byte.
    pub fn write_amplification(&self) -> f64 {
        let disk = self.wal_bytes + self.vlog_bytes + self.flush_bytes + self.compaction_bytes;
        disk as f64 / self.user_bytes.max(1) as f64
    }
}
