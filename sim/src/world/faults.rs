//! Faults applied to the world: partitions, crashes, restarts, pauses, ring changes, clock
//! jumps and wiped disks, and the heal-everything step that starts the liveness phase.

use super::storage::SimStorage;
use super::Stream;
use super::{membership, node_config, FaultAction, NodeState, Phase, World, NANOS_PER_MS};
use ringkv_core::hash::hash_pair;
use ringkv_core::NodeId;

impl World {
    pub(super) fn apply_fault(&mut self, action: FaultAction) {
        if self.phase != Phase::Faults {
            return;
        }
        self.counters.faults += 1;
        match action {
            FaultAction::Partition(groups) => self.network.partition(&groups),
            FaultAction::OneWay { from, to } => self.network.one_way(&from, &to),
            FaultAction::Heal => self.network.heal(),
            FaultAction::Crash(node) => self.crash(node as usize),
            FaultAction::Restart(node) => self.restart(node as usize),
            FaultAction::Pause { node, ms } => {
                if matches!(self.nodes[node as usize].state, NodeState::Up(_)) {
                    self.nodes[node as usize].paused_until = Some(self.now + ms * NANOS_PER_MS);
                }
            }
            FaultAction::Join(node) => {
                if !self.ring.contains(NodeId(node)) {
                    let location = self.locations[node as usize].clone();
                    if self.ring.add_node(NodeId(node), location.clone()).is_ok() {
                        let member = ringkv_core::ring::Member {
                            id: NodeId(node),
                            location,
                        };
                        self.ring_changed(membership::AdminChange::Join(member));
                    }
                }
            }
            FaultAction::Leave(node) => {
                if self.ring.remove_node(NodeId(node)).is_ok() {
                    self.ring_changed(membership::AdminChange::Leave(NodeId(node)));
                }
            }
            FaultAction::Remove(node) => {
                // An operator removes a dead node: it is stopped for good, its ranges are
                // re-replicated from the survivors by anti-entropy.
                self.crash(node as usize);
                self.removed.push(node);
                if self.ring.remove_node(NodeId(node)).is_ok() {
                    self.ring_changed(membership::AdminChange::Remove(NodeId(node)));
                }
            }
            FaultAction::ClockJump { node, ms } => {
                self.nodes[node as usize].clock.jumps_us += ms * 1000;
            }
            FaultAction::Wipe(node) => self.wipe(node as usize),
        }
    }

    /// An operator changed the ring: with gossip the change is issued on one node and spreads;
    /// without, every node gets the new ring at once.
    pub(super) fn ring_changed(&mut self, change: membership::AdminChange) {
        if self.gossip.is_some() {
            self.admin_change(change);
        } else {
            self.push_ring();
        }
    }

    /// Gives every running node the current ring (an operator's change, spread at once; nodes that
    /// are down get it when they restart).
    pub(super) fn push_ring(&mut self) {
        for node in 0..self.nodes.len() {
            let ring = self.ring.clone();
            if let Some(n) = self.node_mut(node) {
                n.update_ring(ring);
                self.drain(node);
            }
        }
    }

    pub(super) fn crash(&mut self, node: usize) {
        if matches!(self.nodes[node].state, NodeState::Up(_)) {
            self.watch(node as u32, ringkv_core::membership::MemberStatus::Down);
        }
        let slot = &mut self.nodes[node];
        let state = std::mem::replace(&mut slot.state, NodeState::Broken);
        slot.state = match state {
            NodeState::Up(n) => match n.into_storage().crash() {
                Ok(storage) => NodeState::Down(storage),
                Err(why) => {
                    self.recovery_failures
                        .push(format!("n{node} at {:.3}ms: {why}", self.now as f64 / 1e6));
                    NodeState::Broken
                }
            },
            other => other,
        };
        let slot = &mut self.nodes[node];
        slot.incarnation += 1;
        slot.paused_until = None;
        slot.timer_at = None;
        slot.poisoned = false;
        slot.group_commit = super::persist::group_commit(
            self.seed,
            u32::try_from(node).unwrap_or(u32::MAX),
            slot.incarnation,
            self.config.simulation,
        );
        slot.maintenance = None;
        slot.maintenance_at = None;
    }

    /// A replaced machine: the process dies, the disk (synced data included) is swapped for an
    /// empty one, and the node starts again under the same id. An operator-removed node stays
    /// gone.
    pub(super) fn wipe(&mut self, node: usize) {
        if self.removed.contains(&(node as u32)) {
            return;
        }
        self.crash(node);
        let slot = &mut self.nodes[node];
        slot.wipes += 1;
        let disk_seed = hash_pair(
            hash_pair(hash_pair(self.seed, Stream::Disk as u64), node as u64),
            u64::from(slot.wipes),
        );
        match SimStorage::fresh(self.lsm, disk_seed) {
            Ok(storage) => self.nodes[node].state = NodeState::Down(storage),
            Err(why) => {
                self.recovery_failures.push(format!(
                    "n{node} at {:.3}ms: a new disk could not be opened: {why}",
                    self.now as f64 / 1e6
                ));
                self.nodes[node].state = NodeState::Broken;
            }
        }
        self.note(|| format!("n{node} disk wiped: starts again with empty storage"));
        self.start(node, true);
    }

    /// Starts a stopped node again, unless an operator removed it: a removed node is gone for
    /// good, whatever the nemesis schedule (drawn without knowing of the remove) says. Bringing
    /// it back would make it `Alive` again, so the operator's remove would be refused as
    /// `NotDown` and retried for ever, and the rings would never converge (swarm seeds 125, 760).
    pub(super) fn restart(&mut self, node: usize) {
        self.start(node, false);
    }

    /// Starts a stopped node; `replaced`: on a new, empty disk in place of its lost one (the
    /// node is told, as an operator replacing a machine would tell it).
    fn start(&mut self, node: usize, replaced: bool) {
        if self.removed.contains(&(node as u32)) {
            return;
        }
        let incarnation = self.nodes[node].incarnation;
        let config = node_config(&self.config, self.seed, node as u32, incarnation);
        let now = self.now_for(node);
        let slot = &mut self.nodes[node];
        let state = std::mem::replace(&mut slot.state, NodeState::Broken);
        slot.state = match state {
            NodeState::Down(storage) => {
                match membership::start_node(config, self.gossip.as_ref(), &self.ring, storage, now)
                {
                    Ok(mut n) => {
                        if replaced {
                            n.start_as_replacement();
                        }
                        NodeState::Up(Box::new(n))
                    }
                    Err(_) => NodeState::Broken,
                }
            }
            other => other,
        };
        if matches!(self.nodes[node].state, NodeState::Up(_)) {
            self.nodes[node].hints_expired_traced = 0;
            self.nodes[node].hints_aged_traced = 0;
            self.watch(node as u32, ringkv_core::membership::MemberStatus::Alive);
            // A restarted process arms its own timers (gossip, anti-entropy, hint replay) even
            // if nobody sends it anything, as the node's driver does with its first tick. The
            // core arms them lazily on its first input (its constructor has no time), and a
            // spurious timeout is a no-op otherwise.
            let now = self.now_for(node);
            if let Some(n) = self.node_mut(node) {
                n.handle_timeout(now);
            }
            self.drain(node);
        }
    }

    pub(super) fn start_liveness(&mut self) {
        self.phase = Phase::Liveness;
        self.network.heal();
        self.network.calm();
        for node in 0..self.nodes.len() {
            if self.nodes[node].poisoned {
                self.crash(node);
            }
            if matches!(self.nodes[node].state, NodeState::Down(_))
                && !self.removed.contains(&(node as u32))
            {
                self.restart(node);
            }
            self.nodes[node].paused_until = None;
        }
    }
}
