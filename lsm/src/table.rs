//! Immutable sorted tables (SSTables). The format is described in `lsm/FORMAT.md`.
//!
//! A table is written once by [`TableBuilder`] (data blocks appended as they fill, then the index,
//! the bloom filter and the footer, then an fsync) and read through [`TableReader`] (footer, index
//! and filter loaded once and cached; data blocks read on demand, verified and cached).

use crate::block::DataBlock;
use crate::bloom;
use crate::bytes_io::{crc, Cursor, PutBytes};
use crate::entry::{encode_keyed, Entry};
use crate::error::LsmError;
use crate::fs::FileSystem;
use bytes::Bytes;
use std::sync::Arc;

/// Identifies the format; the last 8 bytes of every table.
pub(crate) const TABLE_MAGIC: u64 = 0x7269_6e67_6b76_5354; // "ringkvST"
/// Bumped on any incompatible change of the table format. Version 2: an index key is a
/// separator between two blocks, no longer always the block's last key (version 1, still read).
pub(crate) const TABLE_FORMAT_VERSION: u32 = 2;
/// The oldest table format this engine reads.
const TABLE_FORMAT_VERSION_MIN: u32 = 1;
/// Bytes of the fixed-size footer.
pub(crate) const FOOTER_BYTES: usize = 48;

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_LZ4: u8 = 1;

/// Limits that decoding trusts nothing beyond.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeLimits {
    pub(crate) key_bytes_max: usize,
    pub(crate) value_bytes_max: usize,
    /// Largest uncompressed block (or index, or filter) accepted.
    pub(crate) block_bytes_max: usize,
}

/// Generous limits for unit tests of decoding.
#[cfg(test)]
pub(crate) const TEST_LIMITS: DecodeLimits = DecodeLimits {
    key_bytes_max: 1024,
    value_bytes_max: 1 << 20,
    block_bytes_max: 1 << 22,
};

/// A decoded data block, shared by the block cache and its readers.
pub(crate) type Block = Arc<DataBlock>;

/// The name of table `id`'s file.
pub(crate) fn table_file_name(id: u64) -> String {
    format!("{id:06}.sst")
}

/// Seals a block body: `compression u8 | body | crc32(compression | body)`, compressing with LZ4
/// when that saves space.
pub(crate) fn seal_block(raw: &[u8], compress: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / 2 + 16);
    let compressed = if compress {
        let c = lz4_flex::block::compress(raw);
        (c.len() + 4 < raw.len()).then_some(c)
    } else {
        None
    };
    match compressed {
        Some(c) => {
            out.put_u8(COMPRESSION_LZ4);
            out.put_u32(u32::try_from(raw.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(&c);
        }
        None => {
            out.put_u8(COMPRESSION_NONE);
            out.extend_from_slice(raw);
        }
    }
    let sum = crc(&out);
    out.put_u32(sum);
    out
}

/// Verifies and decompresses a sealed block. Never panics on any input.
pub(crate) fn unseal_block(sealed: &[u8], limits: &DecodeLimits) -> Result<Vec<u8>, String> {
    if sealed.len() < 5 {
        return Err(format!("block of {} bytes is too short", sealed.len()));
    }
    let (body, sum) = sealed.split_at(sealed.len() - 4);
    let mut s = Cursor::new(sum);
    if crc(body) != s.u32()? {
        return Err("block checksum mismatch".into());
    }
    let mut c = Cursor::new(body);
    match c.u8()? {
        COMPRESSION_NONE => Ok(body[1..].to_vec()),
        COMPRESSION_LZ4 => {
            let raw_len = c.u32()? as usize;
            if raw_len > limits.block_bytes_max {
                return Err(format!("block claims {raw_len} uncompressed bytes"));
            }
            lz4_flex::block::decompress(&body[5..], raw_len)
                .map_err(|e| format!("lz4: {e}"))
                .and_then(|raw| {
                    if raw.len() == raw_len {
                        Ok(raw)
                    } else {
                        Err("lz4 length mismatch".into())
                    }
                })
        }
        other => Err(format!("unknown compression {other}")),
    }
}

/// What the manifest records about a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub(crate) id: u64,
    pub(crate) smallest: Bytes,
    pub(crate) largest: Bytes,
    pub(crate) size_bytes: u64,
    pub(crate) entry_count: u64,
}

impl TableMeta {
    pub(crate) fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
        self.smallest.as_ref() <= largest && self.largest.as_ref() >= smallest
    }
}

/// Writes one table, appending each data block as it fills.
#[derive(Debug)]
pub(crate) struct TableBuilder {
    id: u64,
    name: String,
    offset: u64,
    block: Vec<u8>,
    block_last_key: Vec<u8>,
    block_bytes_target: usize,
    bloom_bits_per_key: usize,
    compress: bool,
    index: Vec<u8>,
    index_count: u32,
    /// The place (offset, sealed length) of the last finished block, whose index entry waits
    /// for the next key: its index key is then the shortest key between the two blocks.
    unindexed_block: Option<(u64, u32)>,
    separator: Vec<u8>,
    /// [`TABLE_FORMAT_VERSION`]; 1 only in tests that check old tables are still read.
    format_version: u32,
    /// The caller fsyncs the finished file itself (a flush job, away from the request path).
    fsync_deferred: bool,
    hashes: Vec<u64>,
    smallest: Option<Bytes>,
    largest: Vec<u8>,
    entry_count: u64,
}

impl TableBuilder {
    /// Creates the file of table `id`.
    pub(crate) fn create<F: FileSystem>(
        fs: &mut F,
        id: u64,
        block_bytes_target: usize,
        bloom_bits_per_key: usize,
        compress: bool,
    ) -> Result<Self, LsmError> {
        let name = table_file_name(id);
        fs.create(&name)?;
        Ok(TableBuilder {
            id,
            name,
            offset: 0,
            block: Vec::new(),
            block_last_key: Vec::new(),
            block_bytes_target,
            bloom_bits_per_key,
            compress,
            index: Vec::new(),
            index_count: 0,
            unindexed_block: None,
            separator: Vec::new(),
            format_version: TABLE_FORMAT_VERSION,
            fsync_deferred: false,
            hashes: Vec::new(),
            smallest: None,
            largest: Vec::new(),
            entry_count: 0,
        })
    }

    /// [`Self::finish`] leaves the fsync to the caller.
    pub(crate) fn defer_fsync(&mut self) {
        self.fsync_deferred = true;
    }

    /// Adds the next entry; keys must arrive in strictly increasing order.
    pub(crate) fn add<F: FileSystem>(
        &mut self,
        fs: &mut F,
        key: &[u8],
        entry: &Entry,
    ) -> Result<(), LsmError> {
        debug_assert!(self.smallest.is_none() || key > self.largest.as_slice());
        if self.smallest.is_none() {
            self.smallest = Some(Bytes::copy_from_slice(key));
        }
        if let Some((offset, len)) = self.unindexed_block.take() {
            if self.format_version == 1 {
                self.separator.clone_from(&self.block_last_key);
            } else {
                separator(&self.block_last_key, key, &mut self.separator);
            }
            push_index_entry(&mut self.index, &self.separator, offset, len);
            self.index_count += 1;
        }
        self.largest.clear();
        self.largest.extend_from_slice(key);
        encode_keyed(&mut self.block, key, entry);
        self.block_last_key.clear();
        self.block_last_key.extend_from_slice(key);
        self.hashes.push(bloom::key_hash(key));
        self.entry_count += 1;
        if self.block.len() >= self.block_bytes_target {
            self.finish_block(fs)?;
        }
        Ok(())
    }

    /// Bytes written so far plus the open block.
    pub(crate) fn estimated_size_bytes(&self) -> u64 {
        self.offset + self.block.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entry_count == 0
    }

    fn finish_block<F: FileSystem>(&mut self, fs: &mut F) -> Result<(), LsmError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let sealed = seal_block(&self.block, self.compress);
        fs.append(&self.name, &sealed)?;
        let len = u32::try_from(sealed.len()).unwrap_or(u32::MAX);
        debug_assert!(
            self.unindexed_block.is_none(),
            "a block is indexed before the next"
        );
        self.unindexed_block = Some((self.offset, len));
        self.offset += sealed.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the index, filter and footer and fsyncs the file (unless [`Self::defer_fsync`]).
    /// The caller fsyncs the directory before relying on the table.
    pub(crate) fn finish<F: FileSystem>(mut self, fs: &mut F) -> Result<TableMeta, LsmError> {
        self.finish_block(fs)?;
        // The last block's index key is its last key: no key follows it in this table.
        if let Some((offset, len)) = self.unindexed_block.take() {
            push_index_entry(&mut self.index, &self.block_last_key, offset, len);
            self.index_count += 1;
        }
        let mut index = Vec::with_capacity(self.index.len() + 4);
        index.put_u32(self.index_count);
        index.extend_from_slice(&self.index);
        let index = seal_block(&index, false);
        let index_offset = self.offset;
        fs.append(&self.name, &index)?;
        self.offset += index.len() as u64;
        let filter = seal_block(&bloom::build(&self.hashes, self.bloom_bits_per_key), false);
        let bloom_offset = self.offset;
        fs.append(&self.name, &filter)?;
        self.offset += filter.len() as u64;
        let mut footer = Vec::with_capacity(FOOTER_BYTES);
        footer.put_u64(index_offset);
        footer.put_u32(u32::try_from(index.len()).unwrap_or(u32::MAX));
        footer.put_u64(bloom_offset);
        footer.put_u32(u32::try_from(filter.len()).unwrap_or(u32::MAX));
        footer.put_u64(self.entry_count);
        footer.put_u32(self.format_version);
        let sum = crc(&footer);
        footer.put_u32(sum);
        footer.put_u64(TABLE_MAGIC);
        fs.append(&self.name, &footer)?;
        self.offset += footer.len() as u64;
        if !self.fsync_deferred {
            fs.fsync(&self.name)?;
        }
        Ok(TableMeta {
            id: self.id,
            smallest: self.smallest.unwrap_or_default(),
            largest: Bytes::from(self.largest),
            size_bytes: self.offset,
            entry_count: self.entry_count,
        })
    }
}

fn push_index_entry(index: &mut Vec<u8>, key: &[u8], offset: u64, len: u32) {
    index.put_slice32(key);
    index.put_u64(offset);
    index.put_u32(len);
}

/// Writes into `out` a short key `s` with `lower <= s < upper` (`lower < upper`): the index key
/// of a block that ends at `lower` when the next one starts at `upper`. A lookup of any key up to
/// `s` goes to the lower block, of any larger key to a later one, as with the full last key; a
/// separator is usually a few bytes past the keys' common prefix, where a last key is a whole
/// key, and at billions of keys the index must stay in memory (issue 15's large data sets).
pub(crate) fn separator(lower: &[u8], upper: &[u8], out: &mut Vec<u8>) {
    debug_assert!(lower < upper);
    out.clear();
    let common = lower.iter().zip(upper).take_while(|(a, b)| a == b).count();
    let (Some(&low), Some(&up)) = (lower.get(common), upper.get(common)) else {
        // `lower` is a prefix of `upper`: nothing shorter lies between them.
        out.extend_from_slice(lower);
        return;
    };
    if low + 1 < up {
        // One byte past the common prefix, raised, is above `lower` and below `upper`.
        out.extend_from_slice(&lower[..common]);
        out.push(low + 1);
        return;
    }
    // The first byte after the difference that can be raised: above `lower`, and still below
    // `upper` because the byte where they differ is `lower`'s.
    match (common + 1..lower.len()).find(|&j| lower[j] < u8::MAX) {
        Some(j) => {
            out.extend_from_slice(&lower[..j]);
            out.push(lower[j] + 1);
        }
        None => out.extend_from_slice(lower),
    }
}

/// A table's block index in memory: every block's index key in one buffer (a heap allocation
/// per key was most of the index memory of a large data set), and where each block lies.
#[derive(Debug, Default)]
pub(crate) struct BlockIndex {
    keys: Vec<u8>,
    /// Where block `i`'s index key ends in `keys`; it starts where block `i - 1`'s ends.
    key_ends: Vec<u32>,
    offsets: Vec<u64>,
    lens: Vec<u32>,
}

impl BlockIndex {
    /// Number of blocks.
    pub(crate) fn len(&self) -> usize {
        self.key_ends.len()
    }

    /// Block `i`'s index key (`i < len`).
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.key_ends[i - 1] as usize
        };
        &self.keys[start..self.key_ends[i] as usize]
    }

    /// The first block whose index key is at least `key`: the only block that may hold it.
    fn first_at_least(&self, key: &[u8]) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if self.key(mid) < key {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    fn memory_bytes(&self) -> usize {
        self.keys.len() + self.len() * 16
    }
}

/// The parts of a table kept in memory (in the index cache): index and bloom filter.
#[derive(Debug)]
pub(crate) struct TableReader {
    pub(crate) name: String,
    /// Version 1 index keys are exactly each block's last key; version 2 ones separators.
    format_version: u32,
    pub(crate) index: BlockIndex,
    pub(crate) filter: Vec<u8>,
}

impl TableReader {
    /// Loads and verifies the footer, index and filter of table `id`.
    pub(crate) fn open<F: FileSystem>(
        fs: &mut F,
        id: u64,
        limits: &DecodeLimits,
    ) -> Result<Self, LsmError> {
        let name = table_file_name(id);
        let len = fs.len(&name)?;
        if len < FOOTER_BYTES as u64 {
            return Err(LsmError::corrupt(&name, "shorter than a footer"));
        }
        let footer = fs.read_at(&name, len - FOOTER_BYTES as u64, FOOTER_BYTES)?;
        let parsed = parse_footer(&footer, len).map_err(|why| LsmError::corrupt(&name, why))?;
        let index_bytes = fs.read_at(&name, parsed.index_offset, parsed.index_len)?;
        let index = parse_index(&index_bytes, len, limits)
            .map_err(|why| LsmError::corrupt(&name, format!("index: {why}")))?;
        let format_version = parsed.format_version;
        let filter_bytes = fs.read_at(&name, parsed.bloom_offset, parsed.bloom_len)?;
        let filter = unseal_block(&filter_bytes, limits)
            .map_err(|why| LsmError::corrupt(&name, format!("bloom filter: {why}")))?;
        Ok(TableReader {
            name,
            format_version,
            index,
            filter,
        })
    }

    /// Bytes this reader holds in memory (its index-cache charge).
    pub(crate) fn charge_bytes(&self) -> usize {
        self.filter.len() + self.index.memory_bytes() + 64
    }

    /// Whether the bloom filter admits `hash`.
    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        bloom::may_contain(&self.filter, hash)
    }

    /// The block that would hold `key`, if any.
    pub(crate) fn block_for(&self, key: &[u8]) -> Option<usize> {
        let i = self.index.first_at_least(key);
        (i < self.index.len()).then_some(i)
    }

    /// Reads and decodes block `i` from disk (the caller caches it).
    pub(crate) fn read_block<F: FileSystem>(
        &self,
        fs: &mut F,
        i: usize,
        limits: &DecodeLimits,
    ) -> Result<Block, LsmError> {
        if i >= self.index.len() {
            return Err(LsmError::corrupt(&self.name, format!("no block {i}")));
        }
        let (offset, len) = (self.index.offsets[i], self.index.lens[i]);
        let sealed = fs.read_at(&self.name, offset, len as usize)?;
        let block = DataBlock::decode(&sealed, limits)
            .map_err(|why| LsmError::corrupt(&self.name, format!("block {i}: {why}")))?;
        self.check_block_bounds(i, &block)
            .map_err(|why| LsmError::corrupt(&self.name, format!("block {i} {why}")))?;
        Ok(Arc::new(block))
    }

    /// A block's keys lie between its index key and the previous block's (so a block read from
    /// the wrong place is caught); in version 1 it ends exactly at its index key.
    fn check_block_bounds(&self, i: usize, block: &DataBlock) -> Result<(), String> {
        let (first, last) = (block.first_key(), block.last_key());
        let key = self.index.key(i);
        let ends_at_key = last == key;
        if last > key || (self.format_version == 1 && !ends_at_key) {
            return Err("does not end at its index key".into());
        }
        if i > 0 && first <= self.index.key(i - 1) {
            return Err("starts at or before the previous block's index key".into());
        }
        Ok(())
    }
}

struct Footer {
    format_version: u32,
    index_offset: u64,
    index_len: usize,
    bloom_offset: u64,
    bloom_len: usize,
}

fn parse_footer(footer: &[u8], file_len: u64) -> Result<Footer, String> {
    let mut c = Cursor::new(footer);
    let index_offset = c.u64()?;
    let index_len = c.u32()? as usize;
    let bloom_offset = c.u64()?;
    let bloom_len = c.u32()? as usize;
    let _entry_count = c.u64()?;
    let version = c.u32()?;
    let at = c.position();
    let sum = c.u32()?;
    let magic = c.u64()?;
    if magic != TABLE_MAGIC {
        return Err("bad magic".into());
    }
    if crc(&footer[..at]) != sum {
        return Err("footer checksum mismatch".into());
    }
    if !(TABLE_FORMAT_VERSION_MIN..=TABLE_FORMAT_VERSION).contains(&version) {
        return Err(format!("unsupported table format version {version}"));
    }
    let body = file_len - FOOTER_BYTES as u64;
    let in_body = |off: u64, len: usize| off.checked_add(len as u64).is_some_and(|e| e <= body);
    if !in_body(index_offset, index_len) || !in_body(bloom_offset, bloom_len) {
        return Err("footer points outside the file".into());
    }
    Ok(Footer {
        format_version: version,
        index_offset,
        index_len,
        bloom_offset,
        bloom_len,
    })
}

fn parse_index(sealed: &[u8], file_len: u64, limits: &DecodeLimits) -> Result<BlockIndex, String> {
    let raw = unseal_block(sealed, limits)?;
    let mut c = Cursor::new(&raw);
    let count = c.u32()? as usize;
    // An entry takes at least 16 bytes: a count beyond that is damage, not a reason to reserve.
    let capacity = count.min(raw.len() / 16 + 1);
    let mut index = BlockIndex {
        keys: Vec::with_capacity(raw.len().saturating_sub(count.saturating_mul(16))),
        key_ends: Vec::with_capacity(capacity),
        offsets: Vec::with_capacity(capacity),
        lens: Vec::with_capacity(capacity),
    };
    for i in 0..count {
        let key = c.slice32(limits.key_bytes_max)?;
        let offset = c.u64()?;
        let len = c.u32()?;
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > file_len)
        {
            return Err("block outside the file".into());
        }
        if i > 0 && index.key(i - 1) >= key {
            return Err("index keys out of order".into());
        }
        index.keys.extend_from_slice(key);
        let end = u32::try_from(index.keys.len()).map_err(|_| "index keys too long")?;
        index.key_ends.push(end);
        index.offsets.push(offset);
        index.lens.push(len);
    }
    if !c.is_empty() {
        return Err("trailing index bytes".into());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    const LIMITS: DecodeLimits = TEST_LIMITS;

    #[test]
    fn write_then_read_every_key() {
        let mut fs = SimFs::seeded(1);
        let mut b = TableBuilder::create(&mut fs, 7, 256, 10, true).expect("create");
        for i in 0..500u32 {
            let key = format!("key{i:05}");
            b.add(
                &mut fs,
                key.as_bytes(),
                &Entry::Inline(Bytes::from(format!("value {i} ").repeat(3))),
            )
            .expect("add");
        }
        let meta = b.finish(&mut fs).expect("finish");
        assert_eq!(meta.entry_count, 500);
        let reader = TableReader::open(&mut fs, 7, &LIMITS).expect("open");
        for i in 0..500u32 {
            let key = format!("key{i:05}");
            assert!(reader.may_contain(bloom::key_hash(key.as_bytes())));
            let block = reader.block_for(key.as_bytes()).expect("block");
            let entries = reader.read_block(&mut fs, block, &LIMITS).expect("read");
            assert!(entries.get(key.as_bytes()).is_some());
        }
        assert_eq!(reader.block_for(b"zzz"), None);
    }

    /// Keys shaped like the benchmark's: a shared prefix, a hashed part, a long fixed tail.
    fn long_key(i: u64) -> Vec<u8> {
        let mut k = format!("user/{:016x}/", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes();
        k.resize(100, b'k');
        k
    }

    fn table_of(fs: &mut SimFs, id: u64, version: u32, keys: &[Vec<u8>]) -> TableReader {
        let mut b = TableBuilder::create(fs, id, 256, 10, true).expect("create");
        b.format_version = version;
        for key in keys {
            b.add(fs, key, &Entry::Inline(Bytes::from_static(b"value")))
                .expect("add");
        }
        b.finish(fs).expect("finish");
        TableReader::open(fs, id, &LIMITS).expect("open")
    }

    /// Every key is found in its block, and a key between two stored keys finds nothing,
    /// whatever block its lookup lands on.
    fn assert_lookups(fs: &mut SimFs, reader: &TableReader, keys: &[Vec<u8>]) {
        for key in keys {
            let i = reader.block_for(key).expect("a block");
            let block = reader.read_block(fs, i, &LIMITS).expect("read");
            assert!(block.iter().any(|(k, _)| k == key.as_slice()));
            let mut between = key.clone();
            between.push(0);
            if let Some(i) = reader.block_for(&between) {
                let block = reader.read_block(fs, i, &LIMITS).expect("read");
                assert!(block.iter().all(|(k, _)| k != between.as_slice()));
            }
        }
    }

    #[test]
    fn a_separator_lies_between_its_keys() {
        let mut cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"abc".to_vec(), b"abd".to_vec()),
            (b"ab".to_vec(), b"abc".to_vec()),
            (b"ab\xff\xff".to_vec(), b"ac".to_vec()),
            (b"ab\xffz".to_vec(), b"ac".to_vec()),
            (b"a".to_vec(), b"z".to_vec()),
            (vec![], b"a".to_vec()),
            (b"b\x00".to_vec(), b"b\x01".to_vec()),
        ];
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            // Short keys over a small alphabet, so prefixes, equal bytes and 0xff all occur.
            let mut key = || -> Vec<u8> {
                let len = next() % 6;
                (0..len)
                    .map(|_| [0u8, 1, 2, 0xfe, 0xff][(next() % 5) as usize])
                    .collect()
            };
            let (a, b) = (key(), key());
            match a.cmp(&b) {
                std::cmp::Ordering::Less => cases.push((a, b)),
                std::cmp::Ordering::Greater => cases.push((b, a)),
                std::cmp::Ordering::Equal => {}
            }
        }
        let mut out = Vec::new();
        for (lower, upper) in &cases {
            separator(lower, upper, &mut out);
            assert!(
                lower.as_slice() <= out.as_slice(),
                "{lower:?} {out:?} {upper:?}"
            );
            assert!(
                out.as_slice() < upper.as_slice(),
                "{lower:?} {out:?} {upper:?}"
            );
            assert!(out.len() <= lower.len().max(1), "{lower:?} {out:?}");
        }
        let (a, b) = (long_key(1), long_key(2));
        separator(a.as_slice().min(&b), a.as_slice().max(&b), &mut out);
        assert!(out.len() < 24, "{} bytes", out.len());
    }

    #[test]
    fn separators_shrink_the_index_and_find_every_key() {
        let mut keys: Vec<Vec<u8>> = (0..2_000).map(long_key).collect();
        keys.sort();
        let mut fs = SimFs::seeded(3);
        let v2 = table_of(&mut fs, 1, 2, &keys);
        let v1 = table_of(&mut fs, 2, 1, &keys);
        assert!(v2.index.len() > 100, "{} blocks", v2.index.len());
        assert_eq!(v1.index.len(), v2.index.len());
        // Every index key of a version-1 table is a whole 100-byte key.
        assert!(
            v2.index.keys.len() * 4 < v1.index.keys.len(),
            "{} vs {}",
            v2.index.keys.len(),
            v1.index.keys.len()
        );
        assert_eq!(
            v2.index.key(v2.index.len() - 1),
            keys.last().expect("keys").as_slice()
        );
        assert_lookups(&mut fs, &v2, &keys);
        assert_lookups(&mut fs, &v1, &keys);
        assert_eq!(v2.block_for(b"zzz"), None);
    }

    #[test]
    fn a_block_outside_its_index_bounds_is_corruption() {
        let keys: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("key{i:05}").into_bytes())
            .collect();
        let mut fs = SimFs::seeded(4);
        let mut reader = table_of(&mut fs, 1, 2, &keys);
        assert!(reader.index.len() > 2);
        reader.read_block(&mut fs, 1, &LIMITS).expect("in place");
        // Block 1 read in place of block 2: its keys are not above block 1's index key.
        reader.index.offsets[2] = reader.index.offsets[1];
        reader.index.lens[2] = reader.index.lens[1];
        let e = reader
            .read_block(&mut fs, 2, &LIMITS)
            .expect_err("misplaced");
        assert!(e.to_string().contains("previous block"), "{e}");
        // Block 2 read in place of block 1: its keys are above block 1's index key.
        let mut reader = table_of(&mut fs, 2, 2, &keys);
        reader.index.offsets[1] = reader.index.offsets[2];
        reader.index.lens[1] = reader.index.lens[2];
        let e = reader
            .read_block(&mut fs, 1, &LIMITS)
            .expect_err("misplaced");
        assert!(
            e.to_string().contains("does not end at its index key"),
            "{e}"
        );
    }
}
