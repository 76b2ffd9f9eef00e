//! Recovery at open: the procedure that rebuilds the engine's working state (memtable, WAL, value
//! log) from the manifest, the value log and the WAL, and what it did, for callers to surface: a
//! WAL cut short, and whether the cut is beyond doubt a crash artefact or may have dropped
//! acknowledged writes (FORMAT.md, "WAL recovery").
//!
//! The procedure builds components; it never sees the engine, which composes what it returns.

use crate::bytes_io::Cursor;
use crate::config::LsmConfig;
use crate::entry::{decode_keyed, Entry};
use crate::error::LsmError;
use crate::frame::{scan_log, scan_wal, CutCause, Frame, WalCut, WalScan};
use crate::fs::FileSystem;
use crate::manifest::{
    self, ManifestState, SegmentMeta, MANIFEST_FILE, MANIFEST_FORMAT_VERSION, MANIFEST_TMP_FILE,
};
use crate::memtable::{MemEntry, MemTable};
use crate::table::table_file_name;
use crate::vlog::{vlog_file_name, ValueLog};
use crate::wal::{wal_file_name, Wal};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What [`crate::Lsm::open`] did while recovering, beyond replaying the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The live WAL was cut at a bad frame (every byte from there on dropped).
    pub wal_cut: Option<WalTruncation>,
}

impl RecoveryReport {
    /// A description of the cut if it may have dropped acknowledged writes (an operator should
    /// hear of it: the store opened, but a bit flip in the last synced batch cannot be ruled
    /// out); `None` when recovery is beyond doubt (no cut, or damage only a crash leaves).
    pub fn suspect(&self) -> Option<String> {
        self.wal_cut
            .as_ref()
            .filter(|cut| cut.cause != WalTruncationCause::UnsyncedTail)
            .map(ToString::to_string)
    }
}

/// A WAL cut short by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalTruncation {
    /// The WAL file.
    pub file: String,
    /// Offset of the first bad frame, where the file was cut.
    pub offset: u64,
    /// Bytes dropped (from `offset` to the old end of the file).
    pub bytes_dropped: u64,
    /// Why the cut was taken, and how sure recovery is that nothing acknowledged was lost.
    pub cause: WalTruncationCause,
}

/// Why recovery cut a WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalTruncationCause {
    /// Damage only a crash leaves, in bytes no completed sync covered: a torn write, a lost
    /// sector, a cut. Nothing acknowledged was dropped.
    UnsyncedTail,
    /// The last batch is damaged in the one shape both a crash and bit rot of synced bytes leave
    /// (a sector portion reads as all zeros where it held a single set bit): possibly a torn tail,
    /// possibly corruption of the last synced batch.
    PossiblyCorruptLastBatch {
        /// Offset of the damaged portion.
        portion_offset: u64,
    },
    /// A WAL written by an older format (no batch seals): damage in its last synced batch cannot
    /// be told from a torn tail.
    Unverifiable,
}

impl fmt::Display for WalTruncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL {} cut at offset {} ({} bytes dropped): ",
            self.file, self.offset, self.bytes_dropped
        )?;
        match self.cause {
            WalTruncationCause::UnsyncedTail => write!(f, "torn unsynced tail"),
            WalTruncationCause::PossiblyCorruptLastBatch { portion_offset } => write!(
                f,
                "possibly a torn tail, possibly corruption of the last synced batch (the sector \
                 portion at {portion_offset} reads as zeros where one bit was set)"
            ),
            WalTruncationCause::Unverifiable => write!(
                f,
                "possibly a torn tail, possibly corruption of the last synced batch (a WAL of an \
                 older format, without batch seals)"
            ),
        }
    }
}

// ---------------------------------------------------------------- the procedure

/// The engine's working state as recovery rebuilt it.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The replayed records not yet in a table.
    pub(crate) mem: MemTable,
    /// The live WAL, cut after its last valid record, fsynced and claimed.
    pub(crate) wal: Wal,
    /// The value log, its active segment cut back to the length the manifest trusts.
    pub(crate) vlog: ValueLog,
    /// The sequence number of the last replayed record.
    pub(crate) last_seq: u64,
    /// What recovery did (for the operator).
    pub(crate) report: RecoveryReport,
    /// A format-1 WAL was replayed: the engine must flush the records into a table before
    /// anything is appended to it (format upgrade).
    pub(crate) needs_upgrade_flush: bool,
}

/// The installed state at open: the manifest, or a new store; missing levels added and files
/// the manifest does not reference removed.
pub(crate) fn open_state<F: FileSystem>(
    fs: &mut F,
    config: &LsmConfig,
) -> Result<ManifestState, LsmError> {
    let mut state = match manifest::load(fs, config.key_bytes_max)? {
        Some(state) => state,
        None => create_store(fs, config)?,
    };
    while state.levels.len() < config.levels {
        state.levels.push(Vec::new());
    }
    remove_orphans(fs, &state)?;
    Ok(state)
}

/// Recovers from the manifest, the value log and the WAL: a torn or holey unsynced tail is
/// truncated (with every frame after it), a bad record in the part the WAL's sync markers say
/// was fsynced is reported as `Corrupt` naming the file (FORMAT.md, "WAL recovery").
pub(crate) fn recover<F: FileSystem>(
    fs: &mut F,
    state: &mut ManifestState,
    config: &LsmConfig,
) -> Result<Recovered, LsmError> {
    for t in state.levels.iter().flatten() {
        let name = table_file_name(t.id);
        if !fs.exists(&name)? {
            return Err(LsmError::corrupt(&name, "table in the manifest is missing"));
        }
    }
    // The active value-log segment is appended only by flushes, which fsync it before the
    // manifest records its new length: every byte a table points at lies below the trusted
    // length, and anything past it is the unreferenced tail of an interrupted flush.
    let active = state.vlog_active;
    let vname = vlog_file_name(active);
    if !state.segments.contains_key(&active) {
        return Err(LsmError::corrupt(
            MANIFEST_FILE,
            "active segment not listed",
        ));
    }
    let vlog_len = fs.len(&vname)?;
    let trusted = state.vlog_active_trusted_len;
    if vlog_len < trusted {
        return Err(LsmError::corrupt(&vname, "shorter than its durable length"));
    }
    let wname = wal_file_name(state.wal_id);
    let wal_bytes = fs.read_all(&wname)?;
    let legacy_wal = state.format_version < 2;
    let scan = scan(&wal_bytes, &wname, state.format_version, config)?;
    let report = RecoveryReport {
        wal_cut: scan.cut.map(|cut| truncation(&wname, wal_bytes.len(), cut)),
    };
    let mut mem = MemTable::default();
    let last_seq = replay(&scan.frames, &wname, state.last_seq, config, &mut mem)?;
    if vlog_len > trusted {
        fs.truncate(&vname, trusted)?;
        fs.fsync(&vname)?;
    }
    if scan.valid_len < wal_bytes.len() {
        fs.truncate(&wname, scan.valid_len as u64)?;
    }
    // What was read back may sit in the page cache only (a process crash): fsync it before a
    // sync marker may claim it.
    if !wal_bytes.is_empty() {
        fs.fsync(&wname)?;
    }
    let mut wal = Wal::recovered(state.wal_id, scan.valid_len as u64, scan.synced_through);
    if !legacy_wal && scan.synced_through < scan.valid_len as u64 {
        wal.claim_recovered(fs)?;
    }
    wal.all_durable();
    let vlog = ValueLog::new(active, trusted, config.block_cache_bytes / 4);
    if let Some(s) = state.segments.get_mut(&active) {
        s.size_bytes = trusted;
    }
    let mut needs_upgrade_flush = false;
    if state.format_version < MANIFEST_FORMAT_VERSION {
        // Move an older store to the current format before anything is appended to its WAL.
        // Format 1 (no markers): the engine flushes the replayed records into a table (which
        // starts a fresh WAL and writes the manifest). Format 2, or no records: just rewrite
        // the manifest (a format-2 WAL is a valid format-3 one without seals).
        state.format_version = MANIFEST_FORMAT_VERSION;
        if legacy_wal && !mem.is_empty() {
            needs_upgrade_flush = true;
        } else {
            manifest::store(fs, state)?;
        }
    }
    Ok(Recovered {
        mem,
        wal,
        vlog,
        last_seq,
        report,
        needs_upgrade_flush,
    })
}

/// The valid records of a WAL. Formats 2 and 3: sync markers tell a hole in the unsynced tail
/// from corruption of synced bytes, and (format 3) batch seals judge damage in the last synced
/// batch (FORMAT.md). Format 1 (no markers): a bad frame followed by a valid one is corruption.
fn scan<'a>(
    wal: &'a [u8],
    wname: &str,
    format_version: u32,
    config: &LsmConfig,
) -> Result<WalScan<'a>, LsmError> {
    let payload_max = config.frame_payload_bytes_max();
    if format_version < 2 {
        let scan = scan_log(wal, 0, payload_max).map_err(|why| LsmError::corrupt(wname, why))?;
        let cut = (scan.valid_len < wal.len()).then_some(WalCut {
            offset: scan.valid_len,
            cause: CutCause::Unsealed,
        });
        return Ok(WalScan {
            frames: scan.frames,
            valid_len: scan.valid_len,
            synced_through: 0,
            cut,
        });
    }
    scan_wal(wal, payload_max, format_version >= 3).map_err(|why| LsmError::corrupt(wname, why))
}

fn truncation(wname: &str, wal_len: usize, cut: WalCut) -> WalTruncation {
    WalTruncation {
        file: wname.to_string(),
        offset: cut.offset as u64,
        bytes_dropped: (wal_len - cut.offset) as u64,
        cause: match cut.cause {
            CutCause::UnsyncedTail => WalTruncationCause::UnsyncedTail,
            CutCause::Ambiguous { portion_offset } => {
                WalTruncationCause::PossiblyCorruptLastBatch { portion_offset }
            }
            CutCause::Unsealed => WalTruncationCause::Unverifiable,
        },
    }
}

/// Replays the WAL's records into `mem`, checking that their sequence numbers follow
/// `last_seq_in_tables` without a gap; returns the last one.
fn replay(
    frames: &[(usize, Frame<'_>)],
    wname: &str,
    last_seq_in_tables: u64,
    config: &LsmConfig,
    mem: &mut MemTable,
) -> Result<u64, LsmError> {
    let mut expected_seq = last_seq_in_tables + 1;
    for (offset, frame) in frames {
        if frame.seq != expected_seq {
            return Err(LsmError::corrupt(
                wname,
                format!(
                    "record at {offset} has sequence {} not {expected_seq}",
                    frame.seq
                ),
            ));
        }
        let mut cursor = Cursor::new(frame.payload);
        let (key, entry) = decode_keyed(&mut cursor, config.key_bytes_max, config.value_bytes_max)
            .map_err(|why| LsmError::corrupt(wname, format!("record at {offset}: {why}")))?;
        let key = Bytes::copy_from_slice(key);
        let entry = match entry {
            Entry::Inline(v) if v.len() > config.value_separation_threshold_bytes => {
                MemEntry::Pending {
                    value: v,
                    seq: frame.seq,
                }
            }
            Entry::Inline(v) => MemEntry::Inline(v),
            Entry::Tombstone { deleted_at_ms } => MemEntry::Tombstone(deleted_at_ms),
            Entry::Pointer(_) => {
                // Values are separated only at flush; a WAL record never points at the value
                // log (its bytes might not be durable).
                return Err(LsmError::corrupt(
                    wname,
                    format!("record at {offset} holds a value-log pointer"),
                ));
            }
        };
        mem.insert(key, entry);
        expected_seq += 1;
    }
    Ok(expected_seq - 1)
}

/// Initializes an empty store: first WAL, first value-log segment, first manifest. Leftover
/// files (a crash during a previous initialization) are removed first: with no manifest, nothing
/// was ever acknowledged.
fn create_store<F: FileSystem>(fs: &mut F, config: &LsmConfig) -> Result<ManifestState, LsmError> {
    for name in fs.list()? {
        if is_engine_file(&name) {
            fs.remove(&name)?;
        }
    }
    let state = ManifestState {
        format_version: MANIFEST_FORMAT_VERSION,
        next_file_id: 3,
        last_seq: 0,
        wal_id: 1,
        vlog_active: 2,
        vlog_active_trusted_len: 0,
        levels: vec![Vec::new(); config.levels],
        segments: BTreeMap::from([(2, SegmentMeta::default())]),
    };
    fs.create(&wal_file_name(1))?;
    fs.create(&vlog_file_name(2))?;
    fs.fsync_dir()?;
    manifest::store(fs, &state)?;
    Ok(state)
}

/// Whether `name` is a file the engine writes in its directory.
pub(crate) fn is_engine_file(name: &str) -> bool {
    name.ends_with(".sst")
        || name.ends_with(".wal")
        || name.ends_with(".vlog")
        || name == MANIFEST_TMP_FILE
}

/// Removes files the manifest does not reference (outputs of an interrupted flush or compaction,
/// obsolete WALs, collected segments, a stale temporary manifest).
fn remove_orphans<F: FileSystem>(fs: &mut F, state: &ManifestState) -> Result<(), LsmError> {
    let mut live: BTreeSet<String> = state
        .levels
        .iter()
        .flatten()
        .map(|t| table_file_name(t.id))
        .collect();
    live.insert(wal_file_name(state.wal_id));
    live.extend(state.segments.keys().map(|id| vlog_file_name(*id)));
    let mut removed = false;
    for name in fs.list()? {
        if is_engine_file(&name) && !live.contains(&name) {
            fs.remove(&name)?;
            removed = true;
        }
    }
    if removed {
        fs.fsync_dir()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    #[test]
    fn a_new_store_recovers_empty_and_a_second_open_finds_it() {
        let mut fs = SimFs::seeded(4);
        let config = LsmConfig::tiny_for_tests();
        let mut state = open_state(&mut fs, &config).expect("create");
        let r = recover(&mut fs, &mut state, &config).expect("recover");
        assert_eq!((r.last_seq, r.report.wal_cut.is_none()), (0, true));
        assert!(r.mem.is_empty() && !r.needs_upgrade_flush);
        r.wal.check_invariants();
        fs.create("000099.sst").expect("an orphan");
        let again = open_state(&mut fs, &config).expect("reopen");
        assert_eq!(again, state);
        assert!(
            !fs.exists("000099.sst").expect("list"),
            "orphans are removed"
        );
    }

    #[test]
    fn a_record_out_of_sequence_is_corruption_naming_the_wal() {
        let mut payload = Vec::new();
        crate::entry::encode_keyed(&mut payload, b"k", &Entry::Inline(Bytes::from_static(b"v")));
        let mut wal = Vec::new();
        crate::frame::encode_frame(&mut wal, 5, &payload);
        let scan = scan_log(&wal, 0, 1 << 10).expect("scan");
        let mut mem = MemTable::default();
        let config = LsmConfig::tiny_for_tests();
        let err = replay(&scan.frames, "000001.wal", 0, &config, &mut mem).expect_err("gap");
        assert!(err.to_string().contains("000001.wal"), "{err}");
        assert_eq!(replay(&scan.frames, "w", 4, &config, &mut mem), Ok(5));
    }
}
