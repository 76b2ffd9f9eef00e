//! The storage engine a simulated node runs on: the in-memory engine (fast, for large sweeps) or
//! the real LSM engine on the simulated disk (`[disk] engine = "lsm"`), crashed by dropping what
//! the disk had not synced and recovered by reopening the engine, exactly as a real restart.
//!
//! The LSM engine does no maintenance of its own: the world runs the node's maintenance
//! scheduler on simulated time (`persist.rs`) with [`sim_maintenance_settings`], and the steps
//! it asks for run here ([`SimStorage::maintain`]).

use bytes::Bytes;
use ringkv_core::{MemStorage, Record, Storage, StorageError};
use ringkv_lsm::fs::{CrashMode, SimFs, SimFsOptions};
use ringkv_lsm::maintenance::{
    MaintenanceOutcome, MaintenanceSettings, MaintenanceState, MaintenanceStep,
};
use ringkv_lsm::{Lsm, LsmConfig, LsmError, LsmStorage};
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

/// Maintenance settings for simulated nodes: the node's default cadence (a tick every 100 ms,
/// collection every 10 ticks) with a budget scaled to [`sim_lsm_config`]'s tiny tables (a few
/// tables per step, where the node's 4 MiB would merge a whole simulated tree at once), so that
/// steps stay bounded, write-driven steps come every 4 KiB written, and compaction debt, stalls
/// and collection all happen within a run.
pub fn sim_maintenance_settings() -> MaintenanceSettings {
    MaintenanceSettings {
        interval_ms: 100,
        budget_bytes: 16 << 10,
        vlog_gc_interval_ticks: 10,
    }
}

impl SimStorage {
    /// A fresh storage of the kind named by the scenario (`memory` or `lsm`).
    pub fn fresh(lsm: bool, seed: u64) -> Result<SimStorage, String> {
        if !lsm {
            return Ok(SimStorage::Memory(MemStorage::new()));
        }
        let config = sim_lsm_config();
        // The engine's fault points (BUGGIFY) are live in simulation only.
        let fs = SimFs::new(SimFsOptions {
            fault_points: true,
            ..SimFsOptions::seeded(seed)
        });
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

    /// What the maintenance scheduler reads of the engine; `None` for the in-memory engine,
    /// which needs no maintenance.
    pub fn maintenance_state(&self) -> Option<MaintenanceState> {
        match self {
            SimStorage::Memory(_) => None,
            SimStorage::Lsm(l) => Some(l.engine.maintenance_state()),
        }
    }

    /// The LSM engine's counters (flushes, compactions, collections, stalls); `None` for the
    /// in-memory engine.
    pub fn lsm_stats(&self) -> Option<ringkv_lsm::LsmStats> {
        match self {
            SimStorage::Memory(_) => None,
            SimStorage::Lsm(l) => Some(l.engine.lsm().stats()),
        }
    }

    /// Runs one maintenance step the scheduler asked for (`wall_ms`: the node's wall clock).
    pub fn maintain(
        &mut self,
        step: MaintenanceStep,
        wall_ms: u64,
    ) -> Result<MaintenanceOutcome, LsmError> {
        match self {
            SimStorage::Memory(_) => Ok(MaintenanceOutcome::default()),
            SimStorage::Lsm(l) => l.engine.maintain(step, wall_ms),
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
