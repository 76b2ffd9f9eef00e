//! A tiny deterministic driver for a cluster of [`Membership`] machines, and the detection
//! measurement built on it. It is not the simulator (`sim/` owns the real one); it exists so the
//! protocol's convergence can be tested and measured inside `core` with nothing but a seed.
//!
//! Every message goes through `crate::codec` (encode, count the bytes, decode), so the wire format
//! is exercised too. Time jumps from event to event; nothing sleeps.

use super::{
    MemberStatus, Membership, MembershipConfig, MembershipEvent, MembershipOutput, RingChange,
    RingLog,
};
use crate::id::NodeId;
use crate::ring::{Member, NodeLocation};
use crate::time::Instant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// How the harness network treats messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkModel {
    /// Delivery delay, drawn uniformly from `[lo, hi]` milliseconds (a wide range reorders).
    pub latency_ms: (u64, u64),
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
}

impl Default for NetworkModel {
    fn default() -> Self {
        NetworkModel {
            latency_ms: (1, 5),
            drop: 0.0,
            duplicate: 0.0,
        }
    }
}

/// An event a machine reported, with when and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEvent {
    /// When.
    pub at: Instant,
    /// The machine that reported it.
    pub observer: NodeId,
    /// What.
    pub event: MembershipEvent,
}

#[derive(Clone, Debug)]
struct Delivery {
    to: usize,
    from: NodeId,
    bytes: Vec<u8>,
}

/// A cluster of membership machines over a simulated network. Node `i` is `NodeId(i)`.
#[derive(Debug)]
pub struct Harness {
    config: MembershipConfig,
    network: NetworkModel,
    now: Instant,
    machines: Vec<Option<Membership>>,
    node_rngs: Vec<ChaCha8Rng>,
    incarnations: Vec<u64>,
    network_rng: ChaCha8Rng,
    queue: BTreeMap<(Instant, u64), Delivery>,
    sequence: u64,
    /// Side A of a partition; messages between A and the rest are lost.
    partition: Option<BTreeSet<usize>>,
    /// Every event reported, in order.
    pub events: Vec<ObservedEvent>,
    /// Messages sent so far.
    pub messages_sent: u64,
    /// Encoded bytes sent so far.
    pub bytes_sent: u64,
    /// Largest encoded message so far.
    pub message_bytes_largest: usize,
}

/// The ring log of an initial cluster of `nodes` members over 3 racks in one datacenter.
pub fn initial_ring(nodes: usize, config: &MembershipConfig) -> RingLog {
    RingLog {
        vnodes_per_node: config.vnodes_per_node,
        changes: (0..nodes).map(|i| RingChange::Join(member(i))).collect(),
    }
}

/// The ring member for harness node `index`.
pub fn member(index: usize) -> Member {
    Member {
        id: node_id(index),
        location: NodeLocation {
            datacenter: "dc1".to_string(),
            rack: format!("rack{}", index % 3),
            weight: 1,
        },
    }
}

/// Harness node `index`'s id.
pub fn node_id(index: usize) -> NodeId {
    NodeId(u32::try_from(index).unwrap_or(u32::MAX))
}

impl Harness {
    /// `nodes` machines started at time zero on the same initial ring, each with its own RNG
    /// stream drawn from `seed`. `None` if the configuration is invalid.
    pub fn new(
        nodes: usize,
        seed: u64,
        config: MembershipConfig,
        network: NetworkModel,
    ) -> Option<Self> {
        let ring = initial_ring(nodes, &config);
        let mut harness = Harness {
            network,
            now: Instant::ZERO,
            machines: Vec::new(),
            node_rngs: Vec::new(),
            incarnations: Vec::new(),
            network_rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BTreeMap::new(),
            sequence: 0,
            partition: None,
            events: Vec::new(),
            messages_sent: 0,
            bytes_sent: 0,
            message_bytes_largest: 0,
            config,
        };
        for index in 0..nodes {
            let machine = Membership::new(
                harness.config.clone(),
                node_id(index),
                1,
                ring.clone(),
                Instant::ZERO,
            )
            .ok()?;
            harness.machines.push(Some(machine));
            harness
                .node_rngs
                .push(ChaCha8Rng::seed_from_u64(seed ^ ((index as u64 + 1) << 20)));
            harness.incarnations.push(1);
        }
        Some(harness)
    }

    /// Current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of machine slots (crashed ones included).
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// True when there are no machines.
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// The running machine of node `index`.
    pub fn machine(&self, index: usize) -> Option<&Membership> {
        self.machines.get(index).and_then(Option::as_ref)
    }

    /// The running machine of node `index`, mutably (for operator commands; drain with
    /// [`Harness::drain`] afterwards).
    pub fn machine_mut(&mut self, index: usize) -> Option<&mut Membership> {
        self.machines.get_mut(index).and_then(Option::as_mut)
    }

    /// Indices of running machines.
    pub fn running(&self) -> Vec<usize> {
        (0..self.machines.len())
            .filter(|&i| self.machines[i].is_some())
            .collect()
    }

    /// Stops node `index`: it neither ticks nor receives; its state is lost.
    pub fn crash(&mut self, index: usize) {
        if let Some(slot) = self.machines.get_mut(index) {
            *slot = None;
        }
    }

    /// Restarts node `index` with a new machine on `ring` and incarnation `incarnation`.
    pub fn restart_with(&mut self, index: usize, incarnation: u64, ring: RingLog) -> bool {
        self.start(index, self.config.clone(), incarnation, ring)
    }

    /// Starts (or restarts) node `index` with its own configuration (for example one naming
    /// seeds), growing the cluster if `index` is new. False if the machine cannot be built.
    pub fn start(
        &mut self,
        index: usize,
        config: MembershipConfig,
        incarnation: u64,
        ring: RingLog,
    ) -> bool {
        match Membership::new(config, node_id(index), incarnation, ring, self.now) {
            Ok(machine) => {
                while self.machines.len() <= index {
                    self.machines.push(None);
                    let slot = self.node_rngs.len() as u64;
                    self.node_rngs.push(ChaCha8Rng::seed_from_u64(
                        self.network_rng.gen::<u64>() ^ slot,
                    ));
                    self.incarnations.push(0);
                }
                self.machines[index] = Some(machine);
                self.incarnations[index] = incarnation;
                true
            }
            Err(_) => false,
        }
    }

    /// Restarts node `index` on the initial ring with the next incarnation (what a node that
    /// persists its incarnation does).
    pub fn restart(&mut self, index: usize) -> bool {
        let incarnation = self.incarnations.get(index).copied().unwrap_or(0) + 1;
        let ring = initial_ring(self.machines.len(), &self.config);
        self.restart_with(index, incarnation, ring)
    }

    /// Loses every message between `side` and the other nodes until [`Harness::heal`].
    pub fn partition(&mut self, side: &[usize]) {
        self.partition = Some(side.iter().copied().collect());
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// Drains node `index`'s outputs into the network and the event log.
    pub fn drain(&mut self, index: usize) {
        let from = node_id(index);
        while let Some(output) = self.machines[index].as_mut().and_then(|m| m.poll_output()) {
            match output {
                MembershipOutput::Event(event) => self.events.push(ObservedEvent {
                    at: self.now,
                    observer: from,
                    event,
                }),
                MembershipOutput::Send { to, message } => {
                    let bytes = crate::codec::encode_value(&message);
                    self.messages_sent += 1;
                    self.bytes_sent += bytes.len() as u64;
                    self.message_bytes_largest = self.message_bytes_largest.max(bytes.len());
                    let to = to.0 as usize;
                    let cut = self
                        .partition
                        .as_ref()
                        .is_some_and(|side| side.contains(&index) != side.contains(&to));
                    if cut
                        || to >= self.machines.len()
                        || self.network_rng.gen_bool(self.network.drop)
                    {
                        continue;
                    }
                    let copies = if self.network_rng.gen_bool(self.network.duplicate) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let (lo, hi) = self.network.latency_ms;
                        let delay = self.network_rng.gen_range(lo..=hi.max(lo));
                        let at = self.now.saturating_add(Duration::from_millis(delay));
                        self.sequence += 1;
                        self.queue.insert(
                            (at, self.sequence),
                            Delivery {
                                to,
                                from,
                                bytes: bytes.clone(),
                            },
                        );
                    }
                }
            }
        }
        if let Some(machine) = self.machines[index].as_ref() {
            machine.check_invariants();
        }
    }

    /// Runs events until `deadline` (inclusive), then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) {
        while self.step(deadline) {}
        self.now = self.now.max(deadline);
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now.saturating_add(duration);
        self.run_until(deadline);
    }

    /// Runs until `done` holds (checked after every event) or `limit` passes; returns the time
    /// `done` first held.
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Harness) -> bool,
    ) -> Option<Instant> {
        let deadline = self.now.saturating_add(limit);
        loop {
            if done(self) {
                return Some(self.now);
            }
            if !self.step(deadline) {
                return None;
            }
        }
    }

    /// Processes the next event due at or before `deadline`; false if there is none.
    fn step(&mut self, deadline: Instant) -> bool {
        let timer = self
            .machines
            .iter()
            .filter_map(|m| m.as_ref().and_then(Membership::poll_timeout))
            .min();
        let message = self.queue.keys().next().map(|&(at, _)| at);
        let next = match (timer, message) {
            (Some(t), Some(m)) => t.min(m),
            (Some(t), None) => t,
            (None, Some(m)) => m,
            (None, None) => return false,
        };
        if next > deadline {
            return false;
        }
        self.now = self.now.max(next);
        if message == Some(next) {
            if let Some((_, delivery)) = self.queue.pop_first() {
                self.deliver(delivery);
            }
        } else {
            for index in 0..self.machines.len() {
                let due = self.machines[index]
                    .as_ref()
                    .and_then(Membership::poll_timeout)
                    .is_some_and(|t| t <= self.now);
                if due {
                    let now = self.now;
                    if let Some(machine) = self.machines[index].as_mut() {
                        machine.handle_timeout(now, &mut self.node_rngs[index]);
                    }
                    self.drain(index);
                }
            }
        }
        true
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        let Some(machine) = self.machines[delivery.to].as_mut() else {
            return;
        };
        // Undecodable frames are dropped by the driver, as a real node would.
        if let Ok(message) = crate::codec::decode_value(&delivery.bytes) {
            machine.handle_message(now, delivery.from, message);
        }
        self.drain(delivery.to);
    }

    /// True if every running machine other than `node`'s own judges `node` as `status`.
    pub fn all_see(&self, node: usize, status: MemberStatus) -> bool {
        self.machines
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != node)
            .filter_map(|(_, m)| m.as_ref())
            .all(|m| m.status(node_id(node)) == Some(status))
    }

    /// Time of the first event at `observer` turning `node` into `status` at or after `since`.
    fn first_change(
        &self,
        observer: NodeId,
        node: NodeId,
        status: MemberStatus,
        since: Instant,
    ) -> Option<Instant> {
        self.events
            .iter()
            .filter(|e| e.at >= since && e.observer == observer)
            .find(|e| {
                matches!(e.event, MembershipEvent::StatusChanged { node: n, to, .. }
                    if n == node && to == status)
            })
            .map(|e| e.at)
    }
}

/// What [`measure_detection`] found for one cluster size.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionReport {
    /// Cluster size.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Gossip interval used.
    pub gossip_interval_ms: u64,
    /// Crash until every other node judged the crashed node `Suspect`.
    pub crash_suspect_all_ms: u64,
    /// Crash until every other node judged it `Down`.
    pub crash_down_all_ms: u64,
    /// The part of `crash_down_all_ms` beyond the configured `suspect_after_ms + down_after_ms`:
    /// how long the crashed node's last heartbeat took to reach the last node, in rounds.
    pub crash_spread_rounds: f64,
    /// Restart until every other node judged the restarted node `Alive` again.
    pub recovery_alive_all_ms: u64,
    /// `recovery_alive_all_ms` in gossip rounds.
    pub recovery_rounds: f64,
    /// Steady state: messages sent per node per second.
    pub messages_per_node_per_second: f64,
    /// Steady state: encoded bytes sent per node per second.
    pub bytes_per_node_per_second: f64,
    /// Largest encoded message seen.
    pub message_bytes_largest: usize,
    /// Times a node that never crashed was judged `Suspect` by someone (a lossy network makes
    /// some: a probe and all its indirect probes lost; the member refutes).
    pub false_suspicions: usize,
    /// Times a node that never crashed was judged `Down` by someone (it failed to refute a
    /// suspicion for the whole suspicion timeout).
    pub false_downs: usize,
}

impl DetectionReport {
    /// The header of [`DetectionReport`]'s `Display` table rows.
    pub const HEADER: &'static str = "nodes | suspect_all_ms | down_all_ms | spread_rounds | \
                                      recovery_ms | recovery_rounds | msgs/node/s | bytes/node/s \
                                      | largest_msg_bytes | false_suspicions | false_downs";
}

impl fmt::Display for DetectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>5} | {:>14} | {:>11} | {:>13.1} | {:>11} | {:>15.1} | {:>11.1} | {:>12.0} | {:>17} | {:>16} | {:>11}",
            self.nodes,
            self.crash_suspect_all_ms,
            self.crash_down_all_ms,
            self.crash_spread_rounds,
            self.recovery_alive_all_ms,
            self.recovery_rounds,
            self.messages_per_node_per_second,
            self.bytes_per_node_per_second,
            self.message_bytes_largest,
            self.false_suspicions,
            self.false_downs,
        )
    }
}

/// Measures, on a harness cluster of `nodes` machines (latency 1–5 ms, no loss): steady-state
/// traffic, then the time until every node learns of a crash (`Suspect`, `Down`) and of the
/// restart (`Alive`). `None` if `config` is invalid or `nodes < 2`.
pub fn measure_detection(
    nodes: usize,
    seed: u64,
    config: MembershipConfig,
) -> Option<DetectionReport> {
    measure_detection_on(nodes, seed, config, NetworkModel::default())
}

/// [`measure_detection`] over a chosen network model.
pub fn measure_detection_on(
    nodes: usize,
    seed: u64,
    config: MembershipConfig,
    network: NetworkModel,
) -> Option<DetectionReport> {
    if nodes < 2 {
        return None;
    }
    let interval_ms = config.gossip_interval_ms;
    let down_total_ms = config.suspect_after_ms + config.down_after_ms;
    let mut harness = Harness::new(nodes, seed, config, network)?;
    // Warm up, then measure steady-state traffic over ten seconds.
    harness.run_for(Duration::from_secs(3));
    let (messages, bytes) = (harness.messages_sent, harness.bytes_sent);
    let window = Duration::from_secs(10);
    harness.run_for(window);
    let per_node_second = (nodes as f64) * window.as_secs_f64();
    let messages_per_node_per_second = (harness.messages_sent - messages) as f64 / per_node_second;
    let bytes_per_node_per_second = (harness.bytes_sent - bytes) as f64 / per_node_second;

    let victim = nodes - 1;
    let victim_id = node_id(victim);
    let crashed_at = harness.now();
    harness.crash(victim);
    let limit = Duration::from_millis(down_total_ms * 10 + 60_000);
    harness.run_until_true(limit, |h| h.all_see(victim, MemberStatus::Down))?;
    let observers: Vec<NodeId> = harness.running().into_iter().map(node_id).collect();
    let last = |status| {
        observers
            .iter()
            .map(|&o| harness.first_change(o, victim_id, status, crashed_at))
            .try_fold(Instant::ZERO, |latest, at| at.map(|at| latest.max(at)))
    };
    let suspect_all = last(MemberStatus::Suspect)?;
    let down_all = last(MemberStatus::Down)?;
    let ms_since = |at: Instant, since: Instant| at.saturating_duration_since(since).as_millis();
    let crash_suspect_all_ms = u64::try_from(ms_since(suspect_all, crashed_at)).ok()?;
    let crash_down_all_ms = u64::try_from(ms_since(down_all, crashed_at)).ok()?;

    harness.run_for(Duration::from_secs(1));
    let restarted_at = harness.now();
    if !harness.restart(victim) {
        return None;
    }
    let alive_at = harness.run_until_true(limit, |h| h.all_see(victim, MemberStatus::Alive))?;
    let recovery_alive_all_ms = u64::try_from(ms_since(alive_at, restarted_at)).ok()?;
    harness.run_for(Duration::from_secs(2));
    let false_judgements = |status: MemberStatus| {
        harness
            .events
            .iter()
            .filter(|e| {
                matches!(e.event, MembershipEvent::StatusChanged { node, to, .. }
                    if node != victim_id && to == status)
            })
            .count()
    };
    let false_suspicions = false_judgements(MemberStatus::Suspect);
    let false_downs = false_judgements(MemberStatus::Down);
    Some(DetectionReport {
        nodes,
        seed,
        gossip_interval_ms: interval_ms,
        crash_suspect_all_ms,
        crash_down_all_ms,
        crash_spread_rounds: crash_down_all_ms.saturating_sub(down_total_ms) as f64
            / interval_ms as f64,
        recovery_alive_all_ms,
        recovery_rounds: recovery_alive_all_ms as f64 / interval_ms as f64,
        messages_per_node_per_second,
        bytes_per_node_per_second,
        message_bytes_largest: harness.message_bytes_largest,
        false_suspicions,
        false_downs,
    })
}
