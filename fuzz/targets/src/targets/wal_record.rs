//! The LSM write-ahead-log reader (`ringkv_lsm::decode::wal_records`, the code recovery runs).
//!
//! Checks, on every input:
//! - raw bytes: never panics; the valid prefix lies within the input; recovering the truncated
//!   prefix again gives the same records and the same length (truncation is idempotent);
//! - the same bytes cut into frames with valid checksums: the record decoder behind the
//!   checksums never panics, and every frame it accepts keeps its sequence number, in order;
//! - round trip: records built from the input, encoded as the engine writes them
//!   (`encode_wal`), decode to exactly the same `(sequence, key)` list over the whole file.
use arbitrary::{Arbitrary, Unstructured};
use ringkv_lsm::decode::{encode_wal, wal_records};
use ringkv_lsm::LsmConfig;
use std::sync::OnceLock;

fn config() -> &'static LsmConfig {
    static CONFIG: OnceLock<LsmConfig> = OnceLock::new();
    CONFIG.get_or_init(LsmConfig::tiny_for_tests)
}

fn check_raw(bytes: &[u8]) {
    if let Ok((records, valid_len)) = wal_records(bytes, config()) {
        assert!(valid_len <= bytes.len(), "valid prefix past the end");
        let again = wal_records(&bytes[..valid_len], config());
        assert_eq!(
            again,
            Ok((records, valid_len)),
            "recovery of the kept prefix differs"
        );
    }
}

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    check_raw(data);

    // Behind the checksums: every chunk becomes one correctly framed record payload.
    let mut framed = Vec::new();
    let payloads = crate::chunks(data);
    for (i, payload) in payloads.iter().enumerate() {
        crate::lsm_frame(&mut framed, i as u64 + 1, payload);
    }
    if let Ok((records, valid_len)) = wal_records(&framed, config()) {
        assert_eq!(valid_len, framed.len(), "a well-framed log was truncated");
        assert_eq!(records.len(), payloads.len());
        for (i, (seq, _)) in records.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "sequence numbers changed");
        }
    }
    check_raw(&framed);

    // Round trip through the engine's own encoder.
    let mut u = Unstructured::new(data);
    let Ok(raw) = <Vec<(u64, Vec<u8>, Vec<u8>)>>::arbitrary(&mut u) else {
        return;
    };
    let records: Vec<(u64, &[u8], &[u8])> = raw
        .iter()
        .filter(|(_, k, v)| {
            k.len() <= config().key_bytes_max && v.len() <= config().value_bytes_max
        })
        .map(|(s, k, v)| (*s, k.as_slice(), v.as_slice()))
        .collect();
    let encoded = encode_wal(&records);
    let expected: Vec<(u64, Vec<u8>)> = records.iter().map(|(s, k, _)| (*s, k.to_vec())).collect();
    assert_eq!(
        wal_records(&encoded, config()),
        Ok((expected, encoded.len()))
    );
}
