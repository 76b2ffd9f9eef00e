//! The manifest: which tables are live at which level, which value-log segments exist, which WAL
//! is current. It is rewritten whole and replaced atomically (write `MANIFEST.tmp`, fsync it,
//! rename over `MANIFEST`, fsync the directory: PITFALLS, storage).
//!
//! ```text
//! MANIFEST = magic u64 | format_version u32 | body_len u32 | body | crc32(everything before)
//! body     = next_file_id u64 | last_seq u64 | wal_id u64
//!          | vlog_active u64 | vlog_active_trusted_len u64
//!          | level_count u32 | per level: table_count u32
//!          |     | per table: id u64 | smallest (u32 len, bytes) | largest (u32 len, bytes)
//!          |     |            | size_bytes u64 | entry_count u64
//!          | segment_count u32 | per segment: id u64 | size_bytes u64 | garbage_bytes u64
//! ```

use crate::bytes_io::{crc, Cursor, PutBytes};
use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::table::TableMeta;
use bytes::Bytes;
use std::collections::BTreeMap;

/// The manifest's file name.
pub(crate) const MANIFEST_FILE: &str = "MANIFEST";
/// The temporary name a new manifest is written under before the rename.
pub(crate) const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
const MANIFEST_MAGIC: u64 = 0x7269_6e67_6b76_4d46; // "ringkvMF"
/// Version 5: a WAL may end in zeros appended ahead of its records (`wal.rs`, "Preallocation"),
/// which an older engine would read as a cut and then remove the successors after it, with
/// acknowledged records in them, so it must refuse the store. Version 4: WALs after the
/// manifest's may hold acknowledged records (a flush job's successors, replayed at open:
/// FORMAT.md), which an even older engine would remove as orphans. Version 3 (the live WAL
/// carries sync markers and batch seals), version 2 (markers, no seals) and version 1 (neither)
/// are still read: the WAL is replayed under its own rule, then the store is moved to version 5.
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 5;
/// Refuse manifests larger than this (a corrupt length must not allocate without bound).
const MANIFEST_BYTES_MAX: usize = 256 << 20;

/// Accounting of one value-log segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    /// Bytes appended to the segment.
    pub(crate) size_bytes: u64,
    /// Bytes known to hold overwritten or deleted values (an estimate; garbage collection uses it).
    pub(crate) garbage_bytes: u64,
}

/// The durable state of the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ManifestState {
    /// The version this manifest was read with (always written as [`MANIFEST_FORMAT_VERSION`]):
    /// it tells how to read the WAL it names.
    pub(crate) format_version: u32,
    pub(crate) next_file_id: u64,
    pub(crate) last_seq: u64,
    pub(crate) wal_id: u64,
    pub(crate) vlog_active: u64,
    /// Bytes of the active value-log segment known durable when this manifest was written: never
    /// truncated by recovery.
    pub(crate) vlog_active_trusted_len: u64,
    /// Level 0 newest first; other levels sorted by key, not overlapping.
    pub(crate) levels: Vec<Vec<TableMeta>>,
    pub(crate) segments: BTreeMap<u64, SegmentMeta>,
}

impl ManifestState {
    /// Bytes of tables per level.
    pub(crate) fn level_bytes(&self) -> Vec<u64> {
        let bytes = |level: &Vec<TableMeta>| level.iter().map(|t| t.size_bytes).sum();
        self.levels.iter().map(bytes).collect()
    }

    /// Entries (values, pointers and tombstones) held in tables, over all levels.
    pub(crate) fn table_entry_count(&self) -> u64 {
        self.levels.iter().flatten().map(|t| t.entry_count).sum()
    }

    /// A new file id (ids are never reused, so a name always means one file).
    pub(crate) fn take_file_id(&mut self) -> u64 {
        let id = self.next_file_id;
        self.next_file_id += 1;
        id
    }

    /// Panics if the structure is inconsistent (a bug; STYLE.md section 3): levels >= 1 sorted
    /// and disjoint, every table's range the right way round, the active segment listed.
    pub(crate) fn check_invariants(&self) {
        for (level, tables) in self.levels.iter().enumerate().skip(1) {
            for pair in tables.windows(2) {
                assert!(
                    pair[0].largest < pair[1].smallest,
                    "level {level}: tables {} and {} overlap or are out of order",
                    pair[0].id,
                    pair[1].id
                );
            }
        }
        for t in self.levels.iter().flatten() {
            assert!(
                t.smallest <= t.largest,
                "table {} has an inverted range",
                t.id
            );
        }
        assert!(self.segments.contains_key(&self.vlog_active));
    }

    /// Counts the frame `p` points at as garbage of its segment (an overwritten or deleted
    /// separated value), never past the segment's size.
    pub(crate) fn add_garbage(&mut self, p: crate::entry::ValuePointer) {
        if let Some(s) = self.segments.get_mut(&p.segment) {
            s.garbage_bytes = (s.garbage_bytes + u64::from(p.frame_len)).min(s.size_bytes.max(1));
        }
    }
}

/// Encodes a manifest.
pub(crate) fn encode(state: &ManifestState) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_u64(state.next_file_id);
    body.put_u64(state.last_seq);
    body.put_u64(state.wal_id);
    body.put_u64(state.vlog_active);
    body.put_u64(state.vlog_active_trusted_len);
    body.put_u32(state.levels.len() as u32);
    for level in &state.levels {
        body.put_u32(level.len() as u32);
        for t in level {
            body.put_u64(t.id);
            body.put_slice32(&t.smallest);
            body.put_slice32(&t.largest);
            body.put_u64(t.size_bytes);
            body.put_u64(t.entry_count);
        }
    }
    body.put_u32(state.segments.len() as u32);
    for (id, s) in &state.segments {
        body.put_u64(*id);
        body.put_u64(s.size_bytes);
        body.put_u64(s.garbage_bytes);
    }
    let mut out = Vec::with_capacity(body.len() + 20);
    out.put_u64(MANIFEST_MAGIC);
    out.put_u32(MANIFEST_FORMAT_VERSION);
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    let sum = crc(&out);
    out.put_u32(sum);
    out
}

/// Decodes a manifest; never panics on any input.
pub(crate) fn decode(bytes: &[u8], key_bytes_max: usize) -> Result<ManifestState, String> {
    if bytes.len() > MANIFEST_BYTES_MAX {
        return Err("manifest too large".into());
    }
    let mut c = Cursor::new(bytes);
    if c.u64()? != MANIFEST_MAGIC {
        return Err("bad magic".into());
    }
    let version = c.u32()?;
    let body_len = c.u32()? as usize;
    let body = c.take(body_len)?;
    let at = c.position();
    let sum = c.u32()?;
    if !c.is_empty() {
        return Err("trailing bytes".into());
    }
    if crc(&bytes[..at]) != sum {
        return Err("checksum mismatch".into());
    }
    if !(1..=MANIFEST_FORMAT_VERSION).contains(&version) {
        return Err(format!("unsupported manifest version {version}"));
    }
    let mut c = Cursor::new(body);
    let mut state = ManifestState {
        format_version: version,
        next_file_id: c.u64()?,
        last_seq: c.u64()?,
        wal_id: c.u64()?,
        vlog_active: c.u64()?,
        vlog_active_trusted_len: c.u64()?,
        ..ManifestState::default()
    };
    let level_count = c.u32()? as usize;
    if level_count > 64 {
        return Err(format!("{level_count} levels"));
    }
    for _ in 0..level_count {
        let count = c.u32()? as usize;
        let mut level = Vec::with_capacity(count.min(c.remaining() / 32));
        for _ in 0..count {
            level.push(TableMeta {
                id: c.u64()?,
                smallest: Bytes::copy_from_slice(c.slice32(key_bytes_max)?),
                largest: Bytes::copy_from_slice(c.slice32(key_bytes_max)?),
                size_bytes: c.u64()?,
                entry_count: c.u64()?,
            });
        }
        state.levels.push(level);
    }
    let segment_count = c.u32()? as usize;
    for _ in 0..segment_count {
        let id = c.u64()?;
        state.segments.insert(
            id,
            SegmentMeta {
                size_bytes: c.u64()?,
                garbage_bytes: c.u64()?,
            },
        );
    }
    if !c.is_empty() {
        return Err("trailing body bytes".into());
    }
    validate(&state)?;
    Ok(state)
}

/// The largest sequence number or file id a manifest may hold: far beyond any real store, and far
/// enough from `u64::MAX` that counting up from it never overflows.
const COUNTER_MAX: u64 = 1 << 62;
/// The largest table or segment size (and entry count) a manifest may hold, so that sums over
/// every table of a manifest (at most [`MANIFEST_BYTES_MAX`] / 32 of them) stay below `u64::MAX`.
const SIZE_MAX: u64 = 1 << 40;

/// Checks what the checksum cannot: that the state is one the engine could have written. A
/// manifest that fails here was written by a buggy engine or damaged before its checksum was
/// taken; opening it would break the engine's invariants (and its `check_invariants` asserts).
fn validate(state: &ManifestState) -> Result<(), String> {
    if state.next_file_id > COUNTER_MAX || state.last_seq > COUNTER_MAX {
        return Err(format!(
            "counters out of range (next_file_id {}, last_seq {})",
            state.next_file_id, state.last_seq
        ));
    }
    if state.levels.is_empty() {
        return Err("no levels".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut claim = |id: u64, what: &str| -> Result<(), String> {
        if id >= state.next_file_id {
            return Err(format!(
                "{what} {id} is not below next_file_id {}",
                state.next_file_id
            ));
        }
        if !ids.insert(id) {
            return Err(format!("file id {id} is used twice"));
        }
        Ok(())
    };
    claim(state.wal_id, "WAL")?;
    for (level, tables) in state.levels.iter().enumerate() {
        for t in tables {
            claim(t.id, "table")?;
            validate_table(level, t)?;
        }
        validate_order(level, tables)?;
    }
    for (id, s) in &state.segments {
        claim(*id, "value-log segment")?;
        if s.size_bytes > SIZE_MAX || s.garbage_bytes > SIZE_MAX {
            return Err(format!(
                "value-log segment {id} has size {} and garbage {}",
                s.size_bytes, s.garbage_bytes
            ));
        }
    }
    if !state.segments.contains_key(&state.vlog_active) {
        return Err(format!(
            "the active value-log segment {} is not listed",
            state.vlog_active
        ));
    }
    if state.vlog_active_trusted_len > SIZE_MAX {
        return Err(format!(
            "active segment trusted length {} out of range",
            state.vlog_active_trusted_len
        ));
    }
    Ok(())
}

/// A table's own fields: its key range the right way round, its counts in range.
fn validate_table(level: usize, t: &TableMeta) -> Result<(), String> {
    if t.smallest > t.largest {
        return Err(format!(
            "level {level}: table {} has an inverted key range",
            t.id
        ));
    }
    if t.size_bytes > SIZE_MAX || t.entry_count > SIZE_MAX {
        return Err(format!(
            "level {level}: table {} has size {} and {} entries",
            t.id, t.size_bytes, t.entry_count
        ));
    }
    Ok(())
}

/// Levels >= 1 hold disjoint tables in key order.
fn validate_order(level: usize, tables: &[TableMeta]) -> Result<(), String> {
    if level >= 1 {
        for pair in tables.windows(2) {
            if pair[0].largest >= pair[1].smallest {
                return Err(format!(
                    "level {level}: tables {} and {} overlap or are out of order",
                    pair[0].id, pair[1].id
                ));
            }
        }
    }
    Ok(())
}

/// Replaces the manifest atomically: temp file, fsync, rename, fsync directory.
pub(crate) fn store<F: FileSystem>(fs: &mut F, state: &ManifestState) -> Result<(), LsmError> {
    if fs.exists(MANIFEST_TMP_FILE)? {
        fs.remove(MANIFEST_TMP_FILE)?;
    }
    fs.create(MANIFEST_TMP_FILE)?;
    fs.append(MANIFEST_TMP_FILE, &encode(state))?;
    fs.fsync(MANIFEST_TMP_FILE)?;
    fs.rename(MANIFEST_TMP_FILE, MANIFEST_FILE)?;
    fs.fsync_dir()?;
    Ok(())
}

/// Reads the manifest; `None` if there is none (a store never initialized).
pub(crate) fn load<F: FileSystem>(
    fs: &mut F,
    key_bytes_max: usize,
) -> Result<Option<ManifestState>, LsmError> {
    if !fs.exists(MANIFEST_FILE)? {
        return Ok(None);
    }
    let bytes = fs.read_all(MANIFEST_FILE)?;
    decode(&bytes, key_bytes_max)
        .map(Some)
        .map_err(|why| LsmError::corrupt(MANIFEST_FILE, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut state = ManifestState {
            format_version: MANIFEST_FORMAT_VERSION,
            next_file_id: 9,
            last_seq: 100,
            wal_id: 8,
            vlog_active: 2,
            vlog_active_trusted_len: 77,
            levels: vec![vec![], vec![]],
            segments: BTreeMap::new(),
        };
        state.levels[1].push(TableMeta {
            id: 5,
            smallest: Bytes::from_static(b"a"),
            largest: Bytes::from_static(b"z"),
            size_bytes: 1000,
            entry_count: 10,
        });
        state.segments.insert(
            2,
            SegmentMeta {
                size_bytes: 5,
                garbage_bytes: 1,
            },
        );
        let bytes = encode(&state);
        assert_eq!(decode(&bytes, 100), Ok(state.clone()));
        // A version-1 manifest (same body) is still read, and says so.
        let mut v1 = bytes.clone();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let at = v1.len() - 4;
        let sum = crc(&v1[..at]);
        v1[at..].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            decode(&v1, 100).map(|s| s.format_version),
            Ok(1),
            "version 1 is read"
        );
        let mut next = v1.clone();
        next[8..12].copy_from_slice(&(MANIFEST_FORMAT_VERSION + 1).to_le_bytes());
        let sum = crc(&next[..at]);
        next[at..].copy_from_slice(&sum.to_le_bytes());
        assert!(decode(&next, 100).is_err(), "an unknown version is refused");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 100).is_err(), "flip at {i} undetected");
        }
    }
}
