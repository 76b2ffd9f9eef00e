//! Group commit: one fsync of the WAL makes every write staged before it durable. A WAL record
//! holds its value inline (values reach the value log only in flushes, which fsync it before the
//! table pointing at it), so a sync never waits on the value log. What it does wait on: the WAL a
//! freeze retired, while its tail may be unsynced (`Wal::rotate`): that file and the directory
//! (which gained the live WAL's entry) are fsynced first, so an acknowledged record never
//! outlives an older one. The batch is sealed, written and fsynced (in place, or detached for a
//! driver that fsyncs outside its lock); a full disk met while writing releases the space
//! reserve once (`health.rs`, "Out of disk space").
//!
//! A split sync ([`crate::Lsm::sync_begin`]) is safe against anything that happens between its
//! halves: later writes are not covered (and a plain sync still fsyncs them, since the WAL stays
//! marked unsynced); a flush makes the covered writes durable in a table and removes the WAL
//! file, which the detached fsync can still sync harmlessly. On a file system that cannot detach
//! an fsync the ticket's fsync is done in place and the ticket's is a no-op.

use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::health::Health;
use crate::wal::{SyncTicket, Wal};

/// The components a sync works on, borrowed from the engine.
pub(crate) struct Sync<'a, F: FileSystem> {
    pub(crate) fs: &'a mut F,
    pub(crate) wal: &'a mut Wal,
    pub(crate) health: &'a mut Health,
}

impl<F: FileSystem> Sync<'_, F> {
    /// Writes and fsyncs everything staged, in place.
    pub(crate) fn run(self) -> Result<(), LsmError> {
        self.wal.fsync_predecessor(self.fs)?;
        self.wal.seal();
        write_wal(self.fs, self.wal, self.health)?;
        if self.wal.unsynced() {
            self.wal.fsync(self.fs)?;
        }
        Ok(())
    }

    /// Writes everything staged and hands the WAL's fsync out in a ticket covering writes up to
    /// `covers_seq` (done in place if the file system cannot detach one).
    pub(crate) fn begin(self, covers_seq: u64) -> Result<SyncTicket, LsmError> {
        self.wal.learn_detached();
        if !self.wal.unsynced() && self.wal.predecessor().is_none() {
            return Ok(SyncTicket {
                covers_seq,
                fsync: None,
            });
        }
        self.wal.seal();
        write_wal(self.fs, self.wal, self.health)?;
        let fsync = self.wal.detached_fsync(self.fs)?;
        if fsync.is_none() {
            self.wal.fsync_predecessor(self.fs)?;
            self.wal.fsync(self.fs)?;
        }
        Ok(SyncTicket { covers_seq, fsync })
    }
}

/// Writes the WAL buffer out before an fsync. On a full disk: cuts the partial append, releases
/// the reserve (which exists for this: the staged writes must reach the disk) and tries once
/// more. The buffer is kept as is until written, so its offsets (seal, markers) stay right.
fn write_wal<F: FileSystem>(
    fs: &mut F,
    wal: &mut Wal,
    health: &mut Health,
) -> Result<(), LsmError> {
    match wal.write_buffer(fs) {
        Err(e) if e.is_no_space() => {
            wal.cut_to_written(fs)?;
            health.release_space_reserve(fs)?;
            let r = wal.write_buffer(fs);
            if r.as_ref().is_err_and(LsmError::is_no_space) {
                wal.cut_to_written(fs)?;
            }
            r
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;
    use crate::wal::wal_file_name;

    #[test]
    fn a_sync_makes_the_staged_records_durable_and_a_second_one_has_nothing_to_do() {
        let mut fs = SimFs::seeded(6);
        fs.create(&wal_file_name(1)).expect("create");
        let mut wal = Wal::recovered(1, 0, 0);
        wal.all_durable();
        let mut health = Health::opening();
        wal.stage(1, b"record", 1 << 10);
        let parts = Sync {
            fs: &mut fs,
            wal: &mut wal,
            health: &mut health,
        };
        parts.run().expect("sync");
        assert!(!wal.unsynced());
        assert_eq!(
            fs.durable_len(&wal_file_name(1)),
            fs.len(&wal_file_name(1)).ok()
        );
        let ticket = Sync {
            fs: &mut fs,
            wal: &mut wal,
            health: &mut health,
        }
        .begin(1)
        .expect("begin");
        assert_eq!(ticket.covers_seq(), 1);
        wal.check_invariants();
    }
}
