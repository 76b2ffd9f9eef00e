//! A deterministic, seeded, in-memory disk that injects the faults real disks have.
//!
//! Issue 5 places the simulated disk in `sim/`; it lives here for now so the engine's own crash
//! tests can use it without a dependency cycle, and `sim` will re-export it (or it will move there)
//! later.
//!
//! The model, per file: the bytes an `fsync` has made durable and the current bytes (durable plus
//! an unsynced tail). Per directory: the names as they are now and the names as of the last
//! `fsync_dir`. [`SimFs::crash`] keeps the durable names and, per file, the durable bytes plus,
//! depending on the [`CrashMode`], nothing, a random prefix of the unsynced tail, such a prefix
//! whose last bytes are garbage (a torn write), or an independent keep-or-lose draw per 512-byte
//! sector of the tail, which can leave zero-filled holes ([`CrashMode::Sectors`]). Faults on
//! demand: a bit flip in stored bytes, a failing next fsync, a full disk.
//!
//! # Sector model ([`CrashMode::Sectors`])
//!
//! A disk writes whole sectors ([`SECTOR_BYTES`]) atomically, but in no promised order, and the
//! page cache writes a file's dirty pages back in no promised order either: after a power cut any
//! subset of the sectors written since the last `fsync` may have reached the platter. The file
//! *length* is metadata, journaled separately from the data (ext4 `data=writeback`, XFS: the
//! well-known "file full of zeros after a crash"), so it may cover sectors whose data never
//! arrived. What the simulated disk does, per file, on such a crash:
//!
//! * bytes made durable by an `fsync` are never lost or changed (a sector that holds durable bytes
//!   and unsynced ones keeps the durable ones even when the write of that sector is lost);
//! * every sector overlapping the unsynced tail is kept or lost independently, with a keep
//!   probability drawn per file (0, 1/4, 1/2, 3/4 or 1, so that "all lost" and "all kept" are
//!   common); [`CrashMode::SectorPrefix`] instead keeps the first sectors of the tail (a random
//!   count of them) and loses the rest, which leaves no hole before kept data;
//! * the recovered length is, with equal chance, the end of the last kept sector (the data
//!   and the size arrived together), the full current length (the size arrived, not all data), or
//!   any length between the durable length and the current length;
//! * a lost sector below the recovered length reads as zeros: the file system hands out zeroed
//!   (or "unwritten") blocks for appended data and never exposes stale content. A truncate below
//!   the durable length followed by appends either did not survive (the durable bytes come back
//!   whole, as in the other modes) or did, and the appends after it go through the sector draw
//!   like any tail;
//! * an overwrite ([`FileSystem::write_at`]) of durable bytes makes the unsynced part of the file
//!   start at the lowest byte it changed: a lost sector there reads as its *durable* content (the
//!   old bytes, which the WAL's preallocation makes zeros), and the prefix modes keep the new
//!   bytes up to a random point and the old ones after it. The length never falls below the
//!   durable length (an overwrite changes no size).
//!
//! # Latency model
//!
//! The engine is synchronous, so the disk cannot block; instead it *accounts* simulated time.
//! Each read ([`FileSystem::read_at`]), append, file fsync and directory fsync draws a latency
//! from its configured range ([`SimLatency`]) and adds it to [`SimFs::elapsed_micros`]; a caller
//! (the simulator) reads the clock before and after a call to learn how long the disk took and
//! schedules the completion that much later. Metadata calls (create, rename, remove, list, len,
//! truncate, exists) are free: their cost is paid by the `fsync_dir` that makes them durable.
//! Fsyncs are charged even when they fail (the device was asked); a read or append that fails
//! before reaching the device (missing file, full disk) is free. Latency draws come from their own
//! seeded stream, so turning latency on does not change which faults a seed injects; a range with
//! `min == max` draws nothing. The default is zero latency everywhere.

use super::{FileSystem, FsError, FsErrorKind};
use crate::faults::FaultPoints;
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
    /// Each 512-byte sector of the unsynced tail is kept or lost independently; the length may
    /// cover lost sectors, which read as zeros (holes). See the module's "Sector model".
    Sectors,
    /// Like `Sectors`, but the kept sectors are the first ones of the tail (a disk that writes in
    /// order): no hole is followed by kept data, yet the length may still cover the lost sectors,
    /// which read as zeros (a zero-filled tail).
    SectorPrefix,
}

impl CrashMode {
    /// Every mode.
    pub const ALL: [CrashMode; 5] = [
        CrashMode::LoseUnsynced,
        CrashMode::KeepRandomPrefix,
        CrashMode::TearLastWrite,
        CrashMode::Sectors,
        CrashMode::SectorPrefix,
    ];
}

/// Size of the unit a disk writes atomically, for [`CrashMode::Sectors`].
pub const SECTOR_BYTES: usize = 512;

/// A latency range in microseconds, drawn uniformly (inclusive). `min == max` draws nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyRange {
    /// Shortest latency.
    pub min_micros: u64,
    /// Longest latency (clamped up to `min_micros`).
    pub max_micros: u64,
}

impl LatencyRange {
    /// A range from `min_micros` to `max_micros` inclusive.
    pub fn micros(min_micros: u64, max_micros: u64) -> Self {
        LatencyRange {
            min_micros,
            max_micros,
        }
    }
}

/// Per-operation latencies of the simulated disk (all zero by default). See the module's
/// "Latency model".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimLatency {
    /// [`FileSystem::read_at`] (and so `read_all`).
    pub read: LatencyRange,
    /// [`FileSystem::append`].
    pub append: LatencyRange,
    /// [`FileSystem::fsync`].
    pub fsync: LatencyRange,
    /// [`FileSystem::fsync_dir`].
    pub fsync_dir: LatencyRange,
}

/// The kinds of operation that take simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimOpKind {
    /// A read.
    Read,
    /// An append.
    Append,
    /// A file fsync.
    Fsync,
    /// A directory fsync.
    FsyncDir,
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
    /// Per-operation latencies accounted as simulated time ([`SimFs::elapsed_micros`]).
    pub latency: SimLatency,
    /// The engine's fault points (`crate::faults`) are live on this disk, seeded by `seed`:
    /// the simulator and the crash oracle switch them on; off by default.
    pub fault_points: bool,
}

impl SimFsOptions {
    /// A correct, unbounded disk with the given seed.
    pub fn seeded(seed: u64) -> Self {
        SimFsOptions {
            seed,
            capacity_bytes_max: None,
            fsync_lies: false,
            latency: SimLatency::default(),
            fault_points: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Set when a truncate cut below the durable length: `durable` is then not a prefix of
    /// `current`, and a crash restores `durable` as is (or, in [`CrashMode::Sectors`], may keep
    /// the truncate).
    diverged: bool,
    /// The smallest length the file had since its last fsync (where a kept truncate cut it).
    low_water: usize,
    /// The lowest durable byte an overwrite changed since the last fsync: a crash may give the
    /// old bytes back from there on (module doc, "Sector model").
    rewritten_from: Option<usize>,
}

/// Counters of what the disk was asked to do (for write amplification).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimFsStats {
    /// Bytes appended or overwritten over the disk's life.
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
    /// Bytes set aside by [`FileSystem::reserve_space`] (counted as used).
    reserved_bytes: u64,
    stats: SimFsStats,
    latency_rng: ChaCha8Rng,
    elapsed_micros: u64,
    /// The engine's fault points, when switched on: they live with the disk, so their draws and
    /// counts run on across the engine's crashes and reopens.
    faults: Option<FaultPoints>,
}

impl SimFs {
    /// The engine's fault points on this disk (their per-run counts), if switched on.
    pub fn fault_points(&self) -> Option<&FaultPoints> {
        self.faults.as_ref()
    }

    /// An empty disk.
    pub fn new(options: SimFsOptions) -> Self {
        SimFs {
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            inodes: BTreeMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            next_inode: 1,
            fail_next_fsync: false,
            reserved_bytes: 0,
            stats: SimFsStats::default(),
            latency_rng: ChaCha8Rng::seed_from_u64(options.seed ^ 0x6c61_7465_6e63_7921),
            elapsed_micros: 0,
            faults: options.fault_points.then(|| FaultPoints::new(options.seed)),
            options,
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
            match mode {
                CrashMode::LoseUnsynced => inode.current = inode.durable.clone(),
                // An overwrite after a truncate below the durable length: the durable bytes come
                // back whole (one of the outcomes every mode allows).
                _ if inode.diverged && inode.rewritten_from.is_some() => {
                    inode.current = inode.durable.clone();
                }
                CrashMode::KeepRandomPrefix | CrashMode::TearLastWrite => {
                    if !inode.diverged {
                        keep_random_prefix(&mut self.rng, inode, mode == CrashMode::TearLastWrite);
                    } else {
                        inode.current = inode.durable.clone();
                    }
                }
                CrashMode::Sectors | CrashMode::SectorPrefix => {
                    // An unsynced truncate below the durable length: the truncate (metadata)
                    // survives or not; if it does, what was appended after it is an unsynced
                    // tail from the truncated length on.
                    let base = if !inode.diverged {
                        Some(unsynced_from(inode))
                    } else if self.rng.gen_bool(0.5) {
                        Some(inode.low_water)
                    } else {
                        None
                    };
                    match base {
                        Some(base) => {
                            let holes = mode == CrashMode::Sectors;
                            // After a kept truncate, nothing below the cut is old content.
                            let old = if inode.diverged {
                                &[][..]
                            } else {
                                &inode.durable[..]
                            };
                            keep_sectors(&mut self.rng, &mut inode.current, old, base, holes);
                        }
                        None => inode.current = inode.durable.clone(),
                    }
                }
            }
            inode.diverged = false;
            inode.rewritten_from = None;
            inode.durable = inode.current.clone();
            inode.low_water = inode.current.len();
        }
    }

    /// Draws a crash mode from the disk's seed among `LoseUnsynced`, `KeepRandomPrefix` and
    /// `TearLastWrite` (the historical draw, kept so existing seeds replay unchanged; the sector
    /// modes are drawn with [`SimFs::random_crash_mode_among`]).
    pub fn random_crash_mode(&mut self) -> CrashMode {
        match self.rng.gen_range(0..3) {
            0 => CrashMode::LoseUnsynced,
            1 => CrashMode::KeepRandomPrefix,
            _ => CrashMode::TearLastWrite,
        }
    }

    /// Draws one of `modes` (equally likely) from the disk's seed; `LoseUnsynced` if empty.
    pub fn random_crash_mode_among(&mut self, modes: &[CrashMode]) -> CrashMode {
        if modes.is_empty() {
            return CrashMode::LoseUnsynced;
        }
        modes[self.rng.gen_range(0..modes.len())]
    }

    /// The durable length of `name` (what a [`CrashMode::LoseUnsynced`] crash would leave), or
    /// `None` if no such file is named now.
    pub fn durable_len(&self, name: &str) -> Option<u64> {
        let inode = self.inodes.get(self.names.get(name)?)?;
        Some(inode.durable.len() as u64)
    }

    /// Simulated time the disk has spent so far, in microseconds (see the module's "Latency
    /// model"). Read it before and after a call to learn that call's latency.
    pub fn elapsed_micros(&self) -> u64 {
        self.elapsed_micros
    }

    /// Charges one operation of `kind` to the simulated clock; returns its latency.
    fn charge(&mut self, kind: SimOpKind) -> u64 {
        let range = match kind {
            SimOpKind::Read => self.options.latency.read,
            SimOpKind::Append => self.options.latency.append,
            SimOpKind::Fsync => self.options.latency.fsync,
            SimOpKind::FsyncDir => self.options.latency.fsync_dir,
        };
        let micros = if range.max_micros <= range.min_micros {
            range.min_micros
        } else {
            self.latency_rng
                .gen_range(range.min_micros..=range.max_micros)
        };
        self.elapsed_micros = self.elapsed_micros.saturating_add(micros);
        micros
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

    /// Total bytes currently stored (current view: files with a name, and the reserve). A
    /// removed file's bytes are free at once, as on a real disk once no descriptor holds it.
    pub fn used_bytes(&self) -> u64 {
        let files: u64 = self
            .names
            .values()
            .filter_map(|id| self.inodes.get(id))
            .map(|i| i.current.len() as u64)
            .sum();
        files + self.reserved_bytes
    }

    /// Changes the disk's size (`None`: unbounded), to fill a disk and give space back in a test.
    pub fn set_capacity_bytes_max(&mut self, capacity_bytes_max: Option<u64>) {
        self.options.capacity_bytes_max = capacity_bytes_max;
    }

    /// Bytes currently held by the space reserve.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved_bytes
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

/// Where the unsynced part of a file (not cut below its durable length) starts: the durable
/// length, or the lowest durable byte an overwrite changed.
fn unsynced_from(inode: &Inode) -> usize {
    let durable_len = inode.durable.len();
    inode
        .rewritten_from
        .map_or(durable_len, |from| from.min(durable_len))
}

/// [`CrashMode::KeepRandomPrefix`] / [`CrashMode::TearLastWrite`] on a file not cut below its
/// durable length: the new bytes are kept up to a random point of the unsynced part, the old
/// (durable) ones after it, and the length never falls below the durable length.
fn keep_random_prefix(rng: &mut ChaCha8Rng, inode: &mut Inode, tear: bool) {
    let base = unsynced_from(inode);
    let tail_len = inode.current.len() - base;
    let keep = if tail_len == 0 {
        0
    } else {
        rng.gen_range(0..=tail_len)
    };
    inode.current.truncate(base + keep);
    if tear && keep > 0 {
        let garbage = rng.gen_range(1..=keep.min(16));
        let end = inode.current.len();
        for at in end - garbage..end {
            // Only bytes that were written tear: not durable ones an overwrite left as they were.
            let noise: u8 = rng.gen();
            if inode.durable.get(at) != Some(&inode.current[at]) {
                inode.current[at] = noise;
            }
        }
    }
    if let Some(old) = inode.durable.get(inode.current.len()..) {
        inode.current.extend_from_slice(old);
    }
}

/// [`CrashMode::Sectors`] (`holes`) or [`CrashMode::SectorPrefix`] on `bytes`, whose first `base`
/// bytes are durable and unchanged: every sector overlapping `bytes[base..]` is kept or lost
/// (independently with `holes`, else the kept ones are the first ones), the length is drawn
/// between the durable length (`old.len()`, at least `base`) and the current length, and a lost
/// byte below it reads as its `old` (durable) content, or zero past it (module docs, "Sector
/// model").
fn keep_sectors(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, old: &[u8], base: usize, holes: bool) {
    let end = bytes.len();
    let floor = old.len().max(base);
    if end <= base {
        bytes.truncate(base.min(end));
        return;
    }
    let first = base / SECTOR_BYTES;
    let last = (end - 1) / SECTOR_BYTES;
    let kept: Vec<bool> = if holes {
        let keep_quarters = rng.gen_range(0..=4u32);
        (first..=last)
            .map(|_| rng.gen_ratio(keep_quarters, 4))
            .collect()
    } else {
        let kept_count = rng.gen_range(0..=last - first + 1);
        (0..=last - first).map(|i| i < kept_count).collect()
    };
    let last_kept_end = kept
        .iter()
        .rposition(|&k| k)
        .map_or(base, |i| ((first + i + 1) * SECTOR_BYTES).min(end))
        .max(floor.min(end));
    let len = match rng.gen_range(0..3) {
        0 => last_kept_end,
        1 => end,
        _ => rng.gen_range(floor.min(end)..=end),
    };
    bytes.truncate(len);
    for (i, &keep) in kept.iter().enumerate() {
        if keep {
            continue;
        }
        let from = ((first + i) * SECTOR_BYTES).max(base);
        let to = ((first + i + 1) * SECTOR_BYTES).min(len);
        if from < to {
            // Old bytes where the file had them, zeros past its durable end.
            let old_to = old.len().clamp(from, to);
            if old_to > from {
                bytes[from..old_to].copy_from_slice(&old[from..old_to]);
            }
            bytes[old_to..to].fill(0);
        }
    }
}

impl FileSystem for SimFs {
    fn fault_point(&mut self, site: &'static str) -> bool {
        self.faults.as_mut().is_some_and(|f| f.fire(site))
    }

    fn reserve_space(&mut self, bytes: u64) -> Result<(), FsError> {
        self.reserved_bytes = 0;
        if let Some(max) = self.options.capacity_bytes_max {
            if self.used_bytes() + bytes > max {
                return Err(FsError::new("<reserve>", FsErrorKind::NoSpace, "disk full"));
            }
        }
        self.reserved_bytes = bytes;
        Ok(())
    }

    fn release_space(&mut self) -> Result<(), FsError> {
        self.reserved_bytes = 0;
        Ok(())
    }

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
            let free = max.saturating_sub(self.used_bytes());
            if data.len() as u64 > free {
                // As a real disk does: what fits is written, then the call fails (a short write
                // that `write_all` reports as an error), leaving a partial record behind.
                let fits = usize::try_from(free).unwrap_or(0);
                self.inode(name)?.current.extend_from_slice(&data[..fits]);
                self.stats.bytes_appended += fits as u64;
                return Err(FsError::new(name, FsErrorKind::NoSpace, "disk full"));
            }
        }
        self.inode(name)?.current.extend_from_slice(data);
        self.stats.bytes_appended += data.len() as u64;
        self.charge(SimOpKind::Append);
        Ok(())
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), FsError> {
        let inode = self.inode(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(data.len());
        let Some(place) = inode.current.get_mut(start..end) else {
            return Err(FsError::new(
                name,
                FsErrorKind::Other,
                format!("write of {} bytes at {offset} past the end", data.len()),
            ));
        };
        place.copy_from_slice(data);
        if start < inode.durable.len() {
            inode.rewritten_from = Some(inode.rewritten_from.map_or(start, |r| r.min(start)));
        }
        self.stats.bytes_appended += data.len() as u64;
        self.charge(SimOpKind::Append);
        Ok(())
    }

    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let inode = self.inode(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(len);
        let bytes = inode
            .current
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                FsError::new(
                    name,
                    FsErrorKind::Other,
                    format!("read of {len} bytes at {offset} past the end"),
                )
            })?;
        self.charge(SimOpKind::Read);
        Ok(bytes)
    }

    fn len(&mut self, name: &str) -> Result<u64, FsError> {
        Ok(self.inode(name)?.current.len() as u64)
    }

    fn fsync(&mut self, name: &str) -> Result<(), FsError> {
        self.inode(name)?;
        self.charge(SimOpKind::Fsync);
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
        inode.low_water = inode.current.len();
        inode.rewritten_from = None;
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
        self.charge(SimOpKind::FsyncDir);
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
            inode.low_water = inode.low_water.min(len);
            if len < inode.durable.len() {
                inode.diverged = true;
            }
        }
        Ok(())
    }

    fn exists(&mut self, name: &str) -> Result<bool, FsError> {
        Ok(self.names.contains_key(name))
    }

    fn link_to(&mut self, name: &str, target: &mut Self) -> Result<(), FsError> {
        // Two simulated disks share no inodes: the target gets its own copy of the inode, both
        // its current and its durable bytes, which is what a hard link gives for a file that
        // neither side changes again (the only files the engine links). A linked name is not
        // charged an append: a link writes no data.
        let inode = self.inode(name)?.clone();
        if target.names.contains_key(name) {
            return Err(FsError::new(name, FsErrorKind::AlreadyExists, "exists"));
        }
        let id = target.next_inode;
        target.next_inode += 1;
        target.inodes.insert(id, inode);
        target.names.insert(name.to_string(), id);
        Ok(())
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

    /// An overwrite of durable bytes that a crash loses gives the old bytes back, by sector or
    /// after a kept prefix, never other bytes, and never changes the length.
    #[test]
    fn a_lost_overwrite_reads_as_the_old_bytes() {
        let old = vec![0u8; 3 * SECTOR_BYTES];
        let new = vec![7u8; 2 * SECTOR_BYTES];
        let (mut kept_new, mut kept_old) = (0, 0);
        for seed in 0..200 {
            let mut fs = SimFs::seeded(seed);
            fs.create("w").expect("create");
            fs.fsync_dir().expect("fsync dir");
            fs.append("w", &old).expect("append");
            fs.fsync("w").expect("fsync");
            fs.write_at("w", 100, &new).expect("overwrite");
            assert!(
                fs.write_at("w", 2 * SECTOR_BYTES as u64, &new).is_err(),
                "past the end"
            );
            let mode = CrashMode::ALL[(seed % 5) as usize];
            fs.crash(mode);
            let data = fs.read_all("w").expect("read");
            assert_eq!(
                data.len(),
                old.len(),
                "{mode:?}: an overwrite changes no length"
            );
            let torn = mode == CrashMode::TearLastWrite;
            for (at, &byte) in data.iter().enumerate() {
                let written = (100..100 + new.len()).contains(&at);
                if written && byte == 7 {
                    kept_new += 1;
                } else if byte == 0 {
                    kept_old += usize::from(written);
                } else {
                    assert!(torn && written, "{mode:?}: byte {at} reads {byte}");
                }
            }
            if mode == CrashMode::LoseUnsynced {
                assert_eq!(data, old, "all lost");
            }
        }
        assert!(kept_new > 0 && kept_old > 0, "both outcomes drawn");
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

    /// A file with `durable` synced bytes and `tail` unsynced bytes (all non-zero), crashed in
    /// `mode`; returns what it reads back.
    fn crash_tail(seed: u64, durable: usize, tail: usize, mode: CrashMode) -> (Vec<u8>, Vec<u8>) {
        let mut fs = SimFs::seeded(seed);
        fs.create("f").expect("create");
        fs.fsync_dir().expect("fsync dir");
        let written: Vec<u8> = (0..durable + tail).map(|i| (i % 251) as u8 + 1).collect();
        fs.append("f", &written[..durable]).expect("append");
        fs.fsync("f").expect("fsync");
        // Several appends, as the engine does, so sectors span append boundaries.
        for chunk in written[durable..].chunks(300) {
            fs.append("f", chunk).expect("append");
        }
        fs.crash(mode);
        (written, fs.read_all("f").expect("read"))
    }

    #[test]
    fn sectors_never_lose_synced_bytes_and_holes_read_as_zeros() {
        let (mut holes, mut kept_after_hole, mut zero_tails) = (0, 0, 0);
        for seed in 0..400 {
            let durable = (seed as usize * 37) % 1500;
            let (written, got) = crash_tail(seed, durable, 4000, CrashMode::Sectors);
            assert!(
                got.len() >= durable && got.len() <= written.len(),
                "seed {seed}"
            );
            assert_eq!(
                got[..durable],
                written[..durable],
                "seed {seed}: synced bytes"
            );
            // Every sector of the unsynced part is either exactly what was written or all zeros.
            let mut saw_hole = false;
            let sector_starts = std::iter::once(durable).chain(
                ((durable / SECTOR_BYTES + 1) * SECTOR_BYTES..got.len()).step_by(SECTOR_BYTES),
            );
            for start in sector_starts.filter(|&s| s < got.len()) {
                let end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(got.len());
                let part = &got[start..end];
                if part == &written[start..end] {
                    if saw_hole {
                        kept_after_hole += 1;
                    }
                } else {
                    assert!(
                        part.iter().all(|&b| b == 0),
                        "seed {seed}: sector at {start}"
                    );
                    saw_hole = true;
                    holes += 1;
                }
            }
            if saw_hole && got[got.len() - 1] == 0 {
                zero_tails += 1;
            }
        }
        assert!(holes > 0 && kept_after_hole > 0 && zero_tails > 0);
    }

    #[test]
    fn sector_prefix_keeps_no_data_after_a_hole() {
        let mut zero_tails = 0;
        for seed in 0..300 {
            let durable = (seed as usize * 53) % 1200;
            let (written, got) = crash_tail(seed, durable, 3000, CrashMode::SectorPrefix);
            assert_eq!(
                got[..durable],
                written[..durable],
                "seed {seed}: synced bytes"
            );
            // The bytes are what was written, then zeros to the end.
            let same = (durable..got.len())
                .find(|&i| got[i] != written[i])
                .unwrap_or(got.len());
            assert!(got[same..].iter().all(|&b| b == 0), "seed {seed}");
            if same < got.len() {
                zero_tails += 1;
            }
        }
        assert!(zero_tails > 0);
    }

    #[test]
    fn sector_crashes_are_deterministic_per_seed() {
        for seed in 0..20 {
            assert_eq!(
                crash_tail(seed, 700, 5000, CrashMode::Sectors),
                crash_tail(seed, 700, 5000, CrashMode::Sectors)
            );
        }
    }

    #[test]
    fn sectors_keep_or_undo_an_unsynced_truncate() {
        let (mut undone, mut kept) = (0, 0);
        for seed in 0..100 {
            let mut fs = SimFs::seeded(seed);
            fs.create("a").expect("create");
            fs.append("a", &[7u8; 1000]).expect("append");
            fs.fsync("a").expect("fsync");
            fs.fsync_dir().expect("fsync dir");
            fs.truncate("a", 600).expect("truncate");
            fs.append("a", &[9u8; 700]).expect("append");
            fs.crash(CrashMode::Sectors);
            let got = fs.read_all("a").expect("read");
            if got == [7u8; 1000] {
                undone += 1;
                continue;
            }
            kept += 1;
            assert!(got.len() >= 600 && got[..600] == [7u8; 600], "seed {seed}");
            assert!(got[600..].iter().all(|&b| b == 9 || b == 0), "seed {seed}");
        }
        assert!(undone > 0 && kept > 0);
    }

    #[test]
    fn latency_is_zero_by_default() {
        let mut fs = SimFs::seeded(5);
        fs.create("a").expect("create");
        fs.append("a", b"x").expect("append");
        fs.fsync("a").expect("fsync");
        fs.fsync_dir().expect("fsync dir");
        fs.read_all("a").expect("read");
        assert_eq!(fs.elapsed_micros(), 0);
    }

    #[test]
    fn latency_is_accounted_per_operation_kind() {
        let options = SimFsOptions {
            latency: SimLatency {
                read: LatencyRange::micros(10, 10),
                append: LatencyRange::micros(3, 3),
                fsync: LatencyRange::micros(1000, 1000),
                fsync_dir: LatencyRange::micros(500, 500),
            },
            ..SimFsOptions::seeded(6)
        };
        let mut fs = SimFs::new(options);
        let step = |fs: &mut SimFs, op: &dyn Fn(&mut SimFs)| {
            let before = fs.elapsed_micros();
            op(fs);
            fs.elapsed_micros() - before
        };
        assert_eq!(step(&mut fs, &|fs| fs.create("a").expect("create")), 0);
        assert_eq!(
            step(&mut fs, &|fs| fs.append("a", b"xy").expect("append")),
            3
        );
        assert_eq!(step(&mut fs, &|fs| fs.fsync("a").expect("fsync")), 1000);
        assert_eq!(step(&mut fs, &|fs| fs.fsync_dir().expect("dir")), 500);
        assert_eq!(
            step(&mut fs, &|fs| {
                let _ = fs.read_at("a", 0, 2);
            }),
            10
        );
        // A read that fails before the device is free; a failing fsync is charged.
        assert_eq!(
            step(&mut fs, &|fs| {
                let _ = fs.read_at("nope", 0, 1);
            }),
            0
        );
        fs.fail_next_fsync();
        assert_eq!(
            step(&mut fs, &|fs| {
                let _ = fs.fsync("a");
            }),
            1000
        );
        assert_eq!(fs.elapsed_micros(), 2513);
    }

    #[test]
    fn latency_draws_are_seeded_in_range_and_leave_faults_alone() {
        let latency = SimLatency {
            read: LatencyRange::micros(50, 150),
            append: LatencyRange::micros(1, 20),
            fsync: LatencyRange::micros(2000, 9000),
            fsync_dir: LatencyRange::micros(100, 3000),
        };
        let run = |latency: SimLatency| {
            let mut fs = SimFs::new(SimFsOptions {
                latency,
                ..SimFsOptions::seeded(7)
            });
            let mut per_op = Vec::new();
            fs.create("a").expect("create");
            for i in 0..50u8 {
                let t = fs.elapsed_micros();
                fs.append("a", &[i; 100]).expect("append");
                per_op.push(("append", fs.elapsed_micros() - t));
                if i % 5 == 0 {
                    let t = fs.elapsed_micros();
                    fs.fsync("a").expect("fsync");
                    per_op.push(("fsync", fs.elapsed_micros() - t));
                    let t = fs.elapsed_micros();
                    fs.fsync_dir().expect("dir");
                    per_op.push(("fsync_dir", fs.elapsed_micros() - t));
                }
                let t = fs.elapsed_micros();
                fs.read_at("a", 0, 10).expect("read");
                per_op.push(("read", fs.elapsed_micros() - t));
            }
            fs.crash(CrashMode::Sectors);
            (per_op, fs.elapsed_micros(), fs.read_all("a").expect("read"))
        };
        let (per_op, total, bytes) = run(latency);
        assert_eq!((per_op.clone(), total), {
            let (p, t, _) = run(latency);
            (p, t)
        });
        assert_eq!(total, per_op.iter().map(|(_, m)| m).sum::<u64>());
        for (kind, micros) in &per_op {
            let range = match *kind {
                "read" => latency.read,
                "append" => latency.append,
                "fsync" => latency.fsync,
                _ => latency.fsync_dir,
            };
            assert!((range.min_micros..=range.max_micros).contains(micros));
        }
        let distinct: std::collections::BTreeSet<u64> = per_op.iter().map(|(_, m)| *m).collect();
        assert!(distinct.len() > 10, "latencies are drawn, not constant");
        // The same seed without latency crashes the same way.
        assert_eq!(run(SimLatency::default()).2, bytes);
    }
}
