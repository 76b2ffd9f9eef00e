//! Linearizability of the client history, key by key, against a register model (values are write
//! ids, 0 = absent). Uses the same checker as `sim check-history`.
//!
//! How outcomes map: an ok read constrains with the value it returned; a failed or unanswered read
//! constrains nothing; an ok write took effect once between invocation and reply; an indeterminate
//! write may take effect at any point after its invocation, or never; a failed write had no effect
//! and is left out.

use super::Verdict;
use crate::history::{History, OpKind, OpOutcome};
use crate::workload::Workload;
use ringkv_checker::{
    check, History as CheckerHistory, Operation, Outcome, Register, RegisterInput, RegisterOutput,
    SearchLimits, Verdict as CheckerVerdict,
};

/// Search budget per run: generous for the simulator's histories, bounded so a pathological one
/// ends as `unknown` (which does not pass) instead of hanging a sweep.
const STEPS_TOTAL_MAX: u64 = 300_000_000;

/// The violation explained, when there is one.
pub struct LinearizabilityResult {
    /// The verdict for the summary.
    pub verdict: Verdict,
    /// The ASCII timeline of the smallest failing window.
    pub timeline: Option<String>,
    /// A self-contained HTML page of the failing window.
    pub html: Option<String>,
}

/// Converts the simulator's history for the checker. `None` when a read returned siblings (the
/// register model does not apply to vector-clock histories).
pub fn to_checker_history(
    history: &History,
    workload: &Workload,
) -> Option<CheckerHistory<RegisterInput, RegisterOutput>> {
    let mut out = CheckerHistory::new();
    for op in &history.ops {
        let input = match op.kind {
            OpKind::Get => RegisterInput::Get,
            OpKind::Put => RegisterInput::Put(op.value),
            OpKind::Delete => RegisterInput::Delete,
            // Counters are no register: the counters check judges them.
            OpKind::Increment => continue,
        };
        let outcome = match (op.outcome, op.kind) {
            (OpOutcome::Failed, OpKind::Get) | (OpOutcome::Indeterminate, OpKind::Get) => continue,
            (OpOutcome::Failed, _) => continue,
            (OpOutcome::Indeterminate, _) => Outcome::Indeterminate {
                reported_time: op.complete_ns,
            },
            (OpOutcome::Ok, OpKind::Get) => {
                if op.read.len() > 1 {
                    return None;
                }
                Outcome::Returned {
                    output: RegisterOutput::Value(op.read.first().copied().unwrap_or(0)),
                    time: op.complete_ns.unwrap_or(op.invoke_ns),
                }
            }
            (OpOutcome::Ok, _) => Outcome::Returned {
                output: RegisterOutput::Written,
                time: op.complete_ns.unwrap_or(op.invoke_ns),
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
    Some(out)
}

/// Checks the history.
pub fn check_history(history: &History, workload: &Workload, title: &str) -> LinearizabilityResult {
    let Some(converted) = to_checker_history(history, workload) else {
        return LinearizabilityResult {
            verdict: Verdict::Skipped("reads returned siblings: no register model applies".into()),
            timeline: None,
            html: None,
        };
    };
    let limits = SearchLimits {
        steps_total_max: STEPS_TOTAL_MAX,
        ..SearchLimits::default()
    };
    let outcome = match check(&Register, &converted, &limits) {
        Ok(o) => o,
        Err(e) => {
            return LinearizabilityResult {
                verdict: Verdict::Fail(format!("history could not be checked: {e}")),
                timeline: None,
                html: None,
            }
        }
    };
    let stats = outcome.stats;
    match outcome.verdict {
        CheckerVerdict::Linearizable => LinearizabilityResult {
            verdict: Verdict::Pass(format!(
                "{} operations on {} keys linearizable, {} search steps",
                stats.operations, stats.keys, stats.steps
            )),
            timeline: None,
            html: None,
        },
        CheckerVerdict::NotLinearizable { key, violation } => LinearizabilityResult {
            verdict: Verdict::Fail(format!("key {key}: {}", violation.explanation)),
            timeline: Some(ringkv_checker::timeline::render(&violation)),
            html: Some(ringkv_checker::html::render(title, &key, &violation)),
        },
        CheckerVerdict::Unknown { reason } => LinearizabilityResult {
            verdict: Verdict::Fail(format!("unknown (counted as not passing): {reason}")),
            timeline: None,
            html: None,
        },
    }
}
