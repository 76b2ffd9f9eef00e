//! Cheap, sound tests that find common register violations without a search.
//!
//! They apply only to models that describe themselves as registers
//! ([`Model::register_initial_value`]) and only to keys whose every operation has a known
//! [`Access`]. Each test proves that *no* linearization exists, so a hit is a definite violation;
//! a miss proves nothing and the search runs as usual. Soundness with the awkward cases:
//! - duplicate values: a read is tied to *every* operation that may write its value, never to
//!   one guessed writer;
//! - indeterminate operations: they count as possible writers (with no end), never as definite
//!   overwriters, and their reads are ignored;
//! - the initial value counts as written by a virtual operation that ends before time 0.

use std::collections::BTreeMap;

use crate::history::History;
use crate::model::{Access, Model, ValueCode};

/// A time on a line that has room for "before everything" and "never ends".
type Time = i128;
const BEFORE_ALL: Time = -1;
const NEVER: Time = Time::MAX;

/// Which pre-check fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecheckKind {
    /// A read returned a value that no operation writes.
    ValueNeverWritten,
    /// A read returned before any operation writing its value was invoked.
    ReadBeforeWrite,
    /// A read began after an operation overwrote its value, and every write of that value had
    /// completed before the overwrite began.
    ReadOfOverwrittenValue,
}

/// A definite violation found by a pre-check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrecheckViolation {
    /// Which test fired.
    pub kind: PrecheckKind,
    /// The read that cannot be linearized (history index).
    pub read: usize,
    /// The overwriting operation, for [`PrecheckKind::ReadOfOverwrittenValue`].
    pub overwrite: Option<usize>,
    /// Every operation that may write the value read (history indices).
    pub writers: Vec<usize>,
}

#[derive(Debug)]
struct Writers {
    first_invoke: Time,
    last_return: Time,
    ops: Vec<usize>,
}

/// Runs the pre-checks on the operations `ops` (history indices) of one key.
pub fn precheck<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    ops: &[usize],
) -> Option<PrecheckViolation> {
    let initial = model.register_initial_value()?;
    let mut writers: BTreeMap<ValueCode, Writers> = BTreeMap::new();
    writers.insert(
        initial,
        Writers {
            first_invoke: BEFORE_ALL,
            last_return: BEFORE_ALL,
            ops: Vec::new(),
        },
    );
    // (invoke, return, value, history index) of definite reads.
    let mut reads: Vec<(Time, Time, ValueCode, usize)> = Vec::new();
    // (return, invoke, value, history index) of definite writes.
    let mut overwrites: Vec<(Time, Time, ValueCode, usize)> = Vec::new();
    for &index in ops {
        let op = &history.operations[index];
        let output = op.output();
        let invoke = Time::from(op.invoke_time);
        let returned = op.return_time().map(Time::from);
        let (read, write) = match model.access(&op.input, output) {
            Access::Opaque => return None,
            Access::Inert => (None, None),
            Access::Read(value) => (Some(value), None),
            Access::Write(value) => (None, Some(value)),
            Access::ReadWrite { read, write } => (Some(read), Some(write)),
        };
        if let Some(value) = write {
            let end = returned.unwrap_or(NEVER);
            let entry = writers.entry(value).or_insert(Writers {
                first_invoke: invoke,
                last_return: end,
                ops: Vec::new(),
            });
            entry.first_invoke = entry.first_invoke.min(invoke);
            entry.last_return = entry.last_return.max(end);
            entry.ops.push(index);
            if let Some(end) = returned {
                overwrites.push((end, invoke, value, index));
            }
        }
        if let (Some(value), Some(end)) = (read, returned) {
            reads.push((invoke, end, value, index));
        }
    }
    reads.sort_unstable();

    for &(_, read_return, value, index) in &reads {
        let Some(w) = writers.get(&value) else {
            return Some(PrecheckViolation {
                kind: PrecheckKind::ValueNeverWritten,
                read: index,
                overwrite: None,
                writers: Vec::new(),
            });
        };
        if w.first_invoke > read_return {
            return Some(PrecheckViolation {
                kind: PrecheckKind::ReadBeforeWrite,
                read: index,
                overwrite: None,
                writers: w.ops.clone(),
            });
        }
    }

    // Sweep reads by invocation, feeding in the definite writes that returned before each.
    overwrites.sort_unstable();
    let mut latest = TopTwo::default();
    let mut next_write = 0;
    for &(read_invoke, _, value, index) in &reads {
        while next_write < overwrites.len() && overwrites[next_write].0 < read_invoke {
            let (_, write_invoke, written, write_index) = overwrites[next_write];
            latest.add(write_invoke, written, write_index);
            next_write += 1;
        }
        let Some((overwrite_invoke, overwrite)) = latest.max_other_than(value) else {
            continue;
        };
        let Some(w) = writers.get(&value) else {
            continue;
        };
        if overwrite_invoke > w.last_return {
            return Some(PrecheckViolation {
                kind: PrecheckKind::ReadOfOverwrittenValue,
                read: index,
                overwrite: Some(overwrite),
                writers: w.ops.clone(),
            });
        }
    }
    None
}

/// The latest-invoked write, and the latest-invoked write of a different value.
#[derive(Debug, Default)]
struct TopTwo {
    first: Option<(Time, ValueCode, usize)>,
    second: Option<(Time, ValueCode, usize)>,
}

impl TopTwo {
    fn add(&mut self, invoke: Time, value: ValueCode, index: usize) {
        let candidate = (invoke, value, index);
        match (self.first, self.second) {
            (Some(first), _) if first.1 == value => {
                if invoke > first.0 {
                    self.first = Some(candidate);
                }
            }
            (Some(first), Some(second)) if second.1 == value => {
                if invoke > second.0 {
                    self.second = Some(candidate);
                }
                if invoke > first.0 {
                    self.second = Some(first);
                    self.first = Some(candidate);
                }
            }
            (Some(first), _) if invoke > first.0 => {
                self.second = Some(first);
                self.first = Some(candidate);
            }
            (Some(_), Some(second)) if invoke <= second.0 => {}
            (Some(_), _) => self.second = Some(candidate),
            (None, _) => self.first = Some(candidate),
        }
    }

    /// The latest invocation among writes of values other than `value`.
    fn max_other_than(&self, value: ValueCode) -> Option<(Time, usize)> {
        let pick = match self.first {
            Some(first) if first.1 != value => Some(first),
            _ => self.second,
        };
        pick.map(|(invoke, _, index)| (invoke, index))
    }
}

/// Indeterminate blind writes whose value no operation can observe; the search may drop them
/// without changing the verdict.
///
/// An indeterminate `Write(v)` invoked after every operation that may read `v` has returned can
/// only be linearized where nothing reads `v` before the next write, so removing it from any
/// linearization leaves a linearization, provided no determinate operation constrains the state
/// in a way [`Access`] does not describe (an `Inert` one, like a failed compare-and-set) — then
/// nothing is dropped.
pub fn unobservable_writes<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    ops: &[usize],
) -> Vec<usize> {
    if model.register_initial_value().is_none() {
        return Vec::new();
    }
    // Latest return of any operation that may read each value (NEVER if one is indeterminate).
    let mut last_read: BTreeMap<ValueCode, Time> = BTreeMap::new();
    let mut candidates = Vec::new();
    for &index in ops {
        let op = &history.operations[index];
        let end = op.return_time().map_or(NEVER, Time::from);
        let read = match model.access(&op.input, op.output()) {
            Access::Opaque => return Vec::new(),
            Access::Inert if op.output().is_some() => return Vec::new(),
            Access::Inert => None,
            Access::Read(value) | Access::ReadWrite { read: value, .. } => Some(value),
            Access::Write(value) => {
                if op.output().is_none() {
                    candidates.push((Time::from(op.invoke_time), value, index));
                }
                None
            }
        };
        if let Some(value) = read {
            let latest = last_read.entry(value).or_insert(BEFORE_ALL);
            *latest = (*latest).max(end);
        }
    }
    candidates
        .into_iter()
        .filter(|&(invoke, value, _)| last_read.get(&value).is_none_or(|&latest| latest < invoke))
        .map(|(_, _, index)| index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_two_tracks_distinct_values() {
        let mut t = TopTwo::default();
        t.add(5, 1, 0);
        t.add(3, 1, 1);
        assert_eq!(t.max_other_than(2), Some((5, 0)));
        assert_eq!(t.max_other_than(1), None);
        t.add(4, 2, 2);
        assert_eq!(t.max_other_than(1), Some((4, 2)));
        t.add(9, 2, 3);
        assert_eq!(t.max_other_than(1), Some((9, 3)));
        assert_eq!(t.max_other_than(2), Some((5, 0)));
        assert_eq!(t.max_other_than(3), Some((9, 3)));
        t.add(7, 3, 4);
        assert_eq!(t.max_other_than(2), Some((7, 4)));
    }
}
