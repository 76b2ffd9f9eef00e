//! Convergence: at the end of the liveness phase, every replica of every key holds the same
//! durable record (the same version, or the same sibling set and clock).

use super::Verdict;
use crate::workload::Workload;
use bytes::Bytes;
use ringkv_core::{Record, Ring};
use std::collections::BTreeMap;

/// Most diverged keys spelled out.
const SHOWN_MAX: usize = 3;

/// Compares the replicas of every workload key. `durable[i]` is node i's durable contents.
pub fn check(
    ring: &Ring,
    n: u8,
    durable: &[&BTreeMap<Bytes, Record>],
    workload: &Workload,
    keys: u32,
    settled_ms: f64,
) -> Verdict {
    let mut diverged = Vec::new();
    for index in 0..keys {
        let key = workload.key(index);
        let replicas = ring.preference_list(key, usize::from(n));
        let records: Vec<Option<&Record>> = replicas
            .iter()
            .map(|r| durable.get(r.0 as usize).and_then(|c| c.get(key)))
            .collect();
        if records.windows(2).any(|pair| pair[0] != pair[1]) {
            let held: Vec<String> = replicas
                .iter()
                .zip(&records)
                .map(|(node, record)| format!("{node}: {}", describe(*record)))
                .collect();
            diverged.push(format!(
                "{} [{}]",
                String::from_utf8_lossy(key),
                held.join(", ")
            ));
        }
    }
    if diverged.is_empty() {
        Verdict::Pass(format!(
            "all replicas of {keys} keys hold the same record; stored state settled {settled_ms:.1} ms into the liveness phase"
        ))
    } else {
        let shown: Vec<String> = diverged.iter().take(SHOWN_MAX).cloned().collect();
        Verdict::Fail(format!(
            "{} of {keys} keys diverged; first: {}",
            diverged.len(),
            shown.join("; ")
        ))
    }
}

fn describe(record: Option<&Record>) -> String {
    match record {
        None => "nothing".into(),
        Some(Record::Lww(r)) => format!(
            "{}@{}",
            r.value
                .as_deref()
                .map_or("tombstone".to_string(), |v| crate::workload::value_id(v)
                    .to_string()),
            r.version.timestamp_micros
        ),
        Some(Record::Causal(r)) => format!(
            "{} siblings, clock {:?}",
            r.siblings.len(),
            r.clock.entries()
        ),
        Some(Record::Counter(r)) => format!(
            "counter {} (epoch {}, {} slots)",
            r.value(),
            r.epoch.timestamp_micros,
            r.slots.len()
        ),
    }
}
