//! An in-memory engine with an explicit durable/volatile split, so a simulated crash keeps exactly
//! what was synced.

use super::{Storage, StorageError};
use crate::version::Record;
use bytes::Bytes;
use std::collections::BTreeMap;

/// In-memory storage: `durable` survives `crash`, `staged` does not.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    durable: BTreeMap<Bytes, Record>,
    staged: BTreeMap<Bytes, Record>,
    poisoned: Option<String>,
    fail_next_sync: bool,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// Loses every staged write, as a power cut would, and clears the poison (a restart recovers).
    pub fn crash(&mut self) {
        self.staged.clear();
        self.poisoned = None;
        self.fail_next_sync = false;
    }

    /// Makes the next `sync` fail (a disk fault).
    pub fn inject_sync_failure(&mut self) {
        self.fail_next_sync = true;
    }

    /// The durable records, in key order: what a crash would keep.
    pub fn durable(&self) -> &BTreeMap<Bytes, Record> {
        &self.durable
    }

    /// Number of staged, not yet durable, records.
    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    fn usable(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }
}

impl Storage for MemStorage {
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        self.usable()?;
        Ok(self
            .staged
            .get(key)
            .or_else(|| self.durable.get(key))
            .cloned())
    }

    fn put(&mut self, key: Bytes, record: Record) -> Result<(), StorageError> {
        self.usable()?;
        self.staged.insert(key, record);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.usable()?;
        if self.fail_next_sync {
            self.fail_next_sync = false;
            let why = "injected fsync failure".to_string();
            self.poisoned = Some(why.clone());
            return Err(StorageError::Poisoned(why));
        }
        let staged = std::mem::take(&mut self.staged);
        self.durable.extend(staged);
        Ok(())
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<Vec<(Bytes, Record)>, StorageError> {
        self.usable()?;
        let mut merged: BTreeMap<&Bytes, &Record> = BTreeMap::new();
        let start = Bytes::copy_from_slice(start);
        for (k, v) in self.durable.range(start.clone()..).take(limit) {
            merged.insert(k, v);
        }
        for (k, v) in self.staged.range(start..).take(limit) {
            merged.insert(k, v);
        }
        Ok(merged
            .into_iter()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use crate::version::{LwwRecord, LwwVersion};

    fn record(ts: u64) -> Record {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: ts,
                node: NodeId(1),
                nonce: 0,
            },
            value: Some(Bytes::from_static(b"v")),
        })
    }

    #[test]
    fn crash_keeps_exactly_what_was_synced() {
        let mut storage = MemStorage::new();
        storage.put(Bytes::from_static(b"a"), record(1)).expect("put");
        storage.sync().expect("sync");
        storage.put(Bytes::from_static(b"a"), record(2)).expect("put");
        storage.put(Bytes::from_static(b"b"), record(3)).expect("put");
        assert_eq!(storage.get(b"a"), Ok(Some(record(2))));
        storage.crash();
        assert_eq!(storage.get(b"a"), Ok(Some(record(1))));
        assert_eq!(storage.get(b"b"), Ok(None));
    }

    #[test]
    fn failed_sync_poisons_until_restart() {
        let mut storage = MemStorage::new();
        storage.put(Bytes::from_static(b"a"), record(1)).expect("put");
        storage.inject_sync_failure();
        assert!(matches!(storage.sync(), Err(StorageError::Poisoned(_))));
        assert!(matches!(storage.sync(), Err(StorageError::Poisoned(_))), "never retried");
        assert!(storage.get(b"a").is_err());
        storage.crash();
        assert_eq!(storage.get(b"a"), Ok(None), "the unsynced write is gone");
    }

    #[test]
    fn scan_merges_staged_and_durable_in_key_order() {
        let mut storage = MemStorage::new();
        for (k, ts) in [(&b"c"[..], 1), (b"a", 2)] {
            storage.put(Bytes::copy_from_slice(k), record(ts)).expect("put");
        }
        storage.sync().expect("sync");
        storage.put(Bytes::from_static(b"b"), record(3)).expect("put");
        let keys: Vec<Bytes> = storage.scan(b"b", 10).expect("scan").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]);
    }
}
