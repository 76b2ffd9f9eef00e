//! The scenario file format (TOML). Every field has one meaning, documented here; unknown keys and
//! out-of-range values are refused with a message naming the file and the field.

use ringkv_core::membership::MembershipConfig;
use ringkv_core::{ClusterConfig, ConflictMode};
use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// What a scenario run is expected to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// Every enabled check passes.
    #[default]
    Pass,
    /// Some check fails: the scenario demonstrates an anomaly the checkers must find.
    Violation,
}

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, printed in summaries.
    pub name: String,
    /// What the scenario proves.
    pub description: String,
    /// Length of the fault phase, simulated milliseconds.
    pub duration_ms: u64,
    /// Length of the liveness phase (everything healed), simulated milliseconds.
    pub settle_ms: u64,
    /// Expected outcome.
    #[serde(default)]
    pub expect: Expect,
    /// The cluster.
    pub cluster: ClusterSpec,
    /// The network model.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Per-node clocks.
    #[serde(default)]
    pub clocks: ClockSpec,
    /// The simulated disk.
    #[serde(default)]
    pub disk: DiskSpec,
    /// The client workload.
    pub workload: WorkloadSpec,
    /// Scheduled faults.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// Random faults drawn from the seed.
    #[serde(default)]
    pub nemesis: NemesisSpec,
    /// Which checks run.
    #[serde(default)]
    pub check: CheckSpec,
    /// What CI runs of this scenario and asserts beyond `expect` (every file in `scenarios/`
    /// carries one; a scenario written elsewhere, such as a swarm seed's `--drawn-toml`, need not).
    pub ci: Option<CiSpec>,
}

/// `[cluster]`: the simulated machines, the simulator-only knobs, and every core setting
/// ([`ClusterConfig`] and [`MembershipConfig`] embedded flat, under the names, defaults and
/// limits the node's file uses too).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Number of nodes.
    pub nodes: u32,
    /// Nodes in the ring at the start (default: all); the others run as spares for `join`.
    pub initial_nodes: Option<u32>,
    /// Datacenters (`dc0`, `dc1`, ...); nodes are dealt round-robin over them.
    #[serde(default = "one")]
    pub datacenters: u32,
    /// Racks per datacenter; nodes are dealt round-robin over a datacenter's racks.
    #[serde(default = "one")]
    pub racks: u32,
    /// Gossip membership: SWIM probes, failure detection (routing around `Down` nodes) and ring
    /// changes (`join`, `leave`, `remove`) issued on one node and spread by gossip, with the
    /// embedded membership settings (`gossip_interval_ms`, `fanout`, `suspect_after_ms`, ...).
    /// Off: the simulator hands every node the new ring at once.
    #[serde(default)]
    pub gossip: bool,
    /// TEST ONLY: acknowledge writes before they are durable (shows the durability check works).
    #[serde(default)]
    pub unsafe_ack_before_persist: bool,
    /// TEST ONLY: linearizable reads skip their write-back phase.
    #[serde(default)]
    pub unsafe_skip_write_back: bool,
    /// TEST ONLY: every replica ignores every n-th write it receives (0 = never).
    #[serde(default)]
    pub unsafe_drop_every_nth_write: u32,
    /// TEST ONLY: replicas merge counters by adding slots instead of taking their maximum.
    #[serde(default)]
    pub unsafe_counter_merge_adds: bool,
    /// TEST ONLY: coordinators ignore expiries when they answer reads (shows the TTL check works).
    #[serde(default)]
    pub unsafe_ignore_expiry: bool,
    /// TEST ONLY: a planted Paxos bug (`accept-lower-ballot`, `skip-replay`), so the `cas`
    /// check can be shown to catch it.
    #[serde(default)]
    pub unsafe_paxos_flaw: ringkv_core::node::PaxosFlaw,
    /// The core's cluster settings (`n`, `r`, `w`, `consistency`, `conflict`, timeouts, hint,
    /// repair and size limits); see [`ClusterConfig`] for each one and its default.
    #[serde(flatten)]
    pub config: ClusterConfig,
    /// The core's membership settings, read only with `gossip = true`.
    #[serde(flatten)]
    pub membership: MembershipConfig,
}

/// `[network]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// One-way latency range between nodes, milliseconds (uniform; jitter reorders messages).
    #[serde(default = "default_latency")]
    pub latency_ms: Vec<f64>,
    /// Probability a message is lost.
    #[serde(default)]
    pub drop: f64,
    /// Probability a message is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// One-way latency range between clients and nodes, milliseconds.
    #[serde(default = "default_client_latency")]
    pub client_latency_ms: Vec<f64>,
    /// Bound of each node-to-node link's queue, messages in flight; a send to a full link is not
    /// made and the sender's node gets `handle_send_failed` (back-pressure, decided in core).
    /// Unset: unbounded.
    #[serde(default)]
    pub queue_messages_max: Option<u32>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            latency_ms: default_latency(),
            drop: 0.0,
            duplicate: 0.0,
            client_latency_ms: default_client_latency(),
            queue_messages_max: None,
        }
    }
}

/// `[clocks]`
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClockSpec {
    /// Each node's wall-clock offset is drawn from `[-skew_ms, skew_ms]`.
    #[serde(default)]
    pub skew_ms: u64,
    /// Each node's drift is drawn from `[-drift_ppm, drift_ppm]` parts per million.
    #[serde(default)]
    pub drift_ppm: u64,
}

/// `[disk]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// fsync latency range, microseconds.
    #[serde(default = "default_fsync")]
    pub fsync_us: Vec<u64>,
    /// Probability that one fsync fails (poisoning that node's storage until it restarts).
    #[serde(default)]
    pub fsync_failure: f64,
    /// The storage engine: "memory" (fast, for large sweeps) or "lsm" (the real engine on the
    /// simulated disk, which loses, keeps or tears unsynced bytes on a crash).
    #[serde(default = "default_engine")]
    pub engine: String,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            fsync_us: default_fsync(),
            fsync_failure: 0.0,
            engine: default_engine(),
        }
    }
}

/// `[workload]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Concurrent client processes (each has one request in flight at a time).
    pub clients: u32,
    /// Operations issued in total, spread over the fault phase.
    pub operations: u64,
    /// Distinct keys.
    pub keys: u32,
    /// Fraction of operations that are reads.
    pub read_fraction: f64,
    /// Fraction of the writes that are deletes.
    #[serde(default = "default_delete_fraction")]
    pub delete_fraction: f64,
    /// Value size range, bytes.
    pub value_bytes: Vec<usize>,
    /// uniform | zipf.
    #[serde(default = "default_distribution")]
    pub key_distribution: String,
    /// Exponent of the zipf distribution.
    #[serde(default = "default_zipf")]
    pub zipf_exponent: f64,
    /// Each client lives in a datacenter (client i in datacenter i mod datacenters) and sends its
    /// requests only to nodes there, as an application server near its database would.
    #[serde(default)]
    pub local_coordinators: bool,
    /// A client gives up on a request after this long (then records it indeterminate). Defaults
    /// to the request timeout plus twice the largest client latency plus a margin.
    pub client_timeout_ms: Option<u64>,
    /// Fraction of the puts whose value is longer than `cluster.value_bytes_max` (by 1 to 64
    /// bytes): each must be refused with a typed `ValueTooLarge`, never sent or stored.
    #[serde(default)]
    pub oversized_fraction: f64,
    /// How clients talk to the cluster: `requests` (the default) sends core `ClientRequest`s
    /// directly, carrying the context of the client's last read of the key; `commands` runs
    /// client commands (`GET`, `SET`, `DEL`, `KV.GET`, `KV.PUT`/`KV.DEL` with `CONTEXT`) through
    /// core's command machines, the code the node runs for RESP clients.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// With `interface = "commands"`: the fraction of commands that use the explicit `KV.*` forms
    /// (`KV.GET`, and `KV.PUT`/`KV.DEL` with the context of the client's last `KV.GET` of the
    /// key, if any); the rest are plain `GET`, `SET` and `DEL`.
    #[serde(default = "default_kv_fraction")]
    pub kv_fraction: f64,
    /// With `interface = "requests"`: the fraction of a client's turns spent on a full scan of
    /// the cluster (pages of [`ClientRequest::Scan`](ringkv_core::ClientRequest) until the ring
    /// is walked), recorded in `History::scans` for the scan check (`checks::scan`).
    #[serde(default)]
    pub scan_fraction: f64,
    /// Keys asked per scan page (`SCAN ... COUNT`).
    #[serde(default = "default_scan_keys_max")]
    pub scan_keys_max: u32,
    /// TEST ONLY: the scanning client's cursor skips the last key of every page that is not the
    /// last one (it is dropped from what the client saw), so the scan check can be shown to
    /// catch a cursor that loses keys.
    #[serde(default)]
    pub unsafe_scan_skip_last_key: bool,
    /// Every key is a counter: writes are increments (`INCRBY` with a delta drawn from
    /// `counter_delta`, never 0) instead of puts and deletes; reads are plain reads of the
    /// counter's value (checked by `check.counters`).
    #[serde(default)]
    pub counters: bool,
    /// The inclusive range increments are drawn from (0 is skipped).
    #[serde(default = "default_counter_delta")]
    pub counter_delta: Vec<i64>,
    /// With `interface = "commands"` (last-write-wins): the fraction of reads that are `PTTL`
    /// and of writes that are TTL commands (`SET ... PX`, `SET ... PXAT`, `PEXPIRE`, `PERSIST`,
    /// a quarter each). 0 (the default) draws nothing extra from the seed.
    #[serde(default)]
    pub ttl_fraction: f64,
    /// The range of the times to live the TTL commands give, milliseconds.
    #[serde(default = "default_ttl_ms")]
    pub ttl_ms: Vec<u64>,
    /// With `interface = "requests"`: the fraction of puts sent as a compare-and-set
    /// (`ClientRequest::Conditional`) expecting the value the client last saw for the key, or
    /// expecting it absent if the client saw none (`SET NX`). 1 makes every put a
    /// compare-and-set, which the `cas` check needs: plain and conditional writes on one key are
    /// not linearizable together. Default 0: nothing extra is drawn from the seed.
    #[serde(default)]
    pub cas_fraction: f64,
}

fn default_counter_delta() -> Vec<i64> {
    vec![-3, 10]
}

/// One `[[fault]]`: `at_ms` and exactly one action.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// When, in simulated milliseconds from the start.
    pub at_ms: u64,
    /// Split the nodes into groups that cannot talk to each other; unlisted nodes form one more group.
    pub partition: Option<Vec<Vec<u32>>>,
    /// Block messages from the `from` nodes to the `to` nodes only.
    pub one_way: Option<OneWaySpec>,
    /// Remove every partition.
    pub heal: Option<bool>,
    /// Crash a node: volatile state lost, storage keeps what was synced.
    pub crash: Option<u32>,
    /// Restart a crashed node.
    pub restart: Option<u32>,
    /// Freeze a node for a while; its inputs wait.
    pub pause: Option<PauseSpec>,
    /// Add a running non-member node to the ring.
    pub join: Option<u32>,
    /// Decommission a node: out of the ring, still running, streaming its data out.
    pub leave: Option<u32>,
    /// Remove a node for good (stopped and taken out of the ring).
    pub remove: Option<u32>,
    /// Step a node's wall clock.
    pub clock_jump: Option<ClockJumpSpec>,
    /// Replace a node's machine: its disk is wiped (synced data too) and it starts again empty
    /// under the same id. A durability claim survives one wipe only with `w >= 2`.
    pub wipe: Option<u32>,
    /// Crash and restart a node over and over, from `at_ms` until `until_ms`.
    pub crash_loop: Option<CrashLoopSpec>,
}

/// `crash_loop = { node = 0, every_ms = 150, down_ms = 5, until_ms = 20000 }`: a process that keeps
/// dying shortly after it starts (a crash-looping coordinator), so late replies to one
/// incarnation's requests reach the next ones.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashLoopSpec {
    /// The node.
    pub node: u32,
    /// Time from one crash to the next, milliseconds.
    pub every_ms: u64,
    /// How long the node stays down after each crash, milliseconds (less than `every_ms`).
    pub down_ms: u64,
    /// No crash at or after this time, milliseconds from the start.
    pub until_ms: u64,
}

/// `one_way = { from = [..], to = [..] }`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneWaySpec {
    /// Senders whose messages are lost.
    pub from: Vec<u32>,
    /// Receivers that do not get them.
    pub to: Vec<u32>,
}

/// `pause = { node = 1, ms = 2000 }`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseSpec {
    /// The node.
    pub node: u32,
    /// For how long.
    pub ms: u64,
}

/// `clock_jump = { node = 1, ms = -3000 }`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockJumpSpec {
    /// The node.
    pub node: u32,
    /// The step, milliseconds; negative goes back.
    pub ms: i64,
}

/// `[nemesis]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NemesisSpec {
    /// Random partitions (splits, isolations, one-way).
    #[serde(default)]
    pub partitions: bool,
    /// Random crashes and restarts.
    #[serde(default)]
    pub crashes: bool,
    /// Random wall-clock jumps.
    #[serde(default)]
    pub clock_jumps: bool,
    /// Random pauses.
    #[serde(default)]
    pub pauses: bool,
    /// One machine replaced (`wipe`) at a time drawn from the seed in the middle half of the
    /// fault phase. Only one: a second wipe before repair finished could lose data honestly.
    #[serde(default)]
    pub wipes: bool,
    /// Time between nemesis actions, drawn uniformly from this range.
    #[serde(default = "default_interval")]
    pub interval_ms: Vec<u64>,
}

impl Default for NemesisSpec {
    fn default() -> Self {
        NemesisSpec {
            partitions: false,
            crashes: false,
            clock_jumps: false,
            pauses: false,
            wipes: false,
            interval_ms: default_interval(),
        }
    }
}

/// `[check]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Every acknowledged write is held by some replica at the end.
    #[serde(default = "yes")]
    pub durability: bool,
    /// The history is linearizable (checkers issue).
    #[serde(default)]
    pub linearizable: bool,
    /// The history of reads, writes and compare-and-sets is linearizable against the checker's
    /// `cas-register` model (`checks::cas`); listed in the summary only when enabled.
    #[serde(default)]
    pub cas: bool,
    /// Replicas converge after the liveness phase (checkers issue).
    #[serde(default)]
    pub convergence: bool,
    /// Vector-clock siblings are explained by the client commands (`checks::siblings`): no final
    /// sibling is one an acknowledged write's context had superseded, and each was written by a
    /// write that may have taken effect. Needs `cluster.conflict = "vector-clock"`.
    #[serde(default)]
    pub siblings: bool,
    /// Every finished scan returned each key that was live for the whole scan (an acknowledged
    /// put completed before it started, no delete invoked before it ended), and no key twice
    /// (`checks::scan`). Needs `workload.scan_fraction > 0`.
    #[serde(default)]
    pub scan: bool,
    /// Counters (`workload.counters`, `checks::counters`): every replica's final value of every
    /// key is the sum of its acknowledged increments plus a subset of its indeterminate ones;
    /// never less, never more.
    #[serde(default)]
    pub counters: bool,
    /// TTL (`checks::ttl`): no read returns a value past its expiry plus the clock-error bound,
    /// and no value comes back once a later acknowledged write certainly superseded it. Needs
    /// `workload.interface = "commands"`, last-write-wins, strict quorums (r + w > n, no sloppy
    /// quorum) and no drawn clock jumps (the bound must be known).
    #[serde(default)]
    pub ttl: bool,
    /// Each enabled check must have judged at least this many successful operations (durability
    /// and convergence: acknowledged writes; linearizable: ok operations), or it fails: a run
    /// whose requests were all refused proves nothing. Default: 1% of `workload.operations`, at
    /// least 1.
    pub ok_operations_min: Option<u64>,
    /// Typed rejections the run must show, at least this many of each, by the name the summary
    /// prints (`busy`, `value-too-large`, ...): a scenario about back-pressure or a limit makes
    /// its point only if the typed outcome happened. Empty: no such check.
    #[serde(default)]
    pub rejections_min: std::collections::BTreeMap<String, u64>,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            durability: true,
            linearizable: false,
            cas: false,
            convergence: false,
            siblings: false,
            scan: false,
            counters: false,
            ttl: false,
            ok_operations_min: None,
            rejections_min: std::collections::BTreeMap::new(),
        }
    }
}

/// Most seeds a `[ci]` table may ask for: the whole CI sweep must stay within its wall-time budget,
/// and a count past this belongs in `scripts/nightly.sh` or a by-hand sweep.
pub const CI_SEEDS_MAX: u64 = 100_000;

/// `[ci]`: the scenario's own CI contract. The data-driven test
/// (`tests/tests/scenario_contracts.rs`) runs seeds `0..seeds` of every file in `scenarios/` and
/// requires each to be as `expect` says and to meet the thresholds declared here, so a scenario's
/// seed count and bounds live beside the faults they are about, not in a Rust file elsewhere.
///
/// Thresholds judge passing runs only (`expect = "pass"`): a violation scenario's point is that a
/// check fails, and its figures mean nothing.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CiSpec {
    /// Seeds `0..seeds` run in CI. 0 keeps the scenario out of CI, which needs a `reason`.
    pub seeds: u64,
    /// Why the count is what it is: required with `seeds = 0` (too slow for CI, say), optional
    /// otherwise (e.g. how many seeds were measured by hand).
    pub reason: Option<String>,
    /// The first this-many of the seeds run twice and must give the same trace fingerprint (the
    /// determinism check), whatever `expect` says. At most `seeds`.
    #[serde(default)]
    pub determinism_seeds: u64,
    /// Every seed's availability (the fraction of operations during faults that succeeded) is at
    /// least this, in `[0, 1]`.
    pub availability_min: Option<f64>,
    /// Every seed ends with at most this many hints still pending (0: every hint delivered or
    /// handed to anti-entropy by the end of the liveness phase).
    pub hints_pending_max: Option<u64>,
    /// Gossip: exactly this many crashes are seen `Down` by every running node in each seed.
    pub down_detections: Option<u64>,
    /// Gossip: each crash is seen `Down` everywhere within `[low, high]` milliseconds of the
    /// crash (the wait for a probe of the crashed node, the configured timeouts, plus the rounds
    /// the `Down` claim takes to spread; each file derives its bounds in a comment).
    pub down_detection_ms: Option<Vec<u64>>,
    /// Gossip: exactly this many restarts are seen `Alive` by every running node in each seed.
    pub alive_detections: Option<u64>,
    /// Gossip: each restart is seen `Alive` everywhere within this many milliseconds.
    pub alive_detection_ms_max: Option<u64>,
}

impl CiSpec {
    /// Range checks on their own and against the rest of the file; errors are (field, reason).
    /// `expect` and `gossip` are the scenario's, so thresholds that cannot apply are refused
    /// rather than silently never judged.
    pub fn validate(&self, expect: Expect, gossip: bool) -> Result<(), (String, String)> {
        let fail = |field: &str, reason: &str| Err((format!("ci.{field}"), reason.to_string()));
        if self.seeds > CI_SEEDS_MAX {
            return fail(
                "seeds",
                &format!("must be at most {CI_SEEDS_MAX} (longer sweeps are run by hand)"),
            );
        }
        let reason_given = self.reason.as_ref().is_some_and(|r| !r.trim().is_empty());
        if self.seeds == 0 && !reason_given {
            return fail(
                "reason",
                "must say why the scenario is left out of CI when seeds = 0",
            );
        }
        if self.reason.is_some() && !reason_given {
            return fail("reason", "must not be empty");
        }
        if self.determinism_seeds > self.seeds {
            return fail("determinism_seeds", "must not exceed ci.seeds");
        }
        if let Some(min) = self.availability_min {
            if !(0.0..=1.0).contains(&min) {
                return fail("availability_min", "must be in [0, 1]");
            }
        }
        if let Some(range) = &self.down_detection_ms {
            if !matches!(range[..], [low, high] if low <= high) {
                return fail("down_detection_ms", "must be [low, high] with low <= high");
            }
        }
        let detection = self.detection_fields();
        if let (Some(field), false) = (detection.first(), gossip) {
            return fail(
                field,
                "bounds gossip failure detection; needs cluster.gossip = true",
            );
        }
        if let (Some(field), Expect::Violation) = (self.threshold_fields().first(), expect) {
            return fail(
                field,
                "judges passing runs only; a violation scenario's figures mean nothing",
            );
        }
        Ok(())
    }

    /// Validation for files whose runs have no availability, hint or detection figures to judge
    /// (storage and swarm files): a seed count and its reason only.
    pub fn validate_without_thresholds(&self, expect: Expect) -> Result<(), (String, String)> {
        if let Some(field) = self.threshold_fields().first() {
            return Err((
                format!("ci.{field}"),
                "is not judged for this kind of file (only seeds, reason and determinism_seeds are)"
                    .into(),
            ));
        }
        self.validate(expect, false)
    }

    /// The names of the thresholds this table sets, in declaration order (empty: it asks for
    /// seeds only). Storage and swarm files refuse any: their runs have no such figures.
    pub fn threshold_fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.availability_min.is_some() {
            fields.push("availability_min");
        }
        if self.hints_pending_max.is_some() {
            fields.push("hints_pending_max");
        }
        fields.extend(self.detection_fields());
        fields
    }

    /// The names of the gossip detection bounds this table sets.
    fn detection_fields(&self) -> Vec<&'static str> {
        [
            ("down_detections", self.down_detections.is_some()),
            ("down_detection_ms", self.down_detection_ms.is_some()),
            ("alive_detections", self.alive_detections.is_some()),
            (
                "alive_detection_ms_max",
                self.alive_detection_ms_max.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }

    /// The thresholds `report` misses, one sentence each (empty: every one is met). `expect` is
    /// judged by the report itself ([`RunReport::as_expected`](crate::report::RunReport)).
    pub fn misses(&self, report: &crate::report::RunReport) -> Vec<String> {
        let mut misses = Vec::new();
        if let Some(min) = self.availability_min {
            if report.availability < min {
                misses.push(format!(
                    "availability {:.4} is below ci.availability_min = {min}",
                    report.availability
                ));
            }
        }
        if let Some(max) = self.hints_pending_max {
            let pending = report.hints.5 as u64;
            if pending > max {
                misses.push(format!(
                    "{pending} hints left pending, more than ci.hints_pending_max = {max}"
                ));
            }
        }
        match (&report.gossip, !self.detection_fields().is_empty()) {
            (_, false) => {}
            (None, true) => misses.push("no gossip figures, but [ci] bounds detection".into()),
            (Some(gossip), true) => {
                misses.extend(detection_misses(self, &gossip.down_ms, &gossip.alive_ms));
            }
        }
        misses
    }
}

/// The detection bounds of `ci` that the measured times (milliseconds) miss.
fn detection_misses(ci: &CiSpec, down_ms: &[f64], alive_ms: &[f64]) -> Vec<String> {
    let mut misses = Vec::new();
    for (what, field, want, got) in [
        (
            "crashes seen Down",
            "down_detections",
            ci.down_detections,
            down_ms.len(),
        ),
        (
            "restarts seen Alive",
            "alive_detections",
            ci.alive_detections,
            alive_ms.len(),
        ),
    ] {
        if let Some(want) = want.filter(|&want| want != got as u64) {
            misses.push(format!("{got} {what} everywhere, but ci.{field} = {want}"));
        }
    }
    if let Some([low, high]) = ci.down_detection_ms.as_deref() {
        for &ms in down_ms {
            if ms < *low as f64 || ms > *high as f64 {
                misses.push(format!(
                    "a crash took {ms} ms to be seen Down everywhere, outside ci.down_detection_ms = [{low}, {high}]"
                ));
            }
        }
    }
    if let Some(max) = ci.alive_detection_ms_max {
        for &ms in alive_ms {
            if ms > max as f64 {
                misses.push(format!(
                    "a restart took {ms} ms to be seen Alive everywhere, more than ci.alive_detection_ms_max = {max}"
                ));
            }
        }
    }
    misses
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_latency() -> Vec<f64> {
    vec![1.0, 10.0]
}
fn default_client_latency() -> Vec<f64> {
    vec![0.1, 1.0]
}
fn default_fsync() -> Vec<u64> {
    vec![200, 2000]
}
fn default_engine() -> String {
    "memory".into()
}
fn default_delete_fraction() -> f64 {
    0.1
}
fn default_interface() -> String {
    "requests".into()
}
fn default_ttl_ms() -> Vec<u64> {
    vec![50, 1000]
}
fn default_kv_fraction() -> f64 {
    0.5
}
fn default_scan_keys_max() -> u32 {
    10
}
fn default_distribution() -> String {
    "uniform".into()
}
fn default_zipf() -> f64 {
    0.99
}
fn default_interval() -> Vec<u64> {
    vec![2000, 8000]
}

/// A scenario file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// The field, dotted (`cluster.r`), when one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field `{}`: {}", self.file, field, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// The core setting in `[cluster]` whose value core's section refuses, and why. The sections
/// are flattened into the table, and a flattened field's error names the table rather than the
/// key: each key is read alone into its section to find the one at fault.
fn core_setting_at_fault(text: &str) -> Option<(String, String)> {
    use ringkv_core::config::setting_names;
    let file: toml::Table = toml::from_str(text).ok()?;
    let cluster = file.get("cluster")?.as_table()?;
    cluster.iter().find_map(|(key, value)| {
        let alone = toml::Value::Table(toml::Table::from_iter([(key.clone(), value.clone())]));
        let error = if setting_names::<ClusterConfig>().contains(&key.as_str()) {
            alone.try_into::<ClusterConfig>().err()
        } else if setting_names::<MembershipConfig>().contains(&key.as_str()) {
            alone.try_into::<MembershipConfig>().err()
        } else {
            None
        }?;
        Some((
            format!("cluster.{key}"),
            error.to_string().trim().to_string(),
        ))
    })
}

/// Key choice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Zipf with the given exponent.
    Zipf(f64),
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            field: None,
            reason: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&file, &text)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let (field, reason) = match core_setting_at_fault(text) {
                Some((field, reason)) => (Some(field), reason),
                None => (None, e.to_string().trim().replace('\n', " ")),
            };
            ScenarioError {
                file: file.to_string(),
                field,
                reason,
            }
        })?;
        scenario
            .validate()
            .map_err(|(field, reason)| ScenarioError {
                file: file.to_string(),
                field: Some(field),
                reason,
            })?;
        Ok(scenario)
    }

    /// Range checks; errors are (field, reason).
    fn validate(&self) -> Result<(), (String, String)> {
        fn ensure(ok: bool, field: &str, reason: &str) -> Result<(), (String, String)> {
            if ok {
                Ok(())
            } else {
                Err((field.to_string(), reason.to_string()))
            }
        }
        fn range_f64(v: &[f64], field: &str, max: f64) -> Result<(), (String, String)> {
            ensure(
                v.len() == 2 && 0.0 <= v[0] && v[0] <= v[1] && v[1] <= max,
                field,
                &format!("must be [low, high] with 0 <= low <= high <= {max}"),
            )
        }
        let nodes = self.cluster.nodes;
        ensure(!self.name.is_empty(), "name", "must not be empty")?;
        ensure(
            !self.description.trim().is_empty(),
            "description",
            "must say what the scenario proves",
        )?;
        ensure(
            (1..=86_400_000).contains(&self.duration_ms),
            "duration_ms",
            "must be between 1 and 86400000",
        )?;
        ensure(
            self.settle_ms <= 86_400_000,
            "settle_ms",
            "must be at most 86400000",
        )?;
        ensure(
            (1..=1000).contains(&nodes),
            "cluster.nodes",
            "must be between 1 and 1000",
        )?;
        ensure(
            (1..=nodes).contains(&self.cluster.datacenters),
            "cluster.datacenters",
            "must be between 1 and the number of nodes",
        )?;
        ensure(
            (1..=1000).contains(&self.cluster.racks),
            "cluster.racks",
            "must be between 1 and 1000",
        )?;
        ensure(
            u32::from(self.cluster.config.n) <= nodes,
            "cluster.n",
            "must not exceed cluster.nodes",
        )?;
        self.cluster_config()
            .map_err(|e| (format!("cluster.{}", e.field), e.reason))?;
        self.membership_config().map_err(|e| match e.field {
            // The seeds are the initial ring; the table must hold them.
            "seeds" => ("cluster.members_max".to_string(), e.reason),
            field => (format!("cluster.{field}"), e.reason),
        })?;
        self.validate_combinations()?;
        if let Some(ci) = &self.ci {
            ci.validate(self.expect, self.cluster.gossip)?;
        }
        range_f64(&self.network.latency_ms, "network.latency_ms", 60_000.0)?;
        range_f64(
            &self.network.client_latency_ms,
            "network.client_latency_ms",
            60_000.0,
        )?;
        ensure(
            (0.0..=1.0).contains(&self.network.drop),
            "network.drop",
            "must be a probability in [0, 1]",
        )?;
        ensure(
            (0.0..=1.0).contains(&self.network.duplicate),
            "network.duplicate",
            "must be a probability in [0, 1]",
        )?;
        ensure(
            self.network.queue_messages_max != Some(0),
            "network.queue_messages_max",
            "must be at least 1 (leave it out for unbounded queues)",
        )?;
        ensure(
            self.clocks.skew_ms <= 86_400_000,
            "clocks.skew_ms",
            "must be at most 86400000",
        )?;
        ensure(
            self.clocks.drift_ppm <= 100_000,
            "clocks.drift_ppm",
            "must be at most 100000",
        )?;
        let fsync = &self.disk.fsync_us;
        ensure(
            fsync.len() == 2 && fsync[0] <= fsync[1] && fsync[1] <= 10_000_000,
            "disk.fsync_us",
            "must be [low, high] with low <= high <= 10000000",
        )?;
        ensure(
            (0.0..=1.0).contains(&self.disk.fsync_failure),
            "disk.fsync_failure",
            "must be a probability in [0, 1]",
        )?;
        ensure(
            self.disk.engine == "memory" || self.disk.engine == "lsm",
            "disk.engine",
            "must be \"memory\" or \"lsm\"",
        )?;
        let w = &self.workload;
        ensure(
            (1..=100_000).contains(&w.clients),
            "workload.clients",
            "must be between 1 and 100000",
        )?;
        ensure(
            w.operations <= 100_000_000,
            "workload.operations",
            "must be at most 100000000",
        )?;
        ensure(
            (1..=10_000_000).contains(&w.keys),
            "workload.keys",
            "must be between 1 and 10000000",
        )?;
        ensure(
            (0.0..=1.0).contains(&w.read_fraction),
            "workload.read_fraction",
            "must be in [0, 1]",
        )?;
        ensure(
            (0.0..=1.0).contains(&w.delete_fraction),
            "workload.delete_fraction",
            "must be in [0, 1]",
        )?;
        ensure(
            (0.0..=1.0).contains(&w.oversized_fraction),
            "workload.oversized_fraction",
            "must be in [0, 1]",
        )?;
        ensure(
            w.value_bytes.len() == 2
                && 8 <= w.value_bytes[0]
                && w.value_bytes[0] <= w.value_bytes[1]
                && w.value_bytes[1] <= 64 << 20,
            "workload.value_bytes",
            "must be [low, high] with 8 <= low <= high <= 67108864",
        )?;
        ensure(
            w.key_distribution == "uniform" || w.key_distribution == "zipf",
            "workload.key_distribution",
            "must be \"uniform\" or \"zipf\"",
        )?;
        ensure(
            w.interface == "requests" || w.interface == "commands",
            "workload.interface",
            "must be \"requests\" or \"commands\"",
        )?;
        ensure(
            (0.0..=1.0).contains(&w.cas_fraction),
            "workload.cas_fraction",
            "must be in [0, 1]",
        )?;
        ensure(
            (0.0..=1.0).contains(&w.kv_fraction),
            "workload.kv_fraction",
            "must be in [0, 1]",
        )?;
        ensure(
            matches!(w.counter_delta[..], [low, high] if low <= high && (low, high) != (0, 0)),
            "workload.counter_delta",
            "must be [low, high] with low <= high, not [0, 0]",
        )?;
        ensure(
            (0.0..=1.0).contains(&w.ttl_fraction),
            "workload.ttl_fraction",
            "must be in [0, 1]",
        )?;
        ensure(
            w.ttl_ms.len() == 2 && w.ttl_ms[0] <= w.ttl_ms[1],
            "workload.ttl_ms",
            "must be [low, high] with low <= high",
        )?;
        ensure(
            w.zipf_exponent > 0.0 && w.zipf_exponent <= 10.0,
            "workload.zipf_exponent",
            "must be in (0, 10]",
        )?;
        if let Some(t) = w.client_timeout_ms {
            ensure(
                (1..=3_600_000).contains(&t),
                "workload.client_timeout_ms",
                "must be between 1 and 3600000",
            )?;
        }
        let iv = &self.nemesis.interval_ms;
        ensure(
            iv.len() == 2 && 1 <= iv[0] && iv[0] <= iv[1],
            "nemesis.interval_ms",
            "must be [low, high] with 1 <= low <= high",
        )?;
        for (i, fault) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("fault[{i}].{name}");
            let actions = [
                fault.partition.is_some(),
                fault.one_way.is_some(),
                fault.heal.is_some(),
                fault.crash.is_some(),
                fault.restart.is_some(),
                fault.pause.is_some(),
                fault.clock_jump.is_some(),
                fault.join.is_some(),
                fault.leave.is_some(),
                fault.remove.is_some(),
                fault.wipe.is_some(),
                fault.crash_loop.is_some(),
            ];
            ensure(
                actions.iter().filter(|&&a| a).count() == 1,
                &format!("fault[{i}]"),
                "needs exactly one of partition, one_way, heal, crash, restart, pause, clock_jump, join, leave, remove, wipe, crash_loop",
            )?;
            let node_ok = |n: &u32| *n < nodes;
            if let Some(groups) = &fault.partition {
                ensure(
                    groups.iter().flatten().all(node_ok),
                    &field("partition"),
                    "names a node that does not exist",
                )?;
            }
            if let Some(one_way) = &fault.one_way {
                ensure(
                    one_way.from.iter().chain(&one_way.to).all(node_ok),
                    &field("one_way"),
                    "names a node that does not exist",
                )?;
            }
            for (name, node) in [
                ("crash", fault.crash),
                ("restart", fault.restart),
                ("join", fault.join),
                ("leave", fault.leave),
                ("remove", fault.remove),
                ("wipe", fault.wipe),
            ] {
                if let Some(node) = node {
                    ensure(
                        node < nodes,
                        &field(name),
                        "names a node that does not exist",
                    )?;
                }
            }
            if let Some(pause) = &fault.pause {
                ensure(
                    pause.node < nodes,
                    &field("pause.node"),
                    "names a node that does not exist",
                )?;
            }
            if let Some(cycle) = &fault.crash_loop {
                ensure(
                    cycle.node < nodes,
                    &field("crash_loop.node"),
                    "names a node that does not exist",
                )?;
                ensure(
                    1 <= cycle.down_ms && cycle.down_ms < cycle.every_ms,
                    &field("crash_loop"),
                    "needs 1 <= down_ms < every_ms",
                )?;
                ensure(
                    fault.at_ms <= cycle.until_ms && cycle.until_ms <= self.duration_ms,
                    &field("crash_loop.until_ms"),
                    "must lie between at_ms and duration_ms",
                )?;
            }
            if let Some(jump) = &fault.clock_jump {
                ensure(
                    jump.node < nodes,
                    &field("clock_jump.node"),
                    "names a node that does not exist",
                )?;
                ensure(
                    jump.ms.abs() <= 86_400_000,
                    &field("clock_jump.ms"),
                    "must be within a day",
                )?;
            }
        }
        Ok(())
    }

    /// Settings that are each valid alone but together make every request fail, so every check
    /// would pass on an empty history.
    fn validate_combinations(&self) -> Result<(), (String, String)> {
        // (Linearizable with vector clocks, which refuses every request, is core's own rule:
        // `ClusterConfig::validate` reports it as `cluster.consistency`.)
        let c = &self.cluster;
        if (self.check.counters || self.workload.counters)
            && (c.config.conflict != ConflictMode::Lww
                || !self.workload.counters
                || self.workload.interface != "requests")
        {
            return Err((
                "check.counters".into(),
                "counters need workload.counters = true, interface = \"requests\" and cluster.conflict = \"lww\"".into(),
            ));
        }
        if self.check.siblings && c.config.conflict != ConflictMode::VectorClock {
            return Err((
                "check.siblings".into(),
                format!(
                    "judges vector-clock siblings; needs cluster.conflict = \"vector-clock\" (it is \"{}\")",
                    c.config.conflict
                ),
            ));
        }
        if self.check.ttl {
            let strict = c.config.r + c.config.w > c.config.n && !c.config.sloppy_quorum;
            let ok = self.workload.interface == "commands"
                && c.config.conflict == ConflictMode::Lww
                && strict
                && !self.nemesis.clock_jumps;
            if !ok {
                return Err((
                    "check.ttl".into(),
                    "needs workload.interface = \"commands\", cluster.conflict = \"lww\", \
                     r + w > n without sloppy quorum, and no nemesis clock jumps"
                        .into(),
                ));
            }
        }
        let value_bytes_high = self.workload.value_bytes.get(1).copied().unwrap_or(0);
        if value_bytes_high > c.config.value_bytes_max {
            return Err((
                "workload.value_bytes".into(),
                format!(
                    "goes up to {value_bytes_high} bytes, past cluster.value_bytes_max ({}): \
                     raise the limit (values past it are what workload.oversized_fraction draws)",
                    c.config.value_bytes_max
                ),
            ));
        }
        if let Some((name, _)) = c
            .config
            .replicas_per_datacenter
            .iter()
            .find(|(name, _)| !(0..c.datacenters).any(|dc| *name == format!("dc{dc}")))
        {
            return Err((
                "cluster.replicas_per_datacenter".into(),
                format!(
                    "names `{name}`, but cluster.datacenters = {} gives only dc0..dc{}",
                    c.datacenters,
                    c.datacenters.saturating_sub(1)
                ),
            ));
        }
        let checks = self.check.durability || self.check.linearizable || self.check.convergence;
        if checks && self.workload.operations == 0 {
            return Err((
                "workload.operations".into(),
                "is 0 while [check] enables checks: they would judge nothing".into(),
            ));
        }
        for name in self.check.rejections_min.keys() {
            if !crate::world::REJECTION_NAMES.contains(&name.as_str()) {
                return Err((
                    "check.rejections_min".into(),
                    format!(
                        "names `{name}`, not one of {}",
                        crate::world::REJECTION_NAMES.join(", ")
                    ),
                ));
            }
        }
        if let Some(min) = self.check.ok_operations_min {
            if min > self.workload.operations {
                return Err((
                    "check.ok_operations_min".into(),
                    format!(
                        "is {min}, more than workload.operations ({})",
                        self.workload.operations
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether every node's wall clock agrees with the others for the whole run: no skew, no
    /// drift, no scheduled or drawn clock jumps. Only then does a later write always stamp a
    /// higher last-write-wins version than an earlier one (the durability check relies on it).
    pub fn clocks_agree(&self) -> bool {
        self.clocks.skew_ms == 0
            && self.clocks.drift_ppm == 0
            && !self.nemesis.clock_jumps
            && self.faults.iter().all(|fault| fault.clock_jump.is_none())
    }

    /// The most any node's wall clock can differ from true (simulated) time during the run,
    /// milliseconds: the initial offset, drift over the whole run, and every scheduled jump
    /// (drawn jumps are unbounded; `check.ttl` refuses them). The TTL check's skew bound.
    pub fn clock_error_ms_max(&self) -> u64 {
        let run_ms = self.duration_ms.saturating_add(self.settle_ms);
        let drift_ms = (self.clocks.drift_ppm.saturating_mul(run_ms)).div_ceil(1_000_000);
        let jumps_ms: u64 = self
            .faults
            .iter()
            .filter_map(|f| f.clock_jump.as_ref())
            .map(|j| j.ms.unsigned_abs())
            .sum();
        self.clocks
            .skew_ms
            .saturating_add(drift_ms)
            .saturating_add(jumps_ms)
    }

    /// The least number of successful operations each enabled check must judge.
    pub fn ok_operations_min(&self) -> u64 {
        self.check
            .ok_operations_min
            .unwrap_or_else(|| (self.workload.operations / 100).max(1))
    }

    /// The core configuration this scenario's cluster runs with: the file's settings, with
    /// the simulator's own switches (fault points, the test knobs) on top.
    pub fn cluster_config(&self) -> Result<ClusterConfig, ringkv_core::ConfigError> {
        let c = &self.cluster;
        let config = ClusterConfig {
            simulation: true,
            unsafe_ack_before_persist: c.unsafe_ack_before_persist,
            unsafe_skip_write_back: c.unsafe_skip_write_back,
            unsafe_drop_every_nth_write: c.unsafe_drop_every_nth_write,
            unsafe_counter_merge_adds: c.unsafe_counter_merge_adds,
            unsafe_ignore_expiry: c.unsafe_ignore_expiry,
            unsafe_paxos_flaw: c.unsafe_paxos_flaw,
            ..c.config.clone()
        };
        config.validate()?;
        Ok(config)
    }

    /// The membership settings when `gossip` is on; `seeds` are the initial ring members.
    pub fn membership_config(&self) -> Result<Option<MembershipConfig>, ringkv_core::ConfigError> {
        let c = &self.cluster;
        if !c.gossip {
            return Ok(None);
        }
        let config = MembershipConfig {
            vnodes_per_node: c.config.vnodes_per_node,
            seeds: (0..c.initial_nodes.unwrap_or(c.nodes))
                .map(ringkv_core::NodeId)
                .collect(),
            ..c.membership.clone()
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// The key distribution.
    pub fn key_distribution(&self) -> KeyDistribution {
        if self.workload.key_distribution == "zipf" {
            KeyDistribution::Zipf(self.workload.zipf_exponent)
        } else {
            KeyDistribution::Uniform
        }
    }

    /// How long a client waits before recording a request indeterminate, milliseconds.
    pub fn client_timeout_ms(&self) -> u64 {
        self.workload.client_timeout_ms.unwrap_or_else(|| {
            let client_latency = self
                .network
                .client_latency_ms
                .get(1)
                .copied()
                .unwrap_or(1.0);
            self.cluster.config.request_timeout_ms + (2.0 * client_latency).ceil() as u64 + 100
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
description = "d"
duration_ms = 1000
settle_ms = 1000
[cluster]
nodes = 3
n = 3
r = 2
w = 2
[workload]
clients = 2
operations = 10
keys = 5
read_fraction = 0.5
value_bytes = [8, 16]
"#;

    #[test]
    fn minimal_scenario_parses_with_defaults() {
        let s = Scenario::parse("t.toml", MINIMAL).expect("valid");
        assert_eq!(s.expect, Expect::Pass);
        assert!(s.check.durability);
        assert_eq!(s.network.latency_ms, vec![1.0, 10.0]);
    }

    #[test]
    fn unknown_keys_name_the_file_and_field() {
        let text = MINIMAL.replace("[workload]", "[workload]\nbogus = 1");
        let e = Scenario::parse("t.toml", &text).expect_err("unknown key");
        let message = e.to_string();
        assert!(message.starts_with("t.toml:"), "{message}");
        assert!(message.contains("bogus"), "{message}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let text = MINIMAL.replace("r = 2", "r = 4");
        let e = Scenario::parse("t.toml", &text).expect_err("r > n");
        assert_eq!(e.field.as_deref(), Some("cluster.r"));
        let text = MINIMAL.replace("read_fraction = 0.5", "read_fraction = 1.5");
        let e = Scenario::parse("t.toml", &text).expect_err("fraction");
        assert_eq!(e.field.as_deref(), Some("workload.read_fraction"));
        let text = format!("{MINIMAL}\n[[fault]]\nat_ms = 5\ncrash = 7\n");
        let e = Scenario::parse("t.toml", &text).expect_err("node 7");
        assert_eq!(e.field.as_deref(), Some("fault[0].crash"));
        let text = format!("{MINIMAL}\n[[fault]]\nat_ms = 5\ncrash = 1\nrestart = 1\n");
        let e = Scenario::parse("t.toml", &text).expect_err("two actions");
        assert_eq!(e.field.as_deref(), Some("fault[0]"));
        let text = format!("{MINIMAL}\n[[fault]]\nat_ms = 5\nwipe = 3\n");
        let e = Scenario::parse("t.toml", &text).expect_err("node 3");
        assert_eq!(e.field.as_deref(), Some("fault[0].wipe"));
    }

    #[test]
    fn core_settings_are_read_from_cluster_and_their_errors_name_the_key() {
        let text = MINIMAL.replace(
            "w = 2",
            "w = 2\nconsistency = \"local_quorum\"\nhint_replay_interval_ms = 50\n\
             record_bytes_max = 2097152\nfanout = 2\ngossip = true",
        );
        let s = Scenario::parse("t.toml", &text).expect("valid");
        let config = s.cluster_config().expect("valid");
        assert_eq!(
            config.consistency,
            Some(ringkv_core::Consistency::LocalQuorum)
        );
        assert_eq!(config.hint_replay_interval_ms, 50);
        assert_eq!(config.record_bytes_max, 2 << 20);
        let membership = s.membership_config().expect("valid").expect("gossip");
        assert_eq!(membership.fanout, 2);
        assert_eq!(membership.vnodes_per_node, config.vnodes_per_node);
        for (line, field, mentions) in [
            ("read_repair = 1", "cluster.read_repair", "boolean"),
            ("consistency = \"quorom\"", "cluster.consistency", "quorom"),
            ("conflict = \"newest\"", "cluster.conflict", "newest"),
            ("fanout = \"x\"", "cluster.fanout", "string"),
            (
                "hint_age_max_ms = 0",
                "cluster.hint_age_max_ms",
                "at least 1",
            ),
        ] {
            let text = MINIMAL.replace("w = 2", &format!("w = 2\n{line}"));
            let e = Scenario::parse("t.toml", &text).expect_err(line);
            assert_eq!(e.field.as_deref(), Some(field), "{line}: {e}");
            assert!(e.reason.contains(mentions), "{line}: {e}");
        }
        // Driver-derived fields and the old spelling of `fanout` are no settings.
        for line in ["simulation = true", "seeds = [1]", "gossip_fanout = 2"] {
            let text = MINIMAL.replace("w = 2", &format!("w = 2\n{line}"));
            let e = Scenario::parse("t.toml", &text).expect_err(line);
            assert!(e.reason.contains("unknown field"), "{line}: {e}");
        }
    }

    #[test]
    fn the_workload_values_must_fit_the_value_limit() {
        let text = MINIMAL.replace("w = 2", "w = 2\nvalue_bytes_max = 12");
        let e = Scenario::parse("t.toml", &text).expect_err("16-byte values past a 12-byte limit");
        assert_eq!(e.field.as_deref(), Some("workload.value_bytes"));
        let text = MINIMAL.replace("w = 2", "w = 2\nvalue_bytes_max = 16");
        let s = Scenario::parse("t.toml", &text).expect("fits");
        assert_eq!(s.cluster_config().expect("valid").value_bytes_max, 16);
    }

    #[test]
    fn combinations_that_refuse_every_request_are_refused() {
        let text = MINIMAL.replace(
            "w = 2",
            "w = 2\nconsistency = \"linearizable\"\nconflict = \"vector-clock\"",
        );
        let e = Scenario::parse("t.toml", &text).expect_err("linearizable + vector clocks");
        assert_eq!(e.field.as_deref(), Some("cluster.consistency"));
        // Core's own validation refuses it (the node's configuration too), naming the fix.
        assert!(e.to_string().contains("conflict = \"lww\""), "{e}");
        let text = MINIMAL.replace("w = 2", "w = 2\nreplicas_per_datacenter = { dc1 = 3 }");
        let e = Scenario::parse("t.toml", &text).expect_err("no dc1");
        assert_eq!(e.field.as_deref(), Some("cluster.replicas_per_datacenter"));
        let text = MINIMAL.replace("operations = 10", "operations = 0");
        let e = Scenario::parse("t.toml", &text).expect_err("nothing to judge");
        assert_eq!(e.field.as_deref(), Some("workload.operations"));
        let text = format!("{MINIMAL}\n[check]\nok_operations_min = 11\n");
        let e = Scenario::parse("t.toml", &text).expect_err("more than issued");
        assert_eq!(e.field.as_deref(), Some("check.ok_operations_min"));
    }

    #[test]
    fn new_knobs_are_checked_where_they_are_read() {
        let text = format!("{MINIMAL}\n[check]\nrejections_min = {{ bussy = 1 }}\n");
        let e = Scenario::parse("t.toml", &text).expect_err("an unknown rejection name");
        assert_eq!(e.field.as_deref(), Some("check.rejections_min"));
        let text = format!("{MINIMAL}\n[check]\nrejections_min = {{ busy = 1 }}\n");
        let s = Scenario::parse("t.toml", &text).expect("a known name");
        assert_eq!(s.check.rejections_min.get("busy"), Some(&1));
        let text = MINIMAL.replace("[workload]", "[workload]\noversized_fraction = 1.5");
        let e = Scenario::parse("t.toml", &text).expect_err("not a fraction");
        assert_eq!(e.field.as_deref(), Some("workload.oversized_fraction"));
        let text = format!("{MINIMAL}\n[network]\nqueue_messages_max = 0\n");
        let e = Scenario::parse("t.toml", &text).expect_err("a queue of nothing");
        assert_eq!(e.field.as_deref(), Some("network.queue_messages_max"));
    }

    #[test]
    fn command_knobs_default_off_and_name_their_field() {
        let s = Scenario::parse("t.toml", MINIMAL).expect("valid");
        assert_eq!(s.workload.interface, "requests");
        assert!(!s.check.siblings);
        let with = |extra: &str| MINIMAL.replace("read_fraction = 0.5", extra);
        let e = Scenario::parse("t.toml", &with("read_fraction = 0.5\ninterface = \"resp\""))
            .expect_err("interface");
        assert_eq!(e.field.as_deref(), Some("workload.interface"));
        let e = Scenario::parse("t.toml", &with("read_fraction = 0.5\nkv_fraction = 2.0"))
            .expect_err("kv_fraction");
        assert_eq!(e.field.as_deref(), Some("workload.kv_fraction"));
        let e = Scenario::parse("t.toml", &format!("{MINIMAL}\n[check]\nsiblings = true\n"))
            .expect_err("siblings in lww mode");
        assert_eq!(e.field.as_deref(), Some("check.siblings"));
    }

    #[test]
    fn the_ci_table_is_read_and_refuses_what_it_cannot_judge() {
        let s = Scenario::parse("t.toml", MINIMAL).expect("valid");
        assert_eq!(s.ci, None, "a scenario outside scenarios/ needs no [ci]");
        let ci = |body: &str| format!("{MINIMAL}\n[ci]\n{body}\n");
        let s = Scenario::parse(
            "t.toml",
            &ci("seeds = 50\ndeterminism_seeds = 10\navailability_min = 0.99\nhints_pending_max = 0"),
        )
        .expect("valid");
        let table = s.ci.expect("[ci] read");
        assert_eq!((table.seeds, table.determinism_seeds), (50, 10));
        assert_eq!(table.availability_min, Some(0.99));
        assert_eq!(
            table.threshold_fields(),
            ["availability_min", "hints_pending_max"]
        );
        let gossip = MINIMAL.replace("w = 2", "w = 2\ngossip = true");
        let text = format!(
            "{gossip}\n[ci]\nseeds = 3\ndown_detections = 2\ndown_detection_ms = [2600, 3800]\n\
             alive_detections = 1\nalive_detection_ms_max = 800\n"
        );
        Scenario::parse("t.toml", &text).expect("detection bounds with gossip");
        for (body, field, mentions) in [
            ("seeds = 10\nbogus = 1", None, "bogus"),
            ("reason = \"slow\"", None, "seeds"),
            ("seeds = 0", Some("ci.reason"), "seeds = 0"),
            ("seeds = 0\nreason = \" \"", Some("ci.reason"), "why"),
            ("seeds = 100001", Some("ci.seeds"), "at most"),
            (
                "seeds = 5\ndeterminism_seeds = 6",
                Some("ci.determinism_seeds"),
                "exceed",
            ),
            (
                "seeds = 5\navailability_min = 1.5",
                Some("ci.availability_min"),
                "[0, 1]",
            ),
            (
                "seeds = 5\ndown_detections = 2",
                Some("ci.down_detections"),
                "gossip",
            ),
            (
                "seeds = 5\ndown_detection_ms = [5, 1]",
                Some("ci.down_detection_ms"),
                "low <= high",
            ),
        ] {
            let e = Scenario::parse("t.toml", &ci(body)).expect_err(body);
            assert_eq!(e.field.as_deref(), field, "{body}: {e}");
            assert!(e.to_string().contains(mentions), "{body}: {e}");
        }
        let violation = MINIMAL.replace(
            "settle_ms = 1000",
            "settle_ms = 1000\nexpect = \"violation\"",
        );
        let text = format!("{violation}\n[ci]\nseeds = 5\nhints_pending_max = 0\n");
        let e = Scenario::parse("t.toml", &text).expect_err("a threshold on a violation");
        assert_eq!(e.field.as_deref(), Some("ci.hints_pending_max"));
        let text = format!("{violation}\n[ci]\nseeds = 5\ndeterminism_seeds = 5\n");
        Scenario::parse("t.toml", &text).expect("a violation can be checked for determinism");
    }

    #[test]
    fn detection_bounds_name_each_miss() {
        let ci = CiSpec {
            seeds: 1,
            reason: None,
            determinism_seeds: 0,
            availability_min: None,
            hints_pending_max: None,
            down_detections: Some(2),
            down_detection_ms: Some(vec![2600, 3800]),
            alive_detections: Some(1),
            alive_detection_ms_max: Some(800),
        };
        assert!(detection_misses(&ci, &[2600.0, 3800.0], &[800.0]).is_empty());
        let misses = detection_misses(&ci, &[2599.5, 3000.0, 3800.5], &[]);
        assert_eq!(misses.len(), 4, "{misses:?}");
        assert!(misses[0].contains("3 crashes seen Down"), "{misses:?}");
        assert!(misses[1].contains("0 restarts seen Alive"), "{misses:?}");
        assert!(misses[2].contains("2599.5 ms"), "{misses:?}");
        assert!(misses[3].contains("3800.5 ms"), "{misses:?}");
        let misses = detection_misses(&ci, &[3000.0, 3000.0], &[801.0]);
        assert_eq!(misses.len(), 1, "{misses:?}");
        assert!(
            misses[0].contains("ci.alive_detection_ms_max = 800"),
            "{misses:?}"
        );
    }

    #[test]
    fn ok_operations_min_defaults_to_one_percent() {
        let s = Scenario::parse("t.toml", MINIMAL).expect("valid");
        assert_eq!(s.ok_operations_min(), 1);
        let text = MINIMAL.replace("operations = 10", "operations = 5000");
        let s = Scenario::parse("t.toml", &text).expect("valid");
        assert_eq!(s.ok_operations_min(), 50);
        let text = format!("{MINIMAL}\n[check]\nok_operations_min = 7\n");
        let s = Scenario::parse("t.toml", &text).expect("valid");
        assert_eq!(s.ok_operations_min(), 7);
    }
}
