//! `INCR`, `DECR`, `INCRBY`, `DECRBY`: the RESP side of core's counter commands
//! (`ringkv_core::command::counter` parses them once for every driver; this renders its
//! refusals as Redis words them).

use super::Command;
use crate::resp::Reply;
use bytes::Bytes;
use ringkv_core::command::counter::{self, CounterParseError};

/// Parses a counter command (`name` as sent, `rest` its arguments); `None` if `name` is none.
pub fn parse(name: &[u8], rest: &[Bytes]) -> Option<Result<Command, Reply>> {
    let parsed = counter::parse(name, rest)?;
    Some(parsed.map(Command::Counter).map_err(|e| match e {
        CounterParseError::Arity => {
            super::wrong_arity(&String::from_utf8_lossy(name).to_ascii_lowercase())
        }
        CounterParseError::NotAnInteger => Reply::err("value is not an integer or out of range"),
        CounterParseError::DecrementOverflow => Reply::err("decrement would overflow"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from(p.to_string())).collect()
    }

    #[test]
    fn counter_commands_parse_and_refuse_as_redis_does() {
        let incr = super::super::parse(&args(&["incrby", "k", "5"]));
        assert_eq!(
            incr,
            Ok(Command::Counter(ringkv_core::command::Command::Increment {
                key: Bytes::from_static(b"k"),
                delta: 5,
                name: "INCRBY",
            }))
        );
        for (parts, error) in [
            (
                &["INCRBY", "k", "x"][..],
                "ERR value is not an integer or out of range",
            ),
            (
                &["DECRBY", "k", "-9223372036854775808"],
                "ERR decrement would overflow",
            ),
            (
                &["incr"],
                "ERR wrong number of arguments for 'incr' command",
            ),
        ] {
            match super::super::parse(&args(parts)) {
                Err(Reply::Error(text)) => assert_eq!(text, error),
                other => panic!("{parts:?}: {other:?}"),
            }
        }
    }
}
