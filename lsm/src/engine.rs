//! The engine: write path (value log, WAL, memtable), flush, incremental leveled compaction,
//! value-log garbage collection, reads, range scans and recovery.
//!
//! # Out of disk space
//! A full disk is not a failed fsync, and the engine treats the two differently (issue 17, item
//! 6). A failed fsync poisons for good (PITFALLS: fsyncgate), including an fsync that reports
//! the disk full. A *write* refused with `NoSpace` before any fsync leaves the engine
//! consistent, provided nothing stays behind that a later write would strand:
//! * **WAL:** a short append may leave part of a record in the file. The file is cut back to
//!   the end of the last complete append (`wal_len`), so records appended later follow
//!   complete ones, never garbage that recovery would stop at. The refused write is taken back
//!   out of the WAL buffer (with the sync marker and batch seal state it changed) and is not put
//!   in the memtable: it had no effect, and is refused with the `NoSpace` error
//!   ([`LsmError::is_no_space`]). Writes staged before it stay buffered and are written by the
//!   next sync.
//! * **Flush, compaction, value-log collection:** a failure before the manifest is replaced
//!   undoes the attempt: the value log is cut back to its trusted length, partial tables and a
//!   new WAL are removed, the in-memory manifest state is untouched (every change is made on a
//!   copy that replaces it only once stored). The memtable is kept and the flush is tried
//!   again by a later write; the engine is not poisoned.
//!
//! **Why a reserve file, not a free-space check.** The engine holds a reserve of
//! [`LsmConfig::space_reserve_bytes`] outside its own files ([`FileSystem::reserve_space`]; a
//! zero-filled `space.reserve` on real disks). When a write meets a full disk, the reserve is
//! released, so the writes already staged can still be written and synced (a sync needs at most
//! the WAL buffer and a seal), and the engine is *short of space*: every put and delete first
//! tries to take the reserve back, and is refused with `NoSpace` until it can. Writes are thus
//! accepted again as soon as space comes back, with no restart and no timer. Opening releases
//! the reserve first, so recovery (which writes at most a sync marker and small cuts) never
//! needs more space than the reserve held; a start on a disk with less free space than a
//! reserve opens short of space, serving reads and refusing writes. A free-space check
//! (`statvfs`) would need a system call outside the file-system seam, would race with other
//! writers of the disk, and would say nothing the simulated disk could be made to say; the
//! reserve is held space that nothing else can take.

use crate::bloom;
use crate::bytes_io::{Cursor, PutBytes};
use crate::cache::LruCache;
use crate::compaction::{self, CompactionPlan};
use crate::config::LsmConfig;
use crate::entry::{decode_keyed, encode_keyed, Entry, ValuePointer};
use crate::error::LsmError;
use crate::frame::{
    decode_frame, encode_frame, encode_sync_marker, scan_log, scan_wal, CutCause, WalCut,
    FRAME_HEADER_BYTES,
};
use crate::fs::{DetachedFsync, FileSystem, FsError, FsErrorKind};
use crate::manifest::{
    self, ManifestState, SegmentMeta, MANIFEST_FILE, MANIFEST_FORMAT_VERSION, MANIFEST_TMP_FILE,
};
use crate::recovery::{RecoveryReport, WalTruncation, WalTruncationCause};
use crate::seal::{seal_portions_max, BatchSealer};
use crate::store::{RunCursor, TableStore};
use crate::table::{table_file_name, DecodeLimits, TableBuilder, TableMeta};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// The name of WAL file `id`.
pub(crate) fn wal_file_name(id: u64) -> String {
    format!("{id:06}.wal")
}

/// The name of value-log segment `id`.
pub(crate) fn vlog_file_name(id: u64) -> String {
    format!("{id:06}.vlog")
}

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

/// What one `gc_value_log_step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcOutcome {
    /// No sealed segment holds enough garbage.
    Idle,
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

/// What fsyncs have made durable of the live WAL, shared with detached fsyncs (which finish away
/// from the engine): the source of the claims of the WAL's sync markers (FORMAT.md).
#[derive(Debug, Default)]
struct WalProgress {
    wal_id: u64,
    /// Bytes of WAL `wal_id` known fsynced.
    durable: u64,
    /// A detached fsync failed: nothing is learned from later ones (fsyncgate; the engine is
    /// poisoned by `sync_finish` anyway).
    failed: bool,
}

fn lock_progress(p: &Mutex<WalProgress>) -> std::sync::MutexGuard<'_, WalProgress> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A sync in progress, from [`Lsm::sync_begin`]: run [`SyncTicket::fsync`] (outside any lock),
/// then hand its result to [`Lsm::sync_finish`].
pub struct SyncTicket {
    covers_seq: u64,
    fsync: Option<DetachedFsync>,
}

impl SyncTicket {
    /// Every write with a sequence number up to this one is durable once the sync finishes.
    pub fn covers_seq(&self) -> u64 {
        self.covers_seq
    }

    /// Runs the fsync (a no-op if it was already done in place, or nothing needed it).
    pub fn fsync(&mut self) -> Result<(), FsError> {
        match self.fsync.take() {
            Some(fsync) => fsync(),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for SyncTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncTicket")
            .field("covers_seq", &self.covers_seq)
            .field("detached", &self.fsync.is_some())
            .finish()
    }
}

/// What [`Lsm::checkpoint`] linked.
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
    /// Writes refused because the disk was full (engine module docs, "Out of disk space").
    pub no_space_refusals: u64,
    /// Block-cache hits.
    pub block_cache_hits: u64,
    /// Block-cache misses.
    pub block_cache_misses: u64,
}

impl LsmStats {
    /// Bytes written to disk per user byte.
    pub fn write_amplification(&self) -> f64 {
        let disk = self.wal_bytes + self.vlog_bytes + self.flush_bytes + self.compaction_bytes;
        disk as f64 / self.user_bytes.max(1) as f64
    }
}

/// Bytes buffered in memory before value-log frames are written out during a flush.
const VLOG_BUFFER_BYTES: usize = 1 << 20;

/// A memtable entry. Large values are separated *at flush* (deferred WiscKey): until then they
/// live in the WAL record and here, so a synced write costs one fsync (the WAL's) and the value
/// log is written in large sequential appends, never per write.
#[derive(Clone, Debug)]
enum MemEntry {
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
    fn to_resolved_entry(&self) -> Entry {
        match self {
            MemEntry::Inline(v) | MemEntry::Pending { value: v, .. } => Entry::Inline(v.clone()),
            MemEntry::Tombstone(ms) => Entry::Tombstone { deleted_at_ms: *ms },
        }
    }

    fn size_bytes(&self, key: &[u8]) -> usize {
        key.len()
            + 48
            + match self {
                MemEntry::Inline(v) | MemEntry::Pending { value: v, .. } => v.len(),
                MemEntry::Tombstone(_) => 0,
            }
    }
}

#[derive(Debug)]
struct CompactionJob {
    plan: CompactionPlan,
    sources: Vec<RunCursor>,
    builder: Option<TableBuilder>,
    outputs: Vec<TableMeta>,
    garbage: Vec<ValuePointer>,
}

/// Since when (wall-clock ms) a stored value has been dead for every reader, as its owner
/// decodes it: `None` while it may be read. Compaction drops an inline value at the last level
/// once it has been dead for `tombstone_grace_ms`, as it drops a tombstone. Values separated into
/// the value log are not decoded (it would cost a read each) and stay until overwritten.
pub type DeadSince = fn(&[u8]) -> Option<u64>;

/// The LSM engine over a [`FileSystem`]. Single-threaded and deterministic: time (for tombstone
/// expiry) is an argument, there are no threads and no clocks.
///
/// Durability contract: `put`/`delete` stage a write (visible at once); `sync` makes every write
/// staged before it durable with one fsync of the WAL, which holds the values too (group
/// commit; large values reach the value log at flush, fsynced before the table pointing at
/// them). A failed fsync poisons the engine: writes fail with `Poisoned`, reads go on.
#[derive(Debug)]
pub struct Lsm<F: FileSystem> {
    /// How compaction tells that an inline value is dead (see [`DeadSince`]); `None`: values are
    /// opaque and only tombstones are ever dropped.
    dead_since: Option<DeadSince>,
    store: TableStore<F>,
    config: LsmConfig,
    /// The installed (manifest) state; `state.last_seq` is the last sequence held in tables.
    state: ManifestState,
    memtable: BTreeMap<Bytes, MemEntry>,
    memtable_bytes: usize,
    wal_buffer: Vec<u8>,
    wal_len: u64,
    wal_unsynced: bool,
    /// Bytes of the live WAL known fsynced (in place; detached fsyncs report through
    /// `wal_progress`).
    wal_durable: u64,
    /// The claim of the last sync marker staged in the live WAL: the next write stages a new
    /// marker first when `wal_durable` has passed it.
    wal_marked: u64,
    wal_progress: Arc<Mutex<WalProgress>>,
    /// Seals the batch being appended to the WAL before it is handed to an fsync (`seal.rs`).
    wal_sealer: BatchSealer,
    /// What recovery at open did (a WAL cut, and whether it is suspect).
    recovery: RecoveryReport,
    /// Length of the active value-log segment, including `vlog_buffer`.
    vlog_active_len: u64,
    /// Value-log frames staged by a flush and not yet appended to the active segment.
    vlog_buffer: Vec<u8>,
    vlog_unsynced: bool,
    last_seq: u64,
    job: Option<CompactionJob>,
    /// Recently read separated values, by (segment, offset), bounded in bytes (a quarter of the
    /// block-cache budget): a hot value is served without a read and a checksum of its frame.
    value_cache: LruCache<(u64, u64), Bytes>,
    cursors: Vec<Bytes>,
    poisoned: Option<String>,
    /// The disk filled up and the space reserve is released: writes are refused until it can be
    /// taken back (module docs, "Out of disk space").
    space_short: bool,
    stats: LsmStats,
}

impl<F: FileSystem> Lsm<F> {
    /// Opens (or creates) the store in `fs`, recovering from the manifest, the value log and the
    /// WAL: a torn or holey unsynced tail is truncated (with every frame after it), a bad record
    /// in the part the WAL's sync markers say was fsynced is reported as `Corrupt` naming the
    /// file (FORMAT.md, "WAL recovery").
    pub fn open(mut fs: F, config: LsmConfig) -> Result<Self, LsmError> {
        config.validate()?;
        // Recovery must never need more space than the reserve holds (module docs).
        fs.release_space()?;
        let limits = DecodeLimits {
            key_bytes_max: config.key_bytes_max,
            value_bytes_max: config.value_bytes_max,
            block_bytes_max: config.block_bytes_max(),
        };
        let mut state = match manifest::load(&mut fs, config.key_bytes_max)? {
            Some(state) => state,
            None => create_store(&mut fs, &config)?,
        };
        while state.levels.len() < config.levels {
            state.levels.push(Vec::new());
        }
        remove_orphans(&mut fs, &state)?;
        let value_cache = LruCache::new(config.block_cache_bytes / 4);
        let mut engine = Lsm {
            store: TableStore::new(
                fs,
                limits,
                config.index_cache_bytes,
                config.block_cache_bytes,
            ),
            cursors: vec![Bytes::new(); state.levels.len()],
            last_seq: state.last_seq,
            state,
            config,
            memtable: BTreeMap::new(),
            memtable_bytes: 0,
            wal_buffer: Vec::new(),
            wal_len: 0,
            wal_unsynced: false,
            wal_durable: 0,
            wal_marked: 0,
            wal_progress: Arc::default(),
            wal_sealer: BatchSealer::new(0),
            recovery: RecoveryReport::default(),
            vlog_active_len: 0,
            vlog_buffer: Vec::new(),
            vlog_unsynced: false,
            job: None,
            dead_since: None,
            value_cache,
            poisoned: None,
            space_short: true,
            stats: LsmStats::default(),
        };
        engine.recover()?;
        // Short of space (writes refused, reads served) if the reserve cannot be taken back.
        match engine.take_space_reserve() {
            Err(e) if !e.is_no_space() => return Err(e),
            _ => {}
        }
        engine.check_invariants();
        Ok(engine)
    }

    fn frame_payload_max(&self) -> usize {
        self.config.key_bytes_max + self.config.value_bytes_max + 64
    }

    fn recover(&mut self) -> Result<(), LsmError> {
        for level in &self.state.levels {
            for t in level {
                let name = table_file_name(t.id);
                if !self.store.fs.exists(&name)? {
                    return Err(LsmError::corrupt(&name, "table in the manifest is missing"));
                }
            }
        }
        // The active value-log segment is appended only by flushes, which fsync it before the
        // manifest records its new length: every byte a table points at lies below the trusted
        // length, and anything past it is the unreferenced tail of an interrupted flush.
        let active = self.state.vlog_active;
        let vname = vlog_file_name(active);
        if !self.state.segments.contains_key(&active) {
            return Err(LsmError::corrupt(
                MANIFEST_FILE,
                "active segment not listed",
            ));
        }
        let vlog_len = self.store.fs.len(&vname)?;
        let trusted = self.state.vlog_active_trusted_len;
        if vlog_len < trusted {
            return Err(LsmError::corrupt(&vname, "shorter than its durable length"));
        }

        let wname = wal_file_name(self.state.wal_id);
        let wal = self.store.fs.read_all(&wname)?;
        // Formats 2 and 3: sync markers tell a hole in the unsynced tail from corruption of synced
        // bytes, and (format 3) batch seals judge damage in the last synced batch (FORMAT.md).
        // Format 1 (no markers): a bad frame followed by a valid one is corruption.
        let legacy_wal = self.state.format_version < 2;
        let (frames, wal_valid_len, synced_through, cut) = if legacy_wal {
            let scan = scan_log(&wal, 0, self.frame_payload_max())
                .map_err(|why| LsmError::corrupt(&wname, why))?;
            let cut = (scan.valid_len < wal.len()).then_some(WalCut {
                offset: scan.valid_len,
                cause: CutCause::Unsealed,
            });
            (scan.frames, scan.valid_len, 0, cut)
        } else {
            let sealed = self.state.format_version >= 3;
            let scan = scan_wal(&wal, self.frame_payload_max(), sealed)
                .map_err(|why| LsmError::corrupt(&wname, why))?;
            (scan.frames, scan.valid_len, scan.synced_through, scan.cut)
        };
        self.recovery.wal_cut = cut.map(|cut| WalTruncation {
            file: wname.clone(),
            offset: cut.offset as u64,
            bytes_dropped: (wal.len() - cut.offset) as u64,
            cause: match cut.cause {
                CutCause::UnsyncedTail => WalTruncationCause::UnsyncedTail,
                CutCause::Ambiguous { portion_offset } => {
                    WalTruncationCause::PossiblyCorruptLastBatch { portion_offset }
                }
                CutCause::Unsealed => WalTruncationCause::Unverifiable,
            },
        });
        let mut expected_seq = self.state.last_seq + 1;
        for (offset, frame) in &frames {
            if frame.seq != expected_seq {
                return Err(LsmError::corrupt(
                    &wname,
                    format!(
                        "record at {offset} has sequence {} not {expected_seq}",
                        frame.seq
                    ),
                ));
            }
            let mut cursor = Cursor::new(frame.payload);
            let (key, entry) = decode_keyed(
                &mut cursor,
                self.config.key_bytes_max,
                self.config.value_bytes_max,
            )
            .map_err(|why| LsmError::corrupt(&wname, format!("record at {offset}: {why}")))?;
            let key = Bytes::copy_from_slice(key);
            let mem = match entry {
                Entry::Inline(v) if v.len() > self.config.value_separation_threshold_bytes => {
                    MemEntry::Pending {
                        value: v,
                        seq: frame.seq,
                    }
                }
                Entry::Inline(v) => MemEntry::Inline(v),
                Entry::Tombstone { deleted_at_ms } => MemEntry::Tombstone(deleted_at_ms),
                Entry::Pointer(_) => {
                    // Values are separated only at flush; a WAL record never points at the value
                    // log (its bytes might not be durable).
                    return Err(LsmError::corrupt(
                        &wname,
                        format!("record at {offset} holds a value-log pointer"),
                    ));
                }
            };
            self.memtable_insert(key, mem);
            expected_seq += 1;
        }
        self.last_seq = expected_seq - 1;
        if vlog_len > trusted {
            self.store.fs.truncate(&vname, trusted)?;
            self.store.fs.fsync(&vname)?;
        }
        if wal_valid_len < wal.len() {
            self.store.fs.truncate(&wname, wal_valid_len as u64)?;
        }
        // What was read back may sit in the page cache only (a process crash): fsync it before a
        // sync marker may claim it.
        if !wal.is_empty() {
            self.store.fs.fsync(&wname)?;
        }
        self.wal_len = wal_valid_len as u64;
        self.wal_sealer = BatchSealer::new(self.wal_len);
        self.wal_marked = synced_through;
        if !legacy_wal && synced_through < self.wal_len {
            // Claim the recovered records now, fsynced, rather than with the next write (which a
            // crash may lose): a bad frame among them is then below the claim, reported.
            // On a disk too full for even the marker (a restart after the reserve was spent),
            // start without it: the records are fsynced, and the next write stages the same
            // claim first (`wal_durable > wal_marked`); only a crash before that write leaves
            // them unclaimed, read again as an intact unsynced tail.
            let undo = (self.wal_sealer.clone(), self.wal_marked);
            encode_sync_marker(&mut self.wal_buffer, self.wal_len);
            self.wal_sealer.absorb(&self.wal_buffer);
            self.wal_marked = self.wal_len;
            match self.write_wal_buffer() {
                Ok(()) => self.store.fs.fsync(&wname)?,
                Err(e) if e.is_no_space() => {
                    self.cut_wal_to_written()?;
                    self.wal_buffer.clear();
                    (self.wal_sealer, self.wal_marked) = undo;
                }
                Err(e) => return Err(e),
            }
        }
        self.wal_durable = self.wal_len;
        *lock_progress(&self.wal_progress) = WalProgress {
            wal_id: self.state.wal_id,
            durable: self.wal_len,
            failed: false,
        };
        self.vlog_active_len = trusted;
        if let Some(s) = self.state.segments.get_mut(&active) {
            s.size_bytes = self.vlog_active_len;
        }
        if self.state.format_version < MANIFEST_FORMAT_VERSION {
            // Move an older store to the current format before anything is appended to its WAL.
            // Format 1 (no markers): flush the replayed records into a table (which starts a
            // fresh WAL and writes the manifest). Format 2, or no records: just rewrite the
            // manifest (a format-2 WAL is a valid format-3 one without seals).
            self.state.format_version = MANIFEST_FORMAT_VERSION;
            if legacy_wal && !self.memtable.is_empty() {
                self.flush_inner()?;
            } else {
                manifest::store(&mut self.store.fs, &self.state)?;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- writes

    /// Stages `key = value`. Visible at once, durable after the next successful [`Lsm::sync`].
    pub fn put(&mut self, key: Bytes, value: Bytes) -> Result<WriteOutcome, LsmError> {
        self.writable()?;
        self.check_key(&key)?;
        if value.len() > self.config.value_bytes_max {
            return Err(LsmError::ValueTooLarge {
                len: value.len(),
                max: self.config.value_bytes_max,
            });
        }
        self.take_space_reserve()?;
        if let Some(stalled) = self.make_room()? {
            return Ok(stalled);
        }
        let bytes = (key.len() + value.len()) as u64;
        let r = self.write(key, Some(value), 0);
        self.stats.user_bytes += if r.is_ok() { bytes } else { 0 };
        self.poison_unless_no_space(r)
            .map(|seq| WriteOutcome::Written { seq })
    }

    /// Stages a delete (a tombstone stamped with the wall-clock `now_ms`, which decides when it
    /// may be dropped: `tombstone_grace_ms`).
    pub fn delete(&mut self, key: Bytes, now_ms: u64) -> Result<WriteOutcome, LsmError> {
        self.writable()?;
        self.check_key(&key)?;
        self.take_space_reserve()?;
        if let Some(stalled) = self.make_room()? {
            return Ok(stalled);
        }
        let bytes = key.len() as u64;
        let r = self.write(key, None, now_ms);
        self.stats.user_bytes += if r.is_ok() { bytes } else { 0 };
        self.poison_unless_no_space(r)
            .map(|seq| WriteOutcome::Written { seq })
    }

    /// Makes every write staged so far durable: one fsync of the WAL, however many writes are
    /// covered (group commit). A failure poisons the engine
    /// for good and returns `Poisoned`; the fsync is never retried. The one exception: the disk
    /// was too full to *write* the buffered records even with the reserve released (nothing was
    /// fsynced, nothing is lost, the records stay buffered): `NoSpace` is returned as is.
    pub fn sync(&mut self) -> Result<(), LsmError> {
        self.writable()?;
        let r = self.sync_inner();
        if let Err(e) = r {
            if e.is_no_space() {
                return Err(e);
            }
            let why = format!("sync failed: {e}");
            self.poisoned = Some(why.clone());
            return Err(LsmError::Poisoned(why));
        }
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<(), LsmError> {
        self.write_vlog_buffer()?;
        if self.vlog_unsynced {
            self.store
                .fs
                .fsync(&vlog_file_name(self.state.vlog_active))?;
            self.vlog_unsynced = false;
        }
        // A batch handed to an fsync is always sealed (FORMAT.md, "WAL recovery").
        self.wal_sealer.seal(&mut self.wal_buffer);
        self.write_wal_buffer_for_sync()?;
        if self.wal_unsynced {
            self.store.fs.fsync(&wal_file_name(self.state.wal_id))?;
            self.wal_unsynced = false;
            self.wal_synced_through(self.wal_len);
        }
        Ok(())
    }

    /// Records that the first `len` bytes of the live WAL are durable: the next write stages a
    /// sync marker saying so.
    fn wal_synced_through(&mut self, len: u64) {
        self.wal_durable = self.wal_durable.max(len);
        let mut p = lock_progress(&self.wal_progress);
        if p.wal_id == self.state.wal_id {
            p.durable = p.durable.max(len);
        }
    }

    /// First half of a sync split in two, for a driver that shares the engine between writer
    /// threads behind a lock (group commit): under the lock, `sync_begin` writes the buffered WAL
    /// records and returns a ticket; the driver runs [`SyncTicket::fsync`] *outside* the lock,
    /// so that other writers stage their writes meanwhile; then, under the lock again,
    /// [`Lsm::sync_finish`] records the outcome. Once it returns `Ok`, every write with a
    /// sequence number up to [`SyncTicket::covers_seq`] is durable.
    ///
    /// Safe against anything that happens in between: later writes are not covered (and a plain
    /// [`Lsm::sync`] still fsyncs them, since the WAL stays marked unsynced); a flush makes the
    /// covered writes durable in a table and removes the WAL file, which the detached fsync can
    /// still sync harmlessly. On a file system that cannot detach an fsync the ticket's fsync
    /// is done here and the ticket's is a no-op.
    pub fn sync_begin(&mut self) -> Result<SyncTicket, LsmError> {
        self.writable()?;
        let r = self.sync_begin_inner();
        if let Err(e) = r {
            if e.is_no_space() {
                return Err(e);
            }
            let why = format!("sync failed: {e}");
            self.poisoned = Some(why.clone());
            return Err(LsmError::Poisoned(why));
        }
        r
    }

    fn sync_begin_inner(&mut self) -> Result<SyncTicket, LsmError> {
        let covers_seq = self.last_seq;
        if !self.wal_unsynced && !self.vlog_unsynced && self.vlog_buffer.is_empty() {
            return Ok(SyncTicket {
                covers_seq,
                fsync: None,
            });
        }
        self.write_vlog_buffer()?;
        if self.vlog_unsynced {
            // Values reach the value log only in flushes, which fsync it; kept for safety: a WAL
            // record must never be durable before what it depends on.
            self.store
                .fs
                .fsync(&vlog_file_name(self.state.vlog_active))?;
            self.vlog_unsynced = false;
        }
        self.wal_sealer.seal(&mut self.wal_buffer);
        self.write_wal_buffer_for_sync()?;
        let name = wal_file_name(self.state.wal_id);
        match self.store.fs.detached_fsync(&name)? {
            // `wal_unsynced` stays set: only a completed in-place fsync clears it.
            Some(fsync) => {
                // On success the fsync reports what it made durable (for the sync markers),
                // unless the WAL has been replaced meanwhile or another fsync failed.
                let progress = Arc::clone(&self.wal_progress);
                let (wal_id, len) = (self.state.wal_id, self.wal_len);
                let fsync: DetachedFsync = Box::new(move || {
                    let r = fsync();
                    let mut p = lock_progress(&progress);
                    if r.is_err() {
                        p.failed = true;
                    } else if p.wal_id == wal_id && !p.failed {
                        p.durable = p.durable.max(len);
                    }
                    r
                });
                Ok(SyncTicket {
                    covers_seq,
                    fsync: Some(fsync),
                })
            }
            None => {
                self.store.fs.fsync(&name)?;
                self.wal_unsynced = false;
                self.wal_synced_through(self.wal_len);
                Ok(SyncTicket {
                    covers_seq,
                    fsync: None,
                })
            }
        }
    }

    /// Second half of a split sync: `result` is what [`SyncTicket::fsync`] returned. A failure
    /// poisons the engine for good (the fsync is never retried) and returns `Poisoned`.
    pub fn sync_finish(&mut self, result: Result<(), FsError>) -> Result<(), LsmError> {
        if let Err(e) = result {
            let why = format!("sync failed: {e}");
            if self.poisoned.is_none() {
                self.poisoned = Some(why.clone());
            }
            return Err(LsmError::Poisoned(why));
        }
        let p = lock_progress(&self.wal_progress);
        if p.wal_id == self.state.wal_id && !p.failed {
            self.wal_durable = self.wal_durable.max(p.durable);
        }
        drop(p);
        self.writable()
    }

    /// Flushes the memtable to a level-0 table now (normally done when it is full).
    pub fn flush(&mut self) -> Result<(), LsmError> {
        self.writable()?;
        let r = self.flush_inner();
        self.poison_unless_no_space(r)
    }

    fn writable(&self) -> Result<(), LsmError> {
        match &self.poisoned {
            Some(why) => Err(LsmError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Like [`Lsm::poison_on_err`], except for a full disk met by a write (never by an fsync),
    /// which the failing step has already undone (module docs, "Out of disk space").
    fn poison_unless_no_space<T>(&mut self, r: Result<T, LsmError>) -> Result<T, LsmError> {
        match r {
            Err(e) if e.is_no_space() => Err(e),
            other => self.poison_on_err(other),
        }
    }

    /// The disk is full: releases the reserve, so that what is already staged can still be
    /// written and synced, and refuses writes until [`Lsm::take_space_reserve`] succeeds.
    fn release_space_reserve(&mut self) -> Result<(), LsmError> {
        self.space_short = true;
        self.store.fs.release_space()?;
        Ok(())
    }

    /// Takes the space reserve back if it was released; fails (with `NoSpace` while the disk is
    /// still full) if it cannot, and the write asking is refused before it touches anything.
    fn take_space_reserve(&mut self) -> Result<(), LsmError> {
        if !self.space_short {
            return Ok(());
        }
        match self
            .store
            .fs
            .reserve_space(self.config.space_reserve_bytes())
        {
            Ok(()) => {
                self.space_short = false;
                Ok(())
            }
            Err(e) => {
                self.stats.no_space_refusals += 1;
                Err(e.into())
            }
        }
    }

    /// Whether the engine is short of space: the disk filled up and writes are refused until
    /// the reserve can be taken back (module docs, "Out of disk space").
    pub fn space_short(&self) -> bool {
        self.space_short
    }

    fn poison_on_err<T>(&mut self, r: Result<T, LsmError>) -> Result<T, LsmError> {
        if let Err(e) = &r {
            if self.poisoned.is_none() {
                self.poisoned = Some(e.to_string());
            }
        }
        r
    }

    fn check_key(&self, key: &[u8]) -> Result<(), LsmError> {
        if key.is_empty() || key.len() > self.config.key_bytes_max {
            return Err(LsmError::InvalidKey {
                len: key.len(),
                max: self.config.key_bytes_max,
            });
        }
        Ok(())
    }

    /// Flushes a full memtable, or reports a stall when level 0 is too deep to take another table.
    fn make_room(&mut self) -> Result<Option<WriteOutcome>, LsmError> {
        if self.memtable_bytes < self.config.memtable_bytes_max {
            return Ok(None);
        }
        let level0_tables = self.state.levels[0].len();
        if level0_tables >= self.config.level0_stall_tables {
            self.stats.stalls += 1;
            return Ok(Some(WriteOutcome::Stalled { level0_tables }));
        }
        let r = self.flush_inner();
        if r.as_ref().is_err_and(LsmError::is_no_space) {
            self.stats.no_space_refusals += 1;
        }
        self.poison_unless_no_space(r)?;
        Ok(None)
    }

    /// Appends the write (values of every size inline) to the WAL buffer, then the memtable.
    /// A full disk met while writing the buffer out is undone (the file cut back to its last
    /// complete append, this write taken out of the buffer) and returns `NoSpace`; any other
    /// failure must poison: a partial record followed by later ones would read as corruption.
    fn write(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        deleted_at_ms: u64,
    ) -> Result<u64, LsmError> {
        let seq = self.last_seq + 1;
        let (entry, mem) = match value {
            Some(v) if v.len() > self.config.value_separation_threshold_bytes => (
                Entry::Inline(v.clone()),
                MemEntry::Pending { value: v, seq },
            ),
            Some(v) => (Entry::Inline(v.clone()), MemEntry::Inline(v)),
            None => (
                Entry::Tombstone { deleted_at_ms },
                MemEntry::Tombstone(deleted_at_ms),
            ),
        };
        let mut payload = Vec::with_capacity(key.len() + entry.size_bytes() + 8);
        encode_keyed(&mut payload, &key, &entry);
        let staged_from = self.wal_buffer.len();
        // What this write changes before it is known to fit, to undo it on a full disk.
        let undo = (self.wal_marked, self.wal_sealer.clone(), self.wal_unsynced);
        if self.wal_durable > self.wal_marked {
            // Durable knowledge first: "the first `wal_durable` bytes were fsynced", true as
            // written, so recovery may trust it whether or not this marker is fsynced itself.
            encode_sync_marker(&mut self.wal_buffer, self.wal_durable);
            self.wal_marked = self.wal_durable;
        }
        encode_frame(&mut self.wal_buffer, seq, &payload);
        self.wal_sealer.absorb(&self.wal_buffer[staged_from..]);
        if self.wal_sealer.portion_count() >= seal_portions_max(self.frame_payload_max()) {
            // A seal must fit in a frame: a long batch is sealed in parts.
            self.wal_sealer.seal(&mut self.wal_buffer);
        }
        self.wal_unsynced = true;
        if self.wal_buffer.len() >= self.config.wal_buffer_bytes {
            if let Err(e) = self.write_wal_buffer() {
                if !e.is_no_space() {
                    return Err(e);
                }
                self.cut_wal_to_written()?;
                self.wal_buffer.truncate(staged_from);
                (self.wal_marked, self.wal_sealer, self.wal_unsynced) = undo;
                self.stats.no_space_refusals += 1;
                self.release_space_reserve()?;
                return Err(e);
            }
        }
        self.last_seq = seq;
        self.memtable_insert(key, mem);
        Ok(seq)
    }

    fn memtable_insert(&mut self, key: Bytes, mem: MemEntry) {
        self.memtable_bytes += mem.size_bytes(&key);
        if let Some(old) = self.memtable.insert(key.clone(), mem) {
            self.memtable_bytes -= old.size_bytes(&key);
        }
    }

    fn add_garbage(&mut self, p: ValuePointer) {
        if let Some(s) = self.state.segments.get_mut(&p.segment) {
            s.garbage_bytes = (s.garbage_bytes + u64::from(p.frame_len)).min(s.size_bytes.max(1));
        }
    }

    /// Cuts the live WAL back to the end of its last complete append: a short append on a full
    /// disk leaves part of a record after it, which would strand every later record behind
    /// garbage at recovery. The cut bytes were never fsynced.
    fn cut_wal_to_written(&mut self) -> Result<(), LsmError> {
        let name = wal_file_name(self.state.wal_id);
        if self.store.fs.len(&name)? > self.wal_len {
            self.store.fs.truncate(&name, self.wal_len)?;
        }
        Ok(())
    }

    /// Writes the buffer out before an fsync. On a full disk: cuts the partial append, releases
    /// the reserve (which exists for this: the staged writes must reach the disk) and tries once
    /// more. The buffer is kept as is until written, so its offsets (seal, markers) stay right.
    fn write_wal_buffer_for_sync(&mut self) -> Result<(), LsmError> {
        match self.write_wal_buffer() {
            Err(e) if e.is_no_space() => {
                self.cut_wal_to_written()?;
                self.release_space_reserve()?;
                let r = self.write_wal_buffer();
                if r.as_ref().is_err_and(LsmError::is_no_space) {
                    self.cut_wal_to_written()?;
                }
                r
            }
            other => other,
        }
    }

    fn write_wal_buffer(&mut self) -> Result<(), LsmError> {
        if self.wal_buffer.is_empty() {
            return Ok(());
        }
        self.store
            .fs
            .append(&wal_file_name(self.state.wal_id), &self.wal_buffer)?;
        self.wal_len += self.wal_buffer.len() as u64;
        self.stats.wal_bytes += self.wal_buffer.len() as u64;
        self.wal_buffer.clear();
        Ok(())
    }

    /// Stages one value-log frame in `vlog_buffer` (written out in large appends) and returns
    /// where it will be. Only flushes call this; the frames are fsynced before any table that
    /// points at them is written.
    fn vlog_stage(&mut self, seq: u64, key: &[u8], value: &[u8]) -> Result<ValuePointer, LsmError> {
        let mut payload = Vec::with_capacity(key.len() + value.len() + 4);
        payload.put_slice32(key);
        payload.extend_from_slice(value);
        let frame_len = (FRAME_HEADER_BYTES + payload.len()) as u64;
        if self.vlog_active_len > 0
            && self.vlog_active_len + frame_len > self.config.vlog_segment_bytes_max
        {
            self.rotate_vlog()?;
        }
        let active = self.state.vlog_active;
        encode_frame(&mut self.vlog_buffer, seq, &payload);
        let p = ValuePointer {
            segment: active,
            offset: self.vlog_active_len,
            frame_len: u32::try_from(frame_len).unwrap_or(u32::MAX),
        };
        self.vlog_active_len += frame_len;
        self.stats.vlog_bytes += frame_len;
        if let Some(s) = self.state.segments.get_mut(&active) {
            s.size_bytes = self.vlog_active_len;
        }
        if self.vlog_buffer.len() >= VLOG_BUFFER_BYTES {
            self.write_vlog_buffer()?;
        }
        Ok(p)
    }

    fn write_vlog_buffer(&mut self) -> Result<(), LsmError> {
        if self.vlog_buffer.is_empty() {
            return Ok(());
        }
        self.store
            .fs
            .append(&vlog_file_name(self.state.vlog_active), &self.vlog_buffer)?;
        self.vlog_buffer.clear();
        self.vlog_unsynced = true;
        Ok(())
    }

    /// Seals the active segment (fsynced, so WAL records pointing into it stay valid) and starts
    /// a new one, recorded in the manifest before any value is written to it.
    fn rotate_vlog(&mut self) -> Result<(), LsmError> {
        self.write_vlog_buffer()?;
        let old = vlog_file_name(self.state.vlog_active);
        self.store.fs.fsync(&old)?;
        self.vlog_unsynced = false;
        let id = self.take_file_id();
        self.store.fs.create(&vlog_file_name(id))?;
        self.store.fs.fsync_dir()?;
        // Changed on a copy that replaces the state only once stored: a full disk while storing
        // leaves the state as the manifest on disk still says.
        let mut next = self.state.clone();
        next.segments.insert(id, SegmentMeta::default());
        next.vlog_active = id;
        next.vlog_active_trusted_len = 0;
        manifest::store(&mut self.store.fs, &next)?;
        self.state = next;
        self.vlog_active_len = 0;
        Ok(())
    }

    fn take_file_id(&mut self) -> u64 {
        let id = self.state.next_file_id;
        self.state.next_file_id += 1;
        id
    }

    /// Flushes the memtable; on a full disk, undoes the attempt (module docs, "Out of disk
    /// space") and returns `NoSpace` with the memtable and the WAL as they were.
    fn flush_inner(&mut self) -> Result<(), LsmError> {
        let first_new_id = self.state.next_file_id;
        let wal_id = self.state.wal_id;
        let r = self.flush_attempt();
        if r.as_ref().is_err_and(LsmError::is_no_space) && self.state.wal_id == wal_id {
            self.undo_flush(first_new_id)?;
        }
        r
    }

    /// Undoes a flush that failed before its manifest was stored: the value log back to its
    /// trusted length (frames appended before a segment rotation stay in the sealed segment as
    /// unreferenced bytes), files created since `first_new_id` (a partial table, the next WAL)
    /// removed, the reserve released.
    fn undo_flush(&mut self, first_new_id: u64) -> Result<(), LsmError> {
        self.vlog_buffer.clear();
        let active = self.state.vlog_active;
        let trusted = self.state.vlog_active_trusted_len;
        let vname = vlog_file_name(active);
        if self.store.fs.len(&vname)? > trusted {
            self.store.fs.truncate(&vname, trusted)?;
        }
        self.vlog_active_len = trusted;
        self.vlog_unsynced = false;
        if let Some(s) = self.state.segments.get_mut(&active) {
            s.size_bytes = trusted;
        }
        for id in first_new_id..self.state.next_file_id {
            if self.state.segments.contains_key(&id) {
                continue;
            }
            for name in [table_file_name(id), wal_file_name(id)] {
                if self.store.fs.exists(&name)? {
                    self.store.fs.remove(&name)?;
                }
            }
        }
        self.release_space_reserve()
    }

    fn flush_attempt(&mut self) -> Result<(), LsmError> {
        if self.memtable.is_empty() {
            return Ok(());
        }
        // Separate the large values now, in memtable (key) order, in large appends.
        let pending: Vec<(Bytes, Bytes, u64)> = self
            .memtable
            .iter()
            .filter_map(|(k, m)| match m {
                MemEntry::Pending { value, seq } => Some((k.clone(), value.clone(), *seq)),
                _ => None,
            })
            .collect();
        let mut pointers = Vec::with_capacity(pending.len());
        for (key, value, seq) in &pending {
            pointers.push(self.vlog_stage(*seq, key, value)?);
        }
        drop(pending);
        self.write_vlog_buffer()?;
        // Tables point into the value log: its bytes must be durable before the table is.
        if self.vlog_unsynced {
            self.store
                .fs
                .fsync(&vlog_file_name(self.state.vlog_active))?;
            self.vlog_unsynced = false;
        }
        let id = self.take_file_id();
        let mut builder = TableBuilder::create(
            &mut self.store.fs,
            id,
            self.config.block_bytes,
            self.config.bloom_bits_per_key,
            self.config.compression,
        )?;
        let mut pointers = pointers.into_iter();
        for (key, mem) in &self.memtable {
            let entry = match mem {
                MemEntry::Inline(v) => Entry::Inline(v.clone()),
                MemEntry::Tombstone(ms) => Entry::Tombstone { deleted_at_ms: *ms },
                MemEntry::Pending { .. } => match pointers.next() {
                    Some(p) => Entry::Pointer(p),
                    None => {
                        return Err(LsmError::corrupt(
                            &table_file_name(id),
                            "flush lost a value pointer",
                        ))
                    }
                },
            };
            builder.add(&mut self.store.fs, key, &entry)?;
        }
        let meta = builder.finish(&mut self.store.fs)?;
        self.stats.flush_bytes += meta.size_bytes;
        let old_wal = self.state.wal_id;
        let new_wal = self.take_file_id();
        self.store.fs.create(&wal_file_name(new_wal))?;
        self.store.fs.fsync_dir()?;
        let mut next = self.state.clone();
        next.levels[0].insert(0, meta);
        next.wal_id = new_wal;
        next.last_seq = self.last_seq;
        next.vlog_active_trusted_len = self.vlog_active_len;
        manifest::store(&mut self.store.fs, &next)?;
        self.state = next;
        self.store.fs.remove(&wal_file_name(old_wal))?;
        self.memtable.clear();
        self.memtable_bytes = 0;
        // Buffered records of the old WAL are all in the table now.
        self.wal_buffer.clear();
        self.wal_len = 0;
        self.wal_unsynced = false;
        self.wal_durable = 0;
        self.wal_marked = 0;
        self.wal_sealer = BatchSealer::new(0);
        *lock_progress(&self.wal_progress) = WalProgress {
            wal_id: new_wal,
            durable: 0,
            failed: false,
        };
        self.stats.flushes += 1;
        Ok(())
    }

    // ---------------------------------------------------------------- checkpoints

    /// Writes a checkpoint of the store into `target`, an empty directory on the same disk
    /// (RocksDB's checkpoints and Cassandra's snapshots work the same way): [`Lsm::open`] on
    /// `target` then gives every write staged before the call, and nothing written after it.
    ///
    /// How: the memtable is flushed (so the WAL holds no records and nothing in it needs
    /// copying) and a non-empty active value-log segment is sealed (a new one started), so
    /// that every file the manifest then names is one the engine never changes again: finished
    /// tables and sealed segments are only ever read and, once unreferenced, removed; the
    /// engine truncates and appends only the WAL and the active segment. Those immutable files
    /// are linked into `target` ([`FileSystem::link_to`]: a hard link on real disks, so no
    /// bytes are copied, and a compaction or value-log collection removing them here later
    /// leaves the checkpoint's links intact). The checkpoint gets its own empty WAL and active
    /// segment, and last a manifest naming exactly those files, stored atomically: a
    /// checkpoint without its `MANIFEST` is incomplete (a crash while writing it), and
    /// [`Lsm::open`] would take the directory for an empty store.
    ///
    /// The flush and the seal follow the engine's rules (a full disk undoes them and returns
    /// `NoSpace`; another failure poisons). A failure in `target` leaves the checkpoint
    /// incomplete and this engine working (after the flush and the seal it only reads its own
    /// files). Refused with `AlreadyExists` if `target` holds an engine file or a manifest.
    ///
    /// The linked files need no fsync here: the engine fsynced each when it finished it (a table)
    /// or sealed it (a segment), and a hard link shares that durable inode; `link_to` fsyncs a
    /// copy when it has to make one.
    pub fn checkpoint(&mut self, target: &mut F) -> Result<CheckpointReport, LsmError> {
        self.writable()?;
        if let Some(name) = target
            .list()?
            .into_iter()
            .find(|n| is_engine_file(n) || n == MANIFEST_FILE)
        {
            return Err(LsmError::Io(FsError::new(
                &name,
                FsErrorKind::AlreadyExists,
                "a checkpoint needs an empty directory",
            )));
        }
        self.flush()?;
        if self.vlog_active_len > 0 {
            let r = self.seal_active_segment();
            self.poison_unless_no_space(r)?;
        }
        assert!(self.memtable.is_empty(), "flushed before a checkpoint");
        assert_eq!(
            self.last_seq, self.state.last_seq,
            "every write is in a table"
        );
        assert_eq!(self.vlog_active_len, 0, "the active segment was sealed");
        let state = self.state.clone();
        let mut report = CheckpointReport {
            last_seq: state.last_seq,
            ..CheckpointReport::default()
        };
        for table in state.levels.iter().flatten() {
            self.store.fs.link_to(&table_file_name(table.id), target)?;
            report.tables += 1;
            report.bytes += table.size_bytes;
        }
        for (id, segment) in &state.segments {
            if *id != state.vlog_active {
                self.store.fs.link_to(&vlog_file_name(*id), target)?;
                report.segments += 1;
                report.bytes += segment.size_bytes;
            }
        }
        target.create(&wal_file_name(state.wal_id))?;
        target.create(&vlog_file_name(state.vlog_active))?;
        target.fsync_dir()?;
        manifest::store(target, &state)?;
        Ok(report)
    }

    /// Seals the active value-log segment (a checkpoint links only files that never change),
    /// removing the new segment's file again if the manifest cannot be stored (a full disk).
    fn seal_active_segment(&mut self) -> Result<(), LsmError> {
        let next_id = self.state.next_file_id;
        let r = self.rotate_vlog();
        if r.is_err() && self.state.vlog_active != next_id {
            let name = vlog_file_name(next_id);
            if self.store.fs.exists(&name)? {
                self.store.fs.remove(&name)?;
            }
        }
        r
    }

    // ---------------------------------------------------------------- reads

    /// The value of `key`, including staged writes. Works on a poisoned engine too (read-only).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, LsmError> {
        match self.lookup(key)? {
            None | Some(Entry::Tombstone { .. }) => Ok(None),
            Some(Entry::Inline(v)) => Ok(Some(v)),
            Some(Entry::Pointer(p)) => self.read_value(key, p, None).map(Some),
        }
    }

    /// The newest entry for `key`, memtable first (values resolved there), then tables newest
    /// first with bloom-filter skips.
    fn lookup(&mut self, key: &[u8]) -> Result<Option<Entry>, LsmError> {
        if let Some(mem) = self.memtable.get(key) {
            return Ok(Some(mem.to_resolved_entry()));
        }
        self.lookup_tables(key)
    }

    fn lookup_tables(&mut self, key: &[u8]) -> Result<Option<Entry>, LsmError> {
        let hash = bloom::key_hash(key);
        let mut candidates = Vec::new();
        for (level, tables) in self.state.levels.iter().enumerate() {
            if level == 0 {
                candidates.extend(
                    tables
                        .iter()
                        .filter(|t| t.smallest.as_ref() <= key && key <= t.largest.as_ref())
                        .map(|t| t.id),
                );
            } else {
                let i = tables.partition_point(|t| t.largest.as_ref() < key);
                if let Some(t) = tables.get(i) {
                    if t.smallest.as_ref() <= key {
                        candidates.push(t.id);
                    }
                }
            }
        }
        for id in candidates {
            if let Some(entry) = self.store.get(id, key, hash)? {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Reads and verifies a separated value (checksum, key and, during recovery, sequence).
    fn read_value(
        &mut self,
        key: &[u8],
        p: ValuePointer,
        seq: Option<u64>,
    ) -> Result<Bytes, LsmError> {
        let name = vlog_file_name(p.segment);
        if !self.state.segments.contains_key(&p.segment) {
            return Err(LsmError::corrupt(
                &name,
                "pointer into a segment that is not live",
            ));
        }
        if seq.is_none() {
            if let Some(v) = self.value_cache.get(&(p.segment, p.offset)) {
                return Ok(v);
            }
        }
        // The pointer comes from disk: bound the read before allocating for it.
        let frame_len_max = FRAME_HEADER_BYTES + self.frame_payload_max();
        if p.frame_len as usize > frame_len_max {
            return Err(LsmError::corrupt(
                &name,
                format!(
                    "value at {} claims a frame of {} bytes, above {frame_len_max}",
                    p.offset, p.frame_len
                ),
            ));
        }
        let bytes = self
            .store
            .fs
            .read_at(&name, p.offset, p.frame_len as usize)
            .map_err(|e| {
                LsmError::corrupt(&name, format!("value at {}: {}", p.offset, e.detail))
            })?;
        let payload_max = self.frame_payload_max();
        let value = match seq {
            Some(seq) => parse_value_frame(&bytes, key, seq, payload_max),
            None => parse_value_frame_any_seq(&bytes, key, payload_max),
        }
        .map_err(|why| LsmError::corrupt(&name, format!("value at {}: {why}", p.offset)))?;
        self.value_cache
            .insert((p.segment, p.offset), value.clone(), value.len() + 64);
        Ok(value)
    }

    /// Up to `limit` live pairs with `start <= key < end` (no end if `None`), in key order.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, LsmError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut runs: Vec<RunCursor> = Vec::new();
        for (level, tables) in self.state.levels.iter().enumerate() {
            if level == 0 {
                for t in tables {
                    runs.push(RunCursor::new(std::slice::from_ref(t), true));
                }
            } else if !tables.is_empty() {
                runs.push(RunCursor::new(tables, true));
            }
        }
        for run in &mut runs {
            run.seek(&mut self.store, Some(start))?;
        }
        let mut mem = MemCursor::new(start);
        mem.fill(&self.memtable);
        let mut pending: Vec<(Bytes, Entry)> = Vec::new();
        loop {
            let mut min: Option<Bytes> = mem.current().map(|(k, _)| k.clone());
            for run in &runs {
                if let Some((k, _)) = run.current() {
                    if min.as_ref().is_none_or(|m| k < m) {
                        min = Some(k.clone());
                    }
                }
            }
            let Some(key) = min else { break };
            if end.is_some_and(|e| key.as_ref() >= e) {
                break;
            }
            let mut chosen: Option<Entry> = None;
            if mem.current().is_some_and(|(k, _)| *k == key) {
                chosen = mem.current().map(|(_, e)| e.clone());
                mem.advance(&self.memtable);
            }
            for run in &mut runs {
                if run.current().is_some_and(|(k, _)| *k == key) {
                    if chosen.is_none() {
                        chosen = run.current().map(|(_, e)| e.clone());
                    }
                    run.advance(&mut self.store)?;
                }
            }
            match chosen {
                Some(Entry::Tombstone { .. }) | None => {}
                Some(entry) => pending.push((key, entry)),
            }
            if pending.len() >= limit {
                break;
            }
        }
        for (key, entry) in pending {
            match entry {
                Entry::Inline(v) => out.push((key, v)),
                Entry::Pointer(p) => {
                    let v = self.read_value(&key, p, None)?;
                    out.push((key, v));
                }
                Entry::Tombstone { .. } => {}
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- compaction

    /// Lets compaction drop values that are dead for their owner (see [`DeadSince`]). The engine
    /// stays generic: it never interprets a value itself.
    pub fn set_dead_since(&mut self, dead_since: DeadSince) {
        self.dead_since = Some(dead_since);
    }

    /// Runs compaction for about `budget_bytes` of merged entries, then returns, so that it never
    /// holds up foreground work for long. `now_ms` (wall clock) decides which tombstones are past
    /// `tombstone_grace_ms`; they are dropped only when the output is the last level holding data.
    pub fn compact_step(
        &mut self,
        now_ms: u64,
        budget_bytes: u64,
    ) -> Result<CompactionProgress, LsmError> {
        self.writable()?;
        let r = self.compact_step_inner(now_ms, budget_bytes);
        match r {
            Err(e @ LsmError::Corrupt { .. }) => {
                // Abandon the job; its partial outputs are orphans removed at the next open.
                self.job = None;
                Err(e)
            }
            Err(e) if e.is_no_space() => {
                // Abandon the job (its inputs are untouched: the state changes only once the
                // manifest is stored) and free what its outputs hold; a later step starts over.
                self.job = None;
                self.remove_unreferenced_tables()?;
                self.release_space_reserve()?;
                Err(e)
            }
            other => self.poison_on_err(other),
        }
    }

    fn compact_step_inner(
        &mut self,
        now_ms: u64,
        budget_bytes: u64,
    ) -> Result<CompactionProgress, LsmError> {
        if self.job.is_none() {
            let Some(plan) = compaction::pick(&self.state.levels, &self.cursors, &self.config)
            else {
                return Ok(CompactionProgress::Idle);
            };
            if plan.trivial_move {
                return self.trivial_move(&plan);
            }
            let mut sources = Vec::new();
            let upper_level = &self.state.levels[plan.level];
            for id in &plan.upper {
                if let Some(t) = upper_level.iter().find(|t| t.id == *id) {
                    sources.push(RunCursor::new(std::slice::from_ref(t), false));
                }
            }
            let lower: Vec<TableMeta> = self.state.levels[plan.level + 1]
                .iter()
                .filter(|t| plan.lower.contains(&t.id))
                .cloned()
                .collect();
            sources.push(RunCursor::new(&lower, false));
            for s in &mut sources {
                s.seek(&mut self.store, None)?;
            }
            self.job = Some(CompactionJob {
                plan,
                sources,
                builder: None,
                outputs: Vec::new(),
                garbage: Vec::new(),
            });
        }
        let Some(mut job) = self.job.take() else {
            return Ok(CompactionProgress::Idle);
        };
        let mut processed: u64 = 0;
        loop {
            if processed >= budget_bytes {
                self.job = Some(job);
                return Ok(CompactionProgress::InProgress {
                    processed_bytes: processed,
                });
            }
            let mut min: Option<Bytes> = None;
            for s in &job.sources {
                if let Some((k, _)) = s.current() {
                    if min.as_ref().is_none_or(|m| k < m) {
                        min = Some(k.clone());
                    }
                }
            }
            let Some(key) = min else { break };
            let mut chosen: Option<Entry> = None;
            for s in &mut job.sources {
                if s.current().is_some_and(|(k, _)| *k == key) {
                    if let Some((_, e)) = s.current() {
                        if chosen.is_none() {
                            chosen = Some(e.clone());
                        } else if let Entry::Pointer(p) = e {
                            job.garbage.push(*p);
                        }
                    }
                    s.advance(&mut self.store)?;
                }
            }
            let Some(entry) = chosen else { continue };
            processed += (key.len() + entry.size_bytes()) as u64;
            if let Entry::Tombstone { deleted_at_ms } = entry {
                if job.plan.bottommost
                    && now_ms.saturating_sub(deleted_at_ms) >= self.config.tombstone_grace_ms
                {
                    continue;
                }
            }
            // A value its owner calls dead (a record's tombstone or expired value) goes by the
            // same rule as a tombstone: at the last level only, once older than the grace.
            if let (Entry::Inline(value), Some(dead_since), true) =
                (&entry, self.dead_since, job.plan.bottommost)
            {
                if dead_since(value).is_some_and(|since_ms| {
                    now_ms.saturating_sub(since_ms) >= self.config.tombstone_grace_ms
                }) {
                    continue;
                }
            }
            if job.builder.is_none() {
                let id = self.take_file_id();
                job.builder = Some(TableBuilder::create(
                    &mut self.store.fs,
                    id,
                    self.config.block_bytes,
                    self.config.bloom_bits_per_key,
                    self.config.compression,
                )?);
            }
            if let Some(builder) = job.builder.as_mut() {
                builder.add(&mut self.store.fs, &key, &entry)?;
                if builder.estimated_size_bytes() >= self.config.table_bytes_target {
                    if let Some(b) = job.builder.take() {
                        job.outputs.push(b.finish(&mut self.store.fs)?);
                    }
                }
            }
        }
        if let Some(b) = job.builder.take() {
            if !b.is_empty() {
                job.outputs.push(b.finish(&mut self.store.fs)?);
            }
        }
        self.install(job)
    }

    /// Removes table files the state does not reference: between steps, only the outputs of an
    /// abandoned compaction (a flush never leaves one behind: it finishes or is undone).
    fn remove_unreferenced_tables(&mut self) -> Result<(), LsmError> {
        let live: std::collections::BTreeSet<String> = self
            .state
            .levels
            .iter()
            .flatten()
            .map(|t| table_file_name(t.id))
            .collect();
        for name in self.store.fs.list()? {
            if name.ends_with(".sst") && !live.contains(&name) {
                self.store.fs.remove(&name)?;
            }
        }
        Ok(())
    }

    fn install(&mut self, job: CompactionJob) -> Result<CompactionProgress, LsmError> {
        let plan = job.plan;
        self.store.fs.fsync_dir()?;
        let level = plan.level;
        if let Some(last) = self.state.levels[level]
            .iter()
            .filter(|t| plan.upper.contains(&t.id))
            .map(|t| t.largest.clone())
            .max()
        {
            self.cursors[level] = last;
        }
        // Changed on a copy that replaces the state only once stored (a full disk while
        // storing leaves the inputs installed and the job abandoned).
        let before = self.state.clone();
        self.state.levels[level].retain(|t| !plan.upper.contains(&t.id));
        self.state.levels[level + 1].retain(|t| !plan.lower.contains(&t.id));
        let output_tables = job.outputs.len();
        let output_bytes: u64 = job.outputs.iter().map(|t| t.size_bytes).sum();
        for t in job.outputs {
            self.state.levels[level + 1].push(t);
        }
        self.state.levels[level + 1].sort_by(|a, b| a.smallest.cmp(&b.smallest));
        for p in job.garbage {
            self.add_garbage(p);
        }
        if let Err(e) = manifest::store(&mut self.store.fs, &self.state) {
            self.state = before;
            return Err(e);
        }
        self.stats.compaction_bytes += output_bytes;
        for id in plan.upper.iter().chain(plan.lower.iter()) {
            self.store.evict_table(*id);
            self.store.fs.remove(&table_file_name(*id))?;
        }
        self.stats.compactions += 1;
        self.check_invariants();
        Ok(CompactionProgress::Finished {
            level,
            output_tables,
        })
    }

    fn trivial_move(&mut self, plan: &CompactionPlan) -> Result<CompactionProgress, LsmError> {
        let level = plan.level;
        let Some(pos) = self.state.levels[level]
            .iter()
            .position(|t| plan.upper.contains(&t.id))
        else {
            return Ok(CompactionProgress::Idle);
        };
        let mut next = self.state.clone();
        let table = next.levels[level].remove(pos);
        let largest = table.largest.clone();
        next.levels[level + 1].push(table);
        next.levels[level + 1].sort_by(|a, b| a.smallest.cmp(&b.smallest));
        manifest::store(&mut self.store.fs, &next)?;
        self.state = next;
        self.cursors[level] = largest;
        self.stats.compactions += 1;
        self.check_invariants();
        Ok(CompactionProgress::Moved { level })
    }

    // ---------------------------------------------------------------- value-log GC

    /// Collects the sealed value-log segment with the most garbage, if at least
    /// `vlog_gc_garbage_percent_min` of it is known garbage: live values are written again (as
    /// ordinary writes, in the WAL and the active segment), the engine syncs, the manifest drops
    /// the segment and the file is removed. Work is bounded by `vlog_segment_bytes_max`.
    pub fn gc_value_log_step(&mut self) -> Result<GcOutcome, LsmError> {
        self.writable()?;
        let r = self.gc_inner();
        match r {
            Err(e @ LsmError::Corrupt { .. }) => Err(e),
            // Each step of the collection undid itself (flush, write, sync); the segment stays.
            Err(e) if e.is_no_space() => Err(e),
            other => self.poison_on_err(other),
        }
    }

    fn gc_inner(&mut self) -> Result<GcOutcome, LsmError> {
        let active = self.state.vlog_active;
        let min = self.config.vlog_gc_garbage_percent_min;
        let Some((segment, meta)) = self
            .state
            .segments
            .iter()
            .filter(|(id, s)| **id != active && s.garbage_bytes * 100 >= s.size_bytes * min)
            .max_by_key(|(id, s)| {
                (
                    s.garbage_bytes * 100 / s.size_bytes.max(1),
                    std::cmp::Reverse(**id),
                )
            })
            .map(|(id, s)| (*id, *s))
        else {
            return Ok(GcOutcome::Idle);
        };
        // The live WAL must not point into the segment once it is gone: flush first, so the WAL
        // only holds writes made after this point.
        self.flush_inner()?;
        let name = vlog_file_name(segment);
        let bytes = self.store.fs.read_all(&name)?;
        let scan = scan_log(&bytes, 0, self.frame_payload_max())
            .map_err(|why| LsmError::corrupt(&name, why))?;
        if scan.valid_len != bytes.len() {
            return Err(LsmError::corrupt(
                &name,
                format!("sealed segment has a bad tail at {}", scan.valid_len),
            ));
        }
        let mut live = Vec::new();
        for (offset, frame) in &scan.frames {
            let mut c = Cursor::new(frame.payload);
            let key = c
                .slice32(self.config.key_bytes_max)
                .map_err(|why| LsmError::corrupt(&name, format!("frame at {offset}: {why}")))?;
            let here = ValuePointer {
                segment,
                offset: *offset as u64,
                frame_len: u32::try_from(frame.len).unwrap_or(u32::MAX),
            };
            if self.lookup_tables(key)? == Some(Entry::Pointer(here))
                && !self.memtable.contains_key(key)
            {
                let value = &frame.payload[c.position()..];
                live.push((Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)));
            }
        }
        let mut live_bytes = 0u64;
        for (key, value) in live {
            if self.memtable_bytes >= self.config.memtable_bytes_max {
                self.flush_inner()?;
            }
            live_bytes += value.len() as u64;
            self.write(key, Some(value), 0)?;
        }
        self.sync_inner()?;
        let mut next = self.state.clone();
        next.segments.remove(&segment);
        manifest::store(&mut self.store.fs, &next)?;
        self.state = next;
        self.store.fs.remove(&name)?;
        self.stats.gc_segments += 1;
        Ok(GcOutcome::Collected {
            segment,
            live_bytes,
            segment_bytes: meta.size_bytes,
        })
    }

    // ---------------------------------------------------------------- introspection

    /// What recovery at open did: whether the WAL was cut and whether that cut is suspect (it may
    /// have dropped acknowledged writes: [`RecoveryReport::suspect`]). Callers should surface a
    /// suspect report to the operator.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Why the engine is read-only, if a write-path failure poisoned it.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Counters since open.
    pub fn stats(&self) -> LsmStats {
        let (hits, misses, _, _) = self.store.cache_stats();
        LsmStats {
            block_cache_hits: hits,
            block_cache_misses: misses,
            ..self.stats
        }
    }

    /// Number of tables per level.
    pub fn level_table_counts(&self) -> Vec<usize> {
        self.state.levels.iter().map(Vec::len).collect()
    }

    /// Bytes of tables per level.
    pub fn level_bytes(&self) -> Vec<u64> {
        self.state
            .levels
            .iter()
            .map(|l| l.iter().map(|t| t.size_bytes).sum())
            .collect()
    }

    /// Entries (values, pointers and tombstones) held in tables, over all levels.
    pub fn table_entry_count(&self) -> u64 {
        self.state
            .levels
            .iter()
            .flatten()
            .map(|t| t.entry_count)
            .sum()
    }

    /// Bytes of value-log segments (live and garbage).
    pub fn vlog_bytes(&self) -> u64 {
        self.state.segments.values().map(|s| s.size_bytes).sum()
    }

    /// Sequence number of the last staged write.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The file system (for tests and the simulator).
    pub fn fs_mut(&mut self) -> &mut F {
        &mut self.store.fs
    }

    /// Gives the file system back (to crash it and reopen).
    pub fn into_fs(self) -> F {
        self.store.fs
    }

    /// The configuration in force.
    pub fn config(&self) -> &LsmConfig {
        &self.config
    }

    /// Asserts the structural invariants (STYLE.md section 3): levels >= 1 sorted and disjoint.
    pub fn check_invariants(&self) {
        for (level, tables) in self.state.levels.iter().enumerate().skip(1) {
            for pair in tables.windows(2) {
                assert!(
                    pair[0].largest < pair[1].smallest,
                    "level {level}: tables {} and {} overlap or are out of order",
                    pair[0].id,
                    pair[1].id
                );
            }
        }
        for t in self.state.levels.iter().flatten() {
            assert!(
                t.smallest <= t.largest,
                "table {} has an inverted range",
                t.id
            );
        }
        assert!(self.state.segments.contains_key(&self.state.vlog_active));
        assert!(self.last_seq >= self.state.last_seq);
    }
}

/// Cursor over the memtable in chunks, yielding resolved entries (scans only).
struct MemCursor {
    chunk: Vec<(Bytes, Entry)>,
    pos: usize,
    next_from: Option<Bound<Bytes>>,
}

const MEM_CHUNK_ENTRIES: usize = 256;

impl MemCursor {
    fn new(start: &[u8]) -> Self {
        MemCursor {
            chunk: Vec::new(),
            pos: 0,
            next_from: Some(Bound::Included(Bytes::copy_from_slice(start))),
        }
    }

    fn fill(&mut self, memtable: &BTreeMap<Bytes, MemEntry>) {
        self.chunk.clear();
        self.pos = 0;
        let Some(from) = self.next_from.take() else {
            return;
        };
        self.chunk = memtable
            .range((from, Bound::Unbounded))
            .take(MEM_CHUNK_ENTRIES)
            .map(|(k, m)| (k.clone(), m.to_resolved_entry()))
            .collect();
        if self.chunk.len() == MEM_CHUNK_ENTRIES {
            self.next_from = self.chunk.last().map(|(k, _)| Bound::Excluded(k.clone()));
        }
    }

    fn current(&self) -> Option<(&Bytes, &Entry)> {
        self.chunk.get(self.pos).map(|(k, e)| (k, e))
    }

    fn advance(&mut self, memtable: &BTreeMap<Bytes, MemEntry>) {
        self.pos += 1;
        if self.pos >= self.chunk.len() {
            self.fill(memtable);
        }
    }
}

fn parse_value_frame(
    bytes: &[u8],
    key: &[u8],
    seq: u64,
    payload_max: usize,
) -> Result<Bytes, String> {
    let frame = decode_frame(bytes, payload_max)?;
    if frame.seq != seq {
        return Err(format!("value frame has sequence {} not {seq}", frame.seq));
    }
    value_of(frame.payload, key)
}

fn parse_value_frame_any_seq(
    bytes: &[u8],
    key: &[u8],
    payload_max: usize,
) -> Result<Bytes, String> {
    let frame = decode_frame(bytes, payload_max)?;
    if frame.len != bytes.len() {
        return Err("value frame length differs from its pointer".into());
    }
    value_of(frame.payload, key)
}

fn value_of(payload: &[u8], key: &[u8]) -> Result<Bytes, String> {
    let mut c = Cursor::new(payload);
    let stored_key = c.slice32(payload.len())?;
    if stored_key != key {
        return Err("value frame belongs to another key".into());
    }
    Ok(Bytes::copy_from_slice(&payload[c.position()..]))
}

/// Initializes an empty store: first WAL, first value-log segment, first manifest. Leftover
/// files (a crash during a previous initialization) are removed first: with no manifest, nothing
/// was ever acknowledged.
fn create_store<F: FileSystem>(fs: &mut F, config: &LsmConfig) -> Result<ManifestState, LsmError> {
    for name in fs.list()? {
        if is_engine_file(&name) {
            fs.remove(&name)?;
        }
    }
    let state = ManifestState {
        format_version: MANIFEST_FORMAT_VERSION,
        next_file_id: 3,
        last_seq: 0,
        wal_id: 1,
        vlog_active: 2,
        vlog_active_trusted_len: 0,
        levels: vec![Vec::new(); config.levels],
        segments: BTreeMap::from([(2, SegmentMeta::default())]),
    };
    fs.create(&wal_file_name(1))?;
    fs.create(&vlog_file_name(2))?;
    fs.fsync_dir()?;
    manifest::store(fs, &state)?;
    Ok(state)
}

fn is_engine_file(name: &str) -> bool {
    name.ends_with(".sst")
        || name.ends_with(".wal")
        || name.ends_with(".vlog")
        || name == MANIFEST_TMP_FILE
}

/// Removes files the manifest does not reference (outputs of an interrupted flush or compaction,
/// obsolete WALs, collected segments, a stale temporary manifest).
fn remove_orphans<F: FileSystem>(fs: &mut F, state: &ManifestState) -> Result<(), LsmError> {
    let mut live: std::collections::BTreeSet<String> = state
        .levels
        .iter()
        .flatten()
        .map(|t| table_file_name(t.id))
        .collect();
    live.insert(wal_file_name(state.wal_id));
    live.extend(state.segments.keys().map(|id| vlog_file_name(*id)));
    let mut removed = false;
    for name in fs.list()? {
        if is_engine_file(&name) && !live.contains(&name) {
            fs.remove(&name)?;
            removed = true;
        }
    }
    if removed {
        fs.fsync_dir()?;
    }
    Ok(())
}
