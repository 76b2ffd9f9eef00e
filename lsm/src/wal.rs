//! The write-ahead log of the live memtable: its file, the records buffered for it, and what
//! fsyncs have made durable of it (the source of the claims of its sync markers, FORMAT.md).
//!
//! The WAL owns its bytes and its durability bookkeeping; the engine decides *when* to write,
//! sync and replace it. Lengths obey `marked <= durable <= len <= allocated`: a sync marker never
//! claims more than an fsync made durable, an fsync never covers bytes that were not written, and
//! the file holds zeros from `len` to its end (`allocated`).
//!
//! # Preallocation
//!
//! With `wal_preallocate_bytes` set, a write that reaches the end of the file appends that many
//! zeros after its records, and the next writes go over those zeros ([`FileSystem::write_at`])
//! until they run out. Why (issue #15): an fsync of a file whose size changed must also write
//! its inode, and on ext4 that made a group commit's `fdatasync` of about 20 KB take 220-320 µs
//! against 150 µs for the same bytes written over zeros already on disk; under a node's group
//! commit, the fsync's latency is what bounds synced writes per second. (`fallocate` does not do
//! it: its blocks are "unwritten", and the first write to each converts them, a metadata change.)
//! The cost: the zeros are written to the disk once, so WAL bytes double, and one fsync in
//! `wal_preallocate_bytes / batch` carries them and the size change.
//!
//! Recovery reads a tail of zeros after the last valid frame as the end of the WAL, not as a
//! cut (`frame::scan_wal`): past `len` the file holds only zeros, and a crash that loses records
//! written over them leaves zeros too (never acknowledged: they were not fsynced).

use crate::error::LsmError;
use crate::faults::buggify;
use crate::frame::{encode_frame_with, encode_sync_marker};
use crate::fs::{DetachedFsync, FileSystem, FsError, FsErrorKind};
use crate::seal::{seal_portions_max, BatchSealer, SealerMark};
use std::sync::{Arc, Mutex};

/// The name of WAL file `id`.
pub(crate) fn wal_file_name(id: u64) -> String {
    format!("{id:06}.wal")
}

/// What fsyncs have made durable of the live WAL, shared with detached fsyncs (which finish away
/// from the engine).
#[derive(Debug, Default)]
struct WalProgress {
    wal_id: u64,
    /// Bytes of WAL `wal_id` known fsynced.
    durable: u64,
    /// A detached fsync failed: nothing is learned from later ones (fsyncgate; the engine is
    /// poisoned by `sync_finish` anyway).
    failed: bool,
    /// A detached fsync made this predecessor WAL durable ([`Wal::rotate`]).
    predecessor_durable: Option<u64>,
}

fn lock_progress(p: &Mutex<WalProgress>) -> std::sync::MutexGuard<'_, WalProgress> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A sync in progress, from [`crate::Lsm::sync_begin`]: run [`SyncTicket::fsync`] (outside any
/// lock), then hand its result to [`crate::Lsm::sync_finish`].
pub struct SyncTicket {
    pub(crate) covers_seq: u64,
    pub(crate) fsync: Option<DetachedFsync>,
}

impl SyncTicket {
    /// Every write with a sequence number up to this one is durable once the sync finishes.
    pub fn covers_seq(&self) -> u64 {
        self.covers_seq
    }

    /// Whether the fsync is still to run ([`SyncTicket::fsync`]), away from the engine: false when
    /// it was done in place (a file system that cannot detach one) or nothing needed it.
    pub fn is_detached(&self) -> bool {
        self.fsync.is_some()
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

/// What staging one record changed before it was known to fit on the disk, to take it back
/// ([`Wal::unstage`]).
#[derive(Debug)]
pub(crate) struct Staged {
    buffer_from: usize,
    marked: u64,
    sealer: SealerUndo,
    unsynced: bool,
}

/// How to put the sealer back as it was before a record was staged. Cloning the whole sealer
/// for every record copied its growing list of crcs: about a thousand instructions per write in
/// a batch of 30 (callgrind, issue #15).
#[derive(Debug)]
enum SealerUndo {
    /// No seal since: rewinding to the mark is enough.
    Rewind(SealerMark),
    /// The record sealed the batch: the sealer as it was before the record.
    Whole(BatchSealer),
}

/// The live WAL.
#[derive(Debug)]
pub(crate) struct Wal {
    /// The file id (the manifest's `wal_id`).
    id: u64,
    /// Records staged and not yet appended to the file.
    buffer: Vec<u8>,
    /// Bytes of records written to the file (the end of the last complete write).
    len: u64,
    /// The file's length: `len` plus the zeros appended ahead of the records (module doc,
    /// "Preallocation").
    allocated: u64,
    /// Zeros appended after the records of a write that reaches the end of the file (0: none).
    preallocate_bytes: u64,
    /// Records were staged since the last completed in-place fsync.
    unsynced: bool,
    /// Bytes of the file known fsynced (in place; detached fsyncs report through `progress`).
    durable: u64,
    /// The claim of the last sync marker staged: the next record stages a new marker first when
    /// `durable` has passed it.
    marked: u64,
    progress: Arc<Mutex<WalProgress>>,
    /// Seals the batch being appended before it is handed to an fsync (`seal.rs`).
    sealer: BatchSealer,
    /// Bytes appended to WAL files since open (all WALs: a counter for write amplification).
    bytes_written: u64,
    /// The WAL a freeze retired ([`Wal::rotate`]), until an fsync of it and of the directory
    /// (which gained this file's entry) is known to have succeeded. Its records are older than
    /// every record of this one, so every sync fsyncs both before this file: an acknowledged
    /// record never outlives an older one, nor its file's name (recovery keeps a prefix,
    /// `recovery.rs`).
    predecessor: Option<u64>,
}

impl Wal {
    /// The WAL `id` as recovery found it: `len` valid bytes, of which sync markers claim
    /// `synced_through`. Nothing is known durable yet (recovery fsyncs, then [`Wal::all_durable`]).
    pub(crate) fn recovered(id: u64, len: u64, synced_through: u64) -> Self {
        let wal = Wal {
            id,
            buffer: Vec::new(),
            len,
            allocated: len,
            preallocate_bytes: 0,
            unsynced: false,
            durable: synced_through,
            marked: synced_through,
            progress: Arc::default(),
            sealer: BatchSealer::new(len),
            bytes_written: 0,
            predecessor: None,
        };
        wal.check_invariants();
        wal
    }

    /// Appends `bytes` of zeros ahead of the records whenever a write reaches the end of the file
    /// (module doc, "Preallocation"; 0 turns it off).
    pub(crate) fn preallocate(&mut self, bytes: u64) {
        self.preallocate_bytes = bytes;
    }

    /// The file id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The file name.
    pub(crate) fn name(&self) -> String {
        wal_file_name(self.id)
    }

    /// Bytes appended to WAL files since open.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Records were staged since the last completed in-place fsync.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Stages the record `seq` (a sync marker first if an fsync has made more durable than the
    /// last marker claims) and returns how to take it back.
    #[cfg(test)]
    pub(crate) fn stage(&mut self, seq: u64, payload: &[u8], payload_bytes_max: usize) -> Staged {
        self.stage_with(seq, |out| out.extend_from_slice(payload), payload_bytes_max)
    }

    /// [`Self::stage`] with the payload appended by `write_payload` straight into the buffer.
    pub(crate) fn stage_with(
        &mut self,
        seq: u64,
        write_payload: impl FnOnce(&mut Vec<u8>),
        payload_bytes_max: usize,
    ) -> Staged {
        let mark = self.sealer.mark();
        let buffer_from = self.buffer.len();
        let (marked, unsynced) = (self.marked, self.unsynced);
        if self.durable > self.marked {
            // Durable knowledge first: "the first `durable` bytes were fsynced", true as written,
            // so recovery may trust it whether or not this marker is fsynced itself.
            encode_sync_marker(&mut self.buffer, self.durable);
            self.marked = self.durable;
        }
        encode_frame_with(&mut self.buffer, seq, write_payload);
        self.sealer.absorb(&self.buffer[buffer_from..]);
        let sealer = if self.sealer.portion_count() >= seal_portions_max(payload_bytes_max) {
            // Sealing starts a new batch, which a rewind cannot undo: keep the sealer as it
            // was (rare: once per `seal_portions_max` portions).
            let mut before = self.sealer.clone();
            before.rewind(mark);
            // A seal must fit in a frame: a long batch is sealed in parts.
            self.sealer.seal(&mut self.buffer);
            SealerUndo::Whole(before)
        } else {
            SealerUndo::Rewind(mark)
        };
        self.unsynced = true;
        Staged {
            buffer_from,
            marked,
            sealer,
            unsynced,
        }
    }

    /// Stages the record `seq` and writes the buffer out once it holds `wal_buffer_bytes`. A full
    /// disk met while writing is undone (the file cut back to its last complete append, the
    /// record taken back out of the buffer) and returned as `NoSpace`; any other failure must
    /// poison: a partial record followed by later ones would read as corruption. The record's
    /// payload is what `write_payload` appends (straight into the buffer).
    pub(crate) fn append<F: FileSystem>(
        &mut self,
        fs: &mut F,
        seq: u64,
        write_payload: impl FnOnce(&mut Vec<u8>),
        payload_bytes_max: usize,
        wal_buffer_bytes: usize,
    ) -> Result<(), LsmError> {
        let staged = self.stage_with(seq, write_payload, payload_bytes_max);
        // Writing the buffer out before it is full is legal: unsynced either way (BUGGIFY).
        if self.buffer.len() >= wal_buffer_bytes || buggify!(fs, "lsm/wal-write-early") {
            if let Err(e) = self.write_buffer(fs) {
                if !e.is_no_space() {
                    return Err(e);
                }
                self.cut_to_written(fs)?;
                self.unstage(staged);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes a staged record back out of the buffer (it did not fit on the disk), with the
    /// marker and seal state it changed.
    pub(crate) fn unstage(&mut self, staged: Staged) {
        self.buffer.truncate(staged.buffer_from);
        self.marked = staged.marked;
        match staged.sealer {
            SealerUndo::Rewind(mark) => self.sealer.rewind(mark),
            SealerUndo::Whole(before) => self.sealer = before,
        }
        self.unsynced = staged.unsynced;
    }

    /// Seals the batch in the buffer: a batch handed to an fsync is always sealed (FORMAT.md,
    /// "WAL recovery").
    pub(crate) fn seal(&mut self) {
        self.sealer.seal(&mut self.buffer);
    }

    /// Writes the buffer to the file: over the zeros appended ahead as far as they reach, the
    /// rest appended (with zeros after it when preallocating).
    pub(crate) fn write_buffer<F: FileSystem>(&mut self, fs: &mut F) -> Result<(), LsmError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let name = self.name();
        let records = self.buffer.len();
        let ahead = usize::try_from(self.allocated - self.len).unwrap_or(usize::MAX);
        let over = ahead.min(records);
        if over > 0 {
            fs.write_at(&name, self.len, &self.buffer[..over])?;
        }
        if over < records {
            self.append_past_end(fs, &name, over)?;
        }
        self.len += records as u64;
        self.bytes_written += records as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Appends the buffer from `from` at the end of the file, followed by `preallocate_bytes` of
    /// zeros. On a full disk the zeros are given up (the partial append cut back) before the
    /// records are: preallocation never refuses a write that fits without it.
    fn append_past_end<F: FileSystem>(
        &mut self,
        fs: &mut F,
        name: &str,
        from: usize,
    ) -> Result<(), LsmError> {
        let records = self.buffer.len();
        let rest = (records - from) as u64;
        if self.preallocate_bytes > 0 {
            let zeros = usize::try_from(self.preallocate_bytes).unwrap_or(0);
            self.buffer.resize(records + zeros, 0);
            let appended = fs.append(name, &self.buffer[from..]);
            self.buffer.truncate(records);
            match appended {
                Ok(()) => {
                    self.allocated += rest + zeros as u64;
                    self.bytes_written += zeros as u64;
                    return Ok(());
                }
                Err(e) if e.kind == FsErrorKind::NoSpace => {
                    if fs.len(name)? > self.allocated {
                        fs.truncate(name, self.allocated)?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        fs.append(name, &self.buffer[from..])?;
        self.allocated += rest;
        Ok(())
    }

    /// Cuts the file back to the end of its last complete write: a short append on a full disk
    /// leaves part of a record after it, which would strand every later record behind garbage
    /// at recovery, and records written over the zeros ahead before the failure are zeroed
    /// again (past `len` the file holds zeros). The bytes cut or zeroed were never fsynced.
    pub(crate) fn cut_to_written<F: FileSystem>(&self, fs: &mut F) -> Result<(), LsmError> {
        let name = self.name();
        if fs.len(&name)? > self.allocated {
            fs.truncate(&name, self.allocated)?;
        }
        if self.allocated > self.len {
            let zeros = vec![0; usize::try_from(self.allocated - self.len).unwrap_or(0)];
            fs.write_at(&name, self.len, &zeros)?;
        }
        Ok(())
    }

    /// Fsyncs the file in place and records what that made durable.
    pub(crate) fn fsync<F: FileSystem>(&mut self, fs: &mut F) -> Result<(), LsmError> {
        fs.fsync(&self.name())?;
        self.unsynced = false;
        self.synced_through(self.len);
        Ok(())
    }

    /// Records that the first `len` bytes are durable: the next record stages a sync marker
    /// saying so.
    fn synced_through(&mut self, len: u64) {
        self.durable = self.durable.max(len);
        let mut p = lock_progress(&self.progress);
        if p.wal_id == self.id {
            p.durable = p.durable.max(len);
        }
    }

    /// An fsync of the file to run away from the engine (after the retired WAL's and the
    /// directory's, while one is owed: [`Wal::predecessor`]), reporting on success what it made
    /// durable (unless the WAL was replaced meanwhile or another detached fsync failed). `None`
    /// when the file system cannot detach one (then [`Wal::fsync_predecessor`] and
    /// [`Wal::fsync`] in place). `unsynced` stays set: only a completed in-place
    /// fsync clears it.
    pub(crate) fn detached_fsync<F: FileSystem>(
        &self,
        fs: &mut F,
    ) -> Result<Option<DetachedFsync>, LsmError> {
        // The retired WAL and the directory come first (`Wal::predecessor`).
        let before = match self.predecessor {
            Some(retired) => match self.detached_predecessor_fsync(fs, retired)? {
                Some(before) => Some(before),
                None => return Ok(None),
            },
            None => None,
        };
        let Some(fsync) = fs.detached_fsync(&self.name())? else {
            return Ok(None);
        };
        let progress = Arc::clone(&self.progress);
        let (wal_id, len) = (self.id, self.len);
        Ok(Some(Box::new(move || {
            let r = before
                .map_or(Ok(()), |before| before())
                .and_then(|()| fsync());
            let mut p = lock_progress(&progress);
            if r.is_err() {
                p.failed = true;
            } else if p.wal_id == wal_id && !p.failed {
                p.durable = p.durable.max(len);
            }
            r
        })))
    }

    /// Learns what finished detached fsyncs made durable.
    pub(crate) fn learn_detached(&mut self) {
        let p = lock_progress(&self.progress);
        if p.wal_id == self.id && !p.failed {
            self.durable = self.durable.max(p.durable);
        }
        if !p.failed && p.predecessor_durable.is_some() && p.predecessor_durable == self.predecessor
        {
            self.predecessor = None;
        }
    }

    /// Claims the records recovery replayed with a fsynced sync marker, rather than with the
    /// next write (which a crash may lose): a bad frame among them is then below the claim,
    /// reported. On a disk too full for even the marker, starts without it: the records are
    /// fsynced, and the next record stages the same claim first (`durable > marked`).
    pub(crate) fn claim_recovered<F: FileSystem>(&mut self, fs: &mut F) -> Result<(), LsmError> {
        let undo = (self.sealer.clone(), self.marked);
        encode_sync_marker(&mut self.buffer, self.len);
        self.sealer.absorb(&self.buffer);
        self.marked = self.len;
        match self.write_buffer(fs) {
            Ok(()) => fs.fsync(&self.name())?,
            Err(e) if e.is_no_space() => {
                self.cut_to_written(fs)?;
                self.buffer.clear();
                (self.sealer, self.marked) = undo;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Records that every byte written is durable (recovery fsynced the file) and starts the
    /// shared progress from there.
    pub(crate) fn all_durable(&mut self) {
        self.durable = self.len;
        *lock_progress(&self.progress) = WalProgress {
            wal_id: self.id,
            durable: self.len,
            failed: false,
            predecessor_durable: None,
        };
        self.check_invariants();
    }

    /// Starts the empty WAL `id` in place of this one, whose buffered records a flush has put in
    /// a table. Detached fsyncs of the old file still finish, harmlessly.
    pub(crate) fn restart(&mut self, id: u64) {
        self.id = id;
        self.buffer.clear();
        self.len = 0;
        self.allocated = 0;
        self.unsynced = false;
        self.durable = 0;
        self.marked = 0;
        self.sealer = BatchSealer::new(0);
        let mut p = lock_progress(&self.progress);
        let failed = p.failed;
        *p = WalProgress {
            wal_id: id,
            durable: 0,
            failed,
            predecessor_durable: None,
        };
        drop(p);
        self.check_invariants();
    }

    /// Retires this WAL for a flush (its records are the memtable just frozen) and starts the
    /// empty WAL `next` for the writes that follow: the buffered records are sealed and written
    /// (not fsynced: the next sync does that first, [`Wal::predecessor`]) and `next` is created.
    /// On a failure nothing is retired (a partial append is cut back when the disk is full).
    pub(crate) fn rotate<F: FileSystem>(&mut self, fs: &mut F, next: u64) -> Result<(), LsmError> {
        assert!(
            self.predecessor.is_none(),
            "one frozen WAL at a time: the last flush installed its table before this freeze"
        );
        self.seal();
        if let Err(e) = self.write_buffer(fs) {
            if e.is_no_space() {
                self.cut_to_written(fs)?;
            }
            return Err(e);
        }
        fs.create(&wal_file_name(next))?;
        // Owed even when the retired file is all fsynced: the directory's entry for `next`.
        let retired = self.id;
        self.restart(next);
        self.predecessor = Some(retired);
        Ok(())
    }

    /// The retired WAL still to fsync before this one ([`Wal::rotate`]).
    pub(crate) fn predecessor(&self) -> Option<u64> {
        self.predecessor
    }

    /// The flush of the retired WAL's records installed its table: they are durable there.
    pub(crate) fn predecessor_installed(&mut self, retired: u64) {
        if self.predecessor == Some(retired) {
            self.predecessor = None;
        }
    }

    /// An fsync of the `retired` WAL and of the directory, run away from the engine before the
    /// live WAL's; reports success through the shared progress ([`Wal::learn_detached`]).
    /// `None` when the file system cannot detach them.
    fn detached_predecessor_fsync<F: FileSystem>(
        &self,
        fs: &mut F,
        retired: u64,
    ) -> Result<Option<DetachedFsync>, LsmError> {
        let Some(file) = fs.detached_fsync(&wal_file_name(retired))? else {
            return Ok(None);
        };
        let Some(dir) = fs.detached_fsync_dir()? else {
            return Ok(None);
        };
        let progress = Arc::clone(&self.progress);
        Ok(Some(Box::new(move || {
            let r = file().and_then(|()| dir());
            let mut p = lock_progress(&progress);
            if r.is_err() {
                p.failed = true;
            } else if !p.failed {
                p.predecessor_durable = Some(retired);
            }
            r
        })))
    }

    /// Fsyncs the retired WAL and the directory in place.
    pub(crate) fn fsync_predecessor<F: FileSystem>(&mut self, fs: &mut F) -> Result<(), LsmError> {
        if let Some(retired) = self.predecessor {
            fs.fsync(&wal_file_name(retired))?;
            fs.fsync_dir()?;
            self.predecessor = None;
        }
        Ok(())
    }

    /// Panics if the bookkeeping is inconsistent (a bug).
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.marked <= self.durable,
            "WAL {}: a sync marker claims {} bytes, only {} are durable",
            self.id,
            self.marked,
            self.durable
        );
        assert!(
            self.durable <= self.len,
            "WAL {}: {} bytes durable of {} written",
            self.id,
            self.durable,
            self.len
        );
        assert!(
            self.len <= self.allocated,
            "WAL {}: {} bytes of records in a file of {}",
            self.id,
            self.len,
            self.allocated
        );
        assert!(
            self.buffer.is_empty() || self.unsynced,
            "WAL {}: buffered records not marked unsynced",
            self.id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::scan_wal;
    use crate::fs::SimFs;

    #[test]
    fn a_record_after_an_fsync_stages_the_claim_first_and_recovery_trusts_it() {
        let mut fs = SimFs::seeded(1);
        fs.create(&wal_file_name(7)).expect("create");
        let mut wal = Wal::recovered(7, 0, 0);
        wal.all_durable();
        wal.stage(1, b"first", 1 << 10);
        wal.seal();
        wal.write_buffer(&mut fs).expect("write");
        wal.fsync(&mut fs).expect("fsync");
        let synced = fs.len(&wal.name()).expect("len");
        wal.stage(2, b"second", 1 << 10);
        wal.check_invariants();
        wal.write_buffer(&mut fs).expect("write");
        let bytes = fs.read_all(&wal.name()).expect("read");
        let scan = scan_wal(&bytes, 1 << 10, true).expect("scan");
        assert_eq!(
            scan.frames.len(),
            2,
            "both records, the marker is not a record"
        );
        assert_eq!(scan.synced_through, synced);
    }

    #[test]
    fn unstage_restores_the_buffer_and_the_claims() {
        let mut wal = Wal::recovered(3, 100, 40);
        wal.all_durable();
        let staged = wal.stage(9, b"value", 1 << 10);
        assert!(wal.unsynced());
        wal.unstage(staged);
        assert!(!wal.unsynced());
        assert!(wal.buffer.is_empty());
        assert_eq!(
            wal.marked, 40,
            "the marker staged with the record is taken back too"
        );
        wal.check_invariants();
    }

    #[test]
    fn a_restart_forgets_the_old_file() {
        let mut wal = Wal::recovered(3, 100, 100);
        wal.all_durable();
        wal.stage(9, b"value", 1 << 10);
        wal.restart(4);
        assert_eq!(
            (wal.id(), wal.len, wal.durable, wal.unsynced()),
            (4, 0, 0, false)
        );
        wal.learn_detached();
        assert_eq!(wal.durable, 0);
    }
}
