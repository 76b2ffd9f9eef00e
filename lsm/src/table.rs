//! Immutable sorted tables (SSTables). The format is described in `lsm/FORMAT.md`.
//!
//! A table is written once by [`TableBuilder`] (data blocks appended as they fill, then the index,
//! the bloom filter and the footer, then an fsync) and read through [`TableReader`] (footer, index
//! and filter loaded once and cached; data blocks read on demand, verified and cached).

use crate::bloom;
use crate::bytes_io::{crc, Cursor, PutBytes};
use crate::entry::{decode_keyed, encode_keyed, Entry};
use crate::error::LsmError;
use crate::fs::FileSystem;
use bytes::Bytes;
use std::sync::Arc;

/// Identifies the format; the last 8 bytes of every table.
pub(crate) const TABLE_MAGIC: u64 = 0x7269_6e67_6b76_5354; // "ringkvST"
/// Bumped on any incompatible change of the table format.
pub(crate) const TABLE_FORMAT_VERSION: u32 = 1;
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

/// A decoded data block: entries in strictly increasing key order.
pub(crate) type Block = Arc<Vec<(Bytes, Entry)>>;

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

/// Decodes a sealed data block into its entries, checking key order. Never panics on any input;
/// this is the SSTable block decoder the fuzz tests drive.
pub(crate) fn decode_block(
    sealed: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<(Bytes, Entry)>, String> {
    // The keys share the block's one buffer instead of a copy each: a block miss decodes every
    // entry, and an allocation per key was most of a miss's cost (issue #15).
    let raw = Bytes::from(unseal_block(sealed, limits)?);
    let mut cursor = Cursor::new(&raw);
    let mut entries: Vec<(Bytes, Entry)> = Vec::new();
    while !cursor.is_empty() {
        let (key, entry) = decode_keyed(&mut cursor, limits.key_bytes_max, limits.value_bytes_max)?;
        if let Some((last, _)) = entries.last() {
            if last.as_ref() >= key {
                return Err("block keys out of order".into());
            }
        }
        entries.push((raw.slice_ref(key), entry));
    }
    if entries.is_empty() {
        return Err("empty block".into());
    }
    Ok(entries)
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
            hashes: Vec::new(),
            smallest: None,
            largest: Vec::new(),
            entry_count: 0,
        })
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
        self.index.put_slice32(&self.block_last_key);
        self.index.put_u64(self.offset);
        self.index
            .put_u32(u32::try_from(sealed.len()).unwrap_or(u32::MAX));
        self.index_count += 1;
        self.offset += sealed.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the index, filter and footer and fsyncs the file. The caller fsyncs the directory
    /// before relying on the table.
    pub(crate) fn finish<F: FileSystem>(mut self, fs: &mut F) -> Result<TableMeta, LsmError> {
        self.finish_block(fs)?;
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
        footer.put_u32(TABLE_FORMAT_VERSION);
        let sum = crc(&footer);
        footer.put_u32(sum);
        footer.put_u64(TABLE_MAGIC);
        fs.append(&self.name, &footer)?;
        self.offset += footer.len() as u64;
        fs.fsync(&self.name)?;
        Ok(TableMeta {
            id: self.id,
            smallest: self.smallest.unwrap_or_default(),
            largest: Bytes::from(self.largest),
            size_bytes: self.offset,
            entry_count: self.entry_count,
        })
    }
}

/// One entry of a table's block index.
#[derive(Clone, Debug)]
pub(crate) struct IndexEntry {
    pub(crate) last_key: Bytes,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The parts of a table kept in memory (in the index cache): index and bloom filter.
#[derive(Debug)]
pub(crate) struct TableReader {
    pub(crate) name: String,
    pub(crate) index: Vec<IndexEntry>,
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
        let filter_bytes = fs.read_at(&name, parsed.bloom_offset, parsed.bloom_len)?;
        let filter = unseal_block(&filter_bytes, limits)
            .map_err(|why| LsmError::corrupt(&name, format!("bloom filter: {why}")))?;
        Ok(TableReader {
            name,
            index,
            filter,
        })
    }

    /// Bytes this reader holds in memory (its index-cache charge).
    pub(crate) fn charge_bytes(&self) -> usize {
        self.filter.len()
            + self
                .index
                .iter()
                .map(|e| e.last_key.len() + 48)
                .sum::<usize>()
            + 64
    }

    /// Whether the bloom filter admits `hash`.
    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        bloom::may_contain(&self.filter, hash)
    }

    /// The block that would hold `key`, if any.
    pub(crate) fn block_for(&self, key: &[u8]) -> Option<usize> {
        let i = self.index.partition_point(|e| e.last_key.as_ref() < key);
        (i < self.index.len()).then_some(i)
    }

    /// Reads and decodes block `i` from disk (the caller caches it).
    pub(crate) fn read_block<F: FileSystem>(
        &self,
        fs: &mut F,
        i: usize,
        limits: &DecodeLimits,
    ) -> Result<Block, LsmError> {
        let e = self
            .index
            .get(i)
            .ok_or_else(|| LsmError::corrupt(&self.name, format!("no block {i}")))?;
        let sealed = fs.read_at(&self.name, e.offset, e.len as usize)?;
        let entries = decode_block(&sealed, limits)
            .map_err(|why| LsmError::corrupt(&self.name, format!("block {i}: {why}")))?;
        if entries.last().map(|(k, _)| k) != Some(&e.last_key) {
            return Err(LsmError::corrupt(
                &self.name,
                format!("block {i} does not end at its index key"),
            ));
        }
        Ok(Arc::new(entries))
    }
}

struct Footer {
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
    if version != TABLE_FORMAT_VERSION {
        return Err(format!("unsupported table format version {version}"));
    }
    let body = file_len - FOOTER_BYTES as u64;
    let in_body = |off: u64, len: usize| off.checked_add(len as u64).is_some_and(|e| e <= body);
    if !in_body(index_offset, index_len) || !in_body(bloom_offset, bloom_len) {
        return Err("footer points outside the file".into());
    }
    Ok(Footer {
        index_offset,
        index_len,
        bloom_offset,
        bloom_len,
    })
}

fn parse_index(
    sealed: &[u8],
    file_len: u64,
    limits: &DecodeLimits,
) -> Result<Vec<IndexEntry>, String> {
    let raw = unseal_block(sealed, limits)?;
    let mut c = Cursor::new(&raw);
    let count = c.u32()? as usize;
    let mut index: Vec<IndexEntry> = Vec::with_capacity(count.min(raw.len() / 16 + 1));
    for _ in 0..count {
        let last_key = Bytes::copy_from_slice(c.slice32(limits.key_bytes_max)?);
        let offset = c.u64()?;
        let len = c.u32()?;
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > file_len)
        {
            return Err("block outside the file".into());
        }
        if index.last().is_some_and(|p| p.last_key >= last_key) {
            return Err("index keys out of order".into());
        }
        index.push(IndexEntry {
            last_key,
            offset,
            len,
        });
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

    const LIMITS: DecodeLimits = DecodeLimits {
        key_bytes_max: 1024,
        value_bytes_max: 1 << 20,
        block_bytes_max: 1 << 22,
    };

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
            let found = entries.binary_search_by(|(k, _)| k.as_ref().cmp(key.as_bytes()));
            assert!(found.is_ok());
        }
        assert_eq!(reader.block_for(b"zzz"), None);
    }
}
