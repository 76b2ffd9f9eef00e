//! libFuzzer entry point; the body (and what it checks) is in
//! `targets/src/targets/manifest.rs`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_fuzz_targets::targets::manifest::run(data));
