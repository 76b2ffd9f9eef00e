//! Times the checker on the public histories and on synthetic ringkv histories, one thread.
//!
//! Run: `cargo run --release -p ringkv-checker --example bench [-- --runs N --per-file --hard]`.
//! Prints the median of N runs (default 11) of the check alone (files are parsed once, outside
//! the timing) and of parse + check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringkv_checker::cli::measure_wall_time;
use ringkv_checker::formats::{jepsen_etcd, porcupine_kv};
use ringkv_checker::{
    check, History, Operation, Outcome, Register, RegisterInput, RegisterOutput, SearchLimits,
    Verdict,
};

/// splitmix64: a tiny deterministic PRNG.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A linearizable register history: each operation takes effect at a random instant inside its
/// interval; an indeterminate one takes effect (or not) and its client moves on.
fn synthetic(
    operations: usize,
    keys: u64,
    clients: u64,
    indeterminate_per_mille: u64,
    seed: u64,
) -> History<RegisterInput, RegisterOutput> {
    let mut rng = SplitMix64(seed);
    let mut free_at = vec![0u64; clients as usize];
    // (linearization time, invoke, return, client, key, input, takes effect, indeterminate)
    let mut calls = Vec::with_capacity(operations);
    let mut next_write = 1u64;
    for _ in 0..operations {
        let client = (0..clients as usize)
            .min_by_key(|&c| (free_at[c], c))
            .unwrap_or(0);
        let invoke = free_at[client] + rng.below(3);
        let effect = invoke + rng.below(10);
        let ret = effect + rng.below(10);
        free_at[client] = ret + 1;
        let key = rng.below(keys);
        let input = match rng.below(10) {
            0..=4 => RegisterInput::Get,
            5..=8 => {
                next_write += 1;
                RegisterInput::Put(next_write)
            }
            _ => RegisterInput::Delete,
        };
        let indeterminate = rng.below(1000) < indeterminate_per_mille;
        let takes_effect = !indeterminate || rng.below(2) == 0;
        calls.push((
            effect,
            invoke,
            ret,
            client as u64,
            key,
            input,
            takes_effect,
            indeterminate,
        ));
    }
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.sort_by_key(|&i| (calls[i].0, i));
    let mut state = vec![0u64; keys as usize];
    let mut outputs = vec![RegisterOutput::Written; calls.len()];
    for i in order {
        let (_, _, _, _, key, input, takes_effect, _) = calls[i];
        if !takes_effect {
            continue;
        }
        match input {
            RegisterInput::Get => outputs[i] = RegisterOutput::Value(state[key as usize]),
            RegisterInput::Put(v) => state[key as usize] = v,
            RegisterInput::Delete => state[key as usize] = 0,
        }
    }
    let mut history = History::new();
    for (i, &(_, invoke, ret, client, key, input, _, indeterminate)) in calls.iter().enumerate() {
        let outcome = if indeterminate {
            Outcome::Indeterminate {
                reported_time: Some(ret),
            }
        } else {
            Outcome::Returned {
                output: outputs[i],
                time: ret,
            }
        };
        history.push(Operation {
            client,
            key: format!("k{key}"),
            input,
            outcome,
            invoke_time: invoke,
        });
    }
    history
}

/// Makes the first read in the second half of the history return a value written (and
/// overwritten) in the first quarter: a stale read.
fn corrupt_one_read(history: &mut History<RegisterInput, RegisterOutput>) {
    let n = history.operations.len();
    let stale = history.operations[..n / 4]
        .iter()
        .rev()
        .find_map(|op| match op.input {
            RegisterInput::Put(v) => Some(v),
            _ => None,
        })
        .unwrap_or(u64::MAX);
    let read = (n / 2..n).find(|&i| {
        matches!(history.operations[i].input, RegisterInput::Get)
            && history.operations[i].output().is_some()
    });
    if let Some(Outcome::Returned { output, .. }) = read.map(|i| &mut history.operations[i].outcome)
    {
        *output = RegisterOutput::Value(stale);
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn time_runs<T>(runs: usize, mut work: impl FnMut() -> T) -> (T, Duration) {
    let mut samples = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let (value, elapsed) = measure_wall_time(&mut work);
        samples.push(elapsed);
        last = Some(value);
    }
    (last.expect("at least one run"), median(samples))
}

fn histories_dir() -> PathBuf {
    std::env::var_os("CHECKER_HISTORIES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(11usize)
        .max(1);
    let per_file = args.iter().any(|a| a == "--per-file");
    let limits = SearchLimits::default();
    let dir = histories_dir();

    let mut etcd: Vec<(String, String)> = std::fs::read_dir(dir.join("jepsen-etcd"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                read(&p),
            )
        })
        .collect();
    etcd.sort();
    let parsed: Vec<_> = etcd
        .iter()
        .map(|(_, text)| jepsen_etcd::parse(text).expect("etcd log parses"))
        .collect();

    println!("| workload | operations | verdict | check median (ms) | parse + check median (ms) |");
    println!("|---|---:|---|---:|---:|");
    let (verdicts, check_time) = time_runs(runs, || {
        parsed
            .iter()
            .map(|h| {
                check(&ringkv_checker::CasRegister, h, &limits)
                    .expect("valid")
                    .verdict
            })
            .collect::<Vec<_>>()
    });
    let (_, total_time) = time_runs(runs, || {
        etcd.iter()
            .map(|(_, text)| {
                let h = jepsen_etcd::parse(text).expect("parses");
                check(&ringkv_checker::CasRegister, &h, &limits)
                    .expect("valid")
                    .verdict
            })
            .count()
    });
    let violations = verdicts.iter().filter(|v| v.is_violation()).count();
    let unknown = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Unknown { .. }))
        .count();
    let ops: usize = parsed.iter().map(|h| h.operations.len()).sum();
    println!(
        "| jepsen-etcd suite ({} files) | {ops} | {violations} violations, {unknown} unknown | {} | {} |",
        etcd.len(),
        ms(check_time),
        ms(total_time)
    );

    for name in ["c50-ok.txt", "c50-bad.txt", "c10-ok.txt", "c10-bad.txt"] {
        let text = read(&dir.join("kv").join(name));
        let (model, history) = porcupine_kv::parse(&text).expect("kv file parses");
        let (verdict, check_time) = time_runs(runs, || {
            check(&model, &history, &limits).expect("valid").verdict
        });
        let (_, total_time) = time_runs(runs, || {
            let (model, history) = porcupine_kv::parse(&text).expect("parses");
            check(&model, &history, &limits)
                .expect("valid")
                .verdict
                .is_linearizable()
        });
        println!(
            "| kv/{name} | {} | {} | {} | {} |",
            history.operations.len(),
            verdict.label(),
            ms(check_time),
            ms(total_time)
        );
    }

    let synthetic_runs = runs.min(5);
    for (label, history) in [
        (
            "synthetic register: 100,000 ops, 1,000 keys, 16 clients, 1% indeterminate",
            synthetic(100_000, 1_000, 16, 10, 7),
        ),
        (
            "synthetic register: 10,000 ops, 1 key, 16 clients, 1% indeterminate",
            synthetic(10_000, 1, 16, 10, 11),
        ),
    ] {
        let (outcome, check_time) = time_runs(synthetic_runs, || {
            check(&Register, &history, &limits).expect("valid")
        });
        println!(
            "| {label} | {} | {} | {} | n/a |",
            history.operations.len(),
            outcome.verdict.label(),
            ms(check_time)
        );
        if !outcome.verdict.is_linearizable() {
            println!("unexpected verdict: {}", outcome.verdict);
        }
    }

    if args.iter().any(|a| a == "--hard") {
        // Violations the pre-checks do not see (they are turned off): one read of a long-gone
        // value in the middle of a single-key history; the searches must refute it.
        println!("\n| hard case (pre-checks off) | operations | verdict | check (ms, 1 run) |");
        println!("|---|---:|---|---:|");
        for (operations, clients, indeterminate) in [
            (2_000, 4, 10),
            (2_000, 16, 0),
            (10_000, 16, 0),
            (2_000, 16, 10),
        ] {
            let mut history = synthetic(operations, 1, clients, indeterminate, 11);
            corrupt_one_read(&mut history);
            let hard = SearchLimits {
                prechecks: false,
                ..limits
            };
            let (outcome, t) =
                measure_wall_time(|| check(&Register, &history, &hard).expect("valid"));
            println!(
                "| single key, {operations} ops, {clients} clients, {:.0}% indeterminate | {} | {} | {} |",
                indeterminate as f64 / 10.0,
                history.operations.len(),
                outcome.verdict.label(),
                ms(t)
            );
        }
    }

    if per_file {
        println!(
            "\n| etcd file | operations | verdict | steps | memo entries | check median (ms) |"
        );
        println!("|---|---:|---|---:|---:|---:|");
        for ((name, _), history) in etcd.iter().zip(&parsed) {
            let (outcome, t) = time_runs(runs, || {
                check(&ringkv_checker::CasRegister, history, &limits).expect("valid")
            });
            println!(
                "| {name} | {} | {} | {} | {} | {} |",
                history.operations.len(),
                outcome.verdict.label(),
                outcome.stats.steps,
                outcome.stats.memo_entries_max,
                ms(t)
            );
        }
    }
}
