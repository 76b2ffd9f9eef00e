//! Counters and histograms shared by the driver, the connections and the admin endpoint, and
//! their Prometheus text rendering. Plain atomics: recording never blocks.

use ringkv_core::membership::MemberStatus;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A client operation, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A read.
    Get = 0,
    /// A write of a value.
    Put = 1,
    /// A delete.
    Delete = 2,
}

const OPERATIONS: [&str; 3] = ["get", "put", "delete"];

/// The level a request named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The cluster default.
    Default = 0,
    /// One replica.
    One = 1,
    /// A majority.
    Quorum = 2,
    /// All replicas.
    All = 3,
    /// An explicit count.
    Count = 4,
    /// Linearizable (two-phase majority).
    Linearizable = 5,
    /// A majority in the coordinator's datacenter.
    LocalQuorum = 6,
    /// A majority in every datacenter.
    EachQuorum = 7,
}

const LEVELS: [&str; 8] = [
    "default",
    "one",
    "quorum",
    "all",
    "count",
    "linearizable",
    "local_quorum",
    "each_quorum",
];

impl Level {
    /// The label of a request's level.
    pub fn of(level: Option<ringkv_core::Consistency>) -> Level {
        use ringkv_core::Consistency as C;
        match level {
            None => Level::Default,
            Some(C::One) => Level::One,
            Some(C::Quorum) => Level::Quorum,
            Some(C::All) => Level::All,
            Some(C::Count(_)) => Level::Count,
            Some(C::Linearizable) => Level::Linearizable,
            Some(C::LocalQuorum) => Level::LocalQuorum,
            Some(C::EachQuorum) => Level::EachQuorum,
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Found / written.
    Ok = 0,
    /// A read found nothing.
    NotFound = 1,
    /// A read short of R.
    Unavailable = 2,
    /// A write short of W.
    Indeterminate = 3,
    /// Refused before any effect.
    Rejected = 4,
}

const OUTCOMES: [&str; 5] = [
    "ok",
    "not_found",
    "unavailable",
    "indeterminate",
    "rejected",
];

/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let seconds = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{seconds}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[LATENCY_BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{{{labels}}} {}",
            self.count.load(Ordering::Relaxed)
        );
    }
}

/// A counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Sets (for gauges).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Subtracts `n` (for gauges).
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
    /// Subtracts one (for gauges).
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything the node counts.
#[derive(Default)]
pub struct Metrics {
    requests: [[[Counter; 5]; 8]; 3],
    latency: [Histogram; 3],
    replicas_acked: [Counter; 3],
    /// Client connections open now.
    pub connections_open: Counter,
    /// Client connections accepted since start.
    pub connections_total: Counter,
    /// Client connections refused at `connections_max`.
    pub connections_refused: Counter,
    /// Client connections closed because their TLS handshake failed (a plaintext client on a
    /// TLS port, an untrusted client certificate, a timeout).
    pub client_tls_failures: Counter,
    /// Client commands run.
    pub commands: Counter,
    /// Client connections closed for a protocol error.
    pub protocol_errors: Counter,
    /// Bytes of client input buffered now, all connections together.
    pub client_buffered_bytes: Counter,
    /// Client connections closed because buffered input passed the node's budget.
    pub clients_closed_over_budget: Counter,
    /// Client connections closed because a command was still arriving at its deadline.
    pub clients_closed_slow_command: Counter,
    /// Client connections closed after the idle timeout.
    pub clients_closed_idle: Counter,
    /// Peer messages handed to a peer's queue.
    pub peer_messages_sent: Counter,
    /// Peer messages received and delivered to the node.
    pub peer_messages_received: Counter,
    /// Repeatable peer messages (anti-entropy, handover, gossip, repairs) not sent because they
    /// could not be queued (full queue, unknown peer); from the core's `SendFailureStats`.
    pub peer_messages_dropped: Counter,
    /// Replication requests (read, write, hinted write, forwarded put) not sent because they
    /// could not be queued, counted by the core as that replica's `Busy` refusal.
    pub peer_requests_failed: Counter,
    /// Always 0 since back-pressure is decided in core (replies are no longer held back);
    /// kept so dashboards and INFO keep their fields.
    pub peer_replies_deferred: Counter,
    /// Replication replies not sent because they could not be queued (the coordinator's
    /// deadline turns each into a typed outcome).
    pub peer_replies_dropped: Counter,
    /// Always 0 (see `peer_replies_deferred`).
    pub peer_replies_waiting: Counter,
    /// Authenticated peer connections established (either direction).
    pub peer_connections: Counter,
    /// Peer connections refused (bad handshake, wrong secret or cluster).
    pub peer_handshake_failures: Counter,
    /// Peer connections whose TLS handshake failed, either direction (a certificate the CA
    /// did not sign, a peer without TLS, a name mismatch): an operator's problem, unlike a peer
    /// that is merely down.
    pub peer_tls_failures: Counter,
    /// Peer connections closed for a bad frame (size, checksum, undecodable).
    pub peer_frame_errors: Counter,
    /// Peer messages not sent because they could not be encoded (larger than the codec's
    /// limit): each is a failed send, and the coordinator's deadline turns it into a typed
    /// outcome.
    pub peer_messages_unencodable: Counter,
    /// Peer connections refused because the two nodes disagree on a setting that changes
    /// what stored bytes mean (conflict mode, ring parameters, replication, formats).
    pub peer_stored_meaning_mismatches: Counter,
    /// Outbound peer connections up now.
    pub peers_connected: Counter,
    /// Fsyncs of the WAL (group commits).
    pub storage_syncs: Counter,
    /// Fsync latency.
    pub storage_sync_latency: Histogram,
    /// Failed fsyncs (each poisons the node).
    pub storage_sync_failures: Counter,
    /// Keys held, estimated (gauge, published by the driver).
    pub storage_keys: Counter,
    /// Bytes of tables (gauge).
    pub storage_table_bytes: Counter,
    /// Tables in level 0 (gauge).
    pub storage_level0_tables: Counter,
    /// Bytes of value-log segments (gauge).
    pub storage_vlog_bytes: Counter,
    /// Key and value bytes written (engine counter since start).
    pub storage_user_bytes: Counter,
    /// Bytes written to disk: WAL, value log, tables (engine counter since start).
    pub storage_disk_bytes: Counter,
    /// Memtable flushes.
    pub storage_flushes: Counter,
    /// Compactions finished.
    pub storage_compactions: Counter,
    /// Value-log segments collected.
    pub storage_vlog_segments_collected: Counter,
    /// Writes that found level 0 full and compacted inline.
    pub storage_write_stalls: Counter,
    /// Block-cache hits.
    pub storage_block_cache_hits: Counter,
    /// Block-cache misses.
    pub storage_block_cache_misses: Counter,
    /// Operations the node has in flight (gauge).
    pub operations_in_flight: Counter,
    /// Replies that matched no live operation (from the core's stats).
    pub stale_replies: Counter,
    /// Ring members (gauge).
    pub ring_members: Counter,
    /// Gossip membership gauges and counters (published by the driver).
    pub membership: MembershipCounters,
    /// Read repair, hinted handoff and anti-entropy counters (published by the driver).
    pub repair: RepairCounters,
}

/// The core's repair counters, copied by the driver after each batch of inputs.
#[derive(Default)]
pub struct RepairCounters {
    /// Hinted copies this node, as coordinator, sent to fallbacks.
    pub hints_handed_off: Counter,
    /// Hints this node stored (queued) as a fallback for another.
    pub hints_queued: Counter,
    /// Hints refused because the owner's queue was full (left to anti-entropy).
    pub hints_overflowed: Counter,
    /// Hint replays sent to their owners (retries included).
    pub hints_replayed: Counter,
    /// Hints the owner acknowledged durably (then deleted here).
    pub hints_delivered: Counter,
    /// Hints deleted unsent after `hint_age_max_ms` (left to anti-entropy).
    pub hints_expired: Counter,
    /// Hints held now, all owners (gauge).
    pub hints_pending: Counter,
    /// Bytes of hints held now (gauge).
    pub hint_bytes_pending: Counter,
    /// Hints and hint bytes held now per owner, in owner order (gauges, one series per owner
    /// with hints; the status page's hint queues).
    pub hints_pending_by_target: std::sync::Mutex<Vec<(u32, u64, u64)>>,
    /// Anti-entropy rounds run.
    pub anti_entropy_rounds: Counter,
    /// Ranges whose roots this node sent.
    pub anti_entropy_ranges_compared: Counter,
    /// Ranges a peer found different.
    pub anti_entropy_ranges_differing: Counter,
    /// Records sent to repair a peer.
    pub anti_entropy_records_sent: Counter,
    /// Records received that changed local storage.
    pub anti_entropy_records_repaired: Counter,
    /// Repair writes sent after reads found stale replicas.
    pub read_repairs: Counter,
}

impl RepairCounters {
    /// Copies the core's counters.
    pub fn publish<S: ringkv_core::Storage>(&self, node: &ringkv_core::Node<S>) {
        let h = node.hint_stats();
        self.hints_handed_off.set(h.handed_off);
        self.hints_queued.set(h.stored);
        self.hints_overflowed.set(h.overflowed);
        self.hints_replayed.set(h.replayed);
        self.hints_delivered.set(h.delivered);
        self.hints_expired.set(h.expired);
        let (count, bytes) = node
            .pending_hints()
            .values()
            .fold((0u64, 0u64), |(c, b), &(n, size)| (c + n as u64, b + size));
        self.hints_pending.set(count);
        self.hint_bytes_pending.set(bytes);
        let by_target = node
            .pending_hints()
            .into_iter()
            .map(|(owner, (count, bytes))| (owner.0, count as u64, bytes))
            .collect();
        if let Ok(mut queues) = self.hints_pending_by_target.lock() {
            *queues = by_target;
        }
        let a = node.anti_entropy_stats();
        self.anti_entropy_rounds.set(a.rounds);
        self.anti_entropy_ranges_compared.set(a.ranges_compared);
        self.anti_entropy_ranges_differing.set(a.ranges_differing);
        self.anti_entropy_records_sent.set(a.records_sent);
        self.anti_entropy_records_repaired.set(a.records_repaired);
        self.read_repairs.set(node.stats().read_repairs);
    }

    /// (metric name, type, help, counter) of each, for the exposition.
    fn table(&self) -> [(&'static str, &'static str, &'static str, &Counter); 14] {
        [
            (
                "ringkv_hints_handed_off_total",
                "counter",
                "Hinted copies sent to fallback nodes (as coordinator).",
                &self.hints_handed_off,
            ),
            (
                "ringkv_hints_queued_total",
                "counter",
                "Hints stored for another node (as fallback).",
                &self.hints_queued,
            ),
            (
                "ringkv_hints_overflowed_total",
                "counter",
                "Hints refused at the per-owner bound (left to anti-entropy).",
                &self.hints_overflowed,
            ),
            (
                "ringkv_hints_replayed_total",
                "counter",
                "Hint replays sent to their owners, retries included.",
                &self.hints_replayed,
            ),
            (
                "ringkv_hints_delivered_total",
                "counter",
                "Hints acknowledged durably by their owners and deleted.",
                &self.hints_delivered,
            ),
            (
                "ringkv_hints_expired_total",
                "counter",
                "Hints deleted unsent after hint_age_max_ms (left to anti-entropy).",
                &self.hints_expired,
            ),
            (
                "ringkv_hints_pending",
                "gauge",
                "Hints held for other nodes now.",
                &self.hints_pending,
            ),
            (
                "ringkv_hint_bytes_pending",
                "gauge",
                "Bytes of hints held for other nodes now.",
                &self.hint_bytes_pending,
            ),
            (
                "ringkv_anti_entropy_rounds_total",
                "counter",
                "Anti-entropy rounds run.",
                &self.anti_entropy_rounds,
            ),
            (
                "ringkv_anti_entropy_ranges_compared_total",
                "counter",
                "Ranges whose Merkle roots were sent to a peer.",
                &self.anti_entropy_ranges_compared,
            ),
            (
                "ringkv_anti_entropy_ranges_differing_total",
                "counter",
                "Ranges a peer found different.",
                &self.anti_entropy_ranges_differing,
            ),
            (
                "ringkv_anti_entropy_records_sent_total",
                "counter",
                "Records sent to repair a peer.",
                &self.anti_entropy_records_sent,
            ),
            (
                "ringkv_anti_entropy_records_repaired_total",
                "counter",
                "Records received from anti-entropy that changed local storage.",
                &self.anti_entropy_records_repaired,
            ),
            (
                "ringkv_read_repairs_total",
                "counter",
                "Repair writes sent after reads found stale replicas.",
                &self.read_repairs,
            ),
        ]
    }
}

/// Member statuses, in the order of [`MembershipCounters::members`].
pub const MEMBER_STATUSES: [MemberStatus; 4] = [
    MemberStatus::Alive,
    MemberStatus::Suspect,
    MemberStatus::Down,
    MemberStatus::Left,
];

/// The label of a member status (also used by `/ring`).
pub fn status_label(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::Alive => "alive",
        MemberStatus::Suspect => "suspect",
        MemberStatus::Down => "down",
        MemberStatus::Left => "left",
    }
}

/// Gossip membership as seen by this node, copied by the driver.
#[derive(Default)]
pub struct MembershipCounters {
    /// Known nodes (this one included) by this node's judgement, in [`MEMBER_STATUSES`] order.
    pub members: [Counter; 4],
    /// Changes in the ring log this node holds (the ring version's first half; gauge).
    pub ring_version_changes: Counter,
    /// Newer rings this node adopted from gossip.
    pub rings_adopted: Counter,
    /// Gossip rounds run.
    pub gossip_rounds: Counter,
    /// Gossip messages received.
    pub gossip_messages_received: Counter,
    /// Ring logs from gossip refused (bad change, limits, vnode mismatch).
    pub rings_refused: Counter,
}

impl MembershipCounters {
    /// Copies this node's judgement of every known node and the ring version (after a change:
    /// it walks the member table). A node without gossip leaves them at zero.
    pub fn publish_statuses<S: ringkv_core::Storage>(&self, node: &ringkv_core::Node<S>) {
        let Some(membership) = node.membership() else {
            return;
        };
        let mut counts = [0u64; 4];
        for member in membership.members() {
            if let Some(i) = MEMBER_STATUSES.iter().position(|&s| s == member.status) {
                counts[i] += 1;
            }
        }
        for (counter, count) in self.members.iter().zip(counts) {
            counter.set(count);
        }
        self.ring_version_changes
            .set(membership.ring_version().changes);
    }

    /// Copies the gossip counters (cheap; after every batch of inputs).
    pub fn publish_counters<S: ringkv_core::Storage>(&self, node: &ringkv_core::Node<S>) {
        let Some(membership) = node.membership() else {
            return;
        };
        let stats = membership.stats();
        self.rings_adopted.set(stats.rings_adopted);
        self.gossip_rounds.set(stats.rounds);
        self.gossip_messages_received.set(stats.messages_received);
        self.rings_refused.set(stats.rings_refused);
    }

    fn render(&self, out: &mut String, labels: &str) {
        out.push_str(
            "# HELP ringkv_members Known nodes (this one included) by this node's failure detector.\n\
             # TYPE ringkv_members gauge\n",
        );
        for (status, counter) in MEMBER_STATUSES.iter().zip(&self.members) {
            let _ = writeln!(
                out,
                "ringkv_members{{{labels},status=\"{}\"}} {}",
                status_label(*status),
                counter.get()
            );
        }
        for (name, kind, help, counter) in [
            (
                "ringkv_ring_version_changes",
                "gauge",
                "Changes in this node's ring log (joins, leaves, removes since the empty ring).",
                &self.ring_version_changes,
            ),
            (
                "ringkv_rings_adopted_total",
                "counter",
                "Newer rings adopted from gossip.",
                &self.rings_adopted,
            ),
            (
                "ringkv_gossip_rounds_total",
                "counter",
                "Gossip rounds run.",
                &self.gossip_rounds,
            ),
            (
                "ringkv_gossip_messages_received_total",
                "counter",
                "Gossip messages received.",
                &self.gossip_messages_received,
            ),
            (
                "ringkv_gossip_rings_refused_total",
                "counter",
                "Ring logs from gossip refused.",
                &self.rings_refused,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {}",
                counter.get()
            );
        }
    }
}

impl Metrics {
    /// Publishes the storage engine's gauges and counters (read by the driver).
    pub fn publish_storage(&self, g: &crate::storage::StorageGauges) {
        self.storage_table_bytes.set(g.table_bytes);
        self.storage_level0_tables.set(g.level0_tables);
        self.storage_vlog_bytes.set(g.vlog_bytes);
        self.storage_user_bytes.set(g.user_bytes);
        self.storage_disk_bytes.set(g.disk_bytes);
        self.storage_flushes.set(g.flushes);
        self.storage_compactions.set(g.compactions);
        self.storage_vlog_segments_collected
            .set(g.vlog_segments_collected);
        self.storage_write_stalls.set(g.write_stalls);
        self.storage_block_cache_hits.set(g.block_cache_hits);
        self.storage_block_cache_misses.set(g.block_cache_misses);
    }

    /// Records a finished client request.
    pub fn record_request(
        &self,
        operation: Operation,
        level: Level,
        outcome: Outcome,
        acks: u8,
        elapsed: Duration,
    ) {
        self.requests[operation as usize][level as usize][outcome as usize].inc();
        self.latency[operation as usize].record(elapsed);
        self.replicas_acked[operation as usize].add(u64::from(acks));
    }

    /// Requests of one kind and outcome, over all levels (for INFO).
    pub fn requests(&self, operation: Operation, outcome: Outcome) -> u64 {
        self.requests[operation as usize]
            .iter()
            .map(|by_outcome| by_outcome[outcome as usize].get())
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, node: &str) -> String {
        let mut out = String::new();
        let l = format!("node=\"{node}\"");
        out.push_str(
            "# HELP ringkv_requests_total Client requests by operation, level and outcome.\n",
        );
        out.push_str("# TYPE ringkv_requests_total counter\n");
        for (o, op) in OPERATIONS.iter().enumerate() {
            for (v, level) in LEVELS.iter().enumerate() {
                for (c, outcome) in OUTCOMES.iter().enumerate() {
                    let n = self.requests[o][v][c].get();
                    let _ = writeln!(
                        out,
                        "ringkv_requests_total{{{l},operation=\"{op}\",level=\"{level}\",outcome=\"{outcome}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP ringkv_request_duration_seconds Client request latency.\n");
        out.push_str("# TYPE ringkv_request_duration_seconds histogram\n");
        for (o, op) in OPERATIONS.iter().enumerate() {
            self.latency[o].render(
                &mut out,
                "ringkv_request_duration_seconds",
                &format!("{l},operation=\"{op}\""),
            );
        }
        out.push_str("# HELP ringkv_replicas_acked_total Replica answers counted in replies.\n");
        out.push_str("# TYPE ringkv_replicas_acked_total counter\n");
        for (o, op) in OPERATIONS.iter().enumerate() {
            let n = self.replicas_acked[o].get();
            let _ = writeln!(
                out,
                "ringkv_replicas_acked_total{{{l},operation=\"{op}\"}} {n}"
            );
        }
        let simple: [(&str, &str, &str, &Counter); 41] = [
            (
                "ringkv_client_connections",
                "gauge",
                "Client connections open.",
                &self.connections_open,
            ),
            (
                "ringkv_client_connections_total",
                "counter",
                "Client connections accepted.",
                &self.connections_total,
            ),
            (
                "ringkv_client_connections_refused_total",
                "counter",
                "Client connections refused at the limit.",
                &self.connections_refused,
            ),
            (
                "ringkv_client_tls_failures_total",
                "counter",
                "Client connections closed for a failed TLS handshake.",
                &self.client_tls_failures,
            ),
            (
                "ringkv_client_commands_total",
                "counter",
                "Client commands run.",
                &self.commands,
            ),
            (
                "ringkv_client_protocol_errors_total",
                "counter",
                "Client connections closed for a protocol error.",
                &self.protocol_errors,
            ),
            (
                "ringkv_client_buffered_bytes",
                "gauge",
                "Client input buffered now, all connections (budget: limits.client_buffer_bytes_total_max).",
                &self.client_buffered_bytes,
            ),
            (
                "ringkv_client_closed_over_budget_total",
                "counter",
                "Client connections closed because buffered input passed the node's budget.",
                &self.clients_closed_over_budget,
            ),
            (
                "ringkv_client_closed_slow_command_total",
                "counter",
                "Client connections closed because a command was still arriving at its deadline.",
                &self.clients_closed_slow_command,
            ),
            (
                "ringkv_client_closed_idle_total",
                "counter",
                "Client connections closed after limits.client_idle_timeout_ms.",
                &self.clients_closed_idle,
            ),
            (
                "ringkv_peer_messages_sent_total",
                "counter",
                "Peer messages queued for sending.",
                &self.peer_messages_sent,
            ),
            (
                "ringkv_peer_messages_received_total",
                "counter",
                "Peer messages received.",
                &self.peer_messages_received,
            ),
            (
                "ringkv_peer_messages_dropped_total",
                "counter",
                "Repeatable messages (anti-entropy, handover, gossip) not queued for a peer, dropped.",
                &self.peer_messages_dropped,
            ),
            (
                "ringkv_peer_requests_failed_total",
                "counter",
                "Replication requests not queued for a peer, counted as that replica's Busy refusal.",
                &self.peer_requests_failed,
            ),
            (
                "ringkv_peer_replies_deferred_total",
                "counter",
                "Always 0: replies are no longer held back (back-pressure is decided in core).",
                &self.peer_replies_deferred,
            ),
            (
                "ringkv_peer_replies_dropped_total",
                "counter",
                "Replication replies not queued for a peer, dropped (the coordinator's deadline answers).",
                &self.peer_replies_dropped,
            ),
            (
                "ringkv_peer_replies_waiting",
                "gauge",
                "Always 0: replies are no longer held back.",
                &self.peer_replies_waiting,
            ),
            (
                "ringkv_peer_connections_total",
                "counter",
                "Authenticated peer connections.",
                &self.peer_connections,
            ),
            (
                "ringkv_peer_handshake_failures_total",
                "counter",
                "Peer connections refused at the handshake.",
                &self.peer_handshake_failures,
            ),
            (
                "ringkv_peer_tls_failures_total",
                "counter",
                "Peer connections whose TLS handshake failed (either direction).",
                &self.peer_tls_failures,
            ),
            (
                "ringkv_peer_frame_errors_total",
                "counter",
                "Peer connections closed for a bad frame.",
                &self.peer_frame_errors,
            ),
            (
                "ringkv_peer_messages_unencodable_total",
                "counter",
                "Peer messages not sent because they exceed the codec's size limit.",
                &self.peer_messages_unencodable,
            ),
            (
                "ringkv_peer_stored_meaning_mismatches_total",
                "counter",
                "Peer connections refused for a different conflict mode, ring or format setting.",
                &self.peer_stored_meaning_mismatches,
            ),
            (
                "ringkv_peers_connected",
                "gauge",
                "Outbound peer connections up.",
                &self.peers_connected,
            ),
            (
                "ringkv_storage_syncs_total",
                "counter",
                "Log fsyncs (group commits).",
                &self.storage_syncs,
            ),
            (
                "ringkv_storage_sync_failures_total",
                "counter",
                "Failed fsyncs.",
                &self.storage_sync_failures,
            ),
            (
                "ringkv_storage_keys",
                "gauge",
                "Keys held, tombstones included (an estimate: a key in several LSM levels counts more than once).",
                &self.storage_keys,
            ),
            (
                "ringkv_storage_table_bytes",
                "gauge",
                "Bytes of LSM tables, all levels.",
                &self.storage_table_bytes,
            ),
            (
                "ringkv_storage_level0_tables",
                "gauge",
                "LSM tables in level 0.",
                &self.storage_level0_tables,
            ),
            (
                "ringkv_storage_vlog_bytes",
                "gauge",
                "Bytes of value-log segments, live and garbage.",
                &self.storage_vlog_bytes,
            ),
            (
                "ringkv_storage_user_bytes_total",
                "counter",
                "Key and value bytes written to the engine.",
                &self.storage_user_bytes,
            ),
            (
                "ringkv_storage_disk_bytes_total",
                "counter",
                "Bytes the engine wrote to disk (WAL, value log, tables); divided by user bytes, the write amplification.",
                &self.storage_disk_bytes,
            ),
            (
                "ringkv_storage_flushes_total",
                "counter",
                "Memtable flushes.",
                &self.storage_flushes,
            ),
            (
                "ringkv_storage_compactions_total",
                "counter",
                "Compactions finished (trivial moves included).",
                &self.storage_compactions,
            ),
            (
                "ringkv_storage_vlog_segments_collected_total",
                "counter",
                "Value-log segments garbage-collected.",
                &self.storage_vlog_segments_collected,
            ),
            (
                "ringkv_storage_write_stalls_total",
                "counter",
                "Writes that found level 0 full and ran compaction inline.",
                &self.storage_write_stalls,
            ),
            (
                "ringkv_storage_block_cache_hits_total",
                "counter",
                "Block-cache hits.",
                &self.storage_block_cache_hits,
            ),
            (
                "ringkv_storage_block_cache_misses_total",
                "counter",
                "Block-cache misses.",
                &self.storage_block_cache_misses,
            ),
            (
                "ringkv_operations_in_flight",
                "gauge",
                "Operations the node coordinates now.",
                &self.operations_in_flight,
            ),
            (
                "ringkv_stale_replies_total",
                "counter",
                "Replica replies that matched no live operation.",
                &self.stale_replies,
            ),
            (
                "ringkv_ring_members",
                "gauge",
                "Members of the ring.",
                &self.ring_members,
            ),
        ];
        for (name, kind, help, counter) in simple.into_iter().chain(self.repair.table()) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{l}}} {}",
                counter.get()
            );
        }
        out.push_str(
            "# HELP ringkv_hints_pending_by_target Hints held now for one owner.\n\
             # TYPE ringkv_hints_pending_by_target gauge\n",
        );
        let queues = self
            .repair
            .hints_pending_by_target
            .lock()
            .map(|queues| queues.clone())
            .unwrap_or_default();
        for (target, count, _) in &queues {
            let _ = writeln!(
                out,
                "ringkv_hints_pending_by_target{{{l},target=\"{target}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP ringkv_hint_bytes_pending_by_target Bytes of hints held now for one owner.\n\
             # TYPE ringkv_hint_bytes_pending_by_target gauge\n",
        );
        for (target, _, bytes) in &queues {
            let _ = writeln!(
                out,
                "ringkv_hint_bytes_pending_by_target{{{l},target=\"{target}\"}} {bytes}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringkv_log_write_errors_total Log and status lines lost to a failed write \
             (the node keeps serving).\n# TYPE ringkv_log_write_errors_total counter\n\
             ringkv_log_write_errors_total{{{l}}} {}",
            crate::logging::write_errors()
        );
        self.membership.render(&mut out, &l);
        out.push_str("# HELP ringkv_storage_sync_duration_seconds Fsync latency.\n");
        out.push_str("# TYPE ringkv_storage_sync_duration_seconds histogram\n");
        self.storage_sync_latency
            .render(&mut out, "ringkv_storage_sync_duration_seconds", &l);
        out
    }
}
