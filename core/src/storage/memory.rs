//! An in-memory engine with an explicit durable/volatile split, so a simulated crash keeps exactly
//! what was synced.

use super::{Storage, StorageError};
use crate::version::Record;
use bytes::Bytes;
use std::collections::BTreeMap;

/// In-memory storage: `durable` survives `crash`, staged writes do not. Staged writes are kept in
/// order with sequence numbers, so a simulated disk can make durable exactly the writes staged
/// before an fsync began (`sync_through`), as a real fsync does.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    durable: BTreeMap<Bytes, Record>,
    /// Latest staged record per key, for reads (`None`: a staged delete).
    staged: BTreeMap<Bytes, (u64, Option<Record>)>,
    /// Every staged write or delete not yet durable, in order.
    pending: std::collections::VecDeque<(u64, Bytes, Option<Record>)>,
    last_seq: u64,
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
        self.pending.clear();
        self.poisoned = None;
        self.fail_next_sync = false;
    }

    /// Drops the durable last-write-wins records that have been dead (tombstone or expired) for
    /// at least `grace_ms` at wall time `now_ms`, as the LSM engine's compaction does with
    /// `LsmStorage::collect_dead_records`; returns how many went. Staged writes are untouched
    /// (a staged write of a key keeps shadowing it). No driver calls it unless it opts in, as
    /// with the engine.
    pub fn collect_dead(&mut self, now_ms: u64, grace_ms: u64) -> usize {
        let before = self.durable.len();
        self.durable.retain(|_, record| {
            let dead_since_ms = match record {
                Record::Lww(r) => r.dead_since_micros().map(|micros| micros / 1000),
                Record::Causal(_) | Record::Counter(_) => None,
            };
            dead_since_ms.is_none_or(|since| now_ms.saturating_sub(since) < grace_ms)
        });
        before - self.durable.len()
    }

    /// Makes the next `sync` fail (a disk fault).
    pub fn inject_sync_failure(&mut self) {
        self.fail_next_sync = true;
    }

    /// The durable records, in key order: what a crash would keep.
    pub fn durable(&self) -> &BTreeMap<Bytes, Record> {
        &self.durable
    }

    /// Number of staged, not yet durable, writes.
    pub fn staged_len(&self) -> usize {
        self.pending.len()
    }

    /// The sequence number of the last staged write: an fsync starting now covers up to here.
    pub fn staged_seq(&self) -> u64 {
        self.last_seq
    }

    /// Makes durable every write staged up to sequence `point` (an fsync that began then).
    /// A failure poisons the storage for good.
    pub fn sync_through(&mut self, point: u64) -> Result<(), StorageError> {
        self.usable()?;
        if self.fail_next_sync {
            self.fail_next_sync = false;
            let why = "injected fsync failure".to_string();
            self.poisoned = Some(why.clone());
            return Err(StorageError::Poisoned(why));
        }
        while self
            .pending
            .front()
            .is_some_and(|(seq, _, _)| *seq <= point)
        {
            if let Some((seq, key, record)) = self.pending.pop_front() {
                if self
                    .staged
                    .get(&key)
                    .is_some_and(|(latest, _)| *latest == seq)
                {
                    self.staged.remove(&key);
                }
                match record {
                    Some(record) => self.durable.insert(key, record),
                    None => self.durable.remove(&key),
                };
            }
        }
        Ok(())
    }

    fn stage(&mut self, key: Bytes, record: Option<Record>) {
        self.last_seq += 1;
        self.staged
            .insert(key.clone(), (self.last_seq, record.clone()));
        self.pending.push_back((self.last_seq, key, record));
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
        Ok(match self.staged.get(key) {
            Some((_, staged)) => staged.clone(),
            None => self.durable.get(key).cloned(),
        })
    }

    fn put(&mut self, key: Bytes, record: Record) -> Result<(), StorageError> {
        self.usable()?;
        self.stage(key, Some(record));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StorageError> {
        self.usable()?;
        self.stage(Bytes::copy_from_slice(key), None);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.sync_through(u64::MAX)
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<Vec<(Bytes, Record)>, StorageError> {
        self.usable()?;
        // Staged deletes hide durable records, so take enough of both to fill `limit` afterwards.
        let mut merged: BTreeMap<&Bytes, Option<&Record>> = BTreeMap::new();
        let start = Bytes::copy_from_slice(start);
        let deletes = self.staged.values().filter(|(_, r)| r.is_none()).count();
        for (k, v) in self.durable.range(start.clone()..).take(limit + deletes) {
            merged.insert(k, Some(v));
        }
        for (k, (_, v)) in self.staged.range(start..).take(limit + deletes) {
            merged.insert(k, v.as_ref());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.clone(), v.clone())))
            .take(limit)
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
            expires_at_micros: None,
        })
    }

    #[test]
    fn crash_keeps_exactly_what_was_synced() {
        let mut storage = MemStorage::new();
        storage
            .put(Bytes::from_static(b"a"), record(1))
            .expect("put");
        storage.sync().expect("sync");
        storage
            .put(Bytes::from_static(b"a"), record(2))
            .expect("put");
        storage
            .put(Bytes::from_static(b"b"), record(3))
            .expect("put");
        assert_eq!(storage.get(b"a"), Ok(Some(record(2))));
        storage.crash();
        assert_eq!(storage.get(b"a"), Ok(Some(record(1))));
        assert_eq!(storage.get(b"b"), Ok(None));
    }

    #[test]
    fn sync_through_covers_only_writes_staged_before_it() {
        let mut storage = MemStorage::new();
        storage
            .put(Bytes::from_static(b"a"), record(1))
            .expect("put");
        let point = storage.staged_seq();
        storage
            .put(Bytes::from_static(b"a"), record(2))
            .expect("put");
        storage
            .put(Bytes::from_static(b"b"), record(3))
            .expect("put");
        storage.sync_through(point).expect("sync");
        assert_eq!(
            storage.get(b"a"),
            Ok(Some(record(2))),
            "reads see the latest"
        );
        storage.crash();
        assert_eq!(
            storage.get(b"a"),
            Ok(Some(record(1))),
            "the fsync covered only the first write"
        );
        assert_eq!(storage.get(b"b"), Ok(None));
    }

    #[test]
    fn deletes_are_staged_like_writes() {
        let mut storage = MemStorage::new();
        storage
            .put(Bytes::from_static(b"a"), record(1))
            .expect("put");
        storage.sync().expect("sync");
        storage.delete(b"a").expect("delete");
        assert_eq!(storage.get(b"a"), Ok(None));
        assert!(storage.scan(b"", 10).expect("scan").is_empty());
        storage.crash();
        assert_eq!(
            storage.get(b"a"),
            Ok(Some(record(1))),
            "an unsynced delete is lost"
        );
        storage.delete(b"a").expect("delete");
        storage.sync().expect("sync");
        storage.crash();
        assert_eq!(storage.get(b"a"), Ok(None));
    }

    #[test]
    fn failed_sync_poisons_until_restart() {
        let mut storage = MemStorage::new();
        storage
            .put(Bytes::from_static(b"a"), record(1))
            .expect("put");
        storage.inject_sync_failure();
        assert!(matches!(storage.sync(), Err(StorageError::Poisoned(_))));
        assert!(
            matches!(storage.sync(), Err(StorageError::Poisoned(_))),
            "never retried"
        );
        assert!(storage.get(b"a").is_err());
        storage.crash();
        assert_eq!(storage.get(b"a"), Ok(None), "the unsynced write is gone");
    }

    #[test]
    fn scan_merges_staged_and_durable_in_key_order() {
        let mut storage = MemStorage::new();
        for (k, ts) in [(&b"c"[..], 1), (b"a", 2)] {
            storage
                .put(Bytes::copy_from_slice(k), record(ts))
                .expect("put");
        }
        storage.sync().expect("sync");
        storage
            .put(Bytes::from_static(b"b"), record(3))
            .expect("put");
        let keys: Vec<Bytes> = storage
            .scan(b"b", 10)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
    }

    #[test]
    fn dead_records_go_after_the_grace_and_live_ones_stay() {
        use crate::version::LwwRecord;
        let version = LwwVersion {
            timestamp_micros: 1_000_000,
            node: NodeId(1),
            nonce: 0,
        };
        let mut storage = MemStorage::new();
        let tombstone = Record::Lww(LwwRecord::plain(version, None));
        let expired = Record::Lww(LwwRecord::value(
            version,
            Bytes::from_static(b"x"),
            Some(2_000_000),
        ));
        let live = Record::Lww(LwwRecord::plain(version, Some(Bytes::from_static(b"y"))));
        for (key, record) in [(&b"t"[..], &tombstone), (b"e", &expired), (b"l", &live)] {
            storage
                .put(Bytes::copy_from_slice(key), record.clone())
                .expect("put");
        }
        storage.sync().expect("sync");
        // 1 s dead for the tombstone, 0 s for the expired value.
        assert_eq!(storage.collect_dead(2_000, 1_000), 1);
        assert_eq!(storage.get(b"t"), Ok(None));
        assert_eq!(storage.get(b"e"), Ok(Some(expired)));
        assert_eq!(storage.collect_dead(3_000, 1_000), 1);
        assert_eq!(storage.get(b"e"), Ok(None));
        assert_eq!(storage.get(b"l"), Ok(Some(live)));
    }
}
