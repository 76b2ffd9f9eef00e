//! The simulated world: nodes, network, disks, clocks, clients and the event loop that drives
//! them. Single-threaded and deterministic: one seed, one min-heap keyed by (time, sequence).

mod clocks;
mod event;
mod membership;
mod nemesis;
mod network;
pub mod storage;

pub use clocks::NodeClock;
pub use event::Event;
pub use membership::GossipFigures;
pub use nemesis::FaultAction;
pub use network::{Fate, Network};

use crate::fingerprint::Fingerprint;
use crate::history::{History, HistoryOp, OpKind, OpOutcome};
use crate::scenario::Scenario;
use crate::workload::{value_id, Workload};
use event::{ClientResponse, Scheduled};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::hash::hash_pair;
use ringkv_core::{
    CausalContext, ClientReply, ClientRequest, ClusterConfig, Consistency, Instant, Node,
    NodeConfig, NodeEvent, NodeId, NodeLocation, Now, Output, PersistToken, RequestId, Ring,
};
use std::collections::{BTreeMap, BinaryHeap};
use storage::SimStorage;

const NANOS_PER_MS: u64 = 1_000_000;

/// The client id of the final protocol reads (no workload client has it).
const FINAL_READER: u32 = u32::MAX;

/// Attempts of one final read before it counts as failed.
const FINAL_READ_ATTEMPTS_MAX: u32 = 5;

/// How long the final reads may take before the run ends without them.
const FINAL_READS_NS: u64 = 10_000 * NANOS_PER_MS;

/// The outcome of one final protocol read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalRead {
    /// The ids of the values returned (empty = not found).
    Values(Vec<u64>),
    /// No answer or a failure.
    Failed(String),
}

/// Independent random streams, all derived from the one seed, so that (for example) a change in
/// how many network draws happen does not shift the workload.
#[derive(Clone, Copy)]
enum Stream {
    Network = 1,
    Workload = 2,
    Nemesis = 3,
    Disk = 4,
    Clocks = 5,
}

fn stream(seed: u64, which: Stream) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(hash_pair(seed, which as u64))
}

enum NodeState {
    Up(Box<Node<SimStorage>>),
    Down(SimStorage),
    /// The storage engine could not recover after a crash: the node never comes back.
    Broken,
}

struct NodeSlot {
    state: NodeState,
    incarnation: u32,
    paused_until: Option<u64>,
    clock: NodeClock,
    timer_at: Option<u64>,
    poisoned: bool,
    /// The disk runs one fsync at a time; persist requests meanwhile wait (group commit).
    sync_in_flight: bool,
    sync_wanted: Option<PersistToken>,
}

struct Client {
    in_flight: Option<(RequestId, usize)>,
    next_seq: u32,
    /// When this client's next operation is due: clients pace themselves so the workload's
    /// operations spread evenly over the fault phase.
    next_due: u64,
    /// The causal context of this client's last read of each key, sent back with its next write
    /// of that key (read-modify-write, as a vector-clock client does).
    contexts: BTreeMap<u32, CausalContext>,
    /// Refusals of the request in flight (it is retried at another node).
    refusals: u32,
}

/// Which phase the run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Faults on, workload running.
    Faults,
    /// Everything healed; the cluster must settle.
    Liveness,
    /// Finished.
    Done,
}

/// Counters of one run.
#[derive(Clone, Debug, Default)]
pub struct RunCounters {
    /// Events processed.
    pub events: u64,
    /// Messages sent between nodes.
    pub messages: u64,
    /// Syncs completed.
    pub syncs: u64,
    /// Faults applied (scheduled and nemesis).
    pub faults: u64,
    /// Node events by kind.
    pub node_events: BTreeMap<&'static str, u64>,
    /// Anti-entropy messages sent.
    pub anti_entropy_messages: u64,
    /// Their encoded bytes.
    pub anti_entropy_bytes: u64,
}

/// A whole simulated cluster under one seed.
pub struct World {
    now: u64,
    sequence: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<NodeSlot>,
    ring: Ring,
    config: ClusterConfig,
    network: Network,
    clients: Vec<Client>,
    workload: Workload,
    issued: u64,
    operations: u64,
    /// Where each node lives (members or not).
    locations: Vec<NodeLocation>,
    /// Nodes removed by an operator: never restarted.
    removed: Vec<u32>,
    local_coordinators: bool,
    datacenters: u32,
    op_gap_ns: u64,
    client_timeout_ns: u64,
    fsync_ns: (u64, u64),
    fsync_failure: f64,
    fault_phase_end: u64,
    end: u64,
    phase: Phase,
    seed: u64,
    net_rng: ChaCha8Rng,
    workload_rng: ChaCha8Rng,
    disk_rng: ChaCha8Rng,
    /// The history every client recorded.
    pub history: History,
    /// The fingerprint of every event so far.
    pub fingerprint: Fingerprint,
    /// Counters.
    pub counters: RunCounters,
    /// Options drawn from the seed, for the summary.
    pub drawn: Vec<String>,
    final_reads: BTreeMap<u32, FinalRead>,
    recovery_failures: Vec<String>,
    final_read_attempts: BTreeMap<u32, u32>,
    last_durable_change_ns: u64,
    trace: Option<Vec<String>>,
    /// Gossip membership settings, when the scenario turns gossip on.
    gossip: Option<membership::GossipSetup>,
    /// Failure detections being timed.
    watches: Vec<membership::Watch>,
    /// Gossip traffic and detection times.
    pub gossip_figures: GossipFigures,
}

impl World {
    /// Builds the world of `scenario` under `seed`; `trace` keeps a readable event log.
    pub fn new(scenario: &Scenario, seed: u64, trace: bool) -> Result<World, String> {
        let config = scenario.cluster_config().map_err(|e| e.to_string())?;
        let nodes = scenario.cluster.nodes;
        let mut ring = Ring::new(config.vnodes_per_node);
        let initial = scenario.cluster.initial_nodes.unwrap_or(nodes);
        for i in 0..initial {
            ring.add_node(NodeId(i), location_of(scenario, i))
                .map_err(|e| e.to_string())?;
        }
        ring.set_datacenter_replicas(&config.replicas_per_datacenter);
        let gossip = scenario
            .membership_config()
            .map_err(|e| e.to_string())?
            .map(|config| membership::GossipSetup::new(config, &ring));
        let mut clock_rng = stream(seed, Stream::Clocks);
        let skew_us = i64::try_from(scenario.clocks.skew_ms * 1000).unwrap_or(i64::MAX);
        let drift = i64::try_from(scenario.clocks.drift_ppm).unwrap_or(0);
        let mut drawn = Vec::new();
        let mut slots = Vec::new();
        for i in 0..nodes {
            let clock = NodeClock {
                offset_us: if skew_us > 0 {
                    clock_rng.gen_range(-skew_us..=skew_us)
                } else {
                    0
                },
                drift_ppm: if drift > 0 {
                    clock_rng.gen_range(-drift..=drift)
                } else {
                    0
                },
                jumps_us: 0,
            };
            if skew_us > 0 || drift > 0 {
                drawn.push(format!(
                    "n{i} clock {:+.1}ms {:+}ppm",
                    clock.offset_us as f64 / 1000.0,
                    clock.drift_ppm
                ));
            }
            let disk_seed = hash_pair(hash_pair(seed, Stream::Disk as u64), u64::from(i));
            let storage = SimStorage::fresh(scenario.disk.engine == "lsm", disk_seed)?;
            let start = Now {
                monotonic: Instant::ZERO,
                wall: clock.wall(0),
            };
            let node = membership::start_node(
                node_config(&config, seed, i, 0),
                gossip.as_ref(),
                &ring,
                storage,
                start,
            )
            .map_err(|e| e.to_string())?;
            slots.push(NodeSlot {
                state: NodeState::Up(Box::new(node)),
                incarnation: 0,
                paused_until: None,
                clock,
                timer_at: None,
                poisoned: false,
                sync_in_flight: false,
                sync_wanted: None,
            });
        }
        let w = &scenario.workload;
        let fault_phase_end = scenario.duration_ms * NANOS_PER_MS;
        let mean_gap_ns = if w.operations == 0 {
            fault_phase_end
        } else {
            fault_phase_end.saturating_mul(u64::from(w.clients)) / w.operations.max(1)
        };
        let mut world = World {
            now: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            nodes: slots,
            ring,
            network: Network::new(
                nodes as usize,
                &scenario.network.latency_ms,
                &scenario.network.client_latency_ms,
                scenario.network.drop,
                scenario.network.duplicate,
            ),
            config,
            clients: (0..w.clients)
                .map(|_| Client {
                    in_flight: None,
                    next_seq: 0,
                    next_due: 0,
                    contexts: BTreeMap::new(),
                    refusals: 0,
                })
                .collect(),
            workload: Workload::new(scenario),
            issued: 0,
            operations: w.operations,
            locations: (0..nodes).map(|i| location_of(scenario, i)).collect(),
            removed: Vec::new(),
            local_coordinators: w.local_coordinators,
            datacenters: scenario.cluster.datacenters,
            op_gap_ns: mean_gap_ns.max(1),
            client_timeout_ns: scenario.client_timeout_ms() * NANOS_PER_MS,
            fsync_ns: (
                scenario.disk.fsync_us[0] * 1000,
                scenario.disk.fsync_us[1] * 1000,
            ),
            fsync_failure: scenario.disk.fsync_failure,
            fault_phase_end,
            end: fault_phase_end + scenario.settle_ms * NANOS_PER_MS,
            phase: Phase::Faults,
            seed,
            net_rng: stream(seed, Stream::Network),
            workload_rng: stream(seed, Stream::Workload),
            disk_rng: stream(seed, Stream::Disk),
            history: History::default(),
            fingerprint: Fingerprint::default(),
            counters: RunCounters::default(),
            drawn,
            final_reads: BTreeMap::new(),
            recovery_failures: Vec::new(),
            final_read_attempts: BTreeMap::new(),
            last_durable_change_ns: 0,
            trace: trace.then(Vec::new),
            gossip,
            watches: Vec::new(),
            gossip_figures: GossipFigures::default(),
        };
        for spec in &scenario.faults {
            if let Some(cycle) = &spec.crash_loop {
                let mut at_ms = spec.at_ms;
                while at_ms < cycle.until_ms {
                    let crash = Event::Fault(FaultAction::Crash(cycle.node));
                    world.schedule(at_ms * NANOS_PER_MS, crash);
                    let restart = Event::Fault(FaultAction::Restart(cycle.node));
                    world.schedule((at_ms + cycle.down_ms) * NANOS_PER_MS, restart);
                    at_ms += cycle.every_ms;
                }
            }
            if let Some(action) = FaultAction::from_spec(spec) {
                world.schedule(spec.at_ms * NANOS_PER_MS, Event::Fault(action));
            }
        }
        let mut nemesis_rng = stream(seed, Stream::Nemesis);
        let nemesis = nemesis::draw_schedule(
            &scenario.nemesis,
            nodes,
            scenario.duration_ms,
            &mut nemesis_rng,
        );
        if !nemesis.is_empty() {
            let shown: Vec<String> = nemesis
                .iter()
                .take(6)
                .map(|(at, a)| format!("{:.1}s {a}", *at as f64 / 1000.0))
                .collect();
            let more = nemesis.len().saturating_sub(6);
            let tail = if more > 0 {
                format!(", … {more} more")
            } else {
                String::new()
            };
            world.drawn.push(format!(
                "nemesis {} faults: {}{tail}",
                nemesis.len(),
                shown.join(", ")
            ));
        }
        for (at_ms, action) in nemesis {
            world.schedule(at_ms * NANOS_PER_MS, Event::Fault(action));
        }
        for client in 0..w.clients {
            let start = world.workload_rng.gen_range(0..world.op_gap_ns);
            world.clients[client as usize].next_due = start;
            world.schedule(start, Event::ClientSend { client });
        }
        world.schedule(fault_phase_end, Event::PhaseChange);
        world.schedule(world.end, Event::End);
        Ok(world)
    }

    /// Runs to the end of the liveness phase.
    pub fn run(&mut self) {
        while let Some(Scheduled { time, event, .. }) = self.queue.pop() {
            self.now = time;
            if let Some(node) = event.node() {
                if let Some(until) = self.nodes[node as usize].paused_until {
                    if until > time {
                        self.schedule(until, event);
                        continue;
                    }
                    self.nodes[node as usize].paused_until = None;
                }
            }
            self.counters.events += 1;
            self.fingerprint.add(&time);
            self.fingerprint.add(&event);
            if let Some(trace) = &mut self.trace {
                trace.push(format!(
                    "{:>12.3}ms {}",
                    time as f64 / 1e6,
                    event.describe()
                ));
            }
            if !self.dispatch(event) {
                break;
            }
        }
        self.phase = Phase::Done;
    }

    /// The trace lines, if tracing.
    pub fn take_trace(&mut self) -> Vec<String> {
        self.trace.take().unwrap_or_default()
    }

    /// When any replica last made a write durable (after it, stored state no longer changed).
    pub fn last_durable_change_ns(&self) -> u64 {
        self.last_durable_change_ns
    }

    /// Simulated time now, nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.now
    }

    /// Where the fault phase ends, nanoseconds.
    pub fn fault_phase_end_ns(&self) -> u64 {
        self.fault_phase_end
    }

    /// The network (for its counters).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The ring all nodes use.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// What each node holds durably at the end (what a crash now would keep).
    pub fn durable_contents(&mut self) -> Vec<BTreeMap<bytes::Bytes, ringkv_core::Record>> {
        self.nodes
            .iter_mut()
            .map(|slot| match &mut slot.state {
                NodeState::Up(node) => node.storage_mut().durable_contents(),
                NodeState::Down(storage) => storage.durable_contents(),
                NodeState::Broken => BTreeMap::new(),
            })
            .collect()
    }

    /// Storage engines that failed to recover after a crash.
    pub fn recovery_failures(&self) -> &[String] {
        &self.recovery_failures
    }

    /// Hints still waiting at their fallbacks: (count, bytes) over all nodes that are up.
    pub fn pending_hints(&self) -> (usize, u64) {
        self.nodes
            .iter()
            .filter_map(|slot| match &slot.state {
                NodeState::Up(node) => Some(node.pending_hints()),
                NodeState::Down(_) | NodeState::Broken => None,
            })
            .flat_map(|per_owner| per_owner.into_values())
            .fold((0, 0), |(c, b), (count, bytes)| (c + count, b + bytes))
    }

    /// Hint counters summed over the nodes that are up (counters restart with a node).
    pub fn hint_stats(&self) -> ringkv_core::node::hints::HintStats {
        let mut total = ringkv_core::node::hints::HintStats::default();
        for slot in &self.nodes {
            if let NodeState::Up(node) = &slot.state {
                let s = node.hint_stats();
                total.handed_off += s.handed_off;
                total.stored += s.stored;
                total.overflowed += s.overflowed;
                total.replayed += s.replayed;
                total.delivered += s.delivered;
                total.expired += s.expired;
            }
        }
        total
    }

    /// The workload (for key names).
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    fn schedule(&mut self, time: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Scheduled {
            time,
            sequence: self.sequence,
            event,
        });
    }

    fn now_for(&self, node: usize) -> Now {
        Now {
            monotonic: Instant::from_nanos(self.now),
            wall: self.nodes[node].clock.wall(self.now),
        }
    }

    fn node_mut(&mut self, node: usize) -> Option<&mut Node<SimStorage>> {
        match &mut self.nodes[node].state {
            NodeState::Up(n) => Some(n),
            NodeState::Down(_) | NodeState::Broken => None,
        }
    }

    /// Handles one event; false ends the run.
    fn dispatch(&mut self, event: Event) -> bool {
        match event {
            Event::Deliver { to, from, message } => {
                let now = self.now_for(to as usize);
                if let Some(node) = self.node_mut(to as usize) {
                    node.handle_message(now, NodeId(from), message);
                    self.drain(to as usize);
                }
            }
            Event::ClientArrive {
                node,
                request,
                body,
            } => {
                let now = self.now_for(node as usize);
                if let Some(n) = self.node_mut(node as usize) {
                    n.handle_client(now, request, body);
                    self.drain(node as usize);
                } else {
                    // Connection refused: the client knows the request never started.
                    let delay = self.network.client_delay(&mut self.net_rng);
                    let reply = ClientResponse::Refused { node, body };
                    self.schedule(self.now + delay, Event::ClientReply { request, reply });
                }
            }
            Event::ClientReply { request, reply } => {
                if request.0 >> 32 == u64::from(FINAL_READER) {
                    return self.on_final_read(request, reply);
                }
                self.on_client_reply(request, reply)
            }
            Event::ClientGiveUp { request } => self.on_client_give_up(request),
            Event::AdminRemove { node } => {
                if !self.ring.contains(NodeId(node)) {
                    self.admin_change(membership::AdminChange::Remove(NodeId(node)));
                }
            }
            Event::ClientSend { client } => self.client_send(client),
            Event::Timer { node, incarnation } => {
                let slot = &mut self.nodes[node as usize];
                if slot.incarnation == incarnation && slot.timer_at == Some(self.now) {
                    slot.timer_at = None;
                }
                if slot.incarnation == incarnation {
                    let now = self.now_for(node as usize);
                    if let Some(n) = self.node_mut(node as usize) {
                        n.handle_timeout(now);
                        self.drain(node as usize);
                    }
                }
            }
            Event::DiskSynced {
                node,
                incarnation,
                token,
                point,
            } => self.on_disk_synced(node, incarnation, token, point),
            Event::Fault(action) => self.apply_fault(action),
            Event::PhaseChange => self.start_liveness(),
            Event::End => return self.start_final_reads(),
            Event::FinalEnd => return false,
        }
        true
    }

    /// Carries out every output of `node`, then arms its timer.
    fn drain(&mut self, node: usize) {
        while let Some(output) = self.node_mut(node).and_then(|n| n.poll_output()) {
            match output {
                Output::Send { to, message } => {
                    self.counters.messages += 1;
                    if matches!(message, ringkv_core::Message::Gossip(_)) {
                        self.gossip_figures.messages += 1;
                        self.gossip_figures.bytes +=
                            ringkv_core::codec::encode(&message).len() as u64;
                    }
                    if message.is_anti_entropy() {
                        self.counters.anti_entropy_messages += 1;
                        self.counters.anti_entropy_bytes +=
                            ringkv_core::codec::encode(&message).len() as u64;
                    }
                    let from = u32::try_from(node).unwrap_or(u32::MAX);
                    match self.network.fate(from, to.0, &mut self.net_rng) {
                        Fate::Lost => {}
                        Fate::Once(delay) => self.schedule(
                            self.now + delay,
                            Event::Deliver {
                                to: to.0,
                                from,
                                message,
                            },
                        ),
                        Fate::Twice(a, b) => {
                            let copy = message.clone();
                            self.schedule(
                                self.now + a,
                                Event::Deliver {
                                    to: to.0,
                                    from,
                                    message,
                                },
                            );
                            self.schedule(
                                self.now + b,
                                Event::Deliver {
                                    to: to.0,
                                    from,
                                    message: copy,
                                },
                            );
                        }
                    }
                }
                Output::Persist { token } => {
                    if self.nodes[node].sync_in_flight {
                        self.nodes[node].sync_wanted = Some(token);
                    } else {
                        self.start_sync(node, token);
                    }
                }
                Output::Reply { request, reply } => {
                    let delay = self.network.client_delay(&mut self.net_rng);
                    let reply = ClientResponse::Reply(reply);
                    self.schedule(self.now + delay, Event::ClientReply { request, reply });
                }
                Output::Event(event) => {
                    let kind = match event {
                        NodeEvent::StoragePoisoned { .. } => "storage-poisoned",
                        NodeEvent::StorageError { .. } => "storage-error",
                        NodeEvent::ForwardRetried { .. } => "forward-retried",
                        NodeEvent::MemberStatus { .. } => {
                            self.check_watches();
                            "member-status"
                        }
                        NodeEvent::MemberDiscovered { .. } => "member-discovered",
                        NodeEvent::RingChanged { .. } => "ring-changed",
                        NodeEvent::RingChangeDiscarded { .. } => "ring-change-discarded",
                        NodeEvent::TreeRebuildMismatch { .. } => "tree-rebuild-mismatch",
                    };
                    *self.counters.node_events.entry(kind).or_insert(0) += 1;
                }
            }
        }
        let next = self.node_mut(node).and_then(|n| n.poll_timeout());
        if let Some(at) = next {
            let at = at.as_nanos().max(self.now);
            let slot = &self.nodes[node];
            if slot.timer_at.is_none_or(|t| at < t) {
                let incarnation = slot.incarnation;
                self.nodes[node].timer_at = Some(at);
                let node = u32::try_from(node).unwrap_or(u32::MAX);
                self.schedule(at, Event::Timer { node, incarnation });
            }
        }
    }

    /// Starts an fsync covering every write staged so far; it completes after the disk latency.
    fn start_sync(&mut self, node: usize, token: PersistToken) {
        let Some(point) = self.node_mut(node).map(|n| n.storage().staged_seq()) else {
            return;
        };
        let delay = self.disk_rng.gen_range(self.fsync_ns.0..=self.fsync_ns.1);
        let slot = &mut self.nodes[node];
        slot.sync_in_flight = true;
        let incarnation = slot.incarnation;
        let node = u32::try_from(node).unwrap_or(u32::MAX);
        let event = Event::DiskSynced {
            node,
            incarnation,
            token: token.0,
            point,
        };
        self.schedule(self.now + delay, event);
    }

    fn on_disk_synced(&mut self, node: u32, incarnation: u32, token: u64, point: u64) {
        let index = node as usize;
        if self.nodes[index].incarnation != incarnation {
            return; // the node crashed since: its unsynced writes are already gone
        }
        self.nodes[index].sync_in_flight = false;
        let wanted = self.nodes[index].sync_wanted.take();
        let fail = self.fsync_failure > 0.0 && self.disk_rng.gen_bool(self.fsync_failure);
        let now = self.now_for(index);
        self.counters.syncs += 1;
        let mut self_last_durable_change = None;
        let now_ns = self.now;
        let Some(n) = self.node_mut(index) else {
            return;
        };
        if fail {
            n.storage_mut().inject_sync_failure();
        }
        let pending_before = n.storage().staged_len();
        let result = n.storage_mut().sync_through(point);
        if n.storage().staged_len() < pending_before {
            self_last_durable_change = Some(now_ns);
        }
        match &result {
            Ok(()) => n.handle_persisted(now, PersistToken(token)),
            Err(e) => n.handle_persist_failed(now, PersistToken(token), e.to_string()),
        }
        if result.is_err() {
            self.nodes[index].poisoned = true;
        }
        if let Some(at) = self_last_durable_change {
            self.last_durable_change_ns = at;
        }
        self.drain(index);
        if let Some(token) = wanted {
            if !self.nodes[index].sync_in_flight && !self.nodes[index].poisoned {
                self.start_sync(index, token);
            }
        }
    }

    fn apply_fault(&mut self, action: FaultAction) {
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
        }
    }

    /// An operator changed the ring: with gossip the change is issued on one node and spreads;
    /// without, every node gets the new ring at once.
    fn ring_changed(&mut self, change: membership::AdminChange) {
        if self.gossip.is_some() {
            self.admin_change(change);
        } else {
            self.push_ring();
        }
    }

    /// Gives every running node the current ring (an operator's change, spread at once; nodes that
    /// are down get it when they restart).
    fn push_ring(&mut self) {
        for node in 0..self.nodes.len() {
            let ring = self.ring.clone();
            if let Some(n) = self.node_mut(node) {
                n.update_ring(ring);
                self.drain(node);
            }
        }
    }

    fn crash(&mut self, node: usize) {
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
        slot.sync_in_flight = false;
        slot.sync_wanted = None;
    }

    fn restart(&mut self, node: usize) {
        let incarnation = self.nodes[node].incarnation;
        let config = node_config(&self.config, self.seed, node as u32, incarnation);
        let now = self.now_for(node);
        let slot = &mut self.nodes[node];
        let state = std::mem::replace(&mut slot.state, NodeState::Broken);
        slot.state = match state {
            NodeState::Down(storage) => {
                match membership::start_node(config, self.gossip.as_ref(), &self.ring, storage, now)
                {
                    Ok(n) => NodeState::Up(Box::new(n)),
                    Err(_) => NodeState::Broken,
                }
            }
            other => other,
        };
        if matches!(self.nodes[node].state, NodeState::Up(_)) {
            self.watch(node as u32, ringkv_core::membership::MemberStatus::Alive);
        }
    }

    fn start_liveness(&mut self) {
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

    // ---------------------------------------------------------------- clients

    fn client_send(&mut self, client: u32) {
        if self.phase != Phase::Faults || self.issued >= self.operations {
            return;
        }
        let c = &mut self.clients[client as usize];
        if c.in_flight.is_some() {
            return;
        }
        let request = RequestId((u64::from(client) << 32) | u64::from(c.next_seq));
        c.next_seq += 1;
        self.issued += 1;
        let rng = &mut self.workload_rng;
        let kind = self.workload.draw_kind(rng);
        let key_index = self.workload.draw_key(rng);
        let coordinator = if self.local_coordinators && self.datacenters > 1 {
            // Nodes are dealt round-robin over datacenters: node i lives in i mod datacenters.
            let home = client % self.datacenters;
            let per_dc = (self.nodes.len() as u32).div_ceil(self.datacenters);
            let pick = rng.gen_range(0..per_dc);
            (home + pick * self.datacenters).min(self.nodes.len() as u32 - 1)
        } else {
            rng.gen_range(0..self.nodes.len() as u32)
        };
        let key = self.workload.key(key_index).clone();
        let context = match kind {
            OpKind::Get => None,
            _ => self.clients[client as usize].contexts.remove(&key_index),
        };
        let context_sent = context.clone();
        let (value, body) = match kind {
            OpKind::Get => (
                0,
                ClientRequest::Get {
                    key,
                    consistency: None,
                },
            ),
            OpKind::Put => {
                let (id, bytes) = self.workload.draw_value(&mut self.workload_rng);
                (
                    id,
                    ClientRequest::Put {
                        key,
                        value: bytes,
                        context,
                        consistency: None,
                    },
                )
            }
            OpKind::Delete => (
                0,
                ClientRequest::Delete {
                    key,
                    context,
                    consistency: None,
                },
            ),
        };
        let index = self.history.ops.len();
        self.history.ops.push(HistoryOp {
            client,
            key: key_index,
            kind,
            value,
            read: Vec::new(),
            version: None,
            context: context_sent,
            acks: 0,
            coordinator,
            invoke_ns: self.now,
            complete_ns: None,
            outcome: OpOutcome::Indeterminate,
            during_faults: true,
        });
        self.clients[client as usize].in_flight = Some((request, index));
        let delay = self.network.client_delay(&mut self.net_rng);
        self.schedule(
            self.now + delay,
            Event::ClientArrive {
                node: coordinator,
                request,
                body,
            },
        );
        self.schedule(
            self.now + self.client_timeout_ns,
            Event::ClientGiveUp { request },
        );
    }

    /// After the liveness phase: read every key through the protocol at `all`, so the checkers can
    /// compare what a client would read with what the replicas hold. Returns false when there is
    /// nothing to read.
    fn start_final_reads(&mut self) -> bool {
        self.phase = Phase::Done;
        let keys = u32::try_from(self.workload.key_count()).unwrap_or(u32::MAX);
        let n = usize::from(self.config.n);
        for key_index in 0..keys {
            let key = self.workload.key(key_index).clone();
            let coordinator = self
                .ring
                .preference_list(&key, n)
                .first()
                .map_or(0, |id| id.0);
            let request = RequestId((u64::from(FINAL_READER) << 32) | u64::from(key_index));
            let body = ClientRequest::Get {
                key,
                consistency: Some(Consistency::All),
            };
            self.schedule(
                self.now,
                Event::ClientArrive {
                    node: coordinator,
                    request,
                    body,
                },
            );
        }
        self.schedule(self.now + FINAL_READS_NS, Event::FinalEnd);
        keys > 0
    }

    /// A reply to a final read; false once every key has answered.
    fn on_final_read(&mut self, request: RequestId, reply: ClientResponse) -> bool {
        let key = u32::try_from(request.0 & 0xffff_ffff).unwrap_or(u32::MAX);
        let read = match reply {
            ClientResponse::Reply(ClientReply::Found { values, .. }) => {
                FinalRead::Values(values.iter().map(|v| value_id(v)).collect())
            }
            ClientResponse::Reply(ClientReply::NotFound { .. }) => FinalRead::Values(Vec::new()),
            other => {
                // A final read can fail only if the cluster has not settled; ask again a few times
                // so a slow replica is told apart from a stuck one.
                let attempts = self.final_read_attempts.entry(key).or_insert(0);
                *attempts += 1;
                if *attempts < FINAL_READ_ATTEMPTS_MAX {
                    let retry = RequestId(request.0);
                    let body = ClientRequest::Get {
                        key: self.workload.key(key).clone(),
                        consistency: Some(Consistency::All),
                    };
                    let node =
                        u32::try_from(u64::from(*attempts) % self.nodes.len() as u64).unwrap_or(0);
                    self.schedule(
                        self.now + 100 * NANOS_PER_MS,
                        Event::ClientArrive {
                            node,
                            request: retry,
                            body,
                        },
                    );
                    return true;
                }
                FinalRead::Failed(format!("{other:?}"))
            }
        };
        self.final_reads.insert(key, read);
        self.final_reads.len() < self.workload.key_count()
    }

    /// What the final protocol reads returned, by key index.
    pub fn final_reads(&self) -> &BTreeMap<u32, FinalRead> {
        &self.final_reads
    }

    fn take_in_flight(&mut self, request: RequestId) -> Option<(u32, usize)> {
        let client = u32::try_from(request.0 >> 32).ok()?;
        let c = self.clients.get_mut(client as usize)?;
        match c.in_flight {
            Some((r, index)) if r == request => {
                c.in_flight = None;
                Some((client, index))
            }
            _ => None,
        }
    }

    fn on_client_reply(&mut self, request: RequestId, reply: ClientResponse) {
        let Some((client, index)) = self.take_in_flight(request) else {
            return;
        };
        if let ClientResponse::Refused { node, body } = &reply {
            // A client library tries another node when one refuses the connection: the request
            // never started anywhere, so it is the same operation.
            let c = &mut self.clients[client as usize];
            if c.refusals + 1 < self.nodes.len() as u32 {
                c.refusals += 1;
                c.in_flight = Some((request, index));
                let others = self.nodes.len() as u32 - 1;
                let next =
                    (node + 1 + self.workload_rng.gen_range(0..others)) % self.nodes.len() as u32;
                self.history.ops[index].coordinator = next;
                let delay = self.network.client_delay(&mut self.net_rng);
                let body = body.clone();
                self.schedule(
                    self.now + delay,
                    Event::ClientArrive {
                        node: next,
                        request,
                        body,
                    },
                );
                return;
            }
        }
        self.clients[client as usize].refusals = 0;
        if let ClientResponse::Reply(
            ClientReply::Found { context, .. } | ClientReply::NotFound { context, .. },
        ) = &reply
        {
            let key = self.history.ops[index].key;
            self.clients[client as usize]
                .contexts
                .insert(key, context.clone());
        }
        let op = &mut self.history.ops[index];
        op.complete_ns = Some(self.now);
        match reply {
            ClientResponse::Refused { .. } => op.outcome = OpOutcome::Failed,
            ClientResponse::Reply(reply) => match reply {
                ClientReply::Found { values, acks, .. } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                    op.read = values.iter().map(|v| value_id(v)).collect();
                }
                ClientReply::NotFound { acks, .. } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                }
                ClientReply::Written { version, acks } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                    op.version = Some(version);
                }
                ClientReply::Unavailable { acks, .. } => {
                    op.outcome = OpOutcome::Failed;
                    op.acks = acks;
                }
                ClientReply::Indeterminate { acks, .. } => {
                    op.outcome = OpOutcome::Indeterminate;
                    op.acks = acks;
                }
                ClientReply::Rejected(_) => op.outcome = OpOutcome::Failed,
            },
        }
        self.schedule_next(client);
    }

    fn on_client_give_up(&mut self, request: RequestId) {
        let Some((client, _index)) = self.take_in_flight(request) else {
            return;
        };
        self.clients[client as usize].refusals = 0;
        // The op stays `Indeterminate` with no completion time.
        self.schedule_next(client);
    }

    fn schedule_next(&mut self, client: u32) {
        let jitter = self.workload_rng.gen_range(0..=self.op_gap_ns / 4);
        let c = &mut self.clients[client as usize];
        c.next_due += self.op_gap_ns;
        let at = c.next_due.max(self.now) + jitter;
        self.schedule(at, Event::ClientSend { client });
    }
}

/// Where node `i` lives: nodes are dealt round-robin over datacenters, then over racks.
fn location_of(scenario: &Scenario, i: u32) -> NodeLocation {
    let dc = i % scenario.cluster.datacenters;
    let rack = (i / scenario.cluster.datacenters) % scenario.cluster.racks;
    NodeLocation {
        datacenter: format!("dc{dc}"),
        rack: format!("rack{rack}"),
        weight: 1,
    }
}

fn node_config(cluster: &ClusterConfig, seed: u64, node: u32, incarnation: u32) -> NodeConfig {
    NodeConfig {
        id: NodeId(node),
        cluster: cluster.clone(),
        rng_seed: hash_pair(hash_pair(seed, u64::from(node)), u64::from(incarnation)),
    }
}
