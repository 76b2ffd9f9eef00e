//! The SSTable data-block decoder (`ringkv_lsm::decode::table_block_keys`: checksum, LZ4,
//! entries, key order).
//!
//! Checks, on every input:
//! - raw bytes: never panics; accepted keys are strictly increasing and within the key limit;
//! - the same bytes re-sealed with a valid checksum (first byte = compression kind, so LZ4
//!   bodies are reached): same properties, no panic in LZ4 or the entry decoder;
//! - round trip: sorted, distinct keys from the input, encoded with `encode_table_block`
//!   (compressed and not), decode to exactly those keys.
use arbitrary::{Arbitrary, Unstructured};
use ringkv_lsm::decode::{encode_table_block, table_block_keys};
use ringkv_lsm::LsmConfig;
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn config() -> &'static LsmConfig {
    static CONFIG: OnceLock<LsmConfig> = OnceLock::new();
    CONFIG.get_or_init(LsmConfig::tiny_for_tests)
}

fn check(bytes: &[u8]) {
    if let Ok(keys) = table_block_keys(bytes, config()) {
        assert!(!keys.is_empty(), "an empty block decoded");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
        assert!(
            keys.iter().all(|k| k.len() <= config().key_bytes_max),
            "key over the limit"
        );
    }
}

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    check(data);
    // Behind the checksum: the fuzzer picks the compression byte and the body.
    if !data.is_empty() {
        check(&crate::lsm_block(data));
    }

    let mut u = Unstructured::new(data);
    let Ok(compress) = bool::arbitrary(&mut u) else {
        return;
    };
    let Ok(pairs) = <BTreeMap<Vec<u8>, Vec<u8>>>::arbitrary(&mut u) else {
        return;
    };
    let entries: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .filter(|(k, v)| k.len() <= config().key_bytes_max && v.len() <= config().value_bytes_max)
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    if entries.is_empty() {
        return;
    }
    let block = encode_table_block(&entries, compress);
    let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.to_vec()).collect();
    assert_eq!(
        table_block_keys(&block, config()),
        Ok(keys),
        "block round trip"
    );
}
