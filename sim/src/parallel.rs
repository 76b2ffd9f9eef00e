//! `--jobs N`: a seed sweep split over N child processes of this same binary, each running a
//! contiguous sub-range single-threaded (so every seed stays deterministic), writing one JSON line
//! per seed to its own file. The parent shows progress on a terminal, parses the children's lines
//! with serde_json into the [`SeedLine`]s a single process makes, and reports them in seed order
//! through the same code, so `--jobs N` prints what `--jobs 1` prints.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sim::report::{PanicLine, SeedLine, SweepTotals};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

/// What the parent needs to start the children.
pub struct Sweep<'a> {
    /// Scenario file.
    pub scenario: &'a str,
    /// Seeds to run.
    pub seeds: std::ops::Range<u64>,
    /// Child processes.
    pub jobs: u64,
    /// Print JSON lines instead of the human lines.
    pub json: bool,
    /// Pass `--check-determinism` on.
    pub check_determinism: bool,
}

/// The seed lines of a child's output, in the order printed. A line that does not parse (a child
/// killed while writing it) is left out, so its seed counts as not reported.
fn parse_lines(text: &str) -> Vec<SeedLine> {
    text.lines()
        .filter_map(|line| SeedLine::parse(line).ok())
        .collect()
}

/// The progress bar of a seed sweep of `total` seeds, drawn on stderr only when stderr is a
/// terminal (indicatif hides it otherwise), so logs and tests see nothing of it.
pub fn sweep_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "[{bar:40}] {pos}/{len} seeds, {msg}{elapsed} elapsed, eta {eta}",
    ) {
        bar.set_style(style.progress_chars("#>."));
    }
    bar.set_message("0 not as expected, ");
    bar
}

/// Shows on `bar` how many seeds have reported and how many of them were not as expected.
pub fn show_progress(bar: &ProgressBar, done: u64, unexpected: u64) {
    bar.set_message(format!("{unexpected} not as expected, "));
    bar.set_position(done);
}

/// Seeds a running child has reported so far, and how many of them were not as expected.
fn progress_of(path: &PathBuf) -> (u64, u64) {
    let lines = parse_lines(&std::fs::read_to_string(path).unwrap_or_default());
    let unexpected = lines.iter().filter(|l| !l.as_expected()).count();
    (lines.len() as u64, unexpected as u64)
}

/// One child process and the seeds it was given.
struct Part {
    child: Child,
    out: PathBuf,
    seeds: std::ops::Range<u64>,
}

/// What became of a child's range: the seed it died on (if it died before the end) and the
/// seeds after it, still to run.
fn died_on(seeds: &std::ops::Range<u64>, reported: &[u64]) -> Option<(u64, std::ops::Range<u64>)> {
    let first_missing = (seeds.start..seeds.end).find(|s| !reported.contains(s))?;
    Some((first_missing, first_missing + 1..seeds.end))
}

/// Runs the sweep: prints every seed's line in seed order and gives the totals and the wall
/// time for the caller's summary, or the exit code of a sweep that could not run.
///
/// A seed that panics is reported by its child (message and replay command) and the child goes
/// on; a child that dies anyway (an abort, a stack overflow) loses only the seed it was running:
/// that seed is reported as such and the rest of its range runs in a new child.
pub fn run(
    sweep: &Sweep<'_>,
    wall_clock: fn() -> std::time::Instant,
) -> Result<(SweepTotals, f64), ExitCode> {
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("cannot find this executable to start children");
        return Err(ExitCode::from(2));
    };
    let total = sweep.seeds.end - sweep.seeds.start;
    let jobs = sweep.jobs.clamp(1, total.max(1));
    let dir = std::env::temp_dir().join(format!("ringkv-sim-sweep-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return Err(ExitCode::from(2));
    }
    let start = wall_clock();
    let mut spawned = 0u64;
    let mut spawn = |seeds: std::ops::Range<u64>| -> Result<Part, String> {
        let out = dir.join(format!("part-{spawned}.jsonl"));
        spawned += 1;
        let file = std::fs::File::create(&out)
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let mut command = Command::new(&exe);
        command
            .arg(sweep.scenario)
            .args([
                "--seeds",
                &format!("{}..{}", seeds.start, seeds.end),
                "--json",
                "--jobs",
                "1",
            ])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null());
        if sweep.check_determinism {
            command.arg("--check-determinism");
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start a child: {e}"))?;
        Ok(Part { child, out, seeds })
    };
    let mut running: Vec<Part> = Vec::new();
    for job in 0..jobs {
        let lo = sweep.seeds.start + total * job / jobs;
        let hi = sweep.seeds.start + total * (job + 1) / jobs;
        match spawn(lo..hi) {
            Ok(part) => running.push(part),
            Err(e) => {
                eprintln!("{e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    let bar = sweep_bar(total);
    // Lines by seed, so the report comes out in seed order whatever order children finish in.
    let mut lines: BTreeMap<u64, SeedLine> = BTreeMap::new();
    while !running.is_empty() {
        let mut still = Vec::new();
        for mut part in running {
            match part.child.try_wait() {
                Ok(None) => still.push(part),
                status => {
                    let text = std::fs::read_to_string(&part.out).unwrap_or_default();
                    let parsed = parse_lines(&text);
                    let seen: Vec<u64> = parsed.iter().map(SeedLine::seed).collect();
                    for line in parsed {
                        lines.insert(line.seed(), line);
                    }
                    if let Some((seed, rest)) = died_on(&part.seeds, &seen) {
                        let how = match status {
                            Ok(Some(s)) => format!("the child running it exited with {s}"),
                            _ => "the child running it could not be waited for".to_string(),
                        };
                        lines.insert(seed, died_line(sweep.scenario, seed, &how));
                        if !rest.is_empty() {
                            match spawn(rest) {
                                Ok(part) => still.push(part),
                                Err(e) => eprintln!("{e}"),
                            }
                        }
                    }
                }
            }
        }
        running = still;
        if !bar.is_hidden() {
            let (mut done, mut unexpected) = (
                lines.len() as u64,
                lines.values().filter(|l| !l.as_expected()).count() as u64,
            );
            for part in &running {
                let (d, u) = progress_of(&part.out);
                done += d;
                unexpected += u;
            }
            show_progress(&bar, done, unexpected);
        }
        if running.is_empty() {
            break;
        }
        // Polling the children's progress for display only; results are read after they exit.
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&dir);
    let mut totals = SweepTotals::default();
    for line in lines.values() {
        if sweep.json {
            println!("{}", line.to_json());
        } else {
            println!("{}", line.human());
        }
        totals.add(line);
    }
    Ok((totals, start.elapsed().as_secs_f64()))
}

/// The line of a seed whose child process died while running it.
fn died_line(scenario: &str, seed: u64, how: &str) -> SeedLine {
    SeedLine::Panic(PanicLine::new(scenario, seed, &format!("no report: {how}")))
}

#[cfg(test)]
mod tests {
    use super::{died_line, died_on, parse_lines};
    use sim::report::SeedLine;

    #[test]
    fn a_child_that_died_loses_only_the_seed_it_was_running() {
        let text = format!(
            "{}\n{}\n{{\"seed\": 12, \"as_exp",
            died_line("s.toml", 10, "x").to_json(),
            died_line("s.toml", 11, "y").to_json()
        );
        let seen: Vec<u64> = parse_lines(&text).iter().map(SeedLine::seed).collect();
        assert_eq!(seen, vec![10, 11], "a torn last line is not a report");
        assert_eq!(died_on(&(10..15), &seen), Some((12, 13..15)));
        assert_eq!(died_on(&(10..12), &seen), None);
        assert_eq!(died_on(&(10..13), &seen), Some((12, 13..13)));
        let line = died_line("s.toml", 12, "the child running it exited with signal 6");
        let read = SeedLine::parse(&line.to_json()).expect("parses");
        assert_eq!(read, line);
        assert_eq!(read.seed(), 12);
        assert!(!read.as_expected());
        let SeedLine::Panic(panic) = read else {
            panic!("a died line is a panic line");
        };
        assert_eq!(
            panic.panic,
            "no report: the child running it exited with signal 6"
        );
        assert_eq!(
            panic.replay,
            "cargo run --release -p sim -- s.toml --seed 12"
        );
    }
}
