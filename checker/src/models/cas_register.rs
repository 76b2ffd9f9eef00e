//! The compare-and-set register of Jepsen's etcd test.

use crate::model::{Access, Model, ValueCode};

/// A register value; `None` is Jepsen's `nil`, the initial value.
pub type CasValue = Option<i64>;

/// A call on the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasInput {
    /// Read the value.
    Read,
    /// Set the value.
    Write(i64),
    /// Set the value to `to` if it is `from`.
    Cas {
        /// The value the register must hold.
        from: i64,
        /// The value to store.
        to: i64,
    },
    /// Set the value to `to` if it is `nil` (Redis's `SET NX`, ringkv's `KV.CAS ... ABSENT`):
    /// the compare-and-set from `nil`, which `Cas` cannot name.
    CasAbsent {
        /// The value to store.
        to: i64,
    },
}

/// What the client was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutput {
    /// A read returned this value.
    Read(CasValue),
    /// A write, or a compare-and-set, applied.
    Ok,
    /// A compare-and-set definitely did not apply: the register did not hold `from`.
    CasFailed,
}

/// A compare-and-set register, initially `nil`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CasRegister;

/// Encodes a value injectively for the pre-checks: `nil` is 0, `v` is `2^64 + (v as u64)`.
fn code(value: CasValue) -> ValueCode {
    match value {
        None => 0,
        Some(v) => (1u128 << 64) | ValueCode::from(v as u64),
    }
}

impl Model for CasRegister {
    type State = CasValue;
    type Input = CasInput;
    type Output = CasOutput;

    fn init(&self) -> CasValue {
        None
    }

    fn step(
        &self,
        state: CasValue,
        input: &CasInput,
        output: Option<&CasOutput>,
    ) -> Option<CasValue> {
        match (input, output) {
            (CasInput::Read, Some(CasOutput::Read(seen))) => (*seen == state).then_some(state),
            (CasInput::Read, None) => Some(state),
            (CasInput::Write(value), Some(CasOutput::Ok) | None) => Some(Some(*value)),
            (CasInput::Cas { from, to }, Some(CasOutput::Ok) | None) => {
                (state == Some(*from)).then_some(Some(*to))
            }
            (CasInput::Cas { from, .. }, Some(CasOutput::CasFailed)) => {
                (state != Some(*from)).then_some(state)
            }
            (CasInput::CasAbsent { to }, Some(CasOutput::Ok) | None) => {
                state.is_none().then_some(Some(*to))
            }
            (CasInput::CasAbsent { .. }, Some(CasOutput::CasFailed)) => {
                state.is_some().then_some(state)
            }
            _ => None,
        }
    }

    fn is_read_only(&self, input: &CasInput) -> bool {
        matches!(input, CasInput::Read)
    }

    fn preserves_state(&self, input: &CasInput, output: &CasOutput) -> bool {
        matches!(input, CasInput::Read) || matches!(output, CasOutput::CasFailed)
    }

    fn register_initial_value(&self) -> Option<ValueCode> {
        Some(code(None))
    }

    fn access(&self, input: &CasInput, output: Option<&CasOutput>) -> Access {
        match (input, output) {
            (CasInput::Read, Some(CasOutput::Read(seen))) => Access::Read(code(*seen)),
            (CasInput::Write(value), Some(CasOutput::Ok) | None) => {
                Access::Write(code(Some(*value)))
            }
            // With an unknown outcome it may apply (reading `from`, writing `to`) or not; the
            // pre-checks only use the read of a determinate operation.
            (CasInput::Cas { from, to }, Some(CasOutput::Ok) | None) => Access::ReadWrite {
                read: code(Some(*from)),
                write: code(Some(*to)),
            },
            (CasInput::CasAbsent { to }, Some(CasOutput::Ok) | None) => Access::ReadWrite {
                read: code(None),
                write: code(Some(*to)),
            },
            _ => Access::Inert,
        }
    }

    fn describe_operation(&self, input: &CasInput, output: Option<&CasOutput>) -> String {
        let result = match output {
            None => "?".to_string(),
            Some(CasOutput::Ok) => "ok".to_string(),
            Some(CasOutput::CasFailed) => "fail".to_string(),
            Some(CasOutput::Read(value)) => describe_value(*value),
        };
        match input {
            CasInput::Read => format!("read {result}"),
            CasInput::Write(value) => format!("write {value} {result}"),
            CasInput::Cas { from, to } => format!("cas {from}->{to} {result}"),
            CasInput::CasAbsent { to } => format!("cas nil->{to} {result}"),
        }
    }

    fn describe_state(&self, state: CasValue) -> String {
        describe_value(state)
    }
}

fn describe_value(value: CasValue) -> String {
    value.map_or_else(|| "nil".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_table() {
        let m = CasRegister;
        let cas = CasInput::Cas { from: 1, to: 2 };
        assert_eq!(m.step(Some(1), &cas, Some(&CasOutput::Ok)), Some(Some(2)));
        assert_eq!(m.step(Some(3), &cas, Some(&CasOutput::Ok)), None);
        assert_eq!(
            m.step(Some(3), &cas, Some(&CasOutput::CasFailed)),
            Some(Some(3))
        );
        assert_eq!(m.step(Some(1), &cas, Some(&CasOutput::CasFailed)), None);
        assert_eq!(m.step(None, &cas, None), None);
        assert_eq!(
            m.step(None, &CasInput::Read, Some(&CasOutput::Read(None))),
            Some(None)
        );
        assert_eq!(
            m.step(Some(1), &CasInput::Read, Some(&CasOutput::Read(None))),
            None
        );
        let nx = CasInput::CasAbsent { to: 4 };
        assert_eq!(m.step(None, &nx, Some(&CasOutput::Ok)), Some(Some(4)));
        assert_eq!(m.step(None, &nx, None), Some(Some(4)));
        assert_eq!(m.step(Some(1), &nx, Some(&CasOutput::Ok)), None);
        assert_eq!(
            m.step(Some(1), &nx, Some(&CasOutput::CasFailed)),
            Some(Some(1))
        );
        assert_eq!(m.step(None, &nx, Some(&CasOutput::CasFailed)), None);
        assert_ne!(code(None), code(Some(0)));
        assert_ne!(code(Some(-1)), code(Some(0)));
    }
}
