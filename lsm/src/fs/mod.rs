//! The file-system seam: everything the engine does to a disk goes through [`FileSystem`], so the
//! same engine runs on real files ([`StdFs`]) and on a seeded, fault-injecting in-memory disk
//! (`SimFs`).
//!
//! The namespace is one flat directory of files named by plain strings (no `/`): the engine owns a
//! directory and never needs more. Durability follows POSIX as the engine must assume it:
//! * bytes appended to a file are durable only after [`FileSystem::fsync`] of that file;
//! * a file's *existence* (create, rename, remove) is durable only after
//!   [`FileSystem::fsync_dir`] (PITFALLS, storage: "a new file is not durable until its directory
//!   is fsynced").
//!
//! A failed `fsync` must never be retried by the caller (PITFALLS: fsyncgate); the engine poisons
//! itself instead.
//!
//! `SimFs` is test machinery: it exists only with the `testing` cargo feature.

#[cfg(any(test, feature = "testing"))]
mod sim;
mod std_fs;

#[cfg(any(test, feature = "testing"))]
pub use sim::{
    CrashMode, LatencyRange, SimFs, SimFsOptions, SimFsStats, SimLatency, SimOpKind, SECTOR_BYTES,
};
pub use std_fs::{StdFs, SPACE_RESERVE_FILE};

use std::fmt;

/// Why a file-system call failed. Always names the file (or `"<dir>"` for directory calls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsError {
    /// The file the call was about.
    pub file: String,
    /// What went wrong.
    pub kind: FsErrorKind,
    /// Free-form detail (the OS error text, the injected fault).
    pub detail: String,
}

/// The class of a file-system failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsErrorKind {
    /// The file does not exist.
    NotFound,
    /// The file already exists (for [`FileSystem::create`]).
    AlreadyExists,
    /// An fsync failed: the caller must poison itself and never retry.
    SyncFailed,
    /// The disk is full.
    NoSpace,
    /// Any other failure.
    Other,
}

impl FsError {
    /// A new error about `file`.
    pub fn new(file: &str, kind: FsErrorKind, detail: impl Into<String>) -> Self {
        FsError {
            file: file.to_string(),
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}: {}", self.file, self.kind, self.detail)
    }
}

impl std::error::Error for FsError {}

/// An fsync taken out of the file system: running it makes durable the bytes the file held when it
/// was detached (and possibly more), without borrowing the file system. See
/// [`FileSystem::detached_fsync`].
pub type DetachedFsync = Box<dyn FnOnce() -> Result<(), FsError> + Send>;

/// The small set of file operations the engine needs, over one flat directory.
///
/// Every method takes `&mut self`: the engine is single-threaded and deterministic, and the
/// simulated disk mutates its state (fault draws) even on reads.
pub trait FileSystem {
    /// Creates an empty file. Fails with [`FsErrorKind::AlreadyExists`] if `name` exists.
    /// The new name is durable only after [`FileSystem::fsync_dir`].
    fn create(&mut self, name: &str) -> Result<(), FsError>;

    /// Appends `data` at the end of `name`. Durable only after [`FileSystem::fsync`].
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), FsError>;

    /// Writes `data` over the bytes at `offset`, which must lie within the file's current length
    /// (it never extends a file: an error otherwise). Durable only after [`FileSystem::fsync`];
    /// until then a crash may leave the old bytes, the new ones, or a mix by sector. Why it
    /// exists: the WAL writes its records over zeros it appended ahead of them, so that most
    /// fsyncs change no file size (`wal.rs`, "Preallocation").
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), FsError>;

    /// Reads exactly `len` bytes at `offset`. Reading past the end is an error, never a short read.
    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, FsError>;

    /// The current length of `name` in bytes (including unsynced appends).
    fn len(&mut self, name: &str) -> Result<u64, FsError>;

    /// Makes the content of `name` durable. A failure must poison the caller (never retried).
    fn fsync(&mut self, name: &str) -> Result<(), FsError>;

    /// Atomically replaces `to` with `from`. Durable only after [`FileSystem::fsync_dir`].
    fn rename(&mut self, from: &str, to: &str) -> Result<(), FsError>;

    /// Removes `name`. Durable only after [`FileSystem::fsync_dir`].
    fn remove(&mut self, name: &str) -> Result<(), FsError>;

    /// The names of all files, sorted.
    fn list(&mut self) -> Result<Vec<String>, FsError>;

    /// Makes every create, rename and remove so far durable.
    fn fsync_dir(&mut self) -> Result<(), FsError>;

    /// Cuts `name` to `len` bytes (used to drop a torn WAL tail). Durable only after `fsync`.
    fn truncate(&mut self, name: &str, len: u64) -> Result<(), FsError>;

    /// An fsync of `name` to run later, away from `&mut self`, so that a driver sharing the engine
    /// between threads can fsync outside its lock while other writers stage writes (group
    /// commit; [`crate::Lsm::sync_begin`]). `None` when the file system cannot detach one (the
    /// simulated disk): the engine then fsyncs in place. A failure of the detached fsync must
    /// poison the engine like any other (never retried).
    fn detached_fsync(&mut self, name: &str) -> Result<Option<DetachedFsync>, FsError> {
        let _ = name;
        Ok(None)
    }

    /// [`FileSystem::fsync_dir`] to run later, like [`FileSystem::detached_fsync`]; `None` when
    /// the file system cannot detach one.
    fn detached_fsync_dir(&mut self) -> Result<Option<DetachedFsync>, FsError> {
        Ok(None)
    }

    /// Sets aside `bytes` of disk space outside every engine file (a reserve, see
    /// `health.rs`, "Out of disk space"), replacing any reserve held. Fails with
    /// [`FsErrorKind::NoSpace`] when the disk cannot hold it, holding none then. A file system
    /// that never runs out of space keeps nothing (the default).
    fn reserve_space(&mut self, bytes: u64) -> Result<(), FsError> {
        let _ = bytes;
        Ok(())
    }

    /// Gives the reserve (if any) back to the disk, so that what must finish (a sync of staged
    /// writes, recovery, a flush) has room.
    fn release_space(&mut self) -> Result<(), FsError> {
        Ok(())
    }

    /// Makes the file `name` appear under the same name in `target`, another directory of the
    /// same disk (a checkpoint, [`crate::Lsm::checkpoint`]), with the same bytes, as durable
    /// there as they are here; the new name is durable only after `target`'s
    /// [`FileSystem::fsync_dir`]. Fails with [`FsErrorKind::AlreadyExists`] if `target` has
    /// `name`.
    ///
    /// The engine calls it only on files it never changes again (finished tables, sealed
    /// value-log segments), so a hard link (real disks: no bytes copied, and the inode outlives
    /// a later removal here) and a copy are the same to both sides. The default copies and
    /// fsyncs the copy.
    fn link_to(&mut self, name: &str, target: &mut Self) -> Result<(), FsError>
    where
        Self: Sized,
    {
        let bytes = self.read_all(name)?;
        target.create(name)?;
        target.append(name, &bytes)?;
        target.fsync(name)
    }

    /// Whether the engine's sim-only fault site `site` fires now (`faults.rs`, BUGGIFY). Only
    /// the simulated disk with fault points switched on ever says yes; a real file system keeps
    /// this default, so fault points are never live in production.
    fn fault_point(&mut self, site: &'static str) -> bool {
        let _ = site;
        false
    }

    /// Whether `name` exists.
    fn exists(&mut self, name: &str) -> Result<bool, FsError> {
        Ok(self.list()?.iter().any(|n| n == name))
    }

    /// Reads the whole file.
    fn read_all(&mut self, name: &str) -> Result<Vec<u8>, FsError> {
        let len = self.len(name)?;
        let len = usize::try_from(len)
            .map_err(|_| FsError::new(name, FsErrorKind::Other, "file too large"))?;
        self.read_at(name, 0, len)
    }
}
