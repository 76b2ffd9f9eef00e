//! A full disk is not a failed fsync (issue 17, item 6): a write refused for space has no
//! effect and poisons nothing, a partial WAL record is cut so later records are not stranded
//! behind it, a flush that does not fit keeps the memtable, writes come back once space does
//! (no restart), and a restart on a full disk starts. A failed fsync still poisons for good.

use bytes::Bytes;
use ringkv_lsm::fs::{CrashMode, FileSystem, SimFs};
use ringkv_lsm::{Lsm, LsmConfig, LsmError, WriteOutcome};

fn config() -> LsmConfig {
    LsmConfig {
        // Every write is appended at once, so a full disk meets the write itself.
        wal_buffer_bytes: 0,
        memtable_bytes_max: 64 << 10,
        ..LsmConfig::tiny_for_tests()
    }
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key{i:05}"))
}

fn value(i: usize) -> Bytes {
    Bytes::from(vec![b'a' + (i % 26) as u8; 200])
}

fn wal_len(lsm: &mut Lsm<SimFs>) -> u64 {
    let fs = lsm.fs_mut();
    let wal = fs
        .list()
        .expect("list")
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .expect("a wal");
    fs.len(&wal).expect("len")
}

/// Fills the disk to `used + room` bytes and writes until a write is refused; returns how many
/// writes were accepted (and synced).
fn write_until_full(lsm: &mut Lsm<SimFs>, from: usize, room: u64) -> (usize, LsmError) {
    let used = lsm.fs_mut().used_bytes();
    lsm.fs_mut().set_capacity_bytes_max(Some(used + room));
    let mut i = from;
    loop {
        match lsm.put(key(i), value(i)) {
            Ok(WriteOutcome::Written { .. }) => {
                lsm.sync()
                    .expect("a sync after an accepted write fits (the reserve)");
                i += 1;
            }
            Ok(WriteOutcome::Stalled { .. }) => panic!("stalled"),
            Err(e) => return (i, e),
        }
        assert!(i < from + 100_000, "the disk never filled");
    }
}

#[test]
fn a_write_refused_for_space_has_no_effect_and_poisons_nothing() {
    let mut lsm = Lsm::open(SimFs::seeded(1), config()).expect("open");
    // Room for a part of one record: the append is short and leaves a partial record.
    let (accepted, e) = write_until_full(&mut lsm, 0, 100);
    assert!(e.is_no_space(), "{e}");
    assert!(
        lsm.poisoned().is_none(),
        "a full disk is not a failed fsync"
    );
    assert!(lsm.space_short());
    assert_eq!(lsm.get(&key(accepted)).expect("get"), None, "no effect");
    for i in 0..accepted {
        assert_eq!(lsm.get(&key(i)).expect("get"), Some(value(i)));
    }
    // Still full: refused again, before anything is touched.
    assert!(lsm
        .put(key(accepted), value(accepted))
        .is_err_and(|e| e.is_no_space()));
    assert!(lsm.stats().no_space_refusals >= 2);
}

/// Preallocation on a full disk: a write that fits without the zeros ahead is accepted without
/// them, and one that does not is refused with the file cut back, the zeros it had intact.
#[test]
fn on_a_full_disk_the_wal_gives_up_its_zeros_ahead_before_a_write() {
    let config = LsmConfig {
        wal_preallocate_bytes: 4096,
        ..config()
    };
    let mut lsm = Lsm::open(SimFs::seeded(5), config.clone()).expect("open");
    lsm.put(key(0), value(0)).expect("put");
    lsm.sync().expect("sync");
    let preallocated = wal_len(&mut lsm);
    assert!(preallocated > 4096, "zeros ahead of the first record");
    // Fill the zeros, then leave room for one record but not for 4 KiB more of zeros.
    let mut i = 1;
    while wal_len(&mut lsm) == preallocated {
        lsm.put(key(i), value(i)).expect("put over the zeros");
        i += 1;
    }
    lsm.sync().expect("sync");
    let grown = wal_len(&mut lsm);
    assert!(
        grown > preallocated + 4096,
        "the write that ran out appended new zeros"
    );
    let (accepted, e) = write_until_full(&mut lsm, i, 300);
    assert!(e.is_no_space(), "{e}");
    assert!(
        accepted > i,
        "writes that fit without zeros ahead were accepted"
    );
    let full = wal_len(&mut lsm);
    assert!(
        full < grown + 4096 + 300,
        "the last writes went without zeros ahead ({full} bytes)"
    );
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    fs.set_capacity_bytes_max(None);
    let mut lsm = Lsm::open(fs, config).expect("reopen");
    for k in 0..accepted {
        assert_eq!(lsm.get(&key(k)).expect("get"), Some(value(k)), "key {k}");
    }
    assert_eq!(
        lsm.get(&key(accepted)).expect("get"),
        None,
        "the refused write"
    );
}

#[test]
fn a_partial_wal_record_is_cut_so_later_records_are_not_stranded() {
    // Appends only: with zeros ahead, the record would be written over them and need no space.
    let config = LsmConfig {
        wal_preallocate_bytes: 0,
        ..config()
    };
    let mut lsm = Lsm::open(SimFs::seeded(2), config.clone()).expect("open");
    lsm.put(key(0), value(0)).expect("put");
    lsm.sync().expect("sync");
    let before = wal_len(&mut lsm);
    let used = lsm.fs_mut().used_bytes();
    // Room for 60 bytes of the next record (over 200 bytes long).
    lsm.fs_mut().set_capacity_bytes_max(Some(used + 60));
    assert!(lsm.put(key(1), value(1)).is_err_and(|e| e.is_no_space()));
    assert_eq!(wal_len(&mut lsm), before, "the partial record is cut");
    // Space comes back: the next record follows the last complete one.
    lsm.fs_mut().set_capacity_bytes_max(None);
    lsm.put(key(2), value(2))
        .expect("accepted again without a restart");
    lsm.sync().expect("sync");
    assert!(!lsm.space_short());
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    let mut lsm = Lsm::open(fs, config).expect("reopen");
    assert_eq!(lsm.get(&key(0)).expect("get"), Some(value(0)));
    assert_eq!(lsm.get(&key(1)).expect("get"), None, "the refused write");
    assert_eq!(
        lsm.get(&key(2)).expect("get"),
        Some(value(2)),
        "a record written after the refusal is not stranded behind garbage"
    );
}

#[test]
fn a_flush_that_does_not_fit_keeps_the_memtable_and_is_retried() {
    let config = LsmConfig {
        wal_buffer_bytes: 0,
        memtable_bytes_max: 4 << 10,
        ..LsmConfig::tiny_for_tests()
    };
    let mut lsm = Lsm::open(SimFs::seeded(3), config.clone()).expect("open");
    let mut i = 0;
    // Fill the memtable to just under a flush.
    while lsm.stats().flushes == 0 {
        lsm.put(key(i), value(i)).expect("put");
        i += 1;
    }
    let flushes = lsm.stats().flushes;
    // Leave room for WAL records but not for a flush (the value log and a table).
    let used = lsm.fs_mut().used_bytes();
    lsm.fs_mut().set_capacity_bytes_max(Some(used + 1500));
    let mut refused = None;
    for j in i..i + 200 {
        match lsm.put(key(j), value(j)) {
            Ok(_) => lsm.sync().expect("sync"),
            Err(e) => {
                refused = Some((j, e));
                break;
            }
        }
    }
    let (j, e) = refused.expect("the disk filled");
    assert!(e.is_no_space(), "{e}");
    assert!(lsm.poisoned().is_none());
    // The refusal released the reserve; take that room away too, so the flush cannot fit.
    let used = lsm.fs_mut().used_bytes();
    lsm.fs_mut().set_capacity_bytes_max(Some(used + 100));
    assert!(lsm.flush().is_err_and(|e| e.is_no_space()), "flush fails");
    assert!(
        lsm.poisoned().is_none(),
        "a flush that does not fit poisons nothing"
    );
    assert_eq!(lsm.stats().flushes, flushes);
    for k in 0..j {
        assert_eq!(lsm.get(&key(k)).expect("get"), Some(value(k)), "key {k}");
    }
    lsm.fs_mut().set_capacity_bytes_max(None);
    lsm.put(key(j), value(j)).expect("accepted again");
    lsm.flush().expect("the flush is retried and fits");
    lsm.sync().expect("sync");
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    let mut lsm = Lsm::open(fs, config).expect("reopen");
    for k in 0..=j {
        assert_eq!(lsm.get(&key(k)).expect("get"), Some(value(k)), "key {k}");
    }
}

#[test]
fn a_restart_on_a_full_disk_starts_and_writes_come_back_with_space() {
    let mut lsm = Lsm::open(SimFs::seeded(4), config()).expect("open");
    let (accepted, _) = write_until_full(&mut lsm, 0, 3000);
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::KeepRandomPrefix);
    // Not a byte free beyond what the engine held as its reserve.
    let used = fs.used_bytes();
    fs.set_capacity_bytes_max(Some(used));
    let mut lsm = Lsm::open(fs, config()).expect("a full disk still starts");
    for i in 0..accepted {
        assert_eq!(lsm.get(&key(i)).expect("get"), Some(value(i)));
    }
    lsm.fs_mut().set_capacity_bytes_max(None);
    lsm.put(key(accepted), value(accepted))
        .expect("space is back");
    lsm.sync().expect("sync");
}

#[test]
fn a_failed_fsync_still_poisons_for_good() {
    let mut lsm = Lsm::open(SimFs::seeded(5), config()).expect("open");
    let _ = write_until_full(&mut lsm, 0, 500);
    lsm.fs_mut().set_capacity_bytes_max(None);
    lsm.put(key(9999), value(1)).expect("space is back");
    lsm.fs_mut().fail_next_fsync();
    assert!(matches!(lsm.sync(), Err(LsmError::Poisoned(_))));
    assert!(matches!(
        lsm.put(key(1), value(1)),
        Err(LsmError::Poisoned(_))
    ));
    assert!(matches!(lsm.sync(), Err(LsmError::Poisoned(_))));
}
