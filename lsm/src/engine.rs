//! The engine composes its components and decides when each acts: the [`Wal`], the [`MemTable`]
//! (active and frozen), the [`ValueLog`], the compaction executor ([`Compactor`]) beside the pure
//! `compaction::pick`, the `recovery` procedure and the write gate ([`Health`]). Each component
//! owns its state and checks its own invariants; none of them knows the engine. What is left
//! here is orchestration: the order of steps that crash consistency depends on (value log before
//! table, table before manifest, manifest before removal).
//!
//! A full disk and a failed fsync are told apart by the write gate (`health`, "Out of disk
//! space").

use crate::checkpoint;
use crate::compaction_job::{Compactor, DeadSince, DropRule};
use crate::config::LsmConfig;
use crate::entry::{encode_keyed, Entry};
use crate::error::LsmError;
use crate::faults::buggify;
use crate::flush::{Advance, Flush, FlushFsync, FlushJob};
use crate::fs::{FileSystem, FsError};
use crate::health::Health;
use crate::manifest::ManifestState;
use crate::memtable::{entries_of_write, MemTable};
use crate::outcome::{
    CheckpointReport, CompactionProgress, FlushProgress, GcOutcome, LsmStats, WriteOutcome,
};
use crate::read::Reader;
use crate::recovery::{self, RecoveryReport};
use crate::row_cache::RowCache;
use crate::store::TableStore;
use crate::sync::Sync;
use crate::vlog::{self, ValueLog};
use crate::wal::{SyncTicket, Wal};
use bytes::Bytes;

/// The LSM engine over a [`FileSystem`]. Single-threaded and deterministic: time (for tombstone
/// expiry) is an argument, there are no threads and no clocks.
///
/// Durability contract: `put`/`delete` stage a write (visible at once); `sync` makes every write
/// staged before it durable with one fsync of the WAL, which holds the values too (group
/// commit; large values reach the value log at flush, fsynced before the table pointing at
/// them). A failed fsync poisons the engine: writes fail with `Poisoned`, reads go on.
#[derive(Debug)]
pub struct Lsm<F: FileSystem> {
    /// How compaction tells that an inline value is dead; `None`: only tombstones are dropped.
    dead_since: Option<DeadSince>,
    store: TableStore<F>,
    config: LsmConfig,
    /// The installed (manifest) state; `state.last_seq` is the last sequence held in tables.
    state: ManifestState,
    mem: MemTable,
    wal: Wal,
    vlog: ValueLog,
    /// Whole values by key, answering what a lookup would (`row_cache.rs`).
    rows: RowCache,
    /// What recovery at open did (a WAL cut, and whether it is suspect).
    recovery: RecoveryReport,
    last_seq: u64,
    compactor: Compactor,
    /// The value-log collection under way, if any (`collect_value_log_step`).
    collection: Option<Collection>,
    /// The flush under way, if any (`flush.rs`): the frozen memtable becoming a table.
    flush_job: Option<FlushJob>,
    /// A flush job's detached fsync not yet taken by the driver ([`Lsm::take_flush_fsync`]).
    flush_fsync: Option<FlushFsync>,
    health: Health,
    stats: LsmStats,
}

/// A value-log collection spread over bounded steps: the victim's frames not yet looked at.
/// Why in steps: a whole 32 MiB segment collected in one call held the node's request path for
/// 100-250 ms (`ringkv_storage_maintenance_duration_seconds`, issue #15).
#[derive(Debug)]
struct Collection {
    segment: u64,
    segment_bytes: u64,
    /// The victim's file length, and where its next part is read from.
    file_len: u64,
    read_to: u64,
    /// Frames of the part read last still to look at, the next one last (popped).
    frames: Vec<vlog::SegmentFrame>,
    live_bytes: u64,
}

/// Most bytes of the victim read at once (a part holds at least one whole frame).
const COLLECTION_READ_BYTES_MAX: u64 = 4 << 20;

impl Collection {
    fn is_done(&self) -> bool {
        self.frames.is_empty() && self.read_to >= self.file_len
    }
}

impl<F: FileSystem> Lsm<F> {
    /// Opens (or creates) the store in `fs` and recovers it (`recovery`): a torn or holey
    /// unsynced WAL tail is truncated, a bad record in the part the WAL's sync markers say was
    /// fsynced is reported as `Corrupt` naming the file (FORMAT.md, "WAL recovery").
    pub fn open(mut fs: F, config: LsmConfig) -> Result<Self, LsmError> {
        config.validate()?;
        // Recovery must never need more space than the reserve holds (`health.rs`).
        fs.release_space()?;
        let limits = config.decode_limits();
        let mut state = recovery::open_state(&mut fs, &config)?;
        let recovered = recovery::recover(&mut fs, &mut state, &config)?;
        let (index_bytes, block_bytes) = (config.index_cache_bytes, config.block_cache_bytes);
        let row_bytes = config.row_cache_bytes;
        let mut engine = Lsm {
            store: TableStore::new(fs, limits, index_bytes, block_bytes),
            compactor: Compactor::new(state.levels.len()),
            collection: None,
            // A flush job a crash interrupted goes on (its steps need space; recovery must not).
            flush_job: (recovered.interrupted_flush)
                .map(|f| FlushJob::resumed(f.retired_wals, f.last_seq)),
            flush_fsync: None,
            last_seq: recovered.last_seq,
            state,
            config,
            mem: recovered.mem,
            wal: recovered.wal,
            vlog: recovered.vlog,
            rows: RowCache::new(row_bytes),
            recovery: recovered.report,
            dead_since: None,
            health: Health::opening(),
            stats: LsmStats::default(),
        };
        if recovered.needs_upgrade_flush {
            engine.flush_inner()?;
        }
        // Short of space (writes refused, reads served) if the reserve cannot be taken back.
        let reserve_bytes = engine.config.space_reserve_bytes();
        match engine
            .health
            .take_space_reserve(&mut engine.store.fs, reserve_bytes)
        {
            Err(e) if !e.is_no_space() => return Err(e),
            _ => {}
        }
        engine.check_invariants();
        Ok(engine)
    }

    // ---------------------------------------------------------------- writes

    /// Stages `key = value`. Visible at once, durable after the next successful [`Lsm::sync`].
    pub fn put(&mut self, key: Bytes, value: Bytes) -> Result<WriteOutcome, LsmError> {
        if let Err(e) = self.config.check_value(&value) {
            self.health.writable()?;
            self.config.check_key(&key)?;
            return Err(e);
        }
        let bytes = (key.len() + value.len()) as u64;
        self.stage(key, Some(value), 0, bytes)
    }

    /// Stages a delete (a tombstone stamped with the wall-clock `now_ms`, which decides when it
    /// may be dropped: `tombstone_grace_ms`).
    pub fn delete(&mut self, key: Bytes, now_ms: u64) -> Result<WriteOutcome, LsmError> {
        let bytes = key.len() as u64;
        self.stage(key, None, now_ms, bytes)
    }

    /// A user's write: refused while poisoned or short of space, after making room.
    fn stage(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        deleted_at_ms: u64,
        user_bytes: u64,
    ) -> Result<WriteOutcome, LsmError> {
        self.health.writable()?;
        self.config.check_key(&key)?;
        let reserve_bytes = self.config.space_reserve_bytes();
        self.health
            .take_space_reserve(&mut self.store.fs, reserve_bytes)?;
        if let Some(stalled) = self.make_room()? {
            return Ok(stalled);
        }
        // Kept for the row cache only if it has one: the clones are not free on this path.
        let row = self.rows.enabled().then(|| (key.clone(), value.clone()));
        let r = self.write(key, value, deleted_at_ms);
        if r.is_ok() {
            self.stats.user_bytes += user_bytes;
            // Written through: the old row would be wrong, and a key just written is likely
            // to be read next.
            match row {
                Some((key, Some(value))) => self.rows.insert_written(&key, &value),
                Some((key, None)) => self.rows.remove(&key),
                None => {}
            }
        }
        self.health
            .poison_unless_no_space(r)
            .map(|seq| WriteOutcome::Written { seq })
    }

    /// Makes every write staged so far durable: one fsync of the WAL, however many writes are
    /// covered (group commit). A failure poisons the engine for good and returns `Poisoned`; the
    /// fsync is never retried. The one exception: the disk was too full to *write* the buffered
    /// records even with the reserve released (nothing was fsynced, nothing is lost, the records
    /// stay buffered): `NoSpace` is returned as is.
    pub fn sync(&mut self) -> Result<(), LsmError> {
        self.health.writable()?;
        self.sync_parts()
            .run()
            .map_err(|e| self.health.sync_failed(e))
    }

    fn sync_parts(&mut self) -> Sync<'_, F> {
        Sync {
            fs: &mut self.store.fs,
            wal: &mut self.wal,
            health: &mut self.health,
        }
    }

    /// First half of a sync split in two, for a driver that goes on staging writes while the
    /// disk works (group commit): `sync_begin` writes the buffered WAL records and returns a
    /// ticket; the driver runs [`SyncTicket::fsync`] elsewhere (the node's fsync thread, or
    /// outside the lock of writer threads that share the engine), staging other writes
    /// meanwhile; then [`Lsm::sync_finish`] records the outcome. Once it returns `Ok`, every write with a
    /// sequence number up to [`SyncTicket::covers_seq`] is durable.
    /// Safe against anything that happens in between (`sync.rs`).
    pub fn sync_begin(&mut self) -> Result<SyncTicket, LsmError> {
        self.health.writable()?;
        let covers_seq = self.last_seq;
        let r = self.sync_parts().begin(covers_seq);
        r.map_err(|e| self.health.sync_failed(e))
    }

    /// Second half of a split sync: `result` is what [`SyncTicket::fsync`] returned. A failure
    /// poisons the engine for good (the fsync is never retried) and returns `Poisoned`.
    pub fn sync_finish(&mut self, result: Result<(), FsError>) -> Result<(), LsmError> {
        result.map_err(|e| self.health.detached_fsync_failed(&e))?;
        self.wal.learn_detached();
        self.health.writable()
    }

    /// Flushes the memtable to a level-0 table now, and the flush under way first (normally
    /// a full memtable starts a flush job that [`Lsm::flush_step`] carries out).
    pub fn flush(&mut self) -> Result<(), LsmError> {
        self.health.writable()?;
        let r = self.flush_inner();
        self.health.poison_unless_no_space(r)
    }

    /// One bounded step of the flush under way (`flush.rs`): about `budget_bytes` of frozen
    /// entries written; once all are, their fsync, then the install. Where the file system can
    /// detach fsyncs, that fsync is left for the driver to run elsewhere
    /// ([`Lsm::take_flush_fsync`]), and the job waits for [`Lsm::flush_fsynced`]; elsewhere it
    /// runs in place and the table is installed in this step. A full disk undoes the job's
    /// files and returns `NoSpace` (the job starts over at its next step); another failure
    /// poisons the engine.
    pub fn flush_step(&mut self, budget_bytes: u64) -> Result<FlushProgress, LsmError> {
        self.health.writable()?;
        // A step as small as one entry is legal: a job is resumable (BUGGIFY).
        let tiny = buggify!(&mut self.store.fs, "lsm/flush-budget-tiny");
        let budget_bytes = if tiny { 1 } else { budget_bytes };
        let r = self.flush_parts().step(budget_bytes, true);
        let progress = match self.health.poison_unless_no_space(r)? {
            Advance::Idle => FlushProgress::Idle,
            Advance::InProgress => FlushProgress::InProgress,
            Advance::AwaitingFsync => FlushProgress::AwaitingFsync,
            Advance::Fsync(fsync) => {
                self.flush_fsync = Some(fsync);
                FlushProgress::AwaitingFsync
            }
            Advance::Installed => FlushProgress::Installed,
        };
        Ok(progress)
    }

    /// The fsync a flush job left to the driver ([`Lsm::flush_step`]), if any: run it away from
    /// the engine, then hand its result to [`Lsm::flush_fsynced`].
    pub fn take_flush_fsync(&mut self) -> Option<FlushFsync> {
        self.flush_fsync.take()
    }

    /// Records the result of flush job `job`'s detached fsync: on success the job's table is
    /// installed (unless the job was finished in place meanwhile); a failure poisons the
    /// engine for good (never retried), like any failed fsync.
    pub fn flush_fsynced(&mut self, job: u64, result: Result<(), FsError>) -> Result<(), LsmError> {
        result.map_err(|e| self.health.detached_fsync_failed(&e))?;
        self.health.writable()?;
        let r = self.flush_parts().fsynced(job);
        self.health.poison_unless_no_space(r).map(|_| ())
    }

    /// Whether a flush job is under way (its steps are owed).
    pub fn flushing(&self) -> bool {
        self.flush_job.is_some()
    }

    /// Whether the engine is short of space: the disk filled up and writes are refused until
    /// the reserve can be taken back (`health.rs`, "Out of disk space").
    pub fn space_short(&self) -> bool {
        self.health.space_short()
    }

    /// Starts a flush job for a full memtable (finishing the one under way first, a bounded
    /// stall counted in `flush_stalls`), or reports a stall when level 0 is too deep to take
    /// another table.
    fn make_room(&mut self) -> Result<Option<WriteOutcome>, LsmError> {
        if self.mem.active_bytes() < self.config.memtable_bytes_max {
            // A flush before the memtable is full is legal while level 0 has room (BUGGIFY).
            let room = self.state.levels[0].len() + 2 < self.config.level0_stall_tables;
            let active = self.mem.active_bytes() > 0;
            if !(room && active && buggify!(&mut self.store.fs, "lsm/flush-early")) {
                return Ok(None);
            }
        }
        let r = self.make_room_for_a_flush();
        if r.as_ref().is_err_and(LsmError::is_no_space) {
            self.health.count_no_space_refusal();
        }
        self.health.poison_unless_no_space(r)
    }

    fn make_room_for_a_flush(&mut self) -> Result<Option<WriteOutcome>, LsmError> {
        if self.flush_job.is_some() {
            self.stats.flush_stalls += 1;
            self.flush_parts().finish()?;
        }
        let level0_tables = self.state.levels[0].len();
        if level0_tables >= self.config.level0_stall_tables {
            self.stats.stalls += 1;
            return Ok(Some(WriteOutcome::Stalled { level0_tables }));
        }
        let last_seq = self.last_seq;
        self.flush_parts().start(last_seq)?;
        Ok(None)
    }

    /// Appends the write (values of every size inline) to the WAL, then the memtable. A full
    /// disk is undone by the WAL ([`Wal::append`]) and returns `NoSpace`, with the reserve
    /// released; any other failure must poison.
    fn write(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        deleted_ms: u64,
    ) -> Result<u64, LsmError> {
        let seq = self.last_seq + 1;
        let threshold = self.config.value_separation_threshold_bytes;
        let (entry, mem) = entries_of_write(value, deleted_ms, seq, threshold);
        let (fs, c) = (&mut self.store.fs, &self.config);
        let max = c.frame_payload_bytes_max();
        let payload = |out: &mut Vec<u8>| encode_keyed(out, &key, &entry);
        if let Err(e) = (self.wal).append(fs, seq, payload, max, c.wal_buffer_bytes) {
            if e.is_no_space() {
                self.health.count_no_space_refusal();
                self.health.release_space_reserve(fs)?;
            }
            return Err(e);
        }
        self.last_seq = seq;
        self.mem.insert(key, mem);
        Ok(seq)
    }

    /// Finishes the flush under way, then flushes the memtable whole (`flush.rs`).
    fn flush_inner(&mut self) -> Result<(), LsmError> {
        self.flush_parts().finish()?;
        let last_seq = self.last_seq;
        self.flush_parts().start(last_seq)?;
        self.flush_parts().finish()
    }

    fn flush_parts(&mut self) -> Flush<'_, F> {
        Flush {
            fs: &mut self.store.fs,
            state: &mut self.state,
            mem: &mut self.mem,
            wal: &mut self.wal,
            vlog: &mut self.vlog,
            health: &mut self.health,
            stats: &mut self.stats,
            config: &self.config,
            job: &mut self.flush_job,
        }
    }

    // ---------------------------------------------------------------- checkpoints

    /// Writes a checkpoint of the store into `target`, an empty directory on the same disk
    /// (`checkpoint.rs`): [`Lsm::open`] on `target` then gives every write staged before the
    /// call, and nothing written after it. The memtable is flushed and a non-empty active
    /// value-log segment sealed first, so that every file the manifest names is one the engine
    /// never changes again; those are linked ([`FileSystem::link_to`]: hard links on real
    /// disks). The flush and the seal follow the engine's rules (a full disk undoes them and
    /// returns `NoSpace`; another failure poisons). A failure in `target` leaves the checkpoint
    /// incomplete (no manifest) and this engine working. Refused with `AlreadyExists` if
    /// `target` holds an engine file or a manifest.
    pub fn checkpoint(&mut self, target: &mut F) -> Result<CheckpointReport, LsmError> {
        self.health.writable()?;
        checkpoint::check_empty(target)?;
        self.flush()?;
        if self.vlog.active_len() > 0 {
            let r = (self.vlog).seal_for_checkpoint(&mut self.store.fs, &mut self.state);
            self.health.poison_unless_no_space(r)?;
        }
        assert!(self.mem.is_empty(), "flushed before a checkpoint");
        assert_eq!(self.last_seq, self.state.last_seq, "all in tables");
        assert_eq!(self.vlog.active_len(), 0, "the active segment was sealed");
        let state = self.state.clone();
        checkpoint::link_files(&mut self.store.fs, &state, target)
    }

    // ---------------------------------------------------------------- reads

    /// The value of `key`, including staged writes. Works on a poisoned engine too (read-only).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, LsmError> {
        if let Some(value) = self.rows.get(key) {
            return Ok(Some(value));
        }
        let found = self.reader().get(key)?;
        if let Some(value) = &found {
            self.rows.insert_read(key, value);
        }
        Ok(found)
    }

    /// Up to `limit` live pairs with `start <= key < end` (no end if `None`), in key order.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, LsmError> {
        self.reader().scan(start, end, limit)
    }

    fn reader(&mut self) -> Reader<'_, F> {
        Reader {
            store: &mut self.store,
            state: &self.state,
            mem: &self.mem,
            vlog: &mut self.vlog,
            payload_max: self.config.frame_payload_bytes_max(),
        }
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
        self.health.writable()?;
        // A step as small as one entry is legal: a job is resumable (BUGGIFY).
        let tiny = buggify!(&mut self.store.fs, "lsm/compaction-budget-tiny");
        let budget_bytes = if tiny { 1 } else { budget_bytes };
        let rule = DropRule {
            now_ms,
            grace_ms: self.config.tombstone_grace_ms,
            dead_since: self.dead_since,
        };
        let (store, state) = (&mut self.store, &mut self.state);
        let r = self
            .compactor
            .step(store, state, &self.config, rule, budget_bytes);
        // Keys whose dead value an installed job dropped now read as absent.
        for key in self.compactor.take_forgotten() {
            self.rows.remove(&key);
        }
        match r {
            // The job is abandoned; its partial outputs are orphans removed at the next open.
            Err(e @ LsmError::Corrupt { .. }) => Err(e),
            Err(e) if e.is_no_space() => {
                // Free what the abandoned job's outputs hold; a later step starts over.
                let flush_table = self.flush_job.as_ref().and_then(FlushJob::table_id);
                let fs = &mut self.store.fs;
                Compactor::remove_unreferenced_tables(fs, &self.state, flush_table)?;
                self.health.release_space_reserve(&mut self.store.fs)?;
                Err(e)
            }
            other => self.health.poison_on_err(other),
        }
    }

    // ---------------------------------------------------------------- value-log GC

    /// Collects one value-log segment whole: [`Lsm::collect_value_log_step`] without a bound,
    /// run until the segment is gone (or none holds enough garbage).
    pub fn gc_value_log_step(&mut self) -> Result<GcOutcome, LsmError> {
        loop {
            match self.collect_value_log_step(u64::MAX)? {
                GcOutcome::InProgress { .. } => continue,
                done => return Ok(done),
            }
        }
    }

    /// One bounded step of value-log collection: picks the sealed segment most worth collecting
    /// (at least `vlog_gc_garbage_percent_min` garbage) if none is under way, then looks at up to
    /// `budget_bytes` of its frames, rewriting the live ones as ordinary writes. The last step
    /// syncs and removes the segment (FORMAT.md, "Value-log collection"). A failure drops the
    /// collection under way: the next step starts it again, and the values already rewritten
    /// are then no longer live in the victim. A full disk poisons nothing.
    pub fn collect_value_log_step(&mut self, budget_bytes: u64) -> Result<GcOutcome, LsmError> {
        self.health.writable()?;
        let result = self.collect_inner(budget_bytes);
        if result.is_err() {
            self.collection = None;
        }
        match result {
            Err(e @ LsmError::Corrupt { .. }) => Err(e),
            // Each step of the collection undid itself (flush, write, sync); the segment stays.
            Err(e) if e.is_no_space() => Err(e),
            other => self.health.poison_on_err(other),
        }
    }

    /// Whether a value-log collection is under way (its next step is owed).
    pub fn collecting_value_log(&self) -> bool {
        self.collection.is_some()
    }

    fn collect_inner(&mut self, budget_bytes: u64) -> Result<GcOutcome, LsmError> {
        if self.collection.is_none() {
            let Some(collection) = self.start_collection()? else {
                return Ok(GcOutcome::Idle);
            };
            self.collection = Some(collection);
        }
        let mut looked_at = 0u64;
        while looked_at < budget_bytes {
            self.read_collection_part(budget_bytes)?;
            let Some((here, key, value)) = self.collection.as_mut().and_then(|c| c.frames.pop())
            else {
                break;
            };
            looked_at += u64::from(here.frame_len);
            // Live: the tables point at this frame and no newer write to the key is staged. Asked
            // now, not at the start: writes between steps may have replaced the value.
            if self.store.lookup(&self.state.levels, &key, false)? != Some(Entry::Pointer(here))
                || self.mem.get(&key).is_some()
            {
                continue;
            }
            let full = self.mem.active_bytes() >= self.config.memtable_bytes_max;
            // Smaller rewrite batches are legal: a flush between any two (BUGGIFY).
            if full || buggify!(&mut self.store.fs, "lsm/vlog-gc-flush-between-values") {
                self.flush_inner()?;
            }
            if let Some(collection) = self.collection.as_mut() {
                collection.live_bytes += value.len() as u64;
            }
            self.write(key, Some(value), 0)?;
        }
        let Some(collection) = self.collection.take_if(|c| c.is_done()) else {
            let segment = self.collection.as_ref().map_or(0, |c| c.segment);
            return Ok(GcOutcome::InProgress { segment });
        };
        self.sync_parts().run()?;
        vlog::remove_segment(&mut self.store.fs, &mut self.state, collection.segment)?;
        self.stats.gc_segments += 1;
        Ok(GcOutcome::Collected {
            segment: collection.segment,
            live_bytes: collection.live_bytes,
            segment_bytes: collection.segment_bytes,
        })
    }

    /// The collection of the sealed segment most worth it, if any: flushed first, so the live WAL
    /// never points into the victim, and its frames read.
    fn start_collection(&mut self) -> Result<Option<Collection>, LsmError> {
        let active = self.state.vlog_active;
        // Collecting a segment below the garbage threshold is legal, only wasteful (BUGGIFY).
        let early = buggify!(&mut self.store.fs, "lsm/vlog-gc-below-threshold");
        let min = if early {
            0
        } else {
            self.config.vlog_gc_garbage_percent_min
        };
        let Some((segment, meta)) = vlog::collection_candidate(&self.state.segments, active, min)
        else {
            return Ok(None);
        };
        self.flush_inner()?;
        let file_len = self.store.fs.len(&vlog::vlog_file_name(segment))?;
        Ok(Some(Collection {
            segment,
            segment_bytes: meta.size_bytes,
            file_len,
            read_to: 0,
            frames: Vec::new(),
            live_bytes: 0,
        }))
    }

    /// Reads the next part of the victim once the last one is looked at: about `budget_bytes`
    /// (at least one largest frame, at most [`COLLECTION_READ_BYTES_MAX`]).
    fn read_collection_part(&mut self, budget_bytes: u64) -> Result<(), LsmError> {
        let payload_max = self.config.frame_payload_bytes_max();
        let key_bytes_max = self.config.key_bytes_max;
        let Some(c) = self.collection.as_mut() else {
            return Ok(());
        };
        if !c.frames.is_empty() || c.read_to >= c.file_len {
            return Ok(());
        }
        let frame_max = (crate::frame::FRAME_HEADER_BYTES + payload_max) as u64;
        let part = budget_bytes
            .min(COLLECTION_READ_BYTES_MAX)
            .max(frame_max)
            .min(c.file_len - c.read_to);
        let at_end = c.read_to + part == c.file_len;
        let (mut frames, covered) = vlog::segment_frames_at(
            &mut self.store.fs,
            c.segment,
            (c.read_to, part as usize, at_end),
            key_bytes_max,
            payload_max,
        )?;
        frames.reverse();
        c.frames = frames;
        c.read_to += covered;
        Ok(())
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
        self.health.poisoned()
    }

    /// Counters since open.
    pub fn stats(&self) -> LsmStats {
        let (hits, misses, _, _) = self.store.cache_stats();
        LsmStats {
            wal_bytes: self.wal.bytes_written(),
            vlog_bytes: self.vlog.bytes_written(),
            compaction_bytes: self.compactor.output_bytes(),
            compactions: self.compactor.finished(),
            no_space_refusals: self.health.no_space_refusals(),
            block_cache_hits: hits,
            block_cache_misses: misses,
            row_cache_hits: self.rows.hits(),
            row_cache_misses: self.rows.misses(),
            row_cache_bytes: self.rows.used_bytes() as u64,
            ..self.stats
        }
    }

    /// Number of tables per level.
    pub fn level_table_counts(&self) -> Vec<usize> {
        self.state.levels.iter().map(Vec::len).collect()
    }

    /// Bytes of tables per level.
    pub fn level_bytes(&self) -> Vec<u64> {
        self.state.level_bytes()
    }

    /// Entries (values, pointers and tombstones) held in tables, over all levels.
    pub fn table_entry_count(&self) -> u64 {
        self.state.table_entry_count()
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

    /// Asserts the invariants of the installed state and of every component (STYLE.md section
    /// 3), and that the components agree with the manifest on which files are live.
    pub fn check_invariants(&self) {
        self.state.check_invariants();
        self.mem.check_invariants();
        self.wal.check_invariants();
        self.vlog.check_invariants();
        self.rows.check_invariants();
        self.compactor.check_invariants(&self.state.levels);
        assert_eq!(self.vlog.active(), self.state.vlog_active, "its segment");
        assert!(self.last_seq >= self.state.last_seq);
        assert_eq!(
            self.mem.has_frozen(),
            self.flush_job.is_some(),
            "a frozen memtable exactly while a flush job is under way"
        );
        match &self.flush_job {
            // The manifest names the retired WAL until the install; writes go to its successor.
            Some(job) => {
                assert_eq!(job.id(), self.state.wal_id, "the manifest's WAL");
                assert!(self.wal.id() > self.state.wal_id, "a successor of it");
            }
            None => assert_eq!(self.wal.id(), self.state.wal_id, "the manifest's WAL"),
        }
        if let Some(collection) = &self.collection {
            assert!(
                self.state.segments.contains_key(&collection.segment),
                "the segment under collection is live until its last step"
            );
            assert_ne!(
                collection.segment, self.state.vlog_active,
                "only sealed segments are collected"
            );
        }
    }
}
