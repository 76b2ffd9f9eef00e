//! Durability: every write acknowledged with W is, at the end of the liveness phase, still there.
//!
//! * lww: some replica durably holds that version or a higher one.
//! * vector clocks: some replica durably holds the write's dot as a sibling, or the write was
//!   superseded by a later put or delete whose causal context included its dot (and that
//!   supersession reached a replica). Nothing else counts as superseding: a dot that vanished
//!   without a write that saw it is a lost write.
//!
//! The final state is read both ways: from each replica's durable contents directly, and through
//! the protocol (a read at `all` of every key after the liveness phase), and the two must agree.

use super::Verdict;
use crate::history::{History, OpOutcome};
use crate::workload::{value_id, Workload};
use crate::world::FinalRead;
use bytes::Bytes;
use ringkv_core::{CausalContext, Record, WriteVersion};
use std::collections::BTreeMap;

/// Most violations spelled out in the verdict.
const SHOWN_MAX: usize = 5;

/// Checks the history's acknowledged writes against the replicas' durable contents, and the
/// final protocol reads against the merge of those contents.
pub fn check(
    history: &History,
    durable: &[&BTreeMap<Bytes, Record>],
    workload: &Workload,
    final_reads: &BTreeMap<u32, FinalRead>,
) -> Verdict {
    let mut checked = 0usize;
    let mut lost = Vec::new();
    for op in &history.ops {
        if !op.is_write() || op.outcome != OpOutcome::Ok {
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
        let includes = |contents: &&BTreeMap<Bytes, Record>| {
            contents
                .get(key)
                .is_some_and(|record| record.includes(&version))
        };
        let held = match version {
            WriteVersion::Lww(_) => durable.iter().any(includes),
            WriteVersion::Dot(dot) => {
                let as_sibling = durable.iter().any(|contents| {
                    matches!(contents.get(key), Some(Record::Causal(r)) if r.siblings.iter().any(|(d, _)| *d == dot))
                });
                let superseded = superseders(history, op.key)
                    .any(|context| context.0.contains(dot))
                    && durable.iter().any(includes);
                as_sibling || superseded
            }
        };
        if !held {
            lost.push(format!(
                "{:?} of {} (value id {}) acknowledged at {:.3}ms by {} replicas, held by none: {version:?}",
                op.kind,
                String::from_utf8_lossy(key),
                op.value,
                op.complete_ns.unwrap_or(0) as f64 / 1e6,
                op.acks,
            ));
        }
    }
    let keys = u32::try_from(workload.key_count()).unwrap_or(u32::MAX);
    for index in 0..keys {
        let key = workload.key(index);
        let merged = durable
            .iter()
            .filter_map(|contents| contents.get(key))
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
            "{checked} acknowledged writes held; final reads of {keys} keys agree with the replicas"
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

/// Contexts carried by writes to key `key` that may have taken effect (ok or indeterminate).
fn superseders(history: &History, key: u32) -> impl Iterator<Item = &CausalContext> {
    history
        .ops
        .iter()
        .filter(move |op| op.key == key && op.is_write() && op.outcome != OpOutcome::Failed)
        .filter_map(|op| op.context.as_ref())
}
