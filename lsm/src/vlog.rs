//! The value log (WiscKey): append-only segments holding separated values, written only by
//! flushes (and value-log collection, through ordinary writes). The active segment's length, the
//! frames staged for it and a cache of recently read values belong here; which segments exist
//! and how much of each is garbage is the manifest's (`ManifestState::segments`).

use crate::bytes_io::{Cursor, PutBytes};
use crate::cache::LruCache;
use crate::entry::ValuePointer;
use crate::error::LsmError;
use crate::frame::{decode_frame, encode_frame_with, FRAME_HEADER_BYTES};
use crate::fs::FileSystem;
use crate::manifest::{self, ManifestState, SegmentMeta};
use bytes::Bytes;
use std::collections::BTreeMap;

/// The name of value-log segment `id`.
pub(crate) fn vlog_file_name(id: u64) -> String {
    format!("{id:06}.vlog")
}

/// Bytes buffered in memory before value-log frames are written out during a flush.
const VLOG_BUFFER_BYTES: usize = 1 << 20;

/// The value log's working state.
#[derive(Debug)]
pub(crate) struct ValueLog {
    /// The active segment (the manifest's `vlog_active`).
    active: u64,
    /// Length of the active segment, including `buffer`.
    active_len: u64,
    /// Frames staged by a flush and not yet appended to the active segment.
    buffer: Vec<u8>,
    /// Frames were appended since the last fsync of the active segment.
    unsynced: bool,
    /// Recently read separated values, by (segment, offset), bounded in bytes: a hot value is
    /// served without a read and a checksum of its frame.
    cache: LruCache<(u64, u64), Bytes>,
    /// File names of the segments read so far: formatting one per read was 2% of a GET
    /// (issue #15). Pruned to the live segments when it outgrows them.
    names: BTreeMap<u64, String>,
    /// Bytes of frames staged since open (user values and collection rewrites).
    bytes_written: u64,
}

impl ValueLog {
    /// The value log with active segment `active`, of which `trusted_len` bytes are referenced.
    pub(crate) fn new(active: u64, trusted_len: u64, cache_bytes: usize) -> Self {
        ValueLog {
            active,
            active_len: trusted_len,
            buffer: Vec::new(),
            unsynced: false,
            cache: LruCache::new(cache_bytes),
            names: BTreeMap::new(),
            bytes_written: 0,
        }
    }

    /// The active segment.
    pub(crate) fn active(&self) -> u64 {
        self.active
    }

    /// Length of the active segment, including staged frames.
    pub(crate) fn active_len(&self) -> u64 {
        self.active_len
    }

    /// Bytes of frames staged since open.
    pub(crate) fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// The size of the frame holding `value` for `key`.
    pub(crate) fn frame_len(key: &[u8], value: &[u8]) -> u64 {
        (FRAME_HEADER_BYTES + 4 + key.len() + value.len()) as u64
    }

    /// Whether a frame of `frame_len` bytes must go to a new segment.
    pub(crate) fn must_rotate(&self, frame_len: u64, segment_bytes_max: u64) -> bool {
        self.active_len > 0 && self.active_len + frame_len > segment_bytes_max
    }

    /// Stages one frame (written out in large appends) and returns where it will be. The frames
    /// are fsynced before any table that points at them is written.
    pub(crate) fn stage<F: FileSystem>(
        &mut self,
        fs: &mut F,
        seq: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<ValuePointer, LsmError> {
        let frame_len = (FRAME_HEADER_BYTES + 4 + key.len() + value.len()) as u64;
        let from = self.buffer.len();
        encode_frame_with(&mut self.buffer, seq, |out| {
            out.put_slice32(key);
            out.extend_from_slice(value);
        });
        debug_assert_eq!((self.buffer.len() - from) as u64, frame_len);
        let p = ValuePointer {
            segment: self.active,
            offset: self.active_len,
            frame_len: u32::try_from(frame_len).unwrap_or(u32::MAX),
        };
        self.active_len += frame_len;
        self.bytes_written += frame_len;
        if self.buffer.len() >= VLOG_BUFFER_BYTES {
            self.write_buffer(fs)?;
        }
        Ok(p)
    }

    /// Appends the staged frames to the active segment.
    pub(crate) fn write_buffer<F: FileSystem>(&mut self, fs: &mut F) -> Result<(), LsmError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        fs.append(&vlog_file_name(self.active), &self.buffer)?;
        self.buffer.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Bytes were written since the last fsync.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// An fsync run away from the engine covered every byte written (a flush job's).
    pub(crate) fn synced_elsewhere(&mut self) {
        self.unsynced = false;
    }

    /// Fsyncs the active segment if frames were appended since the last fsync.
    pub(crate) fn fsync_if_unsynced<F: FileSystem>(&mut self, fs: &mut F) -> Result<(), LsmError> {
        if self.unsynced {
            fs.fsync(&vlog_file_name(self.active))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Seals the active segment (written and fsynced, so pointers into it stay valid) and
    /// starts a new one, recorded in `state`'s manifest before any value is written to it.
    pub(crate) fn rotate<F: FileSystem>(
        &mut self,
        fs: &mut F,
        state: &mut ManifestState,
    ) -> Result<(), LsmError> {
        self.write_buffer(fs)?;
        fs.fsync(&vlog_file_name(self.active))?;
        self.unsynced = false;
        let id = state.take_file_id();
        fs.create(&vlog_file_name(id))?;
        fs.fsync_dir()?;
        // Changed on a copy that replaces the state only once stored: a full disk while storing
        // leaves the state as the manifest on disk still says.
        let mut next = state.clone();
        next.segments.insert(id, SegmentMeta::default());
        next.vlog_active = id;
        next.vlog_active_trusted_len = 0;
        manifest::store(fs, &next)?;
        *state = next;
        self.active = id;
        self.active_len = 0;
        Ok(())
    }

    /// Seals the active segment for a checkpoint (which links only files that never change),
    /// removing the new segment's file again if the manifest cannot be stored (a full disk).
    pub(crate) fn seal_for_checkpoint<F: FileSystem>(
        &mut self,
        fs: &mut F,
        state: &mut ManifestState,
    ) -> Result<(), LsmError> {
        let next_id = state.next_file_id;
        let r = self.rotate(fs, state);
        if r.is_err() && state.vlog_active != next_id {
            let name = vlog_file_name(next_id);
            if fs.exists(&name)? {
                fs.remove(&name)?;
            }
        }
        r
    }

    /// Undoes a failed flush: drops staged frames and cuts the active segment back to
    /// `trusted_len` (frames appended before a rotation stay in the sealed segment as
    /// unreferenced bytes).
    pub(crate) fn cut_back<F: FileSystem>(
        &mut self,
        fs: &mut F,
        trusted_len: u64,
    ) -> Result<(), LsmError> {
        self.buffer.clear();
        let name = vlog_file_name(self.active);
        if fs.len(&name)? > trusted_len {
            fs.truncate(&name, trusted_len)?;
        }
        self.active_len = trusted_len;
        self.unsynced = false;
        Ok(())
    }

    /// Reads and verifies a separated value (checksum, key and, during recovery, sequence).
    pub(crate) fn read<F: FileSystem>(
        &mut self,
        fs: &mut F,
        segments: &BTreeMap<u64, SegmentMeta>,
        key: &[u8],
        p: ValuePointer,
        payload_max: usize,
    ) -> Result<Bytes, LsmError> {
        if !segments.contains_key(&p.segment) {
            return Err(LsmError::corrupt(
                &vlog_file_name(p.segment),
                "pointer into a segment that is not live",
            ));
        }
        if let Some(v) = self.cache.get(&(p.segment, p.offset)) {
            return Ok(v);
        }
        if self.names.len() > 2 * segments.len() {
            self.names
                .retain(|segment, _| segments.contains_key(segment));
        }
        let name = self
            .names
            .entry(p.segment)
            .or_insert_with(|| vlog_file_name(p.segment));
        // The pointer comes from disk: bound the read before allocating for it.
        let frame_len_max = FRAME_HEADER_BYTES + payload_max;
        if p.frame_len as usize > frame_len_max {
            return Err(LsmError::corrupt(
                name,
                format!(
                    "value at {} claims a frame of {} bytes, above {frame_len_max}",
                    p.offset, p.frame_len
                ),
            ));
        }
        let bytes = fs
            .read_at(name, p.offset, p.frame_len as usize)
            .map_err(|e| LsmError::corrupt(name, format!("value at {}: {}", p.offset, e.detail)))?;
        let value_at = value_offset_in_frame(&bytes, key, payload_max)
            .map_err(|why| LsmError::corrupt(name, format!("value at {}: {why}", p.offset)))?;
        // The value is the tail of the frame just read: share its buffer, no copy.
        let value = Bytes::from(bytes).slice(value_at..);
        self.cache
            .insert((p.segment, p.offset), value.clone(), value.len() + 64);
        Ok(value)
    }

    /// Panics if the working state is inconsistent (a bug).
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.buffer.len() as u64 <= self.active_len,
            "segment {}: {} bytes staged past a length of {}",
            self.active,
            self.buffer.len(),
            self.active_len
        );
    }
}

/// The sealed segment most worth collecting: the largest share of known garbage, at least
/// `garbage_percent_min`; the oldest among equals.
pub(crate) fn collection_candidate(
    segments: &BTreeMap<u64, SegmentMeta>,
    active: u64,
    garbage_percent_min: u64,
) -> Option<(u64, SegmentMeta)> {
    segments
        .iter()
        .filter(|(id, s)| {
            **id != active && s.garbage_bytes * 100 >= s.size_bytes * garbage_percent_min
        })
        .max_by_key(|(id, s)| {
            (
                s.garbage_bytes * 100 / s.size_bytes.max(1),
                std::cmp::Reverse(**id),
            )
        })
        .map(|(id, s)| (*id, *s))
}

/// Drops collected segment `segment` from the manifest, then removes its file.
pub(crate) fn remove_segment<F: FileSystem>(
    fs: &mut F,
    state: &mut ManifestState,
    segment: u64,
) -> Result<(), LsmError> {
    let mut next = state.clone();
    next.segments.remove(&segment);
    manifest::store(fs, &next)?;
    *state = next;
    fs.remove(&vlog_file_name(segment))?;
    Ok(())
}

/// A frame of a sealed segment: where it is, its key and its value.
pub(crate) type SegmentFrame = (ValuePointer, Bytes, Bytes);

/// The frames of sealed segment `segment` that lie wholly within the `len` bytes at `offset`,
/// key and value, in segment order, and the bytes they cover: a collection reads its victim in
/// bounded parts. A sealed segment was fsynced whole, so a frame that does not decode is
/// corruption, except at the end of a part that is not the segment's last (`at_end`) and holds
/// less than a largest frame from there: that frame is cut by the part and is read whole with
/// the next one, which starts where it starts.
pub(crate) fn segment_frames_at<F: FileSystem>(
    fs: &mut F,
    segment: u64,
    (offset, len, at_end): (u64, usize, bool),
    key_bytes_max: usize,
    payload_max: usize,
) -> Result<(Vec<SegmentFrame>, u64), LsmError> {
    let name = vlog_file_name(segment);
    let bytes = Bytes::from(fs.read_at(&name, offset, len)?);
    let frame_max = FRAME_HEADER_BYTES + payload_max;
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let frame = match decode_frame(&bytes[at..], payload_max) {
            Ok(frame) => frame,
            Err(_) if !at_end && bytes.len() - at < frame_max => break,
            Err(why) => {
                let at = offset + at as u64;
                return Err(LsmError::corrupt(&name, format!("frame at {at}: {why}")));
            }
        };
        let here_at = offset + at as u64;
        let mut c = Cursor::new(frame.payload);
        let key = c
            .slice32(key_bytes_max)
            .map_err(|why| LsmError::corrupt(&name, format!("frame at {here_at}: {why}")))?;
        let here = ValuePointer {
            segment,
            offset: here_at,
            frame_len: u32::try_from(frame.len).unwrap_or(u32::MAX),
        };
        let value = &frame.payload[c.position()..];
        frames.push((here, bytes.slice_ref(key), bytes.slice_ref(value)));
        at += frame.len;
    }
    Ok((frames, at as u64))
}

/// Checks that `bytes` is one whole, intact value frame of `key`, and returns where its value
/// starts (the value runs to the end of the frame).
fn value_offset_in_frame(bytes: &[u8], key: &[u8], payload_max: usize) -> Result<usize, String> {
    let frame = decode_frame(bytes, payload_max)?;
    if frame.len != bytes.len() {
        return Err("value frame length differs from its pointer".into());
    }
    let mut c = Cursor::new(frame.payload);
    let stored_key = c.slice32(frame.payload.len())?;
    if stored_key != key {
        return Err("value frame belongs to another key".into());
    }
    // The payload is the frame's tail: the value starts where the key ended.
    Ok(bytes.len() - frame.payload.len() + c.position())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    #[test]
    fn staged_values_read_back_through_their_pointers() {
        let mut fs = SimFs::seeded(2);
        fs.create(&vlog_file_name(5)).expect("create");
        let mut vlog = ValueLog::new(5, 0, 1 << 10);
        let a = vlog.stage(&mut fs, 1, b"ka", b"alpha").expect("stage");
        let b = vlog.stage(&mut fs, 2, b"kb", b"beta").expect("stage");
        assert_eq!(b.offset, ValueLog::frame_len(b"ka", b"alpha"));
        vlog.write_buffer(&mut fs).expect("write");
        vlog.check_invariants();
        let segments = BTreeMap::from([(5, SegmentMeta::default())]);
        let got = vlog
            .read(&mut fs, &segments, b"kb", b, 1 << 10)
            .expect("read");
        assert_eq!(got.as_ref(), b"beta");
        let err = vlog.read(&mut fs, &segments, b"kb", a, 1 << 10);
        assert!(err.is_err(), "a frame of another key is refused");
        let len = fs.len(&vlog_file_name(5)).expect("len");
        let (frames, covered) =
            segment_frames_at(&mut fs, 5, (0, len as usize, true), 64, 1 << 10).expect("frames");
        assert_eq!(frames.len(), 2);
        assert_eq!(covered, len);
        vlog.cut_back(&mut fs, b.offset).expect("cut");
        assert_eq!(fs.len(&vlog_file_name(5)).expect("len"), b.offset);
    }

    /// A collection reads its victim in parts: a frame cut by a part's end comes whole with the
    /// next part, every frame exactly once; a damaged frame is corruption wherever it lies.
    #[test]
    fn a_segment_read_in_parts_yields_each_frame_once_and_refuses_damage() {
        let mut fs = SimFs::seeded(3);
        let name = vlog_file_name(7);
        fs.create(&name).expect("create");
        let mut vlog = ValueLog::new(7, 0, 1 << 10);
        let keys: Vec<Vec<u8>> = (0..9u8).map(|i| vec![b'k', i]).collect();
        for (seq, key) in keys.iter().enumerate() {
            vlog.stage(&mut fs, seq as u64 + 1, key, &[seq as u8; 20])
                .expect("stage");
        }
        vlog.write_buffer(&mut fs).expect("write");
        let len = fs.len(&name).expect("len");
        // A largest frame (payload 40) is longer than any one here and shorter than two.
        let payload_max = 40;
        let part = (FRAME_HEADER_BYTES + payload_max) as u64;
        let read_in_parts = |fs: &mut SimFs| {
            let (mut at, mut seen) = (0u64, Vec::new());
            while at < len {
                let this = part.min(len - at);
                let (frames, covered) = segment_frames_at(
                    fs,
                    7,
                    (at, this as usize, at + this == len),
                    64,
                    payload_max,
                )?;
                assert!(covered > 0 && covered <= this, "progress within the part");
                seen.extend(frames.into_iter().map(|(p, k, v)| (p.offset, k, v)));
                at += covered;
            }
            Ok::<_, LsmError>(seen)
        };
        let seen = read_in_parts(&mut fs).expect("parts");
        let got_keys: Vec<Vec<u8>> = seen.iter().map(|(_, k, _)| k.to_vec()).collect();
        assert_eq!(got_keys, keys, "every frame once, in order");
        assert!(seen.iter().all(|(_, _, v)| v.len() == 20));
        // Damage inside the fifth frame: reported, not skipped.
        let fifth = seen[4].0;
        assert!(fs.flip_bit(&name, (fifth + 6) * 8), "bit flipped");
        let err = read_in_parts(&mut fs).expect_err("damage found");
        assert!(
            err.to_string().contains(&format!("frame at {fifth}")),
            "{err}"
        );
    }

    #[test]
    fn collection_takes_the_largest_garbage_share_and_the_oldest_among_equals() {
        let seg = |size, garbage| SegmentMeta {
            size_bytes: size,
            garbage_bytes: garbage,
        };
        let segments = BTreeMap::from([
            (2, seg(100, 50)),
            (3, seg(100, 50)),
            (4, seg(100, 10)),
            (9, seg(100, 90)),
        ]);
        assert_eq!(collection_candidate(&segments, 9, 30).map(|c| c.0), Some(2));
        assert_eq!(collection_candidate(&segments, 9, 60), None);
    }
}
