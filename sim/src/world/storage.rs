//! The storage engine a simulated node runs on: the in-memory engine (fast, for large sweeps) or
//! the real LSM engine on the simulated disk (`[disk] engine = "lsm"`), crashed by dropping what
//! the disk had not synced and recovered by reopening the engine, exactly as a real restart.

use bytes::Bytes;
use ringkv_core::{MemStorage, Record, Storage, StorageError};
use ringkv_lsm::fs::{CrashMode, SimFs, SimFsOptions};
use ringkv_lsm::{Lsm, LsmConfig, LsmStorage};
use std::collections::BTreeMap;

/// A node's storage in the simulator.
pub enum SimStorage {
    /// The in-memory engine.
    Memory(MemStorage),
    /// The LSM engine on a simulated disk.
    Lsm(Box<LsmNodeStorage>),
}

/// The LSM engine with the bookkeeping the simulator's disk model needs.
pub struct LsmNodeStorage {
    engine: LsmStorage<SimFs>,
    config: LsmConfig,
    staged: u64,
    unsynced: usize,
}

/// Engine settings for simulated nodes: small limits so flushes, compactions and value-log
/// collection happen within a run.
fn sim_lsm_config() -> LsmConfig {
    LsmConfig::tiny_for_tests()
}

impl SimStorage {
    /// A fresh storage of the kind named by the scenario (`memory` or `lsm`).
    pub fn fresh(lsm: bool, seed: u64) -> Result<SimStorage, String> {
        if !lsm {
            return Ok(SimStorage::Memory(MemStorage::new()));
        }
        let config = sim_lsm_config();
        let fs = SimFs::new(SimFsOptions::seeded(seed));
        let engine = Lsm::open(fs, config.clone()).map_err(|e| format!("lsm open: {e}"))?;
        Ok(SimStorage::Lsm(Box::new(LsmNodeStorage {
            engine: LsmStorage::new(engine),
            config,
            staged: 0,
            unsynced: 0,
        })))
    }

    /// A power cut: drops what was not synced (the LSM's disk draws how much of the unsynced tail
    /// survives, torn or not) and recovers. An engine that cannot recover is an error.
    pub fn crash(self) -> Result<SimStorage, String> {
        match self {
            SimStorage::Memory(mut m) => {
                m.crash();
                Ok(SimStorage::Memory(m))
            }
            SimStorage::Lsm(l) => {
                let LsmNodeStorage {
                    engine,
                    config,
                    staged,
                    ..
                } = *l;
                let mut fs = engine.into_inner().into_fs();
                let mode = fs.random_crash_mode();
                fs.crash(mode);
                let lsm = Lsm::open(fs, config.clone())
                    .map_err(|e| format!("recovery after a crash failed: {e}"))?;
                Ok(SimStorage::Lsm(Box::new(LsmNodeStorage {
                    engine: LsmStorage::new(lsm),
                    config,
                    staged,
                    unsynced: 0,
                })))
            }
        }
    }

    /// The sequence number of the last staged write (an fsync starting now covers up to here).
    pub fn staged_seq(&self) -> u64 {
        match self {
            SimStorage::Memory(m) => m.staged_seq(),
            SimStorage::Lsm(l) => l.staged,
        }
    }

    /// Staged, not yet durable, writes.
    pub fn staged_len(&self) -> usize {
        match self {
            SimStorage::Memory(m) => m.staged_len(),
            SimStorage::Lsm(l) => l.unsynced,
        }
    }

    /// An fsync that began at `point` completes. The in-memory engine makes exactly the writes
    /// staged before `point` durable; the LSM's fsync covers everything appended so far (an
    /// fsync at completion time: never less durable than asked).
    pub fn sync_through(&mut self, point: u64) -> Result<(), StorageError> {
        match self {
            SimStorage::Memory(m) => m.sync_through(point),
            SimStorage::Lsm(l) => {
                l.engine.sync()?;
                l.unsynced = 0;
                Ok(())
            }
        }
    }

    /// Makes the next fsync fail.
    pub fn inject_sync_failure(&mut self) {
        match self {
            SimStorage::Memory(m) => m.inject_sync_failure(),
            SimStorage::Lsm(l) => l.engine.lsm_mut().fs_mut().fail_next_fsync(),
        }
    }

    /// What a crash now would keep, for the checkers (the LSM is crashed and reopened on a copy
    /// of its disk, losing every unsynced byte).
    pub fn durable_contents(&mut self) -> BTreeMap<Bytes, Record> {
        match self {
            SimStorage::Memory(m) => m.durable().clone(),
            SimStorage::Lsm(l) => {
                let mut fs = l.engine.lsm_mut().fs_mut().clone();
                fs.crash(CrashMode::LoseUnsynced);
                let Ok(lsm) = Lsm::open(fs, l.config.clone()) else {
                    return BTreeMap::new();
                };
                let mut copy = LsmStorage::new(lsm);
                copy.scan(b"", usize::MAX >> 1)
                    .map(|v| v.into_iter().collect())
                    .unwrap_or_default()
            }
        }
    }
}

impl Storage for SimStorage {
    fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self {
            SimStorage::Memory(m) => m.get(key),
            SimStorage::Lsm(l) => l.engine.get(key),
        }
    }

    fn put(&mut self, key: Bytes, record: Record) -> Result<(), StorageError> {
        match self {
            SimStorage::Memory(m) => m.put(key, record),
            SimStorage::Lsm(l) => {
                l.engine.put(key, record)?;
                l.staged += 1;
                l.unsynced += 1;
                Ok(())
            }
        }
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StorageError> {
        match self {
            SimStorage::Memory(m) => m.delete(key),
            SimStorage::Lsm(l) => {
                l.engine.delete(key)?;
                l.staged += 1;
                l.unsynced += 1;
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.sync_through(u64::MAX)
    }

    fn scan(&mut self, start: &[u8], limit: usize) -> Result<Vec<(Bytes, Record)>, StorageError> {
        match self {
            SimStorage::Memory(m) => m.scan(start, limit),
            SimStorage::Lsm(l) => l.engine.scan(start, limit),
        }
    }
}
