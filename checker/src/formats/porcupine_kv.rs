//! Porcupine's key-value histories: one EDN map per line.
//!
//! `{:process P, :type :invoke|:ok|:fail|:info, :f :get|:put|:append, :key "K", :value "V"|nil}`.
//! The line number is the time. `:fail` means the call did not happen (dropped); `:info`, or a
//! call never completed, is indeterminate.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::ParseError;
use crate::history::{History, Operation, Outcome};
use crate::models::kv_append::{KvAppend, KvInput, KvOutput};

/// A value in the subset of EDN these files use, borrowed from the line where possible.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value<'a> {
    Int(u64),
    Keyword(&'a str),
    Str(Cow<'a, str>),
    Nil,
}

#[derive(Debug)]
struct Pending {
    function: String,
    key: String,
    input: KvInput,
    invoke_time: u64,
}

/// Parses a history for [`KvAppend`]; returns the model holding the interned strings.
pub fn parse(text: &str) -> Result<(KvAppend, History<KvInput, KvOutput>), ParseError> {
    let model = KvAppend::new();
    let mut history = History::new();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let push = |history: &mut History<KvInput, KvOutput>, client: u64, call: Pending, outcome| {
        history.push(Operation {
            client,
            key: call.key,
            input: call.input,
            outcome,
            invoke_time: call.invoke_time,
        });
    };
    for (number, line) in text.lines().enumerate() {
        let line_number = number + 1;
        let time = line_number as u64;
        if line.trim().is_empty() {
            continue;
        }
        let fields = parse_map(line).map_err(|message| ParseError::new(line_number, message))?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| *field == name)
                .map(|(_, value)| value)
                .ok_or_else(|| ParseError::new(line_number, format!("missing :{name}")))
        };
        let Value::Int(process) = field("process")? else {
            return Err(ParseError::new(line_number, ":process must be an integer"));
        };
        let Value::Keyword(kind) = field("type")? else {
            return Err(ParseError::new(line_number, ":type must be a keyword"));
        };
        let Value::Keyword(function) = field("f")? else {
            return Err(ParseError::new(line_number, ":f must be a keyword"));
        };
        let Value::Str(key) = field("key")? else {
            return Err(ParseError::new(line_number, ":key must be a string"));
        };
        let value = field("value")?;
        match *kind {
            "invoke" => {
                let input = match (*function, value) {
                    ("get", _) => KvInput::Get,
                    ("put", Value::Str(v)) => KvInput::Put(model.intern(v)),
                    ("append", Value::Str(v)) => KvInput::Append(model.intern(v)),
                    ("put" | "append", _) => {
                        return Err(ParseError::new(
                            line_number,
                            format!(":{function} needs a string :value"),
                        ));
                    }
                    _ => {
                        return Err(ParseError::new(
                            line_number,
                            format!("unknown function :{function}"),
                        ))
                    }
                };
                let call = Pending {
                    function: function.to_string(),
                    key: key.to_string(),
                    input,
                    invoke_time: time,
                };
                if let Some(previous) = pending.insert(*process, call) {
                    push(
                        &mut history,
                        *process,
                        previous,
                        Outcome::Indeterminate {
                            reported_time: None,
                        },
                    );
                }
            }
            "ok" | "fail" | "info" => {
                let call = pending.remove(process).ok_or_else(|| {
                    ParseError::new(
                        line_number,
                        format!(":{kind} for process {process}, which has no pending call"),
                    )
                })?;
                if call.function != *function || call.key != **key {
                    return Err(ParseError::new(
                        line_number,
                        "completion does not match the pending call",
                    ));
                }
                let outcome = match (*kind, &call.input, value) {
                    ("ok", KvInput::Get, Value::Str(v)) => Outcome::Returned {
                        output: KvOutput::Value(model.intern(v)),
                        time,
                    },
                    ("ok", KvInput::Get, _) => {
                        return Err(ParseError::new(
                            line_number,
                            "a completed :get needs a string :value",
                        ));
                    }
                    ("ok", _, _) => Outcome::Returned {
                        output: KvOutput::Written,
                        time,
                    },
                    ("fail", _, _) => continue,
                    _ => Outcome::Indeterminate {
                        reported_time: Some(time),
                    },
                };
                push(&mut history, *process, call, outcome);
            }
            other => {
                return Err(ParseError::new(
                    line_number,
                    format!("unknown :type :{other}"),
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
    Ok((model, history))
}

/// Parses `{:name value, ...}` into (name without the colon, value) pairs.
fn parse_map(line: &str) -> Result<Vec<(&str, Value<'_>)>, String> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| "expected a map in braces".to_string())?;
    let mut rest = body;
    let mut fields: Vec<(&str, Value<'_>)> = Vec::with_capacity(5);
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            return Ok(fields);
        }
        let (name, after) = parse_value(rest)?;
        let Value::Keyword(name) = name else {
            return Err("expected a :keyword as map key".to_string());
        };
        let (value, after) = parse_value(after.trim_start())?;
        if fields.iter().any(|(existing, _)| *existing == name) {
            return Err(format!("duplicate key :{name}"));
        }
        fields.push((name, value));
        rest = after;
    }
}

/// Parses one value at the start of `text`; returns it and the text after it.
fn parse_value(text: &str) -> Result<(Value<'_>, &str), String> {
    if let Some(body) = text.strip_prefix('"') {
        let mut owned: Option<String> = None;
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    let value = match owned {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&body[..i]),
                    };
                    return Ok((Value::Str(value), &body[i + 1..]));
                }
                '\\' => {
                    let buffer = owned.get_or_insert_with(|| body[..i].to_string());
                    match chars.next() {
                        Some((_, 'n')) => buffer.push('\n'),
                        Some((_, 't')) => buffer.push('\t'),
                        Some((_, c @ ('"' | '\\'))) => buffer.push(c),
                        other => {
                            return Err(format!("unsupported escape {:?}", other.map(|o| o.1)))
                        }
                    }
                }
                c => {
                    if let Some(buffer) = &mut owned {
                        buffer.push(c);
                    }
                }
            }
        }
        return Err("unterminated string".to_string());
    }
    if text.is_empty() {
        return Err("unexpected end of line".to_string());
    }
    let end = text
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(text.len());
    let (token, after) = text.split_at(end);
    let value = if let Some(name) = token.strip_prefix(':') {
        if name.is_empty() {
            return Err("empty keyword".to_string());
        }
        Value::Keyword(name)
    } else if token == "nil" {
        Value::Nil
    } else {
        Value::Int(
            token
                .parse()
                .map_err(|_| format!("unexpected token {token:?}"))?,
        )
    };
    Ok((value, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_history() {
        let text = r#"{:process 0, :type :invoke, :f :append, :key "k", :value "x 0 0 y"}
{:process 1, :type :invoke, :f :get, :key "k", :value nil}
{:process 0, :type :ok, :f :append, :key "k", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "k", :value "x 0 0 y"}
"#;
        let (model, h) = parse(text).unwrap();
        assert_eq!(h.operations.len(), 2);
        let KvOutput::Value(seen) = h.operations[1].output().copied().unwrap() else {
            panic!()
        };
        assert_eq!(model.text(seen), "x 0 0 y");
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "{:process 0, :type :invoke, :f :append, :key \"k\"}",
            "{:process 0, :type :invoke, :f :append, :key \"k\", :value nil}",
            "{:process x, :type :invoke, :f :get, :key \"k\", :value nil}",
            ":process 0",
            "{:process 0, :type :invoke, :f :get, :key \"k, :value nil}",
            "{:process 0, :type :ok, :f :get, :key \"k\", :value \"\"}",
            "{:process 0, :type :invoke, :f :frob, :key \"k\", :value nil}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
