//! Parsing and replies of the conditional writes (issue #13, item 2): `SET key value [NX|XX]
//! [GET]` and `KV.CAS key ABSENT new` / `KV.CAS key VALUE expected new`. Pure, so it is tested
//! as a table; core's `command::conditional` gives them their meaning and `node::paxos` runs
//! them (always on the linearizable path, whatever the level).
//!
//! "Expected absent" is a keyword of its own (`ABSENT`), with the expected bytes behind another
//! (`VALUE`): every byte string, the empty one included, is a value a key may hold, so none can
//! stand for absence.

use crate::commands::Command;
use crate::resp::Reply;
use bytes::Bytes;
use ringkv_core::command::{SetCondition, SetOptions};

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]` after the command name
/// (`rest` has at least key and value). Options are parsed as Redis does (any order, `NX` with
/// `XX` or two expiries a syntax error); expiries are parsed but refused here until TTL is wired
/// (issue #13 item 1). A plain `SET key value` stays `Command::Set`.
pub fn parse_set(rest: &[Bytes]) -> Result<Command, Reply> {
    let (key, value) = (rest[0].clone(), rest[1].clone());
    if rest.len() == 2 {
        return Ok(Command::Set(key, value));
    }
    let mut options = SetOptions::default();
    let mut expiry_given = false;
    let mut args = rest[2..].iter();
    while let Some(arg) = args.next() {
        match upper(arg).as_str() {
            "NX" if options.condition.is_none() => options.condition = Some(SetCondition::Absent),
            "XX" if options.condition.is_none() => options.condition = Some(SetCondition::Present),
            "GET" => options.get = true,
            "KEEPTTL" if !expiry_given => {
                expiry_given = true;
                options.keep_ttl = true;
            }
            "EX" | "PX" | "EXAT" | "PXAT" if !expiry_given => {
                expiry_given = true;
                let amount = args.next().ok_or_else(syntax_error)?;
                std::str::from_utf8(amount)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| Reply::err("invalid expire time in 'set' command"))?;
            }
            _ => return Err(syntax_error()),
        }
    }
    if expiry_given {
        // An expiry alone is the TTL path's; with a condition it would need the expiry inside
        // the Paxos proposal, which conditional writes do not carry yet.
        if options.condition.is_none() && !options.get {
            return crate::commands_ttl::parse_set(rest);
        }
        return Err(Reply::err(
            "SET combining NX, XX or GET with EX, PX, EXAT, PXAT or KEEPTTL is not supported yet \
             by ringkv",
        ));
    }
    Ok(Command::SetConditional {
        key,
        value,
        options,
    })
}

/// `KV.CAS key ABSENT new` or `KV.CAS key VALUE expected new`, after the command name.
pub fn parse_kv_cas(rest: &[Bytes]) -> Result<Command, Reply> {
    match rest {
        [key, mode, value] if upper(mode) == "ABSENT" => Ok(Command::KvCas {
            key: key.clone(),
            expected: None,
            value: value.clone(),
        }),
        [key, mode, expected, value] if upper(mode) == "VALUE" => Ok(Command::KvCas {
            key: key.clone(),
            expected: Some(expected.clone()),
            value: value.clone(),
        }),
        [_, mode, ..] if !matches!(upper(mode).as_str(), "ABSENT" | "VALUE") => Err(Reply::err(
            "KV.CAS expects ABSENT or VALUE after the key: KV.CAS key ABSENT new | KV.CAS key \
             VALUE expected new",
        )),
        _ => Err(Reply::err("wrong number of arguments for 'kv.cas' command")),
    }
}

/// The reply to a conditional `SET`, as Redis gives it: with `GET`, the value before (nil if
/// absent) whether or not it wrote; without, `OK` when written and nil when the condition was
/// false.
pub fn set_reply(applied: bool, previous: Option<Bytes>, get: bool) -> Reply {
    match (get, applied) {
        (true, _) => previous.map_or(Reply::Null, Reply::Bulk),
        (false, true) => Reply::ok(),
        (false, false) => Reply::Null,
    }
}

/// The reply to `KV.CAS`: 1 when written, 0 when the key did not hold the expected value.
pub fn cas_reply(applied: bool) -> Reply {
    Reply::Integer(i64::from(applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn set_options_parse_as_redis_does() {
        assert_eq!(
            parse_set(&args(&["k", "v"])),
            Ok(Command::Set(b("k"), b("v")))
        );
        let conditional = |condition, get| Command::SetConditional {
            key: b("k"),
            value: b("v"),
            options: SetOptions {
                condition,
                get,
                ..SetOptions::default()
            },
        };
        assert_eq!(
            parse_set(&args(&["k", "v", "nx"])),
            Ok(conditional(Some(SetCondition::Absent), false))
        );
        assert_eq!(
            parse_set(&args(&["k", "v", "GET", "XX"])),
            Ok(conditional(Some(SetCondition::Present), true))
        );
        assert_eq!(
            parse_set(&args(&["k", "v", "GET"])),
            Ok(conditional(None, true))
        );
        for bad in [
            &["k", "v", "NX", "XX"][..],
            &["k", "v", "BOGUS"],
            &["k", "v", "EX"],
        ] {
            assert_eq!(parse_set(&args(bad)), Err(syntax_error()), "{bad:?}");
        }
        // An expiry alone is the TTL path's command; with a condition it is refused.
        assert!(matches!(
            parse_set(&args(&["k", "v", "EX", "10"])),
            Ok(Command::Ttl(_))
        ));
        assert!(parse_set(&args(&["k", "v", "NX", "EX", "10"])).is_err());
        assert!(parse_set(&args(&["k", "v", "EX", "0"])).is_err());
    }

    #[test]
    fn kv_cas_names_absence_with_a_keyword() {
        assert_eq!(
            parse_kv_cas(&args(&["k", "absent", "new"])),
            Ok(Command::KvCas {
                key: b("k"),
                expected: None,
                value: b("new"),
            })
        );
        assert_eq!(
            parse_kv_cas(&args(&["k", "VALUE", "", "new"])),
            Ok(Command::KvCas {
                key: b("k"),
                expected: Some(Bytes::new()),
                value: b("new"),
            }),
            "an empty expected value is a value"
        );
        assert!(parse_kv_cas(&args(&["k", "old", "new"])).is_err());
        assert!(parse_kv_cas(&args(&["k", "VALUE", "new"])).is_err());
        assert!(parse_kv_cas(&args(&["k"])).is_err());
    }

    #[test]
    fn replies_follow_redis() {
        assert_eq!(set_reply(true, None, false), Reply::ok());
        assert_eq!(set_reply(false, Some(b("a")), false), Reply::Null);
        assert_eq!(set_reply(false, Some(b("a")), true), Reply::Bulk(b("a")));
        assert_eq!(set_reply(true, None, true), Reply::Null);
        assert_eq!(cas_reply(true), Reply::Integer(1));
        assert_eq!(cas_reply(false), Reply::Integer(0));
    }
}
