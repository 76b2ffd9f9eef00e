//! Entry points into the on-disk decoders, for fuzz-style tests and tools. Each takes arbitrary
//! bytes and returns a summary or an error; none may panic, allocate without bound or return data
//! that was not encoded.

use crate::block::DataBlock;
use crate::bytes_io::Cursor;
use crate::config::LsmConfig;
use crate::entry::decode_keyed;
use crate::frame::scan_wal;
use crate::table::DecodeLimits;

fn limits(config: &LsmConfig) -> DecodeLimits {
    DecodeLimits {
        key_bytes_max: config.key_bytes_max,
        value_bytes_max: config.value_bytes_max,
        block_bytes_max: config.block_bytes_max(),
    }
}

/// The `(sequence, key)` of each valid WAL record, and the length of the valid prefix.
pub type WalSummary = (Vec<(u64, Vec<u8>)>, usize);

/// Decodes a (format 3) WAL file as recovery does: returns the `(sequence, key)` of each valid
/// record (sync markers and batch seals left out) and the length of the kept prefix (a torn or
/// holey unsynced tail is cut), or an error for a bad frame in the synced part (below a sync
/// marker's claim, or bit rot a batch seal exposes) or a record that does not decode.
pub fn wal_records(bytes: &[u8], config: &LsmConfig) -> Result<WalSummary, String> {
    let payload_max = config.key_bytes_max + config.value_bytes_max + 64;
    let scan = scan_wal(bytes, payload_max, true)?;
    let mut out = Vec::with_capacity(scan.frames.len());
    for (_, frame) in &scan.frames {
        let mut c = Cursor::new(frame.payload);
        let (key, _) = decode_keyed(&mut c, config.key_bytes_max, config.value_bytes_max)?;
        out.push((frame.seq, key.to_vec()));
    }
    Ok((out, scan.valid_len))
}

/// Decodes one sealed SSTable data block; returns its keys in order.
pub fn table_block_keys(bytes: &[u8], config: &LsmConfig) -> Result<Vec<Vec<u8>>, String> {
    Ok(DataBlock::decode(bytes, &limits(config))?
        .iter()
        .map(|(k, _)| k.to_vec())
        .collect())
}

/// Decodes a manifest; returns the table count.
pub fn manifest_tables(bytes: &[u8], config: &LsmConfig) -> Result<usize, String> {
    Ok(crate::manifest::decode(bytes, config.key_bytes_max)?
        .levels
        .iter()
        .map(Vec::len)
        .sum())
}

/// Encodes a WAL holding `records` (sequence, key, inline value), as the engine writes them: the
/// seed input of the fuzz tests.
pub fn encode_wal(records: &[(u64, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (seq, key, value) in records {
        let mut payload = Vec::new();
        crate::entry::encode_keyed(
            &mut payload,
            key,
            &crate::entry::Entry::Inline(bytes::Bytes::copy_from_slice(value)),
        );
        crate::frame::encode_frame(&mut out, *seq, &payload);
    }
    out
}

/// Encodes one sealed data block of inline `(key, value)` pairs (keys in increasing order), as
/// tables store them: the seed input of the fuzz tests.
pub fn encode_table_block(entries: &[(&[u8], &[u8])], compress: bool) -> Vec<u8> {
    let mut raw = Vec::new();
    for (key, value) in entries {
        crate::entry::encode_keyed(
            &mut raw,
            key,
            &crate::entry::Entry::Inline(bytes::Bytes::copy_from_slice(value)),
        );
    }
    crate::table::seal_block(&raw, compress)
}
