//! Flush jobs (`flush.rs`): a full memtable is frozen and its WAL retired at once, the table is
//! written in bounded steps while writes go on into a successor WAL, and its fsync can run away
//! from the engine. Crashes between the freeze and the install keep every acknowledged write.

use bytes::Bytes;
use ringkv_lsm::fs::{CrashMode, FileSystem, FsError, FsErrorKind, SimFs, StdFs};
use ringkv_lsm::{FlushProgress, Lsm, LsmConfig, WriteOutcome};

fn key(i: u32) -> Bytes {
    Bytes::from(format!("key{i:05}"))
}

/// Values both below and above the separation threshold, so the job writes the value log too.
fn value(i: u32) -> Bytes {
    let len = if i.is_multiple_of(3) { 300 } else { 20 };
    let mut v = format!("v{i}-").into_bytes();
    v.resize(len, b'.');
    Bytes::from(v)
}

fn put<F: FileSystem>(lsm: &mut Lsm<F>, i: u32) {
    match lsm.put(key(i), value(i)).expect("put") {
        WriteOutcome::Written { .. } => {}
        WriteOutcome::Stalled { .. } => panic!("level 0 is shallow in these tests"),
    }
}

/// Writes from `from` on until a flush job is under way; returns the next index.
fn write_until_flushing<F: FileSystem>(lsm: &mut Lsm<F>, from: u32) -> u32 {
    let mut i = from;
    while !lsm.flushing() {
        put(lsm, i);
        i += 1;
        assert!(i < from + 10_000, "the memtable never filled");
    }
    i
}

fn assert_all_present<F: FileSystem>(lsm: &mut Lsm<F>, upto: u32) {
    for i in 0..upto {
        assert_eq!(lsm.get(&key(i)).expect("get"), Some(value(i)), "key {i}");
    }
}

fn config() -> LsmConfig {
    LsmConfig {
        level0_stall_tables: 64,
        level0_compaction_tables: 32,
        ..LsmConfig::tiny_for_tests()
    }
}

#[test]
fn a_full_memtable_starts_a_job_that_steps_finish_while_writes_go_on() {
    let mut lsm = Lsm::open(SimFs::seeded(1), config()).expect("open");
    let frozen_upto = write_until_flushing(&mut lsm, 0);
    assert_eq!(lsm.stats().flushes, 0, "freezing installs nothing");
    // Writes go on while the job is under way; reads see both memtables.
    for i in frozen_upto..frozen_upto + 5 {
        put(&mut lsm, i);
    }
    assert_all_present(&mut lsm, frozen_upto + 5);
    let mut steps = 0;
    loop {
        steps += 1;
        match lsm.flush_step(200).expect("step") {
            FlushProgress::InProgress => {}
            FlushProgress::Installed => break,
            other => panic!("a simulated disk fsyncs in place: {other:?}"),
        }
        lsm.check_invariants();
        assert!(steps < 10_000, "the job never finished");
    }
    assert!(steps > 1, "a small budget takes several steps");
    assert!(!lsm.flushing());
    assert_eq!(lsm.stats().flushes, 1);
    assert_eq!(lsm.level_table_counts()[0], 1);
    assert_eq!(lsm.flush_step(200).expect("step"), FlushProgress::Idle);
    assert_all_present(&mut lsm, frozen_upto + 5);
}

#[test]
fn a_crash_between_freeze_and_install_keeps_every_acknowledged_write() {
    for mode in CrashMode::ALL {
        let mut lsm = Lsm::open(SimFs::seeded(2), config()).expect("open");
        let frozen_upto = write_until_flushing(&mut lsm, 0);
        // A part of the table written, then more writes into the successor WAL.
        assert_eq!(
            lsm.flush_step(100).expect("step"),
            FlushProgress::InProgress
        );
        for i in frozen_upto..frozen_upto + 7 {
            put(&mut lsm, i);
        }
        lsm.sync().expect("sync");
        let mut fs = lsm.into_fs();
        fs.crash(mode);
        let mut lsm = Lsm::open(fs, config()).expect("reopen");
        assert!(lsm.flushing(), "{mode:?}: the interrupted job is rebuilt");
        lsm.check_invariants();
        assert_all_present(&mut lsm, frozen_upto + 7);
        // It goes on from scratch and installs; nothing is lost across another crash.
        while lsm.flush_step(1 << 20).expect("step") != FlushProgress::Installed {}
        put(&mut lsm, 90_000);
        lsm.sync().expect("sync");
        let mut fs = lsm.into_fs();
        fs.crash(mode);
        let mut lsm = Lsm::open(fs, config()).expect("reopen");
        assert!(!lsm.flushing());
        assert_all_present(&mut lsm, frozen_upto + 7);
        assert_eq!(lsm.get(&key(90_000)).expect("get"), Some(value(90_000)));
    }
}

#[test]
fn a_sync_after_a_freeze_makes_the_retired_wal_durable_first() {
    let mut lsm = Lsm::open(SimFs::seeded(3), config()).expect("open");
    // Nothing synced before the freeze: the retired WAL's tail is unsynced.
    let frozen_upto = write_until_flushing(&mut lsm, 0);
    put(&mut lsm, frozen_upto);
    lsm.sync().expect("sync");
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    let mut lsm = Lsm::open(fs, config()).expect("reopen");
    assert_all_present(&mut lsm, frozen_upto + 1);
}

#[test]
fn real_files_leave_the_flush_fsync_to_the_driver_and_a_stale_result_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Lsm::open(StdFs::open(dir.path()).expect("fs"), config()).expect("open");
    let upto;
    {
        let mut lsm = open();
        let frozen_upto = write_until_flushing(&mut lsm, 0);
        assert_eq!(
            lsm.flush_step(u64::MAX).expect("step"),
            FlushProgress::AwaitingFsync
        );
        let mut fsync = lsm.take_flush_fsync().expect("the fsync is the driver's");
        assert!(lsm.take_flush_fsync().is_none(), "handed out once");
        assert_eq!(
            lsm.flush_step(u64::MAX).expect("step"),
            FlushProgress::AwaitingFsync,
            "steps wait for it"
        );
        put(&mut lsm, frozen_upto);
        let result = fsync.fsync();
        lsm.flush_fsynced(fsync.job(), result).expect("installed");
        assert!(!lsm.flushing());
        assert_eq!(lsm.stats().flushes, 1);

        // A second job whose fsync is overtaken by a flush in place: its late result is stale.
        let frozen_upto = write_until_flushing(&mut lsm, frozen_upto + 1);
        lsm.flush_step(u64::MAX).expect("step");
        let mut late = lsm.take_flush_fsync().expect("fsync");
        lsm.flush().expect("flush finishes the job in place");
        let flushes = lsm.stats().flushes;
        let result = late.fsync();
        lsm.flush_fsynced(late.job(), result)
            .expect("stale: ignored");
        assert_eq!(lsm.stats().flushes, flushes);
        assert!(lsm.poisoned().is_none());
        lsm.sync().expect("sync");
        upto = frozen_upto;

        // A failed flush fsync poisons, stale or not (never retried).
        let failed = FsError {
            kind: FsErrorKind::SyncFailed,
            file: "x".to_string(),
            detail: "injected".to_string(),
        };
        assert!(lsm.flush_fsynced(late.job(), Err(failed)).is_err());
        assert!(lsm.poisoned().is_some());
    }
    let mut lsm = open();
    assert_all_present(&mut lsm, upto);
}
