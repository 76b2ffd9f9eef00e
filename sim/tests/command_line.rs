//! The `sim` binary as scripts call it: `--help` describes every option, and a seed range run in
//! child processes (`--jobs 2`) prints what one process (`--jobs 1`) prints, line for line, in
//! both the human and the JSON form (the parent parses its children's JSON lines into the same
//! typed report a single process makes).

use std::process::{Command, Output};

const SIM: &str = env!("CARGO_BIN_EXE_sim");
/// A scenario whose seeds are quick and all end in a violation, as it expects: the listing has
/// fail verdicts and non-empty check details to carry through the children.
const SCENARIO: &str = "lww-clock-skew.toml";

fn sim(args: &[&str]) -> Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new(SIM)
        .current_dir(root)
        .args(args)
        .output()
        .expect("sim runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

/// The output with what measures this machine taken out: `wall_ms` in JSON lines and the
/// timing after "events" in the summary line.
fn without_wall_time(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            if let Some((before, _)) = line.split_once(" events in ") {
                return format!("{before} events in ...");
            }
            match line.split_once("\"wall_ms\": ") {
                Some((before, after)) => {
                    let rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
                    format!("{before}\"wall_ms\": _{rest}")
                }
                None => line.to_string(),
            }
        })
        .collect()
}

#[test]
fn help_exits_zero_and_describes_every_option() {
    let output = sim(&["--help"]);
    assert!(output.status.success(), "{:?}", output.status);
    let help = stdout(&output);
    for option in [
        "--seed ",
        "--seeds ",
        "--json",
        "--trace",
        "--check-determinism",
        "--report ",
        "--jobs ",
        "--drawn-toml ",
        "check-history",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(option))
            .unwrap_or_else(|| panic!("{option} is not in --help:\n{help}"));
        // An option is described: its line (or the next, in the long form) says more than its
        // name and value.
        let described = line.trim().len() > option.trim().len() + 12
            || help
                .lines()
                .skip_while(|l| *l != line)
                .nth(1)
                .is_some_and(|next| next.trim().len() > 12);
        assert!(described, "{option} has no description:\n{help}");
    }
    let output = sim(&["check-history", "--help"]);
    assert!(output.status.success(), "{:?}", output.status);
    assert!(stdout(&output).contains("--model"));
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(sim(&[]).status.code(), Some(2));
    let scenario = format!("scenarios/{SCENARIO}");
    assert_eq!(sim(&[&scenario, "--seeds", "5..3"]).status.code(), Some(2));
    assert_eq!(sim(&[&scenario, "--jobs", "0"]).status.code(), Some(2));
    assert_eq!(sim(&[&scenario, "--no-such-option"]).status.code(), Some(2));
}

#[test]
fn two_processes_print_what_one_prints() {
    let scenario = format!("scenarios/{SCENARIO}");
    for json in [false, true] {
        let mut args = vec![scenario.as_str(), "--seeds", "0..4"];
        if json {
            args.push("--json");
        }
        let one = sim(&[args.as_slice(), &["--jobs", "1"]].concat());
        let two = sim(&[args.as_slice(), &["--jobs", "2"]].concat());
        assert_eq!(one.status.code(), Some(0), "every seed as expected");
        assert_eq!(two.status.code(), one.status.code());
        let (one_text, two_text) = (stdout(&one), stdout(&two));
        assert_eq!(
            without_wall_time(&two_text),
            without_wall_time(&one_text),
            "--jobs 2 and --jobs 1 differ (json: {json})"
        );
        if json {
            assert_eq!(one_text.lines().count(), 4);
            assert_eq!(one_text.matches("\"as_expected\": true").count(), 4);
        } else {
            assert_eq!(one_text.lines().count(), 5, "4 seed lines and the summary");
            assert!(
                one_text.contains("4 seeds, 4 as expected; "),
                "summary line missing:\n{one_text}"
            );
        }
    }
}
