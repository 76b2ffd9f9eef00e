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
    /// The flush job a crash interrupted, rebuilt: WALs after the manifest's were replayed too,
    /// so the memtable holds the records of the manifest's WAL (and of every successor but the
    /// last) frozen, and the last successor's active; it is the live WAL.
    pub(crate) interrupted_flush: Option<InterruptedFlush>,
}

/// A flush job a crash interrupted (its freeze happened, its install did not).
#[derive(Debug)]
pub(crate) struct InterruptedFlush {
    /// The WALs holding the frozen records, the manifest's first.
    pub(crate) retired_wals: Vec<u64>,
    /// The last frozen sequence number.
    pub(crate) last_seq: u64,
    /// The WAL after them (id, valid length, synced length): the live one.
    live_wal: (u64, u64, u64),
    /// The last sequence number replayed from it.
    live_last_seq: u64,
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
    let (active, trusted) = (state.vlog_active, state.vlog_active_trusted_len);
    let vname = vlog_file_name(active);
    let vlog_len = active_segment_len(fs, state)?;
    let wname = wal_file_name(state.wal_id);
    let wal_bytes = fs.read_all(&wname)?;
    let legacy_wal = state.format_version < 2;
    let scan = scan(&wal_bytes, &wname, state.format_version, config)?;
    let report = RecoveryReport {
        wal_cut: scan.cut.map(|cut| truncation(&wname, wal_bytes.len(), cut)),
    };
    let mut mem = MemTable::default();
    let mut last_seq = replay(&scan.frames, &wname, state.last_seq, config, &mut mem)?;
    let frozen_last_seq = last_seq;
    // A tail of zeros past the last frame is the WAL's end, not a cut (`wal.rs`,
    // "Preallocation"): it is dropped like a cut tail, and successors may follow it.
    let manifest_wal_cut = scan.cut.is_some();
    let manifest_wal_tail = scan.valid_len < wal_bytes.len();
    let (kept, successor_cut) = keep_successors(fs, state, config, (last_seq, manifest_wal_cut))?;
    let report = RecoveryReport {
        wal_cut: report.wal_cut.or(successor_cut),
    };
    if vlog_len > trusted {
        fs.truncate(&vname, trusted)?;
        fs.fsync(&vname)?;
    }
    if manifest_wal_tail {
        fs.truncate(&wname, scan.valid_len as u64)?;
    }
    // What was read back may sit in the page cache only (a process crash): fsync it before a
    // sync marker may claim it.
    if !wal_bytes.is_empty() {
        fs.fsync(&wname)?;
    }
    let mut live = (state.wal_id, scan.valid_len as u64, scan.synced_through);
    let interrupted_flush =
        rebuild_interrupted_flush(fs, state, config, &kept, &mut mem, frozen_last_seq)?;
    if let Some(rebuilt) = &interrupted_flush {
        (live, last_seq) = (rebuilt.live_wal, rebuilt.live_last_seq);
    }
    let (live_id, live_len, live_synced_through) = live;
    let mut wal = Wal::recovered(live_id, live_len, live_synced_through);
    if !legacy_wal && live_synced_through < live_len {
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
        // starts a fresh WAL and writes the manifest). Formats 2 and 3, or no records: just
        // rewrite the manifest (a format-2 WAL is a valid format-3 one without seals; formats 4
        // and 5 only allow successor WALs and zero tails).
        state.format_version = MANIFEST_FORMAT_VERSION;
        if legacy_wal && !mem.is_empty() {
            needs_upgrade_flush = true;
        } else {
            manifest::store(fs, state)?;
        }
    }
    // Zeros ahead of records only once the manifest says a WAL may end in them (format 5):
    // an older engine would cut such a WAL and drop its successors.
    wal.preallocate(config.wal_preallocate_bytes);
    Ok(Recovered {
        mem,
        wal,
        vlog,
        last_seq,
        report,
        needs_upgrade_flush,
        interrupted_flush,
    })
}

/// Decides which WALs after the manifest's to replay, in id order: a freeze starts one while the
/// flush of the frozen records is under way (`flush.rs`), and a crash before the flush's install
/// leaves it unnamed. A successor holds the records that follow those of the WAL before it, so
/// it is kept only where that WAL ends whole (`prior`: its last sequence number, and whether it
/// was cut) and its first record follows on: a sync fsyncs the older WAL (and the directory)
/// before the newer one, so a gap or a cut before a successor means none of the successor's
/// records were acknowledged, and it is removed (the recovered state stays a prefix). A
/// successor whose own sync markers claim fsynced records after such a gap is corruption. A
/// cut successor is truncated and ends the chain. The next file id moves past every successor.
fn keep_successors<F: FileSystem>(
    fs: &mut F,
    state: &mut ManifestState,
    config: &LsmConfig,
    prior: (u64, bool),
) -> Result<(Vec<u64>, Option<WalTruncation>), LsmError> {
    let (mut last_seq, mut dropping) = prior;
    let (mut kept, mut cut_found, mut removed) = (Vec::new(), None, false);
    for id in successor_wal_ids(fs, state.wal_id)? {
        state.next_file_id = state.next_file_id.max(id + 1);
        let name = wal_file_name(id);
        if !dropping {
            let bytes = fs.read_all(&name)?;
            let scan = scan(&bytes, &name, state.format_version, config)?;
            let first = scan.frames.first().map(|(_, f)| f.seq);
            if first.is_none_or(|seq| seq == last_seq + 1) {
                last_seq = scan.frames.last().map_or(last_seq, |(_, f)| f.seq);
                if let Some(cut) = scan.cut {
                    cut_found = Some(truncation(&name, bytes.len(), cut));
                    dropping = true;
                }
                if scan.valid_len < bytes.len() {
                    fs.truncate(&name, scan.valid_len as u64)?;
                }
                kept.push(id);
                continue;
            }
            if scan.synced_through > 0 {
                return Err(LsmError::corrupt(
                    &name,
                    format!(
                        "its fsynced records start at sequence {} but the WAL before it ends at \
                         {last_seq}",
                        first.unwrap_or(0)
                    ),
                ));
            }
        }
        fs.remove(&name)?;
        removed = true;
    }
    if removed {
        fs.fsync_dir()?;
    }
    Ok((kept, cut_found))
}

/// The length of the active value-log segment, checked against the manifest. The segment is
/// appended only by flushes, which fsync it before the manifest records its new length: every
/// byte a table points at lies below the trusted length, and anything past it is the
/// unreferenced tail of an interrupted flush.
fn active_segment_len<F: FileSystem>(fs: &mut F, state: &ManifestState) -> Result<u64, LsmError> {
    let vname = vlog_file_name(state.vlog_active);
    if !state.segments.contains_key(&state.vlog_active) {
        return Err(LsmError::corrupt(
            MANIFEST_FILE,
            "active segment not listed",
        ));
    }
    let len = fs.len(&vname)?;
    if len < state.vlog_active_trusted_len {
        return Err(LsmError::corrupt(&vname, "shorter than its durable length"));
    }
    Ok(len)
}

/// Replays the `kept` successors after the manifest's WAL, whose records (up to the job's
/// `last_seq`) are in `mem`: all but the last into the memtable, which is then frozen as the
/// interrupted flush job left it, the last (the live WAL) into the active memtable. `None`
/// without successors.
fn rebuild_interrupted_flush<F: FileSystem>(
    fs: &mut F,
    state: &ManifestState,
    config: &LsmConfig,
    kept: &[u64],
    mem: &mut MemTable,
    last_seq: u64,
) -> Result<Option<InterruptedFlush>, LsmError> {
    let Some((&last, middle)) = kept.split_last() else {
        return Ok(None);
    };
    let mut job = InterruptedFlush {
        retired_wals: vec![state.wal_id],
        last_seq,
        live_wal: (last, 0, 0),
        live_last_seq: last_seq,
    };
    for &id in middle {
        job.last_seq = replay_file(fs, state, config, id, job.last_seq, mem)?.0;
        job.retired_wals.push(id);
    }
    mem.freeze();
    let (seq, valid_len, synced_through) = replay_file(fs, state, config, last, job.last_seq, mem)?;
    job.live_wal = (last, valid_len, synced_through);
    job.live_last_seq = seq;
    // The successors' names may sit in the page cache only, like their bytes.
    fs.fsync_dir()?;
    Ok(Some(job))
}

/// Replays the kept successor `id` into `mem` after `last_seq` and fsyncs it; returns its last
/// sequence number, valid length and synced length.
fn replay_file<F: FileSystem>(
    fs: &mut F,
    state: &ManifestState,
    config: &LsmConfig,
    id: u64,
    last_seq: u64,
    mem: &mut MemTable,
) -> Result<(u64, u64, u64), LsmError> {
    let name = wal_file_name(id);
    let bytes = fs.read_all(&name)?;
    let scan = scan(&bytes, &name, state.format_version, config)?;
    let last = replay(&scan.frames, &name, last_seq, config, mem)?;
    if !bytes.is_empty() {
        fs.fsync(&name)?;
    }
    Ok((last, scan.valid_len as u64, scan.synced_through))
}

/// The ids of the WAL files after `wal_id`, in order.
fn successor_wal_ids<F: FileSystem>(fs: &mut F, wal_id: u64) -> Result<Vec<u64>, LsmError> {
    let mut ids: Vec<u64> = fs
        .list()?
        .iter()
        .filter_map(|name| name.strip_suffix(".wal")?.parse::<u64>().ok())
        .filter(|&id| id > wal_id)
        .collect();
    ids.sort_unstable();
    Ok(ids)
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
/// obsolete WALs, collected segments, a stale temporary manifest), but for WALs after the
/// manifest's (`keep_successors`).
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
        // WALs after the manifest's are a flush job's successors (`keep_successors`).
        let successor = name
            .strip_suffix(".wal")
            .and_then(|id| id.parse::<u64>().ok())
            .is_some_and(|id| id > state.wal_id);
        if is_engine_file(&name) && !live.contains(&name) && !successor {
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
