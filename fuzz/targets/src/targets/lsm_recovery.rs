//! Whole-store recovery (`Lsm::open`) over a damaged directory: every decoder that reads the
//! disk at start-up and on reads (manifest, WAL, value log, table footer / index / bloom filter /
//! blocks), including the ones not exposed in `ringkv_lsm::decode`.
//!
//! A small valid store (tables on two levels, a value log, a WAL tail) is built once on the
//! simulated disk; each input damages a copy of it (bit flips, truncation, appended bytes, a whole
//! file replaced, or a manifest body re-sealed with a valid checksum), then opens it and reads
//! every key and a full scan. Checks:
//! - `Lsm::open`, `get` and `scan` never panic (`open` ends with `check_invariants`, whose
//!   assertions count as panics: damaged input must be an error, never an assertion failure);
//! - when only bit flips, truncation or appended bytes were applied (no checksum forged by the
//!   target), every value read is one that was written for that key (never invented data).
use arbitrary::{Arbitrary, Unstructured};
use ringkv_lsm::fs::{FileSystem, SimFs};
use ringkv_lsm::{Lsm, LsmConfig};
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
enum Damage {
    FlipBit { file: u8, bit: u32 },
    Truncate { file: u8, keep: u32 },
    Append { file: u8, bytes: Vec<u8> },
    Replace { file: u8, bytes: Vec<u8> },
    ManifestBody { bytes: Vec<u8> },
}

struct Base {
    fs: SimFs,
    config: LsmConfig,
    files: Vec<String>,
    /// Every value ever written per key.
    written: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let config = LsmConfig::tiny_for_tests();
        let mut lsm = Lsm::open(SimFs::seeded(11), config.clone()).expect("open a new store");
        let mut written: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        let mut put = |lsm: &mut Lsm<SimFs>, key: Vec<u8>, value: Vec<u8>| {
            lsm.put(key.clone().into(), value.clone().into())
                .expect("put");
            written.entry(key).or_default().push(value);
        };
        for round in 0..3u8 {
            for i in 0..40u32 {
                // Short values stay inline, long ones go to the value log (threshold 48 bytes).
                let len = if i % 3 == 0 { 100 } else { 10 };
                put(
                    &mut lsm,
                    format!("key{i:03}").into_bytes(),
                    vec![b'a' + round; len],
                );
            }
            lsm.flush().expect("flush");
            while !matches!(
                lsm.compact_step(0, 1 << 20),
                Ok(ringkv_lsm::CompactionProgress::Idle) | Err(_)
            ) {}
        }
        for i in 0..10u32 {
            put(&mut lsm, format!("tail{i}").into_bytes(), vec![b'z'; 20]);
        }
        lsm.sync().expect("sync");
        let mut fs = lsm.into_fs();
        let mut files = fs.list().expect("list");
        files.sort();
        Base {
            fs,
            config,
            files,
            written,
        }
    })
}

fn file(b: &Base, i: u8) -> &str {
    &b.files[usize::from(i) % b.files.len()]
}

fn replace(fs: &mut SimFs, name: &str, bytes: &[u8]) {
    let _ = fs.truncate(name, 0);
    let _ = fs.append(name, bytes);
    let _ = fs.fsync(name);
}

/// The target body: `data` is decoded into the damage list as libFuzzer's typed input
/// would be (`arbitrary_take_rest`), then applied to a copy of the base store.
pub fn run(data: &[u8]) {
    let Ok(damage) = <Vec<Damage>>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let b = base();
    let mut fs = b.fs.clone();
    let mut forged = false;
    for d in damage.iter().take(4) {
        match d {
            Damage::FlipBit { file: f, bit } => {
                let name = file(b, *f);
                let len = fs.len(name).unwrap_or(0);
                if len > 0 {
                    fs.flip_bit(name, u64::from(*bit) % (len * 8));
                }
            }
            Damage::Truncate { file: f, keep } => {
                let name = file(b, *f);
                let len = fs.len(name).unwrap_or(0);
                let _ = fs.truncate(name, u64::from(*keep) % (len + 1));
                let _ = fs.fsync(name);
            }
            Damage::Append { file: f, bytes } => {
                let name = file(b, *f);
                let _ = fs.append(name, bytes);
                let _ = fs.fsync(name);
            }
            Damage::Replace { file: f, bytes } => {
                forged = true;
                replace(&mut fs, file(b, *f), bytes);
            }
            Damage::ManifestBody { bytes } => {
                forged = true;
                replace(&mut fs, "MANIFEST", &crate::lsm_manifest(bytes));
            }
        }
    }
    let Ok(mut lsm) = Lsm::open(fs, b.config.clone()) else {
        return;
    };
    for (key, values) in &b.written {
        if let Ok(Some(got)) = lsm.get(key) {
            assert!(
                forged || values.iter().any(|v| v[..] == got[..]),
                "key {:?} read a value never written: {:?}",
                String::from_utf8_lossy(key),
                got
            );
        }
    }
    if let Ok(pairs) = lsm.scan(b"", None, 1000) {
        for (key, value) in pairs {
            if let Some(values) = b.written.get(&key[..]) {
                assert!(
                    forged || values.iter().any(|v| v[..] == value[..]),
                    "scan invented a value"
                );
            } else {
                assert!(forged, "scan invented key {:?}", key);
            }
        }
    }
}
