//! `Lsm::checkpoint` (issue #14, item 4): opening a checkpoint gives exactly the writes staged
//! before it, however much the live store writes, compacts and collects afterwards, on the
//! simulated disk (crashed after the checkpoint: only what is durable counts) and on real files
//! (where the immutable files are hard links that outlive their removal from the live store).

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_lsm::fs::{CrashMode, FileSystem, FsErrorKind, SimFs, StdFs};
use ringkv_lsm::{CompactionProgress, GcOutcome, Lsm, LsmConfig, LsmError, WriteOutcome};
use std::collections::BTreeMap;

/// What a store should hold: the last value of each key (`None`: deleted).
type Model = BTreeMap<Bytes, Option<Bytes>>;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key{i:04}"))
}

/// Random puts (small values stay inline, large ones go to the value log at flush) and deletes
/// over `keys` keys, applied to both the store and the model.
fn write_random<F: FileSystem>(
    lsm: &mut Lsm<F>,
    model: &mut Model,
    rng: &mut ChaCha8Rng,
    writes: usize,
    keys: u64,
) {
    for _ in 0..writes {
        let k = key(rng.gen_range(0..keys));
        let value = if rng.gen_bool(0.15) {
            None
        } else {
            let len = if rng.gen_bool(0.5) { 16 } else { 400 };
            Some(Bytes::from(vec![rng.gen::<u8>(); len]))
        };
        model.insert(k.clone(), value.clone());
        // Level 0 full: compaction makes room (bounded back-pressure), then the write again.
        while let WriteOutcome::Stalled { .. } = match &value {
            Some(v) => lsm.put(k.clone(), v.clone()).expect("put"),
            None => lsm.delete(k.clone(), 1).expect("delete"),
        } {
            lsm.compact_step(0, 1 << 16).expect("compact");
        }
        if rng.gen_bool(0.05) {
            lsm.sync().expect("sync");
            settle(lsm);
        }
    }
    lsm.sync().expect("sync");
}

/// Compacts and collects the value log until both have nothing left to do.
fn settle<F: FileSystem>(lsm: &mut Lsm<F>) -> (u64, u64) {
    let (mut compactions, mut collections) = (0, 0);
    for _ in 0..100_000 {
        if lsm.compact_step(0, 4096).expect("compact") != CompactionProgress::Idle {
            compactions += 1;
            continue;
        }
        match lsm.gc_value_log_step().expect("gc") {
            GcOutcome::Idle => return (compactions, collections),
            GcOutcome::Collected { .. } => collections += 1,
            GcOutcome::InProgress { .. } => unreachable!("a whole collection runs to its end"),
        }
    }
    panic!("maintenance never settles");
}

/// Every key of the model reads back as the model says, and a full scan holds nothing else.
fn assert_holds<F: FileSystem>(lsm: &mut Lsm<F>, model: &Model, what: &str) {
    for (k, v) in model {
        assert_eq!(
            lsm.get(k).expect("get").as_ref(),
            v.as_ref(),
            "{what}: {k:?}"
        );
    }
    let live: Vec<(Bytes, Bytes)> = model
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    assert_eq!(
        lsm.scan(b"", None, usize::MAX).expect("scan"),
        live,
        "{what}"
    );
}

/// The scenario on any disk: write, checkpoint into `target`, then overwrite most keys and let
/// compaction and value-log collection remove the files the checkpoint was made of. Returns the
/// live store, the checkpoint's disk, and the models before and after.
fn checkpoint_then_churn<F: FileSystem>(
    fs: F,
    mut target: F,
    seed: u64,
) -> (Lsm<F>, F, Model, Model) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lsm = Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("open");
    let mut model = Model::new();
    write_random(&mut lsm, &mut model, &mut rng, 600, 200);
    // Staged, not synced: a checkpoint holds every write staged before it.
    lsm.put(key(9999), Bytes::from_static(b"staged"))
        .expect("put");
    model.insert(key(9999), Some(Bytes::from_static(b"staged")));
    let report = lsm.checkpoint(&mut target).expect("checkpoint");
    assert_eq!(report.last_seq, lsm.last_seq(), "{report:?}");
    assert!(report.tables > 0 && report.segments > 0, "{report:?}");
    let before = model.clone();
    let stats = lsm.stats();
    write_random(&mut lsm, &mut model, &mut rng, 1500, 200);
    settle(&mut lsm);
    let after = lsm.stats();
    assert!(
        after.compactions > stats.compactions && after.gc_segments > stats.gc_segments,
        "the churn compacted and collected: {stats:?} then {after:?}"
    );
    assert_holds(&mut lsm, &model, "live store after the churn");
    (lsm, target, before, model)
}

#[test]
fn a_checkpoint_on_the_simulated_disk_opens_to_exactly_the_writes_before_it() {
    for seed in 0..2 {
        let (lsm, mut target, before, model) =
            checkpoint_then_churn(SimFs::seeded(seed), SimFs::seeded(seed + 100), seed);
        // Power cut on the checkpoint's disk: what the checkpoint needs was made durable.
        target.crash(CrashMode::LoseUnsynced);
        let mut restored = Lsm::open(target, LsmConfig::tiny_for_tests()).expect("open");
        assert_holds(&mut restored, &before, "checkpoint");
        restored.check_invariants();
        // The restored store is a working store of its own.
        restored
            .put(key(1), Bytes::from_static(b"after restore"))
            .expect("put");
        restored.sync().expect("sync");
        let mut after_restore = before.clone();
        after_restore.insert(key(1), Some(Bytes::from_static(b"after restore")));
        let mut reopened =
            Lsm::open(restored.into_fs(), LsmConfig::tiny_for_tests()).expect("reopen");
        assert_holds(&mut reopened, &after_restore, "checkpoint written to");
        // And the live store lost nothing to the checkpoint.
        let mut fs = lsm.into_fs();
        fs.crash(CrashMode::LoseUnsynced);
        let mut live = Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("reopen live");
        assert_holds(&mut live, &model, "live store");
    }
}

#[test]
fn a_checkpoint_on_real_files_is_hard_links_that_outlive_compaction() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (live_dir, checkpoint_dir) = (dir.path().join("live"), dir.path().join("checkpoint"));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut lsm = Lsm::open(
        StdFs::open(&live_dir).expect("fs"),
        LsmConfig::tiny_for_tests(),
    )
    .expect("open");
    let mut model = Model::new();
    write_random(&mut lsm, &mut model, &mut rng, 600, 200);
    let mut target = StdFs::open(&checkpoint_dir).expect("fs");
    let report = lsm.checkpoint(&mut target).expect("checkpoint");
    // The checkpoint's own WAL and active segment are new files; everything else is a link.
    let linked: Vec<String> = target
        .list()
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".sst") || n.ends_with(".vlog"))
        .filter(|n| {
            let there = std::fs::metadata(checkpoint_dir.join(n)).expect("meta");
            std::fs::metadata(live_dir.join(n)).is_ok_and(|here| here.ino() == there.ino())
        })
        .collect();
    assert_eq!(
        linked.len(),
        report.tables + report.segments,
        "every table and sealed segment is a link: {linked:?} {report:?}"
    );
    for name in &linked {
        let meta = std::fs::metadata(checkpoint_dir.join(name)).expect("meta");
        assert_eq!(meta.nlink(), 2, "{name}");
    }
    let before = model.clone();
    write_random(&mut lsm, &mut model, &mut rng, 1500, 200);
    settle(&mut lsm);
    let removed = linked.iter().filter(|n| !live_dir.join(n).exists()).count();
    assert!(
        removed > 0,
        "compaction and collection removed some linked files from the live store"
    );
    drop(target);
    let mut restored = Lsm::open(
        StdFs::open(&checkpoint_dir).expect("fs"),
        LsmConfig::tiny_for_tests(),
    )
    .expect("open checkpoint");
    assert_holds(&mut restored, &before, "checkpoint");
    drop(lsm);
    let mut live = Lsm::open(
        StdFs::open(&live_dir).expect("fs"),
        LsmConfig::tiny_for_tests(),
    )
    .expect("reopen live");
    assert_holds(&mut live, &model, "live store");
}

#[test]
fn a_checkpoint_needs_an_empty_directory_and_an_incomplete_one_is_an_empty_store() {
    let mut lsm = Lsm::open(SimFs::seeded(1), LsmConfig::tiny_for_tests()).expect("open");
    lsm.put(key(1), Bytes::from_static(b"one")).expect("put");
    let mut target = SimFs::seeded(2);
    lsm.checkpoint(&mut target).expect("checkpoint");
    match lsm.checkpoint(&mut target) {
        Err(LsmError::Io(e)) => assert_eq!(e.kind, FsErrorKind::AlreadyExists, "{e}"),
        other => panic!("a second checkpoint into the same directory: {other:?}"),
    }
    assert!(lsm.poisoned().is_none(), "a refused target poisons nothing");
    // Without its manifest (written last) a checkpoint is nothing: the restore procedure
    // checks for it.
    target.remove("MANIFEST").expect("remove");
    let mut opened = Lsm::open(target, LsmConfig::tiny_for_tests()).expect("open");
    assert_eq!(opened.get(b"key0001").expect("get"), None);
}

#[test]
fn a_checkpoint_taken_in_the_middle_of_a_compaction_holds_its_inputs() {
    let mut lsm = Lsm::open(SimFs::seeded(3), LsmConfig::tiny_for_tests()).expect("open");
    let mut model = Model::new();
    for round in 0..4u64 {
        for i in 0..20 {
            let value = Bytes::from(format!("r{round}-{i}-{}", "v".repeat(60)));
            lsm.put(key(i * 7 + round), value.clone()).expect("put");
            model.insert(key(i * 7 + round), Some(value));
        }
        lsm.flush().expect("flush");
    }
    // A budget of one byte merges one entry: the job is left under way.
    assert!(matches!(
        lsm.compact_step(0, 1).expect("compact"),
        CompactionProgress::InProgress { .. }
    ));
    let mut target = SimFs::seeded(4);
    lsm.checkpoint(&mut target).expect("checkpoint");
    settle(&mut lsm);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let before = model.clone();
    write_random(&mut lsm, &mut model, &mut rng, 300, 200);
    settle(&mut lsm);
    assert_holds(&mut lsm, &model, "live store");
    target.crash(CrashMode::LoseUnsynced);
    let mut restored = Lsm::open(target, LsmConfig::tiny_for_tests()).expect("open");
    assert_holds(&mut restored, &before, "checkpoint");
}
