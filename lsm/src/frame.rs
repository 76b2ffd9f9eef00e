//! The checksummed record framing shared by the write-ahead log and the value log.
//!
//! ```text
//! frame  = header_crc u32 | payload_len u32 | seq u64 | payload_crc u32 | payload
//! header_crc = crc32(payload_len | seq | payload_crc)
//! ```
//! The header has its own checksum so that a reader looking for valid frames after a bad one
//! (to tell a torn tail from corruption in the middle) can reject a random offset cheaply.
//!
//! Recovery rule (PITFALLS, storage): a bad frame with no valid frame after it is a torn tail and
//! is truncated; a bad frame followed by a valid one is corruption and is reported.

use crate::bytes_io::{crc, Cursor, PutBytes};

/// Bytes of a frame before its payload.
pub(crate) const FRAME_HEADER_BYTES: usize = 20;

/// Appends one frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let payload_crc = crc(payload);
    let mut header = Vec::with_capacity(16);
    header.put_u32(payload_len);
    header.put_u64(seq);
    header.put_u32(payload_crc);
    out.put_u32(crc(&header));
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn bad_frame_followed_by_good_one_is_corruption() {
        let mut bytes = log(3);
        bytes[FRAME_HEADER_BYTES + 2] ^= 1;
        assert!(scan_log(&bytes, 0, 1 << 20).is_err());
    }
}
