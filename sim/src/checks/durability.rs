//! Durability: every write acknowledged with W is, at the end of the liveness phase, still there.
//!
//! * lww: some replica durably holds that version or a higher one.
//! * vector clocks: some replica durably holds the write's dot as a sibling, or the write was
//!   superseded by a later put or delete whose causal context included its dot (and that
//!   supersession reached a replica). Nothing else counts as superseding: a dot that vanished
//!   without a write that saw it is a lost write.

use super::Verdict;
use crate::history::{History, OpOutcome};
use crate::workload::Workload;
use bytes::Bytes;
use ringkv_core::{CausalContext, Record, WriteVersion};
use std::collections::BTreeMap;

/// Most violations spelled out in the verdict.
const SHOWN_MAX: usize = 5;

/// Checks the history's acknowledged writes against the replicas' durable contents.
pub fn check(
    history: &History,
    durable: &[&BTreeMap<Bytes, Record>],
    workload: &Workload,
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
    if lost.is_empty() {
        Verdict::Pass(format!("{checked} acknowledged writes held"))
    } else {
        let shown: Vec<String> = lost.iter().take(SHOWN_MAX).cloned().collect();
        Verdict::Fail(format!(
            "{} of {checked} acknowledged writes lost; first: {}",
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
