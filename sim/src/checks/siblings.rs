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
