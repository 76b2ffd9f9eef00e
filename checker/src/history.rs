//! Histories: what clients invoked, what they were told, and when.

use std::collections::BTreeMap;
use std::fmt;

/// Identifies the client (process, session) that issued an operation. One client issues one
/// operation at a time, except that it may move on after an operation with an unknown outcome.
pub type ClientId = u64;

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The client was told `output` at `time`; the operation took effect exactly once, somewhere
    /// between its invocation and `time`.
    Returned {
        /// What the client was told.
        output: O,
        /// When it was told, on the same clock as the invocation.
        time: u64,
    },
    /// The client never learned the outcome (timeout, crash, `:info`): the operation may take
    /// effect at any point after its invocation, even after `reported_time`, or never.
    Indeterminate {
        /// When the client gave up, if known; for reports only, it does not bound the effect.
        reported_time: Option<u64>,
    },
}

/// One call of one client on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued the call.
    pub client: ClientId,
    /// The key the call touched; keys are checked independently (P-compositionality).
    pub key: String,
    /// What was asked.
    pub input: I,
    /// How it ended.
    pub outcome: Outcome<O>,
    /// When it was invoked. Times are any monotone clock (a log line number works); an event at
    /// time `t` is taken as concurrent with another at the same `t`.
    pub invoke_time: u64,
}

impl<I, O> Operation<I, O> {
    /// The output, if the outcome is known.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Indeterminate { .. } => None,
        }
    }

    /// The return time, if the outcome is known.
    pub fn return_time(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Returned { time, .. } => Some(time),
            Outcome::Indeterminate { .. } => None,
        }
    }
}

/// A history: operations in any order (the checker sorts by time itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    /// The operations; their indices are how reports refer to them.
    pub operations: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        Self {
            operations: Vec::new(),
        }
    }
}

/// Why a history cannot be checked at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// An operation returned before it was invoked.
    ReturnBeforeInvoke {
        /// Index of the operation in [`History::operations`].
        operation: usize,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReturnBeforeInvoke { operation } => {
                write!(f, "operation #{operation} returns before it is invoked")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation and returns its index.
    pub fn push(&mut self, operation: Operation<I, O>) -> usize {
        self.operations.push(operation);
        self.operations.len() - 1
    }

    /// Checks the time stamps; every other shape is accepted.
    pub fn validate(&self) -> Result<(), HistoryError> {
        for (index, op) in self.operations.iter().enumerate() {
            if let Some(time) = op.return_time() {
                if time < op.invoke_time {
                    return Err(HistoryError::ReturnBeforeInvoke { operation: index });
                }
            }
        }
        Ok(())
    }

    /// Operation indices grouped by key, keys in sorted order (so reports are deterministic).
    pub fn partition_by_key(&self) -> BTreeMap<&str, Vec<usize>> {
        let mut keys: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, op) in self.operations.iter().enumerate() {
            keys.entry(op.key.as_str()).or_default().push(index);
        }
        keys
    }
}
