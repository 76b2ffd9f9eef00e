//! Every scenario file is its own CI contract (issue #16, item 6). Its `[ci]` table says how many
//! seeds CI runs (`seeds`, 0 with a `reason` for the ones run by hand), how many of them run twice
//! for the determinism check (`determinism_seeds`), and the thresholds each seed must meet beyond
//! the file's `expect` (`availability_min`, `hints_pending_max`, gossip detection bounds; see
//! `sim::scenario::CiSpec`). The test below runs them all, so a scenario added to `scenarios/` is
//! swept without anyone writing a test for it, and changing a seed count or a bound is an edit of
//! the file it is about.
//!
//! The README's scenario table is checked against the same tables: every file has one row, whose
//! `expect` and CI seed count are the file's, and the README's total of CI seeds is theirs.
//!
//! Tests that check something other than "this scenario, these seeds, as expected" stay in their
//! own files: controls that switch a mechanism off (`mechanisms.rs`, `durability_sweep.rs`),
//! reproducible traces (`determinism.rs`), pinned summaries (`summary_snapshot.rs`) and named
//! regression seeds (`regressions.rs`).

use ringkv_tests::{scenario_names, scenario_path, ScenarioFile};
use sim::report::RunReport;
use sim::scenario::{CiSpec, Expect};
use sim::swarm::knobs_line;
use sim::RunOptions;
use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Seeds per unit of work handed to a worker thread: small enough that the last unit to finish
/// (a few seconds of the slowest scenarios) leaves the other cores idle only briefly.
const SEEDS_PER_JOB: u64 = 5;

/// Failing seeds printed per scenario (each with its replay command); the count is always given.
const SEEDS_SHOWN_MAX: usize = 5;

/// One loaded scenario file and its contract.
struct Contract {
    name: String,
    /// As the replay command names it.
    path: String,
    file: ScenarioFile,
    ci: CiSpec,
}

/// Loads every file of `scenarios/`; a file that does not load or has no `[ci]` table is an
/// error naming it.
fn contracts() -> Result<Vec<Contract>, Vec<String>> {
    let mut contracts = Vec::new();
    let mut errors = Vec::new();
    for name in scenario_names() {
        let path = scenario_path(&name);
        match ScenarioFile::load(&name) {
            Err(e) => errors.push(e),
            Ok(file) => match file.ci().cloned() {
                Some(ci) => contracts.push(Contract {
                    name,
                    path,
                    file,
                    ci,
                }),
                None => errors.push(format!(
                    "{path}: no [ci] table: add one saying how many seeds CI runs (`seeds = N`, or \
                     `seeds = 0` with a `reason`) and the thresholds its seeds must meet"
                )),
            },
        }
    }
    if errors.is_empty() {
        Ok(contracts)
    } else {
        Err(errors)
    }
}

/// What one seed showed against its contract.
struct SeedVerdict {
    seed: u64,
    /// Why the seed breaks the contract (empty: it keeps it).
    misses: Vec<String>,
    /// The replay command and every check's verdict, for a seed that breaks it.
    detail: String,
}

/// What the sweep saw in total: one place where every run's report passes, for figures summed
/// over the whole sweep. (The BUGGIFY work adds each run's fault-point firing counts here, to
/// require that every site fired somewhere in the sweep.)
#[derive(Default)]
struct Tally {
    /// Seeds run, by scenario.
    seeds: BTreeMap<String, u64>,
    /// Runs made (a determinism seed runs twice).
    runs: u64,
}

impl Tally {
    /// Records one seed's report (the first run's, for a seed run twice).
    fn observe(&mut self, scenario: &str, _report: &RunReport, runs: u64) {
        *self.seeds.entry(scenario.to_string()).or_default() += 1;
        self.runs += runs;
    }

    fn merge(&mut self, other: Tally) {
        for (scenario, seeds) in other.seeds {
            *self.seeds.entry(scenario).or_default() += seeds;
        }
        self.runs += other.runs;
    }
}

/// `expect` as the scenario files and the README spell it.
fn expect_word(expect: Expect) -> &'static str {
    match expect {
        Expect::Pass => "pass",
        Expect::Violation => "violation",
    }
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs one seed and judges it: `expect`, the determinism check for the first
/// `determinism_seeds`, then the thresholds. A panic is a verdict too, so the other seeds still
/// run and report.
fn judge(contract: &Contract, seed: u64, tally: &mut Tally) -> SeedVerdict {
    let twice = seed < contract.ci.determinism_seeds;
    let replay = format!(
        "cargo run --release -p sim -- {} --seed {seed}",
        contract.path
    );
    let run = |check_determinism: bool| {
        let options = RunOptions {
            trace: false,
            check_determinism,
        };
        catch_unwind(AssertUnwindSafe(|| {
            contract.file.run_seed(&contract.path, seed, options)
        }))
        .map_err(|payload| format!("panicked: {}", panic_message(payload.as_ref())))
        .and_then(|result| result.map_err(|e| format!("did not run: {e}")))
    };
    let report = match run(twice) {
        Ok(report) => report,
        Err(why) => {
            return SeedVerdict {
                seed,
                misses: vec![why],
                detail: replay,
            }
        }
    };
    let mut misses = Vec::new();
    if !report.as_expected() {
        misses.push(format!(
            "not as expected (expect = \"{}\")",
            expect_word(contract.file.expect())
        ));
    }
    if twice {
        if let ScenarioFile::Storage(_) = contract.file {
            // The crash oracle has no determinism option: a second run must give the same
            // fingerprint.
            match run(false) {
                Ok(again) if again.fingerprint == report.fingerprint => {}
                Ok(again) => misses.push(format!(
                    "nondeterministic: two runs gave fingerprints {} and {}",
                    report.fingerprint, again.fingerprint
                )),
                Err(why) => misses.push(format!("second run {why}")),
            }
        } else {
            let determinism = report
                .checks
                .iter()
                .find(|(name, _)| *name == "determinism");
            match determinism.map(|(_, verdict)| verdict) {
                Some(verdict) if verdict.word() == "pass" => {}
                Some(verdict) => misses.push(format!("determinism: {verdict}")),
                None => misses.push("determinism: no verdict reported".into()),
            }
        }
    }
    misses.extend(contract.ci.misses(&report));
    tally.observe(&contract.name, &report, if twice { 2 } else { 1 });
    let checks: Vec<String> = report
        .checks
        .iter()
        .map(|(name, verdict)| format!("{name}: {verdict}"))
        .collect();
    let mut detail = report.replay_command();
    if !report.swarm.is_empty() {
        detail = format!("{detail}\n      drawn: {}", knobs_line(&report.swarm));
    }
    SeedVerdict {
        seed,
        misses,
        detail: format!("{detail}\n      {}", checks.join("\n      ")),
    }
}

/// Every scenario at its declared seeds, spread over the machine's cores (each seed still runs
/// single-threaded and deterministic; threads only share out whole seeds).
#[test]
fn every_scenario_keeps_its_ci_contract() {
    let contracts = contracts().unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    // Work units in file order, the slowest scenario first would be better balanced, but costs
    // are not declared; small units keep the tail short instead.
    let jobs: Vec<(usize, Range<u64>)> = contracts
        .iter()
        .enumerate()
        .flat_map(|(index, contract)| {
            (0..contract.ci.seeds)
                .step_by(SEEDS_PER_JOB as usize)
                .map(move |start| (index, start..(start + SEEDS_PER_JOB).min(contract.ci.seeds)))
        })
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let verdicts: Mutex<Vec<(usize, SeedVerdict)>> = Mutex::new(Vec::new());
    let tally = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut mine = Vec::new();
                let mut seen = Tally::default();
                while let Some((index, seeds)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    for seed in seeds.clone() {
                        mine.push((*index, judge(&contracts[*index], seed, &mut seen)));
                    }
                }
                verdicts
                    .lock()
                    .expect("no worker panics holding it")
                    .extend(mine);
                tally
                    .lock()
                    .expect("no worker panics holding it")
                    .merge(seen);
            });
        }
    });
    let mut verdicts = verdicts.into_inner().expect("workers are done");
    let tally = tally.into_inner().expect("workers are done");
    verdicts.sort_by_key(|(index, verdict)| (*index, verdict.seed));
    let mut failures = Vec::new();
    for (index, contract) in contracts.iter().enumerate() {
        let judged: Vec<&SeedVerdict> = verdicts
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            judged.len() as u64,
            contract.ci.seeds,
            "{}: the sweep judged {} seeds, [ci] declares {}",
            contract.path,
            judged.len(),
            contract.ci.seeds
        );
        let broken: Vec<&&SeedVerdict> = judged.iter().filter(|v| !v.misses.is_empty()).collect();
        if broken.is_empty() {
            continue;
        }
        let shown: Vec<String> = broken
            .iter()
            .take(SEEDS_SHOWN_MAX)
            .map(|v| {
                format!(
                    "  seed {}: {}\n    {}",
                    v.seed,
                    v.misses.join("; "),
                    v.detail
                )
            })
            .collect();
        failures.push(format!(
            "{}: {} of {} seeds break its [ci] contract\n{}",
            contract.path,
            broken.len(),
            contract.ci.seeds,
            shown.join("\n")
        ));
    }
    let ran: u64 = tally.seeds.values().sum();
    let declared: u64 = contracts.iter().map(|c| c.ci.seeds).sum();
    assert_eq!(ran, declared, "seeds reported to the tally");
    eprintln!(
        "{} scenario files, {ran} seeds ({} runs) over {workers} threads",
        contracts.len(),
        tally.runs
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A scenario whose every seed breaks its contract is reported as such: the sweep above can fail.
#[test]
fn a_contract_the_runs_cannot_meet_is_reported() {
    let mut contract = contracts()
        .unwrap_or_else(|errors| panic!("{}", errors.join("\n")))
        .into_iter()
        .find(|c| c.name == "partition")
        .expect("scenarios/partition.toml");
    contract.ci.availability_min = Some(1.0);
    let mut tally = Tally::default();
    let verdict = judge(&contract, 0, &mut tally);
    // Partitions with loss fail some requests: availability below 100% is the scenario's point.
    assert!(
        verdict
            .misses
            .iter()
            .any(|miss| miss.contains("below ci.availability_min = 1")),
        "{:?}",
        verdict.misses
    );
    assert!(verdict.detail.contains("--seed 0"), "{}", verdict.detail);
    assert_eq!(tally.seeds.get("partition"), Some(&1));
}

/// One row of the README's scenario table: the files it names, its `expect` and CI seed cells.
struct ReadmeRow {
    line: usize,
    files: Vec<String>,
    expect: String,
    seeds: String,
}

/// The rows of the table after `## Scenarios` (`| files | expect | CI seeds | what it proves |`).
fn readme_rows(readme: &str) -> Vec<ReadmeRow> {
    let start = readme
        .lines()
        .position(|line| line == "## Scenarios")
        .expect("README.md has a '## Scenarios' section");
    readme
        .lines()
        .enumerate()
        .skip(start)
        .skip_while(|(_, line)| !line.starts_with('|'))
        .take_while(|(_, line)| line.starts_with('|'))
        .filter(|(_, line)| line.starts_with("| `"))
        .map(|(index, line)| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let files = cells[1]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            ReadmeRow {
                line: index + 1,
                files,
                expect: cells.get(2).copied().unwrap_or("").to_string(),
                seeds: cells.get(3).copied().unwrap_or("").to_string(),
            }
        })
        .collect()
}

/// `2000` as the README writes it (`2,000`).
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn readme() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("README.md")).expect("README.md")
}

/// Every scenario file has exactly one README row, whose `expect` and CI seed count are the
/// file's: the table is what a reader trusts, so it must say what CI runs.
#[test]
fn the_readme_scenario_table_is_the_contracts() {
    let contracts = contracts().unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    let rows = readme_rows(&readme());
    let mut wrong = Vec::new();
    for contract in &contracts {
        let file = format!("{}.toml", contract.name);
        let holding: Vec<&ReadmeRow> = rows.iter().filter(|r| r.files.contains(&file)).collect();
        let [row] = holding[..] else {
            wrong.push(format!(
                "{file}: {} README rows name it (one wanted in the table under '## Scenarios')",
                holding.len()
            ));
            continue;
        };
        let expect = expect_word(contract.file.expect());
        if row.expect != expect {
            wrong.push(format!(
                "{file}: README.md line {} says expect `{}`, the file says `{expect}`",
                row.line, row.expect
            ));
        }
        // A row naming several files gives their counts in the same order, `a / b / c`.
        let position = row.files.iter().position(|f| *f == file).unwrap_or(0);
        let cells: Vec<&str> = row.seeds.split('/').map(str::trim).collect();
        let cell = if cells.len() == row.files.len() {
            cells[position]
        } else {
            row.seeds.as_str()
        };
        let want = thousands(contract.ci.seeds);
        if cell != want {
            wrong.push(format!(
                "{file}: README.md line {} gives {cell:?} CI seeds, its [ci] table says {want} \
                 (a row naming several files lists their counts as `a / b / c`)",
                row.line
            ));
        }
    }
    for row in &rows {
        for file in &row.files {
            if !contracts
                .iter()
                .any(|c| format!("{}.toml", c.name) == *file)
            {
                wrong.push(format!(
                    "README.md line {} names `{file}`, which is not in scenarios/",
                    row.line
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The README's "Seed sweeps" section states the total the `[ci]` tables add up to.
#[test]
fn the_readme_seed_total_is_the_contracts() {
    let contracts = contracts().unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    let seeds: u64 = contracts.iter().map(|c| c.ci.seeds).sum();
    let twice: u64 = contracts.iter().map(|c| c.ci.determinism_seeds).sum();
    let claim = format!(
        "CI runs {} seeds of the scenario files, {} of them twice",
        thousands(seeds),
        thousands(twice)
    );
    let readme = readme();
    let section = readme
        .split("## Seed sweeps")
        .nth(1)
        .expect("README.md has a '## Seed sweeps' section");
    assert!(
        section.replace('\n', " ").contains(&claim),
        "README.md's 'Seed sweeps' section must say \"{claim}\" (the sum of the [ci] tables)"
    );
}
