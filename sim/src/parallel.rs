//! `--jobs N`: a seed sweep split over N child processes of this same binary, each running a
//! contiguous sub-range single-threaded (so every seed stays deterministic), writing one JSON line
//! per seed to its own file. The parent shows progress on a terminal and then reports the seeds in
//! order, exactly as a single process would.

use std::io::{IsTerminal, Write};
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

/// Extracts a top-level scalar field from one of our own JSON lines.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\": ");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').map_or(rest, |r| r);
    let end = rest.find(['"', ',', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn lines_in(path: &PathBuf) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// One child process and the seeds it was given.
struct Part {
    child: Child,
    out: PathBuf,
    seeds: std::ops::Range<u64>,
}

/// The seeds of `seeds` that a child's output `text` reported, in order; a child runs its seeds
/// in order, so the first seed missing is the one it died on.
fn reported(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| field(line, "seed").and_then(|v| v.parse().ok()))
        .collect()
}

/// What became of a child's range: the seed it died on (if it died before the end) and the
/// seeds after it, still to run.
fn died_on(seeds: &std::ops::Range<u64>, reported: &[u64]) -> Option<(u64, std::ops::Range<u64>)> {
    let first_missing = (seeds.start..seeds.end).find(|s| !reported.contains(s))?;
    Some((first_missing, first_missing + 1..seeds.end))
}

/// Runs the sweep; the exit code is non-zero if any seed was not as expected.
///
/// A seed that panics is reported by its child (message and replay command) and the child goes
/// on; a child that dies anyway (an abort, a stack overflow) loses only the seed it was running:
/// that seed is reported as such and the rest of its range runs in a new child.
pub fn run(sweep: &Sweep<'_>, wall_clock: fn() -> std::time::Instant) -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("cannot find this executable to start children");
        return ExitCode::from(2);
    };
    let total = sweep.seeds.end - sweep.seeds.start;
    let jobs = sweep.jobs.clamp(1, total.max(1));
    let dir = std::env::temp_dir().join(format!("ringkv-sim-sweep-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
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
                return ExitCode::from(2);
            }
        }
    }
    let terminal = std::io::stderr().is_terminal();
    // Lines by seed, so the report comes out in seed order whatever order children finish in.
    let mut lines: std::collections::BTreeMap<u64, String> = std::collections::BTreeMap::new();
    let mut finished_lines = 0usize;
    while !running.is_empty() {
        let mut still = Vec::new();
        for mut part in running {
            match part.child.try_wait() {
                Ok(None) => still.push(part),
                status => {
                    let text = std::fs::read_to_string(&part.out).unwrap_or_default();
                    let seen = reported(&text);
                    for line in text.lines() {
                        if let Some(seed) = field(line, "seed").and_then(|v| v.parse().ok()) {
                            lines.insert(seed, line.to_string());
                        }
                    }
                    finished_lines += seen.len();
                    if let Some((seed, rest)) = died_on(&part.seeds, &seen) {
                        let how = match status {
                            Ok(Some(s)) => format!("the child running it exited with {s}"),
                            _ => "the child running it could not be waited for".to_string(),
                        };
                        lines.insert(seed, died_json(sweep.scenario, seed, &how));
                        finished_lines += 1;
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
        if terminal {
            let done = finished_lines + running.iter().map(|p| lines_in(&p.out)).sum::<usize>();
            let width = 40usize;
            let filled = (done * width) / usize::try_from(total).unwrap_or(1).max(1);
            eprint!(
                "\r[{}{}] {done}/{total} seeds",
                "#".repeat(filled.min(width)),
                ".".repeat(width - filled.min(width))
            );
            let _ = std::io::stderr().flush();
        }
        if running.is_empty() {
            break;
        }
        // Polling the children's progress for display only; results are read after they exit.
        std::thread::sleep(Duration::from_millis(200));
    }
    if terminal {
        eprintln!();
    }
    let mut unexpected = Vec::new();
    let (mut seen, mut events, mut sim_ms) = (0u64, 0u64, 0u64);
    for line in lines.values() {
        seen += 1;
        events += field(line, "events")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        sim_ms += field(line, "sim_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let panic = field_string(line, "panic");
        if field(line, "as_expected") != Some("true") {
            unexpected.push((
                field(line, "seed").unwrap_or("?").to_string(),
                field(line, "replay").unwrap_or("").to_string(),
                panic.clone(),
            ));
        }
        if sweep.json {
            println!("{line}");
        } else if let Some(panic) = &panic {
            println!(
                "seed {:>6}  PANIC      {panic}  << UNEXPECTED",
                field(line, "seed").unwrap_or("?"),
            );
        } else {
            println!(
                "seed {:>6}  {}  avail {:>8}  fp {}{}",
                field(line, "seed").unwrap_or("?"),
                if field(line, "ok") == Some("true") {
                    "pass     "
                } else {
                    "violation"
                },
                field(line, "availability").unwrap_or("?"),
                field(line, "fingerprint").unwrap_or("?"),
                if field(line, "as_expected") == Some("true") {
                    ""
                } else {
                    "  << UNEXPECTED"
                }
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !sweep.json {
        let wall = start.elapsed().as_secs_f64().max(1e-9);
        println!(
            "{total} seeds on {jobs} processes, {} as expected; {events} events in {wall:.1} s ({:.0} events/s, {:.0}x real time)",
            seen.saturating_sub(unexpected.len() as u64),
            events as f64 / wall,
            sim_ms as f64 / 1000.0 / wall
        );
    }
    for (seed, replay, panic) in &unexpected {
        match panic {
            Some(panic) => eprintln!("seed {seed} panicked: {panic}; replay: {replay}"),
            None => eprintln!("seed {seed} did not match expect; replay: {replay}"),
        }
    }
    if seen != total {
        eprintln!("only {seen} of {total} seeds reported");
        return ExitCode::from(2);
    }
    if unexpected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A string field of one of our JSON lines, unescaped enough to print (`\"` and `\\`).
fn field_string(line: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\": \"");
    let start = line.find(&key)? + key.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Some(out)
}

/// The JSON line of a seed whose child process died while running it.
fn died_json(scenario: &str, seed: u64, how: &str) -> String {
    use sim::report::json_string;
    format!(
        "{{\"scenario\": {}, \"seed\": {seed}, \"ok\": false, \"as_expected\": false, \"panic\": {}, \"replay\": {}}}",
        json_string(scenario),
        json_string(&format!("no report: {how}")),
        json_string(&format!("cargo run --release -p sim -- {scenario} --seed {seed}"))
    )
}

#[cfg(test)]
mod tests {
    use super::{died_json, died_on, field, field_string, reported};

    #[test]
    fn reads_our_json_fields() {
        let line = r#"{"scenario": "p", "seed": 7, "ok": true, "as_expected": false, "replay": "cargo run -- x --seed 7"}"#;
        assert_eq!(field(line, "seed"), Some("7"));
        assert_eq!(field(line, "ok"), Some("true"));
        assert_eq!(field(line, "as_expected"), Some("false"));
        assert_eq!(field(line, "replay"), Some("cargo run -- x --seed 7"));
        assert_eq!(field(line, "missing"), None);
    }

    #[test]
    fn a_child_that_died_loses_only_the_seed_it_was_running() {
        let text = "{\"seed\": 10, \"as_expected\": true}\n{\"seed\": 11, \"as_expected\": true}\n";
        let seen = reported(text);
        assert_eq!(seen, vec![10, 11]);
        assert_eq!(died_on(&(10..15), &seen), Some((12, 13..15)));
        assert_eq!(died_on(&(10..12), &seen), None);
        assert_eq!(died_on(&(10..13), &seen), Some((12, 13..13)));
        let line = died_json("s.toml", 12, "the child running it exited with signal 6");
        assert_eq!(field(&line, "seed"), Some("12"));
        assert_eq!(field(&line, "as_expected"), Some("false"));
        assert_eq!(
            field_string(&line, "panic").as_deref(),
            Some("no report: the child running it exited with signal 6")
        );
    }

    #[test]
    fn string_fields_are_unescaped() {
        let line = r#"{"seed": 3, "panic": "a \"quoted\" \\ word", "replay": "x"}"#;
        assert_eq!(
            field_string(line, "panic").as_deref(),
            Some(r#"a "quoted" \ word"#)
        );
        assert_eq!(field_string(line, "missing"), None);
    }
}
