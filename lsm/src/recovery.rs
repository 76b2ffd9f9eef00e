//! What recovery did at open, for callers to surface: a WAL cut short, and whether the cut is
//! beyond doubt a crash artefact or may have dropped acknowledged writes (FORMAT.md, "WAL
//! recovery").

use std::fmt;

/// What [`crate::Lsm::open`] did while recovering, beyond replaying the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The live WAL was cut at a bad frame (every byte from there on dropped).
    pub wal_cut: Option<WalTruncation>,
}

impl RecoveryReport {
    /// A description of the cut if it may have dropped acknowledged writes (an operator should
    /// hear of it: the store opened, but a bit flip in the last synced batch cannot be ruled
    /// out); `None` when recovery is beyond doubt (no cut, or damage only a crash leaves).
    pub fn suspect(&self) -> Option<String> {
        self.wal_cut
            .as_ref()
            .filter(|cut| cut.cause != WalTruncationCause::UnsyncedTail)
            .map(ToString::to_string)
    }
}

/// A WAL cut short by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalTruncation {
    /// The WAL file.
    pub file: String,
    /// Offset of the first bad frame, where the file was cut.
    pub offset: u64,
    /// Bytes dropped (from `offset` to the old end of the file).
    pub bytes_dropped: u64,
    /// Why the cut was taken, and how sure recovery is that nothing acknowledged was lost.
    pub cause: WalTruncationCause,
}

/// Why recovery cut a WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalTruncationCause {
    /// Damage only a crash leaves, in bytes no completed sync covered: a torn write, a lost
    /// sector, a cut. Nothing acknowledged was dropped.
    UnsyncedTail,
    /// The last batch is damaged in the one shape both a crash and bit rot of synced bytes leave
    /// (a sector portion reads as all zeros where it held a single set bit): possibly a torn tail,
    /// possibly corruption of the last synced batch.
    PossiblyCorruptLastBatch {
        /// Offset of the damaged portion.
        portion_offset: u64,
    },
    /// A WAL written by an older format (no batch seals): damage in its last synced batch cannot
    /// be told from a torn tail.
    Unverifiable,
}

impl fmt::Display for WalTruncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL {} cut at offset {} ({} bytes dropped): ",
            self.file, self.offset, self.bytes_dropped
        )?;
        match self.cause {
            WalTruncationCause::UnsyncedTail => write!(f, "torn unsynced tail"),
            WalTruncationCause::PossiblyCorruptLastBatch { portion_offset } => write!(
                f,
                "possibly a torn tail, possibly corruption of the last synced batch (the sector \
                 portion at {portion_offset} reads as zeros where one bit was set)"
            ),
            WalTruncationCause::Unverifiable => write!(
                f,
                "possibly a torn tail, possibly corruption of the last synced batch (a WAL of an \
                 older format, without batch seals)"
            ),
        }
    }
}
