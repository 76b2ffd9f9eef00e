//! Running one seed of a scenario end to end: build the world, run both phases, check, report.

use crate::checks::{
    cas, convergence, counters, durability, linearizable, scan, siblings, ttl, Verdict,
};
use crate::history::OpOutcome;
use crate::report::{quantile, OpCounts, RunReport, TimeAvailability};
use crate::scenario::Scenario;
use crate::world::World;
use bytes::Bytes;
use ringkv_core::Record;
use std::collections::BTreeMap;

/// How to run a seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Keep a readable event log.
    pub trace: bool,
    /// Run the seed twice and compare fingerprints.
    pub check_determinism: bool,
}

/// The report of one seed, plus its trace if asked for.
pub struct SeedRun {
    /// The report (wall time not yet filled in).
    pub report: RunReport,
    /// Trace lines (empty unless tracing).
    pub trace: Vec<String>,
    /// The ASCII timeline of a linearizability violation.
    pub timeline: Option<String>,
    /// The HTML report of a linearizability violation.
    pub html: Option<String>,
}

/// Runs `seed` of `scenario` (read from `path`).
pub fn run_seed(
    scenario: &Scenario,
    path: &str,
    seed: u64,
    options: RunOptions,
) -> Result<SeedRun, String> {
    let mut world = World::new(scenario, seed, options.trace)?;
    world.run();
    let durable = world.durable_contents();
    let members: Vec<durability::MemberContents<'_>> = durable
        .iter()
        .zip(world.final_members())
        .enumerate()
        .filter(|(_, (_, member))| *member)
        .map(|(node, (contents, _))| (u32::try_from(node).unwrap_or(u32::MAX), contents))
        .collect();
    let durable: Vec<&BTreeMap<Bytes, Record>> = durable.iter().collect();
    let ok_writes = world
        .history
        .ops
        .iter()
        .filter(|op| op.is_write() && op.outcome == OpOutcome::Ok)
        .count() as u64;
    let ok_operations = world
        .history
        .ops
        .iter()
        .filter(|op| op.outcome == OpOutcome::Ok)
        .count() as u64;
    let ok_min = ok_operations_floor(
        scenario.ok_operations_min(),
        world.first_poisoning_ns(),
        world.fault_phase_end_ns(),
    );
    let mut checks: Vec<(&'static str, Verdict)> = Vec::new();
    checks.push((
        "durability",
        if scenario.check.durability {
            match world.recovery_failures() {
                [] => enough(
                    durability::check(
                        &world.history,
                        &members,
                        world.workload(),
                        world.final_reads(),
                        scenario.clocks_agree(),
                    ),
                    ok_writes,
                    ok_min,
                    "acknowledged writes",
                ),
                failures => {
                    Verdict::Fail(format!("storage did not recover: {}", failures.join("; ")))
                }
            }
        } else {
            Verdict::Skipped("disabled by the scenario".into())
        },
    ));
    let mut timeline = None;
    let mut html = None;
    checks.push((
        "linearizable",
        if scenario.check.linearizable {
            let title = format!("{} seed {seed}", scenario.name);
            let result = linearizable::check_history(&world.history, world.workload(), &title);
            timeline = result.timeline;
            html = result.html;
            enough(result.verdict, ok_operations, ok_min, "ok operations")
        } else {
            Verdict::Skipped("disabled by the scenario".into())
        },
    ));
    checks.push((
        "convergence",
        if scenario.check.convergence {
            let keys = scenario.workload.keys;
            let settled_ns = world
                .last_durable_change_ns()
                .saturating_sub(world.fault_phase_end_ns());
            match world.ring_disagreement() {
                Some(why) => Verdict::Fail(format!("rings did not converge: {why}")),
                None => enough(
                    convergence::check(
                        world.nodes_ring(),
                        scenario.cluster.config.n,
                        &durable,
                        world.workload(),
                        keys,
                        settled_ns as f64 / 1e6,
                    ),
                    ok_writes,
                    ok_min,
                    "acknowledged writes",
                ),
            }
        } else {
            Verdict::Skipped("disabled by the scenario".into())
        },
    ));
    if scenario.check.cas {
        // Listed only when enabled, so the summaries of scenarios without it stay as they were.
        let title = format!("{} seed {seed}", scenario.name);
        let result = cas::check_history(&world.history, &world.cas_steps, world.workload(), &title);
        timeline = timeline.or(result.timeline);
        html = html.or(result.html);
        checks.push((
            "cas",
            enough(result.verdict, ok_operations, ok_min, "ok operations"),
        ));
    }
    if scenario.check.siblings {
        // Listed only when enabled, so the summaries of scenarios without it stay as they were.
        checks.push((
            "siblings",
            enough(
                siblings::check(&world.history, &members, world.workload()),
                ok_writes,
                ok_min,
                "acknowledged writes",
            ),
        ));
    }
    if scenario.check.scan {
        // Listed only when enabled, so the summaries of scenarios without it stay as they were.
        let ring_changes_ns: Vec<u64> = scenario
            .faults
            .iter()
            .filter(|f| f.join.is_some() || f.leave.is_some() || f.remove.is_some())
            .map(|f| f.at_ms * 1_000_000)
            .collect();
        let verdict = scan::check(&world.history, scenario.clocks_agree(), &ring_changes_ns);
        checks.push(("scan", verdict));
    }
    if scenario.check.counters {
        // Listed only when enabled, so the summaries of scenarios without it stay as they were.
        checks.push((
            "counters",
            match world.ring_disagreement() {
                Some(why) => Verdict::Fail(format!("rings did not converge: {why}")),
                None => enough(
                    counters::check(
                        &world.history,
                        world.nodes_ring(),
                        scenario.cluster.config.n,
                        &durable,
                        world.workload(),
                        scenario.workload.keys,
                    ),
                    ok_writes,
                    ok_min,
                    "acknowledged increments",
                ),
            },
        ));
    }
    if scenario.check.ttl {
        // Listed only when enabled, so the summaries of scenarios without it stay as they were.
        checks.push((
            "ttl",
            enough(
                ttl::check(&world.history, scenario.clock_error_ms_max()),
                ok_operations,
                ok_min,
                "ok operations",
            ),
        ));
    }
    checks.push((
        "determinism",
        if options.check_determinism {
            let mut again = World::new(scenario, seed, false)?;
            again.run();
            let (a, b) = (world.fingerprint.hex(), again.fingerprint.hex());
            if a == b {
                Verdict::Pass(format!("two runs gave fingerprint {a}"))
            } else {
                Verdict::Fail(format!("two runs gave fingerprints {a} and {b}"))
            }
        } else {
            Verdict::Skipped("run with --check-determinism".into())
        },
    ));
    if !scenario.check.rejections_min.is_empty() {
        checks.push(("rejections", rejections(scenario, &world)));
    }
    let report = summarize(scenario, path, seed, &world, checks);
    Ok(SeedRun {
        report,
        trace: world.take_trace(),
        timeline,
        html,
    })
}

/// Whether the run showed at least `[check] rejections_min` typed rejections of each name.
fn rejections(scenario: &Scenario, world: &World) -> Verdict {
    let seen = |name: &str| world.counters.rejections.get(name).copied().unwrap_or(0);
    let short: Vec<String> = scenario
        .check
        .rejections_min
        .iter()
        .filter(|(name, min)| seen(name) < **min)
        .map(|(name, min)| format!("{name}: {} of at least {min}", seen(name)))
        .collect();
    let shown: Vec<String> = scenario
        .check
        .rejections_min
        .keys()
        .map(|name| format!("{name} {}", seen(name)))
        .collect();
    if short.is_empty() {
        Verdict::Pass(format!("typed rejections shown: {}", shown.join(", ")))
    } else {
        Verdict::Fail(format!("too few typed rejections: {}", short.join("; ")))
    }
}

/// The floor of successful operations a check must judge, `min` (`[check] ok_operations_min`),
/// is set for faults that pass: clients complete requests at least at the pace of their
/// timeouts. Storage poisoned by an injected fsync failure does not pass: it refuses everything
/// until the liveness phase restarts the node (PITFALLS: a failed fsync is never retried), and at
/// a level that needs that replica every later request fails. So the floor counts only the share
/// of the fault phase before the first poisoning (swarm seed 17: a node poisoned 48 ms into a
/// 6.9 s phase at `each_quorum`, with one replica in its datacenter, judged 3 writes).
fn ok_operations_floor(min: u64, first_poisoning_ns: Option<u64>, fault_phase_ns: u64) -> u64 {
    match first_poisoning_ns {
        Some(at) if at < fault_phase_ns => {
            let share = u128::from(min) * u128::from(at) / u128::from(fault_phase_ns.max(1));
            u64::try_from(share).unwrap_or(min)
        }
        _ => min,
    }
}

/// A check that judged fewer than `min` successful operations fails whatever it found: a run
/// whose requests were all refused or failed proves nothing.
fn enough(verdict: Verdict, judged: u64, min: u64, what: &str) -> Verdict {
    match verdict {
        Verdict::Pass(detail) if judged < min => Verdict::Fail(format!(
            "only {judged} {what} to judge, fewer than check.ok_operations_min = {min} ({detail})"
        )),
        other => other,
    }
}

/// Availability over time: the fault phase cut into windows of `window_ns`; a window counts
/// when a request that ended in it succeeded (`some_ok`), or when requests ended in it and all
/// succeeded (`all_ok`). A request the client gave up on ends when it gave up. Unlike the count
/// of operations, this does not hide a cut behind clients that block on timeouts.
pub fn time_availability(
    ops: &[crate::history::HistoryOp],
    fault_phase_ns: u64,
    window_ns: u64,
    client_timeout_ns: u64,
) -> TimeAvailability {
    let window_ns = window_ns.max(1);
    let windows = fault_phase_ns.div_ceil(window_ns).max(1);
    let mut ok = vec![false; usize::try_from(windows).unwrap_or(usize::MAX)];
    let mut failed = ok.clone();
    for op in ops.iter().filter(|op| op.during_faults) {
        let end = op
            .complete_ns
            .unwrap_or(op.invoke_ns.saturating_add(client_timeout_ns));
        if end >= fault_phase_ns {
            continue;
        }
        let Ok(index) = usize::try_from(end / window_ns) else {
            continue;
        };
        if op.outcome == OpOutcome::Ok && op.complete_ns.is_some() {
            ok[index] = true;
        } else {
            failed[index] = true;
        }
    }
    let count = |f: &dyn Fn(usize) -> bool| (0..ok.len()).filter(|&i| f(i)).count() as f64;
    TimeAvailability {
        window_ms: window_ns / 1_000_000,
        windows,
        some_ok: count(&|i| ok[i]) / windows as f64,
        all_ok: count(&|i| ok[i] && !failed[i]) / windows as f64,
    }
}

/// Window length of the availability over time.
const AVAILABILITY_WINDOW_NS: u64 = 1_000_000_000;

fn summarize(
    scenario: &Scenario,
    path: &str,
    seed: u64,
    world: &World,
    checks: Vec<(&'static str, Verdict)>,
) -> RunReport {
    let mut ops = OpCounts::default();
    let (mut fault_ops, mut fault_ok) = (0u64, 0u64);
    // Sized once and sorted in place: growing it by doubling and a stable sort's scratch
    // buffer each touched fresh memory, which the kernel zeroes (4% of a partition run).
    let mut latencies = Vec::with_capacity(world.history.ops.len());
    for op in &world.history.ops {
        match op.outcome {
            OpOutcome::Ok => ops.ok += 1,
            OpOutcome::Failed => ops.failed += 1,
            OpOutcome::Indeterminate => ops.indeterminate += 1,
        }
        if op.during_faults {
            fault_ops += 1;
            fault_ok += u64::from(op.outcome == OpOutcome::Ok);
        }
        if let (OpOutcome::Ok, Some(done)) = (op.outcome, op.complete_ns) {
            latencies.push((done - op.invoke_ns) as f64 / 1e6);
        }
    }
    // Unstable is the same order: `total_cmp` ties only bit-identical numbers.
    latencies.sort_unstable_by(f64::total_cmp);
    let network = world.network();
    RunReport {
        scenario: scenario.name.clone(),
        path: path.to_string(),
        seed,
        expect: scenario.expect,
        drawn: world.drawn.clone(),
        swarm: Vec::new(),
        ops,
        availability: if fault_ops == 0 {
            1.0
        } else {
            fault_ok as f64 / fault_ops as f64
        },
        availability_time: time_availability(
            &world.history.ops,
            world.fault_phase_end_ns(),
            AVAILABILITY_WINDOW_NS,
            scenario.client_timeout_ms() * 1_000_000,
        ),
        latency_p50_ms: quantile(&latencies, 0.50),
        latency_p99_ms: quantile(&latencies, 0.99),
        events: world.counters.events,
        messages: (world.counters.messages, network.dropped, network.duplicated),
        faults: world.counters.faults,
        anti_entropy: (
            world.counters.anti_entropy_messages,
            world.counters.anti_entropy_bytes,
        ),
        sends_failed: world
            .counters
            .sends_failed
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
        rejections: world
            .counters
            .rejections
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
        hints: {
            let h = world.hint_stats();
            (
                h.handed_off,
                h.stored,
                h.delivered,
                h.overflowed,
                h.expired,
                world.pending_hints().0,
            )
        },
        gossip: (world.gossip_figures.messages > 0).then(|| world.gossip_figures.clone()),
        nodes: scenario.cluster.nodes,
        sim_ms: world.now_ns() / 1_000_000,
        wall_ms: 0,
        checks,
        buggify: world.buggify.iter().map(|(k, v)| (*k, *v)).collect(),
        fingerprint: world.fingerprint.hex(),
    }
}

#[cfg(test)]
mod tests {
    use super::ok_operations_floor;

    #[test]
    fn the_floor_counts_only_the_fault_phase_before_storage_was_poisoned() {
        assert_eq!(ok_operations_floor(10, None, 1000), 10, "no poisoning");
        assert_eq!(
            ok_operations_floor(10, Some(500), 1000),
            5,
            "half the phase"
        );
        assert_eq!(
            ok_operations_floor(10, Some(7), 1000),
            0,
            "poisoned at once"
        );
        assert_eq!(
            ok_operations_floor(10, Some(1000), 1000),
            10,
            "poisoned after the fault phase ended (never in a run: failures are fault-phase only)"
        );
        let large = ok_operations_floor(u64::MAX, Some(999), 1000);
        assert!(
            large > u64::MAX / 1000 * 998 && large < u64::MAX,
            "no overflow: {large}"
        );
    }
}
