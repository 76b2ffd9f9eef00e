//! The sequential specification a history is checked against.
//!
//! A [`Model`] is a deterministic state machine. The search calls [`Model::step`] millions of
//! times, so states are small `Copy` values and a step must not allocate in the common case.

use std::fmt::Debug;
use std::hash::Hash;

use crate::history::History;

/// A sequential specification: the legal behaviours of one object (one key) run alone.
///
/// Contract:
/// - `step` is a pure function of its arguments (same arguments, same answer), apart from
///   caches that do not change its answers.
/// - `step(state, input, None)` is asked about an operation whose outcome is unknown. It returns
///   the state after the operation *if it took effect at this point*, or `None` if it cannot take
///   effect here. Such an operation may also never take effect; the search handles that case
///   itself, so the model does not need to return "unchanged" for it.
pub trait Model {
    /// The object's state; hashed and compared in the search's memo, so keep it small.
    type State: Copy + Eq + Hash + Debug;
    /// What a client asked for.
    type Input: Debug;
    /// What a client was told.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after applying `input` with the observed `output` (`None` = unknown outcome), or
    /// `None` if that observation is illegal in `state`.
    fn step(
        &self,
        state: Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// True if `input` never changes the state; an operation with such an input and an unknown
    /// outcome constrains nothing and is dropped before the search.
    fn is_read_only(&self, input: &Self::Input) -> bool;

    /// True if an operation with this input and (known) output never changes the state, in any
    /// state where it is legal: a read, or a compare-and-set known to have failed. The search
    /// linearizes such operations as early as possible without trying alternatives, so a wrong
    /// `true` makes the checker unsound; the default is [`Model::is_read_only`].
    fn preserves_state(&self, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = output;
        self.is_read_only(input)
    }

    /// Called once per history before any `step`, so a model can build lookup tables (see
    /// [`crate::KvAppend`]). The default does nothing.
    fn prepare(&self, history: &History<Self::Input, Self::Output>) {
        let _ = history;
    }

    /// If the model is a plain register, its initial value as a [`ValueCode`]; this enables the
    /// cheap pre-checks of [`crate::precheck`], which read operations through
    /// [`Model::access`]. `None` (the default) disables them.
    fn register_initial_value(&self) -> Option<ValueCode> {
        None
    }

    /// How an operation reads and writes the register (only used when
    /// [`Model::register_initial_value`] is `Some`). `output` is `None` for an unknown outcome;
    /// then describe what the operation does *if* it takes effect.
    fn access(&self, input: &Self::Input, output: Option<&Self::Output>) -> Access {
        let _ = (input, output);
        Access::Opaque
    }

    /// A short human label for an operation, e.g. `put 7` or `read -> 3`; for reports only.
    fn describe_operation(&self, input: &Self::Input, output: Option<&Self::Output>) -> String;

    /// A short human label for a state; for reports only.
    fn describe_state(&self, state: Self::State) -> String;
}

/// A register value encoded injectively as an integer, so pre-checks can compare values of any
/// register model without knowing its types.
pub type ValueCode = u128;

/// How one operation touches a register, as seen by the pre-checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Observes the value and changes nothing.
    Read(ValueCode),
    /// Sets the value, whatever it was.
    Write(ValueCode),
    /// Atomically observes `read` and sets `write` (a successful compare-and-set, or one whose
    /// outcome is unknown).
    ReadWrite {
        /// The value observed.
        read: ValueCode,
        /// The value written.
        write: ValueCode,
    },
    /// Neither observes a single value nor writes (e.g. a failed compare-and-set).
    Inert,
    /// Unknown effect: the pre-checks of the whole key are skipped.
    Opaque,
}
