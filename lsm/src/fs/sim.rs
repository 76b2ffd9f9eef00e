//! A deterministic, seeded, in-memory disk that injects the faults real disks have.
//!
//! Issue 5 places the simulated disk in `sim/`; it lives here for now so the engine's own crash
//! tests can use it without a dependency cycle, and `sim` will re-export it (or it will move there)
//! later.
//!
//! The model, per file: the bytes an `fsync` has made durable and the current bytes (durable plus
//! an unsynced tail). Per directory: the names as they are now and the names as of the last
//! `fsync_dir`. [`SimFs::crash`] keeps the durable names and, per file, the durable bytes plus,
//! depending on the [`CrashMode`], nothing, a random prefix of the unsynced tail, or such a prefix
//! whose last bytes are garbage (a torn write). Faults on demand: a bit flip in stored bytes, a
//! failing next fsync, a full disk.

use super::{FileSystem, FsError, FsErrorKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// What a crash does to bytes that were written but not fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost.
    LoseUnsynced,
    /// Each file keeps a random prefix (possibly empty, possibly all) of its unsynced tail.
    KeepRandomPrefix,
    /// Like `KeepRandomPrefix`, and the last few kept unsynced bytes are garbage (a torn write).
    TearLastWrite,
}

/// Options of a simulated disk.
#[derive(Clone, Debug)]
pub struct SimFsOptions {
    /// Seed of the fault draws.
    pub seed: u64,
    /// Total bytes the disk holds before appends fail with `NoSpace`; `None` for unbounded.
    pub capacity_bytes_max: Option<u64>,
    /// A deliberately broken disk whose fsync reports success and makes nothing durable. Exists
    /// only so tests can show that the crash oracle catches acknowledging before durability.
    pub fsync_lies: bool,
}

impl SimFsOptions {
    /// A correct, unbounded disk with the given seed.
    pub fn seeded(seed: u64) -> Self {
        SimFsOptions {
            seed,
            capacity_bytes_max: None,
            fsync_lies: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Set when a truncate cut below the durable length: `durable` is then not a prefix of
    /// `current`, and a crash restores `durable` as is.
    diverged: bool,
}

/// Counters of what the disk was asked to do (for write amplification).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimFsStats {
    /// Bytes appended over the disk's life.
    pub bytes_appended: u64,
    /// Successful file and directory fsyncs.
    pub fsyncs: u64,
    /// Crashes simulated.
    pub crashes: u64,
}

/// The simulated disk. Cloning it clones the whole disk state (useful to branch a test).
#[derive(Clone, Debug)]
pub struct SimFs {
    options: SimFsOptions,
    rng: ChaCha8Rng,
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    next_inode: u64,
    fail_next_fsync: bool,
    stats: SimFsStats,
}

impl SimFs {
    /// An empty disk.
    pub fn new(options: SimFsOptions) -> Self {
        SimFs {
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            options,
            inodes: BTreeMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            next_inode: 1,
            fail_next_fsync: false,
            stats: SimFsStats::default(),
        }
    }

    /// An empty, correct disk with the given seed.
    pub fn seeded(seed: u64) -> Self {
        SimFs::new(SimFsOptions::seeded(seed))
    }

    /// Counters since creation.
    pub fn stats(&self) -> SimFsStats {
        self.stats
    }

    /// Makes the next file or directory fsync fail (and make nothing durable).
    pub fn fail_next_fsync(&mut self) {
        self.fail_next_fsync = true;
    }

    /// Simulates a power cut: keeps the durable directory and, per file, the durable bytes plus
    /// what `mode` keeps of the unsynced tail. Clears a pending injected fsync failure.
    pub fn crash(&mut self, mode: CrashMode) {
        self.stats.crashes += 1;
        self.fail_next_fsync = false;
        self.names = self.durable_names.clone();
        let live: std::collections::BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|id, _| live.contains(id));
        for inode in self.inodes.values_mut() {
            if inode.diverged || mode == CrashMode::LoseUnsynced {
                inode.current = inode.durable.clone();
                inode.diverged = false;
                continue;
            }
            let durable_len = inode.durable.len();
            let tail_len = inode.current.len() - durable_len;
            let keep = if tail_len == 0 {
                0
            } else {
                self.rng.gen_range(0..=tail_len)
            };
            inode.current.truncate(durable_len + keep);
            if mode == CrashMode::TearLastWrite && keep > 0 {
                let garbage = self.rng.gen_range(1..=keep.min(16));
                let end = inode.current.len();
                for byte in &mut inode.current[end - garbage..] {
                    *byte = self.rng.gen();
                }
            }
            inode.durable = inode.current.clone();
        }
    }

    /// Draws a crash mode from the disk's seed.
    pub fn random_crash_mode(&mut self) -> CrashMode {
        match self.rng.gen_range(0..3) {
            0 => CrashMode::LoseUnsynced,
            1 => CrashMode::KeepRandomPrefix,
            _ => CrashMode::TearLastWrite,
        }
    }

    /// Flips bit `bit` (counted from the file start) of `name`, in its current and durable bytes.
    /// Returns false if the file does not exist or is shorter.
    pub fn flip_bit(&mut self, name: &str, bit: u64) -> bool {
        let Some(id) = self.names.get(name) else {
            return false;
        };
        let Some(inode) = self.inodes.get_mut(id) else {
            return false;
        };
        let Ok(byte) = usize::try_from(bit / 8) else {
            return false;
        };
        let mask = 1u8 << (bit % 8);
        let mut flipped = false;
        for bytes in [&mut inode.current, &mut inode.durable] {
            if let Some(b) = bytes.get_mut(byte) {
                *b ^= mask;
                flipped = true;
            }
        }
        flipped
    }

    /// Flips one random bit of `name`'s durable bytes; returns the bit, or `None` if the file is
    /// missing or empty.
    pub fn flip_random_bit(&mut self, name: &str) -> Option<u64> {
        let len = self
            .names
            .get(name)
            .and_then(|id| self.inodes.get(id))
            .map(|inode| inode.durable.len().min(inode.current.len()))?;
        if len == 0 {
            return None;
        }
        let bit = self.rng.gen_range(0..(len as u64) * 8);
        self.flip_bit(name, bit).then_some(bit)
    }

    /// Total bytes currently stored (current view).
    pub fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    fn inode(&mut self, name: &str) -> Result<&mut Inode, FsError> {
        let id = *self
            .names
            .get(name)
            .ok_or_else(|| FsError::new(name, FsErrorKind::NotFound, "no such file"))?;
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| FsError::new(name, FsErrorKind::NotFound, "dangling name"))
    }

    fn take_sync_failure(&mut self, name: &str) -> Result<(), FsError> {
        if self.fail_next_fsync {
            self.fail_next_fsync = false;
            return Err(FsError::new(
                name,
                FsErrorKind::SyncFailed,
                "injected fsync failure",
            ));
        }
        Ok(())
    }
}

impl FileSystem for SimFs {
    fn create(&mut self, name: &str) -> Result<(), FsError> {
        if self.names.contains_key(name) {
            return Err(FsError::new(name, FsErrorKind::AlreadyExists, "exists"));
        }
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.names.insert(name.to_string(), id);
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), FsError> {
        if let Some(max) = self.options.capacity_bytes_max {
            if self.used_bytes() + data.len() as u64 > max {
                return Err(FsError::new(name, FsErrorKind::NoSpace, "disk full"));
            }
        }
        self.stats.bytes_appended += data.len() as u64;
        self.inode(name)?.current.extend_from_slice(data);
        Ok(())
    }

    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let inode = self.inode(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(len);
        inode
            .current
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                FsError::new(
                    name,
                    FsErrorKind::Other,
                    format!("read of {len} bytes at {offset} past the end"),
                )
            })
    }

    fn len(&mut self, name: &str) -> Result<u64, FsError> {
        Ok(self.inode(name)?.current.len() as u64)
    }

    fn fsync(&mut self, name: &str) -> Result<(), FsError> {
        self.inode(name)?;
        self.take_sync_failure(name)?;
        self.stats.fsyncs += 1;
        if self.options.fsync_lies {
            return Ok(());
        }
        let inode = self.inode(name)?;
        if inode.diverged || !inode.current.starts_with(&inode.durable) {
            inode.durable = inode.current.clone();
            inode.diverged = false;
        } else {
            let from = inode.durable.len();
            let tail = inode.current[from..].to_vec();
            inode.durable.extend_from_slice(&tail);
        }
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), FsError> {
        let id = self
            .names
            .remove(from)
            .ok_or_else(|| FsError::new(from, FsErrorKind::NotFound, "no such file"))?;
        self.names.insert(to.to_string(), id);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), FsError> {
        self.names
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| FsError::new(name, FsErrorKind::NotFound, "no such file"))
    }

    fn list(&mut self) -> Result<Vec<String>, FsError> {
        Ok(self.names.keys().cloned().collect())
    }

    fn fsync_dir(&mut self) -> Result<(), FsError> {
        self.take_sync_failure("<dir>")?;
        self.stats.fsyncs += 1;
        if !self.options.fsync_lies {
            self.durable_names = self.names.clone();
        }
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), FsError> {
        let inode = self.inode(name)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < inode.current.len() {
            inode.current.truncate(len);
            if len < inode.durable.len() {
                inode.diverged = true;
            }
        }
        Ok(())
    }

    fn exists(&mut self, name: &str) -> Result<bool, FsError> {
        Ok(self.names.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_durable_names_only() {
        let mut fs = SimFs::seeded(1);
        fs.create("a").expect("create");
        fs.append("a", b"hello").expect("append");
        fs.fsync("a").expect("fsync");
        fs.fsync_dir().expect("fsync dir");
        fs.append("a", b" world").expect("append");
        fs.create("b").expect("create");
        fs.crash(CrashMode::LoseUnsynced);
        assert_eq!(fs.read_all("a").expect("read"), b"hello");
        assert!(
            !fs.exists("b").expect("exists"),
            "b's name was never synced"
        );
    }

    #[test]
    fn rename_is_durable_only_after_dir_fsync() {
        let mut fs = SimFs::seeded(2);
        fs.create("tmp").expect("create");
        fs.append("tmp", b"x").expect("append");
        fs.fsync("tmp").expect("fsync");
        fs.fsync_dir().expect("fsync dir");
        fs.rename("tmp", "final").expect("rename");
        fs.crash(CrashMode::LoseUnsynced);
        assert_eq!(fs.list().expect("list"), vec!["tmp".to_string()]);
    }

    #[test]
    fn kept_prefix_is_a_prefix_of_what_was_written() {
        for seed in 0..50 {
            let mut fs = SimFs::seeded(seed);
            fs.create("w").expect("create");
            fs.fsync_dir().expect("fsync dir");
            fs.append("w", b"abc").expect("append");
            fs.fsync("w").expect("fsync");
            fs.append("w", b"defghij").expect("append");
            fs.crash(CrashMode::KeepRandomPrefix);
            let data = fs.read_all("w").expect("read");
            assert!(b"abcdefghij".starts_with(&data) && data.len() >= 3);
        }
    }

    #[test]
    fn failed_fsync_makes_nothing_durable() {
        let mut fs = SimFs::seeded(3);
        fs.create("a").expect("create");
        fs.fsync_dir().expect("fsync dir");
        fs.append("a", b"x").expect("append");
        fs.fail_next_fsync();
        assert_eq!(
            fs.fsync("a").map_err(|e| e.kind),
            Err(FsErrorKind::SyncFailed)
        );
        fs.crash(CrashMode::LoseUnsynced);
        assert_eq!(fs.read_all("a").expect("read"), b"");
    }

    #[test]
    fn unsynced_truncate_is_undone_by_a_crash() {
        let mut fs = SimFs::seeded(4);
        fs.create("a").expect("create");
        fs.append("a", b"abcdef").expect("append");
        fs.fsync("a").expect("fsync");
        fs.fsync_dir().expect("fsync dir");
        fs.truncate("a", 2).expect("truncate");
        fs.crash(CrashMode::TearLastWrite);
        assert_eq!(fs.read_all("a").expect("read"), b"abcdef");
    }
}
