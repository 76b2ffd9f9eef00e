//! Porcupine's key-value model: per key a string register with get, put and append.
//!
//! # Keeping the state `Copy`
//! Strings are interned: a state is a [`StrId`], an index into a table owned by the model.
//! An append needs the id of `string(state) + string(arg)`; the model keeps a transition table
//! `(state, arg) -> state`, filled lazily on the first visit of each pair (the only allocation,
//! amortised over the search) and read with one hash lookup afterwards.
//!
//! The table stays small thanks to one observation: appends only extend a string, so once a state
//! is not a prefix of any value some `get` returned, no later `get` can succeed until a `put`
//! replaces it. All such states behave identically, so they collapse into one `DEAD` state. This
//! keeps the number of states near the number of prefixes of observed values and lets the memo
//! merge many otherwise distinct search states. The set of observed values is taken from the
//! history in [`Model::prepare`].

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use crate::fxhash::FxBuildHasher;
use crate::history::History;
use crate::model::Model;

/// An interned string; only meaningful with the [`KvAppend`] that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrId(u32);

/// The state standing for every string that no observed value starts with.
const DEAD: StrId = StrId(u32::MAX);

/// A call on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvInput {
    /// Read the string.
    Get,
    /// Replace the string.
    Put(StrId),
    /// Concatenate to the string.
    Append(StrId),
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOutput {
    /// A put or append was acknowledged.
    Written,
    /// A get returned this string.
    Value(StrId),
}

#[derive(Debug, Default)]
struct Tables {
    strings: Vec<String>,
    ids: HashMap<String, u32>,
    /// Every value a `get` returned; `None` until [`Model::prepare`] ran (then nothing collapses).
    observed: Option<BTreeSet<String>>,
    transitions: HashMap<u64, StrId, FxBuildHasher>,
}

impl Tables {
    fn intern(&mut self, text: &str) -> StrId {
        if let Some(&id) = self.ids.get(text) {
            return StrId(id);
        }
        let id = u32::try_from(self.strings.len()).expect("fewer than 2^32 - 1 distinct strings");
        assert!(id != DEAD.0, "string table full");
        self.strings.push(text.to_string());
        self.ids.insert(text.to_string(), id);
        StrId(id)
    }

    /// True if some observed value starts with `candidate` (or nothing is known yet).
    fn is_live(&self, candidate: &str) -> bool {
        let Some(observed) = &self.observed else {
            return true;
        };
        // Strings starting with `candidate` sort right at or after it, so the first one there
        // decides.
        observed
            .range::<str, _>((
                std::ops::Bound::Included(candidate),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|value| value.starts_with(candidate))
    }

    fn append(&mut self, state: StrId, arg: StrId) -> StrId {
        let key = (u64::from(state.0) << 32) | u64::from(arg.0);
        if let Some(&next) = self.transitions.get(&key) {
            return next;
        }
        let mut joined = self.strings[state.0 as usize].clone();
        joined.push_str(&self.strings[arg.0 as usize]);
        let next = if self.is_live(&joined) {
            self.intern(&joined)
        } else {
            DEAD
        };
        self.transitions.insert(key, next);
        next
    }
}

/// Per-key string registers with get/put/append; every key starts as `""`.
#[derive(Debug)]
pub struct KvAppend {
    tables: RefCell<Tables>,
    empty: StrId,
}

impl Default for KvAppend {
    fn default() -> Self {
        Self::new()
    }
}

impl KvAppend {
    /// A model with an empty string table.
    pub fn new() -> Self {
        let mut tables = Tables::default();
        let empty = tables.intern("");
        Self {
            tables: RefCell::new(tables),
            empty,
        }
    }

    /// The id of `text`, interning it if new. Use it to build inputs and outputs.
    pub fn intern(&self, text: &str) -> StrId {
        self.tables.borrow_mut().intern(text)
    }

    /// The text of an id from this model (`"<dead>"` for the collapsed state).
    pub fn text(&self, id: StrId) -> String {
        if id == DEAD {
            return "<dead>".to_string();
        }
        self.tables
            .borrow()
            .strings
            .get(id.0 as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// Number of strings interned so far (inputs, outputs and reachable states).
    pub fn interned_strings(&self) -> usize {
        self.tables.borrow().strings.len()
    }
}

impl Model for KvAppend {
    type State = StrId;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> StrId {
        self.empty
    }

    #[inline]
    fn step(&self, state: StrId, input: &KvInput, output: Option<&KvOutput>) -> Option<StrId> {
        match (input, output) {
            (KvInput::Get, Some(KvOutput::Value(seen))) => (*seen == state).then_some(state),
            (KvInput::Get, None) => Some(state),
            (KvInput::Put(value), Some(KvOutput::Written) | None) => Some(*value),
            (KvInput::Append(arg), Some(KvOutput::Written) | None) => {
                if state == DEAD {
                    return Some(DEAD);
                }
                Some(self.tables.borrow_mut().append(state, *arg))
            }
            _ => None,
        }
    }

    fn is_read_only(&self, input: &KvInput) -> bool {
        matches!(input, KvInput::Get)
    }

    fn prepare(&self, history: &History<KvInput, KvOutput>) {
        let mut tables = self.tables.borrow_mut();
        let mut observed = BTreeSet::new();
        for op in &history.operations {
            if let (KvInput::Get, Some(KvOutput::Value(id))) = (&op.input, op.output()) {
                if let Some(text) = tables.strings.get(id.0 as usize) {
                    observed.insert(text.clone());
                }
            }
        }
        tables.observed = Some(observed);
        // Liveness may have changed, so cached transitions may be stale.
        tables.transitions.clear();
    }

    fn describe_operation(&self, input: &KvInput, output: Option<&KvOutput>) -> String {
        match (input, output) {
            (KvInput::Get, Some(KvOutput::Value(seen))) => format!("get {:?}", self.text(*seen)),
            (KvInput::Get, _) => "get ?".to_string(),
            (KvInput::Put(value), _) => format!("put {:?}", self.text(*value)),
            (KvInput::Append(arg), _) => format!("append {:?}", self.text(*arg)),
        }
    }

    fn describe_state(&self, state: StrId) -> String {
        format!("{:?}", self.text(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Operation, Outcome};

    #[test]
    fn appends_collapse_outside_observed_prefixes() {
        let m = KvAppend::new();
        let a = m.intern("a");
        let b = m.intern("b");
        let ab = m.intern("ab");
        let mut history = History::new();
        history.push(Operation {
            client: 0,
            key: "k".into(),
            input: KvInput::Get,
            outcome: Outcome::Returned {
                output: KvOutput::Value(ab),
                time: 1,
            },
            invoke_time: 0,
        });
        m.prepare(&history);
        let w = Some(&KvOutput::Written);
        let s1 = m.step(m.init(), &KvInput::Append(a), w).unwrap();
        assert_eq!(m.text(s1), "a");
        assert_eq!(m.step(s1, &KvInput::Append(b), w), Some(ab));
        // "b" is no prefix of "ab": dead, and stays dead.
        let dead = m.step(m.init(), &KvInput::Append(b), w).unwrap();
        assert_eq!(dead, DEAD);
        assert_eq!(m.step(dead, &KvInput::Append(a), w), Some(DEAD));
        assert_eq!(
            m.step(dead, &KvInput::Get, Some(&KvOutput::Value(ab))),
            None
        );
        assert_eq!(m.step(dead, &KvInput::Put(a), w), Some(a));
    }
}
