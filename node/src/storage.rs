//! A durable engine for the node until the LSM engine lands: an append-only log of
//! `(key, Record)` entries, each with its own checksums, replayed into a `BTreeMap` at start.
//!
//! Entry layout (little-endian): `payload_len u32 | payload_crc u32 | header_crc u32 | payload`,
//! where `header_crc` covers the first eight bytes and `payload` is `codec::encode(&(key,
//! record))`. A later entry for a key replaces an earlier one.
//!
//! Recovery: a damaged entry with no valid entry after it is a torn tail (a write that was never
//! acknowledged, because acknowledgements wait for fsync) and is truncated; a damaged entry
//! followed by valid ones is corruption of acknowledged data and refuses to start.
//!
//! Durability: `put` stages into memory and a write buffer; a sync writes the buffer and fsyncs
//! the file. The driver splits a sync into [`LogStorage::prepare_sync`] (write, on the driver) and
//! [`SyncJob::run`] (fsync, on a blocking thread) so reads and new writes proceed meanwhile; every
//! entry written before the fsync began is covered by it (group commit). A failed fsync poisons
//! the engine for good: it is never retried, because the kernel may have dropped the dirty pages.

use bytes::Bytes;
use ringkv_core::{codec, Record, Storage, StorageError};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the log inside the data directory.
pub const LOG_FILE_NAME: &str = "records.log";
const COMPACT_FILE_NAME: &str = "records.log.compact";
const HEADER_BYTES: usize = 12;
/// Largest entry payload accepted on read or write (the codec's own limit).
pub const ENTRY_BYTES_MAX: usize = codec::MESSAGE_BYTES_MAX;
/// Staged bytes held in memory before they are handed to the kernel (not yet durable).
const WRITE_BUFFER_BYTES_MAX: usize = 1 << 20;
/// The log is rewritten at start when it is this many times larger than the live data.
const COMPACT_RATIO: u64 = 2;
/// ... and at least this large.
const COMPACT_BYTES_MIN: u64 = 16 << 20;

/// What recovery found in an existing log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Entries replayed.
    pub entries: u64,
    /// Distinct keys held.
    pub keys: u64,
    /// Bytes of a torn tail that were truncated.
    pub torn_bytes: u64,
    /// Whether the log was rewritten to drop superseded entries.
    pub compacted: bool,
}

/// The append-only log engine. See the module documentation.
pub struct LogStorage {
    dir: PathBuf,
    file: Arc<File>,
    records: BTreeMap<Bytes, Record>,
    buffer: Vec<u8>,
    poisoned: Option<String>,
    log_bytes: u64,
    recovery: Recovery,
    #[cfg(test)]
    fail_next_sync: bool,
}

/// An fsync to run off the driver: covers every entry written before it was prepared.
pub struct SyncJob {
    file: Arc<File>,
    #[cfg(test)]
    fail: bool,
}

impl SyncJob {
    /// Runs the fsync. On error, pass the reason to [`LogStorage::sync_failed`].
    pub fn run(self) -> Result<(), String> {
        #[cfg(test)]
        if self.fail {
            return Err("injected fsync failure".to_string());
        }
        self.file
            .sync_data()
            .map_err(|e| format!("fsync of {LOG_FILE_NAME} failed: {e}"))
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", path.display()))
}

/// Fsyncs a directory so a file created or renamed in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync of directory", dir, e))
}

/// Appends one encoded entry for `(key, record)` to `out`.
pub fn encode_entry(key: &Bytes, record: &Record, out: &mut Vec<u8>) -> Result<(), StorageError> {
    let payload = codec::encode(&(key, record));
    if payload.is_empty() || payload.len() > ENTRY_BYTES_MAX {
        return Err(StorageError::Io(format!(
            "record of key ({} bytes) is too large to store",
            key.len()
        )));
    }
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let payload_crc = crc32fast::hash(&payload).to_le_bytes();
    let mut header = [0u8; HEADER_BYTES];
    header[..4].copy_from_slice(&len);
    header[4..8].copy_from_slice(&payload_crc);
    let header_crc = crc32fast::hash(&header[..8]).to_le_bytes();
    header[8..].copy_from_slice(&header_crc);
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(())
}

/// A checked entry at `at`: its payload range, or `None` if the bytes there are not a whole,
/// valid entry.
fn entry_at(bytes: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
    let header = bytes.get(at..at.checked_add(HEADER_BYTES)?)?;
    let field = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[i..i + 4]);
        u32::from_le_bytes(b)
    };
    if crc32fast::hash(&header[..8]) != field(8) {
        return None;
    }
    let len = usize::try_from(field(0)).ok()?;
    if len == 0 || len > ENTRY_BYTES_MAX {
        return None;
    }
    let start = at + HEADER_BYTES;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(payload) == field(4)).then_some(start..start + len)
}

/// The result of replaying a log image.
#[derive(Debug)]
pub struct Replayed {
    /// The latest record of every key.
    pub records: BTreeMap<Bytes, Record>,
    /// Entries replayed.
    pub entries: u64,
    /// Length of the valid prefix; anything after it is a torn tail.
    pub valid_bytes: usize,
}

/// Replays a log image. Pure, so it is tested on byte images directly.
pub fn replay(bytes: &[u8]) -> Result<Replayed, StorageError> {
    let mut records = BTreeMap::new();
    let mut entries = 0;
    let mut at = 0;
    while at < bytes.len() {
        let Some(range) = entry_at(bytes, at) else {
            // Damaged. A torn tail has nothing valid after it; anything else lost acknowledged data.
            if let Some(later) = (at + 1..bytes.len()).find(|&p| entry_at(bytes, p).is_some()) {
                return Err(StorageError::Corrupt(format!(
                    "{LOG_FILE_NAME}: damaged entry at byte {at} is followed by a valid entry at \
                     byte {later}; refusing to start rather than lose acknowledged writes"
                )));
            }
            break;
        };
        let end = range.end;
        let (key, record): (Bytes, Record) = codec::decode(&bytes[range]).map_err(|e| {
            StorageError::Corrupt(format!(
                "{LOG_FILE_NAME}: entry at byte {at} has a valid checksum but does not decode: {e}"
            ))
        })?;
        records.insert(key, record);
        entries += 1;
        at = end;
    }
    Ok(Replayed {
        records,
        entries,
        valid_bytes: at,
    })
}

impl LogStorage {
    /// Opens (or creates) the log in `dir`, replays it, truncates a torn tail and, when the log is
    /// mostly superseded entries, rewrites it.
    pub fn open(dir: &Path) -> Result<LogStorage, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let path = dir.join(LOG_FILE_NAME);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_error("cannot open", &path, e))?;
        if !existed {
            file.sync_all()
                .map_err(|e| io_error("fsync of", &path, e))?;
            sync_dir(dir)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error("cannot read", &path, e))?;
        let replayed = replay(&bytes)?;
        let mut recovery = Recovery {
            entries: replayed.entries,
            keys: replayed.records.len() as u64,
            torn_bytes: (bytes.len() - replayed.valid_bytes) as u64,
            compacted: false,
        };
        let mut log_bytes = replayed.valid_bytes as u64;
        if recovery.torn_bytes > 0 {
            file.set_len(log_bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("cannot truncate the torn tail of", &path, e))?;
        }
        drop(bytes);
        let live_bytes: u64 = replayed
            .records
            .iter()
            .map(|(k, r)| (k.len() + r.value_bytes() + HEADER_BYTES + 64) as u64)
            .sum();
        if log_bytes > COMPACT_BYTES_MIN && log_bytes > COMPACT_RATIO * live_bytes {
            let (compacted, bytes) = Self::compact(dir, &replayed.records)?;
            file = compacted;
            log_bytes = bytes;
            recovery.compacted = true;
        }
        Ok(LogStorage {
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            records: replayed.records,
            buffer: Vec::new(),
            poisoned: None,
            log_bytes,
            recovery,
            #[cfg(test)]
            fail_next_sync: false,
        })
    }

    /// Writes the live records to a new log, fsyncs it, and renames it over the old one.
    fn compact(dir: &Path, records: &BTreeMap<Bytes, Record>) -> Result<(File, u64), StorageError> {
        let tmp = dir.join(COMPACT_FILE_NAME);
        let path = dir.join(LOG_FILE_NAME);
        let mut out = File::create(&tmp).map_err(|e| io_error("cannot create", &tmp, e))?;
        let mut buffer = Vec::new();
        let mut written = 0u64;
        for (key, record) in records {
            encode_entry(key, record, &mut buffer)?;
            if buffer.len() >= WRITE_BUFFER_BYTES_MAX {
                out.write_all(&buffer)
                    .map_err(|e| io_error("cannot write", &tmp, e))?;
                written += buffer.len() as u64;
                buffer.clear();
            }
        }
        out.write_all(&buffer)
            .and_then(|()| out.sync_all())
            .map_err(|e| io_error("cannot write", &tmp, e))?;
        written += buffer.len() as u64;
        drop(out);
        std::fs::rename(&tmp, &path).map_err(|e| io_error("cannot rename", &tmp, e))?;
        sync_dir(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("cannot open", &path, e))?;
        Ok((file, written))
    }

    /// What recovery found when the engine was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Distinct keys held (including tombstones).
    pub fn keys(&self) -> usize {
        self.records.len()
    }

    /// Bytes in the log file, including what is buffered.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes + self.buffer.len() as u64
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The poison reason, if a sync failed.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    fn usable(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, why: String) -> StorageError {
        self.poisoned = Some(why.clone());
        StorageError::Poisoned(why)
    }

    /// Hands buffered entries to the kernel. A failed write leaves the file in an unknown state,
    /// so it poisons the engine like a failed fsync.
    fn write_buffer(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        match (&*self.file).write_all(&self.buffer) {
            Ok(()) => {
                self.log_bytes += self.buffer.len() as u64;
                self.buffer.clear();
                Ok(())
            }
            Err(e) => Err(self.poison(format!("write to {LOG_FILE_NAME} failed: {e}"))),
        }
    }

    /// Writes everything staged and returns the fsync that makes it durable, to be run off the
    /// driver. Entries staged after this call need a later sync.
    pub fn prepare_sync(&mut self) -> Result<SyncJob, StorageError> {
        self.usable()?;
        self.write_buffer()?;
        Ok(SyncJob {
            file: Arc::clone(&self.file),
            #[cfg(test)]
            fail: std::mem::take(&mut self.fail_next_sync),
        })
    }

    /// A prepared fsync failed: the engine is poisoned for good and never syncs again.
    pub fn sync_failed(&mut self, reason: String) {
        self.poisoned = Some(reason);
    }

    #[cfg(test)]
    fn inject_sync_failure(&mut self) {
        self.fail_next_sync = true;
    }
}

impl Storage for LogStorage {
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        self.usable()?;
        Ok(self.records.get(key).cloned())
    }

    fn put(&mut self, key: Bytes, record: Record) -> Result<(), StorageError> {
        self.usable()?;
        encode_entry(&key, &record, &mut self.buffer)?;
        self.records.insert(key, record);
        if self.buffer.len() >= WRITE_BUFFER_BYTES_MAX {
            self.write_buffer()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let job = self.prepare_sync()?;
        job.run().map_err(|why| self.poison(why))
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<Vec<(Bytes, Record)>, StorageError> {
        self.usable()?;
        let start = Bytes::copy_from_slice(start);
        Ok(self
            .records
            .range(start..)
            .take(limit)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::version::{LwwRecord, LwwVersion};
    use ringkv_core::NodeId;

    fn record(ts: u64, value: &[u8]) -> Record {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: ts,
                node: NodeId(1),
                nonce: 7,
            },
            value: Some(Bytes::copy_from_slice(value)),
        })
    }

    fn key(k: &str) -> Bytes {
        Bytes::copy_from_slice(k.as_bytes())
    }

    fn image(entries: &[(&str, Record)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, r) in entries {
            encode_entry(&key(k), r, &mut out).expect("encode");
        }
        out
    }

    #[test]
    fn synced_writes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = LogStorage::open(dir.path()).expect("open");
        storage.put(key("a"), record(1, b"one")).expect("put");
        storage.put(key("b"), record(2, b"two")).expect("put");
        storage.put(key("a"), record(3, b"three")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        let mut storage = LogStorage::open(dir.path()).expect("reopen");
        assert_eq!(storage.get(b"a"), Ok(Some(record(3, b"three"))));
        assert_eq!(storage.get(b"b"), Ok(Some(record(2, b"two"))));
        assert_eq!(storage.recovery().entries, 3);
        assert_eq!(storage.scan(b"b", 10).expect("scan").len(), 1);
    }

    #[test]
    fn every_torn_tail_is_truncated_and_earlier_entries_kept() {
        let full = image(&[("a", record(1, b"one")), ("b", record(2, b"two"))]);
        let first = image(&[("a", record(1, b"one"))]).len();
        for cut in first..full.len() {
            let replayed = replay(&full[..cut]).expect("torn tail is not an error");
            assert_eq!(replayed.valid_bytes, first, "cut at {cut}");
            assert_eq!(replayed.records.len(), 1);
        }
        // Garbage appended after valid entries is a torn tail too.
        let mut garbage = full.clone();
        garbage.extend_from_slice(&[0xab; 40]);
        assert_eq!(replay(&garbage).expect("replay").valid_bytes, full.len());
    }

    #[test]
    fn damage_before_a_valid_entry_is_corruption() {
        let mut bytes = image(&[("a", record(1, b"one")), ("b", record(2, b"two"))]);
        for flip in 0..bytes.len() / 2 {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x10;
            assert!(
                matches!(replay(&damaged), Err(StorageError::Corrupt(_))),
                "flip at {flip} not detected"
            );
        }
        bytes.truncate(3);
        assert_eq!(replay(&bytes).expect("torn").valid_bytes, 0);
    }

    #[test]
    fn reopen_truncates_the_torn_tail_and_appends_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = LogStorage::open(dir.path()).expect("open");
        storage.put(key("a"), record(1, b"one")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        let path = dir.path().join(LOG_FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        let good = bytes.len();
        bytes.extend_from_slice(&image(&[("b", record(2, b"two"))])[..9]);
        std::fs::write(&path, &bytes).expect("write");
        let mut storage = LogStorage::open(dir.path()).expect("reopen");
        assert_eq!(storage.recovery().torn_bytes, 9);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good as u64);
        storage.put(key("c"), record(3, b"three")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        let mut storage = LogStorage::open(dir.path()).expect("reopen");
        assert_eq!(storage.recovery().torn_bytes, 0);
        assert_eq!(storage.get(b"c"), Ok(Some(record(3, b"three"))));
    }

    #[test]
    fn failed_sync_poisons_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = LogStorage::open(dir.path()).expect("open");
        storage.put(key("a"), record(1, b"one")).expect("put");
        storage.inject_sync_failure();
        assert!(matches!(storage.sync(), Err(StorageError::Poisoned(_))));
        assert!(matches!(storage.sync(), Err(StorageError::Poisoned(_))));
        assert!(storage.put(key("b"), record(2, b"x")).is_err());
        assert!(storage.get(b"a").is_err());
    }

    #[test]
    fn superseded_entries_are_compacted_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = LogStorage::open(dir.path()).expect("open");
        let value = vec![5u8; 64 << 10];
        for ts in 0..400 {
            storage.put(key("hot"), record(ts, &value)).expect("put");
        }
        storage.sync().expect("sync");
        drop(storage);
        let mut storage = LogStorage::open(dir.path()).expect("reopen");
        assert!(storage.recovery().compacted);
        assert!(storage.log_bytes() < 1 << 20);
        assert_eq!(storage.get(b"hot"), Ok(Some(record(399, &value))));
        drop(storage);
        let mut storage = LogStorage::open(dir.path()).expect("reopen again");
        assert_eq!(storage.get(b"hot"), Ok(Some(record(399, &value))));
    }
}
