//! Gossip membership, failure detection and the versioned ring, as one sans-IO machine.
//!
//! ## What it does
//! Each node keeps a table of members with `(incarnation, heartbeat)` counters. Every gossip round
//! a node raises its own heartbeat and opens a push-pull exchange with `fanout` random live peers:
//! it sends its whole table ([`GossipMessage::Syn`]), the peer merges it and answers with what it
//! knows better ([`GossipMessage::Ack`]). Merging keeps the larger `(incarnation, heartbeat)`, so
//! duplicated, reordered, late and lost messages are harmless: every merge is a max.
//!
//! ## Failure detection
//! A member whose heartbeat has not advanced *in this node's table* for `suspect_after_ms` is
//! [`MemberStatus::Suspect`]; after `down_after_ms` more it is [`MemberStatus::Down`]. Any later
//! progress makes it `Alive` again. Why a confirmation time and not votes of other nodes: the
//! heartbeat a node sees is already the freshest one any gossiper passed on, so "no progress here
//! for this long" already means "no progress anywhere this node has heard from" – a vote would
//! gossip the same evidence a second time, and a vote table can be poisoned by one confused node.
//! The confirmation time gives a paused or briefly partitioned node a window to be heard again
//! before the cluster reroutes around it (only `Down` should trigger hints and fallbacks).
//!
//! Time to detect a crash everywhere is `suspect_after_ms + down_after_ms` plus the time the
//! crashed node's last heartbeat takes to reach the last node, which is O(log n) rounds
//! ([`harness::measure_detection`] measures it). A restarted node raises its incarnation; if the
//! driver forgot to persist it, the node notices a claim about itself newer than its own and
//! raises its incarnation above it (refutation), reporting [`MembershipEvent::IncarnationChanged`]
//! so the driver can persist the new value.
//!
//! Peers are chosen among `Alive` and `Suspect` members; in addition, with probability
//! `down / (live + 1)`, one `Down` member is contacted, so the two sides of a healed partition
//! find each other again and a cluster started before its seeds were up still forms. A local pause
//! (the driver did not call [`Membership::handle_timeout`] for over half the suspicion time)
//! shifts every member's progress time by the pause: this node's own stall is not evidence
//! against its peers.
//!
//! ## The ring
//! The ring is an ordered log of changes ([`RingChange`]: join, leave, remove) replayed onto an
//! empty ring ([`ring_log`] says why). Its version is `(changes, fingerprint)`; the highest version
//! wins and spreads by gossip, so all nodes converge on the same ring. Operator changes
//! ([`Membership::join`], [`Membership::leave`], [`Membership::remove`]) make a new version on the
//! node where they are issued. Two concurrent changes on different nodes: one log wins on every
//! node; the loser's node reports [`MembershipEvent::RingChangeDiscarded`], never silently.
//!
//! ## Driving it
//! It speaks the grammar of every machine in core (`handle_*` in, `poll_*` out). Every input is
//! followed by a full drain of [`Membership::poll_output`]:
//! * at start: [`Membership::new`], then [`Membership::handle_timeout`] at once (it gossips
//!   immediately);
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
//! the rounds its last heartbeat took to spread, the rounds until every node sees the restarted
//! node `Alive`, and messages and bytes per node per second ([`harness::measure_detection`]).
//! With the defaults (100 ms rounds, fanout 3) recovery reaches all 100 nodes in about 3 rounds,
//! and each node sends `2 × fanout` messages per round; a `Syn` grows with the member count
//! (about 8 bytes per member), so traffic per node is O(n) bytes per round.

#![deny(missing_docs)]

pub mod addresses;
mod config;
pub mod harness;
mod message;
pub mod ring_log;
mod table;

pub use addresses::{AddressEntry, ClientAddress, ClientAddresses};
pub use config::MembershipConfig;
pub use harness::{measure_detection, DetectionReport};
pub use message::{GossipEntry, GossipMessage};
pub use ring_log::{RingChange, RingLog, RingLogError, RingState, RingVersion};

use crate::buggify::FaultPoints;
use crate::config::ConfigError;
use crate::id::NodeId;
use crate::ring::{Member, NodeLocation, Ring};
use crate::time::Instant;
use rand::Rng;
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use table::MemberTable;

/// What this node believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Its heartbeat advanced within `suspect_after_ms`.
    Alive,
    /// No heartbeat progress for `suspect_after_ms`; still used, not yet routed around.
    Suspect,
    /// No progress for `suspect_after_ms + down_after_ms`: treat as failed.
    Down,
    /// Left or removed from the ring; no longer detected or gossiped to.
    Left,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub node: NodeId,
    /// Its incarnation as last heard.
    pub incarnation: u64,
    /// Its heartbeat as last heard.
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
    /// Gossip rounds run.
    pub rounds: u64,
    /// `Syn` messages sent.
    pub syns_sent: u64,
    /// `Ack` messages sent.
    pub acks_sent: u64,
    /// Messages handled.
    pub messages_received: u64,
    /// Messages refused whole (too many entries, from this node itself).
    pub messages_refused: u64,
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
    incarnation: u64,
    heartbeat: u64,
    status: MemberStatus,
    /// When this node last saw the member's `(incarnation, heartbeat)` grow.
    progress_at: Instant,
    /// The ring version the member last told us it holds.
    ring_version_heard: Option<RingVersion>,
}

impl MemberState {
    fn fresh(status: MemberStatus, now: Instant) -> Self {
        MemberState {
            incarnation: 0,
            heartbeat: 0,
            status,
            progress_at: now,
            ring_version_heard: None,
        }
    }

    fn freshness(&self) -> (u64, u64) {
        (self.incarnation, self.heartbeat)
    }
}

/// The gossip membership machine of one node. See the module documentation for the protocol and
/// how to drive it.
#[derive(Clone, Debug)]
pub struct Membership {
    config: MembershipConfig,
    id: NodeId,
    incarnation: u64,
    heartbeat: u64,
    /// Every other known member, in id order (iteration order reaches outputs).
    members: MemberTable<MemberState>,
    ring: RingState,
    next_gossip_at: Instant,
    last_tick_at: Option<Instant>,
    /// Latest `now` seen, for invariants.
    now_max: Instant,
    outputs: VecDeque<MembershipOutput>,
    stats: MembershipStats,
    /// Where members serve clients (gossiped only once the driver sets this node's own).
    addresses: ClientAddresses,
    /// Sim-only fault points (off unless the driver sets them: `set_fault_points`).
    faults: FaultPoints,
    /// No member is judged `Suspect` before this (moved ahead only by the sim-only fault point
    /// "membership/suspect-late"; `Down` is never delayed by it).
    suspect_not_before: Instant,
    /// What [`Membership::poll_timeout`] answers, refreshed at the end of every input that can
    /// move it (`refresh_deadline`). Why cached: drivers ask after every input of the node, most
    /// of which (requests, replies, anti-entropy) never touch this machine, and the answer is a
    /// scan of the whole table (O(members) per event made it a tenth of a 100-node simulation).
    deadline: Instant,
    /// Counts the inputs that may have changed the state (every `&mut self` method but
    /// `poll_output`): see [`Membership::inputs`].
    inputs: u64,
}

impl Membership {
    /// A machine for node `id` at `incarnation` (raise it on every restart; persist it), starting
    /// from the ring `ring` (the cluster's initial log, the persisted one, or an empty log for a
    /// node that will learn it from `config.seeds`). The first gossip round is due at once.
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
                (node, MemberState::fresh(status, now))
            })
            .collect();
        Ok(Membership {
            config,
            id,
            incarnation,
            heartbeat: 0,
            members,
            ring,
            next_gossip_at: now,
            last_tick_at: None,
            now_max: now,
            outputs: VecDeque::new(),
            stats: MembershipStats::default(),
            addresses: ClientAddresses::default(),
            faults: FaultPoints::default(),
            suspect_not_before: Instant::ZERO,
            deadline: now,
            inputs: 0,
        }
        .with_deadline())
    }

    /// `self` with its cached deadline computed (for constructors).
    fn with_deadline(mut self) -> Self {
        self.refresh_deadline();
        self
    }

    /// Recomputes the cached [`Membership::poll_timeout`]; called last by every input that can
    /// change a member's status or progress, the suspicion floor or the next round.
    fn refresh_deadline(&mut self) {
        self.deadline = self.scan_deadline();
    }

    // ----- inputs -------------------------------------------------------------------------------

    /// Runs failure detection and, when due, a gossip round: raise the own heartbeat and send a
    /// `Syn` to `fanout` random live peers (plus sometimes one `Down` peer). Call it whenever
    /// `now >= poll_timeout()`; an early call only re-checks deadlines.
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
                // This node stalled (a pause, a stop-the-world): nobody could gossip with it, so
                // the silence says nothing about the peers. Don't count the stall against them.
                self.stats.local_pauses += 1;
                let stall = gap.saturating_sub(self.config.gossip_interval());
                for state in self.members.values_mut() {
                    state.progress_at = state.progress_at.saturating_add(stall).min(now);
                }
            }
        }
        self.last_tick_at = Some(now);
        if crate::buggify!(self.faults, rng, "membership/suspect-late") {
            // Dangerous but legal: suspicion is only a hint, and declaring it up to a round
            // later stays within the configured bound (`Down` still comes at
            // `suspect_after_ms + down_after_ms`). Nothing may rely on an early `Suspect`.
            self.suspect_not_before = now.saturating_add(self.config.gossip_interval());
        }
        self.detect(now);
        if now >= self.next_gossip_at {
            self.gossip_round(now, rng);
        }
    }

    /// Merges a gossip message from `from`, adopts a newer valid ring, and answers a `Syn` with an
    /// `Ack`. Messages over the limits are refused whole and counted; never panics on any input.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, message: GossipMessage) {
        self.inputs += 1;
        self.message(now, from, message);
        self.refresh_deadline();
    }

    fn message(&mut self, now: Instant, from: NodeId, message: GossipMessage) {
        self.observe(now);
        if from == self.id || message.entries().len() > self.config.members_max {
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
                self.consider_ring(now, log.clone());
            }
        }
        // Entries come in id order (after the sender's own): a cursor follows them through the
        // table (`MemberTable`). The sender's own entry is looked up apart, so that the cursor
        // starts the ordered walk at the table's start instead of missing there.
        let mut cursor = 0;
        for entry in message.entries() {
            let mut apart = usize::MAX;
            let cursor = if entry.node == from {
                &mut apart
            } else {
                &mut cursor
            };
            self.merge_entry(now, entry, cursor);
        }
        // After the merge, so a sender met for the first time is already in the table.
        if let Some(state) = self.members.get_mut(&from) {
            state.ring_version_heard = Some(ring_version);
        }
        if let GossipMessage::Syn { entries, .. } = &message {
            let reply = self.ack_for(entries, ring_version);
            self.stats.acks_sent += 1;
            self.outputs.push_back(MembershipOutput::Send {
                to: from,
                message: reply,
            });
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

    /// When [`Membership::handle_timeout`] should next be called: the next gossip round or the
    /// next suspicion deadline, whichever is first.
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
            heartbeat: state.heartbeat,
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
        self.members.check_invariants();
        self.addresses
            .check_invariants(self.id, self.config.members_max);
        assert_eq!(
            self.ring.version().changes,
            self.ring.log().changes.len() as u64,
            "ring version does not count the log"
        );
        // No member has departed, asked of the departed (a handful) rather than of every member
        // (this runs after every gossip message, and members are large and cache-cold).
        for &node in self.ring.departed() {
            assert!(!self.ring.ring().contains(node), "a member has departed");
        }
        for (node, state) in &self.members {
            assert_eq!(
                state.status == MemberStatus::Left,
                self.ring.has_departed(*node),
                "status of {node} disagrees with the ring"
            );
            assert!(state.progress_at <= self.now_max, "progress in the future");
        }
        assert!(
            self.next_gossip_at <= self.now_max.saturating_add(self.config.gossip_interval()),
            "next gossip round too far ahead"
        );
        assert!(
            self.suspect_not_before <= self.now_max.saturating_add(self.config.gossip_interval()),
            "suspicion postponed past a round"
        );
        if cfg!(test) {
            // A scan of the table per input; unit tests pay it, the simulator's 100- and
            // 1,000-node runs would pay it on every event of every node.
            assert_eq!(self.deadline, self.scan_deadline(), "stale cached deadline");
        }
    }

    // ----- internals ----------------------------------------------------------------------------

    /// The next gossip round or suspicion deadline, from the whole table.
    fn scan_deadline(&self) -> Instant {
        let suspect = self.config.suspect_after();
        let down = self.config.down_after_total();
        let deadline = self
            .members
            .values()
            .filter_map(|state| match state.status {
                MemberStatus::Alive => Some(
                    state
                        .progress_at
                        .saturating_add(suspect)
                        .max(self.suspect_not_before)
                        .min(state.progress_at.saturating_add(down)),
                ),
                MemberStatus::Suspect => Some(state.progress_at.saturating_add(down)),
                MemberStatus::Down | MemberStatus::Left => None,
            })
            .min();
        deadline.map_or(self.next_gossip_at, |d| d.min(self.next_gossip_at))
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
            heartbeat: self.heartbeat,
        }
    }

    fn entries(&self) -> Vec<GossipEntry> {
        let mut entries = Vec::with_capacity(self.members.len() + 1);
        entries.push(self.own_entry());
        entries.extend(self.members.iter().map(|(&node, state)| GossipEntry {
            node,
            incarnation: state.incarnation,
            heartbeat: state.heartbeat,
        }));
        entries
    }

    fn set_status(&mut self, node: NodeId, to: MemberStatus) {
        if let Some(state) = self.members.get_mut(&node) {
            let from = state.status;
            if from != to {
                state.status = to;
                self.outputs
                    .push_back(MembershipOutput::Event(MembershipEvent::StatusChanged {
                        node,
                        from,
                        to,
                    }));
            }
        }
    }

    fn detect(&mut self, now: Instant) {
        let suspect = self.config.suspect_after();
        let down = self.config.down_after_total();
        let mut changes = Vec::new();
        for (&node, state) in &self.members {
            let silent = now.saturating_duration_since(state.progress_at);
            let judged = if silent >= down {
                MemberStatus::Down
            } else if silent >= suspect && now >= self.suspect_not_before {
                MemberStatus::Suspect
            } else {
                MemberStatus::Alive
            };
            // Only progress (in `merge_entry`) makes a member better; silence only makes it worse.
            let worse = matches!(
                (state.status, judged),
                (
                    MemberStatus::Alive,
                    MemberStatus::Suspect | MemberStatus::Down
                ) | (MemberStatus::Suspect, MemberStatus::Down)
            );
            if worse {
                changes.push((node, judged));
            }
        }
        for (node, status) in changes {
            self.set_status(node, status);
        }
    }

    fn gossip_round(&mut self, now: Instant, rng: &mut impl Rng) {
        self.stats.rounds += 1;
        self.heartbeat = self.heartbeat.saturating_add(1);
        self.next_gossip_at = now.saturating_add(self.config.gossip_interval());
        let mut live = Vec::new();
        let mut down = Vec::new();
        for (&node, state) in &self.members {
            match state.status {
                MemberStatus::Alive | MemberStatus::Suspect => live.push(node),
                MemberStatus::Down => down.push(node),
                MemberStatus::Left => {}
            }
        }
        let mut targets = choose_targets(&live, &down, self.config.fanout, rng);
        if crate::buggify!(self.faults, rng, "gossip/peer-choice") {
            // Dangerous but legal: any live peer is a valid partner, so one draw is replaced by
            // the lowest-id live peer not drawn. Skewed partners must not stall detection or
            // the spread of rings (every merge is a max; every member still gossips itself).
            if let Some(&other) = live.iter().find(|node| !targets.contains(node)) {
                if let Some(first) = targets.first_mut() {
                    *first = other;
                }
            }
        }
        let mut entries = self.entries();
        let version = self.ring.version();
        let pushes = self.addresses.on_round(self.id, self.incarnation, &targets);
        let last = targets.len().saturating_sub(1);
        for (index, to) in targets.into_iter().enumerate() {
            let heard = self.members.get(&to).and_then(|s| s.ring_version_heard);
            let ring = (version > RingVersion::default() && heard.is_none_or(|h| h < version))
                .then(|| self.ring.log().clone());
            self.stats.syns_sent += 1;
            // The last target takes the table itself: one copy fewer per round.
            let entries = if index == last {
                std::mem::take(&mut entries)
            } else {
                entries.clone()
            };
            self.outputs.push_back(MembershipOutput::Send {
                to,
                message: GossipMessage::Syn {
                    entries,
                    ring_version: version,
                    ring,
                },
            });
        }
        for (to, entries) in pushes {
            self.outputs.push_back(MembershipOutput::Send {
                to,
                message: GossipMessage::Addresses {
                    entries,
                    answer_wanted: true,
                },
            });
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

    fn ack_for(&self, syn_entries: &[GossipEntry], syn_ring: RingVersion) -> GossipMessage {
        // A `Syn` is the sender's own entry, then its table in id order: walked as it is, with
        // no copy. Any other order (a confused or hostile peer) is walked from a sorted copy.
        let entries = match syn_entries.split_first() {
            Some((first, rest)) if rest.is_sorted_by_key(|entry| entry.node) => {
                self.newer_than(Some(first), rest)
            }
            _ => {
                let mut sorted = syn_entries.to_vec();
                sorted.sort_unstable_by_key(|entry| entry.node);
                self.newer_than(None, &sorted)
            }
        };
        let version = self.ring.version();
        GossipMessage::Ack {
            entries,
            ring_version: version,
            ring: (version > syn_ring).then(|| self.ring.log().clone()),
        }
    }

    /// This node's entries (its own first, then the table in id order) fresher than every claim
    /// the `Syn` made about their node: `extra` and the claims of `sorted` (in id order).
    fn newer_than(&self, extra: Option<&GossipEntry>, sorted: &[GossipEntry]) -> Vec<GossipEntry> {
        // The freshest claim about `node` among `extra` and the run of `sorted` it starts.
        let seen = |run: &[GossipEntry], node: NodeId| {
            let in_run = run
                .iter()
                .take_while(|entry| entry.node == node)
                .map(GossipEntry::freshness)
                .max();
            let in_extra = extra
                .filter(|entry| entry.node == node)
                .map(GossipEntry::freshness);
            in_run.max(in_extra)
        };
        let newer = |mine: &GossipEntry, run: &[GossipEntry]| {
            seen(run, mine.node).is_none_or(|claim| claim < mine.freshness())
        };
        let mut entries = Vec::new();
        let own = self.own_entry();
        let own_run = sorted.partition_point(|entry| entry.node < own.node);
        if newer(&own, &sorted[own_run..]) {
            entries.push(own);
        }
        // The table and `sorted` are both in id order: one merge walk over the two, where a
        // lookup per member (even a binary search from a cursor) was a tenth of a 100-node run.
        let mut cursor = 0;
        for (&node, state) in &self.members {
            while sorted.get(cursor).is_some_and(|entry| entry.node < node) {
                cursor += 1;
            }
            let mine = GossipEntry {
                node,
                incarnation: state.incarnation,
                heartbeat: state.heartbeat,
            };
            if newer(&mine, &sorted[cursor..]) {
                entries.push(mine);
            }
        }
        entries
    }

    fn merge_entry(&mut self, now: Instant, entry: &GossipEntry, cursor: &mut usize) {
        if entry.node == self.id {
            // A claim at the last incarnation cannot be out-bid; believing it would pin this node
            // at heartbeat zero forever, so such (corrupt) news about us is ignored.
            if entry.freshness() > (self.incarnation, self.heartbeat)
                && entry.incarnation < u64::MAX
            {
                // Someone heard of a newer us: we restarted without our incarnation. Out-bid it so
                // our fresh heartbeats win again.
                self.incarnation = entry.incarnation.saturating_add(1);
                self.heartbeat = 0;
                self.stats.refutations += 1;
                self.outputs.push_back(MembershipOutput::Event(
                    MembershipEvent::IncarnationChanged {
                        incarnation: self.incarnation,
                    },
                ));
            }
            return;
        }
        match self.members.get_mut_from(&entry.node, cursor) {
            Some(state) => {
                if entry.freshness() > state.freshness() {
                    state.incarnation = entry.incarnation;
                    state.heartbeat = entry.heartbeat;
                    state.progress_at = now;
                    if matches!(state.status, MemberStatus::Suspect | MemberStatus::Down) {
                        self.set_status(entry.node, MemberStatus::Alive);
                    }
                }
            }
            None => {
                if self.members.len() + 1 >= self.config.members_max {
                    self.stats.entries_dropped += 1;
                    return;
                }
                let status = if self.ring.has_departed(entry.node) {
                    MemberStatus::Left
                } else {
                    MemberStatus::Alive
                };
                let mut state = MemberState::fresh(status, now);
                state.incarnation = entry.incarnation;
                state.heartbeat = entry.heartbeat;
                self.members.insert(entry.node, state);
                self.outputs
                    .push_back(MembershipOutput::Event(MembershipEvent::Discovered {
                        node: entry.node,
                        status,
                    }));
            }
        }
    }

    fn consider_ring(&mut self, now: Instant, log: RingLog) {
        match self.ring.rebuild(log, &self.config) {
            Ok(state) if state.version() > self.ring.version() => {
                self.stats.rings_adopted += 1;
                self.adopt_ring(now, state);
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
        let version = state.version();
        self.adopt_ring(now, state);
        self.refresh_deadline();
        Ok(version)
    }

    /// Replaces the ring and brings member statuses in line with it.
    fn adopt_ring(&mut self, now: Instant, state: RingState) {
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
                    self.members.insert(node, MemberState::fresh(status, now));
                    self.outputs
                        .push_back(MembershipOutput::Event(MembershipEvent::Discovered {
                            node,
                            status,
                        }));
                }
                Some(MemberStatus::Left) if !departed => {
                    // Joined again: judge it afresh from now.
                    if let Some(state) = self.members.get_mut(&node) {
                        state.progress_at = now;
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
                state.progress_at = now;
            }
            self.set_status(node, MemberStatus::Alive);
        }
    }
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
