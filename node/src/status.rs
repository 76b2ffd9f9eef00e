//! The node's status at a glance: the document behind the status page (`GET /status.json`, shown
//! live by `GET /`) and the table `ringkv admin status` prints.
//!
//! The request, hint, anti-entropy and storage figures are read back from the node's own
//! Prometheus exposition ([`crate::metrics::Metrics::render`]) by metric name, not from the
//! counters' fields: the metric names are the contract dashboards and alerts already depend on,
//! so the status page keeps working whatever type holds the counters behind them.

use crate::admin::MemberRow;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The operations the request table shows, in the order it shows them.
pub const OPERATIONS: [&str; 3] = ["get", "put", "delete"];

/// The status document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// The node that answered.
    pub node: u32,
    /// Its ring version: changes in the ring log.
    pub ring_changes: u64,
    /// Its ring version's fingerprint, 16 hex digits.
    pub ring_fingerprint: String,
    /// Replicas per key.
    pub replicas: usize,
    /// Every node it knows (ring members first), as [`crate::admin::member_rows`] derives them.
    pub members: Vec<MemberRow>,
    /// Client requests this node coordinated, per operation (totals since start).
    pub requests: Vec<OperationStatus>,
    /// Requests being coordinated now.
    pub requests_in_flight: u64,
    /// Hinted handoff held on this node for other owners.
    pub hints: HintStatus,
    /// Anti-entropy schedule and progress.
    pub anti_entropy: AntiEntropyStatus,
    /// The storage engine.
    pub storage: StorageStatus,
}

/// One operation's requests since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationStatus {
    /// `get`, `put` or `delete`.
    pub operation: String,
    /// Found, or written.
    pub ok: u64,
    /// A read that found nothing.
    pub not_found: u64,
    /// A read short of its quorum.
    pub unavailable: u64,
    /// A write short of its quorum: it may or may not have taken effect.
    pub indeterminate: u64,
    /// Refused before any effect.
    pub rejected: u64,
    /// Median latency over all requests since start (bucket-interpolated), if any.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, likewise.
    pub p99_ms: Option<f64>,
}

impl OperationStatus {
    /// Every request of this operation, whatever its outcome.
    pub fn total(&self) -> u64 {
        self.ok + self.not_found + self.unavailable + self.indeterminate + self.rejected
    }
}

/// Hints held on this node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HintStatus {
    /// Hints held now, all owners.
    pub pending: u64,
    /// Their bytes.
    pub bytes_pending: u64,
    /// Hints the owner acknowledged since start.
    pub delivered: u64,
    /// Hints deleted unsent after their maximum age (left to anti-entropy).
    pub expired: u64,
    /// Hints refused because an owner's queue was full (left to anti-entropy).
    pub overflowed: u64,
    /// The queue of each owner that has hints waiting here, in owner order.
    pub queues: Vec<HintQueue>,
}

/// The hints one owner has waiting on this node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HintQueue {
    /// The owner (the node the hints are for).
    pub target: u32,
    /// Hints waiting.
    pub hints: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Anti-entropy on this node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AntiEntropyStatus {
    /// Time between rounds; 0 when periodic anti-entropy is off.
    pub interval_ms: u64,
    /// Ranges compared per round.
    pub ranges_per_round: usize,
    /// Ranges this node replicates.
    pub ranges_replicated: usize,
    /// Rounds run since start.
    pub rounds: u64,
    /// Ranges compared since start.
    pub ranges_compared: u64,
    /// Ranges a peer found different since start.
    pub ranges_differing: u64,
    /// Records received that changed local storage.
    pub records_repaired: u64,
}

/// The storage engine's pressure signs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// Tables in level 0 now.
    pub level0_tables: u64,
    /// Writes that stalled on level 0 since start.
    pub write_stalls: u64,
    /// 99th percentile fsync latency since start, if any.
    pub sync_p99_ms: Option<f64>,
}

/// What the snapshot needs besides the metrics: the node's identity, membership and schedule.
#[derive(Clone, Debug)]
pub struct StatusInputs {
    /// This node.
    pub node: u32,
    /// Ring version: changes.
    pub ring_changes: u64,
    /// Ring version: fingerprint.
    pub ring_fingerprint: u64,
    /// Replicas per key.
    pub replicas: usize,
    /// The member rows.
    pub members: Vec<MemberRow>,
    /// Anti-entropy interval (0: off).
    pub anti_entropy_interval_ms: u64,
    /// Ranges per anti-entropy round.
    pub anti_entropy_ranges_per_round: usize,
    /// Ranges this node replicates.
    pub ranges_replicated: usize,
}

impl StatusSnapshot {
    /// Builds the snapshot from `inputs` and the node's Prometheus text `exposition`. A metric
    /// missing from the text reads as zero (or no latency): the page degrades, never fails.
    pub fn build(inputs: StatusInputs, exposition: &str) -> StatusSnapshot {
        let samples = parse_exposition(exposition);
        let total = |name: &str, labels: &[(&str, &str)]| sum(&samples, name, labels) as u64;
        let requests = OPERATIONS
            .iter()
            .map(|&operation| {
                let outcome = |outcome: &str| {
                    total(
                        "ringkv_requests_total",
                        &[("operation", operation), ("outcome", outcome)],
                    )
                };
                let latency = |q: f64| {
                    quantile_ms(
                        &samples,
                        "ringkv_request_duration_seconds_bucket",
                        &[("operation", operation)],
                        q,
                    )
                };
                OperationStatus {
                    operation: operation.to_string(),
                    ok: outcome("ok"),
                    not_found: outcome("not_found"),
                    unavailable: outcome("unavailable"),
                    indeterminate: outcome("indeterminate"),
                    rejected: outcome("rejected"),
                    p50_ms: latency(0.5),
                    p99_ms: latency(0.99),
                }
            })
            .collect();
        StatusSnapshot {
            node: inputs.node,
            ring_changes: inputs.ring_changes,
            ring_fingerprint: format!("{:016x}", inputs.ring_fingerprint),
            replicas: inputs.replicas,
            members: inputs.members,
            requests,
            requests_in_flight: total("ringkv_operations_in_flight", &[]),
            hints: HintStatus {
                pending: total("ringkv_hints_pending", &[]),
                bytes_pending: total("ringkv_hint_bytes_pending", &[]),
                delivered: total("ringkv_hints_delivered_total", &[]),
                expired: total("ringkv_hints_expired_total", &[]),
                overflowed: total("ringkv_hints_overflowed_total", &[]),
                queues: hint_queues(&samples),
            },
            anti_entropy: AntiEntropyStatus {
                interval_ms: inputs.anti_entropy_interval_ms,
                ranges_per_round: inputs.anti_entropy_ranges_per_round,
                ranges_replicated: inputs.ranges_replicated,
                rounds: total("ringkv_anti_entropy_rounds_total", &[]),
                ranges_compared: total("ringkv_anti_entropy_ranges_compared_total", &[]),
                ranges_differing: total("ringkv_anti_entropy_ranges_differing_total", &[]),
                records_repaired: total("ringkv_anti_entropy_records_repaired_total", &[]),
            },
            storage: StorageStatus {
                level0_tables: total("ringkv_storage_level0_tables", &[]),
                write_stalls: total("ringkv_storage_write_stalls_total", &[]),
                sync_p99_ms: quantile_ms(
                    &samples,
                    "ringkv_storage_sync_duration_seconds_bucket",
                    &[],
                    0.99,
                ),
            },
        }
    }

    /// The document as JSON (one line and a newline).
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail; a float that is not
        // finite would be written as null by serde_json, never refused.
        let mut text = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        text.push('\n');
        text
    }

    /// A nodetool-style text table: the ring, then requests, hints, anti-entropy and storage.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "node {}   ring version {} changes ({})   n = {}",
            self.node, self.ring_changes, self.ring_fingerprint, self.replicas
        );
        out.push('\n');
        let mut rows = vec![[
            "id",
            "ring",
            "status",
            "state",
            "datacenter",
            "rack",
            "weight",
            "vnodes",
            "owns",
            "address",
        ]
        .map(str::to_string)];
        for m in &self.members {
            rows.push([
                if m.id == self.node {
                    format!("{}*", m.id)
                } else {
                    m.id.to_string()
                },
                if m.in_ring { "member" } else { "outside" }.to_string(),
                m.status.clone(),
                m.state.clone(),
                m.datacenter.clone().unwrap_or_else(|| "-".to_string()),
                m.rack.clone().unwrap_or_else(|| "-".to_string()),
                m.weight.map_or("-".to_string(), |w| w.to_string()),
                m.vnodes.to_string(),
                format!("{:.1}%", m.ownership * 100.0),
                m.addr.clone().unwrap_or_else(|| "-".to_string()),
            ]);
        }
        render_columns(&mut out, &rows);
        out.push('\n');
        let mut rows = vec![[
            "operation",
            "requests",
            "ok",
            "not_found",
            "unavailable",
            "indeterminate",
            "rejected",
            "p50",
            "p99",
        ]
        .map(str::to_string)];
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        for r in &self.requests {
            rows.push([
                r.operation.clone(),
                r.total().to_string(),
                r.ok.to_string(),
                r.not_found.to_string(),
                r.unavailable.to_string(),
                r.indeterminate.to_string(),
                r.rejected.to_string(),
                ms(r.p50_ms),
                ms(r.p99_ms),
            ]);
        }
        render_columns(&mut out, &rows);
        out.push('\n');
        let h = &self.hints;
        let _ = writeln!(out, "in flight      {} requests", self.requests_in_flight);
        let _ = writeln!(
            out,
            "hints          {} pending ({} bytes); {} delivered, {} expired, {} overflowed",
            h.pending, h.bytes_pending, h.delivered, h.expired, h.overflowed
        );
        for queue in &h.queues {
            let _ = writeln!(
                out,
                "  for node {:<6} {} hints ({} bytes)",
                queue.target, queue.hints, queue.bytes
            );
        }
        let a = &self.anti_entropy;
        let schedule = if a.interval_ms == 0 {
            "off".to_string()
        } else {
            format!(
                "every {} ms, {} ranges a round",
                a.interval_ms, a.ranges_per_round
            )
        };
        let _ =
            writeln!(
            out,
            "anti-entropy   {schedule}; {} ranges replicated; {} rounds, {} ranges compared, {} \
             differing, {} records repaired",
            a.ranges_replicated, a.rounds, a.ranges_compared, a.ranges_differing, a.records_repaired
        );
        let s = &self.storage;
        let _ = writeln!(
            out,
            "storage        {} level-0 tables, {} write stalls, fsync p99 {}",
            s.level0_tables,
            s.write_stalls,
            ms(s.sync_p99_ms)
        );
        out
    }
}

/// The per-owner hint gauges, in owner order.
fn hint_queues(samples: &[Sample]) -> Vec<HintQueue> {
    let mut queues: Vec<HintQueue> = Vec::new();
    for sample in samples {
        let is_count = sample.name == "ringkv_hints_pending_by_target";
        if !is_count && sample.name != "ringkv_hint_bytes_pending_by_target" {
            continue;
        }
        let Some(target) = sample.label("target").and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let index = match queues.iter().position(|q| q.target == target) {
            Some(index) => index,
            None => {
                queues.push(HintQueue {
                    target,
                    ..HintQueue::default()
                });
                queues.len() - 1
            }
        };
        let value = sample.value.max(0.0) as u64;
        if is_count {
            queues[index].hints = value;
        } else {
            queues[index].bytes = value;
        }
    }
    queues.sort_by_key(|q| q.target);
    queues
}

/// Left-aligned columns two spaces apart, widths from the widest cell.
fn render_columns<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name (with its `_bucket`, `_sum` or `_count` suffix).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a text exposition; comments and lines that do not parse are skipped.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        loop {
            // A label: key="value" with \\, \" and \n escapes; `,` between, `}` to close.
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            if c == ',' || c == ' ' {
                continue;
            }
            let eq = inner[start..].find('=')? + start;
            let key = inner[start..eq].trim().to_string();
            while chars.next()?.0 < eq {}
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse::<f64>().ok()?,
    };
    (!name.is_empty()).then(|| Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn matches(sample: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.name == name && labels.iter().all(|(k, v)| sample.label(k) == Some(*v))
}

/// The sum of every sample of `name` carrying `labels` (other labels summed over).
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| matches(s, name, labels) && s.value.is_finite())
        .map(|s| s.value)
        .sum()
}

/// The `q` quantile in milliseconds of the histogram whose `_bucket` series is `bucket_name`,
/// over the samples carrying `labels` (buckets of equal bound summed); `None` with no
/// observations.
pub fn quantile_ms(
    samples: &[Sample],
    bucket_name: &str,
    labels: &[(&str, &str)],
    q: f64,
) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for sample in samples.iter().filter(|s| matches(s, bucket_name, labels)) {
        let bound = match sample.label("le")? {
            "+Inf" => f64::INFINITY,
            text => text.parse::<f64>().ok()?,
        };
        match buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, count)) => *count += sample.value,
            None => buckets.push((bound, sample.value)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    histogram_quantile(q, &buckets).map(|seconds| seconds * 1000.0)
}

/// Prometheus's `histogram_quantile` over cumulative `(upper bound, count)` buckets sorted by
/// bound, the last `+Inf`: linear within the bucket the rank falls in; a rank in the `+Inf`
/// bucket answers the highest finite bound (all that is known). `None` with no observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    // `total` may be NaN from a malformed exposition: only a positive count has a quantile.
    if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (bound, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_labels_escapes_and_bounds() {
        let text = "# HELP x y\n# TYPE x counter\n\
                    ringkv_requests_total{node=\"1\",operation=\"get\",level=\"one\",outcome=\"ok\"} 7\n\
                    weird{a=\"q\\\"uote\\\\,}\"} 2.5\n\
                    plain 3\n\
                    h_bucket{le=\"+Inf\"} 4\n\
                    broken{a=\"1\" 2\n\
                    novalue{a=\"1\"}\n";
        let samples = parse_exposition(text);
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(samples[0].label("outcome"), Some("ok"));
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[1].label("a"), Some("q\"uote\\,}"));
        assert_eq!(samples[2].name, "plain");
        assert_eq!(samples[3].label("le"), Some("+Inf"));
    }

    #[test]
    fn sums_filter_by_label() {
        let samples = parse_exposition(
            "r{operation=\"get\",outcome=\"ok\",level=\"one\"} 2\n\
             r{operation=\"get\",outcome=\"ok\",level=\"all\"} 3\n\
             r{operation=\"put\",outcome=\"ok\",level=\"one\"} 5\n",
        );
        assert_eq!(sum(&samples, "r", &[("operation", "get")]), 5.0);
        assert_eq!(sum(&samples, "r", &[("outcome", "ok")]), 10.0);
        assert_eq!(sum(&samples, "r", &[("operation", "delete")]), 0.0);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        // 10 observations at or below 1 ms, 90 between 1 and 2 ms.
        let buckets = [(0.001, 10.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        let p50 = histogram_quantile(0.5, &buckets).expect("observations");
        assert!((p50 - (0.001 + 0.001 * 40.0 / 90.0)).abs() < 1e-12, "{p50}");
        assert_eq!(histogram_quantile(0.05, &buckets), Some(0.0005));
        // Past the last finite bound all that is known is that bound.
        let tail = [(0.001, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.99, &tail), Some(0.001));
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 0.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[]), None);
    }

    fn inputs() -> StatusInputs {
        StatusInputs {
            node: 1,
            ring_changes: 3,
            ring_fingerprint: 0xab,
            replicas: 3,
            members: vec![MemberRow {
                id: 1,
                in_ring: true,
                status: "alive".into(),
                state: "up".into(),
                addr: Some("127.0.0.1:7380".into()),
                datacenter: Some("dc1".into()),
                rack: Some("r1".into()),
                weight: Some(1),
                vnodes: 8,
                ownership: 1.0,
            }],
            anti_entropy_interval_ms: 1000,
            anti_entropy_ranges_per_round: 4,
            ranges_replicated: 16,
        }
    }

    #[test]
    fn the_snapshot_reads_the_metrics_by_name() {
        let metrics = crate::metrics::Metrics::default();
        use crate::metrics::{Level, Operation, Outcome};
        let ms = std::time::Duration::from_millis;
        for _ in 0..9 {
            metrics.record_request(Operation::Put, Level::Quorum, Outcome::Ok, 2, ms(3));
        }
        metrics.record_request(
            Operation::Put,
            Level::One,
            Outcome::Indeterminate,
            0,
            ms(400),
        );
        metrics.repair.hints_pending.set(5);
        metrics
            .repair
            .set_pending_by_target(&[(3, 4, 400), (2, 1, 100)]);
        metrics.storage_level0_tables.set(2);
        let snapshot = StatusSnapshot::build(inputs(), &metrics.render("1"));
        let put = &snapshot.requests[1];
        assert_eq!(put.operation, "put");
        assert_eq!((put.ok, put.indeterminate, put.total()), (9, 1, 10));
        let p50 = put.p50_ms.expect("latency");
        assert!((2.5..=5.0).contains(&p50), "{p50}");
        let p99 = put.p99_ms.expect("latency");
        assert!((250.0..=500.0).contains(&p99), "{p99}");
        assert_eq!(snapshot.requests[0].p99_ms, None, "no gets yet");
        assert_eq!(snapshot.hints.pending, 5);
        let queues: Vec<(u32, u64, u64)> = snapshot
            .hints
            .queues
            .iter()
            .map(|q| (q.target, q.hints, q.bytes))
            .collect();
        assert_eq!(queues, [(2, 1, 100), (3, 4, 400)]);
        assert!(
            snapshot
                .to_table()
                .contains("  for node 3      4 hints (400 bytes)"),
            "{}",
            snapshot.to_table()
        );
        assert_eq!(snapshot.storage.level0_tables, 2);
        let back: StatusSnapshot = serde_json::from_str(&snapshot.to_json()).expect("json");
        assert_eq!(back, snapshot);
    }

    #[test]
    fn the_table_has_a_row_per_member_and_per_operation() {
        let mut input = inputs();
        let mut spare = input.members[0].clone();
        spare.id = 4;
        spare.in_ring = false;
        spare.state = "unreachable".into();
        input.members.push(spare);
        let table = StatusSnapshot::build(input, "").to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[2].starts_with("id "), "{table}");
        assert!(
            lines[3].starts_with("1* ") && lines[3].contains("member"),
            "{table}"
        );
        assert!(
            lines[4].starts_with("4 ") && lines[4].contains("outside"),
            "{table}"
        );
        assert!(lines[4].contains("unreachable"), "{table}");
        for op in OPERATIONS {
            assert!(table.lines().any(|l| l.starts_with(op)), "{table}");
        }
        assert!(table.contains("anti-entropy   every 1000 ms"), "{table}");
    }
}
