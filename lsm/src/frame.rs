//! The checksummed record framing shared by the write-ahead log and the value log.
//!
//! ```text
//! frame  = header_crc u32 | payload_len u32 | seq u64 | payload_crc u32 | payload
//! header_crc = crc32(payload_len | seq | payload_crc)
//! ```
//! The header has its own checksum so that a reader looking for valid frames after a bad one
//! (to tell a torn tail from corruption in the middle) can reject a random offset cheaply.
//!
//! Recovery rules (PITFALLS, storage):
//! * value-log segments and format-1 WALs ([`scan_log`]): a bad frame with no valid frame after it
//!   is a torn tail and is truncated; a bad frame followed by a valid one is corruption.
//! * format-2 and -3 WALs ([`scan_wal`]): the WAL carries *sync markers* ("the first X bytes of
//!   this file were fsynced before this marker was written"). A bad frame below the largest claim
//!   of the markers lies in synced bytes: corruption, reported. Past it, a bad frame inside a batch
//!   with an intact *seal* (format 3, `seal.rs`) is judged by the seal: bit rot is reported, crash
//!   damage cut. A bad frame in no sealed batch lies in the unsynced tail, where a crash may leave
//!   holes (lost sectors read as zeros) before kept sectors: the log is cut there and every later
//!   frame is dropped, valid or not (they were never acknowledged, and keeping one after a hole
//!   would recover a hole in the write order).

use crate::bytes_io::{crc, Cursor, PutBytes};
use crate::seal::{judge, portions, seal_of, Seal, SealVerdict};

/// Bytes of a frame before its payload.
pub(crate) const FRAME_HEADER_BYTES: usize = 20;

/// Appends one frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    encode_frame_with(out, seq, |out| out.extend_from_slice(payload));
}

/// Appends one frame to `out` whose payload `write_payload` appends there itself: the same bytes
/// as [`encode_frame`], without a buffer of the payload's own to allocate and copy from (each
/// write's WAL record and each value a flush separates; issue #15).
pub(crate) fn encode_frame_with(
    out: &mut Vec<u8>,
    seq: u64,
    write_payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    write_payload(out);
    let payload = &out[start + FRAME_HEADER_BYTES..];
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; FRAME_HEADER_BYTES - 4];
    header[..4].copy_from_slice(&payload_len.to_le_bytes());
    header[4..12].copy_from_slice(&seq.to_le_bytes());
    header[12..].copy_from_slice(&crc(payload).to_le_bytes());
    out[start..start + 4].copy_from_slice(&crc(&header).to_le_bytes());
    out[start + 4..start + FRAME_HEADER_BYTES].copy_from_slice(&header);
}

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub(crate) seq: u64,
    pub(crate) payload: &'a [u8],
    /// Header plus payload bytes.
    pub(crate) len: usize,
}

/// Decodes the frame at the start of `bytes`, verifying both checksums.
pub(crate) fn decode_frame(bytes: &[u8], payload_bytes_max: usize) -> Result<Frame<'_>, String> {
    let mut cursor = Cursor::new(bytes);
    let header_crc = cursor.u32()?;
    let header = cursor.take(16)?;
    if crc(header) != header_crc {
        return Err("frame header checksum mismatch".into());
    }
    let mut h = Cursor::new(header);
    let payload_len = h.u32()? as usize;
    let seq = h.u64()?;
    let payload_crc = h.u32()?;
    if payload_len > payload_bytes_max {
        return Err(format!(
            "frame payload of {payload_len} bytes exceeds the limit"
        ));
    }
    let payload = cursor.take(payload_len)?;
    if crc(payload) != payload_crc {
        return Err("frame payload checksum mismatch".into());
    }
    Ok(Frame {
        seq,
        payload,
        len: FRAME_HEADER_BYTES + payload_len,
    })
}

/// The offset of the first valid frame strictly after `bad_offset`, if any: used to tell a torn
/// tail (none) from corruption in the middle (some).
pub(crate) fn next_valid_frame(
    bytes: &[u8],
    bad_offset: usize,
    payload_bytes_max: usize,
) -> Option<usize> {
    let start = bad_offset.checked_add(1)?;
    (start..bytes.len().saturating_sub(FRAME_HEADER_BYTES - 1))
        .find(|&at| decode_frame(&bytes[at..], payload_bytes_max).is_ok())
}

/// Outcome of reading a log file of frames from its start.
#[derive(Debug)]
pub(crate) struct LogScan<'a> {
    /// The valid frames, in order.
    pub(crate) frames: Vec<(usize, Frame<'a>)>,
    /// Where the valid frames end; a longer file has a torn tail to truncate.
    pub(crate) valid_len: usize,
}

/// Reads frames from `bytes[from..]` until the end or the first bad frame. A bad frame followed by
/// a valid one is an error (corruption in the middle); a bad frame at the end is a torn tail.
pub(crate) fn scan_log(
    bytes: &[u8],
    from: usize,
    payload_bytes_max: usize,
) -> Result<LogScan<'_>, String> {
    let mut frames = Vec::new();
    let mut at = from;
    while at < bytes.len() {
        match decode_frame(&bytes[at..], payload_bytes_max) {
            Ok(frame) => {
                let len = frame.len;
                frames.push((at, frame));
                at += len;
            }
            Err(why) => {
                if let Some(next) = next_valid_frame(bytes, at, payload_bytes_max) {
                    return Err(format!(
                        "bad frame at offset {at} ({why}) followed by a valid frame at {next}"
                    ));
                }
                break;
            }
        }
    }
    Ok(LogScan {
        frames,
        valid_len: at.min(bytes.len()),
    })
}

/// Entry tag of a sync marker (after an empty key); no table or WAL record uses it.
const SYNC_MARKER_TAG: u8 = 4;
/// Payload bytes of a sync marker: `key_len u32 (= 0) | tag u8 (= 4) | synced_through u64`.
const SYNC_MARKER_PAYLOAD_BYTES: usize = 13;

/// Appends a sync marker frame (sequence 0) to `out`: it states that the first `synced_through`
/// bytes of the WAL were durable (fsynced) *before* the marker was written. Such a claim stays
/// true whatever becomes of the marker itself, so a marker that survives a crash can be trusted
/// whether or not it was fsynced (a lost one only makes recovery fall back to an older claim).
pub(crate) fn encode_sync_marker(out: &mut Vec<u8>, synced_through: u64) {
    let mut payload = Vec::with_capacity(SYNC_MARKER_PAYLOAD_BYTES);
    payload.put_u32(0);
    payload.push(SYNC_MARKER_TAG);
    payload.put_u64(synced_through);
    encode_frame(out, 0, &payload);
}

/// The claim of `frame` if it is a sync marker: sequence 0 and the marker payload.
fn sync_marker_claim(frame: &Frame<'_>) -> Option<u64> {
    if frame.seq != 0 || frame.payload.len() != SYNC_MARKER_PAYLOAD_BYTES {
        return None;
    }
    let mut c = Cursor::new(frame.payload);
    if c.u32().ok()? != 0 || c.take(1).ok()? != [SYNC_MARKER_TAG] {
        return None;
    }
    c.u64().ok()
}

/// Why recovery cut a WAL short (the bytes from the cut on were dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CutCause {
    /// Crash damage in bytes no completed sync covered: a torn write, a lost sector, a cut.
    UnsyncedTail,
    /// A portion of a sealed batch reads as all zeros where it held a single set bit: a lost
    /// sector or a bit flip in synced bytes, which no reader can tell apart (`seal.rs`).
    Ambiguous {
        /// Offset of the portion.
        portion_offset: u64,
    },
    /// A format-2 WAL (written before batch seals): a bad frame in the last synced batch cannot
    /// be told from a torn write.
    Unsealed,
}

/// Where and why recovery cut a WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalCut {
    /// Offset of the first bad frame: the WAL is cut there.
    pub(crate) offset: usize,
    /// Why this is no corruption to refuse, or why it is still suspect.
    pub(crate) cause: CutCause,
}

/// Outcome of reading a format-2 WAL.
#[derive(Debug)]
pub(crate) struct WalScan<'a> {
    /// The valid record frames (sync markers and seals left out), in order, with their offsets.
    pub(crate) frames: Vec<(usize, Frame<'a>)>,
    /// Where the kept frames end; a longer file has a tail to truncate.
    pub(crate) valid_len: usize,
    /// The largest claim of a kept sync marker: bytes below it were fsynced.
    pub(crate) synced_through: u64,
    /// Set when a bad frame ended the log (not the end of the file, nor a tail of zeros).
    pub(crate) cut: Option<WalCut>,
}

/// Reads a WAL of format 2 (records and sync markers) or 3 (`sealed`: batch seals too, see
/// `seal.rs`) from its start, stopping at the end or at the first bad frame. The synced length is
/// the largest claim of any valid sync marker in the file (those after a bad frame are found by
/// searching for valid frames past it). A bad frame below it is corruption (an error). At or past
/// it, a bad frame inside a batch whose seal is intact is judged by the seal: bit rot is an error,
/// crash damage (or the one ambiguous shape, reported in [`WalScan::cut`]) ends the log there; a
/// bad frame in no sealed batch is a crash artefact of the unsynced tail and ends the log. Frames
/// after the end, even valid ones, are not returned (never acknowledged, and they follow a hole).
pub(crate) fn scan_wal(
    bytes: &[u8],
    payload_bytes_max: usize,
    sealed: bool,
) -> Result<WalScan<'_>, String> {
    let mut frames = Vec::new();
    let mut synced_through: u64 = 0;
    // Offsets where a frame starts, as written: where a genuine seal's batch may start.
    let mut boundaries = vec![0usize];
    let mut at = 0;
    let mut cut = None;
    while at < bytes.len() {
        match decode_frame(&bytes[at..], payload_bytes_max) {
            Ok(frame) => {
                let len = frame.len;
                if let Some(claim) = sync_marker_claim(&frame) {
                    // A genuine marker describes bytes written before it.
                    if claim > at as u64 {
                        return Err(format!(
                            "sync marker at offset {at} claims {claim} synced bytes, past itself"
                        ));
                    }
                    synced_through = synced_through.max(claim);
                } else if let Some(seal) = seal_of(&frame).filter(|_| sealed) {
                    if !seal_fits(&seal, at, &boundaries) {
                        return Err(format!(
                            "seal at offset {at} describes a batch from {} that does not end at it",
                            seal.batch_start
                        ));
                    }
                } else {
                    frames.push((at, frame));
                }
                at += len;
                boundaries.push(at);
            }
            Err(why) => {
                let scan_past = ScanPast {
                    bytes,
                    payload_bytes_max,
                    sealed,
                    boundaries: &boundaries,
                };
                let cause = scan_past.judge(at, &why, &mut synced_through)?;
                // Only zeros from here on: the WAL's end (the zeros a preallocating WAL appends
                // ahead of its records, or records a crash lost over them, never fsynced), not
                // a cut (`wal.rs`, "Preallocation"). Judged first: zeros in synced bytes are
                // still corruption.
                let zero_tail =
                    cause == CutCause::UnsyncedTail && bytes[at..].iter().all(|&b| b == 0);
                if !zero_tail {
                    cut = Some(WalCut { offset: at, cause });
                }
                break;
            }
        }
    }
    Ok(WalScan {
        frames,
        valid_len: at.min(bytes.len()),
        synced_through,
        cut,
    })
}

/// What judging a bad WAL frame looks at: the rest of the file past it.
struct ScanPast<'a> {
    bytes: &'a [u8],
    payload_bytes_max: usize,
    sealed: bool,
    /// Offsets where a frame starts, as written up to the bad frame.
    boundaries: &'a [usize],
}

impl ScanPast<'_> {
    /// Judges the bad frame at `at` (`why` it failed to decode): where the log ends and why, or
    /// the corruption it is. Raises `synced_through` to the claims of markers found past it.
    fn judge(&self, at: usize, why: &str, synced_through: &mut u64) -> Result<CutCause, String> {
        // Markers past the bad frame still tell how much was synced. One found by this
        // search could in principle be a frame-shaped run of bytes inside a value; one
        // claiming past its own offset cannot be genuine and is ignored. The first seal
        // found whose batch holds the bad frame judges the damage.
        let mut covering: Option<(usize, Seal)> = None;
        let mut from = at;
        while let Some(next) = next_valid_frame(self.bytes, from, self.payload_bytes_max) {
            let Ok(frame) = decode_frame(&self.bytes[next..], self.payload_bytes_max) else {
                break;
            };
            if let Some(claim) = sync_marker_claim(&frame) {
                if claim <= next as u64 {
                    *synced_through = (*synced_through).max(claim);
                }
            } else if let Some(seal) = seal_of(&frame).filter(|_| self.sealed) {
                if covering.is_none()
                    && seal.batch_start <= at as u64
                    && seal_fits(&seal, next, self.boundaries)
                {
                    covering = Some((next, seal));
                }
            }
            from = next + frame.len - 1;
        }
        if (at as u64) < *synced_through {
            return Err(format!(
                "bad frame at offset {at} ({why}) in the synced part of the log (a sync \
                 marker says its first {} bytes were fsynced)",
                *synced_through
            ));
        }
        let cause = match covering {
            None if self.sealed => CutCause::UnsyncedTail,
            None => CutCause::Unsealed,
            Some((seal_at, seal)) => match judge(self.bytes, &seal, seal_at as u64) {
                SealVerdict::CrashDamage => CutCause::UnsyncedTail,
                SealVerdict::Ambiguous { portion_offset } => CutCause::Ambiguous { portion_offset },
                SealVerdict::BitRot { portion_offset } => {
                    return Err(format!(
                        "bad frame at offset {at} ({why}) in the batch sealed at \
                         {seal_at}: the sector portion at {portion_offset} differs from \
                         its seal by one bit (bit rot in written bytes, not a torn write)"
                    ))
                }
                SealVerdict::Intact => {
                    return Err(format!(
                        "bad frame at offset {at} ({why}) in the batch sealed at \
                         {seal_at}, which reads as written"
                    ))
                }
            },
        };
        Ok(cause)
    }
}

/// Whether `seal`, found at `seal_at`, can be genuine: its batch starts at a frame boundary read
/// before the bad frame (or at it) and it holds one crc per sector portion of the batch.
fn seal_fits(seal: &Seal, seal_at: usize, boundaries: &[usize]) -> bool {
    let Ok(start) = usize::try_from(seal.batch_start) else {
        return false;
    };
    start <= seal_at
        && boundaries.binary_search(&start).is_ok()
        && portions(seal.batch_start, seal_at as u64).count() == seal.crcs.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNC_MARKER_FRAME_BYTES: usize = FRAME_HEADER_BYTES + SYNC_MARKER_PAYLOAD_BYTES;

    /// The frame layout as the module doc states it, field by field.
    fn frame_by_the_layout(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut header = Vec::new();
        header.put_u32(u32::try_from(payload.len()).expect("small"));
        header.put_u64(seq);
        header.put_u32(crc(payload));
        let mut frame = Vec::new();
        frame.put_u32(crc(&header));
        frame.extend_from_slice(&header);
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn a_payload_written_in_place_frames_as_the_layout_says() {
        let mut out = b"earlier bytes".to_vec();
        let mut expected = out.clone();
        for (seq, len) in [(0u64, 0usize), (1, 1), (7, 1024), (u64::MAX, 5000)] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let from = out.len();
            encode_frame_with(&mut out, seq, |out| {
                out.put_u32(7);
                out.extend_from_slice(&payload[4.min(len)..]);
            });
            let mut written = 7u32.to_le_bytes().to_vec();
            written.extend_from_slice(&payload[4.min(len)..]);
            expected.extend_from_slice(&frame_by_the_layout(seq, &written));
            assert_eq!(out, expected, "seq {seq}, {len} bytes");
            let frame = decode_frame(&out[from..], 1 << 20).expect("a whole frame");
            assert_eq!((frame.seq, frame.payload), (seq, written.as_slice()));
            encode_frame(&mut out, seq, &payload);
            expected.extend_from_slice(&frame_by_the_layout(seq, &payload));
            assert_eq!(out, expected);
        }
    }

    fn log(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 1..=n {
            encode_frame(&mut out, seq, format!("payload {seq}").as_bytes());
        }
        out
    }

    #[test]
    fn round_trip() {
        let bytes = log(5);
        let scan = scan_log(&bytes, 0, 1 << 20).expect("scan");
        assert_eq!(scan.frames.len(), 5);
        assert_eq!(scan.valid_len, bytes.len());
        assert_eq!(scan.frames[2].1.payload, b"payload 3");
    }

    #[test]
    fn torn_tail_is_cut_at_every_length() {
        let bytes = log(3);
        let two = {
            let s = scan_log(&bytes, 0, 1 << 20).expect("scan");
            s.frames[2].0
        };
        for cut in two..bytes.len() {
            let scan = scan_log(&bytes[..cut], 0, 1 << 20).expect("torn tail is not corruption");
            assert_eq!(scan.frames.len(), 2);
            assert_eq!(scan.valid_len, two);
        }
    }

    /// A format-2 WAL of `batches` of two records each, as the engine writes it: every batch
    /// after the first starts with a marker claiming the length before it. Returns the bytes and
    /// each batch's start.
    fn wal(batches: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for b in 0..batches {
            starts.push(out.len());
            if b > 0 {
                let synced = out.len() as u64;
                encode_sync_marker(&mut out, synced);
            }
            for i in 0..2 {
                let seq = b * 2 + i + 1;
                encode_frame(&mut out, seq, format!("payload {seq}").as_bytes());
            }
        }
        (out, starts)
    }

    #[test]
    fn wal_markers_are_skipped_and_bound_the_synced_part() {
        let (bytes, starts) = wal(3);
        let scan = scan_wal(&bytes, 1 << 20, true).expect("scan");
        assert_eq!(scan.frames.len(), 6);
        assert_eq!(scan.valid_len, bytes.len());
        assert_eq!(scan.synced_through, starts[2] as u64);
        assert!(scan.frames.iter().all(|(_, f)| f.seq != 0));
    }

    #[test]
    fn wal_hole_in_the_unsynced_tail_cuts_there_and_drops_later_frames() {
        let (bytes, starts) = wal(3);
        // Zero the first record of the last batch (after its marker): later records are valid.
        let first = starts[2] + SYNC_MARKER_FRAME_BYTES;
        let mut holed = bytes.clone();
        holed[first..first + FRAME_HEADER_BYTES].fill(0);
        let scan =
            scan_wal(&holed, 1 << 20, true).expect("a hole in the unsynced tail is no corruption");
        assert_eq!(scan.valid_len, first);
        assert_eq!(
            scan.frames.len(),
            4,
            "the valid record after the hole is dropped"
        );
    }

    #[test]
    fn wal_bad_frame_in_the_synced_part_is_corruption() {
        let (bytes, starts) = wal(3);
        for at in 0..starts[2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            let e =
                scan_wal(&bad, 1 << 20, true).expect_err("a flip below the last marker's claim");
            assert!(e.contains("synced part"), "{e}");
        }
    }

    #[test]
    fn wal_marker_claiming_past_itself_is_corruption() {
        let mut out = Vec::new();
        encode_frame(&mut out, 1, b"x");
        encode_sync_marker(&mut out, 1000);
        assert!(scan_wal(&out, 1 << 20, true).is_err());
    }

    #[test]
    fn bad_frame_followed_by_good_one_is_corruption() {
        let mut bytes = log(3);
        bytes[FRAME_HEADER_BYTES + 2] ^= 1;
        assert!(scan_log(&bytes, 0, 1 << 20).is_err());
    }
}
