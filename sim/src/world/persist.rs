//! What a simulated node's driver does with its disk: group commit and maintenance, through the
//! same helpers the node's driver runs (core's
//! [`GroupCommit`](ringkv_core::storage::GroupCommit), the engine's
//! [`MaintenanceScheduler`](ringkv_lsm::maintenance::MaintenanceScheduler)), on simulated time.
//!
//! * **Group commit.** A `Persist` output is recorded in the node's [`GroupCommit`]; when it says
//!   a sync is due, the disk starts one fsync covering every write staged so far, which completes
//!   after a drawn latency (`DiskSynced`), one at a time per disk. Unlike the node's inline
//!   fsync, the node keeps taking inputs meanwhile, so persist requests pile up behind the fsync
//!   in flight: the case where a completion must not acknowledge a later batch.
//! * **The driver's legal choices, made badly on purpose** (fault sites, off outside the
//!   simulator like every `buggify!`): group commit may split a batch or acknowledge a token a
//!   sync late (core's sites in [`GroupCommit`]); an fsync may stall (`sim/fsync-slow`: 20 to
//!   200 ms more than its drawn latency). (An fsync covering writes staged after it began is
//!   legal too, but makes the disk kinder: it hid the planted ack-before-persist bug on
//!   broken-ack-before-persist seed 54, so it is not a fault site.)
//! * **Maintenance** (LSM nodes only). After every drain, and when its tick is due (a
//!   `Maintenance` event), the node's scheduler is asked for a step, which runs on the engine at
//!   once; the simulated disk has no latency for it. The in-memory engine has no scheduler and
//!   no such events, so memory-engine runs are unchanged by it.

use super::event::Event;
use super::{NodeState, Phase, Stream, World};
use rand::Rng;
use ringkv_core::buggify::FaultPoints;
use ringkv_core::hash::hash_pair;
use ringkv_core::storage::GroupCommit;
use ringkv_core::PersistToken;
use ringkv_lsm::maintenance::MaintenanceScheduler;

/// The group commit of incarnation `incarnation` of `node`: core's helper, with its fault sites
/// live per node and incarnation when `simulation` (the cluster's setting) is on.
pub(super) fn group_commit(
    seed: u64,
    node: u32,
    incarnation: u32,
    simulation: bool,
) -> GroupCommit {
    let seed = hash_pair(
        hash_pair(hash_pair(seed, Stream::Buggify as u64), u64::from(node)),
        u64::from(incarnation),
    );
    GroupCommit::with_fault_points(FaultPoints::new(seed, simulation), hash_pair(seed, 1))
}

impl World {
    /// `node` asked for `token` to be made durable.
    pub(super) fn persist_requested(&mut self, node: usize, token: PersistToken) {
        self.nodes[node].group_commit.handle_persist_request(token);
        self.start_sync_if_due(node);
    }

    /// Starts an fsync covering every write staged so far, if group commit says one is due; it
    /// completes after the disk latency.
    pub(super) fn start_sync_if_due(&mut self, node: usize) {
        let Some(point) = self.node_mut(node).map(|n| n.storage().staged_seq()) else {
            return;
        };
        let Some(token) = self.nodes[node].group_commit.poll_sync() else {
            return;
        };
        let mut delay = self.disk_rng.gen_range(self.fsync_ns.0..=self.fsync_ns.1);
        if ringkv_core::buggify!(self.faults, &mut self.buggify_rng, "sim/fsync-slow") {
            // A device stall or a busy journal: bounded, so a stalled fsync still ends within
            // the settle time.
            delay = delay.saturating_add(self.buggify_rng.gen_range(20..=200) * 1_000_000);
        }
        let incarnation = self.nodes[node].incarnation;
        let node = u32::try_from(node).unwrap_or(u32::MAX);
        let event = Event::DiskSynced {
            node,
            incarnation,
            token: token.0,
            point,
        };
        self.schedule(self.now + delay, event);
    }

    /// The fsync a `DiskSynced` event stands for completes (or fails, if the draw says so).
    pub(super) fn on_disk_synced(&mut self, node: u32, incarnation: u32, token: u64, point: u64) {
        let index = node as usize;
        if self.nodes[index].incarnation != incarnation {
            return; // the node crashed since: its unsynced writes are already gone
        }
        // Disk faults belong to the fault phase: in the liveness phase the disks are healed too,
        // or final reads fail and durability reports losses that did not happen.
        let fail = self.phase == Phase::Faults
            && self.fsync_failure > 0.0
            && self.disk_rng.gen_bool(self.fsync_failure);
        if fail {
            self.note(|| format!("n{node} fsync fails (injected; token {token})"));
        }
        let now = self.now_for(index);
        self.counters.syncs += 1;
        let now_ns = self.now;
        let slot = &mut self.nodes[index];
        let NodeState::Up(n) = &mut slot.state else {
            return;
        };
        if fail {
            n.storage_mut().inject_sync_failure();
        }
        let pending_before = n.storage().staged_len();
        let result = n.storage_mut().sync_through(point);
        let durable_changed = n.storage().staged_len() < pending_before;
        // The helper, not the event, names the token answered: the event's token is the one the
        // sync began for, and only the helper knows what else is pending.
        match result {
            Ok(()) => {
                if let Some(token) = slot.group_commit.handle_sync_completed() {
                    n.handle_persisted(now, token);
                }
            }
            Err(e) => {
                slot.poisoned = true;
                if let Some(token) = slot.group_commit.handle_sync_failed() {
                    n.handle_persist_failed(now, token, e.to_string());
                }
            }
        }
        if durable_changed {
            self.last_durable_change_ns = now_ns;
        }
        if fail && self.first_poisoning_ns.is_none() {
            self.first_poisoning_ns = Some(now_ns);
        }
        self.drain(index);
        self.start_sync_if_due(index);
    }

    /// Runs the maintenance step `node`'s scheduler asks for now, if any, and makes sure a
    /// `Maintenance` event wakes the node at its next tick. Nodes on the in-memory engine have
    /// nothing to maintain.
    pub(super) fn maintain(&mut self, node: usize) {
        let now = self.now_for(node);
        let slot = &mut self.nodes[node];
        let NodeState::Up(n) = &mut slot.state else {
            return;
        };
        let Some(state) = n.storage().maintenance_state() else {
            return;
        };
        let scheduler = match &mut slot.maintenance {
            Some(scheduler) => scheduler,
            None => {
                // The first drain of an incarnation starts its scheduler, as a process would.
                let settings = super::storage::sim_maintenance_settings();
                let Ok(scheduler) = MaintenanceScheduler::new(settings, now.monotonic, state)
                else {
                    return;
                };
                slot.maintenance.insert(scheduler)
            }
        };
        let step = scheduler.poll_step(now.monotonic, state);
        let result = step.map(|step| n.storage_mut().maintain(step, now.wall.0 / 1000));
        if result.is_some() {
            self.counters.maintenance_steps += 1;
        }
        if let Some(Err(e)) = result {
            // The engine poisoned itself (the next write or sync fails and the node reports
            // it) or, on a full disk, the step undid itself; either way the node carries on.
            self.note(|| format!("n{node} maintenance failed: {e}"));
        }
        let slot = &mut self.nodes[node];
        let Some(scheduler) = &slot.maintenance else {
            return;
        };
        let at = scheduler.poll_timeout().as_nanos().max(self.now);
        if slot.maintenance_at != Some(at) {
            slot.maintenance_at = Some(at);
            let incarnation = slot.incarnation;
            let node = u32::try_from(node).unwrap_or(u32::MAX);
            self.schedule(at, Event::Maintenance { node, incarnation });
        }
    }

    /// A `Maintenance` event: the tick of `node`'s scheduler is due (a stale event, from an
    /// earlier incarnation or superseded by a newer tick, is a no-op).
    pub(super) fn on_maintenance(&mut self, node: u32, incarnation: u32) {
        let index = node as usize;
        if self.nodes[index].incarnation == incarnation {
            self.maintain(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::World;
    use super::NodeState;
    use crate::scenario::Scenario;

    fn scenario(engine: &str) -> Scenario {
        let text = format!(
            r#"
name = "maintenance"
description = "three nodes under steady writes; no faults"
duration_ms = 6000
settle_ms = 4000
expect = "pass"

[cluster]
nodes = 3
n = 3
r = 2
w = 2

[disk]
engine = "{engine}"

[workload]
clients = 4
operations = 1500
keys = 40
read_fraction = 0.2
value_bytes = [20, 400]
"#
        );
        Scenario::parse("maintenance", &text).expect("a valid scenario")
    }

    /// LSM nodes compact and collect through the scheduler on simulated time: about one tick per
    /// 100 ms of each node's 10 s plus the steps writes bring forward, and the engines show the
    /// work (writes themselves do none).
    #[test]
    fn lsm_nodes_run_maintenance_through_the_scheduler_on_simulated_time() {
        let mut world = World::new(&scenario("lsm"), 3, false).expect("a world");
        world.run();
        let steps = world.counters.maintenance_steps;
        let (mut compactions, mut collected, mut stalls) = (0, 0, 0);
        for slot in &world.nodes {
            let NodeState::Up(n) = &slot.state else {
                panic!("no faults: every node is up");
            };
            let stats = n.storage().lsm_stats().expect("an LSM node");
            compactions += stats.compactions;
            collected += stats.gc_segments;
            stalls += stats.stalls;
        }
        assert!(steps >= 3 * 95, "{steps} maintenance steps");
        assert!(compactions > 0, "no compaction ran");
        assert!(collected > 0, "no value-log segment was collected");
        assert_eq!(stalls, 0, "write-driven steps keep level 0 below its stall");
    }

    /// The in-memory engine has nothing to maintain: no scheduler, no events, no steps.
    #[test]
    fn memory_nodes_run_no_maintenance() {
        let mut world = World::new(&scenario("memory"), 3, false).expect("a world");
        world.run();
        assert_eq!(world.counters.maintenance_steps, 0);
        assert!(world.nodes.iter().all(|slot| slot.maintenance.is_none()));
    }
}
