//! Client commands: parsing a RESP argument list into a [`Command`] (pure, so it is tested as a
//! table) and the encoding of causal contexts for the `KV.*` extensions.

use crate::resp::Reply;
use bytes::Bytes;

pub mod counter;
use ringkv_core::{codec, CausalContext, Consistency};

/// A parsed client command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `PING [message]`
    Ping(Option<Bytes>),
    /// `ECHO message`
    Echo(Bytes),
    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`
    Hello {
        /// Requested protocol version.
        protocol: Option<u8>,
        /// `(username, password)`.
        auth: Option<(Bytes, Bytes)>,
        /// Client name.
        name: Option<Bytes>,
    },
    /// `AUTH [username] password`
    Auth {
        /// Username (only `default` exists).
        user: Option<Bytes>,
        /// Password.
        password: Bytes,
    },
    /// `SELECT index`
    Select(Bytes),
    /// `GET key`
    Get(Bytes),
    /// `SET key value` (no options)
    Set(Bytes, Bytes),
    /// `DEL key [key ...]`
    Del(Vec<Bytes>),
    /// `EXISTS key [key ...]`
    Exists(Vec<Bytes>),
    /// `MGET key [key ...]`
    MGet(Vec<Bytes>),
    /// `MSET key value [key value ...]`
    MSet(Vec<(Bytes, Bytes)>),
    /// `INFO [section ...]`
    Info(Vec<String>),
    /// `DBSIZE`
    DbSize,
    /// `CONFIG GET pattern [pattern ...]`
    ConfigGet(Vec<String>),
    /// `CONFIG RESETSTAT`
    ConfigResetStat,
    /// `COMMAND [COUNT | DOCS | INFO ... | LIST]`
    Command(Option<String>, Vec<Bytes>),
    /// `CLIENT SETNAME name`
    ClientSetName(Bytes),
    /// `CLIENT GETNAME`
    ClientGetName,
    /// `CLIENT ID`
    ClientId,
    /// `CLIENT SETINFO attribute value` (accepted and ignored, as for any client library)
    ClientSetInfo,
    /// `QUIT`
    Quit,
    /// `RESET`
    Reset,
    /// `KV.GET key [LEVEL one|quorum|all|local_quorum|each_quorum|linearizable|<count>]`
    KvGet {
        /// The key.
        key: Bytes,
        /// Level, or the cluster default.
        level: Option<Consistency>,
    },
    /// `KV.PUT key value [LEVEL level] [CONTEXT ctx]`
    KvPut {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Level, or the cluster default.
        level: Option<Consistency>,
        /// The context of the read this write follows.
        context: Option<CausalContext>,
    },
    /// `KV.DEL key [LEVEL level] [CONTEXT ctx]`
    KvDel {
        /// The key.
        key: Bytes,
        /// Level, or the cluster default.
        level: Option<Consistency>,
        /// The context of the read this delete follows.
        context: Option<CausalContext>,
    },
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` and `KEYS pattern` (`commands_scan`).
    Scan(ringkv_core::command::scan::ScanCommand),
    /// `TYPE key`
    Type(Bytes),
    /// `TIME`
    Time,
    /// `KV.RING`: ranges, replicas and their client addresses ([`crate::commands_ring`]).
    KvRing,
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY` (see `counter`): core's increment command.
    Counter(ringkv_core::command::Command),
    /// A TTL command (`SET` with an expiry option, `EXPIRE`, `TTL`, `PERSIST`, `GETEX`, ...),
    /// parsed by [`crate::commands_ttl`] straight into core's command.
    Ttl(ringkv_core::command::Command),
    /// `MULTI`: refused, and the connection then refuses every command until `EXEC` or
    /// `DISCARD` (see `clients`), so nothing a client queues for a transaction runs.
    Multi,
    /// `EXEC` (outside a refused `MULTI`: an error, as in Redis).
    Exec,
    /// `DISCARD` (outside a refused `MULTI`: an error, as in Redis).
    Discard,
    /// `WATCH key [key ...]`: refused (there are no transactions to make conditional).
    Watch,
    /// `UNWATCH`: refused, like `WATCH`.
    Unwatch,
    /// `SET key value [NX|XX] [GET]` (see `conditional`).
    SetConditional {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// The options given.
        options: ringkv_core::command::SetOptions,
    },
    /// `KV.CAS key ABSENT new` / `KV.CAS key VALUE expected new` (see `conditional`).
    KvCas {
        /// The key.
        key: Bytes,
        /// The live value the key must hold; `None`: it must have none.
        expected: Option<Bytes>,
        /// The value to write.
        value: Bytes,
    },
}

impl Command {
    /// The keys a data command reads or writes, when it may run beside the commands before it
    /// in a pipeline that touch other keys; `None` for every other command (it runs alone, after
    /// everything before it has answered, as session commands and scans must).
    ///
    /// Why per key: Redis runs a connection's commands one after another, so a `GET` pipelined
    /// after a `SET` of its key sees that write. Commands on different keys cannot observe each
    /// other's order, so they may be in flight together: the driver then handles them as one
    /// batch and one fsync covers all their writes.
    pub fn pipelined_keys(&self) -> Option<PipelinedKeys<'_>> {
        match self {
            Command::Get(key) | Command::Set(key, _) | Command::Type(key) => {
                Some(PipelinedKeys::Keys(std::slice::from_ref(key)))
            }
            Command::KvGet { key, .. }
            | Command::KvPut { key, .. }
            | Command::KvDel { key, .. } => Some(PipelinedKeys::Keys(std::slice::from_ref(key))),
            Command::Del(keys) | Command::Exists(keys) | Command::MGet(keys) => {
                Some(PipelinedKeys::Keys(keys))
            }
            Command::MSet(pairs) => Some(PipelinedKeys::Pairs(pairs)),
            _ => None,
        }
    }

    /// True for commands allowed before `AUTH` when a password is set.
    pub fn allowed_before_auth(&self) -> bool {
        matches!(
            self,
            Command::Auth { .. } | Command::Hello { .. } | Command::Quit | Command::Reset
        )
    }
}

/// The keys a data command touches ([`Command::pipelined_keys`]), borrowed from it: a
/// pipeline asks for every command it gathers, so no list is built.
#[derive(Clone, Copy)]
pub enum PipelinedKeys<'a> {
    /// The command's keys.
    Keys(&'a [Bytes]),
    /// The keys of `MSET`'s key-value pairs.
    Pairs(&'a [(Bytes, Bytes)]),
}

impl<'a> PipelinedKeys<'a> {
    /// How many keys.
    pub fn len(self) -> usize {
        match self {
            PipelinedKeys::Keys(keys) => keys.len(),
            PipelinedKeys::Pairs(pairs) => pairs.len(),
        }
    }

    /// True when the command names no key.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The keys in command order.
    pub fn iter(self) -> impl Iterator<Item = &'a Bytes> {
        let (keys, pairs) = match self {
            PipelinedKeys::Keys(keys) => (keys, &[][..]),
            PipelinedKeys::Pairs(pairs) => (&[][..], pairs),
        };
        keys.iter().chain(pairs.iter().map(|(key, _)| key))
    }
}

/// One row of [`COMMAND_TABLE`]: name, arity (Redis convention: negative = at least), flags,
/// first key, last key, key step.
pub type CommandSpec = (&'static str, i64, &'static [&'static str], i64, i64, i64);

/// The commands served, for `COMMAND`.
pub const COMMAND_TABLE: &[CommandSpec] = &[
    ("ping", -1, &["fast"], 0, 0, 0),
    ("echo", 2, &["fast"], 0, 0, 0),
    (
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
    ),
    (
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
    ),
    ("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", -3, &["write", "denyoom"], 1, 1, 1),
    ("del", -2, &["write"], 1, -1, 1),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("info", -1, &["loading", "stale"], 0, 0, 0),
    ("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    (
        "config",
        -2,
        &["admin", "noscript", "loading", "stale"],
        0,
        0,
        0,
    ),
    ("command", -1, &["loading", "stale"], 0, 0, 0),
    (
        "client",
        -2,
        &["admin", "noscript", "loading", "stale"],
        0,
        0,
        0,
    ),
    ("quit", -1, &["fast", "no_auth"], 0, 0, 0),
    ("reset", 1, &["fast", "no_auth"], 0, 0, 0),
    ("kv.get", -2, &["readonly"], 1, 1, 1),
    ("kv.put", -3, &["write", "denyoom"], 1, 1, 1),
    ("kv.del", -2, &["write"], 1, 1, 1),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("type", 2, &["readonly", "fast"], 1, 1, 1),
    ("time", 1, &["loading", "stale", "fast"], 0, 0, 0),
    (
        "kv.ring",
        1,
        &["readonly", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("expire", -3, &["write", "fast"], 1, 1, 1),
    ("pexpire", -3, &["write", "fast"], 1, 1, 1),
    ("expireat", -3, &["write", "fast"], 1, 1, 1),
    ("pexpireat", -3, &["write", "fast"], 1, 1, 1),
    ("ttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("pttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("persist", 2, &["write", "fast"], 1, 1, 1),
    ("getex", -2, &["write", "fast"], 1, 1, 1),
    ("kv.cas", -4, &["write", "denyoom"], 1, 1, 1),
];

fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

/// Longest command name lower-cased on the stack; every name ringkv knows is shorter.
const NAME_BYTES_INLINE: usize = 16;

/// Calls `f` with `name` in lower case. A name of up to [`NAME_BYTES_INLINE`] bytes of UTF-8 is
/// lower-cased in a stack buffer: every request's name used to be copied into a new `String`
/// first, an allocation per request (issue #15). Longer or non-UTF-8 names (unknown commands)
/// take the allocating way, with invalid bytes replaced as in the error they end in.
fn with_lower_name<R>(name: &[u8], f: impl FnOnce(&str) -> R) -> R {
    if name.len() <= NAME_BYTES_INLINE {
        let mut buf = [0u8; NAME_BYTES_INLINE];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        if let Ok(lower) = std::str::from_utf8(lower) {
            return f(lower);
        }
    }
    f(&String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// Parses an argument list it owns: as [`parse`], but a plain `GET key` or `SET key value`
/// (what a cache serves most) takes its key and value by move. A clone of an argument, which
/// the parser made from an owned buffer, allocates the buffer's shared header; then the
/// argument list drops its own reference (issue #15).
pub fn parse_owned(mut args: Vec<Bytes>) -> Result<Command, Reply> {
    match args.as_mut_slice() {
        [name, key] if name.eq_ignore_ascii_case(b"get") => Ok(Command::Get(std::mem::take(key))),
        [name, key, value] if name.eq_ignore_ascii_case(b"set") => {
            Ok(Command::Set(std::mem::take(key), std::mem::take(value)))
        }
        _ => parse(&args),
    }
}

/// Parses an argument list (the first is the command name).
pub fn parse(args: &[Bytes]) -> Result<Command, Reply> {
    let Some((name, rest)) = args.split_first() else {
        return Err(Reply::err("empty command"));
    };
    if let Some(parsed) = counter::parse(name, rest) {
        return parsed;
    }
    with_lower_name(name, |lower| parse_named(name, lower, rest))
}

/// Parses a command other than a counter's: `name` as sent, `lower` in lower case.
fn parse_named(name: &[u8], lower: &str, rest: &[Bytes]) -> Result<Command, Reply> {
    let arity = |ok: bool| if ok { Ok(()) } else { Err(wrong_arity(lower)) };
    match lower {
        "ping" => {
            arity(rest.len() <= 1)?;
            Ok(Command::Ping(rest.first().cloned()))
        }
        "echo" => {
            arity(rest.len() == 1)?;
            Ok(Command::Echo(rest[0].clone()))
        }
        "hello" => parse_hello(rest),
        "auth" => match rest {
            [password] => Ok(Command::Auth {
                user: None,
                password: password.clone(),
            }),
            [user, password] => Ok(Command::Auth {
                user: Some(user.clone()),
                password: password.clone(),
            }),
            _ => Err(wrong_arity("auth")),
        },
        "select" => {
            arity(rest.len() == 1)?;
            Ok(Command::Select(rest[0].clone()))
        }
        "get" => {
            arity(rest.len() == 1)?;
            Ok(Command::Get(rest[0].clone()))
        }
        "set" => {
            arity(rest.len() >= 2)?;
            crate::conditional::parse_set(rest)
        }
        "kv.cas" => crate::conditional::parse_kv_cas(rest),
        "del" | "unlink" => {
            arity(!rest.is_empty())?;
            Ok(Command::Del(rest.to_vec()))
        }
        "exists" => {
            arity(!rest.is_empty())?;
            Ok(Command::Exists(rest.to_vec()))
        }
        "mget" => {
            arity(!rest.is_empty())?;
            Ok(Command::MGet(rest.to_vec()))
        }
        "mset" => {
            arity(!rest.is_empty() && rest.len().is_multiple_of(2))?;
            Ok(Command::MSet(
                rest.chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
            ))
        }
        "info" => Ok(Command::Info(
            rest.iter().map(|s| text(s).to_ascii_lowercase()).collect(),
        )),
        "dbsize" => {
            arity(rest.is_empty())?;
            Ok(Command::DbSize)
        }
        "config" => {
            arity(!rest.is_empty())?;
            match upper(&rest[0]).as_str() {
                "GET" => {
                    if rest.len() < 2 {
                        return Err(wrong_arity("config|get"));
                    }
                    Ok(Command::ConfigGet(
                        rest[1..].iter().map(|s| text(s)).collect(),
                    ))
                }
                "RESETSTAT" => Ok(Command::ConfigResetStat),
                "SET" | "REWRITE" => Err(Reply::err(format!(
                    "CONFIG {} is not supported by ringkv: change the configuration file and \
                     restart the node",
                    upper(&rest[0])
                ))),
                other => Err(Reply::err(format!(
                    "unknown subcommand '{other}'. Try CONFIG GET."
                ))),
            }
        }
        "command" => Ok(Command::Command(
            rest.first().map(|s| upper(s)),
            rest.get(1..).unwrap_or_default().to_vec(),
        )),
        "client" => {
            arity(!rest.is_empty())?;
            match (upper(&rest[0]).as_str(), &rest[1..]) {
                ("SETNAME", [name]) => {
                    if name.iter().any(|b| *b <= b' ' || *b > b'~') {
                        return Err(Reply::err(
                            "Client names cannot contain spaces, newlines or special characters.",
                        ));
                    }
                    Ok(Command::ClientSetName(name.clone()))
                }
                ("GETNAME", []) => Ok(Command::ClientGetName),
                ("ID", []) => Ok(Command::ClientId),
                ("SETINFO", [_, _]) => Ok(Command::ClientSetInfo),
                ("SETNAME" | "GETNAME" | "ID" | "SETINFO", _) => Err(wrong_arity(&format!(
                    "client|{}",
                    text(&rest[0]).to_lowercase()
                ))),
                (other, _) => Err(Reply::err(format!(
                    "unknown subcommand '{other}'. ringkv supports CLIENT SETNAME, GETNAME, \
                     ID and SETINFO."
                ))),
            }
        }
        name if crate::commands_ttl::TTL_COMMANDS.contains(&name) => {
            crate::commands_ttl::parse(name, rest)
        }
        "quit" => Ok(Command::Quit),
        "reset" => Ok(Command::Reset),
        "multi" => {
            arity(rest.is_empty())?;
            Ok(Command::Multi)
        }
        "exec" => {
            arity(rest.is_empty())?;
            Ok(Command::Exec)
        }
        "discard" => {
            arity(rest.is_empty())?;
            Ok(Command::Discard)
        }
        "watch" => {
            arity(!rest.is_empty())?;
            Ok(Command::Watch)
        }
        "unwatch" => {
            arity(rest.is_empty())?;
            Ok(Command::Unwatch)
        }
        "kv.get" => {
            arity(!rest.is_empty())?;
            let options = parse_options(&rest[1..], false)?;
            Ok(Command::KvGet {
                key: rest[0].clone(),
                level: options.level,
            })
        }
        "kv.put" => {
            arity(rest.len() >= 2)?;
            let options = parse_options(&rest[2..], true)?;
            Ok(Command::KvPut {
                key: rest[0].clone(),
                value: rest[1].clone(),
                level: options.level,
                context: options.context,
            })
        }
        "kv.del" => {
            arity(!rest.is_empty())?;
            let options = parse_options(&rest[1..], true)?;
            Ok(Command::KvDel {
                key: rest[0].clone(),
                level: options.level,
                context: options.context,
            })
        }
        "kv.ring" => {
            arity(rest.is_empty())?;
            Ok(Command::KvRing)
        }
        _ => {
            if let Some(parsed) = crate::commands_scan::parse(lower, rest) {
                return parsed;
            }
            let preview: Vec<String> = rest
                .iter()
                .take(8)
                .map(|a| format!("'{}'", text(a)))
                .collect();
            Err(Reply::err(format!(
                "unknown command '{}', with args beginning with: {}",
                text(name),
                preview.join(" ")
            )))
        }
    }
}

fn parse_hello(rest: &[Bytes]) -> Result<Command, Reply> {
    let mut protocol = None;
    let mut auth = None;
    let mut name = None;
    let mut i = 0;
    if let Some(first) = rest.first() {
        let version = text(first)
            .parse::<i64>()
            .map_err(|_| Reply::err("Protocol version is not an integer or out of range"))?;
        if !(2..=3).contains(&version) {
            return Err(Reply::Error(
                "NOPROTO unsupported protocol version".to_string(),
            ));
        }
        protocol = Some(if version == 3 { 3 } else { 2 });
        i = 1;
    }
    while i < rest.len() {
        match upper(&rest[i]).as_str() {
            "AUTH" if i + 2 < rest.len() => {
                auth = Some((rest[i + 1].clone(), rest[i + 2].clone()));
                i += 3;
            }
            "SETNAME" if i + 1 < rest.len() => {
                name = Some(rest[i + 1].clone());
                i += 2;
            }
            other => {
                return Err(Reply::err(format!(
                    "Syntax error in HELLO option '{other}'"
                )))
            }
        }
    }
    Ok(Command::Hello {
        protocol,
        auth,
        name,
    })
}

struct KvOptions {
    level: Option<Consistency>,
    context: Option<CausalContext>,
}

fn parse_options(rest: &[Bytes], context_allowed: bool) -> Result<KvOptions, Reply> {
    let mut options = KvOptions {
        level: None,
        context: None,
    };
    let mut i = 0;
    while i < rest.len() {
        let option = upper(&rest[i]);
        let Some(value) = rest.get(i + 1) else {
            return Err(Reply::err(format!("option {option} needs a value")));
        };
        match option.as_str() {
            "LEVEL" if options.level.is_none() => {
                options.level = Some(text(value).parse::<Consistency>().map_err(Reply::err)?);
            }
            "CONTEXT" if context_allowed && options.context.is_none() => {
                options.context = Some(decode_context(value).map_err(Reply::err)?);
            }
            _ => {
                return Err(Reply::err(format!(
                    "unsupported or repeated option '{option}' (KV commands take LEVEL{})",
                    if context_allowed { " and CONTEXT" } else { "" }
                )))
            }
        }
        i += 2;
    }
    Ok(options)
}

/// The opaque text form of a causal context: lowercase hex of its codec encoding.
pub fn encode_context(context: &CausalContext) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    codec::encode_value(context)
        .iter()
        .flat_map(|b| {
            [
                HEX[usize::from(b >> 4)] as char,
                HEX[usize::from(b & 15)] as char,
            ]
        })
        .collect()
}

/// Parses a context produced by [`encode_context`].
pub fn decode_context(text: &[u8]) -> Result<CausalContext, String> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    if !text.len().is_multiple_of(2) {
        return Err("CONTEXT is not a context returned by KV.GET (odd length)".to_string());
    }
    let bytes = text
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| "CONTEXT is not a context returned by KV.GET (not hex)".to_string())?;
    // The decoder's own error names its internals (e.g. `UnexpectedEnd { additional: 1 }`),
    // which mean nothing to a client: say what the client can act on.
    codec::decode_value(&bytes)
        .map_err(|_| "CONTEXT is not a context returned by KV.GET (cut or corrupted)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::version::{ActorId, DataEpoch, VersionVector};
    use ringkv_core::NodeId;

    fn cmd(parts: &[&str]) -> Result<Command, Reply> {
        let args: Vec<Bytes> = parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect();
        // Every parse test covers the connection's owning entry point too.
        let borrowed = parse(&args);
        let owned = parse_owned(args);
        assert_eq!(
            borrowed, owned,
            "parse_owned differs from parse on {parts:?}"
        );
        owned
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn error_text(result: Result<Command, Reply>) -> String {
        match result {
            Err(Reply::Error(text)) => text,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(cmd(&["ping"]), Ok(Command::Ping(None)));
        assert_eq!(cmd(&["SET", "k", "v"]), Ok(Command::Set(b("k"), b("v"))));
        assert_eq!(
            cmd(&["mset", "a", "1", "b", "2"]),
            Ok(Command::MSet(vec![(b("a"), b("1")), (b("b"), b("2"))]))
        );
        assert_eq!(
            cmd(&["kv.get", "k", "level", "all"]),
            Ok(Command::KvGet {
                key: b("k"),
                level: Some(Consistency::All)
            })
        );
        assert_eq!(
            cmd(&["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me"]),
            Ok(Command::Hello {
                protocol: Some(3),
                auth: Some((b("default"), b("pw"))),
                name: Some(b("me")),
            })
        );
    }

    #[test]
    fn names_match_in_any_case_and_only_with_their_arity() {
        for name in ["get", "GET", "gEt"] {
            assert_eq!(cmd(&[name, "k"]), Ok(Command::Get(b("k"))));
            assert!(error_text(cmd(&[name, "k", "j"])).contains("wrong number of arguments"));
        }
        for name in ["set", "SET", "SeT"] {
            assert_eq!(cmd(&[name, "k", "v"]), Ok(Command::Set(b("k"), b("v"))));
            assert!(error_text(cmd(&[name, "k"])).contains("wrong number of arguments"));
            assert!(matches!(
                cmd(&[name, "k", "v", "NX"]),
                Ok(Command::SetConditional { .. })
            ));
        }
        // Names that only start like them are other commands (or none).
        assert!(matches!(cmd(&["getex", "k"]), Ok(Command::Ttl(_))));
        assert!(error_text(cmd(&["gets", "k"])).contains("unknown command"));
        assert_eq!(cmd(&["Kv.Ring"]), Ok(Command::KvRing));
        // Past the stack buffer, and not UTF-8: still matched (or refused) by the lower case.
        let long = "x".repeat(NAME_BYTES_INLINE + 1);
        assert!(error_text(cmd(&[&long])).contains(&format!("unknown command '{long}'")));
        let mut get_with_bad_byte = vec![b'G', b'E', b'T', 0xff];
        assert!(error_text(parse(&[Bytes::from(get_with_bad_byte.clone())]))
            .contains("unknown command 'GET\u{fffd}'"));
        get_with_bad_byte.pop();
        assert_eq!(
            parse(&[Bytes::from(get_with_bad_byte), b("k")]),
            Ok(Command::Get(b("k")))
        );
        let mut lower = String::new();
        with_lower_name("ÄB".as_bytes(), |l| lower.push_str(l));
        assert_eq!(lower, "Äb", "only ASCII letters are folded, as Redis does");
    }

    #[test]
    fn bad_commands_get_clear_errors() {
        assert!(error_text(cmd(&["set", "k", "v", "NX", "XX"])).contains("syntax error"));
        assert!(error_text(cmd(&["set", "k", "v", "NX", "EX", "10"])).contains("EX"));
        assert!(error_text(cmd(&["kv.cas", "k", "old", "new"])).contains("ABSENT or VALUE"));
        assert!(error_text(cmd(&["get"])).contains("wrong number of arguments for 'get'"));
        assert!(error_text(cmd(&["mset", "a"])).contains("wrong number"));
        assert!(error_text(cmd(&["flushall"])).contains("unknown command 'flushall'"));
        assert!(error_text(cmd(&["kv.get", "k", "LEVEL", "local_quorom"]))
            .contains("`local_quorom` is not a level"));
        assert!(error_text(cmd(&["kv.get", "k", "CONTEXT", "00"])).contains("CONTEXT"));
        assert!(error_text(cmd(&["kv.put", "k", "v", "CONTEXT", "zz"])).contains("not hex"));
        assert!(error_text(cmd(&["kv.put", "k", "v", "LEVEL"])).contains("needs a value"));
        assert!(error_text(cmd(&["hello", "4"])).starts_with("NOPROTO"));
        assert!(error_text(cmd(&["config", "set", "x", "y"])).contains("not supported"));
    }

    #[test]
    fn contexts_round_trip_as_text() {
        let mut clock = VersionVector::default();
        clock.raise(ActorId::new(NodeId(3), DataEpoch(0x1234_5678_9abc_def0)), 7);
        let context = CausalContext(clock);
        let encoded = encode_context(&context);
        assert_eq!(decode_context(encoded.as_bytes()), Ok(context.clone()));
        assert_eq!(
            decode_context(encoded.to_uppercase().as_bytes()),
            Ok(context)
        );
        assert!(decode_context(b"abc").is_err());
        let corrupt = decode_context(b"ffff").expect_err("corrupt");
        assert!(
            !corrupt.contains('{') && corrupt.contains("KV.GET"),
            "a client-facing message, not decoder internals: {corrupt}"
        );
    }
}
