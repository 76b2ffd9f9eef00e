//! Whether the engine may write: poisoned for good by a failed write path (PITFALLS: fsyncgate),
//! or short of space until the disk reserve can be taken back (see "Out of disk
//! space"). Reads go on in both cases.
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

use crate::error::LsmError;
use crate::fs::FileSystem;

/// The engine's write gate.
#[derive(Debug)]
pub(crate) struct Health {
    /// Why the engine is read-only, if a write-path failure poisoned it.
    poisoned: Option<String>,
    /// The disk filled up and the space reserve is released: writes are refused until it can be
    /// taken back.
    space_short: bool,
    /// Writes refused because the disk was full.
    no_space_refusals: u64,
}

impl Health {
    /// A gate for an engine being opened: short of space until the reserve is taken (opening
    /// releases it, so recovery has room).
    pub(crate) fn opening() -> Self {
        Health {
            poisoned: None,
            space_short: true,
            no_space_refusals: 0,
        }
    }

    /// Why the engine is read-only, if it is.
    pub(crate) fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Whether the engine is short of space.
    pub(crate) fn space_short(&self) -> bool {
        self.space_short
    }

    /// Writes refused because the disk was full.
    pub(crate) fn no_space_refusals(&self) -> u64 {
        self.no_space_refusals
    }

    /// Counts a write refused for space.
    pub(crate) fn count_no_space_refusal(&mut self) {
        self.no_space_refusals += 1;
    }

    /// `Poisoned` if a write-path failure poisoned the engine.
    pub(crate) fn writable(&self) -> Result<(), LsmError> {
        match &self.poisoned {
            Some(why) => Err(LsmError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Poisons for `why` unless already poisoned (the first cause is the one reported).
    pub(crate) fn poison(&mut self, why: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some(why);
        }
    }

    /// Poisons on any error.
    pub(crate) fn poison_on_err<T>(&mut self, r: Result<T, LsmError>) -> Result<T, LsmError> {
        if let Err(e) = &r {
            self.poison(e.to_string());
        }
        r
    }

    /// Like [`Health::poison_on_err`], except for a full disk met by a write (never by an
    /// fsync), which the failing step has already undone.
    pub(crate) fn poison_unless_no_space<T>(
        &mut self,
        r: Result<T, LsmError>,
    ) -> Result<T, LsmError> {
        match r {
            Err(e) if e.is_no_space() => Err(e),
            other => self.poison_on_err(other),
        }
    }

    /// A failed sync: a full disk before any fsync is returned as is (nothing was fsynced,
    /// nothing is lost); anything else poisons for good and returns `Poisoned` (the fsync is
    /// never retried).
    pub(crate) fn sync_failed(&mut self, e: LsmError) -> LsmError {
        if e.is_no_space() {
            return e;
        }
        let why = format!("sync failed: {e}");
        self.poisoned = Some(why.clone());
        LsmError::Poisoned(why)
    }

    /// A detached fsync failed: poisons for good (unless already poisoned: the first cause is
    /// the one reported) and returns `Poisoned`.
    pub(crate) fn detached_fsync_failed(&mut self, e: &crate::fs::FsError) -> LsmError {
        let why = format!("sync failed: {e}");
        self.poison(why.clone());
        LsmError::Poisoned(why)
    }

    /// The disk is full: releases the reserve, so that what is already staged can still be
    /// written and synced, and refuses writes until [`Health::take_space_reserve`] succeeds.
    pub(crate) fn release_space_reserve<F: FileSystem>(
        &mut self,
        fs: &mut F,
    ) -> Result<(), LsmError> {
        self.space_short = true;
        fs.release_space()?;
        Ok(())
    }

    /// Takes the space reserve back if it was released; fails (with `NoSpace` while the disk is
    /// still full) if it cannot, and the write asking is refused before it touches anything.
    pub(crate) fn take_space_reserve<F: FileSystem>(
        &mut self,
        fs: &mut F,
        reserve_bytes: u64,
    ) -> Result<(), LsmError> {
        if !self.space_short {
            return Ok(());
        }
        match fs.reserve_space(reserve_bytes) {
            Ok(()) => {
                self.space_short = false;
                Ok(())
            }
            Err(e) => {
                self.no_space_refusals += 1;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_poison_is_the_one_reported_and_sticks() {
        let mut h = Health::opening();
        assert!(h.writable().is_ok());
        h.poison("first".into());
        h.poison("second".into());
        assert_eq!(h.poisoned(), Some("first"));
        assert!(matches!(h.writable(), Err(LsmError::Poisoned(why)) if why == "first"));
    }

    #[test]
    fn a_full_disk_does_not_poison() {
        let mut h = Health::opening();
        let full = LsmError::Io(crate::fs::FsError::new(
            "x",
            crate::fs::FsErrorKind::NoSpace,
            "full",
        ));
        assert!(h.poison_unless_no_space::<()>(Err(full.clone())).is_err());
        assert_eq!(h.poisoned(), None);
        assert!(h.sync_failed(full).is_no_space());
        assert_eq!(h.poisoned(), None);
    }
}
