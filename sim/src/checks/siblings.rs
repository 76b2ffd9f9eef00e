//! Siblings: in vector-clock mode, every sibling the final ring holds is explained by the history.
//!
//! Durability (its own check) proves no acknowledged write vanished without a write that saw it.
//! This check proves the converse, that nothing survives which should not: a write acknowledged
//! with a causal context (a `SET` or `DEL` carries the context of its own read; a `KV.PUT` or
//! `KV.DEL` the context of the client's `KV.GET`) supersedes exactly the siblings that context
//! names, so concurrent `SET`s may leave siblings but a superseded one may never come back.
//! Judged against the merge of the final ring members' durable records of each key:
//!
//! * no sibling (live value or tombstone) has a dot that the context of an acknowledged write of
//!   that key contains (a resurrection: what a client overwrote or deleted is back);
//! * every live sibling's value was written by a put of that key that may have taken effect (not
//!   one known to have failed).
//!
//! The check is on dots, not values: one put may become two write events (two dots, one value)
//! when its coordinator re-forwards it to another replica after the first attempt timed out and
//! both attempts land. A `SET` whose read saw only one of them leaves the other as a concurrent
//! sibling, which is causally honest; the verdict counts such values.
//!
//! Clock pruning (`version::causal`) may legitimately bring an old sibling back as a false
//! sibling once the actors of its dot are no longer replicas of the key, so scenarios with ring
//! changes should not enable this check.

use super::durability::MemberContents;
use super::Verdict;
use crate::history::{History, OpKind, OpOutcome};
use crate::workload::{value_id, Workload};
use ringkv_core::version::Dot;
use ringkv_core::Record;
use std::collections::BTreeSet;

/// Most violations spelled out in the verdict.
const SHOWN_MAX: usize = 5;

/// Checks the final siblings of every key against the history's writes and commands.
pub fn check(history: &History, members: &[MemberContents<'_>], workload: &Workload) -> Verdict {
    let mut problems = Vec::new();
    let mut keys_with_siblings = 0usize;
    let mut siblings_live = 0usize;
    let mut values_under_two_dots = 0usize;
    let keys = u32::try_from(workload.key_count()).unwrap_or(u32::MAX);
    for index in 0..keys {
        let key = workload.key(index);
        let name = String::from_utf8_lossy(key);
        let merged = members
            .iter()
            .filter_map(|(_, contents)| contents.get(key))
            .fold(None::<Record>, |acc, r| {
                Some(acc.map_or_else(|| r.clone(), |a| a.merge(r)))
            });
        let Some(merged) = merged else {
            continue;
        };
        let Record::Causal(record) = &merged else {
            problems.push(format!("{name} holds a last-write-wins record"));
            continue;
        };
        let live: Vec<(Dot, u64)> = record
            .siblings
            .iter()
            .filter_map(|(dot, value)| value.as_ref().map(|v| (*dot, value_id(v))))
            .collect();
        siblings_live += live.len();
        if live.len() > 1 {
            keys_with_siblings += 1;
        }
        let writes = || {
            history
                .ops
                .iter()
                .filter(move |op| op.key == index && op.is_write())
        };
        for (dot, value) in &record.siblings {
            let what = match value {
                Some(v) => format!("value id {}", value_id(v)),
                None => "a tombstone".to_string(),
            };
            if let Some(op) = writes().find(|op| {
                op.outcome == OpOutcome::Ok
                    && op.context.as_ref().is_some_and(|c| c.0.contains(*dot))
            }) {
                let by = op
                    .command
                    .and_then(|c| history.commands.get(c))
                    .map_or("a write", |c| c.name);
                problems.push(format!(
                    "{name} still holds {what} at {dot:?}, which {by} of client {} acknowledged at {:.3}ms had superseded (its context included that dot)",
                    op.client,
                    op.complete_ns.unwrap_or(0) as f64 / 1e6
                ));
            }
        }
        for (dot, id) in &live {
            let puts: Vec<_> = writes()
                .filter(|op| op.kind == OpKind::Put && op.value == *id)
                .collect();
            if puts.is_empty() {
                problems.push(format!(
                    "{name} holds value id {id}, which no put of that key carried"
                ));
            }
            if puts.iter().any(|op| op.outcome == OpOutcome::Failed) {
                problems.push(format!(
                    "{name} holds value id {id} at {dot:?}, whose put was refused (known to have had no effect)"
                ));
            }
        }
        let distinct: BTreeSet<u64> = live.iter().map(|(_, id)| *id).collect();
        values_under_two_dots += live.len() - distinct.len();
    }
    if problems.is_empty() {
        let commands = history.commands.iter().filter(|c| c.wrote()).count();
        Verdict::Pass(format!(
            "{siblings_live} live values over {keys} keys ({keys_with_siblings} keys with siblings, {values_under_two_dots} values live under a second dot) explained by the history; none superseded by an acknowledged write ({commands} acknowledged writing commands)"
        ))
    } else {
        let shown: Vec<String> = problems.iter().take(SHOWN_MAX).cloned().collect();
        Verdict::Fail(format!(
            "{} unexplained siblings; first: {}",
            problems.len(),
            shown.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HistoryOp;
    use bytes::Bytes;
    use ringkv_core::version::{ActorId, CausalRecord, DataEpoch, VersionVector};
    use ringkv_core::{CausalContext, NodeId, WriteVersion};
    use std::collections::BTreeMap;

    fn dot(actor: u32, counter: u64) -> Dot {
        Dot {
            actor: ActorId::new(NodeId(actor), DataEpoch(1)),
            counter,
        }
    }

    fn value(id: u64) -> Bytes {
        Bytes::copy_from_slice(&id.to_le_bytes())
    }

    fn context(dots: &[Dot]) -> CausalContext {
        let mut clock = VersionVector::default();
        for d in dots {
            clock.raise(d.actor, d.counter);
        }
        CausalContext(clock)
    }

    fn put(id: u64, at: Dot, seen: Option<CausalContext>, outcome: OpOutcome) -> HistoryOp {
        HistoryOp {
            client: 0,
            key: 0,
            kind: OpKind::Put,
            value: id,
            read: Vec::new(),
            delta: 0,
            version: (outcome == OpOutcome::Ok).then_some(WriteVersion::Dot(at)),
            context: seen,
            acks: 2,
            coordinator: 0,
            expires: None,
            invoke_ns: 0,
            complete_ns: Some(1),
            outcome,
            during_faults: true,
            command: None,
        }
    }

    /// Key 0 holding `siblings` under a clock that knows each of their dots and `also`.
    fn holding(w: &Workload, siblings: &[(Dot, u64)], also: &[Dot]) -> BTreeMap<Bytes, Record> {
        let dots: Vec<Dot> = siblings
            .iter()
            .map(|(d, _)| *d)
            .chain(also.iter().copied())
            .collect();
        BTreeMap::from([(
            w.key(0).clone(),
            Record::Causal(CausalRecord {
                clock: context(&dots).0,
                siblings: siblings
                    .iter()
                    .map(|(d, id)| (*d, Some(value(*id))))
                    .collect(),
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
conflict = "vector-clock"
[workload]
clients = 1
operations = 10
keys = 1
read_fraction = 0.5
value_bytes = [8, 16]
"#;
        Workload::new(&crate::Scenario::parse("t.toml", text).expect("valid"))
    }

    #[test]
    fn concurrent_writes_may_stay_siblings() {
        let w = workload();
        // Two writes that saw nothing of each other: both survive.
        let history = History {
            ops: vec![
                put(1, dot(0, 1), None, OpOutcome::Ok),
                put(2, dot(1, 1), None, OpOutcome::Ok),
            ],
            commands: Vec::new(),
            scans: Vec::new(),
        };
        let disk = holding(&w, &[(dot(0, 1), 1), (dot(1, 1), 2)], &[]);
        let verdict = check(&history, &[(0, &disk)], &w);
        assert!(
            matches!(&verdict, Verdict::Pass(why) if why.contains("1 keys with siblings")),
            "{verdict}"
        );
    }

    #[test]
    fn a_sibling_an_acknowledged_write_superseded_must_not_come_back() {
        let w = workload();
        // Write 2 read value 1 (its context holds dot 0:1) and replaced it; value 1 is back.
        let history = History {
            ops: vec![
                put(1, dot(0, 1), None, OpOutcome::Ok),
                put(2, dot(1, 1), Some(context(&[dot(0, 1)])), OpOutcome::Ok),
            ],
            commands: Vec::new(),
            scans: Vec::new(),
        };
        let disk = holding(&w, &[(dot(0, 1), 1), (dot(1, 1), 2)], &[]);
        let verdict = check(&history, &[(0, &disk)], &w);
        assert!(
            matches!(&verdict, Verdict::Fail(why) if why.contains("value id 1") && why.contains("superseded")),
            "{verdict}"
        );
        // The same context on a write that may not have taken effect proves nothing.
        let mut history = history;
        history.ops[1].outcome = OpOutcome::Indeterminate;
        let verdict = check(&history, &[(0, &disk)], &w);
        assert!(matches!(verdict, Verdict::Pass(_)), "{verdict}");
    }

    #[test]
    fn a_value_of_a_refused_or_unknown_put_is_unexplained() {
        let w = workload();
        let history = History {
            ops: vec![put(1, dot(0, 1), None, OpOutcome::Failed)],
            commands: Vec::new(),
            scans: Vec::new(),
        };
        let disk = holding(&w, &[(dot(0, 1), 1), (dot(2, 1), 9)], &[]);
        let Verdict::Fail(why) = check(&history, &[(0, &disk)], &w) else {
            panic!("a refused put's value passed");
        };
        assert!(
            why.contains("value id 1") && why.contains("refused"),
            "{why}"
        );
        assert!(
            why.contains("value id 9") && why.contains("no put"),
            "{why}"
        );
    }
}
