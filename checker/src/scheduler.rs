//! Checking a whole history: pre-checks, then all keys searched round-robin.
//!
//! Keys are independent (P-compositionality), but one key can be exponentially expensive. A
//! key-by-key loop would then never reach a cheap violation in a later key, so every round gives
//! each unfinished key the same step budget, and the budget doubles each round. The total cost is
//! at most about twice (number of keys) times the cost of the cheapest decisive key.

use crate::history::{History, HistoryError};
use crate::model::Model;
use crate::precheck::{precheck, unobservable_writes};
use crate::search::{KeySearch, Progress};
use crate::verdict::{violation_from_precheck, violation_from_search, Verdict};

/// Bounds that turn a hopeless search into [`Verdict::Unknown`] instead of a hang or a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchLimits {
    /// Search steps over all keys (one step visits one list entry, a few nanoseconds).
    pub steps_total_max: u64,
    /// Memo entries per key; an entry costs about 32 bytes plus one bit per operation of the
    /// key, and a key's memo is freed when its search ends.
    pub memo_entries_per_key_max: usize,
    /// Steps each key gets in the first round; doubled every round.
    pub first_round_steps: u64,
    /// Run the cheap pre-checks of [`crate::precheck`] before searching.
    pub prechecks: bool,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            steps_total_max: 2_000_000_000,
            memo_entries_per_key_max: 4_000_000,
            first_round_steps: 1 << 12,
            prechecks: true,
        }
    }
}

/// Counters describing the work done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Keys in the history.
    pub keys: usize,
    /// Operations that entered the search (indeterminate reads are dropped).
    pub operations: usize,
    /// Search steps taken over all keys.
    pub steps: u64,
    /// Rounds of the scheduler.
    pub rounds: u32,
    /// The largest memo of any key, in entries.
    pub memo_entries_max: usize,
}

/// A verdict with the work it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The answer.
    pub verdict: Verdict,
    /// The work done.
    pub stats: SearchStats,
}

/// Checks that `history` is linearizable with respect to `model`, key by key.
///
/// Returns an error only for a malformed history (see [`History::validate`]); running out of
/// budget is [`Verdict::Unknown`].
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    limits: &SearchLimits,
) -> Result<CheckOutcome, HistoryError> {
    history.validate()?;
    model.prepare(history);
    let mut stats = SearchStats::default();
    let mut keys: Vec<(&str, Vec<usize>)> = Vec::new();
    for (key, indices) in history.partition_by_key() {
        let kept: Vec<usize> = indices
            .into_iter()
            .filter(|&i| {
                let op = &history.operations[i];
                op.output().is_some() || !model.is_read_only(&op.input)
            })
            .collect();
        stats.operations += kept.len();
        keys.push((key, kept));
    }
    stats.keys = keys.len();

    if limits.prechecks {
        for (key, ops) in &keys {
            if let Some(hit) = precheck(model, history, ops) {
                let violation = violation_from_precheck(model, history, ops, &hit);
                let verdict = Verdict::NotLinearizable { key: key.to_string(), violation: Box::new(violation) };
                return Ok(CheckOutcome { verdict, stats });
            }
        }
    }

    let mut active: Vec<(usize, KeySearch<'_, M>)> = keys
        .iter()
        .enumerate()
        .filter(|(_, (_, ops))| !ops.is_empty())
        .map(|(k, (_, ops))| {
            let useless = unobservable_writes(model, history, ops);
            let searched: Vec<usize> = if useless.is_empty() {
                ops.clone()
            } else {
                ops.iter().copied().filter(|i| useless.binary_search(i).is_err()).collect()
            };
            (k, KeySearch::new(model, history, &searched, limits.memo_entries_per_key_max))
        })
        .collect();
    let mut gave_up: Option<String> = None;
    let mut budget = limits.first_round_steps.max(1);
    while !active.is_empty() {
        stats.rounds += 1;
        let mut still_active = Vec::with_capacity(active.len());
        for (k, mut search) in active {
            let remaining = limits.steps_total_max.saturating_sub(stats.steps);
            if remaining == 0 {
                gave_up.get_or_insert_with(|| {
                    format!("step budget of {} exhausted, key {:?} unfinished", limits.steps_total_max, keys[k].0)
                });
                continue;
            }
            let before = search.steps();
            let progress = search.run(budget.min(remaining));
            stats.steps += search.steps() - before;
            stats.memo_entries_max = stats.memo_entries_max.max(search.memo_entries());
            match progress {
                Progress::Paused => still_active.push((k, search)),
                Progress::Linearizable => {}
                Progress::NotLinearizable => {
                    let key = keys[k].0.to_string();
                    let failure = explain_failure(model, history, search.searched(), search.steps(), limits)
                        .or_else(|| search.failure());
                    let verdict = match failure {
                        Some(failure) => Verdict::NotLinearizable {
                            key,
                            violation: Box::new(violation_from_search(model, history, &keys[k].1, &failure)),
                        },
                        None => Verdict::Unknown { reason: format!("search of key {key:?} failed without a trace") },
                    };
                    return Ok(CheckOutcome { verdict, stats });
                }
                Progress::MemoFull => {
                    gave_up.get_or_insert_with(|| {
                        format!(
                            "memo limit of {} entries reached on key {:?} ({} operations)",
                            limits.memo_entries_per_key_max,
                            keys[k].0,
                            search.operations()
                        )
                    });
                }
            }
        }
        active = still_active;
        budget = budget.saturating_mul(2);
    }
    let verdict = match gave_up {
        Some(reason) => Verdict::Unknown { reason },
        None => Verdict::Linearizable,
    };
    Ok(CheckOutcome { verdict, stats })
}

/// Steps the explanation search may take, as a multiple of the steps of the search that found
/// the violation (and at least [`EXPLANATION_STEPS_MIN`]).
const EXPLANATION_STEPS_FACTOR: u64 = 8;
/// See [`EXPLANATION_STEPS_FACTOR`].
const EXPLANATION_STEPS_MIN: u64 = 100_000;

/// Searches a failing key again without value tracking, which rejects doomed steps early and so
/// stops at a shorter prefix than the reader expects. Returns `None` if that search does not
/// finish within its budget (then the first search's failure is reported).
fn explain_failure<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    ops: &[usize],
    steps: u64,
    limits: &SearchLimits,
) -> Option<crate::search::Failure<M::State>> {
    let budget = steps.saturating_mul(EXPLANATION_STEPS_FACTOR).max(EXPLANATION_STEPS_MIN);
    let mut search = KeySearch::with_tracking(model, history, ops, limits.memo_entries_per_key_max, false);
    match search.run(budget) {
        Progress::NotLinearizable => search.failure(),
        _ => None,
    }
}
