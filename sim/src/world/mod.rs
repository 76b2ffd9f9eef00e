//! The simulated world: nodes, network, disks, clocks, clients and the event loop that drives
//! them. Single-threaded and deterministic: one seed, one min-heap keyed by (time, sequence).

mod clients;
pub(crate) mod clocks;
mod event;
mod faults;
mod final_reads;
mod membership;
mod nemesis;
mod network;
mod persist;
pub mod storage;

pub use clocks::NodeClock;
pub use event::Event;
pub use final_reads::FinalRead;
pub use membership::GossipFigures;
pub use nemesis::FaultAction;
pub use network::{Fate, Network};

use crate::fingerprint::Fingerprint;
use crate::history::History;
use crate::scenario::Scenario;
use crate::workload::Workload;
use bytes::Bytes;
use event::{ClientResponse, EventQueue};
use final_reads::FINAL_READER;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::buggify::{FaultPoints, SiteCounts};
use ringkv_core::hash::hash_pair;
use ringkv_core::node::SendFailureClass;
use ringkv_core::{
    CausalContext, ClientReply, ClusterConfig, Instant, Message, Node, NodeConfig, NodeEvent,
    NodeId, NodeLocation, Now, Output, RequestError, RequestId, Ring,
};
use ringkv_lsm::maintenance::MaintenanceScheduler;
use std::collections::{BTreeMap, VecDeque};
use storage::SimStorage;

const NANOS_PER_MS: u64 = 1_000_000;
/// Frames from this size on are decoded as shared bytes (see `World::decode_wire`).
const SHARED_FRAME_BYTES_MIN: usize = 256;

/// Most history entries reserved before a run (a larger workload's history grows as it goes).
const HISTORY_RESERVED_OPS_MAX: u64 = 1 << 20;

/// Independent random streams, all derived from the one seed, so that (for example) a change in
/// how many network draws happen does not shift the workload.
#[derive(Clone, Copy)]
enum Stream {
    Network = 1,
    Workload = 2,
    Nemesis = 3,
    Disk = 4,
    Clocks = 5,
    /// The driver's own fault sites (`SIM_SITES`) and the nodes' group commit: a draw there
    /// shifts no other stream, so a site that is live but never fires changes no trace.
    Buggify = 6,
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
    /// Persist requests and the one fsync the disk runs at a time (reset by a crash).
    group_commit: ringkv_core::storage::GroupCommit,
    /// This incarnation's maintenance scheduler (LSM nodes; started by its first drain).
    maintenance: Option<MaintenanceScheduler>,
    /// When the pending `Maintenance` event of this incarnation fires, if one is scheduled.
    maintenance_at: Option<u64>,
    /// Hints this incarnation had expired when the trace last looked (the core reports expiry
    /// only as a counter, so `--trace` shows its increments).
    hints_expired_traced: u64,
    /// Hints past `hint_age_max_ms` (kept, replayed first) already shown in the trace.
    hints_aged_traced: u64,
    /// Disk wipes so far: each replaced disk gets its own seed.
    wipes: u32,
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
    /// The command in progress (`workload.interface = "commands"`).
    command: Option<clients::RunningCommand>,
    /// The full scan in progress: its index in `History::scans` (`workload.scan_fraction`).
    scan: Option<usize>,
    /// The live value this client last saw for each key (reads, compare-and-sets): what its
    /// next compare-and-set of the key expects (`workload.cas_fraction`).
    seen: BTreeMap<u32, Bytes>,
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
    /// Maintenance steps run (LSM nodes: compaction, value-log collection).
    pub maintenance_steps: u64,
    /// Faults applied (scheduled and nemesis).
    pub faults: u64,
    /// Node events by kind.
    pub node_events: BTreeMap<&'static str, u64>,
    /// Anti-entropy messages sent.
    pub anti_entropy_messages: u64,
    /// Their encoded bytes.
    pub anti_entropy_bytes: u64,
    /// Messages the codec refused to encode (over the size limit): never sent.
    pub unencodable_messages: u64,
    /// Encoded messages the codec could not decode again: never delivered.
    pub undecodable_messages: u64,
    /// Sends that could not be made (a full link or an unencodable message), by the class the
    /// core treats them as: "request" (a replica's `Busy` refusal), "reply", "repeatable".
    pub sends_failed: BTreeMap<&'static str, u64>,
    /// Typed rejections nodes answered clients with, by error.
    pub rejections: BTreeMap<&'static str, u64>,
}

/// Every name [`rejection_name`] gives (what `[check] rejections_min` may name).
pub const REJECTION_NAMES: [&str; 16] = [
    "key-too-large",
    "value-too-large",
    "invalid-consistency",
    "no-replicas",
    "too-many-siblings",
    "busy",
    "storage-unavailable",
    "reserved-key",
    "linearizable-needs-lww",
    "siblings-too-large",
    "out-of-disk-space",
    "not-an-integer",
    "increment-overflow",
    "counters-need-lww",
    "expiry-needs-lww",
    "replicas-down",
];

/// A short stable name of a typed rejection, for the summary.
fn rejection_name(error: &RequestError) -> &'static str {
    match error {
        RequestError::KeyTooLarge { .. } => "key-too-large",
        RequestError::ValueTooLarge { .. } => "value-too-large",
        RequestError::InvalidConsistency => "invalid-consistency",
        RequestError::NoReplicas => "no-replicas",
        RequestError::TooManySiblings { .. } => "too-many-siblings",
        RequestError::Busy => "busy",
        RequestError::StorageUnavailable => "storage-unavailable",
        RequestError::ReservedKey => "reserved-key",
        RequestError::LinearizableNeedsLww => "linearizable-needs-lww",
        RequestError::SiblingsTooLarge { .. } => "siblings-too-large",
        RequestError::OutOfDiskSpace => "out-of-disk-space",
        RequestError::NotAnInteger => "not-an-integer",
        RequestError::IncrementOverflow => "increment-overflow",
        RequestError::CountersNeedLww => "counters-need-lww",
        RequestError::ExpiryNeedsLww => "expiry-needs-lww",
        RequestError::ReplicasDown { .. } => "replicas-down",
    }
}

/// A whole simulated cluster under one seed.
pub struct World {
    now: u64,
    sequence: u64,
    queue: EventQueue,
    /// One node's outputs of the drain being carried out (reused to save allocations).
    drained: Vec<Output>,
    /// The bytes of the message crossing the codec now, reused from message to message.
    wire: Vec<u8>,
    /// Sends of the drain being carried out that could not be made, fed back after it; `None`
    /// while a drain holds it (putting it back then drops no empty queue: that drop's call was
    /// 0.6% of a run, once per drain).
    unsent: Option<VecDeque<(NodeId, Message)>>,
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
    /// The scenario's nodes run the LSM engine (a wiped node gets a fresh one).
    lsm: bool,
    op_gap_ns: u64,
    client_timeout_ns: u64,
    /// `workload.scan_fraction`, `scan_keys_max` and `unsafe_scan_skip_last_key`.
    scan_fraction: f64,
    scan_keys_max: u32,
    unsafe_scan_skip_last_key: bool,
    fsync_ns: (u64, u64),
    fsync_failure: f64,
    fault_phase_end: u64,
    end: u64,
    phase: Phase,
    seed: u64,
    net_rng: ChaCha8Rng,
    workload_rng: ChaCha8Rng,
    disk_rng: ChaCha8Rng,
    /// The driver's fault sites (`ringkv_core::buggify::SIM_SITES`): the choices a real driver
    /// could make, made badly on purpose.
    faults: FaultPoints,
    buggify_rng: ChaCha8Rng,
    /// The history every client recorded.
    pub history: History,
    /// What the history does not say about its compare-and-sets, by op index (`checks::cas`).
    pub cas_steps: BTreeMap<usize, crate::checks::cas::CasStep>,
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
    /// When an injected fsync failure first poisoned a node's storage in the fault phase.
    first_poisoning_ns: Option<u64>,
    trace: Option<Vec<String>>,
    /// Gossip membership settings, when the scenario turns gossip on.
    gossip: Option<membership::GossipSetup>,
    /// Failure detections being timed.
    watches: Vec<membership::Watch>,
    /// Gossip traffic and detection times.
    pub gossip_figures: GossipFigures,
    /// How often each fault site (`buggify!`) was reached while live and fired during `run`, in
    /// the nodes and in this driver.
    pub buggify: SiteCounts,
}

impl World {
    /// Builds the world of `scenario` under `seed`; `trace` keeps a readable event log.
    pub fn new(scenario: &Scenario, seed: u64, trace: bool) -> Result<World, String> {
        let config = scenario.cluster_config().map_err(|e| e.to_string())?;
        let nodes = scenario.cluster.nodes;
        let initial = scenario.cluster.initial_nodes.unwrap_or(nodes);
        let members: Vec<ringkv_core::ring::Member> = (0..initial)
            .map(|i| ringkv_core::ring::Member {
                id: NodeId(i),
                location: location_of(scenario, i),
            })
            .collect();
        // An invalid membership configuration is reported after the ring, as it always was.
        let membership = scenario.membership_config().map_err(|e| e.to_string());
        let gossip = membership
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map(|config| membership::GossipSetup::new(config.clone(), &members));
        // With gossip, the seed ring the nodes start from is these joins replayed, in this
        // order, onto an empty ring of the same vnode count: the ring the loop below builds.
        // Taking it saves replaying them twice (a tenth of a 1,000-node run's CPU).
        let seed_ring = gossip
            .as_ref()
            .and_then(|setup| setup.seed_state.as_ref())
            .filter(|_| {
                gossip
                    .as_ref()
                    .is_some_and(|setup| setup.config.vnodes_per_node == config.vnodes_per_node)
            })
            .map(|state| state.ring());
        let mut ring = match seed_ring {
            Some(seed) => seed.clone(),
            None => {
                let mut ring = Ring::new(config.vnodes_per_node);
                for member in &members {
                    ring.add_node(member.id, member.location.clone())
                        .map_err(|e| e.to_string())?;
                }
                ring
            }
        };
        ring.set_datacenter_replicas(&config.replicas_per_datacenter);
        membership?;
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
                group_commit: persist::group_commit(seed, i, 0, config.simulation),
                maintenance: None,
                maintenance_at: None,
                hints_expired_traced: 0,
                hints_aged_traced: 0,
                wipes: 0,
            });
        }
        let w = &scenario.workload;
        let fault_phase_end = scenario.duration_ms * NANOS_PER_MS;
        let mean_gap_ns = if w.operations == 0 {
            fault_phase_end
        } else {
            fault_phase_end.saturating_mul(u64::from(w.clients)) / w.operations.max(1)
        };
        let faults = FaultPoints::new(hash_pair(seed, Stream::Buggify as u64), config.simulation);
        let mut world = World {
            now: 0,
            sequence: 0,
            queue: EventQueue::default(),
            drained: Vec::new(),
            wire: Vec::new(),
            unsent: Some(VecDeque::new()),
            nodes: slots,
            ring,
            network: Network::new(
                nodes as usize,
                &scenario.network.latency_ms,
                &scenario.network.client_latency_ms,
                scenario.network.drop,
                scenario.network.duplicate,
            )
            .with_queue_messages_max(scenario.network.queue_messages_max),
            config,
            clients: (0..w.clients)
                .map(|_| Client {
                    in_flight: None,
                    next_seq: 0,
                    next_due: 0,
                    contexts: BTreeMap::new(),
                    refusals: 0,
                    command: None,
                    scan: None,
                    seen: BTreeMap::new(),
                })
                .collect(),
            workload: Workload::new(scenario),
            issued: 0,
            operations: w.operations,
            locations: (0..nodes).map(|i| location_of(scenario, i)).collect(),
            removed: Vec::new(),
            local_coordinators: w.local_coordinators,
            lsm: scenario.disk.engine == "lsm",
            datacenters: scenario.cluster.datacenters,
            op_gap_ns: mean_gap_ns.max(1),
            client_timeout_ns: scenario.client_timeout_ms() * NANOS_PER_MS,
            scan_fraction: w.scan_fraction,
            scan_keys_max: w.scan_keys_max,
            unsafe_scan_skip_last_key: w.unsafe_scan_skip_last_key,
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
            faults,
            buggify_rng: stream(seed, Stream::Buggify),
            // Sized for the workload's operations once (up to a bound; retried and final reads
            // may add a few): growing it by doubling copied the whole history and touched twice
            // its memory.
            history: History {
                ops: Vec::with_capacity(
                    usize::try_from(w.operations.min(HISTORY_RESERVED_OPS_MAX)).unwrap_or(0),
                ),
                ..History::default()
            },
            cas_steps: BTreeMap::new(),
            fingerprint: Fingerprint::default(),
            counters: RunCounters::default(),
            drawn,
            final_reads: BTreeMap::new(),
            recovery_failures: Vec::new(),
            final_read_attempts: BTreeMap::new(),
            last_durable_change_ns: 0,
            first_poisoning_ns: None,
            trace: trace.then(Vec::new),
            gossip,
            watches: Vec::new(),
            gossip_figures: GossipFigures::default(),
            buggify: SiteCounts::new(),
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

    /// Runs to the end of the liveness phase, counting the fault sites reached on the way (every
    /// input of every node is fed from here).
    pub fn run(&mut self) {
        let ((), counts) = ringkv_core::buggify::record(|| self.run_events());
        for (site, count) in counts {
            self.buggify.entry(site).or_default().add(count);
        }
    }

    fn run_events(&mut self) {
        while let Some((time, event)) = self.queue.pop() {
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

    /// Adds a line to the trace for something that is not an event of the queue (a fault drawn
    /// inside an event, a node's report); `what` is only built when tracing.
    fn note(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>12.3}ms   {}", self.now as f64 / 1e6, what()));
        }
    }

    /// When any replica last made a write durable (after it, stored state no longer changed).
    pub fn last_durable_change_ns(&self) -> u64 {
        self.last_durable_change_ns
    }

    /// When an injected fsync failure first poisoned a node's storage during the fault phase (it
    /// stays poisoned until the liveness phase restarts the node), if one did.
    pub fn first_poisoning_ns(&self) -> Option<u64> {
        self.first_poisoning_ns
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

    /// For each node, whether it is a member of the final ring (the ring the nodes agree on; not
    /// removed by an operator). Only members' disks count as holding data at the end: a removed
    /// or decommissioned node's disk is on its way to the scrap heap.
    pub fn final_members(&self) -> Vec<bool> {
        let ring = self.nodes_ring();
        (0..self.nodes.len())
            .map(|i| {
                let id = u32::try_from(i).unwrap_or(u32::MAX);
                ring.contains(NodeId(id)) && !self.removed.contains(&id)
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
        self.queue.push(time, self.sequence, event);
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
                self.network.delivered(from, to);
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
            Event::AdminRetry(change) => {
                if change.still_wanted(&self.ring) {
                    self.admin_change(change);
                }
            }
            Event::ClientSend { client } => self.client_send(client),
            Event::Timer { node, incarnation } => {
                let slot = &mut self.nodes[node as usize];
                // `<=`, not `==`: a pause defers this event past the time it was armed for, and a
                // timer still marked armed at a past time would stop `drain` from ever arming the
                // next one (the node would never tick again: no gossip, no request deadlines).
                if slot.incarnation == incarnation && slot.timer_at.is_some_and(|t| t <= self.now) {
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
            Event::Maintenance { node, incarnation } => self.on_maintenance(node, incarnation),
            Event::Fault(action) => self.apply_fault(action),
            Event::PhaseChange => self.start_liveness(),
            Event::End => return self.start_final_reads(),
            Event::FinalEnd => return false,
        }
        true
    }

    /// Carries out every output of `node`, then feeds it each send that could not be made (a
    /// full link or an unencodable message; each such input again followed by a full drain),
    /// then arms its timer.
    fn drain(&mut self, node: usize) {
        let mut unsent = self.unsent.take().unwrap_or_default();
        loop {
            self.carry_out(node, &mut unsent);
            let Some((to, message)) = unsent.pop_front() else {
                break;
            };
            let kind = match SendFailureClass::of(&message) {
                SendFailureClass::Request => "request",
                SendFailureClass::Reply => "reply",
                SendFailureClass::Repeatable => "repeatable",
            };
            *self.counters.sends_failed.entry(kind).or_insert(0) += 1;
            let now = self.now_for(node);
            if let Some(n) = self.node_mut(node) {
                n.handle_send_failed(now, to, message);
            }
        }
        self.unsent = Some(unsent);
        if self.trace.is_some() {
            self.trace_hint_expiry(node);
        }
        self.maintain(node);
        let next = self.node_mut(node).and_then(|n| n.poll_timeout());
        if let Some(at) = next {
            let at = at.as_nanos().max(self.now);
            let slot = &self.nodes[node];
            if slot.timer_at.is_none_or(|t| at < t) {
                let incarnation = slot.incarnation;
                self.nodes[node].timer_at = Some(at);
                let node = u32::try_from(node).unwrap_or(u32::MAX);
                self.schedule(at, Event::Timer { node, incarnation });
                if at > self.now
                    && ringkv_core::buggify!(
                        self.faults,
                        &mut self.buggify_rng,
                        "sim/timer-early-wake"
                    )
                {
                    // A driver may wake a node before its deadline (a sleep cut short, an
                    // input racing the timer): a timeout that is not due must be a no-op. The
                    // timer stays armed for `at`, so the node is still woken then.
                    let early = self.now + self.buggify_rng.gen_range(0..at - self.now);
                    self.schedule(early, Event::Timer { node, incarnation });
                }
            }
        }
    }

    /// Decodes the frame in `wire`. A large frame is handed over whole, as shared bytes, and
    /// the message's keys and values are slices of it: that saves a copy and an allocation of
    /// each, where the next message's encoding then allocates a buffer of its own. A small
    /// frame's few bytes are cheaper to copy than a buffer is to allocate, so it is decoded
    /// from the reused buffer.
    fn decode_wire(&mut self) -> Result<Message, ringkv_core::codec::CodecError> {
        if self.wire.len() >= SHARED_FRAME_BYTES_MIN {
            let frame = bytes::Bytes::from(std::mem::take(&mut self.wire));
            ringkv_core::codec::decode_shared(&frame)
        } else {
            ringkv_core::codec::decode(&self.wire)
        }
    }

    /// Carries out every output `node` has; sends that cannot be made go to `unsent`.
    fn carry_out(&mut self, node: usize, unsent: &mut VecDeque<(NodeId, Message)>) {
        // The one drive step of core: every output the node has, in its order; they are carried
        // out below once the node is no longer borrowed (carrying one out never feeds it input).
        let mut drained = std::mem::take(&mut self.drained);
        if let Some(n) = self.node_mut(node) {
            ringkv_core::drive::drain(n, &mut drained);
        }
        for output in drained.drain(..) {
            match output {
                Output::Send { to, message } => {
                    self.counters.messages += 1;
                    // Bytes on the simulated wire: every message crosses the codec both ways,
                    // as it does between real nodes, so wire-format and size-limit bugs meet
                    // seeds. What cannot be encoded or decoded is counted and never delivered.
                    // A message too large to encode could not be queued either: the node
                    // decides what that means, as for a full link.
                    if ringkv_core::codec::encode_into(&message, &mut self.wire).is_err() {
                        self.counters.unencodable_messages += 1;
                        unsent.push_back((to, message));
                        continue;
                    }
                    let wire_bytes = self.wire.len() as u64;
                    let Ok(message) = self.decode_wire() else {
                        self.counters.undecodable_messages += 1;
                        continue;
                    };
                    if matches!(message, ringkv_core::Message::Gossip(_)) {
                        self.gossip_figures.messages += 1;
                        self.gossip_figures.bytes += wire_bytes;
                    }
                    if message.is_anti_entropy() {
                        self.counters.anti_entropy_messages += 1;
                        self.counters.anti_entropy_bytes += wire_bytes;
                    }
                    let from = u32::try_from(node).unwrap_or(u32::MAX);
                    if !self.network.has_room(from, to.0) {
                        unsent.push_back((to, message));
                        continue;
                    }
                    match self.network.fate(from, to.0, &mut self.net_rng) {
                        Fate::Lost => {}
                        Fate::Once(delay) => {
                            self.network.enqueued(from, to.0, 1);
                            self.schedule(
                                self.now + delay,
                                Event::Deliver {
                                    to: to.0,
                                    from,
                                    message,
                                },
                            )
                        }
                        Fate::Twice(a, b) => {
                            self.network.enqueued(from, to.0, 2);
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
                Output::Persist { token } => self.persist_requested(node, token),
                Output::Reply { request, reply } => {
                    if let ClientReply::Rejected(error) = &reply {
                        *self
                            .counters
                            .rejections
                            .entry(rejection_name(error))
                            .or_insert(0) += 1;
                    }
                    let delay = self.network.client_delay(&mut self.net_rng);
                    let reply = ClientResponse::Reply(reply);
                    self.schedule(self.now + delay, Event::ClientReply { request, reply });
                }
                Output::Event(event) => {
                    let kind = match event {
                        NodeEvent::StoragePoisoned { reason } => {
                            self.note(|| format!("n{node} storage poisoned: {reason}"));
                            "storage-poisoned"
                        }
                        NodeEvent::StorageError { reason } => {
                            self.note(|| format!("n{node} storage error: {reason}"));
                            "storage-error"
                        }
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
        self.drained = drained;
    }

    /// Shows in the trace the hints `node` expired since the trace last looked.
    fn trace_hint_expiry(&mut self, node: usize) {
        let NodeState::Up(n) = &self.nodes[node].state else {
            return;
        };
        let (expired, aged) = (n.hint_stats().expired, n.hint_stats().aged);
        let seen = self.nodes[node].hints_expired_traced;
        if expired > seen {
            self.nodes[node].hints_expired_traced = expired;
            self.note(|| {
                format!(
                    "n{node} expired {} hint(s) unsent ({expired} this incarnation)",
                    expired - seen
                )
            });
        }
        let seen = self.nodes[node].hints_aged_traced;
        if aged > seen {
            self.nodes[node].hints_aged_traced = aged;
            self.note(|| {
                format!(
                    "n{node} holds {} hint(s) past hint_age_max_ms: kept until delivered, replayed first ({aged} this incarnation)",
                    aged - seen
                )
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pause delivers the paused node's timer event late. Before the fix the node's timer was
    /// never armed again, so a node that had been paused once ran no anti-entropy round for the
    /// rest of the run, and replicas that had all been paused never converged (swarm's
    /// "vector-clock-convergence" and "vector-clock-ring-change" quarantines).
    #[test]
    fn a_paused_node_keeps_its_timers_after_the_pause() {
        let text = r#"
name = "pause-timers"
description = "one node paused; its periodic work must resume"
duration_ms = 6000
settle_ms = 4000
expect = "pass"

[cluster]
nodes = 3
n = 3
r = 2
w = 2
anti_entropy_interval_ms = 200

[workload]
clients = 2
operations = 100
keys = 10
read_fraction = 0.5
value_bytes = [10, 100]

[[fault]]
at_ms = 1000
pause = { node = 1, ms = 500 }
"#;
        let scenario = Scenario::parse("pause-timers", text).expect("a valid scenario");
        let mut world = World::new(&scenario, 7, false).expect("a world");
        world.run();
        let rounds = |world: &mut World, node: usize| {
            world
                .node_mut(node)
                .map_or(0, |n| n.anti_entropy_stats().rounds)
        };
        let (paused, steady) = (rounds(&mut world, 1), rounds(&mut world, 0));
        // 10 s at one round per 200 ms: about 50 rounds; the pause costs the paused node about
        // 3 of them, a dead timer all but the first 5.
        assert!(steady >= 40, "the steady node ran {steady} rounds");
        assert!(
            paused + 5 >= steady,
            "the paused node ran {paused} anti-entropy rounds, the steady one {steady}"
        );
    }
}
