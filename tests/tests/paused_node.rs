//! A node the simulator pauses must run its timers again once the pause ends.
//!
//! Regression for the swarm quarantine `gossip-ring-change-under-faults` (swarm seeds 1538 and
//! 5359): the event loop defers a paused node's events to the end of the pause, and a deferred
//! timer left the node's timer marked armed at a past time, so no timer was ever armed again. The
//! node stopped gossiping; once its own leave had spread, nobody gossiped to it (it is `Left`), and
//! it kept the old ring for good.

use sim::{run_seed, RunOptions, Scenario};

/// `gossip-5` without its scripted faults: node 3 is paused from 5 s to 7 s, then an operator
/// makes it leave at 9 s (issued on another node). As in swarm seed 1538, the pause comes first:
/// only a node that runs its own gossip rounds asks the others, who no longer gossip to a `Left`
/// member, for the new ring.
fn leave_after_pause() -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/gossip-5.toml");
    let text = std::fs::read_to_string(path).expect("gossip-5.toml is readable");
    let without_faults: String = text
        .split("[[fault]]")
        .next()
        .expect("split yields at least one piece")
        .to_string();
    let faults = "
[[fault]]
at_ms = 5000
pause = { node = 3, ms = 2000 }

[[fault]]
at_ms = 9000
leave = 3
";
    // The checks follow the faults in the file; keep them.
    let checks = text
        .split("[check]")
        .nth(1)
        .expect("gossip-5.toml has a [check] table");
    let text = format!("{without_faults}{faults}\n[check]{checks}");
    Scenario::parse("leave-after-pause", &text).expect("the edited scenario parses")
}

/// Times (ms) of the trace lines that end with `what`.
fn times_of(trace: &[String], what: &str) -> Vec<f64> {
    trace
        .iter()
        .filter(|line| line.trim_end().ends_with(what))
        .filter_map(|line| line.split("ms").next()?.trim().parse().ok())
        .collect()
}

#[test]
fn a_paused_node_ticks_again_after_the_pause() {
    let scenario = leave_after_pause();
    for seed in 0..3 {
        let options = RunOptions {
            trace: true,
            ..RunOptions::default()
        };
        let run = run_seed(&scenario, "leave-after-pause", seed, options).expect("runs");
        let pause_end_ms = 7000.0;
        let timers_after = times_of(&run.trace, "n3 timer")
            .into_iter()
            .filter(|&at| at > pause_end_ms)
            .count();
        // One gossip round every 100 ms: the resumed node has dozens of timers before the end.
        assert!(
            timers_after > 10,
            "seed {seed}: n3 ran {timers_after} timers after its pause"
        );
    }
}

#[test]
fn a_node_that_was_paused_learns_of_its_later_leave() {
    let scenario = leave_after_pause();
    for seed in 0..3 {
        let run =
            run_seed(&scenario, "leave-after-pause", seed, RunOptions::default()).expect("runs");
        let convergence = run
            .report
            .checks
            .iter()
            .find(|(name, _)| *name == "convergence")
            .map(|(_, verdict)| (verdict.word(), verdict.detail()));
        assert!(
            matches!(convergence, Some(("pass", _))),
            "seed {seed}: {convergence:?}"
        );
        assert!(run.report.as_expected(), "{}", run.report.replay_command());
    }
}
