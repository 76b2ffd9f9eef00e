//! The manifest decoder (`ringkv_lsm::decode::manifest_tables`).
//!
//! Checks, on every input: never panics and never allocates without bound, both on raw bytes
//! and on the bytes wrapped as a manifest body with the right magic, version, length and
//! checksum (so the body parser is reached). No round trip: the manifest encoder is
//! `pub(crate)` (see README: "What would need exposing").
use ringkv_lsm::decode::manifest_tables;
use ringkv_lsm::LsmConfig;
use std::sync::OnceLock;

fn config() -> &'static LsmConfig {
    static CONFIG: OnceLock<LsmConfig> = OnceLock::new();
    CONFIG.get_or_init(LsmConfig::tiny_for_tests)
}

/// The target body (one input; panics on a finding).
pub fn run(data: &[u8]) {
    let _ = manifest_tables(data, config());
    let wrapped = crate::lsm_manifest(data);
    if let Ok(tables) = manifest_tables(&wrapped, config()) {
        // Each table takes at least 32 body bytes: a count beyond that was invented.
        assert!(
            tables <= data.len() / 32,
            "{tables} tables from {} bytes",
            data.len()
        );
    }
}
