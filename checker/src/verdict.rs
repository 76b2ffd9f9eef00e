//! Verdicts, and the failing window a violation is explained with.

use std::collections::BTreeSet;
use std::fmt;

use crate::frontier::FrontierFailure;
use crate::history::{ClientId, History, Outcome};
use crate::model::{Access, Model};
use crate::precheck::{PrecheckKind, PrecheckViolation};
use crate::search::Failure;

/// Most operations a failing window shows; beyond that the timeline stops being readable.
pub const WINDOW_OPERATIONS_MAX: usize = 40;

/// The answer of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key has a linearization of all its determinate operations.
    Linearizable,
    /// Some key has none; the first one found (in key order, round by round) is reported.
    NotLinearizable {
        /// The key whose history is not linearizable.
        key: String,
        /// Why, with the window of operations around the failure.
        violation: Box<Violation>,
    },
    /// The check gave up within its limits; nothing is claimed either way.
    Unknown {
        /// Which limit was hit, and where.
        reason: String,
    },
}

impl Verdict {
    /// `linearizable`, `not linearizable` or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Linearizable => "linearizable",
            Self::NotLinearizable { .. } => "not linearizable",
            Self::Unknown { .. } => "unknown",
        }
    }

    /// True for [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable)
    }

    /// True for [`Verdict::NotLinearizable`].
    pub fn is_violation(&self) -> bool {
        matches!(self, Self::NotLinearizable { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linearizable => write!(f, "linearizable"),
            Self::NotLinearizable { key, violation } => {
                write!(
                    f,
                    "not linearizable (key {key:?}, {})",
                    violation.explanation
                )
            }
            Self::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

/// The part an operation plays in a failing window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Could not be linearized at the point the search got stuck.
    Culprit,
    /// Part of the longest linearizable prefix found.
    Linearized,
    /// Not in that prefix.
    Pending,
    /// Evidence for a pre-check (a writer or an overwrite of the value read).
    Witness,
    /// Around the failure, with no claim about it (the frontier search keeps no prefix).
    Context,
}

/// One operation of a failing window, ready to draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowOp {
    /// Index in [`History::operations`].
    pub index: usize,
    /// The client that issued it (one timeline lane per client).
    pub client: ClientId,
    /// Input and output, e.g. `write 3 ok`.
    pub label: String,
    /// Invocation time.
    pub invoke_time: u64,
    /// Return time; `None` if the outcome is unknown.
    pub return_time: Option<u64>,
    /// For an unknown outcome: when the client gave up, if known.
    pub reported_time: Option<u64>,
    /// Its part in the failure.
    pub role: Role,
    /// Position in the longest linearizable prefix, if it is in it (1-based).
    pub linearized_at: Option<usize>,
}

/// Why a key is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// One sentence for humans.
    pub explanation: String,
    /// The operations around the failure, sorted by invocation time.
    pub window: Vec<WindowOp>,
    /// Operations of the key that entered the check.
    pub key_operations: usize,
    /// Length of the longest linearizable prefix found (0 for a pre-check).
    pub prefix_length: usize,
}

fn window_op<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    index: usize,
    role: Role,
    linearized_at: Option<usize>,
) -> WindowOp {
    let op = &history.operations[index];
    let reported_time = match op.outcome {
        Outcome::Indeterminate { reported_time } => reported_time,
        Outcome::Returned { .. } => None,
    };
    WindowOp {
        index,
        client: op.client,
        label: model.describe_operation(&op.input, op.output()),
        invoke_time: op.invoke_time,
        return_time: op.return_time(),
        reported_time,
        role,
        linearized_at,
    }
}

fn overlaps(op_start: u64, op_end: Option<u64>, start: u64, end: u64) -> bool {
    op_start <= end && op_end.is_none_or(|e| e >= start)
}

/// Keeps at most [`WINDOW_OPERATIONS_MAX`] operations, those nearest to `focus` in invocation
/// order, always keeping the ones whose role is `keep`.
fn trim(window: &mut Vec<WindowOp>, focus: u64) {
    window.sort_by_key(|w| (w.invoke_time, w.index));
    if window.len() > WINDOW_OPERATIONS_MAX {
        let mut ranked: Vec<(bool, u64, usize)> = window
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    w.role != Role::Culprit && w.role != Role::Witness,
                    w.invoke_time.abs_diff(focus),
                    i,
                )
            })
            .collect();
        ranked.sort_unstable();
        let keep: BTreeSet<usize> = ranked
            .iter()
            .take(WINDOW_OPERATIONS_MAX)
            .map(|r| r.2)
            .collect();
        let mut position = 0;
        window.retain(|_| {
            position += 1;
            keep.contains(&(position - 1))
        });
    }
}

/// Explains a search failure: the culprit, the operations pending at that point, the
/// linearized operations overlapping them, and the last few linearized operations before.
pub(crate) fn violation_from_search<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    key_ops: &[usize],
    failure: &Failure<M::State>,
) -> Violation {
    let culprit = &history.operations[failure.culprit];
    let end = culprit.return_time().unwrap_or(culprit.invoke_time);
    let in_prefix: std::collections::BTreeMap<usize, usize> = failure
        .prefix
        .iter()
        .enumerate()
        .map(|(position, &index)| (index, position + 1))
        .collect();
    let mut start = culprit.invoke_time;
    for &index in key_ops {
        let op = &history.operations[index];
        if !in_prefix.contains_key(&index) && op.return_time().is_some() && op.invoke_time <= end {
            start = start.min(op.invoke_time);
        }
    }
    let context_from = failure.prefix.len().saturating_sub(3);
    let writers = latest_writers_of_read(model, history, key_ops, failure.culprit);
    let mut window = Vec::new();
    for &index in key_ops {
        let op = &history.operations[index];
        let position = in_prefix.get(&index).copied();
        let recent = position.is_some_and(|p| p > context_from);
        if index != failure.culprit
            && !recent
            && !writers.contains(&index)
            && !overlaps(op.invoke_time, op.return_time(), start, end)
        {
            continue;
        }
        let role = if index == failure.culprit {
            Role::Culprit
        } else if position.is_some() {
            Role::Linearized
        } else {
            Role::Pending
        };
        window.push(window_op(model, history, index, role, position));
    }
    trim(&mut window, culprit.invoke_time);
    let explanation = format!(
        "after the longest linearizable prefix ({} of {} operations, state {}), `{}` by client {} \
         cannot be linearized",
        failure.prefix.len(),
        key_ops.len(),
        model.describe_state(failure.state_after_prefix),
        model.describe_operation(&culprit.input, culprit.output()),
        culprit.client,
    );
    Violation {
        explanation,
        window,
        key_operations: key_ops.len(),
        prefix_length: failure.prefix.len(),
    }
}

/// For a register-like model and a culprit that reads a value: the (at most two) operations
/// invoked last before the culprit returned that may write that value, the usual suspects.
fn latest_writers_of_read<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    key_ops: &[usize],
    culprit: usize,
) -> Vec<usize> {
    if model.register_initial_value().is_none() {
        return Vec::new();
    }
    let op = &history.operations[culprit];
    let wanted = match model.access(&op.input, op.output()) {
        Access::Read(value) | Access::ReadWrite { read: value, .. } => value,
        _ => return Vec::new(),
    };
    let end = op.return_time().unwrap_or(op.invoke_time);
    let mut writers: Vec<(u64, usize)> = key_ops
        .iter()
        .filter(|&&i| i != culprit)
        .filter_map(|&i| {
            let w = &history.operations[i];
            match model.access(&w.input, w.output()) {
                Access::Write(value) | Access::ReadWrite { write: value, .. }
                    if value == wanted && w.invoke_time <= end =>
                {
                    Some((w.invoke_time, i))
                }
                _ => None,
            }
        })
        .collect();
    writers.sort_unstable_by(|a, b| b.cmp(a));
    writers.into_iter().take(2).map(|(_, i)| i).collect()
}

/// Explains a pre-check hit: the read, the writers of its value nearest to it, the overwrite,
/// and whatever overlaps the read.
pub(crate) fn violation_from_precheck<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    key_ops: &[usize],
    hit: &PrecheckViolation,
) -> Violation {
    let read = &history.operations[hit.read];
    let start = read.invoke_time;
    let end = read.return_time().unwrap_or(start);
    let mut witnesses: Vec<usize> = hit.writers.clone();
    // The writers closest in time tell the story; the rest would only crowd the picture.
    witnesses.sort_by_key(|&i| (history.operations[i].invoke_time.abs_diff(start), i));
    witnesses.truncate(4);
    witnesses.extend(hit.overwrite);
    let mut window = Vec::new();
    for &index in key_ops {
        let op = &history.operations[index];
        let role = if index == hit.read {
            Role::Culprit
        } else if witnesses.contains(&index) {
            Role::Witness
        } else if overlaps(op.invoke_time, op.return_time(), start, end) {
            Role::Pending
        } else {
            continue;
        };
        window.push(window_op(model, history, index, role, None));
    }
    trim(&mut window, start);
    let label = model.describe_operation(&read.input, read.output());
    let explanation = match hit.kind {
        PrecheckKind::ValueNeverWritten => {
            format!(
                "`{label}` by client {} returns a value that is never written",
                read.client
            )
        }
        PrecheckKind::ReadBeforeWrite => format!(
            "`{label}` by client {} returns before any write of its value is invoked",
            read.client
        ),
        PrecheckKind::ReadOfOverwrittenValue => {
            let overwrite = hit.overwrite.map_or_else(String::new, |i| {
                let op = &history.operations[i];
                format!(
                    "`{}` by client {}",
                    model.describe_operation(&op.input, op.output()),
                    op.client
                )
            });
            format!(
                "`{label}` by client {} returns a value already overwritten by {overwrite}, which \
                 completed before the read began and after every write of that value",
                read.client
            )
        }
    };
    Violation {
        explanation,
        window,
        key_operations: key_ops.len(),
        prefix_length: 0,
    }
}

/// Explains a failure of the frontier search: the culprit, the operations overlapping it, the
/// last few that returned before it was invoked, and the latest writers of what it read.
pub(crate) fn violation_from_frontier<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    key_ops: &[usize],
    failure: &FrontierFailure,
) -> Violation {
    let culprit = &history.operations[failure.culprit];
    let (start, end) = (culprit.invoke_time, failure.return_time);
    let mut writers = latest_writers_of_read(model, history, key_ops, failure.culprit);
    if let Some(read) = failure.starved_read {
        writers.extend(latest_writers_of_read(model, history, key_ops, read));
    }
    // The three operations that returned last before the culprit was invoked.
    let mut before: Vec<(u64, usize)> = key_ops
        .iter()
        .filter_map(|&i| {
            history.operations[i]
                .return_time()
                .filter(|&t| t < start)
                .map(|t| (t, i))
        })
        .collect();
    before.sort_unstable_by(|a, b| b.cmp(a));
    before.truncate(3);
    let mut window = Vec::new();
    for &index in key_ops {
        let op = &history.operations[index];
        let role = if index == failure.culprit {
            Role::Culprit
        } else if Some(index) == failure.starved_read {
            Role::Witness
        } else if writers.contains(&index)
            || before.iter().any(|&(_, i)| i == index)
            || overlaps(op.invoke_time, op.return_time(), start, end)
        {
            Role::Context
        } else {
            continue;
        };
        window.push(window_op(model, history, index, role, None));
    }
    trim(&mut window, start);
    let mut explanation = format!(
        "no linearization of the operations before it lets `{}` by client {} take effect before \
         it returns at time {}",
        model.describe_operation(&culprit.input, culprit.output()),
        culprit.client,
        failure.return_time,
    );
    if let Some(read) = failure.starved_read {
        let op = &history.operations[read];
        explanation.push_str(&format!(
            " without leaving the later `{}` by client {} (invoked at time {}) no write to read",
            model.describe_operation(&op.input, op.output()),
            op.client,
            op.invoke_time
        ));
    }
    Violation {
        explanation,
        window,
        key_operations: key_ops.len(),
        prefix_length: 0,
    }
}
