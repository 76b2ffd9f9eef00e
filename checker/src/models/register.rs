//! ringkv's own register: values are write ids, 0 means absent.

use crate::model::{Access, Model, ValueCode};

/// The value of an absent (never written or deleted) key.
pub const ABSENT: u64 = 0;

/// A ringkv client call on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterInput {
    /// Store a value (a write id; `put 0` is a delete).
    Put(u64),
    /// Remove the value, i.e. store [`ABSENT`].
    Delete,
    /// Read the value.
    Get,
}

/// What a ringkv client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    /// A put or delete was acknowledged.
    Written,
    /// A get returned this value ([`ABSENT`] if there was none).
    Value(u64),
}

/// A last-writer-wins register of write ids, initially [`ABSENT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Register;

impl Model for Register {
    type State = u64;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> u64 {
        ABSENT
    }

    fn step(
        &self,
        state: u64,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<u64> {
        match (input, output) {
            (RegisterInput::Put(value), Some(RegisterOutput::Written) | None) => Some(*value),
            (RegisterInput::Delete, Some(RegisterOutput::Written) | None) => Some(ABSENT),
            (RegisterInput::Get, Some(RegisterOutput::Value(seen))) => {
                (*seen == state).then_some(state)
            }
            (RegisterInput::Get, None) => Some(state),
            // A reply of the wrong shape is an illegal observation.
            _ => None,
        }
    }

    fn is_read_only(&self, input: &RegisterInput) -> bool {
        matches!(input, RegisterInput::Get)
    }

    fn register_initial_value(&self) -> Option<ValueCode> {
        Some(ValueCode::from(ABSENT))
    }

    fn access(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> Access {
        match (input, output) {
            (RegisterInput::Put(value), _) => Access::Write(ValueCode::from(*value)),
            (RegisterInput::Delete, _) => Access::Write(ValueCode::from(ABSENT)),
            (RegisterInput::Get, Some(RegisterOutput::Value(seen))) => {
                Access::Read(ValueCode::from(*seen))
            }
            (RegisterInput::Get, _) => Access::Inert,
        }
    }

    fn describe_operation(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> String {
        match (input, output) {
            (RegisterInput::Put(value), _) => format!("put {value}"),
            (RegisterInput::Delete, _) => "delete".to_string(),
            (RegisterInput::Get, Some(RegisterOutput::Value(seen))) => format!("get {seen}"),
            (RegisterInput::Get, _) => "get ?".to_string(),
        }
    }

    fn describe_state(&self, state: u64) -> String {
        state.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_table() {
        let m = Register;
        assert_eq!(
            m.step(0, &RegisterInput::Put(5), Some(&RegisterOutput::Written)),
            Some(5)
        );
        assert_eq!(m.step(5, &RegisterInput::Delete, None), Some(ABSENT));
        assert_eq!(
            m.step(5, &RegisterInput::Get, Some(&RegisterOutput::Value(5))),
            Some(5)
        );
        assert_eq!(
            m.step(5, &RegisterInput::Get, Some(&RegisterOutput::Value(4))),
            None
        );
        assert_eq!(
            m.step(5, &RegisterInput::Put(1), Some(&RegisterOutput::Value(4))),
            None
        );
    }
}
