//! Flush: the frozen memtable becomes a level-0 table, as a job of bounded steps, so that a
//! driver goes on serving requests and staging writes while it runs (issue #15: a whole flush
//! inside the write that filled the memtable held a node's request path for about 40 ms).
//!
//! * **Freeze** ([`Flush::start`]): the active memtable is frozen and the WAL retired with it
//!   (`Wal::rotate`): the retired file holds exactly the frozen records, later writes go to a new
//!   WAL the manifest does not name yet. Recovery replays such a successor after the manifest's
//!   WAL (`recovery.rs`); a sync fsyncs the retired file before the live one (`sync.rs`).
//! * **Steps** ([`Flush::step`]): a bounded part of the frozen entries, in key order, goes to the
//!   table builder, large values first to the value log (in large appends).
//! * **Durability**: the table written, the value log, the table and the directory are fsynced
//!   before anything names them: in place, or detached ([`FlushFsync`]) for a driver that runs
//!   fsyncs on another thread, so the request path never waits on the disk for a flush.
//! * **Install**: the manifest names the table in level 0, the new WAL, the last frozen sequence
//!   number and the value log's new trusted length; then the frozen memtable is released and the
//!   retired WAL removed. Nothing before the install is visible to recovery but the successor WAL.
//!
//! On a full disk a step (or the install) undoes the job's files: the value log is cut back to its
//! trusted length and the partial table removed; the frozen memtable stays frozen and the job
//! starts over at its next step (`health.rs`, "Out of disk space").

use crate::config::LsmConfig;
use crate::entry::{Entry, ValuePointer};
use crate::error::LsmError;
use crate::faults::buggify;
use crate::fs::{DetachedFsync, FileSystem, FsError};
use crate::health::Health;
use crate::manifest::{self, ManifestState};
use crate::memtable::{MemEntry, MemTable};
use crate::outcome::LsmStats;
use crate::table::{table_file_name, TableBuilder, TableMeta};
use crate::vlog::{vlog_file_name, ValueLog};
use crate::wal::{wal_file_name, Wal};
use bytes::Bytes;

/// Where a flush job is.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Frozen entries are still being written.
    Writing,
    /// Every file is written; nothing fsynced yet.
    Written,
    /// A detached fsync of the files is out ([`FlushFsync`]).
    Fsyncing,
}

/// A flush under way (one at a time): the frozen memtable turning into a table.
#[derive(Debug)]
pub(crate) struct FlushJob {
    /// WAL files holding exactly the frozen records, removed once the table is installed: the one
    /// the freeze retired (first: the job's identity), and after a crash any successor recovery
    /// replayed into the frozen memtable.
    retired_wals: Vec<u64>,
    /// The last sequence number among the frozen records (the installed state's `last_seq`).
    last_seq: u64,
    /// The last frozen key added to the table: the next step resumes after it.
    resume_after: Option<Bytes>,
    builder: Option<TableBuilder>,
    /// The id of the table being written (none for a frozen table without entries).
    table_id: Option<u64>,
    /// The written table.
    table: Option<TableMeta>,
    phase: Phase,
}

impl FlushJob {
    /// The job a crash interrupted, as recovery rebuilt it: the frozen memtable holds the records
    /// of `retired_wals`, the last of them `last_seq`; nothing of its table survived.
    pub(crate) fn resumed(retired_wals: Vec<u64>, last_seq: u64) -> FlushJob {
        assert!(
            !retired_wals.is_empty(),
            "a job retires the manifest's WAL at least"
        );
        FlushJob {
            retired_wals,
            last_seq,
            resume_after: None,
            builder: None,
            table_id: None,
            table: None,
            phase: Phase::Writing,
        }
    }

    /// The job's identity: the WAL its freeze retired (the manifest's until the install).
    pub(crate) fn id(&self) -> u64 {
        self.retired_wals[0]
    }

    /// The table the job is writing, if it started one.
    pub(crate) fn table_id(&self) -> Option<u64> {
        self.table_id
    }
}

/// What a step of a flush job did.
#[derive(Debug)]
pub(crate) enum Advance {
    /// No job.
    Idle,
    /// Part of the frozen entries were written; more steps are owed.
    InProgress,
    /// The job's files are written; their fsync runs elsewhere ([`FlushFsync`]).
    Fsync(FlushFsync),
    /// A detached fsync of the job's files is still out.
    AwaitingFsync,
    /// The table is installed.
    Installed,
}

/// The fsync of a flush job's files (value log, table, directory), to run away from the engine:
/// hand its result to [`crate::Lsm::flush_fsynced`] with [`FlushFsync::job`]. A failure poisons
/// the engine like any failed fsync (never retried).
pub struct FlushFsync {
    job: u64,
    fsync: Option<DetachedFsync>,
}

impl FlushFsync {
    /// The job the fsync belongs to.
    pub fn job(&self) -> u64 {
        self.job
    }

    /// Runs the fsync (once; a second call is a no-op).
    pub fn fsync(&mut self) -> Result<(), FsError> {
        match self.fsync.take() {
            Some(fsync) => fsync(),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for FlushFsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushFsync")
            .field("job", &self.job)
            .finish()
    }
}

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
    pub(crate) job: &'a mut Option<FlushJob>,
}

impl<F: FileSystem> Flush<'_, F> {
    /// Freezes the memtable (whose last record is `last_seq`) and retires the WAL with it: a job
    /// begins. Nothing to do for an empty memtable. On a failure nothing changed.
    pub(crate) fn start(&mut self, last_seq: u64) -> Result<(), LsmError> {
        assert!(self.job.is_none(), "one flush at a time");
        if self.mem.is_empty() {
            return Ok(());
        }
        let retired = self.wal.id();
        let next = self.state.take_file_id();
        self.mem.freeze();
        if let Err(e) = self.wal.rotate(self.fs, next) {
            self.mem.thaw();
            return Err(e);
        }
        *self.job = Some(FlushJob::resumed(vec![retired], last_seq));
        Ok(())
    }

    /// One step of the job: about `budget_bytes` of frozen entries written; once all are, the
    /// fsync (detached when `detach` and the file system can, else in place) and, after an
    /// in-place fsync, the install. A full disk undoes the job's files (it starts over later)
    /// and returns `NoSpace`; any other failure must poison.
    pub(crate) fn step(&mut self, budget_bytes: u64, detach: bool) -> Result<Advance, LsmError> {
        let Some(mut job) = self.job.take() else {
            return Ok(Advance::Idle);
        };
        let r = self.advance(&mut job, budget_bytes, detach);
        self.settle(job, r)
    }

    /// Runs the job to its end in place (a second freeze, an explicit flush, a checkpoint).
    pub(crate) fn finish(&mut self) -> Result<(), LsmError> {
        self.step(u64::MAX, false).map(|_| ())
    }

    /// The detached fsync of job `job` succeeded: installs it (a stale result, for a job that was
    /// finished in place meanwhile, is ignored).
    pub(crate) fn fsynced(&mut self, job: u64) -> Result<Advance, LsmError> {
        let Some(mut current) = self
            .job
            .take_if(|j| j.id() == job && j.phase == Phase::Fsyncing)
        else {
            return Ok(Advance::Idle);
        };
        // No value-log byte was written since the fsync began: only a job writes it.
        self.vlog.synced_elsewhere();
        let r = self.install(&mut current).map(|()| Advance::Installed);
        self.settle(current, r)
    }

    /// Puts the job back unless it was installed; a full disk undoes its files.
    fn settle(
        &mut self,
        mut job: FlushJob,
        r: Result<Advance, LsmError>,
    ) -> Result<Advance, LsmError> {
        match &r {
            Ok(Advance::Installed) => {}
            Err(e) if e.is_no_space() => {
                let undone = self.start_over(&mut job);
                *self.job = Some(job);
                undone?;
            }
            _ => *self.job = Some(job),
        }
        r
    }

    fn advance(
        &mut self,
        job: &mut FlushJob,
        budget_bytes: u64,
        detach: bool,
    ) -> Result<Advance, LsmError> {
        if job.phase == Phase::Writing && !self.write_part(job, budget_bytes)? {
            return Ok(Advance::InProgress);
        }
        if detach && job.phase == Phase::Fsyncing {
            return Ok(Advance::AwaitingFsync);
        }
        if detach && job.phase == Phase::Written {
            if let Some(fsync) = self.detached_fsync(job)? {
                job.phase = Phase::Fsyncing;
                return Ok(Advance::Fsync(FlushFsync {
                    job: job.id(),
                    fsync: Some(fsync),
                }));
            }
        }
        // Tables point into the value log: its bytes are durable before the table is named.
        self.vlog.fsync_if_unsynced(self.fs)?;
        if let Some(table) = &job.table {
            self.fs.fsync(&table_file_name(table.id))?;
        }
        self.fs.fsync_dir()?;
        self.install(job)?;
        Ok(Advance::Installed)
    }

    /// Writes about `budget_bytes` of the frozen entries (at least one); true once all are
    /// written and the table finished.
    fn write_part(&mut self, job: &mut FlushJob, budget_bytes: u64) -> Result<bool, LsmError> {
        let c = self.config;
        if job.builder.is_none() && job.table_id.is_none() && self.mem.frozen().next().is_some() {
            let id = self.state.take_file_id();
            let mut builder = TableBuilder::create(
                self.fs,
                id,
                c.block_bytes,
                c.bloom_bits_per_key,
                c.compression,
            )?;
            builder.defer_fsync();
            job.builder = Some(builder);
            job.table_id = Some(id);
        }
        if let Some(builder) = job.builder.as_mut() {
            let mut written = 0u64;
            let mut last: Option<&Bytes> = None;
            for (key, mem) in self.mem.frozen_after(job.resume_after.clone()) {
                if written >= budget_bytes {
                    job.resume_after = last.cloned();
                    return Ok(false);
                }
                let entry = match mem {
                    MemEntry::Inline(v) => Entry::Inline(v.clone()),
                    MemEntry::Tombstone(ms) => Entry::Tombstone { deleted_at_ms: *ms },
                    MemEntry::Pending { value, seq } => {
                        let (fs, vlog, state) = (&mut *self.fs, &mut *self.vlog, &mut *self.state);
                        Entry::Pointer(separate(fs, vlog, state, c, *seq, key, value)?)
                    }
                };
                builder.add(self.fs, key, &entry)?;
                written += mem.size_bytes(key) as u64;
                last = Some(key);
            }
        }
        if let Some(builder) = job.builder.take() {
            job.table = Some(builder.finish(self.fs)?);
        }
        self.vlog.write_buffer(self.fs)?;
        job.phase = Phase::Written;
        Ok(true)
    }

    /// One fsync covering the job's files, to run elsewhere; `None` if the file system cannot
    /// detach one of them.
    fn detached_fsync(&mut self, job: &FlushJob) -> Result<Option<DetachedFsync>, LsmError> {
        let mut parts = Vec::new();
        let mut names = Vec::new();
        if self.vlog.unsynced() {
            names.push(vlog_file_name(self.vlog.active()));
        }
        if let Some(table) = &job.table {
            names.push(table_file_name(table.id));
        }
        for name in &names {
            match self.fs.detached_fsync(name)? {
                Some(part) => parts.push(part),
                None => return Ok(None),
            }
        }
        match self.fs.detached_fsync_dir()? {
            Some(part) => parts.push(part),
            None => return Ok(None),
        }
        Ok(Some(Box::new(move || {
            parts.into_iter().try_for_each(|fsync| fsync())
        })))
    }

    /// Names the durable table (if any), the live WAL and the value log's trusted length in the
    /// manifest; then releases the frozen memtable and removes the retired WALs.
    fn install(&mut self, job: &mut FlushJob) -> Result<(), LsmError> {
        let mut next = self.state.clone();
        if let Some(meta) = job.table.clone() {
            next.levels[0].insert(0, meta);
        }
        next.wal_id = self.wal.id();
        next.last_seq = job.last_seq;
        next.vlog_active_trusted_len = self.vlog.active_len();
        manifest::store(self.fs, &next)?;
        *self.state = next;
        self.stats.flush_bytes += job.table.as_ref().map_or(0, |t| t.size_bytes);
        self.stats.flushes += 1;
        // The frozen records are all in the table now, unsynced ones of the retired WAL too.
        self.mem.release_frozen();
        for &id in &job.retired_wals {
            self.wal.predecessor_installed(id);
            let name = wal_file_name(id);
            if self.fs.exists(&name)? {
                self.fs.remove(&name)?;
            }
        }
        Ok(())
    }

    /// Undoes the job's files after a full disk: the value log back to its trusted length
    /// (frames appended before a segment rotation stay in the sealed segment as unreferenced
    /// bytes), the table removed, the reserve released; the job starts over at its next step.
    fn start_over(&mut self, job: &mut FlushJob) -> Result<(), LsmError> {
        let trusted = self.state.vlog_active_trusted_len;
        self.vlog.cut_back(self.fs, trusted)?;
        if let Some(s) = self.state.segments.get_mut(&self.state.vlog_active) {
            s.size_bytes = trusted;
        }
        if let Some(id) = job.table_id.take() {
            let name = table_file_name(id);
            if self.fs.exists(&name)? {
                self.fs.remove(&name)?;
            }
        }
        job.builder = None;
        job.table = None;
        job.resume_after = None;
        job.phase = Phase::Writing;
        self.health.release_space_reserve(self.fs)
    }
}

/// Stages one frozen value in the value log, rotating the segment when it is full, and returns
/// its pointer.
fn separate<F: FileSystem>(
    fs: &mut F,
    vlog: &mut ValueLog,
    state: &mut ManifestState,
    config: &LsmConfig,
    seq: u64,
    key: &[u8],
    value: &[u8],
) -> Result<ValuePointer, LsmError> {
    let frame_len = ValueLog::frame_len(key, value);
    let full = vlog.must_rotate(frame_len, config.vlog_segment_bytes_max);
    // Sealing a non-empty segment early is legal, and makes more to collect (BUGGIFY).
    let early = !full && vlog.active_len() > 0 && buggify!(&mut *fs, "lsm/vlog-rotate-early");
    if full || early {
        vlog.rotate(fs, state)?;
    }
    let p = vlog.stage(fs, seq, key, value)?;
    if let Some(s) = state.segments.get_mut(&p.segment) {
        s.size_bytes = vlog.active_len();
    }
    Ok(p)
}
