//! Checkpoints ([`crate::Lsm::checkpoint`]): once the engine has flushed its memtable and sealed
//! its active value-log segment, every file its manifest names is one it never changes again,
//! and a checkpoint is those files linked into another directory, an empty WAL and active
//! segment, and last a manifest naming exactly them.

use crate::error::LsmError;
use crate::fs::{FileSystem, FsError, FsErrorKind};
use crate::manifest::{self, ManifestState, MANIFEST_FILE};
use crate::outcome::CheckpointReport;
use crate::recovery::is_engine_file;
use crate::table::table_file_name;
use crate::vlog::vlog_file_name;
use crate::wal::wal_file_name;

/// Refuses a `target` that holds an engine file or a manifest with `AlreadyExists`.
pub(crate) fn check_empty<F: FileSystem>(target: &mut F) -> Result<(), LsmError> {
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
    Ok(())
}

/// Links the tables and sealed segments of `state` from `fs` into `target`, creates the
/// checkpoint's own empty WAL and active segment, and stores its manifest last (atomically: a
/// checkpoint without its manifest is incomplete). The linked files need no fsync: each was
/// fsynced when finished or sealed, and a hard link shares that durable inode.
pub(crate) fn link_files<F: FileSystem>(
    fs: &mut F,
    state: &ManifestState,
    target: &mut F,
) -> Result<CheckpointReport, LsmError> {
    let mut report = CheckpointReport {
        last_seq: state.last_seq,
        ..CheckpointReport::default()
    };
    for table in state.levels.iter().flatten() {
        fs.link_to(&table_file_name(table.id), target)?;
        report.tables += 1;
        report.bytes += table.size_bytes;
    }
    for (id, segment) in &state.segments {
        if *id != state.vlog_active {
            fs.link_to(&vlog_file_name(*id), target)?;
            report.segments += 1;
            report.bytes += segment.size_bytes;
        }
    }
    target.create(&wal_file_name(state.wal_id))?;
    target.create(&vlog_file_name(state.vlog_active))?;
    target.fsync_dir()?;
    manifest::store(target, state)?;
    Ok(report)
}
