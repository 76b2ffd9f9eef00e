//! Parsing of the counter commands, once for every driver: `INCR key`, `DECR key`,
//! `INCRBY key increment`, `DECRBY key decrement`, with Redis's arities and error texts.

use super::Command;
use crate::version::counter::parse_integer;
use bytes::Bytes;

/// Why a counter command's arguments were refused (before anything was sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterParseError {
    /// The wrong number of arguments for the command (Redis: "wrong number of arguments").
    Arity,
    /// The increment is not a Redis integer (Redis: "value is not an integer or out of range").
    NotAnInteger,
    /// `DECRBY key -9223372036854775808`: its negation leaves `i64` (Redis: "decrement would
    /// overflow").
    DecrementOverflow,
}

/// True for the names this module parses (case-insensitive).
pub fn is_counter_command(name: &[u8]) -> bool {
    canonical(name).is_some()
}

fn canonical(name: &[u8]) -> Option<&'static str> {
    ["INCR", "DECR", "INCRBY", "DECRBY"]
        .into_iter()
        .find(|known| known.as_bytes().eq_ignore_ascii_case(name))
}

/// Parses `name` with its arguments `args` (after the name) into [`Command::Increment`]; `None`
/// if `name` is not a counter command.
pub fn parse(name: &[u8], args: &[Bytes]) -> Option<Result<Command, CounterParseError>> {
    let name = canonical(name)?;
    let parsed = match (name, args) {
        ("INCR", [key]) => Ok((key, 1)),
        ("DECR", [key]) => Ok((key, -1)),
        ("INCRBY", [key, by]) => parse_integer(by)
            .map(|by| (key, by))
            .ok_or(CounterParseError::NotAnInteger),
        ("DECRBY", [key, by]) => match parse_integer(by) {
            None => Err(CounterParseError::NotAnInteger),
            Some(by) => by
                .checked_neg()
                .map(|delta| (key, delta))
                .ok_or(CounterParseError::DecrementOverflow),
        },
        _ => Err(CounterParseError::Arity),
    };
    Some(parsed.map(|(key, delta)| Command::Increment {
        key: key.clone(),
        delta,
        name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(parts: &[&str]) -> Option<Result<Command, CounterParseError>> {
        let args: Vec<Bytes> = parts[1..]
            .iter()
            .map(|p| Bytes::from(p.to_string()))
            .collect();
        parse(parts[0].as_bytes(), &args)
    }

    fn increment(key: &str, delta: i64, name: &'static str) -> Command {
        Command::Increment {
            key: Bytes::from(key.to_string()),
            delta,
            name,
        }
    }

    #[test]
    fn counter_commands_parse_as_redis_parses_them() {
        assert_eq!(run(&["incr", "k"]), Some(Ok(increment("k", 1, "INCR"))));
        assert_eq!(run(&["DECR", "k"]), Some(Ok(increment("k", -1, "DECR"))));
        assert_eq!(
            run(&["IncrBy", "k", "-7"]),
            Some(Ok(increment("k", -7, "INCRBY")))
        );
        assert_eq!(
            run(&["DECRBY", "k", "7"]),
            Some(Ok(increment("k", -7, "DECRBY")))
        );
        assert_eq!(
            run(&["DECRBY", "k", "-9223372036854775808"]),
            Some(Err(CounterParseError::DecrementOverflow))
        );
        assert_eq!(
            run(&["INCRBY", "k", "1.5"]),
            Some(Err(CounterParseError::NotAnInteger))
        );
        assert_eq!(run(&["INCR"]), Some(Err(CounterParseError::Arity)));
        assert_eq!(
            run(&["INCR", "k", "1"]),
            Some(Err(CounterParseError::Arity))
        );
        assert_eq!(run(&["INCRBY", "k"]), Some(Err(CounterParseError::Arity)));
        assert_eq!(run(&["GET", "k"]), None);
        assert!(is_counter_command(b"decrby") && !is_counter_command(b"incrbyfloat"));
    }
}
