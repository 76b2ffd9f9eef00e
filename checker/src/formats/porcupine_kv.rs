//! Porcupine's key-value histories: one EDN map per line.
//!
//! `{:process P, :type :invoke|:ok|:fail|:info, :f :get|:put|:append, :key "K", :value "V"|nil}`.
//! The line number is the time. `:fail` means the call did not happen (dropped); `:info`, or a
//! call never completed, is indeterminate.

use std::collections::BTreeMap;

use super::ParseError;
use crate::history::{History, Operation, Outcome};
use crate::models::kv_append::{KvAppend, KvInput, KvOutput};

/// A value in the subset of EDN these files use.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Int(u64),
    Keyword(String),
    Str(String),
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
        history.push(Operation { client, key: call.key, input: call.input, outcome, invoke_time: call.invoke_time });
    };
    for (number, line) in text.lines().enumerate() {
        let line_number = number + 1;
        let time = line_number as u64;
        if line.trim().is_empty() {
            continue;
        }
        let fields = parse_map(line).map_err(|message| ParseError::new(line_number, message))?;
        let field = |name: &str| {
            fields.get(name).ok_or_else(|| ParseError::new(line_number, format!("missing :{name}")))
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
        match kind.as_str() {
            "invoke" => {
                let input = match (function.as_str(), value) {
                    ("get", _) => KvInput::Get,
                    ("put", Value::Str(v)) => KvInput::Put(model.intern(v)),
                    ("append", Value::Str(v)) => KvInput::Append(model.intern(v)),
                    ("put" | "append", _) => {
                        return Err(ParseError::new(line_number, format!(":{function} needs a string :value")));
                    }
                    _ => return Err(ParseError::new(line_number, format!("unknown function :{function}"))),
                };
                let call = Pending { function: function.clone(), key: key.clone(), input, invoke_time: time };
                if let Some(previous) = pending.insert(*process, call) {
                    push(&mut history, *process, previous, Outcome::Indeterminate { reported_time: None });
                }
            }
            "ok" | "fail" | "info" => {
                let call = pending.remove(process).ok_or_else(|| {
                    ParseError::new(line_number, format!(":{kind} for process {process}, which has no pending call"))
                })?;
                if call.function != *function || call.key != *key {
                    return Err(ParseError::new(line_number, "completion does not match the pending call"));
                }
                let outcome = match (kind.as_str(), &call.input, value) {
                    ("ok", KvInput::Get, Value::Str(v)) => {
                        Outcome::Returned { output: KvOutput::Value(model.intern(v)), time }
                    }
                    ("ok", KvInput::Get, _) => {
                        return Err(ParseError::new(line_number, "a completed :get needs a string :value"));
                    }
                    ("ok", _, _) => Outcome::Returned { output: KvOutput::Written, time },
                    ("fail", _, _) => continue,
                    _ => Outcome::Indeterminate { reported_time: Some(time) },
                };
                push(&mut history, *process, call, outcome);
            }
            other => return Err(ParseError::new(line_number, format!("unknown :type :{other}"))),
        }
    }
    for (process, call) in pending {
        push(&mut history, process, call, Outcome::Indeterminate { reported_time: None });
    }
    Ok((model, history))
}

/// Parses `{:name value, ...}` into a map from names (without the colon) to values.
fn parse_map(line: &str) -> Result<BTreeMap<String, Value>, String> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| "expected a map in braces".to_string())?;
    let mut chars = body.chars().peekable();
    let mut fields = BTreeMap::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(fields);
        }
        let Value::Keyword(name) = parse_value(&mut chars)? else {
            return Err("expected a :keyword as map key".to_string());
        };
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let value = parse_value(&mut chars)?;
        if fields.insert(name.clone(), value).is_some() {
            return Err(format!("duplicate key :{name}"));
        }
    }
}

fn parse_value(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Value, String> {
    match chars.peek() {
        None => Err("unexpected end of line".to_string()),
        Some('"') => {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated string".to_string()),
                    Some('"') => return Ok(Value::Str(text)),
                    Some('\\') => match chars.next() {
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        Some(c @ ('"' | '\\')) => text.push(c),
                        other => return Err(format!("unsupported escape {other:?}")),
                    },
                    Some(c) => text.push(c),
                }
            }
        }
        Some(_) => {
            let mut token = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ',' {
                    break;
                }
                token.push(c);
                chars.next();
            }
            if let Some(name) = token.strip_prefix(':') {
                if name.is_empty() {
                    return Err("empty keyword".to_string());
                }
                Ok(Value::Keyword(name.to_string()))
            } else if token == "nil" {
                Ok(Value::Nil)
            } else {
                token.parse().map(Value::Int).map_err(|_| format!("unexpected token {token:?}"))
            }
        }
    }
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
        let KvOutput::Value(seen) = h.operations[1].output().copied().unwrap() else { panic!() };
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
