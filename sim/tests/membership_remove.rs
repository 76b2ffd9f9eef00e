//! An operator's `remove` (issue #11, swarm quarantine "remove-departed-disk"): a removed node is
//! stopped for good, so whatever else the fault schedule says about it, the cluster must settle on
//! the ring without it.

use sim::checks::Verdict;
use sim::world::World;
use sim::{run_seed, RunOptions, Scenario};

/// Four nodes with gossip; n1 is removed at 1 s and the (independently drawn) nemesis schedule
/// restarts it at 1.3 s, before the cluster has judged it `Down`, so the operator's remove is
/// still being retried. Swarm seeds 125 and 760 drew this: a restart of the removed node brought
/// it back, it never looked `Down` again, the remove was retried for ever and the rings never
/// converged.
fn removed_then_restarted() -> Scenario {
    let text = r#"
name = "t"
description = "a removed node is restarted by the fault schedule"
duration_ms = 4000
settle_ms = 8000
[cluster]
nodes = 4
n = 3
r = 2
w = 2
gossip = true
suspect_after_ms = 400
down_after_ms = 600
anti_entropy_interval_ms = 200
[workload]
clients = 3
operations = 300
keys = 40
read_fraction = 0.5
value_bytes = [16, 64]
[[fault]]
at_ms = 1000
remove = 1
[[fault]]
at_ms = 1300
restart = 1
[check]
durability = true
convergence = true
"#;
    Scenario::parse("t.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_removed_node_stays_down_when_the_schedule_restarts_it() {
    let scenario = removed_then_restarted();
    for seed in 0..5 {
        let mut world = World::new(&scenario, seed, false).expect("builds");
        world.run();
        assert_eq!(
            world.ring_disagreement(),
            None,
            "seed {seed}: the rings did not converge"
        );
        assert_eq!(
            world.final_members(),
            vec![true, false, true, true],
            "seed {seed}"
        );
        let run = run_seed(&scenario, "t.toml", seed, RunOptions::default()).expect("runs");
        for (name, verdict) in &run.report.checks {
            assert!(
                !matches!(verdict, Verdict::Fail(_)),
                "seed {seed}: {name}: {verdict}"
            );
        }
    }
}

/// Three nodes with gossip: n2 crashes at 0.5 s and n1 is paused from 0.9 s to 2.9 s; `change`
/// adds the operator's change (and any further faults) so that no other member runs to issue it
/// on. Swarm seed 4454 drew this with a leave: the change was dropped as refused, so the rings
/// never converged on what the operator asked for.
fn changed_while_no_other_member_runs(change: &str) -> Scenario {
    let text = format!(
        r#"
name = "t"
description = "an operator change while every other member is down or paused"
duration_ms = 4000
settle_ms = 8000
[cluster]
nodes = 3
n = 2
r = 1
w = 2
gossip = true
suspect_after_ms = 400
down_after_ms = 600
anti_entropy_interval_ms = 200
[workload]
clients = 3
operations = 300
keys = 40
read_fraction = 0.5
value_bytes = [16, 64]
[[fault]]
at_ms = 500
crash = 2
[[fault]]
at_ms = 900
pause = {{ node = 1, ms = 2000 }}
{change}
[check]
durability = true
convergence = true
"#
    );
    Scenario::parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_operator_change_with_no_member_to_issue_it_on_is_retried() {
    for (name, change, members) in [
        (
            "leave n0",
            "[[fault]]\nat_ms = 1000\nleave = 0",
            vec![false, true, true],
        ),
        (
            "remove n2",
            "[[fault]]\nat_ms = 950\npause = { node = 0, ms = 2000 }\n\
             [[fault]]\nat_ms = 1000\nremove = 2",
            vec![true, true, false],
        ),
    ] {
        let scenario = changed_while_no_other_member_runs(change);
        for seed in 0..3 {
            let mut world = World::new(&scenario, seed, false).expect("builds");
            world.run();
            assert_eq!(world.ring_disagreement(), None, "{name}, seed {seed}");
            assert_eq!(world.final_members(), members, "{name}, seed {seed}");
        }
    }
}
