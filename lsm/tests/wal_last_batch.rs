//! A bit flip in the last synced WAL batch is never silent (FORMAT.md, "WAL recovery"): the sync
//! markers cover every batch but the last synced one, whose damage batch seals judge. A flip
//! there is reported as corruption naming the WAL, or (one shape only) recovered with a suspect
//! [`ringkv_lsm::RecoveryReport`]; it never opens quietly without acknowledged writes.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_lsm::fs::{CrashMode, FileSystem, SimFs};
use ringkv_lsm::{Lsm, LsmConfig, LsmError, WalTruncationCause};
use std::collections::BTreeMap;

fn wal_name(fs: &mut SimFs) -> String {
    fs.list()
        .expect("list")
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .expect("a live WAL")
}

/// How a store with a flipped bit opened.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Open failed naming the WAL.
    Reported,
    /// Open succeeded with every acknowledged write.
    Harmless,
    /// Open succeeded without some acknowledged write, and said so in its recovery report.
    Flagged,
}

/// Opens `fs` and judges the outcome against the acknowledged state; `Err` on a silent loss or
/// an error that does not name the WAL.
fn judge_open(fs: SimFs, acked: &BTreeMap<Bytes, Bytes>, wal: &str) -> Result<Verdict, String> {
    let mut lsm = match Lsm::open(fs, LsmConfig::tiny_for_tests()) {
        Err(e @ LsmError::Corrupt { .. }) if e.file() == Some(wal) => return Ok(Verdict::Reported),
        Err(e) => return Err(format!("open failed without naming {wal}: {e}")),
        Ok(lsm) => lsm,
    };
    let mut lost = Vec::new();
    for (key, value) in acked {
        if lsm.get(key).map_err(|e| e.to_string())?.as_ref() != Some(value) {
            lost.push(key.clone());
        }
    }
    if lost.is_empty() {
        return Ok(Verdict::Harmless);
    }
    match lsm.recovery_report().suspect() {
        Some(_) => Ok(Verdict::Flagged),
        None => Err(format!(
            "acknowledged writes {lost:?} silently lost; report {:?}",
            lsm.recovery_report()
        )),
    }
}

/// A store whose WAL holds `batches` synced batches of small records (no flush), the last one
/// synced with nothing after it. Returns the disk and the acknowledged state.
fn synced_store(seed: u64, batches: usize) -> (SimFs, BTreeMap<Bytes, Bytes>) {
    let mut lsm = Lsm::open(SimFs::seeded(seed), LsmConfig::tiny_for_tests()).expect("open");
    let mut acked = BTreeMap::new();
    for batch in 0..batches {
        for i in 0..4 {
            let key = Bytes::from(format!("k{batch}-{i}"));
            let value = Bytes::from(format!("value {batch} {i} {}", "v".repeat(i * 7)));
            lsm.put(key.clone(), value.clone()).expect("put");
            acked.insert(key, value);
        }
        lsm.sync().expect("sync");
    }
    (lsm.into_fs(), acked)
}

/// Flips every bit of the WAL in turn and opens: each flip is reported or harmless.
fn every_flip_is_caught(mut fs: SimFs, acked: &BTreeMap<Bytes, Bytes>) -> (usize, usize) {
    let wal = wal_name(&mut fs);
    let len = fs.len(&wal).expect("len");
    let (mut reported, mut harmless) = (0, 0);
    for bit in 0..len * 8 {
        let mut flipped = fs.clone();
        assert!(flipped.flip_bit(&wal, bit));
        match judge_open(flipped, acked, &wal) {
            Ok(Verdict::Reported) => reported += 1,
            Ok(Verdict::Harmless) => harmless += 1,
            Ok(Verdict::Flagged) => panic!("bit {bit} of {len} bytes: flagged, not reported"),
            Err(e) => panic!("bit {bit} of {len} bytes: {e}"),
        }
    }
    (reported, harmless)
}

#[test]
fn a_bit_flip_in_the_last_synced_batch_is_reported() {
    let (fs, acked) = synced_store(1, 3);
    let (reported, harmless) = every_flip_is_caught(fs, &acked);
    // Only flips in the last batch's seal are harmless (its records are intact and kept).
    assert!(
        reported > 0 && reported > harmless * 4,
        "{reported} {harmless}"
    );
}

#[test]
fn a_bit_flip_in_the_only_synced_batch_is_reported() {
    let (fs, acked) = synced_store(2, 1);
    every_flip_is_caught(fs, &acked);
}

#[test]
fn a_bit_flip_in_records_recovered_at_the_last_open_is_reported() {
    // Recovery claims the records it replayed (a sync marker, fsynced) before anything else is
    // written, so a flip among them after a second crash is below the claim.
    let (mut fs, acked) = synced_store(3, 2);
    fs.crash(CrashMode::LoseUnsynced);
    let lsm = Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("reopen");
    let mut fs = lsm.into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    every_flip_is_caught(fs, &acked);
}

#[test]
fn a_torn_unsynced_tail_is_cut_and_not_suspect() {
    let mut cuts = 0;
    for seed in 0..60 {
        let (fs, acked) = synced_store(seed, 2);
        let mut lsm = Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("open");
        // Appended (larger than the WAL buffer), never synced.
        lsm.put(Bytes::from("torn"), Bytes::from(vec![b't'; 3000]))
            .expect("put");
        let mut fs = lsm.into_fs();
        let mode = [
            CrashMode::TearLastWrite,
            CrashMode::Sectors,
            CrashMode::SectorPrefix,
        ][seed as usize % 3];
        fs.crash(mode);
        let lsm = Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("a torn tail opens");
        let report = lsm.recovery_report();
        assert_eq!(report.suspect(), None, "seed {seed}: {report:?}");
        if let Some(cut) = &report.wal_cut {
            assert_eq!(cut.cause, WalTruncationCause::UnsyncedTail);
            cuts += 1;
        }
        let fs = lsm.into_fs();
        assert_eq!(judge_open(fs, &acked, ""), Ok(Verdict::Harmless));
    }
    assert!(cuts > 10, "{cuts}");
}

/// Random batches (some records spanning sectors), an unsynced tail, a flip anywhere in the
/// WAL's durable bytes, then a crash of any mode: never a silent loss.
#[test]
fn flips_in_durable_wal_bytes_across_crashes_are_never_silent() {
    let (mut reported, mut harmless, mut flagged) = (0, 0, 0);
    for seed in 0..400u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut lsm = Lsm::open(SimFs::seeded(seed), LsmConfig::tiny_for_tests()).expect("open");
        let mut acked = BTreeMap::new();
        let mut pending = Vec::new();
        for _ in 0..rng.gen_range(1..4) {
            for _ in 0..rng.gen_range(1..4) {
                let key = Bytes::from(format!("k{}", rng.gen_range(0..6)));
                let len = if rng.gen_bool(0.3) {
                    rng.gen_range(500..1500)
                } else {
                    rng.gen_range(1..40)
                };
                let value = Bytes::from(vec![rng.gen_range(1..=255u8); len]);
                lsm.put(key.clone(), value.clone()).expect("put");
                pending.push((key, value));
            }
            if lsm.level_table_counts()[0] > 0 {
                break; // a flush moved the WAL on: keep to one WAL
            }
            lsm.sync().expect("sync");
            acked.extend(pending.drain(..));
        }
        for _ in 0..rng.gen_range(0..3) {
            let value = Bytes::from(vec![b'z'; rng.gen_range(1..900)]);
            lsm.put(Bytes::from("tail"), value).expect("put");
        }
        if lsm.level_table_counts()[0] > 0 {
            continue;
        }
        let mut fs = lsm.into_fs();
        let wal = wal_name(&mut fs);
        let Some(bit) = fs.flip_random_bit(&wal) else {
            continue;
        };
        let mode = fs.random_crash_mode_among(&CrashMode::ALL);
        fs.crash(mode);
        match judge_open(fs, &acked, &wal) {
            Ok(Verdict::Reported) => reported += 1,
            Ok(Verdict::Harmless) => harmless += 1,
            Ok(Verdict::Flagged) => flagged += 1,
            Err(e) => panic!("seed {seed}, bit {bit}, {mode:?} crash: {e}"),
        }
    }
    println!("reported {reported}, harmless {harmless}, flagged {flagged}");
    assert!(reported > 100, "{reported}");
}
