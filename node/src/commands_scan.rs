//! `SCAN`, `KEYS`, `TYPE` and `TIME`: parsing (pure, tested as a table) and the rendering of
//! their results. What the commands mean lives in core (`ringkv_core::command::scan`,
//! `ringkv_core::node::scan`); see node/README.md, "Scans, DBSIZE, TYPE and TIME".

use crate::commands::Command;
use crate::resp::Reply;
use bytes::Bytes;
use ringkv_core::command::scan::{ScanCommand, ScanResult, SCAN_COUNT_DEFAULT};

/// Parses the commands of this file; `None` for any other command name (`lower` is the name in
/// lower case, `rest` its arguments).
pub fn parse(lower: &str, rest: &[Bytes]) -> Option<Result<Command, Reply>> {
    let wrong_arity = || {
        Err(Reply::err(format!(
            "wrong number of arguments for '{lower}' command"
        )))
    };
    Some(match (lower, rest) {
        ("scan", [cursor, options @ ..]) => parse_scan(cursor, options).map(Command::Scan),
        ("keys", [pattern]) => Ok(Command::Scan(ScanCommand::Keys {
            pattern: pattern.clone(),
        })),
        ("type", [key]) => Ok(Command::Type(key.clone())),
        ("time", []) => Ok(Command::Time),
        ("scan" | "keys" | "type" | "time", _) => wrong_arity(),
        _ => return None,
    })
}

fn parse_scan(cursor: &[u8], options: &[Bytes]) -> Result<ScanCommand, Reply> {
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))?;
    let (mut pattern, mut count, mut type_name) = (None, SCAN_COUNT_DEFAULT, None);
    let mut i = 0;
    while i < options.len() {
        let Some(value) = options.get(i + 1) else {
            return Err(Reply::err("syntax error"));
        };
        match options[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => {
                count = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| Reply::err("value is not an integer or out of range"))?
                    .try_into()
                    .ok()
                    .filter(|&count: &u32| count >= 1)
                    .ok_or_else(|| Reply::err("syntax error"))?;
            }
            b"TYPE" => type_name = Some(value.clone()),
            _ => return Err(Reply::err("syntax error")),
        }
        i += 2;
    }
    Ok(ScanCommand::Scan {
        cursor,
        pattern,
        count,
        type_name,
        level: None,
    })
}

/// The RESP reply of a scan command; `failure` renders a reply that was not a success.
pub fn scan_reply(
    result: ScanResult,
    failure: impl Fn(&ringkv_core::ClientReply) -> Reply,
) -> Reply {
    let keys = |keys: Vec<Bytes>| Reply::Array(keys.into_iter().map(Reply::Bulk).collect());
    match result {
        ScanResult::Page { cursor, keys: page } => Reply::Array(vec![
            Reply::Bulk(Bytes::from(cursor.to_string())),
            keys(page),
        ]),
        ScanResult::Keys(all) => keys(all),
        ScanResult::TooManyKeys { max } => {
            Reply::err(format!("KEYS would return more than {max} keys; use SCAN"))
        }
        ScanResult::Size(live_keys) => Reply::Integer(i64::try_from(live_keys).unwrap_or(i64::MAX)),
        ScanResult::Failed(reply) => failure(&reply),
    }
}

/// `TIME`: the node's wall clock as Redis gives it, seconds and microseconds as bulk strings.
pub fn time_reply(wall_micros: u64) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Bytes::from((wall_micros / 1_000_000).to_string())),
        Reply::Bulk(Bytes::from((wall_micros % 1_000_000).to_string())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(parts: &[&str]) -> Option<Result<Command, Reply>> {
        let args: Vec<Bytes> = parts.iter().map(|p| Bytes::from(p.to_string())).collect();
        parse(&parts[0].to_ascii_lowercase(), &args[1..])
    }

    fn error(parts: &[&str]) -> String {
        match parsed(parts) {
            Some(Err(Reply::Error(text))) => text,
            other => panic!("expected an error for {parts:?}, got {other:?}"),
        }
    }

    #[test]
    fn scan_keys_type_and_time_parse() {
        let scan =
            |cursor, pattern: Option<&'static [u8]>, count, type_name: Option<&'static [u8]>| {
                Some(Ok(Command::Scan(ScanCommand::Scan {
                    cursor,
                    pattern: pattern.map(Bytes::from_static),
                    count,
                    type_name: type_name.map(Bytes::from_static),
                    level: None,
                })))
            };
        assert_eq!(parsed(&["scan", "0"]), scan(0, None, 10, None));
        assert_eq!(
            parsed(&["SCAN", "123", "match", "a*", "COUNT", "50", "TYPE", "string"]),
            scan(123, Some(b"a*"), 50, Some(b"string"))
        );
        assert_eq!(
            parsed(&["keys", "a*"]),
            Some(Ok(Command::Scan(ScanCommand::Keys {
                pattern: Bytes::from_static(b"a*")
            })))
        );
        assert_eq!(
            parsed(&["type", "k"]),
            Some(Ok(Command::Type(Bytes::from_static(b"k"))))
        );
        assert_eq!(parsed(&["time"]), Some(Ok(Command::Time)));
        assert_eq!(parsed(&["get", "k"]), None);
    }

    #[test]
    fn bad_scans_get_redis_errors() {
        assert_eq!(error(&["scan", "x"]), "ERR invalid cursor");
        assert_eq!(error(&["scan", "-1"]), "ERR invalid cursor");
        assert_eq!(error(&["scan", "0", "count", "0"]), "ERR syntax error");
        assert_eq!(
            error(&["scan", "0", "count", "x"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error(&["scan", "0", "match"]), "ERR syntax error");
        assert_eq!(error(&["scan", "0", "bogus", "1"]), "ERR syntax error");
        assert!(error(&["scan"]).contains("wrong number of arguments for 'scan'"));
        assert!(error(&["keys"]).contains("wrong number of arguments"));
        assert!(error(&["time", "x"]).contains("wrong number of arguments"));
    }

    #[test]
    fn replies_render_as_redis_does() {
        let failure = |_: &ringkv_core::ClientReply| Reply::err("failed");
        assert_eq!(
            scan_reply(
                ScanResult::Page {
                    cursor: 0,
                    keys: vec![Bytes::from_static(b"a")]
                },
                failure
            ),
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"0")),
                Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"a"))])
            ])
        );
        assert_eq!(
            scan_reply(ScanResult::TooManyKeys { max: 10 }, failure),
            Reply::err("KEYS would return more than 10 keys; use SCAN")
        );
        assert_eq!(
            time_reply(1_700_000_000_123_456),
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"1700000000")),
                Reply::Bulk(Bytes::from_static(b"123456"))
            ])
        );
    }
}
