//! The simulator and its oracles, item by item of issue #11 (6–12): each test builds a small
//! scenario in which the defect showed, runs it, and asserts what the simulator or a check must
//! now do.

use sim::checks::Verdict;
use sim::world::{FinalRead, World};
use sim::{run_seed, RunOptions, Scenario};

/// A small cluster; `extra` is appended (sections and faults).
fn scenario(cluster: &str, workload: &str, extra: &str) -> Scenario {
    let text = format!(
        r#"
name = "t"
description = "test"
duration_ms = 5000
settle_ms = 5000
[cluster]
nodes = 3
n = 3
r = 2
w = 2
{cluster}
[workload]
clients = 4
value_bytes = [16, 64]
{workload}
{extra}
"#
    );
    match Scenario::parse("t.toml", &text) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Trace lines as (milliseconds, text).
fn traced(scenario: &Scenario, seed: u64) -> (World, Vec<(f64, String)>) {
    let mut world = World::new(scenario, seed, true).expect("builds");
    world.run();
    let lines = world
        .take_trace()
        .into_iter()
        .filter_map(|line| {
            let (ms, rest) = line.trim_start().split_once("ms")?;
            Some((ms.parse().ok()?, rest.trim().to_string()))
        })
        .collect();
    (world, lines)
}

#[test]
fn a_restarted_node_nobody_messages_still_runs_its_timers() {
    // n2 restarts at 2 s inside a partition that cuts it off from every node, and no client
    // talks to anyone: only its own timers can wake it.
    let s = scenario(
        "anti_entropy_interval_ms = 100",
        "operations = 0\nkeys = 1\nread_fraction = 0.5",
        r#"
[check]
durability = false
[[fault]]
at_ms = 1000
crash = 2
[[fault]]
at_ms = 1500
partition = [[2]]
[[fault]]
at_ms = 2000
restart = 2
"#,
    );
    let (_, lines) = traced(&s, 1);
    let woken = lines
        .iter()
        .filter(|(ms, line)| *ms > 2000.0 && *ms < 5000.0 && line == "n2 timer")
        .count();
    assert!(
        woken > 0,
        "n2 ran no timer between its restart and the end of the partition"
    );
}

#[test]
fn fsync_failures_stop_with_the_fault_phase() {
    // One fsync in ten fails while faults are on; in the liveness phase the disks are healed,
    // so repairs there poison no node and the final reads at `all` succeed.
    let s = scenario(
        "",
        "operations = 1000\nkeys = 10\nread_fraction = 0.5",
        "[disk]\nfsync_failure = 0.1\n[check]\ndurability = false",
    );
    let (world, lines) = traced(&s, 0);
    let failures: Vec<f64> = lines
        .iter()
        .filter(|(_, line)| line.contains("fsync fails"))
        .map(|(ms, _)| *ms)
        .collect();
    assert!(!failures.is_empty(), "no fsync failed in the fault phase");
    assert!(
        failures.iter().all(|ms| *ms < 5000.0),
        "an fsync failed in the liveness phase: {failures:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(_, line)| line.contains("storage poisoned")),
        "the trace does not show storage poisoning"
    );
    assert_eq!(world.final_reads().len(), 10);
    for (key, read) in world.final_reads() {
        assert!(
            matches!(read, FinalRead::Values(_)),
            "final read of key {key}: {read:?}"
        );
    }
}

#[test]
fn the_trace_shows_hints_expiring() {
    // Sloppy quorum with hints that age past the limit after 1 ms: n2 is down, fallbacks keep
    // hints for it (n = 3 of 5 nodes). A hint may be the only copy of an acknowledged write, so
    // age never deletes it (issue #11 item 3): the trace shows it aged, kept and replayed first.
    let text = r#"
name = "t"
description = "test"
duration_ms = 6000
settle_ms = 3000
[cluster]
nodes = 5
n = 3
r = 2
w = 2
sloppy_quorum = true
sloppy_after_ms = 50
hint_age_max_ms = 1
[workload]
clients = 4
operations = 400
keys = 20
read_fraction = 0.2
value_bytes = [16, 64]
[check]
durability = false
[[fault]]
at_ms = 500
crash = 2
"#;
    let s = Scenario::parse("t.toml", text).expect("valid");
    let (world, lines) = traced(&s, 5);
    assert!(world.hint_stats().stored > 0, "no hint was stored");
    assert!(
        lines
            .iter()
            .any(|(_, line)| line.contains("hint(s) past hint_age_max_ms")),
        "the trace does not show hints ageing past their limit"
    );
}

#[test]
fn a_wiped_disk_comes_back_empty_and_is_refilled() {
    // One wipe of a node with W = 2: nothing acknowledged is lost, and the fault shows in the
    // trace.
    let s = scenario(
        "anti_entropy_interval_ms = 200",
        "operations = 600\nkeys = 300\nread_fraction = 0.2",
        "[[fault]]\nat_ms = 2500\nwipe = 1",
    );
    let (_, lines) = traced(&s, 2);
    assert!(lines
        .iter()
        .any(|(ms, line)| *ms == 2500.0 && line.contains("n1 disk wiped")));
    for seed in 0..5 {
        let run = run_seed(&s, "t.toml", seed, RunOptions::default()).expect("runs");
        let (_, durability) = &run.report.checks[0];
        assert!(
            matches!(durability, Verdict::Pass(_)),
            "seed {seed}: {durability}"
        );
    }
}

#[test]
fn a_wipe_after_one_acknowledged_copy_is_a_loss_the_check_sees() {
    // W = 1 and the only replica that took a write is wiped while the others are cut off: the
    // durability check must report acknowledged writes that no member holds.
    let s = scenario(
        "anti_entropy_interval_ms = 200",
        "operations = 300\nkeys = 300\nread_fraction = 0.0\ndelete_fraction = 0.0",
        r#"
[[fault]]
at_ms = 1000
partition = [[0], [1], [2]]
[[fault]]
at_ms = 3000
wipe = 0
"#,
    )
    .with_w(1);
    let lost = (0..5).any(|seed| {
        let run = run_seed(&s, "t.toml", seed, RunOptions::default()).expect("runs");
        matches!(&run.report.checks[0].1, Verdict::Fail(why) if why.contains("held by no member"))
    });
    assert!(lost, "a wiped single copy went unnoticed on 5 seeds");
}

#[test]
fn a_run_whose_every_request_fails_does_not_pass() {
    // Every write needs all three replicas and one is down for the whole run: nothing is ever
    // acknowledged, so there is nothing for the durability check to judge.
    let s = scenario(
        "consistency = \"all\"",
        "operations = 200\nkeys = 10\nread_fraction = 0.5",
        "[[fault]]\nat_ms = 0\ncrash = 2",
    );
    let run = run_seed(&s, "t.toml", 0, RunOptions::default()).expect("runs");
    assert_eq!(run.report.ops.ok, 0);
    let (_, durability) = &run.report.checks[0];
    assert!(
        matches!(durability, Verdict::Fail(why) if why.contains("ok_operations_min")),
        "{durability}"
    );
}

#[test]
fn availability_over_time_sees_a_cut_that_the_count_hides() {
    // Two of three nodes are down for 3 of the 5 s: every request in that time fails or times
    // out, while clients blocked on timeouts send few of them.
    let s = scenario(
        "",
        "operations = 2000\nkeys = 10\nread_fraction = 0.5",
        r#"
[[fault]]
at_ms = 1000
crash = 1
[[fault]]
at_ms = 1000
crash = 2
[[fault]]
at_ms = 4000
restart = 1
[[fault]]
at_ms = 4000
restart = 2
"#,
    );
    let run = run_seed(&s, "t.toml", 0, RunOptions::default()).expect("runs");
    let time = &run.report.availability_time;
    assert_eq!((time.window_ms, time.windows), (1000, 5));
    assert!(
        time.some_ok <= 0.6,
        "windows with a success: {}",
        time.some_ok
    );
    assert!(time.all_ok <= time.some_ok);
    let json = run.report.to_json();
    assert!(json.contains("\"availability_time\": {\"window_ms\": 1000, \"windows\": 5"));
    assert!(run.report.render(false).contains("over time"));
}

/// Scenario edits the text form cannot express after parsing.
trait With {
    fn with_w(self, w: u8) -> Self;
}

impl With for Scenario {
    fn with_w(mut self, w: u8) -> Self {
        self.cluster.config.w = w;
        self
    }
}
