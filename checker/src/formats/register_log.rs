//! ringkv's own history log, for [`crate::Register`]: one event per line.
//!
//! ```text
//! # comments and blank lines are ignored; times are integers (any unit), keys have no spaces
//! <time> <client> invoke <key> put <write-id>
//! <time> <client> invoke <key> delete
//! <time> <client> invoke <key> get
//! <time> <client> ok                 # a put or delete was acknowledged
//! <time> <client> ok <write-id>      # a get returned this value (0 = absent)
//! <time> <client> info               # outcome unknown (timeout, crash)
//! <time> <client> fail               # definitely did not happen (dropped)
//! ```
//! A call still pending at the end, or when its client invokes again, is indeterminate.

use std::collections::BTreeMap;

use super::ParseError;
use crate::history::{History, Operation, Outcome};
use crate::models::register::{RegisterInput, RegisterOutput};

#[derive(Debug)]
struct Pending {
    key: String,
    input: RegisterInput,
    invoke_time: u64,
}

/// Parses a ringkv register log.
pub fn parse(text: &str) -> Result<History<RegisterInput, RegisterOutput>, ParseError> {
    let mut history = History::new();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let push = |history: &mut History<RegisterInput, RegisterOutput>,
                client: u64,
                call: Pending,
                outcome| {
        history.push(Operation {
            client,
            key: call.key,
            input: call.input,
            outcome,
            invoke_time: call.invoke_time,
        });
    };
    for (number, raw) in text.lines().enumerate() {
        let line_number = number + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number_at = |i: usize, what: &str| -> Result<u64, ParseError> {
            fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| {
                ParseError::new(line_number, format!("expected {what} in field {}", i + 1))
            })
        };
        let time = number_at(0, "a time")?;
        let client = number_at(1, "a client id")?;
        match fields.get(2).copied() {
            Some("invoke") => {
                let key = fields
                    .get(3)
                    .ok_or_else(|| ParseError::new(line_number, "missing key"))?
                    .to_string();
                let (input, arity) = match fields.get(4).copied() {
                    Some("put") => (RegisterInput::Put(number_at(5, "a write id")?), 6),
                    Some("delete") => (RegisterInput::Delete, 5),
                    Some("get") => (RegisterInput::Get, 5),
                    other => {
                        return Err(ParseError::new(
                            line_number,
                            format!("unknown operation {other:?}"),
                        ))
                    }
                };
                if fields.len() != arity {
                    return Err(ParseError::new(line_number, "unexpected trailing fields"));
                }
                if let Some(previous) = pending.insert(
                    client,
                    Pending {
                        key,
                        input,
                        invoke_time: time,
                    },
                ) {
                    push(
                        &mut history,
                        client,
                        previous,
                        Outcome::Indeterminate {
                            reported_time: None,
                        },
                    );
                }
            }
            Some(kind @ ("ok" | "info" | "fail")) => {
                let call = pending.remove(&client).ok_or_else(|| {
                    ParseError::new(
                        line_number,
                        format!("{kind} for client {client}, which has no pending call"),
                    )
                })?;
                if time < call.invoke_time {
                    return Err(ParseError::new(line_number, "completion before invocation"));
                }
                let outcome = match (kind, call.input) {
                    ("ok", RegisterInput::Get) => {
                        let value = number_at(3, "the value read")?;
                        Outcome::Returned {
                            output: RegisterOutput::Value(value),
                            time,
                        }
                    }
                    ("ok", _) => Outcome::Returned {
                        output: RegisterOutput::Written,
                        time,
                    },
                    ("info", _) => Outcome::Indeterminate {
                        reported_time: Some(time),
                    },
                    _ => continue,
                };
                push(&mut history, client, call, outcome);
            }
            other => {
                return Err(ParseError::new(
                    line_number,
                    format!("unknown event {other:?}"),
                ))
            }
        }
    }
    for (client, call) in pending {
        push(
            &mut history,
            client,
            call,
            Outcome::Indeterminate {
                reported_time: None,
            },
        );
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let h = parse("1 7 invoke a put 3\n2 8 invoke a get\n3 7 ok\n4 8 ok 3 # comment\n5 9 invoke a delete\n")
            .unwrap();
        assert_eq!(h.operations.len(), 3);
        assert_eq!(h.operations[1].output(), Some(&RegisterOutput::Value(3)));
        assert!(parse("1 7 ok").is_err());
        assert!(parse("1 7 invoke a put").is_err());
        assert!(parse("x 7 invoke a get").is_err());
        assert!(parse("5 7 invoke a get\n4 7 ok 1").is_err());
    }
}
