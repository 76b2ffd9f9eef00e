//! Batch seals: how WAL recovery tells bit rot in the last synced batch from a torn write.
//!
//! Sync markers (`frame.rs`) bound the synced part of the WAL, but only up to the batch before the
//! last sync: the marker that covers the last synced batch is written after its fsync, with the
//! next batch, and may not survive a crash. A bad frame in that last batch is then either a torn
//! write of a batch whose fsync never completed (nothing acknowledged, must be cut) or bit rot in
//! fsynced bytes (acknowledged writes, must be reported). No record written before the fsync can
//! say the fsync completed, so the distinction is made from the *shape of the damage* instead:
//!
//! * Every batch handed to an fsync ends with a seal frame (`seq = 0`, tag 5) carrying the crc32
//!   of each *portion*: the part of the batch inside one 512-byte sector of the file
//!   ([`SECTOR_BYTES`], absolute file offsets). The seal is appended in the same write as the
//!   batch, so it costs no fsync.
//! * A crash damages unsynced appended data only by cutting the file, by losing whole sectors
//!   (which read as zeros past the last durable byte) or by tearing the last write (garbage in
//!   its last bytes, which then hit the seal or lie past it). A bit flip changes one bit.
//! * At recovery, a bad frame inside a batch whose seal is intact is judged portion by portion: a
//!   damaged portion that one flipped bit would explain (its crc matches after flipping some
//!   single bit) is bit rot and is reported as corruption; one that no single flip explains is
//!   crash damage, and the log is cut. The one case both explain, a portion that now reads as all
//!   zeros and originally held exactly one set bit, is cut and *reported* as suspect
//!   ([`SealVerdict::Ambiguous`]), never silently.
//! * A bad frame in a batch with no intact seal lies in bytes no sync ever covered (a sync always
//!   seals first and the seal of a synced batch is durable), unless the seal itself rotted: then
//!   every record of the batch is intact and is kept, so nothing acknowledged is lost.

use crate::bytes_io::{crc, Cursor, PutBytes};
use crate::frame::{encode_frame, Frame, FRAME_HEADER_BYTES};
use std::collections::BTreeMap;

/// Size of the unit a disk writes atomically (as in the simulated disk's sector model).
pub(crate) const SECTOR_BYTES: u64 = 512;
/// Entry tag of a seal (after an empty key); no table or WAL record uses it.
const SEAL_TAG: u8 = 5;
/// Payload bytes of a seal before its crcs: `key_len u32 (= 0) | tag u8 | batch_start u64 |
/// count u32`.
const SEAL_FIXED_PAYLOAD_BYTES: usize = 17;

/// The sector portions of `[start, end)`: each `[from, to)` lies inside one sector.
pub(crate) fn portions(start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut from = start;
    std::iter::from_fn(move || {
        if from >= end {
            return None;
        }
        let to = ((from / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
        let portion = (from, to);
        from = to;
        Some(portion)
    })
}

/// A [`BatchSealer`]'s position: absorbing only appends finished crcs and moves the end, so this
/// is enough to go back to it.
#[derive(Debug, Clone)]
pub(crate) struct SealerMark {
    end: u64,
    crcs_len: usize,
    current: crc32fast::Hasher,
}

/// Builds the seal of the batch being appended to a WAL, incrementally: it is fed every byte
/// appended (in order) and yields the seal frame when the batch is handed to an fsync.
#[derive(Debug, Clone)]
pub(crate) struct BatchSealer {
    /// Offset of the batch's first byte.
    start: u64,
    /// Offset just past the last byte absorbed.
    end: u64,
    /// Crcs of the finished portions.
    crcs: Vec<u32>,
    /// The portion in progress.
    current: crc32fast::Hasher,
}

impl BatchSealer {
    /// A sealer for a batch starting at `offset`.
    pub(crate) fn new(offset: u64) -> Self {
        BatchSealer {
            start: offset,
            end: offset,
            crcs: Vec::new(),
            current: crc32fast::Hasher::new(),
        }
    }

    /// Whether no byte was absorbed since the last seal.
    pub(crate) fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Portions absorbed so far (finished or in progress).
    pub(crate) fn portion_count(&self) -> usize {
        self.crcs.len() + usize::from(!self.is_empty() && !self.end.is_multiple_of(SECTOR_BYTES))
    }

    /// Where the sealer stands now, to [`BatchSealer::rewind`] to while no seal intervenes.
    /// Cheap (no copy of the finished crcs): the WAL takes one before every record it stages.
    pub(crate) fn mark(&self) -> SealerMark {
        SealerMark {
            end: self.end,
            crcs_len: self.crcs.len(),
            current: self.current.clone(),
        }
    }

    /// Forgets the bytes absorbed since `mark` (no seal may have happened since).
    pub(crate) fn rewind(&mut self, mark: SealerMark) {
        debug_assert!(mark.end >= self.start && mark.crcs_len <= self.crcs.len());
        self.end = mark.end;
        self.crcs.truncate(mark.crcs_len);
        self.current = mark.current;
    }

    /// Feeds bytes appended to the WAL right after the ones absorbed so far.
    pub(crate) fn absorb(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (SECTOR_BYTES - self.end % SECTOR_BYTES) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.current.update(now);
            self.end += now.len() as u64;
            if self.end.is_multiple_of(SECTOR_BYTES) {
                let done = std::mem::take(&mut self.current);
                self.crcs.push(done.finalize());
            }
            bytes = rest;
        }
    }

    /// Appends the seal of the absorbed bytes to `out` (which is appended to the WAL right after
    /// them) and starts the next batch after it. Nothing is appended for an empty batch.
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>) {
        if self.is_empty() {
            return;
        }
        let mut crcs = std::mem::take(&mut self.crcs);
        if !self.end.is_multiple_of(SECTOR_BYTES) {
            crcs.push(std::mem::take(&mut self.current).finalize());
        }
        let mut payload = Vec::with_capacity(SEAL_FIXED_PAYLOAD_BYTES + 4 * crcs.len());
        payload.put_u32(0);
        payload.put_u8(SEAL_TAG);
        payload.put_u64(self.start);
        payload.put_u32(u32::try_from(crcs.len()).unwrap_or(u32::MAX));
        for c in &crcs {
            payload.put_u32(*c);
        }
        encode_frame(out, 0, &payload);
        let next = self.end + (FRAME_HEADER_BYTES + payload.len()) as u64;
        *self = BatchSealer::new(next);
    }
}

/// The most portions one seal may describe with a frame payload limit of `payload_bytes_max`
/// (a batch with more is sealed in parts).
pub(crate) fn seal_portions_max(payload_bytes_max: usize) -> usize {
    (payload_bytes_max.saturating_sub(SEAL_FIXED_PAYLOAD_BYTES) / 4).clamp(1, 4096)
}

/// A decoded seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seal {
    /// Offset of the sealed batch's first byte.
    pub(crate) batch_start: u64,
    /// Crc32 of each portion of the batch, in order.
    pub(crate) crcs: Vec<u32>,
}

/// The seal in `frame`, if it is one: sequence 0, an empty key, tag 5 and a well-formed body.
pub(crate) fn seal_of(frame: &Frame<'_>) -> Option<Seal> {
    if frame.seq != 0 || frame.payload.len() < SEAL_FIXED_PAYLOAD_BYTES {
        return None;
    }
    let mut c = Cursor::new(frame.payload);
    if c.u32().ok()? != 0 || c.u8().ok()? != SEAL_TAG {
        return None;
    }
    let batch_start = c.u64().ok()?;
    let count = c.u32().ok()? as usize;
    if c.remaining() != count.checked_mul(4)? {
        return None;
    }
    let crcs = (0..count).map(|_| c.u32()).collect::<Result<_, _>>().ok()?;
    Some(Seal { batch_start, crcs })
}

/// What the damage inside a sealed batch says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SealVerdict {
    /// Every damaged portion is crash damage (a lost or partly lost sector): cut the log.
    CrashDamage,
    /// A damaged portion reads as all zeros, which both a lost sector and a bit flip clearing its
    /// only set bit explain: cut the log, and report it as possible corruption.
    Ambiguous {
        /// Offset of the first such portion.
        portion_offset: u64,
    },
    /// A damaged portion differs from what was written by exactly one bit: bit rot.
    BitRot {
        /// Offset of the portion.
        portion_offset: u64,
    },
    /// The batch reads exactly as written: the bad frame is not explained by damage.
    Intact,
}

/// Judges the batch `bytes[seal.batch_start..seal_offset]` against its seal (module docs). The
/// caller has checked that the batch lies inside `bytes` and that the seal's crc count matches.
pub(crate) fn judge(bytes: &[u8], seal: &Seal, seal_offset: u64) -> SealVerdict {
    // Per portion length: crc(e_i) ^ crc(0^len) for every single-bit e_i. A crc32 is affine, so
    // flipping bit i of a portion changes its crc by exactly that value.
    let mut flip_syndromes: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let mut ambiguous = None;
    let mut damaged = false;
    for ((from, to), recorded) in portions(seal.batch_start, seal_offset).zip(&seal.crcs) {
        let Some(portion) = usize::try_from(from)
            .ok()
            .zip(usize::try_from(to).ok())
            .and_then(|(f, t)| bytes.get(f..t))
        else {
            return SealVerdict::CrashDamage;
        };
        let got = crc(portion);
        if got == *recorded {
            continue;
        }
        damaged = true;
        let syndromes = flip_syndromes
            .entry(portion.len())
            .or_insert_with(|| single_flip_syndromes(portion.len()));
        if syndromes.binary_search(&(got ^ recorded)).is_err() {
            continue; // no single flip explains it: crash damage
        }
        if portion.iter().all(|&b| b == 0) {
            ambiguous.get_or_insert(from);
        } else {
            return SealVerdict::BitRot {
                portion_offset: from,
            };
        }
    }
    match (ambiguous, damaged) {
        (Some(portion_offset), _) => SealVerdict::Ambiguous { portion_offset },
        (None, true) => SealVerdict::CrashDamage,
        (None, false) => SealVerdict::Intact,
    }
}

/// `crc(e_i) ^ crc(0^len)` for each single-bit message `e_i` of `len` bytes, sorted.
fn single_flip_syndromes(len: usize) -> Vec<u32> {
    let zeros = vec![0u8; len];
    let base = crc(&zeros);
    let mut work = zeros;
    let mut out = Vec::with_capacity(len * 8);
    for byte in 0..len {
        for bit in 0..8 {
            work[byte] = 1 << bit;
            out.push(crc(&work) ^ base);
        }
        work[byte] = 0;
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_frame;

    /// Rewinding to a mark forgets exactly what was absorbed after it, across portion
    /// boundaries: the seal is the one of a sealer that never saw those bytes.
    #[test]
    fn a_rewind_forgets_what_was_absorbed_after_the_mark() {
        for (kept, dropped) in [(0, 1), (100, 2000), (511, 1), (512, 512), (700, 3000)] {
            let body: Vec<u8> = (0..kept + dropped).map(|i| (i % 253) as u8).collect();
            let mut rewound = BatchSealer::new(3);
            rewound.absorb(&body[..kept]);
            let mark = rewound.mark();
            for chunk in body[kept..].chunks(300) {
                rewound.absorb(chunk);
            }
            rewound.rewind(mark);
            let mut plain = BatchSealer::new(3);
            plain.absorb(&body[..kept]);
            assert_eq!(
                rewound.portion_count(),
                plain.portion_count(),
                "{kept}+{dropped}"
            );
            let (mut a, mut b) = (Vec::new(), Vec::new());
            rewound.seal(&mut a);
            plain.seal(&mut b);
            assert_eq!(a, b, "{kept}+{dropped}");
        }
    }

    /// A sealed batch of `len` non-zero bytes starting at `start` (preceded by `start` bytes of
    /// padding); returns the file bytes and the seal's offset.
    fn sealed(start: usize, len: usize) -> (Vec<u8>, u64) {
        let mut file = vec![0xaa; start];
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        let mut sealer = BatchSealer::new(start as u64);
        for chunk in body.chunks(100) {
            sealer.absorb(chunk);
        }
        file.extend_from_slice(&body);
        let at = file.len() as u64;
        sealer.seal(&mut file);
        (file, at)
    }

    fn seal_at(file: &[u8], at: u64) -> Seal {
        let frame = decode_frame(&file[at as usize..], 1 << 20).expect("seal frame");
        seal_of(&frame).expect("a seal")
    }

    #[test]
    fn a_seal_describes_its_batch_and_starts_the_next() {
        let (file, at) = sealed(300, 1500);
        let seal = seal_at(&file, at);
        assert_eq!(seal.batch_start, 300);
        assert_eq!(seal.crcs.len(), portions(300, at).count());
        assert_eq!(judge(&file, &seal, at), SealVerdict::Intact);
    }

    #[test]
    fn every_single_bit_flip_is_bit_rot() {
        let (file, at) = sealed(100, 1200);
        let seal = seal_at(&file, at);
        for bit in 100 * 8..(at as usize) * 8 {
            let mut bad = file.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(judge(&bad, &seal, at), SealVerdict::BitRot { .. }),
                "flip of bit {bit}"
            );
        }
    }

    #[test]
    fn lost_sectors_are_crash_damage() {
        let (file, at) = sealed(700, 2000);
        let seal = seal_at(&file, at);
        for (from, to) in portions(700, at) {
            let mut bad = file.clone();
            bad[from as usize..to as usize].fill(0);
            assert_eq!(judge(&bad, &seal, at), SealVerdict::CrashDamage);
        }
    }

    #[test]
    fn a_lost_portion_that_held_one_set_bit_is_ambiguous() {
        let mut sealer = BatchSealer::new(510);
        let mut file = vec![0xaa; 510];
        let body = [0x55, 0x10, 7, 7, 7];
        sealer.absorb(&body);
        file.extend_from_slice(&body);
        let at = file.len() as u64;
        sealer.seal(&mut file);
        let seal = seal_at(&file, at);
        let mut bad = file.clone();
        bad[511] = 0; // the portion [510, 512) held 0x55 0x10: clearing 0x10 is no loss
        assert!(matches!(judge(&bad, &seal, at), SealVerdict::BitRot { .. }));
        bad[510] = 0; // both bytes zero: a lost sector, or a flip had it held one bit
        assert_eq!(judge(&bad, &seal, at), SealVerdict::CrashDamage);
        let mut one_bit = file.clone();
        one_bit[510] = 0;
        let mut sealer = BatchSealer::new(510);
        sealer.absorb(&one_bit[510..515]);
        let mut resealed = one_bit[..515].to_vec();
        sealer.seal(&mut resealed);
        let seal = seal_at(&resealed, at);
        resealed[511] = 0;
        assert_eq!(
            judge(&resealed, &seal, at),
            SealVerdict::Ambiguous {
                portion_offset: 510
            }
        );
    }

    #[test]
    fn a_large_batch_counts_its_portions() {
        let mut sealer = BatchSealer::new(0);
        sealer.absorb(&[1u8; 1024]);
        assert_eq!(sealer.portion_count(), 2);
        sealer.absorb(&[1u8; 1]);
        assert_eq!(sealer.portion_count(), 3);
        assert!(seal_portions_max(64) >= 1);
    }
}
