//! `sim`: run scenarios under seeds, or check a history file.
//!
//! ```text
//! sim SCENARIO.toml [--seed N | --seeds A..B] [--json] [--trace] [--check-determinism]
//!     [--report FILE.html] [--jobs N] [--drawn-toml FILE] [--buggify-report]
//! sim check-history --model cas-register|kv-append|register FILE [--report FILE.html]
//! ```
//!
//! `sim --help` describes every option (clap derives it from the [`Cli`] declaration).

mod parallel;

use clap::Parser;
use sim::disk::{is_storage_scenario, StorageScenario};
use sim::report::{PanicLine, SeedLine, SweepTotals};
use sim::run::SeedRun;
use sim::swarm::{is_swarm_scenario, run_swarm_seed, SwarmFile};
use sim::{run_seed, RunOptions, Scenario};
use std::ops::Range;
use std::path::Path;
use std::process::ExitCode;

/// The simulator allocates and frees a message's bytes, its decoded table and its event for
/// every one of hundreds of thousands of messages a run; glibc's allocator spent about a tenth
/// of a 100-node run in those calls. The allocator does not change what a seed does: outputs
/// never depend on addresses, and fingerprints are compared against the system allocator's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Wall-clock milliseconds since `start`: reported, never fed into the simulation.
#[allow(clippy::disallowed_methods, reason = "wall time is only reported")]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// The command line. clap derives the parser and `--help` from these doc comments, so every
/// option is described where it is declared and `--help` exits 0.
#[derive(Debug, Parser)]
#[command(
    name = "sim",
    about = "Runs ringkv scenarios under seeds in the deterministic simulator, or checks a history file.",
    long_about = "Runs ringkv scenarios under seeds in the deterministic simulator, or checks a \
                  history file. The same scenario and seed give the same trace fingerprint on \
                  every run and machine. Exits 0 when every seed's outcome is the scenario's \
                  `expect`, 1 when some seed's is not, 2 on a usage, scenario or IO error.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// Running a scenario file.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenario file (a TOML file in scenarios/: an ordinary scenario, a swarm file or a
    /// storage-only scenario).
    #[arg(value_name = "SCENARIO.toml", required = true)]
    scenario: Option<String>,
    /// Run one seed (default 42); a single seed prints the full human summary.
    #[arg(long, value_name = "N", conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run seeds A (inclusive) to B (exclusive), one line per seed and a summary line.
    #[arg(long, value_name = "A..B", value_parser = parse_seed_range)]
    seeds: Option<Range<u64>>,
    /// One JSON object per seed on one line (scenario, seed, ok, as_expected, fingerprint, ops,
    /// availability, latency, checks, events, sim_ms, wall_ms, buggify, replay, drawn) instead
    /// of the human lines.
    #[arg(long)]
    json: bool,
    /// Print the event log (one line per event) before the summary.
    #[arg(long)]
    trace: bool,
    /// Run each seed twice and compare the trace fingerprints.
    #[arg(long)]
    check_determinism: bool,
    /// On a linearizability violation, write a self-contained HTML page of the smallest failing
    /// window (FILE.seedN.html per seed for a range).
    #[arg(long, value_name = "FILE.html")]
    report: Option<String>,
    /// Run a seed range in N child processes (default: all cores), each seed still
    /// single-threaded and deterministic; ignored with --trace or --report.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// Swarm files only: write the ordinary scenario file that --seed N draws (to edit and
    /// replay one combination) and exit.
    #[arg(long, value_name = "FILE")]
    drawn_toml: Option<String>,
    /// After the seeds, print the fault-site table: every registered `buggify!` site with the
    /// seeds at which it was reached while live and fired, and the sites that never fired (on
    /// stderr with --json).
    #[arg(long)]
    buggify_report: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Check a history file for linearizability and print `verdict: linearizable`,
    /// `not linearizable` (with an ASCII timeline of the failing window) or `unknown`.
    /// Exits 0 when linearizable, 1 otherwise, 2 on an unreadable file.
    CheckHistory {
        /// The model, which also names the file format: cas-register (Jepsen etcd logs),
        /// kv-append (Porcupine kv files) or register (ringkv register logs).
        #[arg(long, value_parser = ["cas-register", "kv-append", "register"])]
        model: String,
        /// The history file.
        #[arg(value_name = "FILE")]
        file: String,
        /// On a violation, write a self-contained HTML page of the failing window.
        #[arg(long, value_name = "FILE.html")]
        report: Option<String>,
    },
}

/// `A..B` with A < B.
fn parse_seed_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not A..B"))?;
    let a: u64 = a.parse().map_err(|_| format!("`{a}` is not a number"))?;
    let b: u64 = b.parse().map_err(|_| format!("`{b}` is not a number"))?;
    if a >= b {
        return Err(format!("{a}..{b} is empty"));
    }
    Ok(a..b)
}

/// What a scenario run was asked for, with the defaults filled in.
struct Args {
    scenario: String,
    seeds: Range<u64>,
    json: bool,
    trace: bool,
    check_determinism: bool,
    report: Option<String>,
    jobs: u64,
    drawn_toml: Option<String>,
    buggify_report: bool,
}

impl RunArgs {
    fn resolve(self) -> Args {
        let seeds = match (self.seeds, self.seed) {
            (Some(range), _) => range,
            (None, Some(seed)) => seed..seed.saturating_add(1),
            (None, None) => 42..43,
        };
        let jobs = self
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
        Args {
            scenario: self.scenario.unwrap_or_default(),
            seeds,
            json: self.json,
            trace: self.trace,
            check_determinism: self.check_determinism,
            report: self.report,
            jobs,
            drawn_toml: self.drawn_toml,
            buggify_report: self.buggify_report,
        }
    }
}

thread_local! {
    /// Where and why the last panic on this thread happened, kept by the panic hook so that a
    /// caught panic can be reported with its location.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Prints each panic as usual and keeps its message and location for [`guarded`], which reports
/// it on the seed's own line.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        let text = info.to_string().replace('\n', " ");
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
    }));
}

/// Runs `f`, turning a panic into its message (with location when the hook saw it), so that one
/// panicking seed is reported as such and the sweep goes on with the next.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    LAST_PANIC.with(|last| last.borrow_mut().take());
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked (no message)".to_string())
    })
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    if let Some(Subcommand::CheckHistory {
        model,
        file,
        report,
    }) = cli.command
    {
        return check_history(&model, &file, report.as_deref());
    }
    let args = cli.run.resolve();
    let text = std::fs::read_to_string(&args.scenario).unwrap_or_default();
    let mut runner: Box<dyn FnMut(u64) -> Result<SeedRun, String>> = if is_storage_scenario(&text) {
        let scenario = match StorageScenario::load(Path::new(&args.scenario)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let path = args.scenario.clone();
        Box::new(move |seed| {
            Ok(SeedRun {
                report: scenario.run_seed(&path, seed),
                trace: Vec::new(),
                timeline: None,
                html: None,
            })
        })
    } else if is_swarm_scenario(&text) {
        let swarm = match SwarmFile::load(Path::new(&args.scenario)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let options = RunOptions {
            trace: args.trace,
            check_determinism: args.check_determinism,
        };
        if let Some(out) = &args.drawn_toml {
            // Swarm only: save the scenario one seed draws, to edit and replay that combination.
            return match swarm.draw(args.seeds.start) {
                Ok(drawn) => match std::fs::write(out, drawn.toml) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("cannot write {out}: {e}");
                        ExitCode::from(2)
                    }
                },
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            };
        }
        let path = args.scenario.clone();
        Box::new(move |seed| run_swarm_seed(&swarm, &path, seed, options))
    } else {
        let scenario = match Scenario::load(Path::new(&args.scenario)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let options = RunOptions {
            trace: args.trace,
            check_determinism: args.check_determinism,
        };
        let path = args.scenario.clone();
        Box::new(move |seed| run_seed(&scenario, &path, seed, options))
    };
    let single = args.seeds.end - args.seeds.start == 1;
    if !single && args.jobs > 1 && !args.trace && args.report.is_none() {
        let sweep = parallel::Sweep {
            scenario: &args.scenario,
            seeds: args.seeds.clone(),
            jobs: args.jobs,
            json: args.json,
            check_determinism: args.check_determinism,
        };
        return match parallel::run(&sweep, wall_clock) {
            Ok((totals, wall_s)) => {
                let code = finish_sweep(&totals, false, &args, wall_s);
                let total = args.seeds.end - args.seeds.start;
                if totals.seeds != total {
                    eprintln!("only {} of {total} seeds reported", totals.seeds);
                    return ExitCode::from(2);
                }
                code
            }
            Err(code) => code,
        };
    }
    let mut totals = SweepTotals::default();
    // A range shows progress on a terminal; one seed prints its summary at once.
    let bar = if single {
        indicatif::ProgressBar::hidden()
    } else {
        parallel::sweep_bar(args.seeds.end - args.seeds.start)
    };
    let sweep_start = wall_clock();
    for seed in args.seeds.clone() {
        let start = wall_clock();
        let line = match guarded(|| runner(seed)) {
            Ok(Ok(mut run)) => {
                run.report.wall_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                bar.suspend(|| {
                    for line in &run.trace {
                        println!("{line}");
                    }
                });
                if let (Some(path), Some(html)) = (&args.report, &run.html) {
                    let path = if single {
                        path.clone()
                    } else {
                        format!("{path}.seed{seed}.html")
                    };
                    let written = std::fs::write(&path, html);
                    bar.suspend(|| match written {
                        Ok(()) => eprintln!("violation report written to {path}"),
                        Err(e) => eprintln!("cannot write {path}: {e}"),
                    });
                }
                if single && !args.json {
                    print!("{}", run.report.render(true));
                    if let Some(timeline) = &run.timeline {
                        println!("smallest failing window:\n{timeline}");
                    }
                }
                SeedLine::Report(Box::new(run.report.line()))
            }
            Ok(Err(e)) => {
                eprintln!("{}: {e}", args.scenario);
                return ExitCode::from(2);
            }
            Err(panic) => SeedLine::Panic(PanicLine::new(&args.scenario, seed, &panic)),
        };
        bar.suspend(|| {
            if args.json {
                println!("{}", line.to_json());
            } else if !single || matches!(line, SeedLine::Panic(_)) {
                println!("{}", line.human());
            }
        });
        totals.add(&line);
        parallel::show_progress(&bar, totals.seeds, totals.unexpected.len() as u64);
    }
    bar.finish_and_clear();
    finish_sweep(&totals, single, &args, sweep_start.elapsed().as_secs_f64())
}

/// Prints what follows a sweep's per-seed lines (the summary line for a human range listing;
/// why each unexpected seed was and how to replay it, on stderr) and gives the exit code. One
/// process and a `--jobs` parent both end here, so they say the same.
fn finish_sweep(totals: &SweepTotals, single: bool, args: &Args, wall_s: f64) -> ExitCode {
    if !single && !args.json {
        println!("{}", totals.summary(wall_s));
    }
    if args.buggify_report {
        if args.json {
            eprint!("{}", totals.buggify_table());
        } else {
            print!("{}", totals.buggify_table());
        }
    }
    for why in &totals.unexpected {
        eprintln!("{why}");
    }
    if totals.unexpected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn check_history(model: &str, file: &str, report: Option<&str>) -> ExitCode {
    let report_path = report.map(Path::new);
    match ringkv_checker::check_history_file(model, Path::new(file), report_path) {
        Ok(result) => {
            print!("{result}");
            if let Some(path) = &report {
                println!("report written to {path}");
            }
            match result.verdict {
                ringkv_checker::Verdict::Linearizable => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("check-history: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_with_location() {
        install_panic_hook();
        let caught = guarded(|| -> u32 { panic!("seed 7 broke an invariant") });
        let message = caught.expect_err("panicked");
        assert!(message.contains("seed 7 broke an invariant"), "{message}");
        assert!(message.contains("main.rs"), "{message}");
        assert_eq!(guarded(|| 5), Ok(5));
    }

    #[test]
    fn a_panicking_seed_has_a_json_line_with_its_replay() {
        let line =
            SeedLine::Panic(PanicLine::new("scenarios/x.toml", 7, "boom \"here\"")).to_json();
        assert!(line.contains("\"seed\": 7"), "{line}");
        assert!(line.contains("\"as_expected\": false"), "{line}");
        assert!(line.contains("boom \\\"here\\\""), "{line}");
        assert!(
            line.contains("cargo run --release -p sim -- scenarios/x.toml --seed 7"),
            "{line}"
        );
    }
}
