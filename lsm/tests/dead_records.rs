//! Issue #13 (TTL): with `LsmStorage::collect_dead_records`, compaction drops last-write-wins
//! tombstones and expired values at the last level once they have been dead for the tombstone
//! grace, and keeps everything else (live values, values dead for less than the grace, vector
//! clock records); without it, records stay as they always did.

use bytes::Bytes;
use ringkv_core::storage::Storage;
use ringkv_core::version::{CausalRecord, LwwRecord, LwwVersion};
use ringkv_core::{NodeId, Record};
use ringkv_lsm::fs::{FileSystem, SimFs};
use ringkv_lsm::{CompactionProgress, LsmConfig, LsmStorage};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn version(ms: u64) -> LwwVersion {
    LwwVersion {
        timestamp_micros: ms * 1000,
        node: NodeId(1),
        nonce: 0,
    }
}

/// Flushes a few times so that compaction has to merge everything into the last level, then
/// compacts until idle at wall time `now_ms`.
fn compact_to_bottom<F: FileSystem>(storage: &mut LsmStorage<F>, now_ms: u64) {
    storage.set_now_ms(now_ms);
    for round in 0..4u8 {
        storage
            .put(
                b("zz-filler"),
                Record::Lww(LwwRecord::plain(version(1), Some(Bytes::from(vec![round])))),
            )
            .expect("put");
        storage.lsm_mut().flush().expect("flush");
    }
    for _ in 0..100_000 {
        let step = storage
            .lsm_mut()
            .compact_step(now_ms, 4096)
            .expect("compact");
        if step == CompactionProgress::Idle {
            return;
        }
    }
    panic!("compaction never went idle");
}

fn records() -> Vec<(Bytes, Record)> {
    let small = |s: &str| Some(b(s));
    vec![
        // Deleted at 1 s.
        (
            b("tombstone"),
            Record::Lww(LwwRecord::plain(version(1_000), None)),
        ),
        // Written at 1 s, expired at 2 s.
        (
            b("expired"),
            Record::Lww(LwwRecord::value(version(1_000), b("x"), Some(2_000_000))),
        ),
        // Expires at 50 s: not dead yet at the times below.
        (
            b("expiring-later"),
            Record::Lww(LwwRecord::value(version(1_000), b("y"), Some(50_000_000))),
        ),
        (
            b("live"),
            Record::Lww(LwwRecord::plain(version(1_000), small("z"))),
        ),
        (b("causal"), Record::Causal(CausalRecord::default())),
    ]
}

fn open(seed: u64, collect: bool) -> (LsmStorage<SimFs>, u64) {
    let config = LsmConfig::tiny_for_tests();
    let grace = config.tombstone_grace_ms;
    let lsm = ringkv_lsm::Lsm::open(SimFs::seeded(seed), config).expect("open");
    let mut storage = LsmStorage::new(lsm);
    if collect {
        storage.collect_dead_records();
    }
    for (key, record) in records() {
        storage.put(key, record).expect("put");
    }
    (storage, grace)
}

#[test]
fn dead_records_are_dropped_at_the_last_level_only_after_the_grace() {
    let (mut storage, grace) = open(21, true);
    // Within the grace of the expiry (2 s) but past the tombstone's (1 s) grace by 1 ms.
    compact_to_bottom(&mut storage, 1_000 + grace);
    assert_eq!(
        storage.get(b"tombstone").expect("get"),
        None,
        "tombstone dropped"
    );
    assert!(
        storage.get(b"expired").expect("get").is_some(),
        "kept inside the grace"
    );
    compact_to_bottom(&mut storage, 2_000 + grace);
    assert_eq!(
        storage.get(b"expired").expect("get"),
        None,
        "expired value dropped"
    );
    for key in ["expiring-later", "live", "causal"] {
        let want = records()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r);
        assert_eq!(
            storage.get(key.as_bytes()).expect("get"),
            want,
            "{key} kept"
        );
    }
}

#[test]
fn without_the_opt_in_every_record_stays() {
    let (mut storage, grace) = open(22, false);
    compact_to_bottom(&mut storage, 100_000 + grace);
    for (key, record) in records() {
        assert_eq!(storage.get(&key).expect("get"), Some(record));
    }
}
