//! Durability: every write acknowledged with W is, at the end of the liveness phase, still there
//! on a member of the final ring, or was honestly superseded.
//!
//! Judged per acknowledged write against the durable contents of the final ring's members only:
//! the disk of a removed or decommissioned node is not a copy anyone can read.
//!
//! * lww: some member holds exactly that version, or it was superseded: some member holds a
//!   higher version that is the record of another write of the same key that may have taken
//!   effect after this write began (acknowledged after it began, or indeterminate, whose effect
//!   may land at any time). A higher version whose value no write of this key carried (another
//!   key's record stored under this key) supersedes nothing. When every node's clock agrees (no
//!   skew, drift or jumps), a write acknowledged before this one started that still wins did not
//!   supersede it: with agreeing clocks and a hybrid clock a later write always stamps higher, so
//!   this write is a lost update. With disagreeing clocks that is what last-write-wins does by
//!   design (PITFALLS: "Last-write-wins loses acknowledged writes"; the lww-clock-skew scenario
//!   measures it with the linearizability checker), so only the genuineness of the superseding
//!   record is judged.
//! * vector clocks: some member durably holds the write's dot as a sibling, or the write was
//!   superseded by a later put or delete whose causal context included its dot (and that
//!   supersession reached a member). Nothing else counts as superseding: a dot that vanished
//!   without a write that saw it is a lost write.
//!
//! Every value a member holds under a key must be a value the workload wrote to that key.
//!
//! The final state is read both ways: from each member's durable contents directly, and through
//! the protocol (a read at `all` of every key after the liveness phase), and the two must agree.

use super::Verdict;
use crate::history::{History, HistoryOp, OpKind, OpOutcome};
use crate::workload::{value_id, Workload};
use crate::world::FinalRead;
use bytes::Bytes;
use ringkv_core::version::LwwRecord;
use ringkv_core::{CausalContext, Record, WriteVersion};
use std::collections::{BTreeMap, BTreeSet};

/// Most violations spelled out in the verdict.
const SHOWN_MAX: usize = 5;

/// One member of the final ring and what it holds durably.
pub type MemberContents<'a> = (u32, &'a BTreeMap<Bytes, Record>);

/// Checks the history's acknowledged writes against the final members' durable contents, and the
/// final protocol reads against the merge of those contents.
pub fn check(
    history: &History,
    members: &[MemberContents<'_>],
    workload: &Workload,
    final_reads: &BTreeMap<u32, FinalRead>,
    clocks_agree: bool,
) -> Verdict {
    let mut checked = 0usize;
    let mut lost = Vec::new();
    let written = values_written(history);
    // The ops of each key, in history order: what may supersede a write is looked for among
    // its key's ops only (scanning the whole history per acknowledged write was quadratic).
    let mut by_key: BTreeMap<u32, Vec<&HistoryOp>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key).or_default().push(op);
    }
    let ops_of = |key: u32| by_key.get(&key).map_or(&[][..], Vec::as_slice);
    for op in &history.ops {
        // Increments are judged by the counters check (`checks::counters`).
        if !op.is_write() || op.kind == OpKind::Increment || op.outcome != OpOutcome::Ok {
            continue;
        }
        let Some(version) = op.version else {
            lost.push(format!(
                "client {} write to key {} acknowledged without a version",
                op.client, op.key
            ));
            continue;
        };
        checked += 1;
        let key = workload.key(op.key);
        let records = || members.iter().filter_map(|(_, contents)| contents.get(key));
        let held = match version {
            WriteVersion::Lww(v) => records().any(|record| match record {
                Record::Lww(r) => {
                    r.version == v
                        || (r.version > v && supersedes(ops_of(op.key), op, r, clocks_agree))
                }
                Record::Causal(_) | Record::Counter(_) => false,
            }),
            WriteVersion::Dot(dot) => {
                let as_sibling = records().any(|record| {
                    matches!(record, Record::Causal(r) if r.siblings.iter().any(|(d, _)| *d == dot))
                });
                let superseded = superseders(ops_of(op.key), op.key)
                    .any(|context| context.0.contains(dot))
                    && records().any(|record| record.includes(&version));
                as_sibling || superseded
            }
            WriteVersion::Counter(_) => records().any(|record| record.includes(&version)),
        };
        if !held {
            lost.push(format!(
                "{:?} of {} (value id {}) acknowledged at {:.3}ms by {} replicas, held by no member of the final ring: {version:?}{}",
                op.kind,
                String::from_utf8_lossy(key),
                op.value,
                op.complete_ns.unwrap_or(0) as f64 / 1e6,
                op.acks,
                instead(history, records().collect(), op.key),
            ));
        }
    }
    let keys = u32::try_from(workload.key_count()).unwrap_or(u32::MAX);
    for index in 0..keys {
        let key = workload.key(index);
        for (node, contents) in members {
            let Some(record) = contents.get(key) else {
                continue;
            };
            for value in record.live_values() {
                let id = value_id(&value);
                if !written.contains(&(index, id)) {
                    lost.push(format!(
                        "n{node} holds under {} value id {id}, which no write of that key carried",
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
        let merged = members
            .iter()
            .filter_map(|(_, contents)| contents.get(key))
            .fold(None::<Record>, |acc, r| {
                Some(acc.map_or_else(|| r.clone(), |a| a.merge(r)))
            });
        let mut direct: Vec<u64> = merged
            .map(|r| r.live_values().iter().map(|v| value_id(v)).collect())
            .unwrap_or_default();
        direct.sort_unstable();
        match final_reads.get(&index) {
            Some(FinalRead::Values(ids)) => {
                let mut read = ids.clone();
                read.sort_unstable();
                if read != direct {
                    lost.push(format!(
                        "a read at `all` of {} returned {read:?} but the replicas hold {direct:?}",
                        String::from_utf8_lossy(key)
                    ));
                }
            }
            Some(FinalRead::Failed(why)) => lost.push(format!(
                "the final read at `all` of {} failed: {why}",
                String::from_utf8_lossy(key)
            )),
            None => lost.push(format!(
                "the final read at `all` of {} got no answer",
                String::from_utf8_lossy(key)
            )),
        }
    }
    if lost.is_empty() {
        Verdict::Pass(format!(
            "{checked} acknowledged writes held by members of the final ring; final reads of {keys} keys agree with the replicas"
        ))
    } else {
        let shown: Vec<String> = lost.iter().take(SHOWN_MAX).cloned().collect();
        Verdict::Fail(format!(
            "{} problems with {checked} acknowledged writes; first: {}",
            lost.len(),
            shown.join("; ")
        ))
    }
}

/// What the members hold instead of a lost LWW write, and when the write that made it was
/// invoked and answered, so a lost update (an earlier write that still wins) can be told from a
/// lost copy at a glance.
fn instead(history: &History, records: Vec<&Record>, key: u32) -> String {
    let Some(best) = records
        .iter()
        .filter_map(|record| match record {
            Record::Lww(r) => Some(r),
            Record::Causal(_) | Record::Counter(_) => None,
        })
        .max_by_key(|r| r.version)
    else {
        return "; the members hold nothing for it".into();
    };
    let id = best.value.as_deref().map_or(0, value_id);
    // A put is known by its value; of the deletes, the one acknowledged with this version.
    let writer = history.ops.iter().find(|op| {
        op.key == key
            && match &best.value {
                Some(_) => op.kind == OpKind::Put && op.value == id,
                None => {
                    op.kind == OpKind::Delete && op.version == Some(WriteVersion::Lww(best.version))
                }
            }
    });
    let when = writer.map_or(String::new(), |w| {
        format!(
            ", written by client {} from {:.3}ms to {} ({:?})",
            w.client,
            w.invoke_ns as f64 / 1e6,
            w.complete_ns
                .map_or("no answer".into(), |c| format!("{:.3}ms", c as f64 / 1e6)),
            w.outcome
        )
    });
    format!(
        "; the members hold value id {id} at {:?}{when}",
        best.version
    )
}

/// (key, value id) of every put the workload sent, whatever its outcome.
fn values_written(history: &History) -> BTreeSet<(u32, u64)> {
    history
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::Put)
        .map(|op| (op.key, op.value))
        .collect()
}

/// True if `record` (a higher version of `op`'s key than `op` wrote) is the record of another
/// write of that key which may have taken effect after `op` began (acknowledged after it began,
/// or indeterminate; with disagreeing clocks, any write that may have taken effect): only such a
/// write may honestly have replaced `op`. `ops` holds (at least) every op of `op`'s key.
fn supersedes(ops: &[&HistoryOp], op: &HistoryOp, record: &LwwRecord, clocks_agree: bool) -> bool {
    ops.iter().any(|&other| {
        let same_write = match &record.value {
            Some(value) => other.kind == OpKind::Put && other.value == value_id(value),
            None => other.kind == OpKind::Delete,
        };
        other.key == op.key
            && !std::ptr::eq(other, op)
            && same_write
            && match other.outcome {
                // Acknowledged: it took effect before its reply, so with agreeing clocks it
                // supersedes only if it had not finished when this write began.
                OpOutcome::Ok => {
                    !clocks_agree || other.complete_ns.is_none_or(|done| done > op.invoke_ns)
                }
                // Indeterminate: its effect may land at any time after its invocation (a hint
                // replayed, a read repair), so it may come after this write whatever its reply.
                OpOutcome::Indeterminate => true,
                OpOutcome::Failed => false,
            }
            && match (other.outcome, other.version) {
                (OpOutcome::Ok, Some(WriteVersion::Lww(v))) => v == record.version,
                _ => true,
            }
    })
}

/// Contexts carried by writes to key `key` that may have taken effect (ok or indeterminate), of
/// `ops`, which holds (at least) every op of that key.
fn superseders<'a>(
    ops: &'a [&'a HistoryOp],
    key: u32,
) -> impl Iterator<Item = &'a CausalContext> + 'a {
    ops.iter()
        .filter(move |op| op.key == key && op.is_write() && op.outcome != OpOutcome::Failed)
        .filter_map(|op| op.context.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::version::LwwVersion;
    use ringkv_core::NodeId;

    fn version(ts: u64) -> LwwVersion {
        LwwVersion {
            timestamp_micros: ts,
            node: NodeId(0),
            nonce: 0,
        }
    }

    fn value(id: u64) -> Bytes {
        Bytes::copy_from_slice(&id.to_le_bytes())
    }

    fn put(key: u32, id: u64, ts: u64, invoke_ms: u64, complete_ms: u64) -> HistoryOp {
        HistoryOp {
            client: 0,
            key,
            kind: OpKind::Put,
            value: id,
            read: Vec::new(),
            delta: 0,
            version: Some(WriteVersion::Lww(version(ts))),
            context: None,
            acks: 2,
            coordinator: 0,
            expires: None,
            invoke_ns: invoke_ms * 1_000_000,
            complete_ns: Some(complete_ms * 1_000_000),
            outcome: OpOutcome::Ok,
            during_faults: true,
            command: None,
        }
    }

    fn holding(key: &Bytes, id: u64, ts: u64) -> BTreeMap<Bytes, Record> {
        BTreeMap::from([(
            key.clone(),
            Record::Lww(LwwRecord {
                version: version(ts),
                value: Some(value(id)),
                expires_at_micros: None,
            }),
        )])
    }

    fn workload() -> Workload {
        let text = r#"
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
clients = 1
operations = 10
keys = 2
read_fraction = 0.5
value_bytes = [8, 16]
"#;
        Workload::new(&crate::Scenario::parse("t.toml", text).expect("valid"))
    }

    /// Final reads that agree with `contents` for both keys.
    fn reads(found: &[(u32, u64)]) -> BTreeMap<u32, FinalRead> {
        (0..2)
            .map(|k| {
                let ids = found.iter().filter(|(key, _)| *key == k).map(|(_, id)| *id);
                (k, FinalRead::Values(ids.collect()))
            })
            .collect()
    }

    #[test]
    fn exact_version_held_passes() {
        let w = workload();
        let history = History {
            commands: Vec::new(),
            scans: Vec::new(),
            ops: vec![put(0, 1, 100, 0, 5)],
        };
        let disk = holding(w.key(0), 1, 100);
        let verdict = check(&history, &[(0, &disk)], &w, &reads(&[(0, 1)]), true);
        assert!(matches!(verdict, Verdict::Pass(_)), "{verdict}");
    }

    #[test]
    fn a_later_write_that_won_supersedes() {
        let w = workload();
        let history = History {
            commands: Vec::new(),
            scans: Vec::new(),
            ops: vec![put(0, 1, 100, 0, 5), put(0, 2, 200, 10, 15)],
        };
        let disk = holding(w.key(0), 2, 200);
        let verdict = check(&history, &[(0, &disk)], &w, &reads(&[(0, 2)]), true);
        assert!(matches!(verdict, Verdict::Pass(_)), "{verdict}");
    }

    #[test]
    fn an_earlier_write_with_a_higher_version_is_a_lost_update() {
        let w = workload();
        // Value 2 completed before value 1 began, yet carries the higher version: value 1 was
        // acknowledged and then silently lost.
        let history = History {
            commands: Vec::new(),
            scans: Vec::new(),
            ops: vec![put(0, 2, 200, 0, 5), put(0, 1, 100, 10, 15)],
        };
        let disk = holding(w.key(0), 2, 200);
        let verdict = check(&history, &[(0, &disk)], &w, &reads(&[(0, 2)]), true);
        assert!(
            matches!(&verdict, Verdict::Fail(why) if why.contains("value id 1")),
            "{verdict}"
        );
    }

    #[test]
    fn with_disagreeing_clocks_an_earlier_write_may_win_by_design() {
        let w = workload();
        // The same history as above, but clocks disagree: last-write-wins keeps the higher stamp.
        let history = History {
            commands: Vec::new(),
            scans: Vec::new(),
            ops: vec![put(0, 2, 200, 0, 5), put(0, 1, 100, 10, 15)],
        };
        let disk = holding(w.key(0), 2, 200);
        let verdict = check(&history, &[(0, &disk)], &w, &reads(&[(0, 2)]), false);
        assert!(matches!(verdict, Verdict::Pass(_)), "{verdict}");
    }

    #[test]
    fn an_indeterminate_write_may_land_after_its_reply() {
        let w = workload();
        let mut earlier = put(0, 2, 200, 0, 5);
        earlier.outcome = OpOutcome::Indeterminate;
        earlier.version = None;
        let history = History {
            commands: Vec::new(),
            scans: Vec::new(),
            ops: vec![earlier, put(0, 1, 100, 10, 15)],
        };
        let disk = holding(w.key(0), 2, 200);
        let verdict = check(&history, &[(0, &disk)], &w, &reads(&[(0, 2)]), true);
        assert!(matches!(verdict, Verdict::Pass(_)), "{verdict}");
    }

    #[test]
    fn another_keys_record_supersedes_nothing() {
        let w = workload();
        // Key 1's value 7 (with a higher version) is stored under key 0.
        let history = History {
            commands: Vec::new(),
            scans: Vec::new(),
            ops: vec![put(0, 1, 100, 0, 5), put(1, 7, 300, 0, 5)],
        };
        let mut disk = holding(w.key(0), 7, 300);
        disk.extend(holding(w.key(1), 7, 300));
        let verdict = check(&history, &[(0, &disk)], &w, &reads(&[(0, 7), (1, 7)]), true);
        let Verdict::Fail(why) = &verdict else {
            panic!("{verdict}");
        };
        assert!(why.contains("value id 1"), "{why}");
        assert!(why.contains("no write of that key carried"), "{why}");
    }

    #[test]
    fn only_members_of_the_final_ring_count() {
        let w = workload();
        let history = History {
            commands: Vec::new(),
            scans: Vec::new(),
            ops: vec![put(0, 1, 100, 0, 5)],
        };
        // The only copy is on a removed node, which the caller leaves out.
        let verdict = check(&history, &[], &w, &reads(&[]), true);
        assert!(
            matches!(&verdict, Verdict::Fail(why) if why.contains("held by no member")),
            "{verdict}"
        );
    }
}
