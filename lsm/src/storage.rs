//! The adapter that makes the engine a [`ringkv_core::Storage`]: records are encoded with
//! `ringkv_core::codec`, and write stalls are absorbed by running compaction inline (bounded):
//! back-pressure, the only compaction that does not come from the one maintenance scheduler
//! (`crate::maintenance`), which the drivers run. Writes themselves do no maintenance (they used
//! to, a second scheduler the node's timer ran on top of; issue #12).

use crate::engine::Lsm;
use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::outcome::{CompactionProgress, WriteOutcome};
use crate::recovery::RecoveryReport;
use bytes::Bytes;
use ringkv_core::storage::{Storage, StorageError};
use ringkv_core::Record;

/// Compaction steps a stalled write may run before giving up with an error.
const STALL_STEPS_MAX: usize = 100_000;

/// An [`Lsm`] serving as a replica's [`Storage`].
#[derive(Debug)]
pub struct LsmStorage<F: FileSystem> {
    lsm: Lsm<F>,
    now_ms: u64,
}

fn storage_error(e: LsmError) -> StorageError {
    match e {
        e if e.is_no_space() => StorageError::NoSpace(e.to_string()),
        LsmError::Poisoned(why) => StorageError::Poisoned(why),
        e @ LsmError::Corrupt { .. } => StorageError::Corrupt(e.to_string()),
        e => StorageError::Io(e.to_string()),
    }
}

impl<F: FileSystem> LsmStorage<F> {
    /// Wraps an open engine.
    pub fn new(lsm: Lsm<F>) -> Self {
        LsmStorage { lsm, now_ms: 0 }
    }

    /// Lets compaction drop records that are dead for every reader: last-write-wins tombstones
    /// and expired values, once dead for longer than `tombstone_grace_ms` and only at the last
    /// level (issue #13, TTL). Off by default: the records stay, as tombstones always have, until
    /// a driver opts in (PITFALLS, "Deleted data comes back": the grace must exceed the time
    /// anti-entropy needs to spread a delete or an expiring write to every replica).
    pub fn collect_dead_records(&mut self) {
        self.lsm.set_dead_since(record_dead_since_ms);
    }

    /// Sets the wall-clock time (ms) used to stamp deletes and to age tombstones during
    /// compaction. The `Storage` trait carries no time, so the driver passes it here (each
    /// maintenance step does).
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// What recovery did when the engine was opened. A driver logs [`RecoveryReport::suspect`]
    /// when it is `Some`: the WAL was cut where acknowledged writes may have been lost.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.lsm.recovery_report()
    }

    /// The engine, to read.
    pub fn lsm(&self) -> &Lsm<F> {
        &self.lsm
    }

    /// The engine.
    pub fn lsm_mut(&mut self) -> &mut Lsm<F> {
        &mut self.lsm
    }

    /// Gives the engine back.
    pub fn into_inner(self) -> Lsm<F> {
        self.lsm
    }
}

impl<F: FileSystem> LsmStorage<F> {
    /// Runs one write, doing compaction work itself (in bounded steps) while the engine stalls.
    fn write_with_back_pressure(
        &mut self,
        mut write: impl FnMut(&mut Lsm<F>, u64) -> Result<WriteOutcome, LsmError>,
    ) -> Result<(), StorageError> {
        for _ in 0..STALL_STEPS_MAX {
            match write(&mut self.lsm, self.now_ms).map_err(storage_error)? {
                WriteOutcome::Written { .. } => return Ok(()),
                WriteOutcome::Stalled { .. } => {
                    let step = self
                        .lsm
                        .compact_step(self.now_ms, 1 << 20)
                        .map_err(storage_error)?;
                    if step == CompactionProgress::Idle {
                        return Err(StorageError::Io(
                            "write stalled with no compaction to run".into(),
                        ));
                    }
                }
            }
        }
        Err(StorageError::Io("write stalled too long".into()))
    }
}

impl<F: FileSystem> Storage for LsmStorage<F> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.lsm.get(key).map_err(storage_error)? {
            None => Ok(None),
            Some(bytes) => ringkv_core::codec::decode_record(&bytes)
                .map(Some)
                .map_err(|e| StorageError::Corrupt(format!("record of a key: {e}"))),
        }
    }

    fn put(&mut self, key: Bytes, record: Record) -> Result<(), StorageError> {
        let value = Bytes::from(ringkv_core::codec::encode_record(&record));
        self.write_with_back_pressure(|lsm, _| lsm.put(key.clone(), value.clone()))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StorageError> {
        let key = Bytes::copy_from_slice(key);
        self.write_with_back_pressure(|lsm, now_ms| lsm.delete(key.clone(), now_ms))
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.lsm.sync().map_err(storage_error)
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<Vec<(Bytes, Record)>, StorageError> {
        self.lsm
            .scan(start, None, limit)
            .map_err(storage_error)?
            .into_iter()
            .map(|(k, v)| {
                ringkv_core::codec::decode_record(&v)
                    .map(|r| (k, r))
                    .map_err(|e| StorageError::Corrupt(format!("record: {e}")))
            })
            .collect()
    }
}

/// [`crate::DeadSince`] for stored core records: since when (wall ms) a last-write-wins record
/// has been a tombstone or expired. Vector-clock records are never dropped here (their clocks
/// matter to later writes), nor counters (never dead), nor bytes that do not decode (kept for a
/// read to report).
fn record_dead_since_ms(value: &[u8]) -> Option<u64> {
    match ringkv_core::codec::decode_value::<Record>(value).ok()? {
        Record::Lww(record) => record.dead_since_micros().map(|micros| micros / 1000),
        Record::Causal(_) | Record::Counter(_) => None,
    }
}
