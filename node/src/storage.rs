//! The node's storage: the LSM engine ([`ringkv_lsm::LsmStorage`]) over real files
//! ([`ringkv_lsm::fs::StdFs`]) in `data_dir/lsm/`, plus the node-side pieces around it: opening
//! with the `[storage]` configuration, the settings of the maintenance scheduler the driver runs
//! (`ringkv_lsm::maintenance`, the one the simulator runs too), and the gauges the driver
//! publishes.
//!
//! Durability is the engine's (see `lsm/FORMAT.md`): a write is staged in the WAL buffer and the
//! memtable, and is durable once a sync (one fsync of the WAL, covering every write staged before
//! it) succeeds. The driver acknowledges nothing before that (`handle_persisted`). A failed fsync
//! poisons the engine for good: it is never retried (PITFALLS, storage: fsyncgate); the engine
//! turns read-only and the node refuses writes until restarted, when recovery replays the WAL.
//!
//! The engine lives in its own subdirectory because it owns every file in its directory: at open
//! it removes files its manifest does not reference.

use ringkv_core::ClusterConfig;
use ringkv_lsm::fs::{FileSystem, StdFs};
use ringkv_lsm::maintenance::MaintenanceSettings;
use ringkv_lsm::{LsmConfig, LsmError, LsmStorage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The node's storage engine.
pub type NodeStorage = LsmStorage<StdFs>;

/// Subdirectory of `data_dir` that the LSM engine owns.
pub const LSM_DIR_NAME: &str = "lsm";

/// The file of the append-only log storage that nodes used before the LSM engine. A data
/// directory still holding it is refused at start rather than silently served empty.
pub const LEGACY_LOG_FILE_NAME: &str = "records.log";

/// The file in `data_dir` that records what its bytes mean ([`StoredMeaning`]).
pub const CLUSTER_META_FILE_NAME: &str = "CLUSTER_META";

/// Version of the [`CLUSTER_META_FILE_NAME`] file's own layout.
const CLUSTER_META_FORMAT: u32 = 1;

/// The encoding of core records on disk (bincode over serde, `ringkv_core::codec`). Bump it when
/// `ringkv_core::version::Record`'s encoding changes, so old directories are refused, not misread.
/// 2: vector-clock dots and version vectors name an `ActorId` (node and data epoch), not a node.
pub const RECORD_FORMAT: u32 = 2;

/// How keys map to ring positions: FNV-1a 64 finished with SplitMix64 (`ringkv_core::hash`).
pub const PARTITIONER: &str = "fnv1a64-splitmix";

/// The settings that change what stored bytes mean: a record written under one conflict mode is
/// misread under the other (a `SET` answered OK while `GET` returns the old value), and the ring
/// parameters decide which node holds which key, so a change of them strands data on nodes that
/// no longer own it. They are written in the data directory on first start and checked at every
/// start; peers exchange them in the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredMeaning {
    /// The layout of this file.
    pub meta_format: u32,
    /// `replication.conflict`.
    pub conflict: String,
    /// The key hash that places keys on the ring.
    pub partitioner: String,
    /// `replication.vnodes_per_node`.
    pub vnodes_per_node: u32,
    /// `replication.n`.
    pub n: u8,
    /// `replication.replicas_per_datacenter` (empty: spread evenly).
    pub replicas_per_datacenter: BTreeMap<String, u8>,
    /// [`RECORD_FORMAT`].
    pub record_format: u32,
}

/// Settings a data directory or a peer disagrees on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeaningMismatch {
    /// The setting, as the configuration file spells it.
    pub setting: &'static str,
    /// The value recorded (in the directory) or announced (by the peer).
    pub stored: String,
    /// The value this node is configured with.
    pub configured: String,
}

impl StoredMeaning {
    /// What `cluster` makes stored bytes mean.
    pub fn of(cluster: &ClusterConfig) -> StoredMeaning {
        StoredMeaning {
            meta_format: CLUSTER_META_FORMAT,
            conflict: cluster.conflict.to_string(),
            partitioner: PARTITIONER.to_string(),
            vnodes_per_node: cluster.vnodes_per_node,
            n: cluster.n,
            replicas_per_datacenter: cluster.replicas_per_datacenter.iter().cloned().collect(),
            record_format: RECORD_FORMAT,
        }
    }

    /// Each setting as (name in the configuration file, value as text), in a fixed order.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let per_datacenter = self
            .replicas_per_datacenter
            .iter()
            .map(|(dc, count)| format!("{dc}={count}"))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            ("meta_format", self.meta_format.to_string()),
            ("replication.conflict", self.conflict.clone()),
            ("partitioner", self.partitioner.clone()),
            (
                "replication.vnodes_per_node",
                self.vnodes_per_node.to_string(),
            ),
            ("replication.n", self.n.to_string()),
            ("replication.replicas_per_datacenter", per_datacenter),
            ("record_format", self.record_format.to_string()),
        ]
    }

    /// The first setting on which `stored` (a directory's or a peer's) differs from `self`
    /// (this node's configuration); a setting missing on one side counts as different.
    pub fn first_difference(&self, stored: &[(String, String)]) -> Option<MeaningMismatch> {
        let ours = self.settings();
        for (setting, configured) in &ours {
            let theirs = stored
                .iter()
                .find(|(name, _)| name == setting)
                .map(|(_, value)| value.clone());
            if theirs.as_deref() != Some(configured.as_str()) {
                return Some(MeaningMismatch {
                    setting,
                    stored: theirs.unwrap_or_else(|| "(absent)".to_string()),
                    configured: configured.clone(),
                });
            }
        }
        let unknown = stored
            .iter()
            .find(|(name, _)| !ours.iter().any(|(known, _)| known == name))?;
        Some(MeaningMismatch {
            setting: "(unknown setting)",
            stored: format!("{} = {}", unknown.0, unknown.1),
            configured: "(absent)".to_string(),
        })
    }
}

/// Checks `data_dir` against `configured` before anything else touches it: on first start (no
/// [`CLUSTER_META_FILE_NAME`]) records it atomically (temp file, fsync, rename, fsync of the
/// directory: PITFALLS, a new file is durable only once its directory is); at every later start
/// refuses a configuration that would change what the stored bytes mean, naming the setting,
/// the stored and the configured value, and writing nothing.
pub fn guard_stored_meaning(data_dir: &Path, configured: &StoredMeaning) -> Result<(), String> {
    let path = data_dir.join(CLUSTER_META_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: StoredMeaning = toml::from_str(&text).map_err(|e| {
                format!(
                    "{} is damaged or from a newer ringkv ({e}); refusing to start rather than \
                     guess what the stored data means",
                    path.display()
                )
            })?;
            let stored: Vec<(String, String)> = stored
                .settings()
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect();
            match configured.first_difference(&stored) {
                None => Ok(()),
                Some(m) => Err(format!(
                    "{} was written with `{}` = {:?}, but this start configures {:?}; that \
                     setting changes what the stored bytes mean, so the node refuses to start \
                     (nothing on disk was changed). Start with `{}` = {:?}, or use an empty \
                     data_dir",
                    data_dir.display(),
                    m.setting,
                    m.stored,
                    m.configured,
                    m.setting,
                    m.stored
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if lsm_dir(data_dir).exists() {
                // A directory from before the guard existed: its meaning cannot be known, so
                // the configured one is adopted (and is guarded from now on).
                tracing::warn!(
                    dir = %data_dir.display(),
                    "data directory has no {CLUSTER_META_FILE_NAME}; recording the configured settings"
                );
            }
            let text =
                render(configured).map_err(|e| format!("cannot render {}: {e}", path.display()))?;
            write_atomically(data_dir, CLUSTER_META_FILE_NAME, &text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn render(meaning: &StoredMeaning) -> Result<String, toml::ser::Error> {
    let body = toml::to_string(meaning)?;
    Ok(format!(
        "# Written by ringkv-node on the first start in this directory: the settings that change \
         what its\n# bytes mean. Every start checks them; do not edit (a changed setting needs \
         an empty data_dir).\n{body}"
    ))
}

/// Writes `name` in `dir` so that a crash leaves either no file or the whole file.
fn write_atomically(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The validated `[storage]` table: the engine's limits and the maintenance budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    /// The engine's configuration (validated).
    pub lsm: LsmConfig,
    /// How often the driver runs a maintenance step (compaction, value-log collection).
    pub maintenance_interval_ms: u64,
    /// Bytes of entries one maintenance step may merge (its bound on the driver's time).
    pub maintenance_budget_bytes: u64,
    /// A value-log collection is attempted every this many maintenance ticks.
    pub vlog_gc_interval_ticks: u64,
}

impl StorageSettings {
    /// The maintenance scheduler's settings (`[storage]` `maintenance_interval_ms`,
    /// `maintenance_budget_bytes`, `vlog_gc_interval_ticks`).
    pub fn maintenance(&self) -> MaintenanceSettings {
        MaintenanceSettings {
            interval_ms: self.maintenance_interval_ms,
            budget_bytes: self.maintenance_budget_bytes,
            vlog_gc_interval_ticks: self.vlog_gc_interval_ticks,
        }
    }
}

/// Where the engine's files live inside `data_dir`.
pub fn lsm_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(LSM_DIR_NAME)
}

/// Opens (or creates) the engine under `data_dir`, recovering from its manifest, value log and
/// WAL, once the directory's [`StoredMeaning`] matches `meaning` (see [`guard_stored_meaning`]).
/// Errors are operator-facing: they name the directory and, for damaged data, the file.
pub fn open(
    data_dir: &Path,
    settings: &StorageSettings,
    meaning: &StoredMeaning,
) -> Result<NodeStorage, String> {
    let legacy = data_dir.join(LEGACY_LOG_FILE_NAME);
    if legacy.exists() {
        return Err(format!(
            "{} was written by the log storage of an earlier ringkv-node, which this version no \
             longer reads; start this node on an empty `data_dir` and let anti-entropy (or a \
             re-load) repopulate it, or keep running the earlier version on that directory",
            legacy.display()
        ));
    }
    guard_stored_meaning(data_dir, meaning)?;
    let dir = lsm_dir(data_dir);
    let fs = StdFs::open(&dir).map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    let lsm = ringkv_lsm::Lsm::open(fs, settings.lsm.clone()).map_err(|e| match e {
        LsmError::Corrupt { .. } => format!(
            "{} holds damaged data, refusing to start rather than lose acknowledged writes: {e}",
            dir.display()
        ),
        e => format!("cannot open the storage engine in {}: {e}", dir.display()),
    })?;
    if let Some(suspect) = lsm.recovery_report().suspect() {
        tracing::warn!(
            dir = %dir.display(),
            %suspect,
            "storage recovered, but the WAL cut may have dropped acknowledged writes"
        );
    }
    let mut storage = LsmStorage::new(lsm);
    // Tombstones and expired values go at the last level after the engine's tombstone grace
    // (10 days), as the engine's own tombstones do (node/README.md, "TTL").
    storage.collect_dead_records();
    Ok(storage)
}

/// The engine's numbers as the driver publishes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageGauges {
    /// Entries held in tables over all levels (a key counts once per level holding it).
    pub table_entries: u64,
    /// Bytes of tables over all levels.
    pub table_bytes: u64,
    /// Tables in level 0 (a deep level 0 slows reads and, at `level0_stall_tables`, writes).
    pub level0_tables: u64,
    /// Bytes of value-log segments, live and garbage.
    pub vlog_bytes: u64,
    /// Key and value bytes written by the node.
    pub user_bytes: u64,
    /// Bytes written to disk (WAL, value log, tables).
    pub disk_bytes: u64,
    /// Memtable flushes since start.
    pub flushes: u64,
    /// Compactions finished since start.
    pub compactions: u64,
    /// Value-log segments collected since start.
    pub vlog_segments_collected: u64,
    /// Writes that found the engine stalled (level 0 full) and ran compaction inline.
    pub write_stalls: u64,
    /// Writes that filled the memtable while the last flush was still under way, and finished
    /// it inline.
    pub flush_stalls: u64,
    /// Block-cache hits.
    pub block_cache_hits: u64,
    /// Block-cache misses.
    pub block_cache_misses: u64,
    /// Reads the row cache answered.
    pub row_cache_hits: u64,
    /// Reads the row cache could not answer.
    pub row_cache_misses: u64,
    /// Bytes the row cache holds.
    pub row_cache_bytes: u64,
}

impl StorageGauges {
    /// Reads the gauges of `storage`.
    pub fn read<F: FileSystem>(storage: &mut LsmStorage<F>) -> StorageGauges {
        let lsm = storage.lsm_mut();
        let stats = lsm.stats();
        StorageGauges {
            table_entries: lsm.table_entry_count(),
            table_bytes: lsm.level_bytes().iter().sum(),
            level0_tables: lsm.level_table_counts().first().copied().unwrap_or(0) as u64,
            vlog_bytes: lsm.vlog_bytes(),
            user_bytes: stats.user_bytes,
            disk_bytes: stats.wal_bytes
                + stats.vlog_bytes
                + stats.flush_bytes
                + stats.compaction_bytes,
            flushes: stats.flushes,
            compactions: stats.compactions,
            vlog_segments_collected: stats.gc_segments,
            write_stalls: stats.stalls,
            flush_stalls: stats.flush_stalls,
            block_cache_hits: stats.block_cache_hits,
            block_cache_misses: stats.block_cache_misses,
            row_cache_hits: stats.row_cache_hits,
            row_cache_misses: stats.row_cache_misses,
            row_cache_bytes: stats.row_cache_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_core::version::{LwwRecord, LwwVersion};
    use ringkv_core::{Instant, NodeId, Record, Storage, StorageError};
    use ringkv_lsm::maintenance::{MaintenanceOutcome, MaintenanceScheduler, MaintenanceStep};

    /// A step that may merge 1 MiB and collect the value log.
    const STEP_FULL: MaintenanceStep = MaintenanceStep {
        compaction_budget_bytes: 1 << 20,
        collect_value_log: true,
    };

    fn record(ts: u64, value: &[u8]) -> Record {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: ts,
                node: NodeId(1),
                nonce: 7,
            },
            value: Some(Bytes::copy_from_slice(value)),
            expires_at_micros: None,
        })
    }

    fn key(k: &str) -> Bytes {
        Bytes::copy_from_slice(k.as_bytes())
    }

    fn meaning() -> StoredMeaning {
        StoredMeaning::of(&ClusterConfig::default())
    }

    /// Every file under `dir` with its bytes, to show a refused start wrote nothing.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(next) = pending.pop() {
            for entry in std::fs::read_dir(&next).expect("list") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let bytes = std::fs::read(&path).expect("read");
                    out.insert(path, bytes);
                }
            }
        }
        out
    }

    #[test]
    fn a_changed_meaning_is_refused_by_name_and_nothing_on_disk_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = open(dir.path(), &settings(), &meaning()).expect("open");
        storage.put(key("k"), record(1, b"v")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        let before = snapshot(dir.path());
        assert!(before.contains_key(&dir.path().join(CLUSTER_META_FILE_NAME)));
        type Change = fn(&mut ClusterConfig);
        let changes: [(&str, &str, &str, Change); 3] = [
            ("replication.conflict", "\"lww\"", "\"vector-clock\"", |c| {
                c.conflict = ringkv_core::ConflictMode::VectorClock
            }),
            ("replication.vnodes_per_node", "\"64\"", "\"8\"", |c| {
                c.vnodes_per_node = 8
            }),
            (
                "replication.replicas_per_datacenter",
                "\"\"",
                "\"dc1=3\"",
                |c| c.replicas_per_datacenter = vec![("dc1".to_string(), 3)],
            ),
        ];
        for (setting, stored, configured, change) in changes {
            let mut cluster = ClusterConfig::default();
            change(&mut cluster);
            let error = open(dir.path(), &settings(), &StoredMeaning::of(&cluster))
                .err()
                .unwrap_or_else(|| panic!("a changed {setting} was accepted"));
            assert!(error.contains(&format!("`{setting}`")), "{error}");
            assert!(
                error.contains(stored) && error.contains(configured),
                "{error}"
            );
            assert_eq!(
                snapshot(dir.path()),
                before,
                "refusing {setting} changed the disk"
            );
        }
        let mut storage = open(dir.path(), &settings(), &meaning()).expect("same meaning reopens");
        assert_eq!(storage.get(b"k"), Ok(Some(record(1, b"v"))));
    }

    #[test]
    fn a_damaged_meta_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CLUSTER_META_FILE_NAME), "conflict = 7\n").expect("write");
        let error = open(dir.path(), &settings(), &meaning())
            .err()
            .unwrap_or_else(|| panic!("a damaged meta file was accepted"));
        assert!(error.contains(CLUSTER_META_FILE_NAME), "{error}");
        assert!(
            !lsm_dir(dir.path()).exists(),
            "the engine was created anyway"
        );
    }

    #[test]
    fn a_peer_announcing_other_settings_is_found_different() {
        let ours = meaning();
        let theirs: Vec<(String, String)> = ours
            .settings()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        assert_eq!(ours.first_difference(&theirs), None);
        let mut other = theirs.clone();
        other[1].1 = "vector-clock".to_string();
        let m = ours.first_difference(&other).expect("different");
        assert_eq!(
            (m.setting, m.stored.as_str(), m.configured.as_str()),
            ("replication.conflict", "vector-clock", "lww")
        );
        let mut extra = theirs.clone();
        extra.push(("future_setting".to_string(), "1".to_string()));
        assert!(ours.first_difference(&extra).is_some());
        assert!(ours.first_difference(&theirs[1..]).is_some());
    }

    fn settings() -> StorageSettings {
        crate::config::FileConfig::dev()
            .validate()
            .expect("valid")
            .storage
    }

    /// Limits small enough that a few hundred writes flush, compact and fill value-log segments.
    fn small_settings() -> StorageSettings {
        let mut s = settings();
        s.lsm = LsmConfig {
            key_bytes_max: s.lsm.key_bytes_max,
            value_bytes_max: s.lsm.value_bytes_max,
            ..LsmConfig::tiny_for_tests()
        };
        s
    }

    /// Where a WAL file's records end: its last nonzero byte (the node preallocates the WAL, so
    /// the file goes on in zeros; a record ending in zero bytes makes this a lower bound).
    fn records_end(bytes: &[u8]) -> usize {
        bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
    }

    /// The WAL files in the engine's directory (normally exactly one).
    fn wal_files(data_dir: &Path) -> Vec<PathBuf> {
        let mut wals: Vec<PathBuf> = std::fs::read_dir(lsm_dir(data_dir))
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        wals.sort();
        wals
    }

    #[test]
    fn synced_writes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = open(dir.path(), &settings(), &meaning()).expect("open");
        storage.put(key("a"), record(1, b"one")).expect("put");
        storage.put(key("b"), record(2, b"two")).expect("put");
        storage.put(key("a"), record(3, b"three")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        let mut storage = open(dir.path(), &settings(), &meaning()).expect("reopen");
        assert_eq!(storage.get(b"a"), Ok(Some(record(3, b"three"))));
        assert_eq!(storage.get(b"b"), Ok(Some(record(2, b"two"))));
        assert_eq!(storage.get(b"c"), Ok(None));
        assert_eq!(storage.scan(b"b", 10).expect("scan").len(), 1);
        assert!(
            !dir.path().join(LEGACY_LOG_FILE_NAME).exists(),
            "only the engine's directory is written"
        );
    }

    #[test]
    fn a_torn_wal_tail_is_truncated_and_writes_append_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = open(dir.path(), &settings(), &meaning()).expect("open");
        storage.put(key("a"), record(1, b"one")).expect("put");
        storage.sync().expect("sync");
        let wals = wal_files(dir.path());
        assert_eq!(wals.len(), 1);
        let good = records_end(&std::fs::read(&wals[0]).expect("read"));
        storage.put(key("b"), record(2, b"two")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        // The second batch's write tore: half of it reached the disk, then garbage, then the
        // zeros the WAL was preallocated with. (A copy of an earlier, intact record would not be
        // a torn write: the engine rightly refuses a well-formed record out of sequence as
        // damage.)
        let mut bytes = std::fs::read(&wals[0]).expect("read");
        let end = records_end(&bytes);
        let torn = good + (end - good) / 2;
        bytes[torn..end].fill(0);
        bytes.resize(bytes.len().max(torn + 40), 0);
        bytes[torn..torn + 40].fill(0xab);
        std::fs::write(&wals[0], &bytes).expect("write");

        let mut storage =
            open(dir.path(), &settings(), &meaning()).expect("a torn tail is not an error");
        // Cut back to the last whole batch (the engine may then append its own recovery
        // marker, so the length is not compared exactly).
        let recovered = std::fs::metadata(&wals[0]).expect("meta").len();
        assert!(
            recovered < bytes.len() as u64,
            "the torn tail and garbage are cut: {recovered} bytes of {}",
            bytes.len()
        );
        assert_eq!(storage.get(b"a"), Ok(Some(record(1, b"one"))));
        assert_eq!(storage.get(b"b"), Ok(None), "the torn batch is cut");
        storage.put(key("c"), record(3, b"three")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        let mut storage = open(dir.path(), &settings(), &meaning()).expect("reopen");
        assert_eq!(storage.get(b"a"), Ok(Some(record(1, b"one"))));
        assert_eq!(storage.get(b"c"), Ok(Some(record(3, b"three"))));
    }

    #[test]
    fn damage_before_a_valid_wal_record_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = open(dir.path(), &settings(), &meaning()).expect("open");
        for i in 0..20 {
            storage
                .put(key(&format!("k{i}")), record(i, b"value"))
                .expect("put");
        }
        storage.sync().expect("sync");
        // A second synced batch: the WAL's sync marker then vouches for the first one, so damage
        // there is corruption of synced data (damage in the last synced batch cannot be told from
        // a torn tail; see lsm/FORMAT.md, "WAL recovery").
        for i in 20..40 {
            storage
                .put(key(&format!("k{i}")), record(i, b"value"))
                .expect("put");
        }
        storage.sync().expect("sync");
        drop(storage);
        let wals = wal_files(dir.path());
        let mut bytes = std::fs::read(&wals[0]).expect("read");
        // In the first batch's records, not in the zeros after them.
        let middle = records_end(&bytes) / 5;
        bytes[middle] ^= 0x10;
        std::fs::write(&wals[0], &bytes).expect("write");
        let error = open(dir.path(), &settings(), &meaning()).expect_err("corruption is refused");
        let wal_name = wals[0]
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        assert!(error.contains("damaged data"), "{error}");
        assert!(error.contains(&wal_name), "names the file: {error}");
    }

    #[test]
    fn a_data_dir_of_the_old_log_storage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(LEGACY_LOG_FILE_NAME), b"old").expect("write");
        let error = open(dir.path(), &settings(), &meaning()).expect_err("refused");
        assert!(error.contains(LEGACY_LOG_FILE_NAME), "{error}");
        assert!(!lsm_dir(dir.path()).exists(), "nothing created next to it");
    }

    /// The node's settings through the one scheduler on a simulated clock: writes bring steps
    /// forward, ticks finish the debt and collect the value log, and nothing is lost.
    #[test]
    fn maintenance_compacts_and_collects_and_nothing_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = small_settings();
        settings.maintenance_budget_bytes = 4096;
        settings.vlog_gc_interval_ticks = 2;
        let interval = std::time::Duration::from_millis(settings.maintenance_interval_ms);
        let mut storage = open(dir.path(), &settings, &meaning()).expect("open");
        let mut scheduler = MaintenanceScheduler::new(
            settings.maintenance(),
            Instant::ZERO,
            storage.maintenance_state(),
        )
        .expect("valid settings");
        let mut now = Instant::ZERO;
        let mut poll = |storage: &mut NodeStorage, now: Instant| {
            let step = scheduler.poll_step(now, storage.maintenance_state())?;
            Some(storage.maintain(step, 0).expect("maintain"))
        };
        let value =
            |round: u64, i: u64| vec![u8::try_from((round * 31 + i) % 251).unwrap_or(0); 300];
        for round in 0..6 {
            for i in 0..60 {
                storage
                    .put(key(&format!("key{i:03}")), record(round, &value(round, i)))
                    .expect("put");
            }
            storage.sync().expect("sync");
            assert!(
                poll(&mut storage, now).is_some(),
                "round {round}: its writes owe a step before the next tick"
            );
            now = now.saturating_add(interval);
            assert!(poll(&mut storage, now).is_some(), "a tick is due");
        }
        // Tick until maintenance has nothing left to do, as the driver's timer would.
        let mut idle_ticks = 0;
        for tick in 0..10_000 {
            now = now.saturating_add(interval);
            let done = poll(&mut storage, now).expect("a tick is due");
            if done == MaintenanceOutcome::default() {
                idle_ticks += 1;
                if idle_ticks == 3 {
                    break;
                }
            } else {
                idle_ticks = 0;
            }
            assert!(tick < 9_999, "maintenance never settles");
        }
        let gauges = StorageGauges::read(&mut storage);
        assert!(gauges.flushes > 0, "{gauges:?}");
        assert!(gauges.compactions > 0, "{gauges:?}");
        assert!(gauges.vlog_segments_collected > 0, "{gauges:?}");
        storage.lsm_mut().check_invariants();
        drop(storage);
        let mut storage = open(dir.path(), &settings, &meaning()).expect("reopen");
        for i in 0..60 {
            assert_eq!(
                storage.get(format!("key{i:03}").as_bytes()),
                Ok(Some(record(5, &value(5, i)))),
                "key{i:03}"
            );
        }
        assert_eq!(storage.scan(b"", 1000).expect("scan").len(), 60);
    }

    /// Issue 17, item 6, through the adapter the driver uses: a full disk refuses a write with
    /// `NoSpace` (no effect, nothing poisoned, maintenance does not fail), staged writes still
    /// sync, and once space is freed writes are accepted again without reopening.
    #[test]
    fn a_full_disk_refuses_writes_until_space_is_freed() {
        let fs = ringkv_lsm::fs::SimFs::seeded(8);
        let lsm = ringkv_lsm::Lsm::open(fs, small_settings().lsm).expect("open");
        let mut storage = LsmStorage::new(lsm);
        storage.put(key("a"), record(1, b"one")).expect("put");
        storage.sync().expect("sync");
        let used = storage.lsm_mut().fs_mut().used_bytes();
        storage
            .lsm_mut()
            .fs_mut()
            .set_capacity_bytes_max(Some(used + 2000));
        let mut refused = None;
        for i in 0..1000u64 {
            match storage.put(key(&format!("k{i}")), record(i, &[7u8; 300])) {
                Ok(()) => storage.sync().expect("staged writes sync"),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (i, e) = refused.expect("the disk filled");
        assert!(matches!(e, StorageError::NoSpace(_)), "{e}");
        assert!(e.to_string().contains("out of disk space"), "{e}");
        assert_eq!(
            storage.get(format!("k{i}").as_bytes()),
            Ok(None),
            "no effect"
        );
        assert_eq!(storage.get(b"a"), Ok(Some(record(1, b"one"))));
        assert!(storage.lsm_mut().poisoned().is_none());
        if let Err(e) = storage.maintain(STEP_FULL, 0) {
            assert!(e.is_no_space(), "{e}");
        }
        assert!(
            storage.lsm_mut().poisoned().is_none(),
            "maintenance on a full disk poisons nothing"
        );
        storage.lsm_mut().fs_mut().set_capacity_bytes_max(None);
        storage
            .put(key("after"), record(9, b"v"))
            .expect("accepted again without a restart");
        storage.sync().expect("sync");
        assert_eq!(storage.get(b"after"), Ok(Some(record(9, b"v"))));
    }

    #[test]
    fn a_failed_fsync_poisons_for_good() {
        let fs = ringkv_lsm::fs::SimFs::seeded(7);
        let lsm = ringkv_lsm::Lsm::open(fs, LsmConfig::default()).expect("open");
        let mut storage = LsmStorage::new(lsm);
        storage.put(key("a"), record(1, b"one")).expect("put");
        storage.lsm_mut().fs_mut().fail_next_fsync();
        assert!(matches!(storage.sync(), Err(StorageError::Poisoned(_))));
        let fsyncs = storage.lsm_mut().fs_mut().stats().fsyncs;
        assert!(matches!(storage.sync(), Err(StorageError::Poisoned(_))));
        assert!(storage.put(key("b"), record(2, b"x")).is_err());
        assert_eq!(
            storage.maintain(STEP_FULL, 0),
            Ok(MaintenanceOutcome::default())
        );
        assert_eq!(
            storage.lsm_mut().fs_mut().stats().fsyncs,
            fsyncs,
            "never retried"
        );
    }
}
