//! What every mechanism of a node shares: its identity and configuration, the ring, the storage
//! engine and its durability tracking, the clock, randomness, fault points and the output queue.
//!
//! Mechanisms (coordinator, replica, hints, anti-entropy, ...) own their own state and receive
//! the context by reference; `Node` composes them and dispatches inputs. Nothing here decides
//! protocol policy: it is the node's body, not its mind.

use super::durability::Durability;
use super::{NodeEvent, NodeStats, Output};
use crate::buggify::FaultPoints;
use crate::client::ClientReply;
use crate::config::NodeConfig;
use crate::id::{NodeId, OperationId, RequestId};
use crate::message::Message;
use crate::ring::Ring;
use crate::time::{Instant, WallMicros};
use crate::version::{ActorId, DataEpoch, HybridClock};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

/// The shared facilities of one node.
pub(super) struct Context<S> {
    pub(super) id: NodeId,
    pub(super) config: NodeConfig,
    pub(super) ring: Ring,
    /// Ranges this node replicates, with their other replicas.
    pub(super) my_ranges: Vec<(u32, Vec<NodeId>)>,
    pub(super) storage: S,
    pub(super) durability: Durability,
    pub(super) rng: ChaCha8Rng,
    pub(super) faults: FaultPoints,
    pub(super) clock: HybridClock,
    /// The clock bound staged in storage (see `clock_floor`).
    pub(super) clock_floor: u64,
    /// The author of this node's vector-clock dots: its data incarnation (see `data_epoch`).
    pub(super) actor: ActorId,
    /// The wall clock of the latest input, for stamps made while handling replies.
    pub(super) last_wall: WallMicros,
    /// Monotonic time of the latest input.
    pub(super) last_monotonic: Instant,
    pub(super) outputs: VecDeque<Output>,
    /// This process's incarnation (see `incarnation`): the high half of every operation id.
    pub(super) incarnation: u32,
    /// The staged-write sequence of the incarnation bump; ids are allocated once it is durable.
    pub(super) incarnation_sequence: u64,
    /// The low half of the next operation id.
    pub(super) next_operation: u32,
    pub(super) stats: NodeStats,
    /// One anti-entropy hash tree per range held: an index of local data (see `store`).
    pub(super) trees: super::trees::Trees,
    /// The token index of stored keys, for scans and `DBSIZE` (see `scan`).
    pub(super) scan_index: super::scan::ScanIndex,
    /// The full tree rebuild in progress, if any, and when the next one starts.
    pub(super) tree_rebuild: super::tree_rebuild::TreeRebuilds,
    /// Every periodic mechanism's next wake-up (see `timers`).
    pub(super) timers: super::timers::Timers,
}

impl<S> Context<S> {
    /// The facilities of a node starting over `storage` with `ring` (whose datacenter replica
    /// counts are already set): nothing loaded from storage yet, no timer armed. Separate from
    /// `Node::new` so a mechanism's unit tests can build the context alone.
    pub(super) fn new(config: NodeConfig, ring: Ring, storage: S) -> Self {
        let my_ranges =
            super::antientropy::my_ranges(&ring, config.id, usize::from(config.cluster.n));
        Context {
            id: config.id,
            faults: FaultPoints::new(config.rng_seed, config.cluster.simulation),
            rng: ChaCha8Rng::seed_from_u64(config.rng_seed),
            config,
            ring,
            my_ranges,
            storage,
            durability: Durability::default(),
            clock: HybridClock::default(),
            clock_floor: 0,
            actor: ActorId::new(NodeId::default(), DataEpoch::default()),
            last_wall: WallMicros::default(),
            last_monotonic: Instant::ZERO,
            outputs: VecDeque::new(),
            incarnation: 0,
            incarnation_sequence: 0,
            next_operation: 1,
            stats: NodeStats::default(),
            trees: Default::default(),
            scan_index: super::scan::ScanIndex::default(),
            tree_rebuild: super::tree_rebuild::TreeRebuilds::default(),
            timers: super::timers::Timers::default(),
        }
    }

    pub(super) fn send(&mut self, to: NodeId, message: Message) {
        self.outputs.push_back(Output::Send { to, message });
    }

    pub(super) fn reply(&mut self, request: RequestId, reply: ClientReply) {
        self.outputs.push_back(Output::Reply { request, reply });
    }

    /// Reports `event` to the driver.
    pub(super) fn event(&mut self, event: NodeEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Whether this incarnation may allocate operation ids (its number is durable).
    pub(super) fn incarnation_durable(&self) -> bool {
        self.durability
            .is_durable_through(self.incarnation_sequence)
    }

    /// The next operation id of this incarnation.
    pub(super) fn allocate_operation(&mut self) -> OperationId {
        debug_assert!(
            self.incarnation_durable(),
            "ids before the incarnation is durable"
        );
        let op = OperationId::new(self.incarnation, self.next_operation);
        // Wrapping within the incarnation: 2^32 round trips apart, the old one is long gone.
        self.next_operation = self.next_operation.wrapping_add(1).max(1);
        op
    }

    /// The hybrid now against which this node judges expiries: never behind its wall clock nor
    /// behind any stamp it has issued or seen, so a value it once hid stays hidden.
    pub(super) fn hybrid_now_micros(&self) -> u64 {
        if self.config.cluster.unsafe_ignore_expiry {
            return 0;
        }
        self.last_wall.0.max(self.clock.last_micros())
    }
}
