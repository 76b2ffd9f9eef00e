//! The engine's error type. Every error about stored bytes names the file it came from.

use crate::fs::{FsError, FsErrorKind};
use std::fmt;

/// Why an engine call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LsmError {
    /// An earlier fsync (or a write that must precede one) failed: the engine is read-only until
    /// it is reopened (PITFALLS: a failed fsync is never retried). Carries the first reason.
    Poisoned(String),
    /// Stored bytes failed a checksum or could not be decoded.
    Corrupt {
        /// The file holding the bad bytes.
        file: String,
        /// What was wrong.
        detail: String,
    },
    /// A file-system call failed.
    Io(FsError),
    /// A value longer than `value_bytes_max`.
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A key longer than `key_bytes_max` (or empty).
    InvalidKey {
        /// Its length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A configuration that `LsmConfig::validate` refuses.
    InvalidConfig(String),
}

impl LsmError {
    /// A corruption error about `file`.
    pub fn corrupt(file: &str, detail: impl Into<String>) -> Self {
        LsmError::Corrupt {
            file: file.to_string(),
            detail: detail.into(),
        }
    }

    /// The file this error is about, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            LsmError::Corrupt { file, .. } => Some(file),
            LsmError::Io(e) => Some(&e.file),
            _ => None,
        }
    }

    /// Whether the disk was full. Such a failure of a *write* (never of an fsync: a full disk
    /// reported by fsync is a failed fsync) leaves the engine consistent and is retried later
    /// (`health.rs`, "Out of disk space").
    pub fn is_no_space(&self) -> bool {
        matches!(self, LsmError::Io(e) if e.kind == FsErrorKind::NoSpace)
    }

    /// Whether this error came from a failed fsync (which must poison the engine).
    pub fn is_sync_failure(&self) -> bool {
        matches!(self, LsmError::Io(e) if e.kind == FsErrorKind::SyncFailed)
    }
}

impl From<FsError> for LsmError {
    fn from(e: FsError) -> Self {
        LsmError::Io(e)
    }
}

impl fmt::Display for LsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LsmError::Poisoned(why) => write!(f, "engine poisoned (read-only): {why}"),
            LsmError::Corrupt { file, detail } => write!(f, "corrupt file {file}: {detail}"),
            LsmError::Io(e) => write!(f, "io error: {e}"),
            LsmError::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes exceeds value_bytes_max {max}")
            }
            LsmError::InvalidKey { len, max } => {
                write!(
                    f,
                    "key of {len} bytes is empty or exceeds key_bytes_max {max}"
                )
            }
            LsmError::InvalidConfig(why) => write!(f, "invalid config: {why}"),
        }
    }
}

impl std::error::Error for LsmError {}
