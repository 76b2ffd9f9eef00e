//! Flush: the frozen memtable becomes a level-0 table. Its large values go to the value log
//! first (in key order, in large appends, fsynced before the table that points at them), then
//! the table, a new WAL and the manifest naming both are written; the old WAL goes last. On a
//! full disk the attempt is undone (`health.rs`, "Out of disk space"): the value log cut back to
//! its trusted length, the files the attempt created removed, the memtable thawed.

use crate::config::LsmConfig;
use crate::entry::{Entry, ValuePointer};
use crate::error::LsmError;
use crate::faults::buggify;
use crate::fs::FileSystem;
use crate::health::Health;
use crate::manifest::{self, ManifestState};
use crate::memtable::{MemEntry, MemTable};
use crate::outcome::LsmStats;
use crate::table::{table_file_name, TableBuilder};
use crate::vlog::ValueLog;
use crate::wal::{wal_file_name, Wal};
use bytes::Bytes;

/// The components a flush works on, borrowed from the engine.
pub(crate) struct Flush<'a, F: FileSystem> {
    pub(crate) fs: &'a mut F,
    pub(crate) state: &'a mut ManifestState,
    pub(crate) mem: &'a mut MemTable,
    pub(crate) wal: &'a mut Wal,
    pub(crate) vlog: &'a mut ValueLog,
    pub(crate) health: &'a mut Health,
    pub(crate) stats: &'a mut LsmStats,
    pub(crate) config: &'a LsmConfig,
    /// The last staged write: every record in the memtable, and so in the new table.
    pub(crate) last_seq: u64,
}

impl<F: FileSystem> Flush<'_, F> {
    /// Flushes the memtable (nothing to do if it is empty); on a full disk, undoes the attempt
    /// and returns `NoSpace` with the memtable and the WAL as they were.
    pub(crate) fn run(mut self) -> Result<(), LsmError> {
        if self.mem.is_empty() {
            return Ok(());
        }
        let first_new_id = self.state.next_file_id;
        let wal_id = self.wal.id();
        self.mem.freeze();
        let r = self.write_frozen();
        if r.is_err() {
            self.mem.thaw();
        }
        if r.as_ref().is_err_and(LsmError::is_no_space) && self.state.wal_id == wal_id {
            self.undo(first_new_id)?;
        }
        r
    }

    /// Undoes a flush that failed before its manifest was stored: the value log back to its
    /// trusted length (frames appended before a segment rotation stay in the sealed segment as
    /// unreferenced bytes), files created since `first_new_id` (a partial table, the next WAL)
    /// removed, the reserve released.
    fn undo(&mut self, first_new_id: u64) -> Result<(), LsmError> {
        let trusted = self.state.vlog_active_trusted_len;
        self.vlog.cut_back(self.fs, trusted)?;
        if let Some(s) = self.state.segments.get_mut(&self.state.vlog_active) {
            s.size_bytes = trusted;
        }
        for id in first_new_id..self.state.next_file_id {
            if self.state.segments.contains_key(&id) {
                continue;
            }
            for name in [table_file_name(id), wal_file_name(id)] {
                if self.fs.exists(&name)? {
                    self.fs.remove(&name)?;
                }
            }
        }
        self.health.release_space_reserve(self.fs)
    }

    fn write_frozen(&mut self) -> Result<(), LsmError> {
        let pointers = self.separate_values()?;
        self.vlog.write_buffer(self.fs)?;
        // Tables point into the value log: its bytes must be durable before the table is.
        self.vlog.fsync_if_unsynced(self.fs)?;
        let id = self.state.take_file_id();
        let c = self.config;
        let mut builder = TableBuilder::create(
            self.fs,
            id,
            c.block_bytes,
            c.bloom_bits_per_key,
            c.compression,
        )?;
        let mut pointers = pointers.into_iter();
        for (key, mem) in self.mem.frozen() {
            let entry = match mem {
                MemEntry::Inline(v) => Entry::Inline(v.clone()),
                MemEntry::Tombstone(ms) => Entry::Tombstone { deleted_at_ms: *ms },
                MemEntry::Pending { .. } => match pointers.next() {
                    Some(p) => Entry::Pointer(p),
                    None => {
                        let name = table_file_name(id);
                        return Err(LsmError::corrupt(&name, "flush lost a value pointer"));
                    }
                },
            };
            builder.add(self.fs, key, &entry)?;
        }
        let meta = builder.finish(self.fs)?;
        self.stats.flush_bytes += meta.size_bytes;
        let old_wal = self.state.wal_id;
        let new_wal = self.state.take_file_id();
        self.fs.create(&wal_file_name(new_wal))?;
        self.fs.fsync_dir()?;
        let mut next = self.state.clone();
        next.levels[0].insert(0, meta);
        next.wal_id = new_wal;
        next.last_seq = self.last_seq;
        next.vlog_active_trusted_len = self.vlog.active_len();
        manifest::store(self.fs, &next)?;
        *self.state = next;
        // The frozen records and the old WAL's buffered ones are all in the table now.
        self.mem.release_frozen();
        self.wal.restart(new_wal);
        self.fs.remove(&wal_file_name(old_wal))?;
        self.stats.flushes += 1;
        Ok(())
    }

    /// Stages the frozen memtable's large values in the value log, rotating segments as they
    /// fill, and returns their pointers in key order.
    fn separate_values(&mut self) -> Result<Vec<ValuePointer>, LsmError> {
        let pending: Vec<(Bytes, Bytes, u64)> = self
            .mem
            .frozen()
            .filter_map(|(k, m)| match m {
                MemEntry::Pending { value, seq } => Some((k.clone(), value.clone(), *seq)),
                _ => None,
            })
            .collect();
        let mut pointers = Vec::with_capacity(pending.len());
        for (key, value, seq) in &pending {
            let frame_len = ValueLog::frame_len(key, value);
            let full = (self.vlog).must_rotate(frame_len, self.config.vlog_segment_bytes_max);
            // Sealing a non-empty segment early is legal, and makes more to collect (BUGGIFY).
            let early = !full
                && self.vlog.active_len() > 0
                && buggify!(&mut *self.fs, "lsm/vlog-rotate-early");
            if full || early {
                self.vlog.rotate(self.fs, self.state)?;
            }
            let p = self.vlog.stage(self.fs, *seq, key, value)?;
            if let Some(s) = self.state.segments.get_mut(&p.segment) {
                s.size_bytes = self.vlog.active_len();
            }
            pointers.push(p);
        }
        Ok(pointers)
    }
}
