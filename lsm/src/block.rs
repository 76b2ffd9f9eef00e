//! A decoded data block in memory, laid out for point lookups (the on-disk block is unchanged:
//! `lsm/FORMAT.md`).
//!
//! Why this layout and not a `Vec<(Bytes, Entry)>`: a node's GET spent most of its engine cycles
//! in that vector's binary search, each probe a cache miss on a 72-byte element and another on
//! its key's bytes (perf, issue #15). Here a probe reads one `u64` from a dense array: a key's
//! head, its first 7 bytes past the prefix every key of the block shares, big-endian, and then
//! its length past the prefix (capped at 8), so integer order is key order, and equal heads of
//! a key at most 7 bytes past the prefix mean equal keys. The prefix is copied into the block's
//! own header, so a lookup of a key like `key:000000012345` reads no key of the block at all;
//! whole keys are compared only when heads of longer keys tie. Keys stay slices of the block's one
//! decoded buffer, so iteration (scans, compaction) hands them out without a copy.

use crate::bytes_io::Cursor;
use crate::entry::{Entry, EntryRef};
use crate::table::{unseal_block, DecodeLimits};
use bytes::Bytes;
use std::cmp::Ordering;

/// Where one key lies in the block's buffer.
#[derive(Clone, Copy, Debug)]
struct KeySpan {
    start: u32,
    end: u32,
}

/// The most prefix bytes a block keeps in its header. Keys sharing more than this still work;
/// their heads then tie more often and the lookup falls back to comparing whole keys.
const PREFIX_BYTES_MAX: usize = 32;

/// Suffix bytes a head holds; a suffix at most this long is wholly in its head.
const HEAD_SUFFIX_BYTES: usize = 7;

/// A decoded data block: entries in strictly increasing key order, never empty.
#[derive(Debug)]
pub(crate) struct DataBlock {
    /// Bytes every key of the block starts with (what the first and last key share, up to
    /// [`PREFIX_BYTES_MAX`]): `prefix[..prefix_len]`.
    prefix: [u8; PREFIX_BYTES_MAX],
    prefix_len: usize,
    /// Per entry: [`head`] of its key past the prefix.
    heads: Vec<u64>,
    spans: Vec<KeySpan>,
    entries: Vec<Entry>,
    /// The block's decoded bytes; every key is a slice of them.
    raw: Bytes,
}

/// The first [`HEAD_SUFFIX_BYTES`] bytes of `suffix`, zero-padded, big-endian, then its length
/// capped at 8, as one integer. If `head(a) < head(b)` then `a < b`; `a < b` implies
/// `head(a) <= head(b)`; and equal heads whose length byte is at most 7 mean equal suffixes
/// (zero padding alone would not tell `a` from `a\0`: the length byte does).
fn head(suffix: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = suffix.len().min(HEAD_SUFFIX_BYTES);
    bytes[..n].copy_from_slice(&suffix[..n]);
    bytes[7] = suffix.len().min(HEAD_SUFFIX_BYTES + 1) as u8;
    u64::from_be_bytes(bytes)
}

/// Whether `head` holds its whole suffix (so a head tie is a key match).
fn head_is_whole(head: u64) -> bool {
    (head & 0xff) as usize <= HEAD_SUFFIX_BYTES
}

/// The next record of a decoded block, checked: its key, where the key ends in the block, and
/// its entry.
fn next_record<'a>(
    cursor: &mut Cursor<'a>,
    limits: &DecodeLimits,
) -> Result<(&'a [u8], usize, EntryRef<'a>), String> {
    let key = cursor.slice32(limits.key_bytes_max)?;
    let key_end = cursor.position();
    let entry = EntryRef::decode(cursor, limits.value_bytes_max)?;
    Ok((key, key_end, entry))
}

impl DataBlock {
    /// Decodes a sealed data block, checking key order. Never panics on any input; this is the
    /// SSTable block decoder the fuzz tests drive.
    pub(crate) fn decode(sealed: &[u8], limits: &DecodeLimits) -> Result<Self, String> {
        let raw = unseal_block(sealed, limits)?;
        if u32::try_from(raw.len()).is_err() {
            return Err(format!("block of {} bytes", raw.len()));
        }
        // A first pass checks every record and counts them, so the arrays below are allocated
        // once at their size instead of growing (a block miss decodes every entry).
        let mut cursor = Cursor::new(&raw);
        let mut count = 0usize;
        let mut previous: Option<&[u8]> = None;
        while !cursor.is_empty() {
            let (key, _, _) = next_record(&mut cursor, limits)?;
            if previous.is_some_and(|last| last >= key) {
                return Err("block keys out of order".into());
            }
            previous = Some(key);
            count += 1;
        }
        if count == 0 {
            return Err("empty block".into());
        }
        let mut spans = Vec::with_capacity(count);
        let mut entries = Vec::with_capacity(count);
        let mut cursor = Cursor::new(&raw);
        while !cursor.is_empty() {
            let (key, end, entry) = next_record(&mut cursor, limits)?;
            // Offsets within the block, whose length fits a u32 (checked above).
            let span = KeySpan {
                start: u32::try_from(end - key.len()).map_err(|_| "key offset")?,
                end: u32::try_from(end).map_err(|_| "key offset")?,
            };
            spans.push(span);
            entries.push(entry.to_entry());
        }
        let raw = Bytes::from(raw);
        let key_of = |s: &KeySpan| &raw[s.start as usize..s.end as usize];
        let (first, last) = match (spans.first(), spans.last()) {
            (Some(first), Some(last)) => (key_of(first), key_of(last)),
            _ => return Err("empty block".into()),
        };
        // Keys are sorted, so what the first and last share, every key shares.
        let shared = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        let prefix_len = shared.min(PREFIX_BYTES_MAX);
        let mut prefix = [0u8; PREFIX_BYTES_MAX];
        prefix[..prefix_len].copy_from_slice(&first[..prefix_len]);
        let heads = spans
            .iter()
            .map(|s| head(&key_of(s)[prefix_len..]))
            .collect();
        let block = DataBlock {
            prefix,
            prefix_len,
            heads,
            spans,
            entries,
            raw,
        };
        debug_assert!(block.check_invariants().is_ok());
        Ok(block)
    }

    /// Number of entries (at least one).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i`'s key (`i < len`).
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let span = self.spans[i];
        &self.raw[span.start as usize..span.end as usize]
    }

    /// Entry `i`'s key as a slice of the block's buffer, without a copy (`i < len`).
    pub(crate) fn key_bytes(&self, i: usize) -> Bytes {
        let span = self.spans[i];
        self.raw.slice(span.start as usize..span.end as usize)
    }

    /// Entry `i` (`i < len`).
    pub(crate) fn entry(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    /// The first key.
    pub(crate) fn first_key(&self) -> &[u8] {
        self.key(0)
    }

    /// The last key.
    pub(crate) fn last_key(&self) -> &[u8] {
        self.key(self.len() - 1)
    }

    /// Every `(key, entry)` in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> + '_ {
        (0..self.len()).map(|i| (self.key(i), self.entry(i)))
    }

    /// `Ok(i)` if entry `i` has `key`, else `Err(i)` with `i` the first entry whose key is
    /// greater (as `slice::binary_search`).
    pub(crate) fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let prefix = &self.prefix[..self.prefix_len];
        let Some(suffix) = key.strip_prefix(prefix) else {
            // Below or above every key, as the key orders against the shared prefix (a proper
            // prefix of it is below every key).
            let shared = key.len().min(prefix.len());
            return match key[..shared].cmp(&prefix[..shared]) {
                Ordering::Greater => Err(self.len()),
                Ordering::Less | Ordering::Equal => Err(0),
            };
        };
        let wanted = head(suffix);
        let whole = head_is_whole(wanted);
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            let order = match self.heads[mid].cmp(&wanted) {
                Ordering::Equal if whole => Ordering::Equal,
                Ordering::Equal => self.key(mid)[self.prefix_len..].cmp(suffix),
                other => other,
            };
            match order {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// The entry for `key`, if the block holds one.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.search(key).ok().map(|i| self.entry(i))
    }

    /// The first entry whose key is at least `key` (`len` if none).
    pub(crate) fn lower_bound(&self, key: &[u8]) -> usize {
        self.search(key).unwrap_or_else(|i| i)
    }

    /// Bytes this block holds in memory (its block-cache charge): the decoded buffer, the
    /// arrays, inline values' copies and the headers of the block, its `Arc` and its buffer.
    pub(crate) fn memory_bytes(&self) -> usize {
        let inline: usize = (self.entries.iter())
            .map(|e| match e {
                Entry::Inline(v) => v.len(),
                Entry::Pointer(_) | Entry::Tombstone { .. } => 0,
            })
            .sum();
        self.raw.len()
            + self.heads.capacity() * std::mem::size_of::<u64>()
            + self.spans.capacity() * std::mem::size_of::<KeySpan>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + inline
            + std::mem::size_of::<Self>()
            + 64
    }

    /// The structure's own consistency: arrays of one length, keys strictly increasing and
    /// sharing the prefix, heads matching their keys.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let n = self.len();
        if n == 0 || self.heads.len() != n || self.spans.len() != n {
            return Err("arrays of different lengths".into());
        }
        if self.prefix_len > PREFIX_BYTES_MAX {
            return Err("prefix longer than its array".into());
        }
        let prefix = &self.prefix[..self.prefix_len];
        for i in 0..n {
            let key = self.key(i);
            if !key.starts_with(prefix) || self.heads[i] != head(&key[self.prefix_len..]) {
                return Err(format!("entry {i}: prefix or head does not match its key"));
            }
            if i > 0 && (self.key(i - 1) >= key || self.heads[i - 1] > self.heads[i]) {
                return Err(format!("entry {i}: keys or heads out of order"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{encode_keyed, ValuePointer};
    use crate::table::{seal_block, TEST_LIMITS};

    const LIMITS: DecodeLimits = TEST_LIMITS;

    /// The entry stored for key number `i`: all three kinds occur.
    fn entry_for(i: usize) -> Entry {
        match i % 3 {
            0 => Entry::Inline(Bytes::from(format!("value {i}"))),
            1 => Entry::Pointer(ValuePointer {
                segment: i as u64,
                offset: 7 * i as u64,
                frame_len: 100,
            }),
            _ => Entry::Tombstone {
                deleted_at_ms: i as u64,
            },
        }
    }

    /// A sealed block of `keys` in the given order, entry `i` from [`entry_for`].
    fn sealed(keys: &[Vec<u8>], compress: bool) -> Vec<u8> {
        let mut raw = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            encode_keyed(&mut raw, key, &entry_for(i));
        }
        seal_block(&raw, compress)
    }

    fn decoded(keys: &[Vec<u8>]) -> DataBlock {
        let block = DataBlock::decode(&sealed(keys, true), &LIMITS).expect("decode");
        block.check_invariants().expect("invariants");
        block
    }

    /// Checks `block` against the model: sorted distinct `keys`, entry `i` from [`entry_for`],
    /// at every key, just around every key, and at every probe.
    fn assert_matches_model(block: &DataBlock, keys: &[Vec<u8>], probes: &[Vec<u8>]) {
        assert_eq!(block.len(), keys.len());
        let listed: Vec<(Vec<u8>, Entry)> =
            block.iter().map(|(k, e)| (k.to_vec(), e.clone())).collect();
        let model: Vec<(Vec<u8>, Entry)> = (keys.iter().enumerate())
            .map(|(i, k)| (k.clone(), entry_for(i)))
            .collect();
        assert_eq!(listed, model);
        let mut all: Vec<Vec<u8>> = probes.to_vec();
        for key in keys {
            all.push(key.clone());
            let mut above = key.clone();
            above.push(0);
            all.push(above);
            all.push(key[..key.len() / 2].to_vec());
            if let Some((&last, head)) = key.split_last() {
                let mut below = head.to_vec();
                below.push(last.wrapping_sub(1));
                all.push(below);
            }
        }
        for probe in &all {
            let expected = keys.binary_search(probe);
            assert_eq!(block.search(probe), expected, "probe {probe:?}");
            assert_eq!(
                block.get(probe),
                expected.ok().map(entry_for).as_ref(),
                "probe {probe:?}"
            );
            assert_eq!(
                block.lower_bound(probe),
                keys.partition_point(|k| k < probe)
            );
        }
    }

    #[test]
    fn finds_every_key_and_misses_absent_ones() {
        let keys: Vec<Vec<u8>> = (0..200u32)
            .map(|i| format!("key:{:012}", i * 2 + 1000).into_bytes())
            .collect();
        let block = decoded(&keys);
        assert_eq!(block.prefix_len, "key:000000001".len());
        assert_eq!(block.first_key(), keys[0].as_slice());
        assert_eq!(block.last_key(), keys[199].as_slice());
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(block.search(key), Ok(i));
            assert_eq!(block.key_bytes(i).as_ref(), key.as_slice());
        }
        let absent = |s: &str| block.search(s.as_bytes());
        assert_eq!(absent("key:000000000999"), Err(0), "before");
        assert_eq!(absent("a"), Err(0), "before the prefix");
        assert_eq!(absent("key:0"), Err(0), "a prefix of the prefix");
        assert_eq!(absent(""), Err(0), "empty");
        assert_eq!(absent("key:000000001001"), Err(1), "between");
        assert_eq!(absent("key:0000000010010"), Err(1), "longer, between");
        assert_eq!(absent("key:000000001399"), Err(200), "after");
        assert_eq!(absent("key:1"), Err(200), "after the prefix");
        assert_eq!(absent("z"), Err(200), "after everything");
        assert_matches_model(&block, &keys, &[]);
    }

    #[test]
    fn keys_equal_to_the_prefix_and_zero_padding_tie_correctly() {
        // "ab" is the shared prefix and itself a key (an empty suffix); "ab\0" has the same
        // zero-padded head as "ab", as "abc" has as "abc\0\0"; heads tie past 8 bytes.
        let mut keys: Vec<Vec<u8>> = [
            &b"ab"[..],
            b"ab\0",
            b"ab\0\0",
            b"abc",
            b"abc\0\0",
            b"abc\0\0\x01",
            b"abcdefghij",
            b"abcdefghijk",
            b"abcdefghik",
            b"ab\xff\xff\xff\xff\xff\xff\xff\xff",
            b"ab\xff\xff\xff\xff\xff\xff\xff\xff\0",
        ]
        .iter()
        .map(|k| k.to_vec())
        .collect();
        keys.sort();
        let block = decoded(&keys);
        assert_eq!(block.prefix_len, 2);
        assert_matches_model(&block, &keys, &[b"a".to_vec(), b"b".to_vec(), Vec::new()]);
        // One key: the whole key is the prefix.
        let one = decoded(&[b"only".to_vec()]);
        assert_eq!(one.prefix_len, 4);
        assert_matches_model(&one, &[b"only".to_vec()], &[b"on".to_vec(), b"p".to_vec()]);
        // The empty key.
        let keys = vec![Vec::new(), b"\0".to_vec(), b"x".to_vec()];
        let block = decoded(&keys);
        assert_eq!(block.prefix_len, 0);
        assert_matches_model(&block, &keys, &[]);
    }

    #[test]
    fn heads_order_as_their_suffixes_and_whole_heads_tie_only_on_equal_suffixes() {
        // Every suffix of up to 9 bytes over {0, 1, 0xff}: padding, lengths 7 and 8 and ties.
        let mut suffixes: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..9 {
            let longer: Vec<Vec<u8>> = (last.iter())
                .flat_map(|s| [0u8, 1, 0xff].map(|b| [s.as_slice(), &[b]].concat()))
                .collect();
            suffixes.extend(longer.iter().cloned());
            last = longer;
        }
        suffixes.sort();
        for pair in suffixes.windows(2) {
            let (a, b) = (head(&pair[0]), head(&pair[1]));
            assert!(a <= b, "{:?} {:?}", pair[0], pair[1]);
            assert!(a < b || !head_is_whole(a), "{:?} {:?}", pair[0], pair[1]);
        }
        assert!(head_is_whole(head(b"1234567")));
        assert!(!head_is_whole(head(b"12345678")));
    }

    #[test]
    fn a_prefix_longer_than_the_header_keeps_lookups_exact() {
        let stem = "s".repeat(PREFIX_BYTES_MAX + 10);
        let keys: Vec<Vec<u8>> = (0..50u32)
            .map(|i| format!("{stem}{i:04}").into_bytes())
            .collect();
        let block = decoded(&keys);
        assert_eq!(block.prefix_len, PREFIX_BYTES_MAX);
        let probes = [stem.as_bytes().to_vec(), b"s".to_vec(), b"t".to_vec()];
        assert_matches_model(&block, &keys, &probes);
    }

    #[test]
    fn matches_a_sorted_vec_model_on_random_keys() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let long = [b'p'; PREFIX_BYTES_MAX + 5];
        let prefixes: [&[u8]; 5] = [b"", b"key:0000", b"user/abcdefgh/", b"\xff\xff", &long];
        for round in 0..400 {
            let prefix = prefixes[round % prefixes.len()];
            let mut keys: Vec<Vec<u8>> = (0..1 + next() % 120)
                .map(|_| {
                    // Short suffixes over a small alphabet (ties, zero bytes, prefixes of one
                    // another) or long ones (heads that tie past their 8 bytes).
                    let len = if next() % 4 == 0 {
                        8 + next() % 12
                    } else {
                        next() % 10
                    };
                    let mut key = prefix.to_vec();
                    key.extend((0..len).map(|_| [0u8, 1, b'a', 0xfe, 0xff][(next() % 5) as usize]));
                    key
                })
                .collect();
            keys.sort();
            keys.dedup();
            let block = decoded(&keys);
            assert!(block.prefix_len >= prefix.len().min(PREFIX_BYTES_MAX));
            let probes: Vec<Vec<u8>> = (0..60)
                .map(|_| {
                    let mut probe = prefix[..(next() as usize % (prefix.len() + 1))].to_vec();
                    probe.extend(
                        (0..next() % 12).map(|_| [0u8, 1, b'a', 0xff][(next() % 4) as usize]),
                    );
                    probe
                })
                .collect();
            assert_matches_model(&block, &keys, &probes);
        }
    }

    #[test]
    fn unsorted_duplicate_empty_and_damaged_blocks_are_rejected() {
        let key = |s: &str| s.as_bytes().to_vec();
        let unsorted = sealed(&[key("a"), key("c"), key("b")], false);
        let e = DataBlock::decode(&unsorted, &LIMITS).expect_err("unsorted");
        assert!(e.contains("out of order"), "{e}");
        let duplicate = sealed(&[key("a"), key("b"), key("b")], true);
        let e = DataBlock::decode(&duplicate, &LIMITS).expect_err("duplicate");
        assert!(e.contains("out of order"), "{e}");
        let e = DataBlock::decode(&seal_block(&[], false), &LIMITS).expect_err("empty");
        assert!(e.contains("empty"), "{e}");
        let long = DecodeLimits {
            key_bytes_max: 3,
            ..LIMITS
        };
        DataBlock::decode(&sealed(&[key("abcd")], false), &long).expect_err("key too long");
        // Every truncation and every flipped bit is an error, never a panic.
        let good = sealed(&[key("key:1"), key("key:2"), key("key:3")], false);
        DataBlock::decode(&good, &LIMITS).expect("good");
        for len in 0..good.len() {
            assert!(DataBlock::decode(&good[..len], &LIMITS).is_err(), "{len}");
        }
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(DataBlock::decode(&bad, &LIMITS).is_err(), "bit {bit}");
        }
        // A record cut short inside an intact seal: the length says more than is there.
        let mut raw = Vec::new();
        encode_keyed(&mut raw, b"a", &entry_for(0));
        raw.extend_from_slice(&[9, 0, 0, 0, b'b']);
        DataBlock::decode(&seal_block(&raw, false), &LIMITS).expect_err("cut record");
    }

    #[test]
    fn the_charge_counts_what_the_block_holds() {
        let keys: Vec<Vec<u8>> = (0..100u32)
            .map(|i| format!("key:{i:012}").into_bytes())
            .collect();
        let block = decoded(&keys);
        let entries = keys.len() * (8 + 8 + std::mem::size_of::<Entry>());
        assert!(block.memory_bytes() >= block.raw.len() + entries);
        assert!(block.memory_bytes() < 2 * (block.raw.len() + entries));
        // Arrays sized once: no growth slack.
        assert_eq!(block.entries.capacity(), keys.len());
        assert_eq!(block.spans.capacity(), keys.len());
        assert_eq!(block.heads.capacity(), keys.len());
    }
}
