//! Jepsen's etcd logs: one compare-and-set register per file.
//!
//! Lines that matter read `INFO  jepsen.util - <process> <type> <f> <value>` (tabs or spaces);
//! every other line, and lines whose process is not a number (the nemesis), are ignored. The line
//! number is the time. Outcomes:
//! - `:ok` completes the process's pending call;
//! - `:fail :cas` is a completed compare-and-set that did not apply;
//! - `:fail :read` / `:fail :write` did not happen and are dropped;
//! - `:info`, a call never completed, or a call still pending when its process invokes again, is
//!   indeterminate.

use std::collections::BTreeMap;

use super::ParseError;
use crate::history::{History, Operation, Outcome};
use crate::models::cas_register::{CasInput, CasOutput};

/// The key every operation of an etcd log gets.
pub const KEY: &str = "etcd";

const MARKER: &str = "jepsen.util - ";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    Read,
    Write,
    Cas,
}

#[derive(Debug)]
struct Pending {
    function: Function,
    input: CasInput,
    invoke_time: u64,
}

/// Parses a Jepsen etcd log into a history for [`crate::CasRegister`].
pub fn parse(text: &str) -> Result<History<CasInput, CasOutput>, ParseError> {
    let mut history = History::new();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let push = |history: &mut History<CasInput, CasOutput>, client: u64, call: Pending, outcome| {
        history.push(Operation {
            client,
            key: KEY.to_string(),
            input: call.input,
            outcome,
            invoke_time: call.invoke_time,
        });
    };
    for (number, line) in text.lines().enumerate() {
        let line_number = number + 1;
        let time = line_number as u64;
        let Some(start) = line.find(MARKER) else {
            continue;
        };
        let rest = &line[start + MARKER.len()..];
        let mut fields = rest.split_whitespace();
        let Some(Ok(process)) = fields.next().map(str::parse::<u64>) else {
            continue;
        };
        let kind = fields
            .next()
            .ok_or_else(|| ParseError::new(line_number, "missing event type"))?;
        let function = match fields.next() {
            Some(":read") => Function::Read,
            Some(":write") => Function::Write,
            Some(":cas") => Function::Cas,
            Some(other) => {
                return Err(ParseError::new(
                    line_number,
                    format!("unknown function {other:?}"),
                ));
            }
            None => return Err(ParseError::new(line_number, "missing function")),
        };
        let value: Vec<&str> = fields.collect();
        let value = value.join(" ");
        match kind {
            ":invoke" => {
                let input = match function {
                    Function::Read => CasInput::Read,
                    Function::Write => CasInput::Write(parse_int(&value, line_number)?),
                    Function::Cas => {
                        let (from, to) = parse_pair(&value, line_number)?;
                        CasInput::Cas { from, to }
                    }
                };
                let call = Pending {
                    function,
                    input,
                    invoke_time: time,
                };
                if let Some(previous) = pending.insert(process, call) {
                    push(
                        &mut history,
                        process,
                        previous,
                        Outcome::Indeterminate {
                            reported_time: None,
                        },
                    );
                }
            }
            ":ok" | ":fail" | ":info" => {
                let call = pending.remove(&process).ok_or_else(|| {
                    ParseError::new(
                        line_number,
                        format!("{kind} for process {process}, which has no pending call"),
                    )
                })?;
                if call.function != function {
                    return Err(ParseError::new(
                        line_number,
                        format!(
                            "completion {function:?} does not match the pending {:?}",
                            call.function
                        ),
                    ));
                }
                let outcome = match (kind, function) {
                    (":ok", Function::Read) => {
                        let seen = if value == "nil" {
                            None
                        } else {
                            Some(parse_int(&value, line_number)?)
                        };
                        Outcome::Returned {
                            output: CasOutput::Read(seen),
                            time,
                        }
                    }
                    (":ok", _) => Outcome::Returned {
                        output: CasOutput::Ok,
                        time,
                    },
                    (":fail", Function::Cas) => Outcome::Returned {
                        output: CasOutput::CasFailed,
                        time,
                    },
                    (":fail", _) => continue,
                    _ => Outcome::Indeterminate {
                        reported_time: Some(time),
                    },
                };
                push(&mut history, process, call, outcome);
            }
            other => {
                return Err(ParseError::new(
                    line_number,
                    format!("unknown event type {other:?}"),
                ))
            }
        }
    }
    for (process, call) in pending {
        push(
            &mut history,
            process,
            call,
            Outcome::Indeterminate {
                reported_time: None,
            },
        );
    }
    Ok(history)
}

fn parse_int(text: &str, line: usize) -> Result<i64, ParseError> {
    text.trim()
        .parse()
        .map_err(|_| ParseError::new(line, format!("expected an integer, found {text:?}")))
}

fn parse_pair(text: &str, line: usize) -> Result<(i64, i64), ParseError> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| ParseError::new(line, format!("expected [from to], found {text:?}")))?;
    let mut parts = inner.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(from), Some(to), None) => Ok((parse_int(from, line)?, parse_int(to, line)?)),
        _ => Err(ParseError::new(
            line,
            format!("expected [from to], found {text:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_outcomes() {
        let text = "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n\
                    INFO  jepsen.util - 1   :invoke :cas    [1 2]\n\
                    noise\n\
                    INFO  jepsen.util - 0\t:ok\t:read\t3\n\
                    INFO  jepsen.util - 1\t:fail\t:cas\t[1 2]\n\
                    INFO  jepsen.util - 2\t:invoke\t:write\t4\n\
                    INFO  jepsen.util - 2\t:info\t:write\t:timed-out\n\
                    INFO  jepsen.util - 3\t:invoke\t:read\tnil\n\
                    INFO  jepsen.util - 3\t:fail\t:read\t:timed-out\n\
                    INFO  jepsen.util - 4\t:invoke\t:write\t5\n";
        let h = parse(text).unwrap();
        assert_eq!(h.operations.len(), 4);
        assert_eq!(h.operations[0].output(), Some(&CasOutput::Read(Some(3))));
        assert_eq!(h.operations[1].output(), Some(&CasOutput::CasFailed));
        assert_eq!(
            h.operations[2].outcome,
            Outcome::Indeterminate {
                reported_time: Some(7)
            }
        );
        assert_eq!(h.operations[3].input, CasInput::Write(5));
        assert_eq!(
            h.operations[3].outcome,
            Outcome::Indeterminate {
                reported_time: None
            }
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "INFO  jepsen.util - 0\t:ok\t:read\t1",
            "INFO  jepsen.util - 0\t:invoke\t:write\tx",
            "INFO  jepsen.util - 0\t:invoke\t:cas\t[1]",
            "INFO  jepsen.util - 0\t:invoke\t:frob\t1",
            "INFO  jepsen.util - 0\t:bogus\t:read\t1",
            "INFO  jepsen.util - 0",
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:write\t1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
