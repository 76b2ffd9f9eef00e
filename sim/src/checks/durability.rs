//! Durability: every write acknowledged with W is, at the end of the liveness phase, held durably
//! by at least one replica as that version or a newer one (one that includes it).

use super::Verdict;
use crate::history::{History, OpOutcome};
use crate::workload::Workload;
use bytes::Bytes;
use ringkv_core::Record;
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
        let held = durable.iter().any(|contents| {
            contents
                .get(key)
                .is_some_and(|record| record.includes(&version))
        });
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
