//! Every public history with a known verdict (checker/histories/VERDICTS.tsv, copied into the
//! repository with its licence so a bare clone passes).
//!
//! Set `CHECKER_HISTORIES_DIR` to use another copy of the folder.

use std::path::PathBuf;

use ringkv_checker::{check_history_file, cli::measure_wall_time, Verdict};

fn histories_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHECKER_HISTORIES_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories")
}

#[test]
fn all_known_verdicts_match() {
    let dir = histories_dir();
    let table = dir.join("VERDICTS.tsv");
    let Ok(text) = std::fs::read_to_string(&table) else {
        panic!(
            "ground truth not found: {} is missing (expected checker/histories \
             inside the crate, or CHECKER_HISTORIES_DIR)",
            table.display()
        );
    };
    let mut checked = 0;
    let mut agreed = 0;
    let mut failures = Vec::new();
    let (_, elapsed) = measure_wall_time(|| {
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let mut fields = line.split('\t');
            let (Some(file), Some(expected)) = (fields.next(), fields.next()) else {
                panic!("bad line in VERDICTS.tsv: {line:?}");
            };
            let expected = match expected.trim() {
                "true" => true,
                "false" => false,
                other => panic!("bad verdict {other:?} in VERDICTS.tsv"),
            };
            let model = if file.starts_with("jepsen-etcd/") {
                "cas-register"
            } else {
                "kv-append"
            };
            let report = check_history_file(model, &dir.join(file), None)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            checked += 1;
            let got = match report.verdict {
                Verdict::Linearizable => Some(true),
                Verdict::NotLinearizable { .. } => Some(false),
                Verdict::Unknown { .. } => None,
            };
            if got == Some(expected) {
                agreed += 1;
            } else {
                failures.push(format!(
                    "{file}: expected {expected}, got {}",
                    report.verdict
                ));
            }
        }
    });
    eprintln!(
        "ground truth: {agreed} of {checked} verdicts agree, {:.1} ms",
        elapsed.as_secs_f64() * 1e3
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!((agreed, checked), (108, 108));
}
