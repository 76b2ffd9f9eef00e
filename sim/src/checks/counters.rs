//! Counters: after the liveness phase, every replica's value of every counter key is the sum of
//! the key's acknowledged increments plus the sum of some subset of its indeterminate ones
//! (increments that may or may not have taken effect); never less, never more. Failed
//! increments (refused before any effect) count for nothing.
//!
//! The subset rule is exact: with deltas of different sizes, a value inside the range
//! [acknowledged + negative indeterminate, acknowledged + positive indeterminate] that no subset
//! explains (one increment counted twice, say) is a violation too. Judged from the history and
//! the replicas' durable records only, never from what the system says of itself.

use super::Verdict;
use crate::history::{History, OpKind, OpOutcome};
use crate::workload::Workload;
use bytes::Bytes;
use ringkv_core::{Record, Ring};
use std::collections::{BTreeMap, BTreeSet};

/// Most violations spelled out.
const SHOWN_MAX: usize = 3;

/// Past this many reachable subset sums the exact rule gives way to the range rule (said in the
/// verdict), so a pathological history cannot make the check unbounded.
const SUBSET_SUMS_MAX: usize = 1 << 16;

/// What the history says about one key.
#[derive(Default)]
struct KeyHistory {
    acknowledged: i128,
    indeterminate: Vec<i64>,
    failed: u64,
}

/// Checks every replica (of the final ring) of every workload key. `durable[i]` is node i's
/// durable contents.
pub fn check(
    history: &History,
    ring: &Ring,
    n: u8,
    durable: &[&BTreeMap<Bytes, Record>],
    workload: &Workload,
    keys: u32,
) -> Verdict {
    let mut per_key: BTreeMap<u32, KeyHistory> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.kind == OpKind::Increment) {
        let entry = per_key.entry(op.key).or_default();
        match op.outcome {
            OpOutcome::Ok => entry.acknowledged += i128::from(op.delta),
            OpOutcome::Indeterminate => entry.indeterminate.push(op.delta),
            OpOutcome::Failed => entry.failed += 1,
        }
    }
    let mut violations = Vec::new();
    let mut approximated = 0usize;
    let (mut acknowledged, mut indeterminate) = (0usize, 0usize);
    for index in 0..keys {
        let empty = KeyHistory::default();
        let expected = per_key.get(&index).unwrap_or(&empty);
        indeterminate += expected.indeterminate.len();
        let sums = subset_sums(&expected.indeterminate);
        approximated += usize::from(sums.is_none());
        let key = workload.key(index);
        for replica in ring.preference_list(key, usize::from(n)) {
            let record = durable.get(replica.0 as usize).and_then(|c| c.get(key));
            let value = match record {
                None => Some(0),
                Some(Record::Counter(counter)) => Some(counter.value()),
                Some(_) => None,
            };
            let Some(value) = value else {
                violations.push(format!(
                    "{} on {replica} holds a record that is not a counter: {record:?}",
                    String::from_utf8_lossy(key)
                ));
                continue;
            };
            let extra = value - expected.acknowledged;
            let explained = match &sums {
                Some(sums) => sums.contains(&extra),
                None => {
                    let (low, high) = range(&expected.indeterminate);
                    (low..=high).contains(&extra)
                }
            };
            if !explained {
                let (low, high) = range(&expected.indeterminate);
                let how = if extra < low {
                    "less than any"
                } else if extra > high {
                    "more than any"
                } else {
                    "inside the range but no"
                };
                violations.push(format!(
                    "{} on {replica}: value {value}, acknowledged increments sum to {}, {} indeterminate ones {:?}: {how} subset explains it",
                    String::from_utf8_lossy(key),
                    expected.acknowledged,
                    expected.indeterminate.len(),
                    expected.indeterminate
                ));
            }
        }
    }
    for expected in per_key.values() {
        acknowledged += usize::from(expected.acknowledged != 0);
    }
    if violations.is_empty() {
        let approximation = if approximated > 0 {
            format!(" ({approximated} keys judged by range: too many subset sums)")
        } else {
            String::new()
        };
        Verdict::Pass(format!(
            "every replica of {keys} counter keys ({acknowledged} with acknowledged increments) holds acknowledged + a subset of {indeterminate} indeterminate increments{approximation}"
        ))
    } else {
        let shown: Vec<String> = violations.iter().take(SHOWN_MAX).cloned().collect();
        Verdict::Fail(format!(
            "{} counter values unexplained; first: {}",
            violations.len(),
            shown.join("; ")
        ))
    }
}

/// Every sum of a subset of `deltas` (the empty subset included), or `None` past
/// [`SUBSET_SUMS_MAX`].
fn subset_sums(deltas: &[i64]) -> Option<BTreeSet<i128>> {
    let mut sums = BTreeSet::from([0i128]);
    for &delta in deltas {
        let shifted: Vec<i128> = sums.iter().map(|s| s + i128::from(delta)).collect();
        sums.extend(shifted);
        if sums.len() > SUBSET_SUMS_MAX {
            return None;
        }
    }
    Some(sums)
}

/// The least and greatest subset sums: all negative deltas, all positive ones.
fn range(deltas: &[i64]) -> (i128, i128) {
    deltas.iter().fold((0, 0), |(low, high), &d| {
        let d = i128::from(d);
        (low + d.min(0), high + d.max(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_sums_are_exact_and_ranges_bound_them() {
        let sums = subset_sums(&[5, 5, -2]).unwrap_or_default();
        assert_eq!(
            sums.into_iter().collect::<Vec<_>>(),
            vec![-2, 0, 3, 5, 8, 10]
        );
        assert_eq!(range(&[5, 5, -2]), (-2, 10));
        // 4 is inside the range but no subset of {5, 5, -2} makes it.
        let sums = subset_sums(&[5, 5, -2]).unwrap_or_default();
        assert!(!sums.contains(&4));
        assert_eq!(subset_sums(&[]).map(|s| s.len()), Some(1));
    }
}
