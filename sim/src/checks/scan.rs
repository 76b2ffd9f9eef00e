//! The scan check: every finished full scan returned each key that was live for the whole scan,
//! and no key twice (the guarantee node/README.md states for `SCAN` with `R + W > N`).
//!
//! It judges only the history: a key is *live for the whole scan* if an acknowledged put of it
//! completed before the scan's first page was sent, and no delete of it (of any outcome) could
//! have taken effect at a time that overlaps the scan: every delete of the key was invoked after
//! the scan's last page was answered, or (when the nodes' clocks agree, so a later write's stamp
//! is higher) completed before that put was invoked. Keys written or deleted during the scan may
//! or may not appear, so they are not judged. Also refused: a key the workload never wrote
//! before the scan ended.
//!
//! Across a ring change the guarantee is weaker (node/README.md): a page asks the new ring's
//! replicas, which may still be receiving the range, so a key is found exactly when a read at
//! the level would find it. A scan running while the ring changes is therefore judged for
//! duplicates and phantom keys only, and counted apart; the walk itself must still finish.

use super::Verdict;
use crate::history::{History, HistoryOp, OpKind, OpOutcome};
use std::collections::{BTreeMap, BTreeSet};

/// Checks every finished scan of `history`. `clocks_agree`: the nodes' wall clocks are neither
/// skewed nor jumped, so a put invoked after a delete completed carries a higher stamp.
pub fn check(history: &History, clocks_agree: bool, ring_changes_ns: &[u64]) -> Verdict {
    let mut by_key: BTreeMap<u32, Vec<&HistoryOp>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key).or_default().push(op);
    }
    let mut finished = 0usize;
    let mut judged = 0usize;
    let mut across = 0usize;
    let mut problems = Vec::new();
    for (index, scan) in history.scans.iter().enumerate() {
        let Some(complete) = scan.complete_ns else {
            continue;
        };
        finished += 1;
        let ring_changed = ring_changes_ns
            .iter()
            .any(|&at| scan.invoke_ns <= at && at <= complete);
        across += usize::from(ring_changed);
        let mut returned = BTreeSet::new();
        for &key in &scan.keys {
            if !returned.insert(key) {
                problems.push(format!("scan {index} returned key {key} twice"));
            }
        }
        for &key in &returned {
            let written_before_end = by_key.get(&key).is_some_and(|ops| {
                ops.iter()
                    .any(|op| op.kind == OpKind::Put && op.invoke_ns < complete)
            });
            if !written_before_end {
                problems.push(format!(
                    "scan {index} returned key {key}, which no put had been sent for"
                ));
            }
        }
        for (&key, ops) in &by_key {
            if !ring_changed && live_throughout(ops, scan.invoke_ns, complete, clocks_agree) {
                judged += 1;
                if !returned.contains(&key) {
                    problems.push(format!(
                        "scan {index} (client {}, {:.1}..{:.1} ms, {} pages) missed key {key}, \
                         live for the whole scan",
                        scan.client,
                        scan.invoke_ns as f64 / 1e6,
                        complete as f64 / 1e6,
                        scan.pages
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        return Verdict::Fail(format!(
            "{} problems in {finished} finished scans: {}",
            problems.len(),
            shown.join("; ")
        ));
    }
    if finished == 0 || judged == 0 {
        return Verdict::Fail(format!(
            "nothing judged: {finished} scans finished, {judged} keys live throughout one"
        ));
    }
    Verdict::Pass(format!(
        "{finished} finished scans returned all {judged} (scan, key) pairs live throughout, none \
         twice ({across} across a ring change: duplicates and phantoms only)"
    ))
}

/// True if the key whose operations are `ops` was live from `start` to `end` (see the module
/// documentation).
fn live_throughout(ops: &[&HistoryOp], start: u64, end: u64, clocks_agree: bool) -> bool {
    ops.iter()
        .filter(|op| {
            op.kind == OpKind::Put
                && op.outcome == OpOutcome::Ok
                && op.complete_ns.is_some_and(|done| done < start)
        })
        .any(|put| {
            ops.iter()
                .filter(|op| op.kind == OpKind::Delete)
                .all(|delete| {
                    delete.invoke_ns > end
                        || (clocks_agree
                            && delete.complete_ns.is_some_and(|done| done < put.invoke_ns))
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ScanRecord;

    fn op(key: u32, kind: OpKind, invoke: u64, complete: Option<u64>) -> HistoryOp {
        HistoryOp {
            client: 0,
            key,
            kind,
            value: 1,
            read: Vec::new(),
            delta: 0,
            version: None,
            context: None,
            acks: 2,
            coordinator: 0,
            expires: None,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome: OpOutcome::Ok,
            during_faults: true,
            command: None,
        }
    }

    fn scan(invoke: u64, complete: u64, keys: &[u32]) -> ScanRecord {
        ScanRecord {
            client: 1,
            invoke_ns: invoke,
            complete_ns: Some(complete),
            keys: keys.to_vec(),
            pages: 3,
        }
    }

    fn history(scans: Vec<ScanRecord>) -> History {
        History {
            ops: vec![
                // Key 0: put before the scans, never deleted.
                op(0, OpKind::Put, 0, Some(10)),
                // Key 1: put before, deleted during the scans (may or may not appear).
                op(1, OpKind::Put, 0, Some(10)),
                op(1, OpKind::Delete, 150, Some(160)),
                // Key 2: deleted, then put again before the scans.
                op(2, OpKind::Delete, 0, Some(5)),
                op(2, OpKind::Put, 20, Some(30)),
            ],
            commands: Vec::new(),
            scans,
        }
    }

    #[test]
    fn a_scan_must_return_every_key_live_throughout_once() {
        let word = |scans, agree, changes: &[u64]| check(&history(scans), agree, changes).word();
        assert_eq!(word(vec![scan(100, 200, &[0, 2])], true, &[]), "pass");
        assert_eq!(word(vec![scan(100, 200, &[0, 1, 2])], true, &[]), "pass");
        // Key 2 missed; with skewed clocks its earlier delete might win, so it is not judged.
        assert_eq!(word(vec![scan(100, 200, &[0])], true, &[]), "fail");
        assert_eq!(word(vec![scan(100, 200, &[0])], false, &[]), "pass");
        assert_eq!(word(vec![scan(100, 200, &[0, 0, 2])], true, &[]), "fail");
        // A key never written.
        assert_eq!(word(vec![scan(100, 200, &[0, 2, 7])], true, &[]), "fail");
        // Across a ring change only duplicates and phantoms count.
        assert_eq!(
            word(
                vec![scan(100, 200, &[0]), scan(300, 400, &[0, 2])],
                true,
                &[150]
            ),
            "pass"
        );
        assert_eq!(word(vec![scan(100, 200, &[0, 0])], true, &[150]), "fail");
        // An unfinished scan proves nothing, and nothing judged is a failure.
        let unfinished = ScanRecord {
            complete_ns: None,
            ..scan(100, 200, &[])
        };
        assert_eq!(word(vec![unfinished], true, &[]), "fail");
    }
}
