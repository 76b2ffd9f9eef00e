//! Gossip membership, failure detection and the versioned ring, as one sans-IO machine.
//!
//! ## What it does
//! A SWIM-style protocol (Das, Gupta and Motivala, 2002) with the refinements HashiCorp's
//! memberlist made popular. Every message but the rare push-pull is small and of bounded size,
//! so a node's work per round does not grow with the cluster (the heartbeat gossip it replaces
//! sent the whole table every round: O(n) per message, O(n²) per round cluster-wide).
//!
//! Each member is held as a claim `(incarnation, liveness)` with liveness `Alive`, `Suspect` or
//! `Down` ([`GossipEntry`]); a merge keeps the larger claim (at one incarnation `Down` beats
//! `Suspect` beats `Alive`, and only the member itself raises its incarnation), so duplicated,
//! reordered, late and lost messages are harmless.
//!
//! * **Rounds** (every `gossip_interval_ms`): probe one member with a [`GossipMessage::Ping`],
//!   round-robin over a list of the `Alive` and `Suspect` members reshuffled each pass; push the
//!   pending updates to `fanout` random live peers ([`GossipMessage::Gossip`]) when there are
//!   any.
//! * **Probes:** the member answers with an [`GossipMessage::Ack`]. Without one after half of
//!   `suspect_after_ms`, `fanout` other members are asked to probe it ([`GossipMessage::PingReq`])
//!   and relay its `Ack`, and the direct probe is sent once more; without any answer after
//!   `suspect_after_ms`, the member is `Suspect` here.
//! * **Updates** (a member's new claim, learned or made here) are piggybacked on every `Ping`,
//!   `Ack`, `PingReq` and `Gossip`, at most [`PIGGYBACK_UPDATES_MAX`] per message, least-sent
//!   first; each is sent `4 × ceil(log10(n + 1))` times, then dropped (epidemic spread reaches
//!   everyone in O(log n) rounds with overwhelming probability). Every message to a member this
//!   node holds `Suspect` or `Down` carries that claim first, so a live member learns of it at
//!   once.
//! * **Refutation:** a node that hears a `Suspect` or `Down` claim about itself at its own
//!   incarnation (or any claim at a higher one: it restarted without its persisted incarnation)
//!   raises its incarnation above it and spreads `Alive`; it reports
//!   [`MembershipEvent::IncarnationChanged`] so the driver can persist the new value.
//! * **Down:** a member `Suspect` here for `down_after_ms` (the suspicion timeout) without a
//!   refutation is `Down` here, and that claim spreads: the first node to suspect it usually
//!   decides for everyone. Only `Down` should trigger hints and fallbacks.
//! * **Push-pull** (every `push_pull_interval_ms`, scaled up with the cluster size, and once at
//!   start): the whole table goes to one random live peer, which merges it and answers with its
//!   own ([`GossipMessage::State`]). The ring log rides on `State` only.
//! * **Down members** are contacted now and then: each round, with probability
//!   `down / (live + 1)`, one gets a `Ping` (carrying the `Down` claim, which a live member
//!   refutes in its `Ack`), and each push-pull adds one with the same probability. So the two
//!   sides of a healed partition find each other again within rounds and a cluster started
//!   before its seeds were up still forms.
//!
//! Time to detect a crash everywhere: the wait until some node probes the crashed member (about
//! one round: every node probes one member per round), `suspect_after_ms + down_after_ms`, then
//! O(log n) rounds for the `Down` claim to spread ([`harness::measure_detection`] measures it).
//! A local pause (the driver did not call [`Membership::handle_timeout`] for over half of
//! `suspect_after_ms`) shifts every probe and suspicion timer by the pause: this node's own stall
//! is not evidence against its peers.
//!
//! ## The ring
//! The ring is an ordered log of changes ([`RingChange`]: join, leave, remove) replayed onto an
//! empty ring ([`ring_log`] says why). Its version is `(changes, fingerprint)`; every message
//! carries the sender's version, and a node that sees a newer one opens a push-pull with the
//! sender, whose answer carries the log (at most one such pull per round). The highest version
//! wins, so all nodes converge on the same ring. Operator changes ([`Membership::join`],
//! [`Membership::leave`], [`Membership::remove`]) make a new version on the node where they are
//! issued. Two concurrent changes on different nodes: one log wins on every node; the loser's
//! node reports [`MembershipEvent::RingChangeDiscarded`], never silently.
//!
//! ## Driving it
//! It speaks the grammar of every machine in core (`handle_*` in, `poll_*` out). Every input is
//! followed by a full drain of [`Membership::poll_output`]:
//! * at start: [`Membership::new`], then [`Membership::handle_timeout`] at once (it probes and
//!   pushes its state immediately);
//! * whenever `now >= poll_timeout()`: [`Membership::handle_timeout`] (spurious calls are harmless);
//! * on every decoded [`GossipMessage`] from the network: [`Membership::handle_message`];
//! * on an operator command: [`Membership::join`] / [`Membership::leave`] / [`Membership::remove`].
//!
//! Outputs: [`MembershipOutput::Send`] (encode with `crate::codec::encode_value`) and
//! [`MembershipOutput::Event`]: status changes, ring changes, incarnation changes (persist the
//! incarnation and the ring log so a restart comes back with both).
//!
//! ## Measured
//! `cargo test -p ringkv-core --release membership::tests::detection_table -- --nocapture` prints,
//! for 5, 20 and 100 nodes, the time until every node judges a crashed node `Suspect` and `Down`,
//! the rounds beyond the configured timeouts, the rounds until every node sees the restarted
//! node `Alive`, and messages and bytes per node per second ([`harness::measure_detection`]).
//! In steady state a node sends about two small messages per round (a `Ping`, the `Ack` to the
//! ping it received) plus one `State` exchange per push-pull interval: traffic per node is O(1)
//! per round apart from the push-pull's O(n) every few seconds.

#![deny(missing_docs)]

pub mod addresses;
mod config;
pub mod harness;
mod message;
mod ring_catalog;
pub mod ring_log;
mod table;

pub use addresses::{AddressEntry, ClientAddress, ClientAddresses};
pub use config::MembershipConfig;
pub use harness::{measure_detection, DetectionReport};
pub use message::{GossipEntry, GossipMessage, Liveness, PIGGYBACK_UPDATES_MAX};
pub use ring_catalog::RingCatalog;
pub use ring_log::{RingChange, RingLog, RingLogError, RingState, RingVersion};

use crate::buggify::FaultPoints;
use crate::config::ConfigError;
use crate::id::NodeId;
use crate::ring::{Member, NodeLocation, Ring};
use crate::time::Instant;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use table::MemberTable;

/// The incarnation a member named only by the ring (or a seed list) is assumed to be at: the
/// one every node starts with (drivers start at 1 and raise it on every restart). Why assume
/// rather than hold "unknown": a suspicion is a claim about one incarnation, and nodes that held
/// different incarnations of a member (some heard its start announcement, some not) would ignore
/// each other's suspicions of it; with one assumed start, a fresh cluster agrees from the first
/// round, and only a restarted member's (higher) incarnation is news to spread.
pub const FIRST_INCARNATION: u64 = 1;

/// Each update is sent this many times `ceil(log10(n + 1))` (memberlist's default multiplier).
const RETRANSMIT_MULTIPLIER: u32 = 4;

/// Most probes of this node awaiting an answer at once; a round finding this many skips its
/// probe (only a `gossip_interval_ms` far below `suspect_after_ms` gets here).
const PROBES_IN_FLIGHT_MAX: usize = 32;

/// Most indirect probes this node runs for others at once; more `PingReq`s are dropped and
/// counted.
const RELAYS_MAX: usize = 64;

/// What this node believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Answering probes, as far as this node knows.
    Alive,
    /// A probe went unanswered (here or at another node); still used, not yet routed around.
    Suspect,
    /// Suspected for `down_after_ms` without refuting: treat as failed.
    Down,
    /// Left or removed from the ring; no longer probed or gossiped to.
    Left,
}

impl MemberStatus {
    fn of(liveness: Liveness) -> Self {
        match liveness {
            Liveness::Alive => MemberStatus::Alive,
            Liveness::Suspect => MemberStatus::Suspect,
            Liveness::Down => MemberStatus::Down,
        }
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub node: NodeId,
    /// Its incarnation as last heard.
    pub incarnation: u64,
    /// The member's own round counter: known for this node itself only, 0 for the others (the
    /// protocol carries no heartbeats).
    pub heartbeat: u64,
    /// This node's judgement.
    pub status: MemberStatus,
    /// Where it lives, if it is a ring member.
    pub location: Option<NodeLocation>,
}

/// Something the node (and operators) should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// This node's judgement of a member changed.
    StatusChanged {
        /// The member.
        node: NodeId,
        /// The previous status.
        from: MemberStatus,
        /// The new status.
        to: MemberStatus,
    },
    /// A member not known before entered the table.
    Discovered {
        /// The member.
        node: NodeId,
        /// Its status on arrival (`Alive`, or `Left` if the ring says so).
        status: MemberStatus,
    },
    /// This node adopted a new ring (its own change or a newer one by gossip).
    RingChanged {
        /// The new version.
        version: RingVersion,
    },
    /// A change in this node's ring log lost to a concurrent change and is not in the new ring.
    /// The operator must issue it again if it is still wanted.
    RingChangeDiscarded {
        /// The change that was dropped.
        change: RingChange,
    },
    /// This node raised its own incarnation to refute a newer claim about itself. Persist it.
    IncarnationChanged {
        /// The new incarnation.
        incarnation: u64,
    },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipOutput {
    /// Send `message` to `to`.
    Send {
        /// The receiver.
        to: NodeId,
        /// The message.
        message: GossipMessage,
    },
    /// Report an event.
    Event(MembershipEvent),
}

/// Why a membership input was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// The ring log or change is refused.
    Ring(RingLogError),
    /// `remove` is for dead nodes: this one is not `Down` here.
    NotDown {
        /// The node.
        node: NodeId,
        /// Its status here.
        status: Option<MemberStatus>,
    },
    /// The ring has more members than `members_max`.
    TooManyMembers(usize),
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::Config(error) => write!(f, "{error}"),
            MembershipError::Ring(error) => write!(f, "{error}"),
            MembershipError::NotDown { node, status } => {
                let judged = match status {
                    Some(MemberStatus::Alive) => "alive",
                    Some(MemberStatus::Suspect) => "suspect (not yet down)",
                    Some(MemberStatus::Down) => "down",
                    Some(MemberStatus::Left) => "already gone from the ring",
                    None => "unknown",
                };
                write!(
                    f,
                    "{node} is {judged} here; only a node this node's failure detector judges down can be removed"
                )
            }
            MembershipError::TooManyMembers(count) => {
                write!(f, "{count} members exceed members_max")
            }
        }
    }
}

impl std::error::Error for MembershipError {}

/// Counters for operators and measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Protocol rounds run.
    pub rounds: u64,
    /// Direct probes (`Ping`) sent.
    pub pings_sent: u64,
    /// `Ack` messages sent (answers and relays).
    pub acks_sent: u64,
    /// Indirect probe requests (`PingReq`) sent.
    pub ping_reqs_sent: u64,
    /// `Gossip` pushes sent.
    pub gossips_sent: u64,
    /// Push-pull `State` messages sent (openings and answers).
    pub states_sent: u64,
    /// Probes that ended without any answer (the member became `Suspect` here).
    pub probes_failed: u64,
    /// Messages handled.
    pub messages_received: u64,
    /// Messages refused whole (too many entries, from this node itself).
    pub messages_refused: u64,
    /// `PingReq`s dropped because `RELAYS_MAX` indirect probes were running.
    pub relays_dropped: u64,
    /// Entries about unknown members dropped because the table was full.
    pub entries_dropped: u64,
    /// Newer rings adopted from gossip.
    pub rings_adopted: u64,
    /// Ring logs refused (bad change, limits, vnode mismatch).
    pub rings_refused: u64,
    /// Times this node raised its incarnation to refute a claim about itself.
    pub refutations: u64,
    /// Local pauses detected (and not blamed on peers).
    pub local_pauses: u64,
}

/// Per-member state in the table (this node excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberState {
    /// The highest incarnation heard ([`FIRST_INCARNATION`] until one is heard).
    incarnation: u64,
    /// The liveness claim held at that incarnation (`Left` overrides it in `status`).
    liveness: Liveness,
    status: MemberStatus,
    /// The ring version the member last told us it holds.
    ring_version_heard: Option<RingVersion>,
}

impl MemberState {
    fn fresh(status: MemberStatus) -> Self {
        MemberState {
            incarnation: FIRST_INCARNATION,
            liveness: Liveness::Alive,
            status,
            ring_version_heard: None,
        }
    }

    fn precedence(&self) -> (u64, Liveness) {
        (self.incarnation, self.liveness)
    }
}

/// A probe of this node awaiting an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    number: u64,
    target: NodeId,
    /// The target's incarnation when probed: a failed probe suspects only that incarnation.
    incarnation: u64,
    sent_at: Instant,
    /// Whether the indirect probes went out.
    indirect_sent: bool,
}

/// An indirect probe this node runs for another member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Relay {
    /// This node's own probe number sent to the target.
    number: u64,
    target: NodeId,
    requester: NodeId,
    /// The requester's probe number, echoed in the relayed `Ack`.
    requester_probe: u64,
    expires_at: Instant,
}

/// An update waiting to be piggybacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Broadcast {
    entry: GossipEntry,
    sent: u32,
}

/// The gossip membership machine of one node. See the module documentation for the protocol and
/// how to drive it.
#[derive(Clone, Debug)]
pub struct Membership {
    config: MembershipConfig,
    id: NodeId,
    incarnation: u64,
    /// Rounds run since start (reported as this node's heartbeat).
    heartbeat: u64,
    /// Every other known member, in id order (iteration order reaches outputs).
    members: MemberTable<MemberState>,
    /// Members `Suspect` here and when this node started suspecting them (the suspicion timer).
    suspects: BTreeMap<NodeId, Instant>,
    /// Members `Down` here (for the occasional probe of one without a scan of the table).
    down: BTreeSet<NodeId>,
    /// The probe order of this pass (shuffled), and the next position in it.
    probe_order: Vec<NodeId>,
    probe_next: usize,
    /// Probes awaiting an answer, oldest first.
    probes: VecDeque<Probe>,
    /// Indirect probes run for others, oldest first.
    relays: VecDeque<Relay>,
    /// The last probe number used (probes and relays share the sequence).
    probe_number: u64,
    /// Updates to piggyback, by member.
    broadcasts: BTreeMap<NodeId, Broadcast>,
    ring: RingState,
    /// Where rings built by this process's other nodes are found (see `ring_catalog`).
    rings: RingCatalog,
    next_round_at: Instant,
    next_push_pull_at: Instant,
    /// No push-pull to fetch a newer ring before this (one pull per round at most).
    ring_pull_not_before: Instant,
    last_tick_at: Option<Instant>,
    /// Latest `now` seen, for invariants.
    now_max: Instant,
    outputs: VecDeque<MembershipOutput>,
    stats: MembershipStats,
    /// Where members serve clients (gossiped only once the driver sets this node's own).
    addresses: ClientAddresses,
    /// Sim-only fault points (off unless the driver sets them: `set_fault_points`).
    faults: FaultPoints,
    /// No member is judged `Suspect` by a failed probe before this (moved ahead only by the
    /// sim-only fault point "membership/suspect-late").
    suspect_not_before: Instant,
    /// What [`Membership::poll_timeout`] answers, refreshed at the end of every input that can
    /// move it (`refresh_deadline`): drivers ask after every input of the node.
    deadline: Instant,
    /// Counts the inputs that may have changed the state (every `&mut self` method but
    /// `poll_output`): see [`Membership::inputs`].
    inputs: u64,
}

impl Membership {
    /// A machine for node `id` at `incarnation` (raise it on every restart; persist it), starting
    /// from the ring `ring` (the cluster's initial log, the persisted one, or an empty log for a
    /// node that will learn it from `config.seeds`). The first round and push-pull are due at
    /// once.
    pub fn new(
        config: MembershipConfig,
        id: NodeId,
        incarnation: u64,
        ring: RingLog,
        now: Instant,
    ) -> Result<Self, MembershipError> {
        config.validate().map_err(MembershipError::Config)?;
        let ring = RingState::build(ring, &config).map_err(MembershipError::Ring)?;
        Self::with_ring_state(config, id, incarnation, ring, now)
    }

    /// [`Membership::new`] from a ring already built (a driver starting many nodes from one
    /// log builds it once: a replay of `n` joins costs `n` token allocations). The state is
    /// checked against `config`'s limits as a replay would.
    pub fn with_ring_state(
        config: MembershipConfig,
        id: NodeId,
        incarnation: u64,
        ring: RingState,
        now: Instant,
    ) -> Result<Self, MembershipError> {
        config.validate().map_err(MembershipError::Config)?;
        ring.check_limits(&config).map_err(MembershipError::Ring)?;
        let known: BTreeSet<NodeId> = ring
            .ring()
            .members()
            .iter()
            .map(|m| m.id)
            .chain(ring.departed().iter().copied())
            .chain(config.seeds.iter().copied())
            .filter(|&node| node != id)
            .collect();
        if known.len() + 1 > config.members_max {
            return Err(MembershipError::TooManyMembers(known.len() + 1));
        }
        let members = known
            .into_iter()
            .map(|node| {
                let status = if ring.has_departed(node) {
                    MemberStatus::Left
                } else {
                    MemberStatus::Alive
                };
                (node, MemberState::fresh(status))
            })
            .collect();
        let mut machine = Membership {
            config,
            id,
            incarnation,
            heartbeat: 0,
            members,
            suspects: BTreeMap::new(),
            down: BTreeSet::new(),
            probe_order: Vec::new(),
            probe_next: 0,
            probes: VecDeque::new(),
            relays: VecDeque::new(),
            probe_number: 0,
            broadcasts: BTreeMap::new(),
            ring,
            rings: RingCatalog::new(),
            next_round_at: now,
            next_push_pull_at: now,
            ring_pull_not_before: now,
            last_tick_at: None,
            now_max: now,
            outputs: VecDeque::new(),
            stats: MembershipStats::default(),
            addresses: ClientAddresses::default(),
            faults: FaultPoints::default(),
            suspect_not_before: Instant::ZERO,
            deadline: now,
            inputs: 0,
        };
        // Announce this incarnation: a restarted node is news to peers holding it `Down`.
        machine.queue_broadcast(machine.own_entry());
        machine.refresh_deadline();
        Ok(machine)
    }

    /// Recomputes the cached [`Membership::poll_timeout`]; called last by every input that can
    /// change a timer (probes, suspicions, rounds, the suspicion floor).
    fn refresh_deadline(&mut self) {
        self.deadline = self.scan_deadline();
    }

    // ----- inputs -------------------------------------------------------------------------------

    /// Runs the timers (probe stages, suspicion timeouts) and, when due, a round (probe one
    /// member, push pending updates) and a push-pull. Call it whenever `now >= poll_timeout()`;
    /// an early call only re-checks deadlines.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl Rng) {
        self.inputs += 1;
        self.timeout(now, rng);
        self.refresh_deadline();
    }

    fn timeout(&mut self, now: Instant, rng: &mut impl Rng) {
        self.observe(now);
        if let Some(last) = self.last_tick_at {
            let gap = now.saturating_duration_since(last);
            if gap > self.config.suspect_after() / 2 {
                // This node stalled (a pause, a stop-the-world): its probes could not be
                // answered in time and its suspicion timers ran without it hearing refutations.
                // Don't count the stall against the peers.
                self.stats.local_pauses += 1;
                let stall = gap.saturating_sub(self.config.gossip_interval());
                for probe in &mut self.probes {
                    probe.sent_at = probe.sent_at.saturating_add(stall).min(now);
                }
                for since in self.suspects.values_mut() {
                    *since = since.saturating_add(stall).min(now);
                }
            }
        }
        self.last_tick_at = Some(now);
        if crate::buggify!(self.faults, rng, "membership/suspect-late") {
            // Dangerous but legal: a failed probe may be declared up to a round later; nothing
            // may rely on an early `Suspect` (the suspicion timeout starts when it is declared).
            self.suspect_not_before = now.saturating_add(self.config.gossip_interval());
        }
        self.run_probes(now, rng);
        self.run_suspicions(now);
        self.relays.retain(|relay| relay.expires_at > now);
        if now >= self.next_round_at {
            self.round(now, rng);
        }
        if now >= self.next_push_pull_at {
            let interval = self.config.push_pull_interval(self.members.len() + 1);
            self.next_push_pull_at = now.saturating_add(interval);
            self.push_pull(rng);
        }
    }

    /// Merges a gossip message from `from`: its updates, a newer valid ring, and answers a
    /// `Ping`, a `PingReq` or a `State` asking for one. Messages over the limits are refused
    /// whole and counted; never panics on any input.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, message: GossipMessage) {
        self.inputs += 1;
        self.message(now, from, message);
        self.refresh_deadline();
    }

    fn message(&mut self, now: Instant, from: NodeId, message: GossipMessage) {
        self.observe(now);
        if from == self.id || message.entries().len() > message.entries_max(self.config.members_max)
        {
            self.stats.messages_refused += 1;
            return;
        }
        if let GossipMessage::Addresses {
            entries,
            answer_wanted,
        } = &message
        {
            self.merge_addresses(from, entries, *answer_wanted);
            return;
        }
        self.stats.messages_received += 1;
        let ring_version = message.ring_version();
        if let Some(log) = message.ring() {
            if ring_version > self.ring.version() {
                self.consider_ring(log.clone());
            }
        }
        // A `State` lists the sender's table in id order (after its own entry): a cursor follows
        // it through the table (`MemberTable`).
        let mut cursor = 0;
        for entry in message.entries() {
            let mut apart = usize::MAX;
            let cursor = if entry.node == from {
                &mut apart
            } else {
                &mut cursor
            };
            self.merge_entry(entry, cursor);
        }
        // After the merge, so a sender met for the first time is already in the table.
        if let Some(state) = self.members.get_mut(&from) {
            state.ring_version_heard = Some(ring_version);
        }
        match message {
            GossipMessage::Ping { probe, .. } => {
                let updates = self.take_updates(from);
                self.send_ack(from, probe, updates);
            }
            GossipMessage::Ack { probe, .. } => self.on_ack(from, probe),
            GossipMessage::PingReq { probe, target, .. } => self.relay(now, from, probe, target),
            GossipMessage::State { reply_wanted, .. } => {
                if reply_wanted {
                    self.send_state(from, Some(ring_version), false);
                }
            }
            GossipMessage::Gossip { .. } | GossipMessage::Addresses { .. } => {}
        }
        if ring_version > self.ring.version() && now >= self.ring_pull_not_before {
            // The sender holds a newer ring: pull it with a push-pull (its answer carries the
            // log, since our `State` shows our older version). One pull per round at most.
            self.ring_pull_not_before = now.saturating_add(self.config.gossip_interval());
            self.send_state(from, Some(ring_version), true);
        }
    }

    /// Operator: `member` joins the ring. Makes a new ring version here; gossip spreads it.
    pub fn join(&mut self, now: Instant, member: Member) -> Result<RingVersion, MembershipError> {
        self.change_ring(now, RingChange::Join(member))
    }

    /// Operator: `node` leaves the ring (decommission). Call after its data has been handed off;
    /// here it is only the state transition: the node is `Left` and owns no vnodes.
    pub fn leave(&mut self, now: Instant, node: NodeId) -> Result<RingVersion, MembershipError> {
        self.change_ring(now, RingChange::Leave(node))
    }

    /// Operator: remove a dead `node` from the ring; survivors take over its ranges. Refused
    /// unless this node sees it `Down`, so a live node is never removed by mistake.
    pub fn remove(&mut self, now: Instant, node: NodeId) -> Result<RingVersion, MembershipError> {
        self.inputs += 1;
        let status = self.status(node);
        if status != Some(MemberStatus::Down) {
            return Err(MembershipError::NotDown { node, status });
        }
        self.change_ring(now, RingChange::Remove(node))
    }

    // ----- outputs ------------------------------------------------------------------------------

    /// The next output to act on, oldest first.
    pub fn poll_output(&mut self) -> Option<MembershipOutput> {
        self.outputs.pop_front()
    }

    /// When [`Membership::handle_timeout`] should next be called: the next round, push-pull,
    /// probe stage or suspicion timeout, whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    // ----- queries ------------------------------------------------------------------------------

    /// This node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's heartbeat.
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat
    }

    /// This node's judgement of `node` (`None` if unknown). This node itself is `Alive` unless the
    /// ring says it left.
    pub fn status(&self, node: NodeId) -> Option<MemberStatus> {
        if node == self.id {
            Some(self.own_status())
        } else {
            self.members.get(&node).map(|state| state.status)
        }
    }

    /// Members judged `Alive`, this node included, in id order.
    pub fn alive_members(&self) -> Vec<NodeId> {
        let mut alive: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, state)| state.status == MemberStatus::Alive)
            .map(|(&node, _)| node)
            .collect();
        if self.own_status() == MemberStatus::Alive {
            let position = alive.partition_point(|&node| node < self.id);
            alive.insert(position, self.id);
        }
        alive
    }

    /// One member as seen here.
    pub fn member(&self, node: NodeId) -> Option<MemberView> {
        let location = self
            .ring
            .ring()
            .members()
            .iter()
            .find(|m| m.id == node)
            .map(|m| m.location.clone());
        if node == self.id {
            return Some(MemberView {
                node,
                incarnation: self.incarnation,
                heartbeat: self.heartbeat,
                status: self.own_status(),
                location,
            });
        }
        self.members.get(&node).map(|state| MemberView {
            node,
            incarnation: state.incarnation,
            heartbeat: 0,
            status: state.status,
            location,
        })
    }

    /// Every known member (this node included), in id order.
    pub fn members(&self) -> Vec<MemberView> {
        let mut ids: Vec<NodeId> = self.members.keys().copied().collect();
        let position = ids.partition_point(|&node| node < self.id);
        ids.insert(position, self.id);
        ids.into_iter().filter_map(|id| self.member(id)).collect()
    }

    /// The current ring.
    pub fn ring(&self) -> &Ring {
        self.ring.ring()
    }

    /// The current ring version.
    pub fn ring_version(&self) -> RingVersion {
        self.ring.version()
    }

    /// The current ring with its log (persist `ring_state().log()` to restart with it).
    pub fn ring_state(&self) -> &RingState {
        &self.ring
    }

    /// Counters.
    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    /// Shares ring states with the other machines holding `rings` (a driver running many nodes
    /// in one process hands them all one catalog). Changes no outcome: see `ring_catalog`.
    pub fn share_rings(&mut self, rings: RingCatalog) {
        self.inputs += 1;
        rings.remember(&self.ring);
        self.rings = rings;
    }

    /// Turns on the sim-only fault points (`crate::buggify`) with the node's own: only the
    /// simulator enables them. Off by default.
    pub fn set_fault_points(&mut self, faults: FaultPoints) {
        self.inputs += 1;
        self.faults = faults;
    }

    /// Sets where this node serves clients; gossip spreads it ([`addresses`]).
    pub fn set_client_address(&mut self, address: ClientAddress) {
        self.inputs += 1;
        self.addresses.set_own(address);
    }

    /// Where `node` (this node included) serves clients, if known here.
    pub fn client_address(&self, node: NodeId) -> Option<&ClientAddress> {
        self.addresses.get(self.id, node)
    }

    /// The client address table (for its counters).
    pub fn client_addresses(&self) -> &ClientAddresses {
        &self.addresses
    }

    /// How many inputs that can change the state this machine has taken: all of
    /// [`Membership::check_invariants`] is a function of that state, so a driver that checked
    /// it at one count need not walk the table again until the count moves (the node's
    /// other inputs, most of a busy node's, never touch this machine).
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// Panics if an internal invariant is broken (a bug, never bad input). Called after every
    /// input in tests and simulation.
    pub fn check_invariants(&self) {
        assert!(
            self.members.len() < self.config.members_max,
            "table over members_max"
        );
        assert!(!self.members.contains_key(&self.id), "self in the table");
        self.addresses
            .check_invariants(self.id, self.config.members_max);
        assert_eq!(
            self.ring.version().changes,
            self.ring.log().changes.len() as u64,
            "ring version does not count the log"
        );
        // No member has departed, asked of the departed (a handful) rather than of every member.
        for &node in self.ring.departed() {
            assert!(!self.ring.ring().contains(node), "a member has departed");
        }
        for &node in &self.down {
            let state = self.members.get(&node).expect("a Down member is a member");
            assert_eq!(
                state.status,
                MemberStatus::Down,
                "{node} listed Down but not Down"
            );
        }
        for (&node, &since) in &self.suspects {
            let state = self.members.get(&node).expect("a suspect is a member");
            assert_eq!(
                state.status,
                MemberStatus::Suspect,
                "{node} timed but not Suspect"
            );
            assert!(since <= self.now_max, "suspicion from the future");
        }
        assert!(self.probes.len() <= PROBES_IN_FLIGHT_MAX, "too many probes");
        assert!(self.relays.len() <= RELAYS_MAX, "too many relays");
        assert!(
            self.broadcasts.len() <= self.members.len() + 1,
            "more updates than members"
        );
        assert!(
            self.broadcasts
                .iter()
                .all(|(node, b)| *node == b.entry.node && b.sent < self.retransmit_limit()),
            "an update over its retransmit limit or under another key"
        );
        assert!(
            self.probe_next <= self.probe_order.len(),
            "probe cursor past the order"
        );
        assert!(
            self.next_round_at <= self.now_max.saturating_add(self.config.gossip_interval()),
            "next round too far ahead"
        );
        assert!(
            self.suspect_not_before <= self.now_max.saturating_add(self.config.gossip_interval()),
            "suspicion postponed past a round"
        );
        if cfg!(test) {
            // Scans of the whole table: unit tests pay them, the simulator's 100- and
            // 1,000-node runs would pay them on every input of every node (the order check
            // alone was 6% of a 1,000-node run; only `MemberTable::insert` changes the order).
            self.check_table_invariants();
        }
    }

    /// The invariants that scan the whole table (see `check_invariants`).
    fn check_table_invariants(&self) {
        self.members.check_invariants();
        let mut suspects = 0;
        for (node, state) in &self.members {
            assert_eq!(
                state.status == MemberStatus::Left,
                self.ring.has_departed(*node),
                "status of {node} disagrees with the ring"
            );
            if state.status != MemberStatus::Left {
                assert_eq!(
                    state.status,
                    MemberStatus::of(state.liveness),
                    "status of {node} is not its claim"
                );
            }
            suspects += usize::from(state.status == MemberStatus::Suspect);
        }
        assert_eq!(
            suspects,
            self.suspects.len(),
            "a Suspect member without a timer"
        );
        assert_eq!(self.deadline, self.scan_deadline(), "stale cached deadline");
    }

    // ----- internals ----------------------------------------------------------------------------

    /// The next timer of any kind.
    fn scan_deadline(&self) -> Instant {
        let half = self.config.suspect_after() / 2;
        let full = self.config.suspect_after();
        let down = self.config.down_after();
        let probes = self.probes.iter().map(|probe| {
            if probe.indirect_sent {
                probe
                    .sent_at
                    .saturating_add(full)
                    .max(self.suspect_not_before)
            } else {
                probe.sent_at.saturating_add(half)
            }
        });
        let suspicions = self
            .suspects
            .values()
            .map(|since| since.saturating_add(down));
        probes
            .chain(suspicions)
            .fold(self.next_round_at.min(self.next_push_pull_at), Instant::min)
    }

    fn own_status(&self) -> MemberStatus {
        if self.ring.has_departed(self.id) {
            MemberStatus::Left
        } else {
            MemberStatus::Alive
        }
    }

    fn observe(&mut self, now: Instant) {
        self.now_max = self.now_max.max(now);
    }

    fn own_entry(&self) -> GossipEntry {
        GossipEntry {
            node: self.id,
            incarnation: self.incarnation,
            liveness: Liveness::Alive,
        }
    }

    /// The whole table as claims: this node's own first, then the members in id order.
    fn entries(&self) -> Vec<GossipEntry> {
        let mut entries = Vec::with_capacity(self.members.len() + 1);
        entries.push(self.own_entry());
        entries.extend(self.members.iter().map(|(&node, state)| GossipEntry {
            node,
            incarnation: state.incarnation,
            liveness: state.liveness,
        }));
        entries
    }

    /// How many times an update is sent: `RETRANSMIT_MULTIPLIER × ceil(log10(n + 1))`.
    fn retransmit_limit(&self) -> u32 {
        let n = self.members.len() as u64 + 1;
        let mut digits = 1;
        let mut scale = 10u64;
        while scale < n + 1 {
            scale = scale.saturating_mul(10);
            digits += 1;
        }
        RETRANSMIT_MULTIPLIER * digits
    }

    fn queue_broadcast(&mut self, entry: GossipEntry) {
        self.broadcasts
            .insert(entry.node, Broadcast { entry, sent: 0 });
    }

    /// The updates for one message to `to`: this node's claim against `to` first when it is
    /// `Suspect` or `Down` (so a live member refutes at once), then the least-sent pending
    /// updates, at most [`PIGGYBACK_UPDATES_MAX`] in all. Each update taken counts as sent once.
    fn take_updates(&mut self, to: NodeId) -> Vec<GossipEntry> {
        let mut updates = Vec::new();
        if let Some(state) = self.members.get(&to) {
            if state.status != MemberStatus::Left && state.liveness != Liveness::Alive {
                updates.push(GossipEntry {
                    node: to,
                    incarnation: state.incarnation,
                    liveness: state.liveness,
                });
            }
        }
        if self.broadcasts.is_empty() {
            return updates;
        }
        let room = PIGGYBACK_UPDATES_MAX - updates.len();
        let mut order: Vec<(u32, NodeId)> = self
            .broadcasts
            .values()
            .filter(|b| !updates.contains(&b.entry))
            .map(|b| (b.sent, b.entry.node))
            .collect();
        if order.len() > room {
            order.select_nth_unstable(room);
            order.truncate(room);
        }
        order.sort_unstable();
        let limit = self.retransmit_limit();
        for (_, node) in order {
            if let Some(broadcast) = self.broadcasts.get_mut(&node) {
                updates.push(broadcast.entry);
                broadcast.sent += 1;
                if broadcast.sent >= limit {
                    self.broadcasts.remove(&node);
                }
            }
        }
        updates
    }

    /// One round: probe the next member of the shuffled order, push pending updates to
    /// `fanout` random live peers.
    fn round(&mut self, now: Instant, rng: &mut impl Rng) {
        self.stats.rounds += 1;
        self.heartbeat = self.heartbeat.saturating_add(1);
        self.next_round_at = now.saturating_add(self.config.gossip_interval());
        let mut targets = Vec::new();
        if self.probes.len() < PROBES_IN_FLIGHT_MAX {
            if let Some(target) = self.next_probe_target(rng) {
                self.probe_number += 1;
                let incarnation = self.members.get(&target).map_or(0, |s| s.incarnation);
                self.probes.push_back(Probe {
                    number: self.probe_number,
                    target,
                    incarnation,
                    sent_at: now,
                    indirect_sent: false,
                });
                self.send_ping(target, self.probe_number);
                targets.push(target);
            }
        }
        if let Some(node) = self.draw_down_member(rng) {
            self.ping_down_member(node);
            targets.push(node);
        }
        if !self.broadcasts.is_empty() {
            let mut peers = self.random_live_peers(self.config.fanout, &targets, rng);
            if crate::buggify!(self.faults, rng, "gossip/peer-choice") {
                // Dangerous but legal: any live peer is a valid partner, so one draw is replaced
                // by the lowest-id live peer not drawn. Skewed partners must not stall the
                // spread (the probe order and the push-pull still reach everyone).
                let other = self
                    .members
                    .iter()
                    .find(|(node, s)| is_live(s.status) && !peers.contains(node))
                    .map(|(&node, _)| node);
                if let (Some(other), Some(first)) = (other, peers.first_mut()) {
                    *first = other;
                }
            }
            for peer in peers {
                let updates = self.take_updates(peer);
                if updates.is_empty() {
                    break;
                }
                self.stats.gossips_sent += 1;
                self.send(
                    peer,
                    GossipMessage::Gossip {
                        ring_version: self.ring.version(),
                        updates,
                    },
                );
                targets.push(peer);
            }
        }
        let pushes = self.addresses.on_round(self.id, self.incarnation, &targets);
        for (to, entries) in pushes {
            self.send(
                to,
                GossipMessage::Addresses {
                    entries,
                    answer_wanted: true,
                },
            );
        }
    }

    /// A `Down` member now and then (probability `down / (live + 1)`), so the two sides of a
    /// healed partition find each other within rounds: the `Ping` carries our `Down` claim
    /// first, a live member refutes it in its `Ack`. Not a probe: no answer is expected.
    fn ping_down_member(&mut self, node: NodeId) {
        self.probe_number += 1;
        self.send_ping(node, self.probe_number);
    }

    /// A `Ping` numbered `probe`, carrying the updates due to `to`.
    fn send_ping(&mut self, to: NodeId, probe: u64) {
        let updates = self.take_updates(to);
        self.stats.pings_sent += 1;
        self.send(
            to,
            GossipMessage::Ping {
                probe,
                ring_version: self.ring.version(),
                updates,
            },
        );
    }

    /// One `Down` member with probability `down / (live + 1)`, else none.
    fn draw_down_member(&self, rng: &mut impl Rng) -> Option<NodeId> {
        if self.down.is_empty() {
            return None;
        }
        let live = self.members.len().saturating_sub(self.down.len());
        let probability = self.down.len() as f64 / (live + 1) as f64;
        if probability < 1.0 && !rng.gen_bool(probability) {
            return None;
        }
        self.down
            .iter()
            .nth(rng.gen_range(0..self.down.len()))
            .copied()
    }

    /// The next member to probe: round-robin over the live members, reshuffled for each pass
    /// (every live member is probed once per pass, in an order no one can predict).
    fn next_probe_target(&mut self, rng: &mut impl Rng) -> Option<NodeId> {
        for _ in 0..2 {
            while let Some(&node) = self.probe_order.get(self.probe_next) {
                self.probe_next += 1;
                if self.members.get(&node).is_some_and(|s| is_live(s.status)) {
                    return Some(node);
                }
            }
            self.probe_order.clear();
            self.probe_order.extend(
                self.members
                    .iter()
                    .filter(|(_, s)| is_live(s.status))
                    .map(|(&node, _)| node),
            );
            for i in (1..self.probe_order.len()).rev() {
                let j = rng.gen_range(0..=i);
                self.probe_order.swap(i, j);
            }
            self.probe_next = 0;
        }
        None
    }

    /// Up to `count` distinct live members, none of `exclude`, drawn at random: by rejection
    /// while that is cheap (a large cluster, mostly live), else from the list of candidates.
    fn random_live_peers(
        &self,
        count: usize,
        exclude: &[NodeId],
        rng: &mut impl Rng,
    ) -> Vec<NodeId> {
        let mut chosen: Vec<NodeId> = Vec::with_capacity(count);
        let len = self.members.len();
        if len == 0 || count == 0 {
            return chosen;
        }
        if len > 4 * (count + exclude.len()) {
            for _ in 0..count * 4 {
                if chosen.len() == count {
                    return chosen;
                }
                let index = rng.gen_range(0..len);
                if let Some((&node, state)) = self.members.get_index(index) {
                    if is_live(state.status) && !exclude.contains(&node) && !chosen.contains(&node)
                    {
                        chosen.push(node);
                    }
                }
            }
        }
        let mut pool: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(node, s)| {
                is_live(s.status) && !exclude.contains(node) && !chosen.contains(node)
            })
            .map(|(&node, _)| node)
            .collect();
        let wanted = (count - chosen.len()).min(pool.len());
        for i in 0..wanted {
            let j = rng.gen_range(i..pool.len());
            pool.swap(i, j);
        }
        chosen.extend_from_slice(&pool[..wanted]);
        chosen
    }

    /// Moves the probes on: indirect probes half way, `Suspect` at the end.
    fn run_probes(&mut self, now: Instant, rng: &mut impl Rng) {
        let half = self.config.suspect_after() / 2;
        let full = self.config.suspect_after();
        let mut index = 0;
        while let Some(&probe) = self.probes.get(index) {
            let live = self
                .members
                .get(&probe.target)
                .is_some_and(|s| is_live(s.status));
            if !live {
                self.probes.remove(index);
                continue;
            }
            if now >= probe.sent_at.saturating_add(full) && now >= self.suspect_not_before {
                self.probes.remove(index);
                self.stats.probes_failed += 1;
                self.suspect(probe.target, probe.incarnation);
                continue;
            }
            if !probe.indirect_sent && now >= probe.sent_at.saturating_add(half) {
                if let Some(entry) = self.probes.get_mut(index) {
                    entry.indirect_sent = true;
                }
                // The indirect probes, and a second direct one (as memberlist's fallback ping
                // over another transport): one lost message must not make a suspicion.
                self.send_ping(probe.target, probe.number);
                let helpers = self.random_live_peers(self.config.fanout, &[probe.target], rng);
                for helper in helpers {
                    let updates = self.take_updates(helper);
                    self.stats.ping_reqs_sent += 1;
                    self.send(
                        helper,
                        GossipMessage::PingReq {
                            probe: probe.number,
                            target: probe.target,
                            ring_version: self.ring.version(),
                            updates,
                        },
                    );
                }
            }
            index += 1;
        }
    }

    /// A probe of `node` at `incarnation` failed: suspect it, unless it has been heard at a
    /// newer incarnation since or is already suspected.
    fn suspect(&mut self, node: NodeId, incarnation: u64) {
        let claim = match self.members.get(&node) {
            Some(state)
                if state.incarnation <= incarnation && state.liveness == Liveness::Alive =>
            {
                GossipEntry {
                    node,
                    incarnation: state.incarnation,
                    liveness: Liveness::Suspect,
                }
            }
            _ => return,
        };
        let mut cursor = usize::MAX;
        self.merge_entry(&claim, &mut cursor);
    }

    /// Suspicion timeouts: a member `Suspect` here for `down_after_ms` is `Down`.
    fn run_suspicions(&mut self, now: Instant) {
        let down = self.config.down_after();
        let expired: Vec<NodeId> = self
            .suspects
            .iter()
            .filter(|(_, since)| now >= since.saturating_add(down))
            .map(|(&node, _)| node)
            .collect();
        for node in expired {
            if let Some(state) = self.members.get(&node) {
                let claim = GossipEntry {
                    node,
                    incarnation: state.incarnation,
                    liveness: Liveness::Down,
                };
                let mut cursor = usize::MAX;
                self.merge_entry(&claim, &mut cursor);
            }
        }
    }

    /// An `Ack` for probe `number`: ends this node's probe, or relays it for an indirect one.
    /// Any sender may answer a probe of this node (the target, or a helper relaying it).
    fn on_ack(&mut self, from: NodeId, number: u64) {
        if let Some(index) = self.probes.iter().position(|p| p.number == number) {
            self.probes.remove(index);
            return;
        }
        let relayed = self
            .relays
            .iter()
            .position(|r| r.number == number && r.target == from);
        if let Some(relay) = relayed.and_then(|index| self.relays.remove(index)) {
            let updates = self.take_updates(relay.requester);
            self.send_ack(relay.requester, relay.requester_probe, updates);
        }
    }

    /// A `PingReq` from `requester`: probe `target` for it.
    fn relay(&mut self, now: Instant, requester: NodeId, requester_probe: u64, target: NodeId) {
        if target == self.id {
            // Asked to probe ourselves: we are the answer.
            let updates = self.take_updates(requester);
            self.send_ack(requester, requester_probe, updates);
            return;
        }
        if self.relays.len() >= RELAYS_MAX {
            self.stats.relays_dropped += 1;
            return;
        }
        self.probe_number += 1;
        self.relays.push_back(Relay {
            number: self.probe_number,
            target,
            requester,
            requester_probe,
            expires_at: now.saturating_add(self.config.suspect_after()),
        });
        self.send_ping(target, self.probe_number);
    }

    fn send_ack(&mut self, to: NodeId, probe: u64, updates: Vec<GossipEntry>) {
        self.stats.acks_sent += 1;
        self.send(
            to,
            GossipMessage::Ack {
                probe,
                ring_version: self.ring.version(),
                updates,
            },
        );
    }

    /// Opens a push-pull with one random live member, plus one `Down` member with probability
    /// `down / (live + 1)` (so partitions heal and late seeds are found).
    fn push_pull(&mut self, rng: &mut impl Rng) {
        let mut live = Vec::new();
        let mut down = Vec::new();
        for (&node, state) in &self.members {
            match state.status {
                MemberStatus::Alive | MemberStatus::Suspect => live.push(node),
                MemberStatus::Down => down.push(node),
                MemberStatus::Left => {}
            }
        }
        for to in choose_targets(&live, &down, 1, rng) {
            let heard = self.members.get(&to).and_then(|s| s.ring_version_heard);
            self.send_state(to, heard, true);
        }
    }

    /// Sends the whole table to `to`, with the ring log when `to`'s ring (`theirs`; `None`:
    /// unknown) is older than this node's.
    fn send_state(&mut self, to: NodeId, theirs: Option<RingVersion>, reply_wanted: bool) {
        let version = self.ring.version();
        let ring = (version > RingVersion::default() && theirs.is_none_or(|v| v < version))
            .then(|| self.ring.log().clone());
        self.stats.states_sent += 1;
        let entries = self.entries();
        self.send(
            to,
            GossipMessage::State {
                entries,
                ring_version: version,
                ring,
                reply_wanted,
            },
        );
    }

    fn send(&mut self, to: NodeId, message: GossipMessage) {
        self.outputs
            .push_back(MembershipOutput::Send { to, message });
    }

    /// Sets `node`'s status, reporting a change and keeping the suspicion timers in step.
    fn set_status(&mut self, node: NodeId, to: MemberStatus) {
        let now = self.now_max;
        if let Some(state) = self.members.get_mut(&node) {
            let from = state.status;
            if from != to {
                state.status = to;
                if to == MemberStatus::Suspect {
                    self.suspects.insert(node, now);
                } else {
                    self.suspects.remove(&node);
                }
                if to == MemberStatus::Down {
                    self.down.insert(node);
                } else {
                    self.down.remove(&node);
                }
                self.outputs
                    .push_back(MembershipOutput::Event(MembershipEvent::StatusChanged {
                        node,
                        from,
                        to,
                    }));
            }
        }
    }

    /// A claim about this node itself: refute a suspicion, a `Down`, or any claim about a newer
    /// incarnation (this node restarted without its persisted one) by raising the incarnation
    /// above it.
    fn refute(&mut self, claim: &GossipEntry) {
        let newer = claim.incarnation > self.incarnation
            || (claim.incarnation == self.incarnation && claim.liveness != Liveness::Alive);
        if !newer {
            if claim.liveness != Liveness::Alive && !self.broadcasts.contains_key(&self.id) {
                // A stale suspicion: our incarnation beats it, but whoever holds it has not heard
                // that incarnation yet (our announcement's retransmissions may have run out
                // before reaching it). Announce it again.
                self.queue_broadcast(self.own_entry());
            }
            return;
        }
        // A claim at the last incarnation cannot be out-bid; believing it would pin this node
        // there forever, so such (corrupt) news about us is ignored.
        if claim.incarnation == u64::MAX {
            return;
        }
        self.incarnation = claim.incarnation.saturating_add(1);
        self.stats.refutations += 1;
        self.outputs.push_back(MembershipOutput::Event(
            MembershipEvent::IncarnationChanged {
                incarnation: self.incarnation,
            },
        ));
        self.queue_broadcast(self.own_entry());
    }

    /// Merges one claim: the larger `(incarnation, liveness)` wins, and a claim that changed this
    /// node's view is spread on. (Every member announces itself at start; in a fresh cluster
    /// that is [`FIRST_INCARNATION`], already held, so n announcements are not relayed n times.)
    fn merge_entry(&mut self, entry: &GossipEntry, cursor: &mut usize) {
        if entry.node == self.id {
            self.refute(entry);
            return;
        }
        let now = self.now_max;
        match self.members.get_mut_from(&entry.node, cursor) {
            Some(state) => {
                if entry.precedence() <= state.precedence() {
                    return;
                }
                let restarted_suspicion =
                    entry.liveness == Liveness::Suspect && state.liveness == Liveness::Suspect;
                state.incarnation = entry.incarnation;
                state.liveness = entry.liveness;
                if state.status == MemberStatus::Left {
                    return;
                }
                if restarted_suspicion {
                    // A suspicion of a newer incarnation is a new suspicion.
                    self.suspects.insert(entry.node, now);
                }
                self.set_status(entry.node, MemberStatus::of(entry.liveness));
                self.queue_broadcast(*entry);
            }
            None => {
                if self.members.len() + 1 >= self.config.members_max {
                    self.stats.entries_dropped += 1;
                    return;
                }
                let status = if self.ring.has_departed(entry.node) {
                    MemberStatus::Left
                } else {
                    MemberStatus::of(entry.liveness)
                };
                let state = MemberState {
                    incarnation: entry.incarnation,
                    liveness: entry.liveness,
                    status,
                    ring_version_heard: None,
                };
                self.members.insert(entry.node, state);
                if status == MemberStatus::Suspect {
                    self.suspects.insert(entry.node, now);
                }
                if status == MemberStatus::Down {
                    self.down.insert(entry.node);
                }
                self.outputs
                    .push_back(MembershipOutput::Event(MembershipEvent::Discovered {
                        node: entry.node,
                        status,
                    }));
                if status != MemberStatus::Left {
                    self.queue_broadcast(*entry);
                }
            }
        }
    }

    /// Merges client addresses from `from`; answers a push with what it lacks.
    fn merge_addresses(&mut self, from: NodeId, entries: &[AddressEntry], answer_wanted: bool) {
        let members = &self.members;
        let ring = self.ring.ring();
        let answer = self.addresses.merge(
            self.id,
            self.incarnation,
            entries,
            self.config.members_max,
            answer_wanted,
            |node| members.contains_key(&node) || ring.contains(node),
        );
        if !answer.is_empty() {
            self.outputs.push_back(MembershipOutput::Send {
                to: from,
                message: GossipMessage::Addresses {
                    entries: answer,
                    answer_wanted: false,
                },
            });
        }
    }

    fn consider_ring(&mut self, log: RingLog) {
        match self.rings.rebuild(&self.ring, log, &self.config) {
            Ok(state) if state.version() > self.ring.version() => {
                self.stats.rings_adopted += 1;
                self.adopt_ring(state);
            }
            // A valid log whose real version is not newer: the claim was wrong, nothing to do.
            Ok(_) => {}
            Err(_) => self.stats.rings_refused += 1,
        }
    }

    fn change_ring(
        &mut self,
        now: Instant,
        change: RingChange,
    ) -> Result<RingVersion, MembershipError> {
        self.inputs += 1;
        self.observe(now);
        let state = self
            .ring
            .with_change(change, &self.config)
            .map_err(MembershipError::Ring)?;
        self.rings.remember(&state);
        let version = state.version();
        self.adopt_ring(state);
        self.refresh_deadline();
        Ok(version)
    }

    /// Replaces the ring and brings member statuses in line with it.
    fn adopt_ring(&mut self, state: RingState) {
        let old = std::mem::replace(&mut self.ring, state);
        for change in old.discarded_by(&self.ring) {
            self.outputs.push_back(MembershipOutput::Event(
                MembershipEvent::RingChangeDiscarded { change },
            ));
        }
        self.outputs
            .push_back(MembershipOutput::Event(MembershipEvent::RingChanged {
                version: self.ring.version(),
            }));
        let ring_nodes: BTreeSet<NodeId> = self
            .ring
            .ring()
            .members()
            .iter()
            .map(|m| m.id)
            .chain(self.ring.departed().iter().copied())
            .filter(|&node| node != self.id)
            .collect();
        for node in ring_nodes {
            let departed = self.ring.has_departed(node);
            match self.members.get(&node).map(|s| s.status) {
                None => {
                    if self.members.len() + 1 >= self.config.members_max {
                        self.stats.entries_dropped += 1;
                        continue;
                    }
                    let status = if departed {
                        MemberStatus::Left
                    } else {
                        MemberStatus::Alive
                    };
                    self.members.insert(node, MemberState::fresh(status));
                    self.outputs
                        .push_back(MembershipOutput::Event(MembershipEvent::Discovered {
                            node,
                            status,
                        }));
                }
                Some(MemberStatus::Left) if !departed => {
                    // Joined again: judge it afresh (probes will tell).
                    if let Some(state) = self.members.get_mut(&node) {
                        state.liveness = Liveness::Alive;
                    }
                    self.set_status(node, MemberStatus::Alive);
                }
                Some(status) if departed && status != MemberStatus::Left => {
                    self.set_status(node, MemberStatus::Left);
                }
                Some(_) => {}
            }
        }
        // Members that left the ring in an older log but are unknown to the new one (a discarded
        // leave) are judged afresh as well.
        let stale: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(node, s)| s.status == MemberStatus::Left && !self.ring.has_departed(**node))
            .map(|(&node, _)| node)
            .collect();
        for node in stale {
            if let Some(state) = self.members.get_mut(&node) {
                state.liveness = Liveness::Alive;
            }
            self.set_status(node, MemberStatus::Alive);
        }
    }
}

/// Whether a member with this status is probed and gossiped to.
fn is_live(status: MemberStatus) -> bool {
    matches!(status, MemberStatus::Alive | MemberStatus::Suspect)
}

/// Chooses gossip targets: `fanout` distinct live peers uniformly at random, plus one `Down` peer
/// with probability `down / (live + 1)` so partitions heal and late seeds are found. Pure over its
/// inputs; `live` and `down` come in id order, so a seed gives one answer.
pub fn choose_targets(
    live: &[NodeId],
    down: &[NodeId],
    fanout: usize,
    rng: &mut impl Rng,
) -> Vec<NodeId> {
    let mut pool = live.to_vec();
    let count = fanout.min(pool.len());
    for i in 0..count {
        let j = rng.gen_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.truncate(count);
    if !down.is_empty() {
        let probability = down.len() as f64 / (live.len() + 1) as f64;
        if probability >= 1.0 || rng.gen_bool(probability) {
            pool.push(down[rng.gen_range(0..down.len())]);
        }
    }
    pool
}

#[cfg(test)]
mod tests;
