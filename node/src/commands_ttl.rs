//! Parsing of the TTL commands into core's [`CoreCommand`]s: `SET` with `EX`/`PX`/`EXAT`/`PXAT`/
//! `KEEPTTL`, `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT`, `TTL`/`PTTL`, `PERSIST`, `GETEX`.
//! Pure, so it is tested as a table; what the commands mean lives in core (`command::ttl`) and
//! in node/README.md, "TTL".

use crate::commands::Command;
use crate::resp::Reply;
use bytes::Bytes;
use ringkv_core::command::{Command as CoreCommand, Expiry, GetExOption, SetCondition, SetOptions};

/// The TTL command names [`parse`] takes (lower case).
pub const TTL_COMMANDS: &[&str] = &[
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "persist",
    "getex",
];

fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

fn not_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

fn integer(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(not_integer)
}

/// An `EX`/`PX`/`EXAT`/`PXAT` argument of `SET` or `GETEX`: Redis refuses a time that is not
/// positive there.
fn set_expiry(option: &str, arg: &[u8], command: &str) -> Result<Expiry, Reply> {
    let n = integer(arg)?;
    let invalid = || Reply::err(format!("invalid expire time in '{command}' command"));
    let n = u64::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(invalid)?;
    let ms = |n: u64| n.checked_mul(1000).ok_or_else(invalid);
    Ok(match option {
        "EX" => Expiry::AfterMillis(ms(n)?),
        "PX" => Expiry::AfterMillis(n),
        "EXAT" => Expiry::AtUnixMillis(ms(n)?),
        _ => Expiry::AtUnixMillis(n),
    })
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]` (`rest` = key, value,
/// options). `NX`, `XX` and `GET` are parsed into the options as well; core refuses them until
/// conditional writes exist.
pub fn parse_set(rest: &[Bytes]) -> Result<Command, Reply> {
    let [key, value, options @ ..] = rest else {
        return Err(wrong_arity("set"));
    };
    let mut parsed = SetOptions::default();
    let mut unsupported = None;
    let mut i = 0;
    while i < options.len() {
        let option = String::from_utf8_lossy(&options[i]).to_ascii_uppercase();
        match option.as_str() {
            "NX" | "XX" if parsed.condition.is_none() => {
                unsupported.get_or_insert(option.clone());
                parsed.condition = Some(if option == "NX" {
                    SetCondition::Absent
                } else {
                    SetCondition::Present
                });
            }
            "GET" if !parsed.get => {
                unsupported.get_or_insert(option.clone());
                parsed.get = true;
            }
            "KEEPTTL" if parsed.expiry.is_none() && !parsed.keep_ttl => parsed.keep_ttl = true,
            "EX" | "PX" | "EXAT" | "PXAT" if parsed.expiry.is_none() && !parsed.keep_ttl => {
                let arg = options.get(i + 1).ok_or_else(syntax_error)?;
                parsed.expiry = Some(set_expiry(&option, arg, "set")?);
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    if let Some(option) = unsupported {
        return Err(Reply::err(format!(
            "SET option '{option}' is not supported yet (conditional writes are coming); use \
             SET without NX, XX and GET, or KV.PUT with a CONTEXT"
        )));
    }
    Ok(Command::Ttl(CoreCommand::Set {
        key: key.clone(),
        value: value.clone(),
        options: parsed,
    }))
}

/// One of [`TTL_COMMANDS`] (`name` in lower case, `rest` its arguments).
pub fn parse(name: &str, rest: &[Bytes]) -> Result<Command, Reply> {
    let core = match (name, rest) {
        ("expire" | "pexpire" | "expireat" | "pexpireat", [key, time, options @ ..]) => {
            if !options.is_empty() {
                return Err(Reply::err(format!(
                    "{} options NX, XX, GT and LT are not supported",
                    name.to_ascii_uppercase()
                )));
            }
            // A time already past (or not positive) expires the key at once, as Redis
            // deletes it.
            let n = integer(time)?;
            let invalid = || Reply::err(format!("invalid expire time in '{name}' command"));
            let n = u64::try_from(n.max(0)).unwrap_or(0);
            let ms = match name {
                "expire" | "expireat" => n.checked_mul(1000).ok_or_else(invalid)?,
                _ => n,
            };
            let expiry = match name {
                "expire" | "pexpire" => Expiry::AfterMillis(ms),
                _ => Expiry::AtUnixMillis(ms),
            };
            CoreCommand::Expire {
                key: key.clone(),
                expiry,
            }
        }
        ("ttl" | "pttl", [key]) => CoreCommand::Ttl {
            key: key.clone(),
            millis: name == "pttl",
        },
        ("persist", [key]) => CoreCommand::Persist { key: key.clone() },
        ("getex", [key, options @ ..]) => {
            let option = match options {
                [] => None,
                [persist] if persist.eq_ignore_ascii_case(b"PERSIST") => Some(GetExOption::Persist),
                [option, arg] => {
                    let option = String::from_utf8_lossy(option).to_ascii_uppercase();
                    if !matches!(option.as_str(), "EX" | "PX" | "EXAT" | "PXAT") {
                        return Err(syntax_error());
                    }
                    Some(GetExOption::Expire(set_expiry(&option, arg, "getex")?))
                }
                _ => return Err(syntax_error()),
            };
            CoreCommand::GetEx {
                key: key.clone(),
                option,
            }
        }
        _ => return Err(wrong_arity(name)),
    };
    Ok(Command::Ttl(core))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn set(options: SetOptions) -> Result<Command, Reply> {
        Ok(Command::Ttl(CoreCommand::Set {
            key: b("k"),
            value: b("v"),
            options,
        }))
    }

    fn expiry(e: Expiry) -> SetOptions {
        SetOptions {
            expiry: Some(e),
            ..SetOptions::default()
        }
    }

    #[test]
    fn set_options_parse_as_redis_does() {
        let cases: &[(&[&str], Result<Command, Reply>)] = &[
            (
                &["k", "v", "EX", "10"],
                set(expiry(Expiry::AfterMillis(10_000))),
            ),
            (
                &["k", "v", "px", "15"],
                set(expiry(Expiry::AfterMillis(15))),
            ),
            (
                &["k", "v", "EXAT", "2"],
                set(expiry(Expiry::AtUnixMillis(2_000))),
            ),
            (
                &["k", "v", "PXAT", "7"],
                set(expiry(Expiry::AtUnixMillis(7))),
            ),
            (
                &["k", "v", "KEEPTTL"],
                set(SetOptions {
                    keep_ttl: true,
                    ..SetOptions::default()
                }),
            ),
            (
                &["k", "v", "EX", "0"],
                Err(Reply::err("invalid expire time in 'set' command")),
            ),
            (
                &["k", "v", "EX", "-3"],
                Err(Reply::err("invalid expire time in 'set' command")),
            ),
            (&["k", "v", "EX", "x"], Err(not_integer())),
            (&["k", "v", "EX"], Err(syntax_error())),
            (&["k", "v", "EX", "1", "PX", "2"], Err(syntax_error())),
            (&["k", "v", "EX", "1", "KEEPTTL"], Err(syntax_error())),
            (&["k", "v", "BOGUS"], Err(syntax_error())),
        ];
        for (words, want) in cases {
            assert_eq!(&parse_set(&args(words)), want, "SET {words:?}");
        }
        let nx = parse_set(&args(&["k", "v", "NX", "EX", "5"]));
        assert!(matches!(nx, Err(Reply::Error(e)) if e.contains("not supported")));
    }

    #[test]
    fn ttl_commands_parse_as_redis_does() {
        let expire = |e| {
            Ok(Command::Ttl(CoreCommand::Expire {
                key: b("k"),
                expiry: e,
            }))
        };
        assert_eq!(
            parse("expire", &args(&["k", "5"])),
            expire(Expiry::AfterMillis(5_000))
        );
        assert_eq!(
            parse("pexpire", &args(&["k", "5"])),
            expire(Expiry::AfterMillis(5))
        );
        assert_eq!(
            parse("expire", &args(&["k", "-5"])),
            expire(Expiry::AfterMillis(0))
        );
        assert_eq!(
            parse("expireat", &args(&["k", "5"])),
            expire(Expiry::AtUnixMillis(5_000))
        );
        assert_eq!(
            parse("pexpireat", &args(&["k", "5"])),
            expire(Expiry::AtUnixMillis(5))
        );
        assert_eq!(parse("expire", &args(&["k", "x"])), Err(not_integer()));
        assert_eq!(
            parse("expire", &args(&["k", &i64::MAX.to_string()])),
            Err(Reply::err("invalid expire time in 'expire' command"))
        );
        assert!(parse("expire", &args(&["k", "5", "NX"])).is_err());
        assert_eq!(parse("ttl", &args(&["k", "j"])), Err(wrong_arity("ttl")));
        assert_eq!(
            parse("pttl", &args(&["k"])),
            Ok(Command::Ttl(CoreCommand::Ttl {
                key: b("k"),
                millis: true
            }))
        );
        assert_eq!(
            parse("persist", &args(&["k"])),
            Ok(Command::Ttl(CoreCommand::Persist { key: b("k") }))
        );
        let getex = |option| {
            Ok(Command::Ttl(CoreCommand::GetEx {
                key: b("k"),
                option,
            }))
        };
        assert_eq!(parse("getex", &args(&["k"])), getex(None));
        assert_eq!(
            parse("getex", &args(&["k", "persist"])),
            getex(Some(GetExOption::Persist))
        );
        assert_eq!(
            parse("getex", &args(&["k", "PX", "9"])),
            getex(Some(GetExOption::Expire(Expiry::AfterMillis(9))))
        );
        assert_eq!(
            parse("getex", &args(&["k", "KEEPTTL"])),
            Err(syntax_error())
        );
    }
}
