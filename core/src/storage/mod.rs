//! The storage seam. A replica reads and stages records through [`Storage`]; staged records become
//! durable only when the driver calls [`Storage::sync`] in answer to `Output::Persist`, and the node
//! acknowledges writes only after `handle_persisted`. The in-memory engine here models exactly
//! that; the LSM engine (its own issue) implements the same trait over a file-system trait.
//! [`GroupCommit`] is the one group-commit policy both drivers run between `Output::Persist` and
//! their fsync.

mod group_commit;
mod memory;

pub use group_commit::GroupCommit;
pub use memory::MemStorage;

use crate::version::Record;
use bytes::Bytes;
use std::fmt;

/// Why storage could not serve a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// An earlier sync failed; the engine refuses everything until restarted and recovered
    /// (PITFALLS: a failed fsync is never retried).
    Poisoned(String),
    /// Stored bytes failed their checksum or could not be decoded.
    Corrupt(String),
    /// Any other IO failure.
    Io(String),
    /// The disk is full: the write was refused and had no effect (nothing of it stays staged);
    /// unlike a failed fsync it poisons nothing, and writes are accepted again once space is
    /// back.
    NoSpace(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Poisoned(why) => write!(f, "storage poisoned: {why}"),
            StorageError::Corrupt(why) => write!(f, "storage corrupt: {why}"),
            StorageError::Io(why) => write!(f, "storage io error: {why}"),
            StorageError::NoSpace(why) => write!(f, "storage out of disk space: {why}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// A replica's key-value store of records.
pub trait Storage {
    /// The record of `key`, including staged (not yet durable) writes.
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StorageError>;

    /// Stages a record for `key`, replacing what was there. Visible to `get` at once; durable only
    /// after the next successful `sync`.
    fn put(&mut self, key: Bytes, record: Record) -> Result<(), StorageError>;

    /// Stages the removal of `key` (used for delivered hints; client deletes are tombstone
    /// records written with `put`). Durable after the next successful `sync`.
    fn delete(&mut self, key: &[u8]) -> Result<(), StorageError>;

    /// Makes every staged record durable. A failure poisons the storage for good.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Up to `limit` records with keys `>= start`, in key order (for anti-entropy and streaming).
    fn scan(&mut self, start: &[u8], limit: usize) -> Result<Vec<(Bytes, Record)>, StorageError>;
}
