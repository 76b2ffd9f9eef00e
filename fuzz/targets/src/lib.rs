//! The bodies of the fuzz targets, one function per decoder (`targets::<name>::run`), and the
//! helpers they share (re-sealing fuzzer bytes with valid checksums).
//!
//! This crate is a member of the main workspace and builds on the stable toolchain; the
//! libFuzzer binaries in `fuzz/fuzz_targets/` (the `ringkv-fuzz` crate, outside the workspace)
//! are one-line wrappers around these functions, and `tests/corpus_replay.rs` feeds every file of
//! `fuzz/corpus/<target>/` to the same function, so CI replays the corpora without nightly.
//!
//! A checksum in front of a decoder is a wall a coverage-guided fuzzer rarely climbs, so every
//! on-disk target runs each input twice: once as raw bytes (the checksums must reject almost
//! everything, and nothing may panic), and once re-sealed here with correct checksums so that
//! the decoder *behind* the checksum (entry parsing, LZ4, manifest body) sees arbitrary bytes.
//! The layouts below copy the format comments in `lsm/src/frame.rs`, `lsm/src/table.rs` and
//! `lsm/src/manifest.rs`; if a format changes, change them here too (a round trip in each
//! target fails loudly if they drift).

/// Little-endian u32, as `lsm::bytes_io` writes it.
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Little-endian u64, as `lsm::bytes_io` writes it.
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// One WAL / value-log frame:
/// `header_crc u32 | payload_len u32 | seq u64 | payload_crc u32 | payload`.
pub fn lsm_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let mut header = Vec::with_capacity(16);
    put_u32(
        &mut header,
        u32::try_from(payload.len()).unwrap_or(u32::MAX),
    );
    put_u64(&mut header, seq);
    put_u32(&mut header, crc32fast::hash(payload));
    put_u32(out, crc32fast::hash(&header));
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// A sealed SSTable block around arbitrary `body` bytes (`body` starts with the compression
/// byte): `body | crc32(body)`.
pub fn lsm_block(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    let sum = crc32fast::hash(&out);
    put_u32(&mut out, sum);
    out
}

/// The manifest's magic number ("ringkvMF").
pub const MANIFEST_MAGIC: u64 = 0x7269_6e67_6b76_4d46;

/// A manifest around arbitrary `body` bytes:
/// `magic u64 | format_version u32 (1) | body_len u32 | body | crc32(everything before)`.
pub fn lsm_manifest(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 20);
    put_u64(&mut out, MANIFEST_MAGIC);
    put_u32(&mut out, 1);
    put_u32(&mut out, u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(body);
    let sum = crc32fast::hash(&out);
    put_u32(&mut out, sum);
    out
}

/// Splits `data` into chunks whose lengths are read from the data itself (one byte each), so
/// the fuzzer controls record boundaries.
pub fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        data = tail;
    }
    out
}

/// One module per fuzz target; each has `pub fn run(data: &[u8])`, which panics on a finding.
pub mod targets {
    pub mod lsm_recovery;
    pub mod manifest;
    pub mod peer_frame;
    pub mod peer_handshake;
    pub mod peer_message;
    pub mod record;
    pub mod resp_reply;
    pub mod resp_request;
    pub mod sstable_block;
    pub mod wal_record;
}

/// A target's body: one input, a panic on a finding.
pub type TargetFn = fn(&[u8]);

/// Every target by its name (the name of its `fuzz/fuzz_targets/` file and its corpus directory).
pub const TARGETS: [(&str, TargetFn); 10] = [
    ("lsm_recovery", targets::lsm_recovery::run),
    ("manifest", targets::manifest::run),
    ("peer_frame", targets::peer_frame::run),
    ("peer_handshake", targets::peer_handshake::run),
    ("peer_message", targets::peer_message::run),
    ("record", targets::record::run),
    ("resp_reply", targets::resp_reply::run),
    ("resp_request", targets::resp_request::run),
    ("sstable_block", targets::sstable_block::run),
    ("wal_record", targets::wal_record::run),
];
