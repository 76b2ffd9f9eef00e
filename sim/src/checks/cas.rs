//! Compare-and-set linearizability (issue #13, item 2): the history of reads, writes and
//! compare-and-sets is checked key by key against the checker's `cas-register` model, the
//! register of Jepsen's etcd test.
//!
//! How outcomes map: an ok read returns its value (`nil` when absent); an ok write or an applied
//! compare-and-set took effect once between invocation and reply; a compare-and-set whose
//! condition was false (`applied = false`) definitely did not apply, and constrains the state to
//! differ from its expected value; an indeterminate write or compare-and-set may take effect at
//! any point after its invocation, or never; failed operations and unanswered reads are left out.
//! Deletes have no place in this model, and plain writes do not mix with compare-and-sets (they
//! are ABD writes, not Paxos rounds): a history with either is refused as unjudgeable (the
//! scenario's workload issues neither: `cas_fraction = 1`, `delete_fraction = 0`).

use super::Verdict;
use crate::history::{History, OpKind, OpOutcome};
use crate::workload::Workload;
use bytes::Bytes;
use ringkv_checker::{
    check, CasInput, CasOutput, CasRegister, History as CheckerHistory, Operation, Outcome,
    SearchLimits, Verdict as CheckerVerdict,
};
use std::collections::BTreeMap;

/// Search budget per run (as `linearizable`'s): an unknown verdict does not pass.
const STEPS_TOTAL_MAX: u64 = 300_000_000;

/// What the history alone does not say about a compare-and-set, by its index in
/// `History::ops` (where it is recorded as a `Put` of its new value, so the durability check
/// judges an applied one like any acknowledged write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasStep {
    /// The id of the value it expected, `None` for "expected absent" (`WriteCondition::Absent`).
    pub expected: Option<u64>,
    /// `Some(false)`: the condition was false and nothing was written.
    pub applied: Option<bool>,
    /// The value it writes (the client expects it next once applied).
    pub value: Bytes,
}

/// The violation explained, when there is one.
pub struct CasResult {
    /// The verdict for the summary.
    pub verdict: Verdict,
    /// The ASCII timeline of the smallest failing window.
    pub timeline: Option<String>,
    /// A self-contained HTML page of the failing window.
    pub html: Option<String>,
}

/// Converts the simulator's history for the checker; `Err` names what the model cannot judge.
pub fn to_checker_history(
    history: &History,
    steps: &BTreeMap<usize, CasStep>,
    workload: &Workload,
) -> Result<CheckerHistory<CasInput, CasOutput>, String> {
    let mut out = CheckerHistory::new();
    let id = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for (index, op) in history.ops.iter().enumerate() {
        let step = steps.get(&index);
        let input = match (op.kind, step) {
            (OpKind::Get, _) => CasInput::Read,
            // Plain and conditional writes on one key are not linearizable together (plain
            // writes are ABD, not Paxos rounds: see `core::node::paxos`), so a history with a
            // plain write is not one this check may pass.
            (OpKind::Put, None) => {
                return Err(
                    "a plain write: set workload.cas_fraction = 1 (every put a compare-and-set)"
                        .into(),
                );
            }
            (OpKind::Put, Some(step)) => match step.expected {
                Some(expected) => CasInput::Cas {
                    from: id(expected),
                    to: id(op.value),
                },
                None => CasInput::CasAbsent { to: id(op.value) },
            },
            (OpKind::Delete, _) => {
                return Err("a delete: the cas-register model has none".into());
            }
            (OpKind::Increment, _) => {
                return Err("an increment: the cas-register model has none".into());
            }
        };
        let time = op.complete_ns.unwrap_or(op.invoke_ns);
        let outcome = match (op.outcome, op.kind) {
            (OpOutcome::Ok, OpKind::Get) => {
                if op.read.len() > 1 {
                    return Err("a read returned siblings".into());
                }
                let value = op.read.first().map(|&v| id(v));
                Outcome::Returned {
                    output: CasOutput::Read(value),
                    time,
                }
            }
            (OpOutcome::Ok, _) => Outcome::Returned {
                output: CasOutput::Ok,
                time,
            },
            (OpOutcome::Failed, _) if step.is_some_and(|s| s.applied == Some(false)) => {
                Outcome::Returned {
                    output: CasOutput::CasFailed,
                    time,
                }
            }
            (OpOutcome::Failed, _) | (OpOutcome::Indeterminate, OpKind::Get) => continue,
            (OpOutcome::Indeterminate, _) => Outcome::Indeterminate {
                reported_time: op.complete_ns,
            },
        };
        out.push(Operation {
            client: u64::from(op.client),
            key: String::from_utf8_lossy(workload.key(op.key)).into_owned(),
            input,
            outcome,
            invoke_time: op.invoke_ns,
        });
    }
    Ok(out)
}

/// Checks the history.
pub fn check_history(
    history: &History,
    steps: &BTreeMap<usize, CasStep>,
    workload: &Workload,
    title: &str,
) -> CasResult {
    let applied = steps
        .iter()
        .filter(|(&i, _)| {
            history
                .ops
                .get(i)
                .is_some_and(|op| op.outcome == OpOutcome::Ok)
        })
        .count() as u64;
    let not_applied = steps.values().filter(|s| s.applied == Some(false)).count();
    let failed = |why: String| CasResult {
        verdict: Verdict::Fail(why),
        timeline: None,
        html: None,
    };
    let converted = match to_checker_history(history, steps, workload) {
        Ok(converted) => converted,
        Err(why) => return failed(format!("history cannot be judged: {why}")),
    };
    let limits = SearchLimits {
        steps_total_max: STEPS_TOTAL_MAX,
        ..SearchLimits::default()
    };
    let outcome = match check(&CasRegister, &converted, &limits) {
        Ok(o) => o,
        Err(e) => return failed(format!("history could not be checked: {e}")),
    };
    let stats = outcome.stats;
    match outcome.verdict {
        CheckerVerdict::Linearizable => CasResult {
            verdict: Verdict::Pass(format!(
                "{} operations on {} keys linearizable ({applied} cas applied, {not_applied} \
                 not), {} search steps",
                stats.operations, stats.keys, stats.steps
            )),
            timeline: None,
            html: None,
        },
        CheckerVerdict::NotLinearizable { key, violation } => CasResult {
            verdict: Verdict::Fail(format!("key {key}: {}", violation.explanation)),
            timeline: Some(ringkv_checker::timeline::render(&violation)),
            html: Some(ringkv_checker::html::render(title, &key, &violation)),
        },
        CheckerVerdict::Unknown { reason } => {
            failed(format!("unknown (counted as not passing): {reason}"))
        }
    }
}
