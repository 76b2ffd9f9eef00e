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

/// Runs the sweep; the exit code is non-zero if any seed was not as expected.
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
    let mut children: Vec<(Child, PathBuf)> = Vec::new();
    for job in 0..jobs {
        let lo = sweep.seeds.start + total * job / jobs;
        let hi = sweep.seeds.start + total * (job + 1) / jobs;
        let out = dir.join(format!("part-{job}.jsonl"));
        let Ok(file) = std::fs::File::create(&out) else {
            eprintln!("cannot create {}", out.display());
            return ExitCode::from(2);
        };
        let mut command = Command::new(&exe);
        command
            .arg(sweep.scenario)
            .args(["--seeds", &format!("{lo}..{hi}"), "--json", "--jobs", "1"])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null());
        if sweep.check_determinism {
            command.arg("--check-determinism");
        }
        match command.spawn() {
            Ok(child) => children.push((child, out)),
            Err(e) => {
                eprintln!("cannot start a child: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let terminal = std::io::stderr().is_terminal();
    loop {
        let mut running = 0;
        for (child, _) in &mut children {
            running += usize::from(matches!(child.try_wait(), Ok(None)));
        }
        if terminal {
            let done: usize = children.iter().map(|(_, p)| lines_in(p)).sum();
            let width = 40usize;
            let filled = (done * width) / usize::try_from(total).unwrap_or(1).max(1);
            eprint!(
                "\r[{}{}] {done}/{total} seeds",
                "#".repeat(filled),
                ".".repeat(width - filled.min(width))
            );
            let _ = std::io::stderr().flush();
        }
        if running == 0 {
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
    for (_, path) in &children {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            seen += 1;
            events += field(line, "events")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            sim_ms += field(line, "sim_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if field(line, "as_expected") != Some("true") {
                unexpected.push((
                    field(line, "seed").unwrap_or("?").to_string(),
                    field(line, "replay").unwrap_or("").to_string(),
                ));
            }
            if sweep.json {
                println!("{line}");
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
    }
    let _ = std::fs::remove_dir_all(&dir);
    if seen != total {
        eprintln!("only {seen} of {total} seeds reported: a child failed");
        return ExitCode::from(2);
    }
    if !sweep.json {
        let wall = start.elapsed().as_secs_f64().max(1e-9);
        println!(
            "{total} seeds on {jobs} processes, {} as expected; {events} events in {wall:.1} s ({:.0} events/s, {:.0}x real time)",
            total - unexpected.len() as u64,
            events as f64 / wall,
            sim_ms as f64 / 1000.0 / wall
        );
    }
    for (seed, replay) in &unexpected {
        eprintln!("seed {seed} did not match expect; replay: {replay}");
    }
    if unexpected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_our_json_fields() {
        let line = r#"{"scenario": "p", "seed": 7, "ok": true, "as_expected": false, "replay": "cargo run -- x --seed 7"}"#;
        assert_eq!(field(line, "seed"), Some("7"));
        assert_eq!(field(line, "ok"), Some("true"));
        assert_eq!(field(line, "as_expected"), Some("false"));
        assert_eq!(field(line, "replay"), Some("cargo run -- x --seed 7"));
        assert_eq!(field(line, "missing"), None);
    }
}
