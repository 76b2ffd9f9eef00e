//! Checking a whole history: pre-checks, then all keys searched round-robin.
//!
//! Keys are independent (P-compositionality), but one key can be exponentially expensive. A
//! key-by-key loop would then never reach a cheap violation in a later key, so every round gives
//! each unfinished key the same step budget, and the budget doubles each round. The total cost is
//! at most about twice (number of keys) times the cost of the cheapest decisive key.
//!
//! Within a key, the depth-first search ([`crate::search`]) runs alone in the first round; from
//! the second round the frontier search ([`crate::frontier`]) gets the same budget after it, and
//! whichever decides first wins (both are exact; they differ only in speed). A key whose searches
//! both hit their memory limit, or a history that spends the total step budget, ends as
//! [`Verdict::Unknown`] unless another key is not linearizable.
//!
//! A violation found by the depth-first search is explained by searching the key again without
//! value tracking (bounded): tracking rejects doomed steps early, which makes the longest
//! linearizable prefix shorter than a reader expects.

use crate::frontier::FrontierSearch;
use crate::history::{History, HistoryError};
use crate::model::Model;
use crate::precheck::{precheck, unobservable_writes};
use crate::search::{KeySearch, Progress};
use crate::verdict::{
    violation_from_frontier, violation_from_precheck, violation_from_search, Verdict, Violation,
};

/// Bounds that turn a hopeless search into [`Verdict::Unknown`] instead of a hang or a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchLimits {
    /// Search steps over all keys (one step visits one list entry or expands one frontier
    /// node: tens to hundreds of nanoseconds, so the default is tens of seconds at most).
    pub steps_total_max: u64,
    /// Memo entries per key; an entry costs about 48 bytes plus one bit per operation of the
    /// key, and a key's memo is freed when its search ends.
    pub memo_entries_per_key_max: usize,
    /// Memo bytes per key (by the estimate above); whichever memo limit is lower applies.
    pub memo_bytes_per_key_max: usize,
    /// Steps each key gets in the first round; doubled every round.
    pub first_round_steps: u64,
    /// Run the cheap pre-checks of [`crate::precheck`] before searching.
    pub prechecks: bool,
    /// Which searches run.
    pub strategy: Strategy,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            steps_total_max: 1_000_000_000,
            memo_entries_per_key_max: 4_000_000,
            memo_bytes_per_key_max: 1 << 30,
            first_round_steps: 1 << 12,
            prechecks: true,
            strategy: Strategy::Interleaved,
        }
    }
}

/// Which searches run on each key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// The depth-first search alone in the first round, then both in turns with the same step
    /// budgets (the default): the depth-first search is fast to find linearizations, the
    /// frontier search to refute.
    #[default]
    Interleaved,
    /// Only the depth-first search ([`crate::search`]).
    DepthFirst,
    /// Only the frontier search ([`crate::frontier`]).
    Frontier,
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
                let verdict = Verdict::NotLinearizable {
                    key: key.to_string(),
                    violation: Box::new(violation),
                };
                return Ok(CheckOutcome { verdict, stats });
            }
        }
    }

    let mut active: Vec<KeyTask<'_, M>> = keys
        .iter()
        .enumerate()
        .filter(|(_, (_, ops))| !ops.is_empty())
        .map(|(k, (_, ops))| {
            let useless = unobservable_writes(model, history, ops);
            let searched: Vec<usize> = if useless.is_empty() {
                ops.clone()
            } else {
                ops.iter()
                    .copied()
                    .filter(|i| useless.binary_search(i).is_err())
                    .collect()
            };
            let entries_max = memo_entries_max(limits, searched.len());
            KeyTask {
                key: k,
                depth_first: (limits.strategy != Strategy::Frontier)
                    .then(|| KeySearch::new(model, history, &searched, entries_max)),
                frontier: None,
                frontier_started: limits.strategy == Strategy::DepthFirst,
                searched,
                entries_max,
            }
        })
        .collect();
    let mut gave_up: Option<String> = None;
    let mut budget = limits.first_round_steps.max(1);
    while !active.is_empty() {
        stats.rounds += 1;
        let mut still_active = Vec::with_capacity(active.len());
        for mut task in active {
            let remaining = limits.steps_total_max.saturating_sub(stats.steps);
            if remaining == 0 {
                gave_up.get_or_insert_with(|| {
                    format!(
                        "step budget of {} exhausted, key {:?} unfinished",
                        limits.steps_total_max, keys[task.key].0
                    )
                });
                continue;
            }
            let (progress, engine) = task.run(model, history, budget, remaining, &mut stats);
            match progress {
                Progress::Paused => still_active.push(task),
                Progress::Linearizable => {}
                Progress::NotLinearizable => {
                    let key = keys[task.key].0.to_string();
                    let violation = task.explain(model, history, &keys[task.key].1, engine, limits);
                    let verdict = match violation {
                        Some(violation) => Verdict::NotLinearizable {
                            key,
                            violation: Box::new(violation),
                        },
                        None => Verdict::Unknown {
                            reason: format!("search of key {key:?} failed without a trace"),
                        },
                    };
                    return Ok(CheckOutcome { verdict, stats });
                }
                Progress::MemoFull => {
                    gave_up.get_or_insert_with(|| {
                        format!(
                            "memo limit of {} entries reached on key {:?} ({} operations)",
                            task.entries_max,
                            keys[task.key].0,
                            task.searched.len()
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

/// Which search decided a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    DepthFirst,
    Frontier,
}

/// The searches of one key.
struct KeyTask<'a, M: Model> {
    key: usize,
    searched: Vec<usize>,
    entries_max: usize,
    /// `None` once it gave up (memo full), or if the strategy excludes it.
    depth_first: Option<KeySearch<'a, M>>,
    /// Built on its first turn, so keys the depth-first search settles at once never pay for it.
    frontier: Option<FrontierSearch<'a, M>>,
    /// True once the frontier search was built (or if the strategy excludes it).
    frontier_started: bool,
}

impl<'a, M: Model> KeyTask<'a, M> {
    /// Gives each live search `budget` steps; returns the first decision, else `Paused`, or
    /// `MemoFull` once no search is left.
    fn run(
        &mut self,
        model: &'a M,
        history: &'a History<M::Input, M::Output>,
        budget: u64,
        steps_left: u64,
        stats: &mut SearchStats,
    ) -> (Progress, Engine) {
        let steps_at_start = stats.steps;
        let budget = budget.min(steps_left);
        if let Some(search) = &mut self.depth_first {
            let before = search.steps();
            let progress = search.run(budget);
            stats.steps += search.steps() - before;
            stats.memo_entries_max = stats.memo_entries_max.max(search.memo_entries());
            match progress {
                Progress::Paused => {}
                Progress::MemoFull => self.depth_first = None,
                decided => return (decided, Engine::DepthFirst),
            }
        }
        // The depth-first search alone gets the first round: most keys end there, and they
        // should not pay for building a second search.
        if !self.frontier_started && (stats.rounds > 1 || self.depth_first.is_none()) {
            self.frontier_started = true;
            self.frontier = Some(FrontierSearch::new(
                model,
                history,
                &self.searched,
                self.entries_max,
            ));
        }
        let budget = budget.min(steps_left.saturating_sub(stats.steps - steps_at_start));
        if budget == 0 {
            return (Progress::Paused, Engine::DepthFirst);
        }
        if let Some(search) = &mut self.frontier {
            let before = search.steps();
            let progress = search.run(budget);
            stats.steps += search.steps() - before;
            stats.memo_entries_max = stats.memo_entries_max.max(search.frontier_len());
            match progress {
                Progress::Paused => {}
                Progress::MemoFull => self.frontier = None,
                decided => return (decided, Engine::Frontier),
            }
        }
        if self.depth_first.is_none() && self.frontier.is_none() {
            (Progress::MemoFull, Engine::DepthFirst)
        } else {
            (Progress::Paused, Engine::DepthFirst)
        }
    }

    /// Explains a violation found by `engine`.
    fn explain(
        &self,
        model: &M,
        history: &History<M::Input, M::Output>,
        key_ops: &[usize],
        engine: Engine,
        limits: &SearchLimits,
    ) -> Option<Violation> {
        if engine == Engine::Frontier {
            let failure = self.frontier.as_ref()?.failure()?;
            return Some(violation_from_frontier(model, history, key_ops, &failure));
        }
        let search = self.depth_first.as_ref()?;
        let failure = if search.tracks_values() {
            explain_failure(model, history, search.searched(), search.steps(), limits)
        } else {
            None
        };
        let failure = failure.or_else(|| search.failure())?;
        Some(violation_from_search(model, history, key_ops, &failure))
    }
}

/// The memo entry limit for a key of `operations` operations: the lower of the two limits.
fn memo_entries_max(limits: &SearchLimits, operations: usize) -> usize {
    let entry_bytes = operations.div_ceil(64).max(1) * 8 + crate::memo::ENTRY_OVERHEAD_BYTES;
    limits
        .memo_entries_per_key_max
        .min(limits.memo_bytes_per_key_max / entry_bytes)
        .max(1)
}

/// Steps the explanation search may take, as a multiple of the steps of the search that found
/// the violation, within [`EXPLANATION_STEPS_MIN`] and [`EXPLANATION_STEPS_MAX`].
const EXPLANATION_STEPS_FACTOR: u64 = 8;
/// See [`EXPLANATION_STEPS_FACTOR`].
const EXPLANATION_STEPS_MIN: u64 = 100_000;
/// See [`EXPLANATION_STEPS_FACTOR`]; keeps the explanation to a fraction of a second.
const EXPLANATION_STEPS_MAX: u64 = 10_000_000;

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
    let budget = steps
        .saturating_mul(EXPLANATION_STEPS_FACTOR)
        .clamp(EXPLANATION_STEPS_MIN, EXPLANATION_STEPS_MAX);
    let mut search = KeySearch::with_tracking(
        model,
        history,
        ops,
        memo_entries_max(limits, ops.len()),
        false,
    );
    match search.run(budget) {
        Progress::NotLinearizable => search.failure(),
        _ => None,
    }
}
