//! Counters, gauges and histograms shared by the driver, the connections and the admin endpoint,
//! exposed through `prometheus-client` (the Prometheus project's own Rust client): it writes the
//! OpenMetrics text format, escapes label values and keeps the exposition valid, so this module
//! only declares each metric once: a field, and one line in a `register` function with its name
//! and help. Recording is an atomic add (a read lock for the labelled request families).
//!
//! Every name below is the series name a scraper stores (a counter's ends in `_total`; the
//! helpers hand `prometheus-client` the family name without it, and it writes the suffix back).
//! `tests/metrics_families.txt` pins the whole set with types, labels and help.
//!
//! To add a metric: a `Counter`, `Gauge` or `Histogram` field, and a `counter(..)`, `gauge(..)`
//! or `histogram(..)` line in the matching `register`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter as CounterMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as GaugeMetric;
use prometheus_client::metrics::histogram::Histogram as HistogramMetric;
use prometheus_client::registry::{Metric, Registry};
use ringkv_core::membership::MemberStatus;
use std::borrow::Cow;
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

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_MICROS`], exposed in seconds).
#[derive(Clone, Debug)]
pub struct Histogram(HistogramMetric);

impl Default for Histogram {
    fn default() -> Self {
        Self(HistogramMetric::new(
            LATENCY_BUCKETS_MICROS
                .iter()
                .map(|&micros| micros as f64 / 1e6),
        ))
    }
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

/// A counter: only goes up, by events here or by copying a total the core keeps.
#[derive(Clone, Debug, Default)]
pub struct Counter(CounterMetric<u64, AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// Sets the total (a counter the core keeps, copied by the driver).
    pub fn set(&self, n: u64) {
        self.0.inner().store(n, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A gauge: a level that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(GaugeMetric<u64, AtomicU64>);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// Sets the level.
    pub fn set(&self, n: u64) {
        self.0.set(n);
    }
    /// Subtracts `n`.
    pub fn sub(&self, n: u64) {
        self.0.dec_by(n);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.dec();
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Registers a counter under its series name (`..._total`) with its help sentence.
fn counter(registry: &mut Registry, name: &str, help: &str, metric: &Counter) {
    register(registry, name, help, metric.0.clone());
}

/// Registers a gauge.
fn gauge(registry: &mut Registry, name: &str, help: &str, metric: &Gauge) {
    register(registry, name, help, metric.0.clone());
}

/// Registers a histogram (series `name_bucket`, `name_sum`, `name_count`).
fn histogram(registry: &mut Registry, name: &str, help: &str, metric: &Histogram) {
    register(registry, name, help, metric.0.clone());
}

/// `prometheus-client` names a counter family without `_total` and ends every help text with a
/// full stop of its own: both are taken off here so the names and sentences above read exactly
/// as scraped.
fn register(registry: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    let family = name.strip_suffix("_total").unwrap_or(name);
    let help = help.strip_suffix('.').unwrap_or(help);
    registry.register(family, help, metric);
}

/// Labels of a request series: operation, level, outcome.
type RequestLabels = [(&'static str, &'static str); 3];
/// Labels of a per-operation series.
type OperationLabels = [(&'static str, &'static str); 1];
/// Labels of a per-owner hint queue series.
type TargetLabels = [(&'static str, String); 1];

fn request_labels(operation: usize, level: usize, outcome: usize) -> RequestLabels {
    [
        ("operation", OPERATIONS[operation]),
        ("level", LEVELS[level]),
        ("outcome", OUTCOMES[outcome]),
    ]
}

fn operation_labels(operation: usize) -> OperationLabels {
    [("operation", OPERATIONS[operation])]
}

/// Everything the node counts.
#[derive(Default)]
pub struct Metrics {
    requests: RequestFamilies,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections accepted since start.
    pub connections_total: Counter,
    /// Client connections refused at `connections_max`.
    pub connections_refused: Counter,
    /// Client connections closed because their TLS handshake failed.
    pub client_tls_failures: Counter,
    /// Client commands run.
    pub commands: Counter,
    /// Client connections closed for a protocol error.
    pub protocol_errors: Counter,
    /// Bytes of client input buffered now, all connections together.
    pub client_buffered_bytes: Gauge,
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
    pub peer_replies_waiting: Gauge,
    /// Authenticated peer connections established (either direction).
    pub peer_connections: Counter,
    /// Peer connections refused (bad handshake, wrong secret or cluster).
    pub peer_handshake_failures: Counter,
    /// Peer connections whose TLS handshake failed (either direction).
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
    pub peers_connected: Gauge,
    /// Fsyncs of the WAL (group commits).
    pub storage_syncs: Counter,
    /// Fsync latency.
    pub storage_sync_latency: Histogram,
    /// How long each storage maintenance step (flush, compaction, value-log collection) held the
    /// driver: requests queue behind it.
    pub storage_maintenance_duration: Histogram,
    /// How long the driver spent on each batch of inputs (requests, peer messages, timers),
    /// fsync and maintenance excluded: a memtable flush made by a write shows here.
    pub driver_batch_duration: Histogram,
    /// Failed fsyncs (each poisons the node).
    pub storage_sync_failures: Counter,
    /// Keys held, estimated (gauge, published by the driver).
    pub storage_keys: Gauge,
    /// Bytes of tables (gauge).
    pub storage_table_bytes: Gauge,
    /// Tables in level 0 (gauge).
    pub storage_level0_tables: Gauge,
    /// Bytes of value-log segments (gauge).
    pub storage_vlog_bytes: Gauge,
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
    /// Writes that filled the memtable before the last flush job was done, and finished it inline.
    pub storage_flush_stalls: Counter,
    /// Block-cache hits.
    pub storage_block_cache_hits: Counter,
    /// Block-cache misses.
    pub storage_block_cache_misses: Counter,
    /// Reads the row cache answered.
    pub storage_row_cache_hits: Counter,
    /// Reads the row cache could not answer.
    pub storage_row_cache_misses: Counter,
    /// Bytes the row cache holds (gauge).
    pub storage_row_cache_bytes: Gauge,
    /// Operations the node has in flight (gauge).
    pub operations_in_flight: Gauge,
    /// Replies that matched no live operation (from the core's stats).
    pub stale_replies: Counter,
    /// Ring members (gauge).
    pub ring_members: Gauge,
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
    pub hints_pending: Gauge,
    /// Bytes of hints held now (gauge).
    pub hint_bytes_pending: Gauge,
    /// Hints held now per owner (one series per owner with hints; the status page's hint queues).
    hints_pending_by_target: Family<TargetLabels, GaugeMetric<u64, AtomicU64>>,
    /// Hint bytes held now per owner.
    hint_bytes_pending_by_target: Family<TargetLabels, GaugeMetric<u64, AtomicU64>>,
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
        let by_target: Vec<(u32, u64, u64)> = node
            .pending_hints()
            .into_iter()
            .map(|(owner, (count, bytes))| (owner.0, count as u64, bytes))
            .collect();
        self.set_pending_by_target(&by_target);
        let a = node.anti_entropy_stats();
        self.anti_entropy_rounds.set(a.rounds);
        self.anti_entropy_ranges_compared.set(a.ranges_compared);
        self.anti_entropy_ranges_differing.set(a.ranges_differing);
        self.anti_entropy_records_sent.set(a.records_sent);
        self.anti_entropy_records_repaired.set(a.records_repaired);
        self.read_repairs.set(node.stats().read_repairs);
    }

    /// Replaces the per-owner hint queues with `queues` (owner, hints, bytes): an owner whose
    /// queue emptied loses its series rather than reporting a stale figure.
    pub fn set_pending_by_target(&self, queues: &[(u32, u64, u64)]) {
        self.hints_pending_by_target.clear();
        self.hint_bytes_pending_by_target.clear();
        for &(target, count, bytes) in queues {
            let labels = [("target", target.to_string())];
            self.hints_pending_by_target
                .get_or_create(&labels)
                .set(count);
            self.hint_bytes_pending_by_target
                .get_or_create(&labels)
                .set(bytes);
        }
    }

    #[rustfmt::skip] // a table: one metric per line, name and help as scraped
    fn register(&self, registry: &mut Registry) {
        counter(registry, "ringkv_hints_handed_off_total", "Hinted copies sent to fallback nodes (as coordinator).", &self.hints_handed_off);
        counter(registry, "ringkv_hints_queued_total", "Hints stored for another node (as fallback).", &self.hints_queued);
        counter(registry, "ringkv_hints_overflowed_total", "Hints refused at the per-owner bound (left to anti-entropy).", &self.hints_overflowed);
        counter(registry, "ringkv_hints_replayed_total", "Hint replays sent to their owners, retries included.", &self.hints_replayed);
        counter(registry, "ringkv_hints_delivered_total", "Hints acknowledged durably by their owners and deleted.", &self.hints_delivered);
        counter(registry, "ringkv_hints_expired_total", "Hints deleted unsent after hint_age_max_ms (left to anti-entropy).", &self.hints_expired);
        gauge(registry, "ringkv_hints_pending", "Hints held for other nodes now.", &self.hints_pending);
        gauge(registry, "ringkv_hint_bytes_pending", "Bytes of hints held for other nodes now.", &self.hint_bytes_pending);
        register(registry, "ringkv_hints_pending_by_target", "Hints held now for one owner.", self.hints_pending_by_target.clone());
        register(registry, "ringkv_hint_bytes_pending_by_target", "Bytes of hints held now for one owner.", self.hint_bytes_pending_by_target.clone());
        counter(registry, "ringkv_anti_entropy_rounds_total", "Anti-entropy rounds run.", &self.anti_entropy_rounds);
        counter(registry, "ringkv_anti_entropy_ranges_compared_total", "Ranges whose Merkle roots were sent to a peer.", &self.anti_entropy_ranges_compared);
        counter(registry, "ringkv_anti_entropy_ranges_differing_total", "Ranges a peer found different.", &self.anti_entropy_ranges_differing);
        counter(registry, "ringkv_anti_entropy_records_sent_total", "Records sent to repair a peer.", &self.anti_entropy_records_sent);
        counter(registry, "ringkv_anti_entropy_records_repaired_total", "Records received from anti-entropy that changed local storage.", &self.anti_entropy_records_repaired);
        counter(registry, "ringkv_read_repairs_total", "Repair writes sent after reads found stale replicas.", &self.read_repairs);
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
    /// Known nodes (this one included) by this node's judgement, by status label.
    members: Family<[(&'static str, &'static str); 1], GaugeMetric<u64, AtomicU64>>,
    /// Changes in the ring log this node holds (the ring version's first half; gauge).
    pub ring_version_changes: Gauge,
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
        for (status, count) in MEMBER_STATUSES.iter().zip(counts) {
            self.members
                .get_or_create(&[("status", status_label(*status))])
                .set(count);
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

    #[rustfmt::skip] // a table: one metric per line, name and help as scraped
    fn register(&self, registry: &mut Registry) {
        // Every status has a series from the start, zero until publish_statuses runs.
        for status in MEMBER_STATUSES {
            let _ = self
                .members
                .get_or_create(&[("status", status_label(status))]);
        }
        register(
            registry,
            "ringkv_members",
            "Known nodes (this one included) by this node's failure detector.",
            self.members.clone(),
        );
        gauge(registry, "ringkv_ring_version_changes", "Changes in this node's ring log (joins, leaves, removes since the empty ring).", &self.ring_version_changes);
        counter(registry, "ringkv_rings_adopted_total", "Newer rings adopted from gossip.", &self.rings_adopted);
        counter(registry, "ringkv_gossip_rounds_total", "Gossip rounds run.", &self.gossip_rounds);
        counter(registry, "ringkv_gossip_messages_received_total", "Gossip messages received.", &self.gossip_messages_received);
        counter(registry, "ringkv_gossip_rings_refused_total", "Ring logs from gossip refused.", &self.rings_refused);
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
        self.storage_flush_stalls.set(g.flush_stalls);
        self.storage_block_cache_hits.set(g.block_cache_hits);
        self.storage_block_cache_misses.set(g.block_cache_misses);
        self.storage_row_cache_hits.set(g.row_cache_hits);
        self.storage_row_cache_misses.set(g.row_cache_misses);
        self.storage_row_cache_bytes.set(g.row_cache_bytes);
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
        let r = &self.requests;
        let operation = operation as usize;
        r.request_series[request_index(operation, level as usize, outcome as usize)].inc();
        r.latency_series[operation].observe(elapsed.as_secs_f64());
        r.replicas_acked_series[operation].inc_by(u64::from(acks));
    }

    /// Requests of one kind and outcome, over all levels (for INFO).
    pub fn requests(&self, operation: Operation, outcome: Outcome) -> u64 {
        (0..LEVELS.len())
            .map(|level| {
                self.requests.request_series
                    [request_index(operation as usize, level, outcome as usize)]
                .get()
            })
            .sum()
    }

    /// The exposition (OpenMetrics text), every series labelled with `node`.
    pub fn render(&self, node: &str) -> String {
        let mut registry = Registry::with_labels(std::iter::once((
            Cow::Borrowed("node"),
            Cow::Owned(node.to_string()),
        )));
        self.register(&mut registry);
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// Registers every metric, in the order of the exposition.
    #[rustfmt::skip] // a table: one metric per line, name and help as scraped
    fn register(&self, registry: &mut Registry) {
        let r = &self.requests;
        register(
            registry,
            "ringkv_requests_total",
            "Client requests by operation, level and outcome.",
            r.requests.clone(),
        );
        register(
            registry,
            "ringkv_request_duration_seconds",
            "Client request latency.",
            r.latency.clone(),
        );
        register(
            registry,
            "ringkv_replicas_acked_total",
            "Replica answers counted in replies.",
            r.replicas_acked.clone(),
        );
        gauge(registry, "ringkv_client_connections", "Client connections open.", &self.connections_open);
        counter(registry, "ringkv_client_connections_total", "Client connections accepted.", &self.connections_total);
        counter(registry, "ringkv_client_connections_refused_total", "Client connections refused at the limit.", &self.connections_refused);
        counter(registry, "ringkv_client_tls_failures_total", "Client connections closed for a failed TLS handshake.", &self.client_tls_failures);
        counter(registry, "ringkv_client_commands_total", "Client commands run.", &self.commands);
        counter(registry, "ringkv_client_protocol_errors_total", "Client connections closed for a protocol error.", &self.protocol_errors);
        gauge(registry, "ringkv_client_buffered_bytes", "Client input buffered now, all connections (budget: limits.client_buffer_bytes_total_max).", &self.client_buffered_bytes);
        counter(registry, "ringkv_client_closed_over_budget_total", "Client connections closed because buffered input passed the node's budget.", &self.clients_closed_over_budget);
        counter(registry, "ringkv_client_closed_slow_command_total", "Client connections closed because a command was still arriving at its deadline.", &self.clients_closed_slow_command);
        counter(registry, "ringkv_client_closed_idle_total", "Client connections closed after limits.client_idle_timeout_ms.", &self.clients_closed_idle);
        counter(registry, "ringkv_peer_messages_sent_total", "Peer messages queued for sending.", &self.peer_messages_sent);
        counter(registry, "ringkv_peer_messages_received_total", "Peer messages received.", &self.peer_messages_received);
        counter(registry, "ringkv_peer_messages_dropped_total", "Repeatable messages (anti-entropy, handover, gossip) not queued for a peer, dropped.", &self.peer_messages_dropped);
        counter(registry, "ringkv_peer_requests_failed_total", "Replication requests not queued for a peer, counted as that replica's Busy refusal.", &self.peer_requests_failed);
        counter(registry, "ringkv_peer_replies_deferred_total", "Always 0: replies are no longer held back (back-pressure is decided in core).", &self.peer_replies_deferred);
        counter(registry, "ringkv_peer_replies_dropped_total", "Replication replies not queued for a peer, dropped (the coordinator's deadline answers).", &self.peer_replies_dropped);
        gauge(registry, "ringkv_peer_replies_waiting", "Always 0: replies are no longer held back.", &self.peer_replies_waiting);
        counter(registry, "ringkv_peer_connections_total", "Authenticated peer connections.", &self.peer_connections);
        counter(registry, "ringkv_peer_handshake_failures_total", "Peer connections refused at the handshake.", &self.peer_handshake_failures);
        counter(registry, "ringkv_peer_tls_failures_total", "Peer connections whose TLS handshake failed (either direction).", &self.peer_tls_failures);
        counter(registry, "ringkv_peer_frame_errors_total", "Peer connections closed for a bad frame.", &self.peer_frame_errors);
        counter(registry, "ringkv_peer_messages_unencodable_total", "Peer messages not sent because they exceed the codec's size limit.", &self.peer_messages_unencodable);
        counter(registry, "ringkv_peer_stored_meaning_mismatches_total", "Peer connections refused for a different conflict mode, ring or format setting.", &self.peer_stored_meaning_mismatches);
        gauge(registry, "ringkv_peers_connected", "Outbound peer connections up.", &self.peers_connected);
        counter(registry, "ringkv_storage_syncs_total", "Log fsyncs (group commits).", &self.storage_syncs);
        counter(registry, "ringkv_storage_sync_failures_total", "Failed fsyncs.", &self.storage_sync_failures);
        gauge(registry, "ringkv_storage_keys", "Keys held, tombstones included (an estimate: a key in several LSM levels counts more than once).", &self.storage_keys);
        gauge(registry, "ringkv_storage_table_bytes", "Bytes of LSM tables, all levels.", &self.storage_table_bytes);
        gauge(registry, "ringkv_storage_level0_tables", "LSM tables in level 0.", &self.storage_level0_tables);
        gauge(registry, "ringkv_storage_vlog_bytes", "Bytes of value-log segments, live and garbage.", &self.storage_vlog_bytes);
        counter(registry, "ringkv_storage_user_bytes_total", "Key and value bytes written to the engine.", &self.storage_user_bytes);
        counter(registry, "ringkv_storage_disk_bytes_total", "Bytes the engine wrote to disk (WAL, value log, tables); divided by user bytes, the write amplification.", &self.storage_disk_bytes);
        counter(registry, "ringkv_storage_flushes_total", "Memtable flushes.", &self.storage_flushes);
        counter(registry, "ringkv_storage_compactions_total", "Compactions finished (trivial moves included).", &self.storage_compactions);
        counter(registry, "ringkv_storage_vlog_segments_collected_total", "Value-log segments garbage-collected.", &self.storage_vlog_segments_collected);
        counter(registry, "ringkv_storage_write_stalls_total", "Writes that found level 0 full and ran compaction inline.", &self.storage_write_stalls);
        counter(registry, "ringkv_storage_flush_stalls_total", "Writes that filled the memtable before the last flush job was done, and finished it inline.", &self.storage_flush_stalls);
        counter(registry, "ringkv_storage_block_cache_hits_total", "Block-cache hits.", &self.storage_block_cache_hits);
        counter(registry, "ringkv_storage_block_cache_misses_total", "Block-cache misses.", &self.storage_block_cache_misses);
        counter(registry, "ringkv_storage_row_cache_hits_total", "Reads the row cache answered.", &self.storage_row_cache_hits);
        counter(registry, "ringkv_storage_row_cache_misses_total", "Reads the row cache could not answer (the full lookup ran).", &self.storage_row_cache_misses);
        gauge(registry, "ringkv_storage_row_cache_bytes", "Bytes the row cache holds.", &self.storage_row_cache_bytes);
        gauge(registry, "ringkv_operations_in_flight", "Operations the node coordinates now.", &self.operations_in_flight);
        counter(registry, "ringkv_stale_replies_total", "Replica replies that matched no live operation.", &self.stale_replies);
        gauge(registry, "ringkv_ring_members", "Members of the ring.", &self.ring_members);
        self.repair.register(registry);
        register(
            registry,
            "ringkv_log_write_errors_total",
            "Log and status lines lost to a failed write (the node keeps serving).",
            ConstCounter::new(crate::logging::write_errors()),
        );
        self.membership.register(registry);
        histogram(registry, "ringkv_storage_sync_duration_seconds", "Fsync latency.", &self.storage_sync_latency);
        histogram(registry, "ringkv_storage_maintenance_duration_seconds", "Time one storage maintenance step (flush, compaction, value-log collection) held the request path.", &self.storage_maintenance_duration);
        histogram(registry, "ringkv_driver_batch_duration_seconds", "Time the driver spent on one batch of inputs, fsync and maintenance excluded (a write that flushes the memtable shows here).", &self.driver_batch_duration);
    }
}

/// Client requests, latencies and replica answers by their labels. Every series exists from the
/// start (zero until used), as dashboards expect.
///
/// The families are what is exposed; the vectors hold the same series (a metric is a shared
/// handle), indexed by label position, so recording a request is an index and an atomic add
/// rather than hashing its labels into a map under a lock (which cost about 2,000 instructions
/// per request, 7% of a GET, in a callgrind profile of the node under `redis-benchmark`).
struct RequestFamilies {
    requests: Family<RequestLabels, CounterMetric<u64, AtomicU64>>,
    latency: Family<OperationLabels, HistogramMetric>,
    replicas_acked: Family<OperationLabels, CounterMetric<u64, AtomicU64>>,
    /// `requests`' series at `request_index(operation, level, outcome)`.
    request_series: Vec<CounterMetric<u64, AtomicU64>>,
    /// `latency`'s series by operation.
    latency_series: Vec<HistogramMetric>,
    /// `replicas_acked`'s series by operation.
    replicas_acked_series: Vec<CounterMetric<u64, AtomicU64>>,
}

/// Where the series of (operation, level, outcome) is in [`RequestFamilies::request_series`].
fn request_index(operation: usize, level: usize, outcome: usize) -> usize {
    (operation * LEVELS.len() + level) * OUTCOMES.len() + outcome
}

impl Default for RequestFamilies {
    fn default() -> Self {
        let mut families = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::default().0),
            replicas_acked: Family::default(),
            request_series: Vec::with_capacity(OPERATIONS.len() * LEVELS.len() * OUTCOMES.len()),
            latency_series: Vec::with_capacity(OPERATIONS.len()),
            replicas_acked_series: Vec::with_capacity(OPERATIONS.len()),
        };
        for operation in 0..OPERATIONS.len() {
            let labels = operation_labels(operation);
            let latency = families.latency.get_or_create(&labels).clone();
            families.latency_series.push(latency);
            let acked = families.replicas_acked.get_or_create(&labels).clone();
            families.replicas_acked_series.push(acked);
            for level in 0..LEVELS.len() {
                for outcome in 0..OUTCOMES.len() {
                    debug_assert_eq!(
                        families.request_series.len(),
                        request_index(operation, level, outcome)
                    );
                    let series = families
                        .requests
                        .get_or_create(&request_labels(operation, level, outcome))
                        .clone();
                    families.request_series.push(series);
                }
            }
        }
        families
    }
}
