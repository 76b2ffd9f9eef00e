//! Behaviour of the engine without crashes: model-checked reads and scans across flushes and
//! compactions, tombstone grace, stalls, poisoning, corruption reports, limits, the `Storage`
//! adapter and the real-file backend.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_lsm::fs::{CrashMode, FileSystem, SimFs, StdFs};
use ringkv_lsm::{
    CompactionProgress, GcOutcome, Lsm, LsmConfig, LsmError, LsmStorage, WriteOutcome,
};
use std::collections::BTreeMap;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn compact_all<F: FileSystem>(lsm: &mut Lsm<F>, now_ms: u64) {
    for _ in 0..100_000 {
        if lsm.compact_step(now_ms, 4096).expect("compact") == CompactionProgress::Idle {
            return;
        }
    }
    panic!("compaction never went idle");
}

fn put_retry<F: FileSystem>(lsm: &mut Lsm<F>, key: Bytes, value: Bytes) {
    for _ in 0..100_000 {
        match lsm.put(key.clone(), value.clone()).expect("put") {
            WriteOutcome::Written { .. } => return,
            WriteOutcome::Stalled { .. } => {
                lsm.compact_step(0, 1 << 16).expect("compact");
            }
        }
    }
    panic!("stalled for good");
}

#[test]
fn reads_and_scans_match_a_model_through_flushes_compactions_and_gc() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut lsm = Lsm::open(SimFs::seeded(7), LsmConfig::tiny_for_tests()).expect("open");
    // Steps that left a collection under way: other operations ran between its parts.
    let mut collection_parts = 0u32;
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    for i in 0..5000u32 {
        let key = b(&format!("k{:03}", rng.gen_range(0..300)));
        match rng.gen_range(0..10) {
            0..=6 => {
                let len = if rng.gen_bool(0.5) { 20 } else { 500 };
                let mut v = format!("{i}-").into_bytes();
                v.resize(len, b'.');
                let v = Bytes::from(v);
                loop {
                    match lsm.put(key.clone(), v.clone()).expect("put") {
                        WriteOutcome::Written { .. } => break,
                        WriteOutcome::Stalled { .. } => {
                            lsm.compact_step(0, 1 << 16).expect("compact");
                        }
                    }
                }
                model.insert(key, v);
            }
            7 => {
                if let WriteOutcome::Written { .. } = lsm.delete(key.clone(), 0).expect("delete") {
                    model.remove(&key);
                }
            }
            8 => {
                lsm.compact_step(0, 2000).expect("compact");
            }
            _ => {
                // A bounded part of a collection: the writes, deletes and flushes drawn between
                // its parts must not bring an old value back or lose a new one.
                if let GcOutcome::InProgress { .. } = lsm.collect_value_log_step(300).expect("gc") {
                    collection_parts += 1;
                }
            }
        }
        if i % 500 == 0 {
            let all: BTreeMap<Bytes, Bytes> = lsm
                .scan(b"", None, usize::MAX)
                .expect("scan")
                .into_iter()
                .collect();
            assert_eq!(all, model);
        }
    }
    for (k, v) in &model {
        assert_eq!(lsm.get(k).expect("get").as_ref(), Some(v));
    }
    // Bounded range scans.
    let got = lsm.scan(b"k100", Some(b"k200"), 10).expect("scan");
    let want: Vec<(Bytes, Bytes)> = model
        .range(b("k100")..b("k200"))
        .take(10)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want);
    let stats = lsm.stats();
    assert!(
        stats.flushes > 0 && stats.compactions > 0 && stats.gc_segments > 0,
        "{stats:?}"
    );
    assert!(
        collection_parts > 0,
        "no collection spanned more than one step"
    );
    lsm.check_invariants();
}

#[test]
fn tombstones_are_dropped_at_the_last_level_only_after_the_grace() {
    let config = LsmConfig::tiny_for_tests();
    let grace = config.tombstone_grace_ms;
    let mut lsm = Lsm::open(SimFs::seeded(8), config).expect("open");
    lsm.put(b("a"), b("1")).expect("put");
    lsm.flush().expect("flush");
    lsm.delete(b("a"), 1_000).expect("delete");
    lsm.flush().expect("flush");
    // Force everything into one bottom run.
    for _ in 0..3 {
        lsm.put(b("z"), b("2")).expect("put");
        lsm.flush().expect("flush");
    }
    compact_all(&mut lsm, 1_000 + grace - 1);
    assert_eq!(lsm.get(b"a").expect("get"), None);
    assert_eq!(
        lsm.table_entry_count(),
        2,
        "the tombstone is kept inside the grace"
    );
    for _ in 0..3 {
        lsm.put(b("z"), b("3")).expect("put");
        lsm.flush().expect("flush");
    }
    compact_all(&mut lsm, 1_000 + grace);
    assert_eq!(
        lsm.table_entry_count(),
        1,
        "the tombstone is gone after the grace"
    );
    assert_eq!(lsm.get(b"a").expect("get"), None);
}

#[test]
fn a_full_level0_stalls_writes_until_compaction_catches_up() {
    let mut lsm = Lsm::open(SimFs::seeded(9), LsmConfig::tiny_for_tests()).expect("open");
    let mut stalled = false;
    for i in 0..10_000u32 {
        if let WriteOutcome::Stalled { level0_tables } = lsm
            .put(b(&format!("k{i:05}")), Bytes::from(vec![b'x'; 40]))
            .expect("put")
        {
            assert_eq!(level0_tables, lsm.config().level0_stall_tables);
            stalled = true;
            break;
        }
    }
    assert!(stalled);
    compact_all(&mut lsm, 0);
    assert!(matches!(
        lsm.put(b("more"), b("v")),
        Ok(WriteOutcome::Written { .. })
    ));
}

#[test]
fn a_failed_fsync_poisons_for_good_and_reads_go_on() {
    let mut lsm = Lsm::open(SimFs::seeded(10), LsmConfig::tiny_for_tests()).expect("open");
    lsm.put(b("a"), b("1")).expect("put");
    lsm.sync().expect("sync");
    lsm.put(b("b"), b("2")).expect("put");
    lsm.fs_mut().fail_next_fsync();
    assert!(matches!(lsm.sync(), Err(LsmError::Poisoned(_))));
    assert!(
        matches!(lsm.sync(), Err(LsmError::Poisoned(_))),
        "never retried"
    );
    assert!(matches!(
        lsm.put(b("c"), b("3")),
        Err(LsmError::Poisoned(_))
    ));
    assert!(lsm.poisoned().is_some());
    assert_eq!(lsm.get(b"a").expect("get"), Some(b("1")));
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    let mut lsm = Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("reopen");
    assert_eq!(lsm.get(b"a").expect("get"), Some(b("1")));
    assert_eq!(lsm.get(b"b").expect("get"), None);
}

#[test]
fn a_bad_wal_record_followed_by_good_ones_is_reported_naming_the_file() {
    let mut lsm = Lsm::open(SimFs::seeded(11), LsmConfig::tiny_for_tests()).expect("open");
    for i in 0..5u32 {
        lsm.put(b(&format!("k{i}")), b("v")).expect("put");
    }
    lsm.sync().expect("sync");
    // The next synced batch starts with a sync marker covering the first one: from then on the
    // first batch is known synced, and a bad record in it is corruption, not a crash hole.
    lsm.put(b("k5"), b("v")).expect("put");
    lsm.sync().expect("sync");
    let mut fs = lsm.into_fs();
    let wal = fs
        .list()
        .expect("list")
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .expect("a wal");
    assert!(fs.flip_bit(&wal, 8 * 30));
    match Lsm::open(fs, LsmConfig::tiny_for_tests()) {
        Err(e @ LsmError::Corrupt { .. }) => assert_eq!(e.file(), Some(wal.as_str())),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn limits_are_typed_errors() {
    let config = LsmConfig::tiny_for_tests();
    let mut lsm = Lsm::open(SimFs::seeded(12), config.clone()).expect("open");
    assert!(matches!(
        lsm.put(b("k"), Bytes::from(vec![0; config.value_bytes_max + 1])),
        Err(LsmError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        lsm.put(Bytes::new(), b("v")),
        Err(LsmError::InvalidKey { .. })
    ));
    assert!(lsm.poisoned().is_none(), "bad input does not poison");
    assert!(Lsm::open(
        SimFs::seeded(1),
        LsmConfig {
            levels: 1,
            ..config
        }
    )
    .is_err());
}

#[test]
fn storage_adapter_keeps_synced_records_across_a_crash() {
    use ringkv_core::storage::Storage;
    use ringkv_core::version::{LwwRecord, LwwVersion};
    use ringkv_core::{NodeId, Record};
    let record = |ts: u64, len: usize| {
        Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: ts,
                node: NodeId(1),
                nonce: 0,
            },
            value: Some(Bytes::from(vec![b'v'; len])),
            expires_at_micros: None,
        })
    };
    let lsm = Lsm::open(SimFs::seeded(13), LsmConfig::tiny_for_tests()).expect("open");
    let mut storage = LsmStorage::new(lsm);
    for i in 0..300u64 {
        storage
            .put(b(&format!("key{i:03}")), record(i, (i as usize * 37) % 900))
            .expect("put");
    }
    storage.sync().expect("sync");
    storage.put(b("key000"), record(1000, 5)).expect("put");
    assert_eq!(storage.get(b"key000").expect("get"), Some(record(1000, 5)));
    let mut fs = storage.into_inner().into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    let mut storage = LsmStorage::new(Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("reopen"));
    assert_eq!(storage.get(b"key000").expect("get"), Some(record(0, 0)));
    assert_eq!(
        storage.get(b"key299").expect("get"),
        Some(record(299, (299 * 37) % 900))
    );
    let page = storage.scan(b"key100", 3).expect("scan");
    let keys: Vec<Bytes> = page.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b("key100"), b("key101"), b("key102")]);
}

#[test]
fn real_files_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LsmConfig::tiny_for_tests();
    {
        let mut lsm =
            Lsm::open(StdFs::open(dir.path()).expect("fs"), config.clone()).expect("open");
        for i in 0..500u32 {
            put_retry(
                &mut lsm,
                b(&format!("k{i:04}")),
                Bytes::from(vec![b'a' + (i % 26) as u8; (i as usize * 7) % 300]),
            );
        }
        compact_all(&mut lsm, 0);
        lsm.sync().expect("sync");
    }
    let mut lsm = Lsm::open(StdFs::open(dir.path()).expect("fs"), config).expect("reopen");
    for i in 0..500u32 {
        let want = Bytes::from(vec![b'a' + (i % 26) as u8; (i as usize * 7) % 300]);
        assert_eq!(
            lsm.get(format!("k{i:04}").as_bytes()).expect("get"),
            Some(want)
        );
    }
}

#[test]
fn split_sync_makes_covered_writes_durable_even_across_a_flush() {
    // Simulated disk: the fsync is done in place by `sync_begin`; a crash keeps what it covered.
    let mut lsm = Lsm::open(SimFs::seeded(21), LsmConfig::tiny_for_tests()).expect("open");
    put_retry(&mut lsm, b("a"), Bytes::from(vec![b'x'; 100]));
    let mut ticket = lsm.sync_begin().expect("begin");
    put_retry(&mut lsm, b("b"), b("not covered"));
    let result = ticket.fsync();
    lsm.sync_finish(result).expect("finish");
    assert_eq!(ticket.covers_seq(), 1);
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    let mut lsm = Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("reopen");
    assert_eq!(
        lsm.get(b"a").expect("get"),
        Some(Bytes::from(vec![b'x'; 100]))
    );

    // Real files: the fsync is detached; a flush between begin and the fsync removes the WAL
    // the ticket syncs, and the covered write is still there after reopening.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LsmConfig::tiny_for_tests();
    {
        let mut lsm =
            Lsm::open(StdFs::open(dir.path()).expect("fs"), config.clone()).expect("open");
        put_retry(&mut lsm, b("big"), Bytes::from(vec![b'y'; 500]));
        put_retry(&mut lsm, b("small"), b("s"));
        let mut ticket = lsm.sync_begin().expect("begin");
        lsm.flush().expect("flush");
        let result = ticket.fsync();
        lsm.sync_finish(result).expect("finish");
        assert_eq!(ticket.covers_seq(), 2);
    }
    let mut lsm = Lsm::open(StdFs::open(dir.path()).expect("fs"), config).expect("reopen");
    assert_eq!(
        lsm.get(b"big").expect("get"),
        Some(Bytes::from(vec![b'y'; 500]))
    );
    assert_eq!(lsm.get(b"small").expect("get"), Some(b("s")));
}

#[test]
fn a_format_1_store_is_read_and_moved_to_format_5() {
    let config = LsmConfig::tiny_for_tests();
    let mut lsm = Lsm::open(SimFs::seeded(31), config.clone()).expect("open");
    for i in 0..3u32 {
        lsm.put(b(&format!("k{i}")), b("v")).expect("put");
    }
    lsm.sync().expect("sync");
    let mut fs = lsm.into_fs();
    // Rewrite the manifest as version 1 (same body) and the WAL as format 1 (no sync markers,
    // no batch seals).
    let mut manifest = fs.read_all("MANIFEST").expect("manifest");
    assert_eq!(manifest[8..12], 5u32.to_le_bytes());
    manifest[8..12].copy_from_slice(&1u32.to_le_bytes());
    let at = manifest.len() - 4;
    let sum = crc32fast::hash(&manifest[..at]);
    manifest[at..].copy_from_slice(&sum.to_le_bytes());
    fs.remove("MANIFEST").expect("remove");
    fs.create("MANIFEST").expect("create");
    fs.append("MANIFEST", &manifest).expect("append");
    fs.fsync("MANIFEST").expect("fsync");
    fs.fsync_dir().expect("fsync dir");
    let old_wal: Vec<String> = fs
        .list()
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    // The same records as a format-1 WAL (no batch seal).
    let wal = &old_wal[0];
    fs.remove(wal).expect("remove");
    fs.create(wal).expect("create");
    let records: Vec<(u64, &[u8], &[u8])> =
        vec![(1, b"k0", b"v"), (2, b"k1", b"v"), (3, b"k2", b"v")];
    fs.append(wal, &ringkv_lsm::decode::encode_wal(&records))
        .expect("append");
    fs.fsync(wal).expect("fsync");
    fs.fsync_dir().expect("fsync dir");
    let mut lsm = Lsm::open(fs, config.clone()).expect("a version-1 store opens");
    for i in 0..3u32 {
        assert_eq!(
            lsm.get(format!("k{i}").as_bytes()).expect("get"),
            Some(b("v"))
        );
    }
    let mut fs = lsm.into_fs();
    let manifest = fs.read_all("MANIFEST").expect("manifest");
    assert_eq!(manifest[8..12], 5u32.to_le_bytes(), "moved to version 5");
    let wals: Vec<String> = fs
        .list()
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    assert_ne!(wals, old_wal, "the format-1 WAL was flushed and replaced");
    fs.crash(CrashMode::LoseUnsynced);
    let mut lsm = Lsm::open(fs, config).expect("reopen");
    assert_eq!(lsm.get(b"k2").expect("get"), Some(b("v")));
}

/// A manifest as FORMAT.md lays it out (version 3), with a valid checksum around any content.
fn manifest_bytes(
    next_file_id: u64,
    last_seq: u64,
    levels: &[&[(u64, &str, &str)]],
    segments: &[u64],
) -> Vec<u8> {
    let mut body = Vec::new();
    for v in [next_file_id, last_seq, 1, 2, 0] {
        body.extend_from_slice(&v.to_le_bytes()); // wal 1, active segment 2, trusted 0
    }
    body.extend_from_slice(&(levels.len() as u32).to_le_bytes());
    for level in levels {
        body.extend_from_slice(&(level.len() as u32).to_le_bytes());
        for (id, smallest, largest) in level.iter() {
            body.extend_from_slice(&id.to_le_bytes());
            for key in [smallest, largest] {
                body.extend_from_slice(&(key.len() as u32).to_le_bytes());
                body.extend_from_slice(key.as_bytes());
            }
            body.extend_from_slice(&1000u64.to_le_bytes());
            body.extend_from_slice(&10u64.to_le_bytes());
        }
    }
    body.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    for id in segments {
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&[0u8; 16]);
    }
    let mut out = 0x7269_6e67_6b76_4d46u64.to_le_bytes().to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let sum = crc32fast::hash(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A fresh store (WAL 1, segment 2) with empty files for tables 3 and 4 and `manifest` installed.
fn store_with_manifest(manifest: &[u8]) -> SimFs {
    let lsm = Lsm::open(SimFs::seeded(41), LsmConfig::tiny_for_tests()).expect("open");
    let mut fs = lsm.into_fs();
    for name in ["000003.sst", "000004.sst", "MANIFEST"] {
        if fs.exists(name).expect("exists") {
            fs.remove(name).expect("remove");
        }
        fs.create(name).expect("create");
    }
    fs.append("MANIFEST", manifest).expect("append");
    fs.fsync("MANIFEST").expect("fsync");
    fs.fsync_dir().expect("fsync dir");
    fs
}

#[test]
fn an_inconsistent_manifest_with_a_valid_checksum_is_reported_naming_it() {
    // The helper writes manifests the engine accepts when their content is consistent.
    let good = manifest_bytes(10, 5, &[&[(3, "a", "m")], &[(4, "n", "z")]], &[2]);
    Lsm::open(store_with_manifest(&good), LsmConfig::tiny_for_tests())
        .expect("a consistent manifest opens");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "overlapping tables in level 1",
            manifest_bytes(10, 5, &[&[], &[(3, "a", "m"), (4, "c", "z")]], &[2]),
        ),
        (
            "level 1 out of key order",
            manifest_bytes(10, 5, &[&[], &[(3, "n", "z"), (4, "a", "c")]], &[2]),
        ),
        (
            "an inverted key range",
            manifest_bytes(10, 5, &[&[(3, "z", "a")], &[]], &[2]),
        ),
        (
            "a table listed twice",
            manifest_bytes(10, 5, &[&[(3, "a", "c")], &[(3, "a", "c")]], &[2]),
        ),
        (
            "a table id from the future",
            manifest_bytes(4, 5, &[&[(4, "a", "c")], &[]], &[2]),
        ),
        (
            "a table id equal to the WAL's",
            manifest_bytes(10, 5, &[&[(1, "a", "c")], &[]], &[2]),
        ),
        ("no active segment", manifest_bytes(10, 5, &[&[], &[]], &[])),
        (
            "a sequence counter about to overflow",
            manifest_bytes(10, u64::MAX, &[&[], &[]], &[2]),
        ),
        ("no levels", manifest_bytes(10, 5, &[], &[2])),
    ];
    for (what, manifest) in cases {
        match Lsm::open(store_with_manifest(&manifest), LsmConfig::tiny_for_tests()) {
            Err(e @ LsmError::Corrupt { .. }) if e.file() == Some("MANIFEST") => {}
            Err(e) => panic!("{what}: open failed without naming the manifest: {e}"),
            Ok(_) => panic!("{what}: opened"),
        }
    }
}
