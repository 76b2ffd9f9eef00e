//! Snapshots of a node's data and the restore procedure (issue #14, item 4).
//!
//! **Snapshot** (`POST /admin/snapshot?name=NAME`, `ringkv admin snapshot [--name NAME]`): the
//! driver, between two inputs, takes a checkpoint of the engine ([`ringkv_lsm::Lsm::checkpoint`]:
//! flush, then hard links to the immutable tables and value-log segments and a manifest naming
//! exactly them) into `<data_dir>/snapshots/NAME/lsm`, next to a copy of the directory's
//! [`CLUSTER_META_FILE_NAME`] and a [`SNAPSHOT_INFO_FILE_NAME`] naming the node it was taken of.
//! It is built under a temporary name and renamed into place once every file and directory in
//! it is fsynced, so a crash leaves either a whole snapshot or a `.NAME.partial` leftover (removed
//! by the next snapshot of that name), never a half one under the final name. The snapshot holds
//! every write staged before it, acknowledged or not. Its files share disk blocks with the live
//! store until compaction rewrites them; copy the directory off the machine to keep it.
//!
//! **Restore** (`ringkv-node --restore-from DIR`, offline, into an empty `data_dir`): a node
//! restored from a snapshot holds *older* data than it acknowledged. That is a replaced disk
//! (`Node::start_as_replacement`, core `node/handover.rs`) that happens to hold a past state, and
//! is started exactly as one:
//! * **New data epoch.** The store's data epoch (core `node/data_epoch.rs`) is deleted before the
//!   node starts, so it draws a new one. With the snapshot's epoch, its vector-clock dots would
//!   count again from the snapshot's counters and repeat dots other replicas already hold for
//!   writes made after the snapshot; they would take its new writes as known and drop them.
//! * **Ready nowhere.** The node calls `start_as_replacement`: for `linearizable`, it counts
//!   in no quorum until it has pulled every range it replicates from a majority of ready
//!   replicas (its own old copy could make a read majority miss a completed write).
//! * **Refilled by repair.** What was written after the snapshot comes back from the other
//!   replicas through anti-entropy (and hints, read repair); a write acknowledged by W >= 2
//!   replicas survives on another one, exactly as after a disk wipe, and the snapshot saves
//!   moving everything older over the network.
//!
//! What the snapshot brings back that a wiped disk would not, and why it is harmless: hints held
//! at snapshot time (replayed again: a replica merges a version it already has or an older one,
//! which changes nothing), the membership and ring log (gossip brings the newer ring; a ring the
//! node never recorded makes it ready nowhere anyway), the incarnation and clock floor (older
//! than the last ones used, as on a wiped disk, which has none).
//!
//! The procedure must survive a crash at any point. The restore writes a [`RESTORED_MARKER_FILE_NAME`]
//! file first and copies the snapshot after it; while the marker is there, a restore may be
//! run again (it starts over), and every start deletes the data epoch and starts as a
//! replacement ([`prepare_restored_start`]). The marker is removed only once the new epoch and
//! the replacement state are durable ([`finish_restored_start`]), before the node serves anyone.

use crate::storage::{lsm_dir, CLUSTER_META_FILE_NAME, LSM_DIR_NAME};
use ringkv_core::{NodeId, Storage};
#[cfg(test)]
use ringkv_lsm::fs::SimFs;
use ringkv_lsm::fs::{FileSystem, StdFs, SPACE_RESERVE_FILE};
use ringkv_lsm::LsmStorage;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Subdirectory of `data_dir` holding the snapshots, one directory each.
pub const SNAPSHOTS_DIR_NAME: &str = "snapshots";

/// The file in a snapshot saying what it is ([`SnapshotInfo`]).
pub const SNAPSHOT_INFO_FILE_NAME: &str = "SNAPSHOT";

/// The file in `data_dir` saying it was restored from a snapshot and the node has not yet
/// started as a replacement (module docs).
pub const RESTORED_MARKER_FILE_NAME: &str = "RESTORED";

/// Longest snapshot name, in bytes.
pub const SNAPSHOT_NAME_BYTES_MAX: usize = 100;

/// Version of the [`SNAPSHOT_INFO_FILE_NAME`] file's layout.
const SNAPSHOT_FORMAT: u32 = 1;

/// Where a restore copies the engine's files before renaming the directory into place.
const RESTORING_DIR_NAME: &str = "lsm.restoring";

/// Checks a snapshot name: it becomes a directory name under `<data_dir>/snapshots`, so it
/// must not leave that directory (no `/`, no `..`), hide itself (a leading `.` is the
/// temporary name's) or need quoting: letters, digits, `.`, `_` and `-`, at most
/// [`SNAPSHOT_NAME_BYTES_MAX`] bytes.
pub fn validate_snapshot_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > SNAPSHOT_NAME_BYTES_MAX {
        return Err(format!(
            "a snapshot name has 1 to {SNAPSHOT_NAME_BYTES_MAX} characters"
        ));
    }
    if name.starts_with('.') || name.contains("..") {
        return Err("a snapshot name must not start with `.` or contain `..`".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "a snapshot name holds letters, digits, `.`, `_` and `-` only, not {c:?}"
        ));
    }
    Ok(())
}

/// A file system whose engine can be snapshotted: it can open another directory of the same
/// disk for the checkpoint's links.
pub trait SnapshotFs: FileSystem + Sized {
    /// The file system over the (new) directory `path`.
    fn open_dir(path: &Path) -> Result<Self, String>;
}

impl SnapshotFs for StdFs {
    fn open_dir(path: &Path) -> Result<Self, String> {
        StdFs::open(path).map_err(|e| format!("cannot use {}: {e}", path.display()))
    }
}

#[cfg(test)]
impl SnapshotFs for SimFs {
    fn open_dir(_: &Path) -> Result<Self, String> {
        Err("the simulated disk has no directories to snapshot into".to_string())
    }
}

/// What a snapshot is, as its [`SNAPSHOT_INFO_FILE_NAME`] file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    /// The layout of the file.
    pub format: u32,
    /// The node the snapshot was taken of: a restore onto another node is refused (its data
    /// belongs to other ranges, and its epoch and membership records to another identity).
    pub node_id: u32,
    /// The engine's sequence number of the last write the snapshot holds.
    pub last_seq: u64,
    /// Tables in the snapshot.
    pub tables: u64,
    /// Sealed value-log segments in the snapshot.
    pub segments: u64,
    /// Bytes of tables and segments (hard links: shared with the live store when taken).
    pub bytes: u64,
}

/// Why a snapshot was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The name is not a valid one ([`validate_snapshot_name`]).
    InvalidName(String),
    /// A snapshot of that name exists.
    Exists(PathBuf),
    /// The engine or the disk failed (the message names what).
    Failed(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::InvalidName(why) => write!(f, "invalid snapshot name: {why}"),
            SnapshotError::Exists(dir) => {
                write!(f, "{} exists: choose another name", dir.display())
            }
            SnapshotError::Failed(why) => write!(f, "snapshot failed: {why}"),
        }
    }
}

/// The directory of snapshot `name` of the node whose data directory is `data_dir`.
pub fn snapshot_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(SNAPSHOTS_DIR_NAME).join(name)
}

/// Takes snapshot `name` of `storage` (the engine of `node`, in `data_dir`) into
/// [`snapshot_dir`]; see the module docs. Returns its directory and what it holds.
pub fn take_snapshot<F: SnapshotFs>(
    storage: &mut LsmStorage<F>,
    data_dir: &Path,
    node: NodeId,
    name: &str,
) -> Result<(PathBuf, SnapshotInfo), SnapshotError> {
    validate_snapshot_name(name).map_err(SnapshotError::InvalidName)?;
    let snapshots = data_dir.join(SNAPSHOTS_DIR_NAME);
    let dir = snapshots.join(name);
    if dir.exists() {
        return Err(SnapshotError::Exists(dir));
    }
    let failed = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        SnapshotError::Failed(format!("{what} {}: {e}", path.display()))
    };
    let partial = snapshots.join(format!(".{name}.partial"));
    if partial.exists() {
        // What a crash during an earlier snapshot of this name left.
        std::fs::remove_dir_all(&partial).map_err(|e| failed("cannot remove", &partial, &e))?;
    }
    let new_snapshots_dir = !snapshots.exists();
    let partial_lsm = partial.join(LSM_DIR_NAME);
    std::fs::create_dir_all(&partial_lsm).map_err(|e| failed("cannot create", &partial_lsm, &e))?;
    let mut target = F::open_dir(&partial_lsm).map_err(SnapshotError::Failed)?;
    let report = storage
        .lsm_mut()
        .checkpoint(&mut target)
        .map_err(|e| failed("checkpoint of the engine into", &partial_lsm, &e))?;
    let meta = std::fs::read_to_string(data_dir.join(CLUSTER_META_FILE_NAME))
        .map_err(|e| failed("cannot read", &data_dir.join(CLUSTER_META_FILE_NAME), &e))?;
    write_synced(&partial.join(CLUSTER_META_FILE_NAME), meta.as_bytes())
        .map_err(|e| failed("cannot write", &partial, &e))?;
    let info = SnapshotInfo {
        format: SNAPSHOT_FORMAT,
        node_id: node.0,
        last_seq: report.last_seq,
        tables: report.tables as u64,
        segments: report.segments as u64,
        bytes: report.bytes,
    };
    let text = toml::to_string(&info).map_err(|e| failed("cannot render", &partial, &e))?;
    write_synced(&partial.join(SNAPSHOT_INFO_FILE_NAME), text.as_bytes())
        .map_err(|e| failed("cannot write", &partial, &e))?;
    sync_dir(&partial).map_err(|e| failed("cannot fsync", &partial, &e))?;
    std::fs::rename(&partial, &dir).map_err(|e| failed("cannot rename into", &dir, &e))?;
    sync_dir(&snapshots).map_err(|e| failed("cannot fsync", &snapshots, &e))?;
    if new_snapshots_dir {
        sync_dir(data_dir).map_err(|e| failed("cannot fsync", data_dir, &e))?;
    }
    // Absolute: the operator's shell is rarely in the node's working directory.
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    Ok((dir, info))
}

/// Reads and checks a snapshot's [`SNAPSHOT_INFO_FILE_NAME`], and that it is complete.
pub fn read_snapshot(snapshot: &Path) -> Result<SnapshotInfo, String> {
    let path = snapshot.join(SNAPSHOT_INFO_FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{} is not a ringkv snapshot ({}: {e})",
            snapshot.display(),
            path.display()
        )
    })?;
    let info: SnapshotInfo = toml::from_str(&text)
        .map_err(|e| format!("{} is damaged or from a newer ringkv: {e}", path.display()))?;
    if info.format != SNAPSHOT_FORMAT {
        return Err(format!(
            "{} has format {}, this ringkv reads {SNAPSHOT_FORMAT}",
            path.display(),
            info.format
        ));
    }
    for needed in [
        snapshot.join(CLUSTER_META_FILE_NAME),
        snapshot.join(LSM_DIR_NAME).join("MANIFEST"),
    ] {
        if !needed.is_file() {
            return Err(format!(
                "{} is incomplete: {} is missing",
                snapshot.display(),
                needed.display()
            ));
        }
    }
    Ok(info)
}

/// Restores `snapshot` (a snapshot directory, or a copy of one) into `data_dir` for `node`,
/// offline: the node starts on it afterwards as a replacement with a new data epoch (module
/// docs). Refused, with nothing written, for a snapshot of another node or a `data_dir` that
/// holds data (unless it holds an interrupted restore, which is started over). Files are copied,
/// not linked: the restored engine appends to its WAL and value log, which must not change the
/// snapshot, which may also be on another disk.
pub fn restore_snapshot(
    snapshot: &Path,
    data_dir: &Path,
    node: NodeId,
) -> Result<SnapshotInfo, String> {
    let info = read_snapshot(snapshot)?;
    if info.node_id != node.0 {
        return Err(format!(
            "{} is a snapshot of node {}, this is node {}: a node is restored from its own \
             snapshots only",
            snapshot.display(),
            info.node_id,
            node.0
        ));
    }
    let marker = data_dir.join(RESTORED_MARKER_FILE_NAME);
    let engine = lsm_dir(data_dir);
    if !marker.exists() {
        let holds_engine = std::fs::read_dir(&engine).is_ok_and(|mut d| d.next().is_some());
        if holds_engine || data_dir.join(CLUSTER_META_FILE_NAME).exists() {
            return Err(format!(
                "{} holds data: a restore goes into an empty data_dir only (move it away, or \
                 start without --restore-from to keep it)",
                data_dir.display()
            ));
        }
    }
    let io = |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    std::fs::create_dir_all(data_dir).map_err(|e| io("cannot create", data_dir, e))?;
    // The marker first: from here on, any start of this directory is a restored one.
    let text = format!(
        "# Restored by ringkv-node from {}; removed once the node has started on it as a \
         replacement.\n",
        snapshot.display()
    );
    write_synced(&marker, text.as_bytes()).map_err(|e| io("cannot write", &marker, e))?;
    sync_dir(data_dir).map_err(|e| io("cannot fsync", data_dir, e))?;
    let restoring = data_dir.join(RESTORING_DIR_NAME);
    for leftover in [&engine, &restoring] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(|e| io("cannot remove", leftover, e))?;
        }
    }
    std::fs::create_dir_all(&restoring).map_err(|e| io("cannot create", &restoring, e))?;
    let source = snapshot.join(LSM_DIR_NAME);
    let entries = std::fs::read_dir(&source).map_err(|e| io("cannot list", &source, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("cannot list", &source, e))?;
        // The space reserve is the engine's own to make (a snapshot opened as a store has one).
        if !entry.file_type().is_ok_and(|t| t.is_file()) || entry.file_name() == SPACE_RESERVE_FILE
        {
            continue;
        }
        let to = restoring.join(entry.file_name());
        std::fs::copy(entry.path(), &to).map_err(|e| io("cannot copy to", &to, e))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("cannot fsync", &to, e))?;
    }
    sync_dir(&restoring).map_err(|e| io("cannot fsync", &restoring, e))?;
    std::fs::rename(&restoring, &engine).map_err(|e| io("cannot rename into", &engine, e))?;
    let meta = snapshot.join(CLUSTER_META_FILE_NAME);
    let bytes = std::fs::read(&meta).map_err(|e| io("cannot read", &meta, e))?;
    let to = data_dir.join(CLUSTER_META_FILE_NAME);
    write_synced(&to, &bytes).map_err(|e| io("cannot write", &to, e))?;
    sync_dir(data_dir).map_err(|e| io("cannot fsync", data_dir, e))?;
    Ok(info)
}

/// At start, before the node is built: whether `data_dir` was restored from a snapshot and
/// not yet started on ([`RESTORED_MARKER_FILE_NAME`]); if so, deletes the stored data epoch so
/// the node draws a new one (module docs). The caller then calls
/// `Node::start_as_replacement` and [`finish_restored_start`].
pub fn prepare_restored_start<F: FileSystem>(
    data_dir: &Path,
    storage: &mut LsmStorage<F>,
) -> Result<bool, String> {
    if !data_dir.join(RESTORED_MARKER_FILE_NAME).exists() {
        return Ok(false);
    }
    storage
        .delete(ringkv_core::node::DATA_EPOCH_KEY)
        .map_err(|e| format!("cannot forget the snapshot's data epoch: {e}"))?;
    Ok(true)
}

/// At start, after `Node::start_as_replacement`: makes what the node staged (its new data
/// epoch, incarnation and replacement state) durable, then removes the marker. A crash before
/// the removal repeats the restored start, which is safe (another new epoch, pulls again).
pub fn finish_restored_start<F: FileSystem>(
    data_dir: &Path,
    storage: &mut LsmStorage<F>,
) -> Result<(), String> {
    storage
        .sync()
        .map_err(|e| format!("cannot make the restored start durable: {e}"))?;
    let marker = data_dir.join(RESTORED_MARKER_FILE_NAME);
    std::fs::remove_file(&marker)
        .and_then(|()| sync_dir(data_dir))
        .map_err(|e| format!("cannot remove {}: {e}", marker.display()))
}

/// Writes `path` whole and fsyncs it (the caller fsyncs the directory).
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{open, StorageSettings, StoredMeaning};
    use bytes::Bytes;
    use ringkv_core::version::{LwwRecord, LwwVersion};
    use ringkv_core::{ClusterConfig, ConflictMode, Node, NodeConfig, Record, Ring};

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

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("key{i:04}"))
    }

    fn settings() -> StorageSettings {
        let mut s = crate::config::FileConfig::dev()
            .validate()
            .expect("valid")
            .storage;
        // Small enough that the writes below make tables and value-log segments.
        s.lsm = ringkv_lsm::LsmConfig {
            key_bytes_max: s.lsm.key_bytes_max,
            value_bytes_max: s.lsm.value_bytes_max,
            ..ringkv_lsm::LsmConfig::tiny_for_tests()
        };
        s
    }

    fn cluster() -> ClusterConfig {
        ClusterConfig {
            conflict: ConflictMode::VectorClock,
            ..ClusterConfig::default()
        }
    }

    fn meaning() -> StoredMeaning {
        StoredMeaning::of(&cluster())
    }

    /// Node 1 alone in a ring, in vector-clock mode, on `storage`, started by process
    /// `process` (every process draws from its own seed, as `ringkv-node` does from the OS).
    fn node(
        storage: crate::storage::NodeStorage,
        process: u64,
    ) -> Node<crate::storage::NodeStorage> {
        let mut ring = Ring::new(cluster().vnodes_per_node);
        ring.add_node(
            NodeId(1),
            ringkv_core::NodeLocation {
                datacenter: "dc".into(),
                rack: "r".into(),
                weight: 1,
            },
        )
        .expect("ring");
        Node::new(
            NodeConfig {
                id: NodeId(1),
                cluster: cluster(),
                rng_seed: process,
            },
            ring,
            storage,
            ringkv_core::Now {
                monotonic: ringkv_core::Instant::ZERO,
                wall: ringkv_core::WallMicros(0),
            },
        )
        .expect("node")
    }

    #[test]
    fn snapshot_names_that_could_leave_the_directory_are_refused() {
        for good in ["nightly", "2026-12-06T08.40", "a_b-c.d", "x"] {
            assert_eq!(validate_snapshot_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(SNAPSHOT_NAME_BYTES_MAX + 1);
        for bad in [
            "", "..", "../x", "a/b", "a..b", ".hidden", "sp ace", "é", &long,
        ] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_restored_node_holds_exactly_the_snapshot_and_draws_a_new_data_epoch() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let mut original = node(open(&data, &settings(), &meaning()).expect("open"), 1);
        let original_actor = original.actor();
        let storage = original.storage_mut();
        for i in 0..200 {
            storage
                .put(key(i), record(1, &[i as u8; 300]))
                .expect("put");
        }
        storage.sync().expect("sync");
        let (dir, info) = take_snapshot(storage, &data, NodeId(1), "first").expect("snapshot");
        assert_eq!(
            dir,
            std::fs::canonicalize(snapshot_dir(&data, "first")).expect("exists")
        );
        assert!(info.tables > 0 && info.segments > 0, "{info:?}");
        assert_eq!(
            take_snapshot(storage, &data, NodeId(1), "first"),
            Err(SnapshotError::Exists(dir.clone()))
        );
        assert!(matches!(
            take_snapshot(storage, &data, NodeId(1), "../escape"),
            Err(SnapshotError::InvalidName(_))
        ));
        // After the snapshot: overwrites and new keys, compacted away from the snapshot's files.
        for i in 100..300 {
            storage.put(key(i), record(2, b"later")).expect("put");
        }
        storage.sync().expect("sync");
        for _ in 0..10_000 {
            let step = ringkv_lsm::maintenance::MaintenanceStep {
                compaction_budget_bytes: 1 << 20,
                collect_value_log: true,
            };
            if storage.maintain(step, 0).expect("maintain")
                == ringkv_lsm::maintenance::MaintenanceOutcome::default()
            {
                break;
            }
        }
        drop(original);

        // The operator keeps a copy off the machine, then the disk is lost.
        let backup = root.path().join("backup");
        copy_tree(&dir, &backup);
        std::fs::remove_dir_all(&data).expect("wipe");

        assert!(restore_snapshot(&backup, &data, NodeId(2))
            .expect_err("another node's snapshot")
            .contains("snapshot of node 1"),);
        assert!(!data.exists(), "a refused restore writes nothing");
        assert_eq!(restore_snapshot(&backup, &data, NodeId(1)), Ok(info));
        assert!(data.join(RESTORED_MARKER_FILE_NAME).exists());

        let mut storage = open(&data, &settings(), &meaning()).expect("open restored");
        assert_eq!(prepare_restored_start(&data, &mut storage), Ok(true));
        let mut restored = node(storage, 2);
        restored.start_as_replacement();
        finish_restored_start(&data, restored.storage_mut()).expect("finish");
        assert!(!data.join(RESTORED_MARKER_FILE_NAME).exists());
        let actor = restored.actor();
        assert_eq!(actor.node, original_actor.node);
        assert_ne!(
            actor, original_actor,
            "a restored node draws a new data epoch"
        );
        let mut storage = restored.into_storage();
        for i in 0..300 {
            let expected = (i < 200).then(|| record(1, &[i as u8; 300]));
            assert_eq!(storage.get(&key(i)), Ok(expected), "key {i}");
        }
        // A later restart keeps the new epoch, and a restore over the data is refused.
        drop(storage);
        let mut storage = open(&data, &settings(), &meaning()).expect("reopen");
        assert_eq!(prepare_restored_start(&data, &mut storage), Ok(false));
        assert_eq!(node(storage, 3).actor(), actor, "a later restart keeps it");
        assert!(restore_snapshot(&backup, &data, NodeId(1))
            .expect_err("data_dir holds data")
            .contains("empty data_dir"));
    }

    #[test]
    fn an_interrupted_restore_is_started_over() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let mut storage = open(&data, &settings(), &meaning()).expect("open");
        storage.put(key(1), record(1, b"one")).expect("put");
        let (dir, _) = take_snapshot(&mut storage, &data, NodeId(1), "s").expect("snapshot");
        drop(storage);
        let target = root.path().join("target");
        restore_snapshot(&dir, &target, NodeId(1)).expect("restore");
        // A crash after the copy began: the engine's directory is half there, the marker too.
        std::fs::remove_file(target.join(CLUSTER_META_FILE_NAME)).expect("remove");
        std::fs::remove_file(lsm_dir(&target).join("MANIFEST")).expect("remove");
        restore_snapshot(&dir, &target, NodeId(1)).expect("restore again");
        let mut storage = open(&target, &settings(), &meaning()).expect("open");
        assert_eq!(storage.get(&key(1)), Ok(Some(record(1, b"one"))));
    }

    #[test]
    fn a_snapshot_still_on_the_nodes_disk_restores_in_place() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let mut storage = open(&data, &settings(), &meaning()).expect("open");
        storage.put(key(1), record(1, b"one")).expect("put");
        let (dir, _) = take_snapshot(&mut storage, &data, NodeId(1), "s").expect("snapshot");
        storage.put(key(2), record(2, b"two")).expect("put");
        storage.sync().expect("sync");
        drop(storage);
        // The engine's files are damaged: the operator moves them aside, keeps `snapshots/`.
        std::fs::rename(lsm_dir(&data), root.path().join("damaged")).expect("move");
        std::fs::remove_file(data.join(CLUSTER_META_FILE_NAME)).expect("remove");
        restore_snapshot(&dir, &data, NodeId(1)).expect("restore in place");
        let mut storage = open(&data, &settings(), &meaning()).expect("open");
        assert_eq!(storage.get(&key(1)), Ok(Some(record(1, b"one"))));
        assert_eq!(storage.get(&key(2)), Ok(None), "written after the snapshot");
        assert!(read_snapshot(&dir).is_ok(), "the snapshot is untouched");
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("list") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if path.is_dir() {
                copy_tree(&path, &to.join(entry.file_name()));
            } else {
                std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
            }
        }
    }
}
