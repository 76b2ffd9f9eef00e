//! Replays every stored fuzz corpus on the stable toolchain: each file under
//! `fuzz/corpus/<target>/` is fed to the same function the libFuzzer target calls
//! (`ringkv_fuzz_targets::TARGETS`). A decoder change that makes a once-harmless input panic, or
//! breaks one of a target's round trips, fails here in CI without nightly or libFuzzer.

use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// The corpus files of `target`, sorted (so a failure names the same file on every run).
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_replays_through_its_target() {
    let mut replayed = Vec::new();
    for (target, run) in ringkv_fuzz_targets::TARGETS {
        let files = corpus_files(target);
        // A corpus that vanished (a rename, a bad merge) would make this test pass vacuously.
        assert!(
            files.len() >= 10,
            "fuzz/corpus/{target} holds {} files; the minimised corpus is kept in the repository",
            files.len()
        );
        for path in &files {
            let data = std::fs::read(path).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails (replay: cd fuzz && cargo fuzz run {target} {})",
                path.display(),
                path.display()
            );
        }
        replayed.push(format!("{target} {}", files.len()));
    }
    println!("replayed: {}", replayed.join(", "));
}

#[test]
fn every_fuzz_target_file_has_a_body_and_a_corpus() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut wrappers: Vec<String> = std::fs::read_dir(fuzz_dir.join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    wrappers.sort();
    let mut bodies: Vec<String> = ringkv_fuzz_targets::TARGETS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    bodies.sort();
    assert_eq!(
        wrappers, bodies,
        "a libFuzzer wrapper without a replayed body, or the reverse"
    );
    for name in &bodies {
        assert!(corpus_root().join(name).is_dir(), "no fuzz/corpus/{name}");
    }
}
