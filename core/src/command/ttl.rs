//! The TTL commands as one sans-IO machine: `SET` with `EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`,
//! `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT`, `TTL`/`PTTL`, `PERSIST` and `GETEX`.
//!
//! An expiry lives in the stored last-write-wins record (see `version::lww`): a write with a TTL
//! is an ordinary write whose record also carries the absolute expiry, so replication, hints,
//! read repair and anti-entropy need nothing new. The commands that change the expiry of a value
//! already there (`EXPIRE`, `PERSIST`, `GETEX` with an option, `SET ... KEEPTTL`) are
//! read-modify-writes at the coordinator: a read (`GetExpiring`), then a write of the value read
//! with a new version and the new expiry. A `SET` of the same key that lands between the two is
//! overwritten by the older value (last-write-wins gives no isolation here, as for any
//! read-modify-write; node/README.md, "TTL"). Vector-clock clusters refuse them all
//! (`ExpiryNeedsLww`): siblings have no single version an expiry could belong to.

use super::{CommandResult, Expiry, ValueRead};
use crate::client::{ClientReply, ClientRequest};
use crate::version::ExpiresAt;
use bytes::Bytes;

/// `GETEX`'s option: set a new expiry, or remove it (`PERSIST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetExOption {
    /// `EX`/`PX`/`EXAT`/`PXAT`.
    Expire(Expiry),
    /// `PERSIST`.
    Persist,
}

/// What the machine does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TtlOp {
    /// `SET key value EX|PX|EXAT|PXAT`: one expiring put.
    SetExpiring { value: Bytes, expires: ExpiresAt },
    /// `SET key value KEEPTTL`: a read of the expiry, then a put that keeps it.
    SetKeepTtl { value: Bytes },
    /// `EXPIRE` and friends: a read, then the value written back with the new expiry.
    Expire { expires: ExpiresAt },
    /// `PERSIST`: a read, then the value written back without an expiry if it had one.
    Persist,
    /// `TTL` (seconds) and `PTTL` (`millis`).
    Ttl { millis: bool },
    /// `GETEX key [option]`.
    GetEx { option: Option<GetExOption> },
    /// A form this machine does not run (`SET` with `NX`/`XX`/`GET`): refused, nothing sent.
    Refuse(&'static str),
}

impl Expiry {
    /// The expiry a request carries: Unix milliseconds become hybrid microseconds (the hybrid
    /// clock runs on Unix time).
    pub fn expires_at(self) -> ExpiresAt {
        match self {
            Expiry::AfterMillis(ms) => ExpiresAt::AfterMillis(ms),
            Expiry::AtUnixMillis(ms) => ExpiresAt::AtMicros(ms.saturating_mul(1000)),
        }
    }
}

/// Where the machine stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// This request waits for `poll_request`; for a write, the result its success gives.
    Ready(ClientRequest, Option<CommandResult>),
    /// A read is out.
    Reading,
    /// The write is out; its success ends the command with `result`.
    Writing { result: CommandResult },
    /// Over (`result` is set).
    Over,
}

/// One TTL command in progress; driven through [`super::CommandMachine`].
#[derive(Clone, Debug)]
pub(super) struct TtlMachine {
    key: Bytes,
    op: TtlOp,
    stage: Stage,
    result: Option<CommandResult>,
}

impl TtlMachine {
    /// Starts `op` on `key`.
    pub(super) fn new(key: Bytes, op: TtlOp) -> Self {
        let first = match &op {
            TtlOp::SetExpiring { value, expires } => Some(ClientRequest::PutExpiring {
                key: key.clone(),
                value: value.clone(),
                expires: *expires,
                consistency: None,
            }),
            TtlOp::Refuse(_) => None,
            TtlOp::SetKeepTtl { .. }
            | TtlOp::Expire { .. }
            | TtlOp::Persist
            | TtlOp::Ttl { .. }
            | TtlOp::GetEx { .. } => Some(ClientRequest::GetExpiring {
                key: key.clone(),
                consistency: None,
            }),
        };
        let (stage, result) = match (first, &op) {
            (Some(request @ ClientRequest::PutExpiring { .. }), _) => {
                (Stage::Ready(request, Some(CommandResult::Done)), None)
            }
            (Some(request), _) => (Stage::Ready(request, None), None),
            (None, TtlOp::Refuse(why)) => (Stage::Over, Some(CommandResult::Unsupported(why))),
            (None, _) => (
                Stage::Over,
                Some(CommandResult::Unsupported("nothing to do")),
            ),
        };
        let machine = TtlMachine {
            key,
            op,
            stage,
            result,
        };
        machine.check_invariants();
        machine
    }

    /// See [`super::CommandMachine::poll_request`].
    pub(super) fn poll_request(&mut self) -> Option<ClientRequest> {
        let Stage::Ready(request, _) = &self.stage else {
            return None;
        };
        let request = request.clone();
        let Stage::Ready(_, after) = std::mem::replace(&mut self.stage, Stage::Over) else {
            return None;
        };
        self.stage = match after {
            None => Stage::Reading,
            Some(result) => Stage::Writing { result },
        };
        self.check_invariants();
        Some(request)
    }

    /// See [`super::CommandMachine::handle_reply`]: a reply nobody waits for is ignored.
    pub(super) fn handle_reply(&mut self, reply: ClientReply) {
        match std::mem::replace(&mut self.stage, Stage::Over) {
            Stage::Reading => self.after_read(reply),
            Stage::Writing { result } => {
                self.result = Some(match reply {
                    ClientReply::Written { .. } => result,
                    other => CommandResult::Failed(other),
                });
            }
            stage @ (Stage::Ready(..) | Stage::Over) => self.stage = stage,
        }
        self.check_invariants();
    }

    /// The read's reply: answer, or send the write it leads to.
    fn after_read(&mut self, reply: ClientReply) {
        // (value, expiry, now) of a live value; `None`: absent.
        let found = match reply {
            ClientReply::FoundExpiring {
                value,
                expires_at_micros,
                now_micros,
                ..
            } => Some((value, expires_at_micros, now_micros)),
            ClientReply::NotFound { .. } => None,
            // A plain `Found` answers a `GetExpiring` only for a record that carries no expiry
            // a TTL command could rewrite: a counter (counters never expire).
            ClientReply::Found { mut values, .. } if values.len() == 1 => {
                self.after_counter_read(values.swap_remove(0));
                return;
            }
            other => {
                self.result = Some(CommandResult::Failed(other));
                return;
            }
        };
        let key = self.key.clone();
        let put = |value: Bytes, expires: Option<ExpiresAt>| rewrite(key.clone(), value, expires);
        let (write, result) = match (&self.op, found) {
            (TtlOp::Ttl { millis }, found) => {
                self.result = Some(CommandResult::Integer(ttl_reply(found, *millis)));
                return;
            }
            (TtlOp::SetKeepTtl { value }, found) => {
                let kept = found.and_then(|(_, e, _)| e).map(ExpiresAt::AtMicros);
                (put(value.clone(), kept), CommandResult::Done)
            }
            (TtlOp::Expire { .. } | TtlOp::Persist, None) => {
                self.result = Some(CommandResult::Count(0));
                return;
            }
            (TtlOp::Expire { expires }, Some((value, _, _))) => {
                (put(value, Some(*expires)), CommandResult::Count(1))
            }
            (TtlOp::Persist, Some((_, None, _))) => {
                self.result = Some(CommandResult::Count(0));
                return;
            }
            (TtlOp::Persist, Some((value, Some(_), _))) => {
                (put(value, None), CommandResult::Count(1))
            }
            (TtlOp::GetEx { .. }, None) => {
                self.result = Some(CommandResult::Value(ValueRead::Absent));
                return;
            }
            (TtlOp::GetEx { option }, Some((value, expiry, _))) => {
                let answer = CommandResult::Value(ValueRead::Value(value.clone()));
                match option {
                    None => {
                        self.result = Some(answer);
                        return;
                    }
                    // Nothing to remove: Redis writes nothing either.
                    Some(GetExOption::Persist) if expiry.is_none() => {
                        self.result = Some(answer);
                        return;
                    }
                    Some(GetExOption::Persist) => (put(value, None), answer),
                    Some(GetExOption::Expire(e)) => (put(value, Some(e.expires_at())), answer),
                }
            }
            (TtlOp::SetExpiring { .. } | TtlOp::Refuse(_), _) => {
                // No read is ever sent for these.
                self.result = Some(CommandResult::Unsupported("unexpected read"));
                return;
            }
        };
        self.stage = Stage::Ready(write, Some(result));
    }

    /// The read found a counter: it has no expiry to report, keep or remove, and refuses one.
    fn after_counter_read(&mut self, value: Bytes) {
        const COUNTERS_NEVER_EXPIRE: &str =
            "counters never expire: EXPIRE and GETEX with an expiry are refused on a counter key";
        let result = match &self.op {
            TtlOp::Ttl { .. } => CommandResult::Integer(-1),
            TtlOp::Persist => CommandResult::Count(0),
            TtlOp::GetEx {
                option: None | Some(GetExOption::Persist),
            } => CommandResult::Value(ValueRead::Value(value)),
            TtlOp::Expire { .. } | TtlOp::GetEx { .. } => {
                CommandResult::Unsupported(COUNTERS_NEVER_EXPIRE)
            }
            TtlOp::SetKeepTtl { value } => {
                // Nothing to keep: an ordinary put replaces the counter.
                let write = ClientRequest::Put {
                    key: self.key.clone(),
                    value: value.clone(),
                    context: None,
                    consistency: None,
                };
                self.stage = Stage::Ready(write, Some(CommandResult::Done));
                return;
            }
            TtlOp::SetExpiring { .. } | TtlOp::Refuse(_) => {
                CommandResult::Unsupported("unexpected read")
            }
        };
        self.result = Some(result);
    }

    /// The result, once over.
    pub(super) fn take_result(&mut self) -> Option<CommandResult> {
        match self.stage {
            Stage::Over => self.result.take(),
            _ => None,
        }
    }

    /// True once the result is known.
    pub(super) fn is_over(&self) -> bool {
        self.stage == Stage::Over
    }

    /// Panics if the machine's state is inconsistent (a bug, never an input).
    pub(super) fn check_invariants(&self) {
        if let Stage::Ready(request, after) = &self.stage {
            assert_eq!(request.key(), &self.key, "a request for another key");
            let read = matches!(request, ClientRequest::GetExpiring { .. });
            assert_eq!(read, after.is_none(), "only a write has a result waiting");
        }
        if self.stage != Stage::Over {
            assert!(self.result.is_none(), "a result before the end");
        }
    }
}

/// `TTL`/`PTTL` as Redis answers them: -2 absent, -1 no expiry, else the time left on the
/// coordinator's hybrid clock (seconds rounded to nearest, as Redis does).
fn ttl_reply(found: Option<(Bytes, Option<u64>, u64)>, millis: bool) -> i64 {
    match found {
        None => -2,
        Some((_, None, _)) => -1,
        Some((_, Some(expires), now)) => {
            let left_ms = expires.saturating_sub(now).div_ceil(1000);
            let left = if millis {
                left_ms
            } else {
                left_ms.saturating_add(500) / 1000
            };
            i64::try_from(left).unwrap_or(i64::MAX)
        }
    }
}

/// The write that stores `value` again with `expires` (or with no expiry).
fn rewrite(key: Bytes, value: Bytes, expires: Option<ExpiresAt>) -> ClientRequest {
    match expires {
        Some(expires) => ClientRequest::PutExpiring {
            key,
            value,
            expires,
            consistency: None,
        },
        None => ClientRequest::Put {
            key,
            value,
            context: None,
            consistency: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, CommandMachine, SetOptions};
    use super::*;
    use crate::client::CausalContext;
    use crate::version::{ConflictMode, LwwVersion, WriteVersion};
    use crate::NodeId;

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn read(key: &str) -> ClientRequest {
        ClientRequest::GetExpiring {
            key: b(key),
            consistency: None,
        }
    }

    fn found(value: &str, expires: Option<u64>, now: u64) -> ClientReply {
        ClientReply::FoundExpiring {
            value: b(value),
            expires_at_micros: expires,
            now_micros: now,
            acks: 2,
        }
    }

    fn absent() -> ClientReply {
        ClientReply::NotFound {
            context: CausalContext::default(),
            acks: 2,
        }
    }

    fn written() -> ClientReply {
        ClientReply::Written {
            version: WriteVersion::Lww(LwwVersion {
                timestamp_micros: 1,
                node: NodeId(1),
                nonce: 0,
            }),
            acks: 2,
        }
    }

    fn put(value: &str, expires: Option<ExpiresAt>) -> ClientRequest {
        match expires {
            Some(expires) => ClientRequest::PutExpiring {
                key: b("k"),
                value: b(value),
                expires,
                consistency: None,
            },
            None => ClientRequest::Put {
                key: b("k"),
                value: b(value),
                context: None,
                consistency: None,
            },
        }
    }

    /// Runs `command` against scripted exchanges, as `command::tests::run` does.
    fn run(command: Command, exchanges: Vec<(ClientRequest, ClientReply)>) -> CommandResult {
        let mut machine = CommandMachine::new(command, ConflictMode::Lww);
        for (i, (expected, reply)) in exchanges.into_iter().enumerate() {
            assert_eq!(machine.poll_result(), None, "over before exchange {i}");
            assert_eq!(machine.poll_request(), Some(expected), "request {i}");
            assert_eq!(machine.poll_request(), None, "two requests at once");
            machine.handle_reply(reply);
        }
        assert_eq!(machine.poll_request(), None, "a request nobody expected");
        let result = machine.poll_result().expect("over");
        assert_eq!(machine.poll_result(), None, "handed out once");
        result
    }

    fn set(options: SetOptions) -> Command {
        Command::Set {
            key: b("k"),
            value: b("v"),
            options,
        }
    }

    #[test]
    fn set_with_an_expiry_is_one_expiring_put_and_keepttl_keeps_the_read_expiry() {
        let ex = SetOptions {
            expiry: Some(Expiry::AfterMillis(1500)),
            ..SetOptions::default()
        };
        let want = put("v", Some(ExpiresAt::AfterMillis(1500)));
        assert_eq!(run(set(ex), vec![(want, written())]), CommandResult::Done);
        let at = SetOptions {
            expiry: Some(Expiry::AtUnixMillis(7)),
            ..SetOptions::default()
        };
        let want = put("v", Some(ExpiresAt::AtMicros(7_000)));
        assert_eq!(run(set(at), vec![(want, written())]), CommandResult::Done);
        let keep = SetOptions {
            keep_ttl: true,
            ..SetOptions::default()
        };
        let kept = vec![
            (read("k"), found("old", Some(9_000), 1)),
            (put("v", Some(ExpiresAt::AtMicros(9_000))), written()),
        ];
        assert_eq!(run(set(keep.clone()), kept), CommandResult::Done);
        let none = vec![(read("k"), absent()), (put("v", None), written())];
        assert_eq!(run(set(keep), none), CommandResult::Done);
        // NX alone is a conditional write (not this machine's); NX with an expiry is refused.
        let nx = SetOptions {
            condition: Some(super::super::SetCondition::Absent),
            expiry: Some(Expiry::AfterMillis(1500)),
            ..SetOptions::default()
        };
        assert!(matches!(
            run(set(nx), vec![]),
            CommandResult::Unsupported(_)
        ));
    }

    #[test]
    fn ttl_and_pttl_answer_as_redis_does() {
        let ttl = |millis, reply| {
            run(
                Command::Ttl {
                    key: b("k"),
                    millis,
                },
                vec![(read("k"), reply)],
            )
        };
        assert_eq!(ttl(false, absent()), CommandResult::Integer(-2));
        assert_eq!(ttl(true, found("v", None, 5)), CommandResult::Integer(-1));
        let reply = found("v", Some(100_000_000), 1_000_000);
        assert_eq!(ttl(false, reply.clone()), CommandResult::Integer(99));
        assert_eq!(ttl(true, reply), CommandResult::Integer(99_000));
        // 1 µs left is still a live key: PTTL 1, TTL rounds to 0 as Redis does.
        assert_eq!(
            ttl(true, found("v", Some(11), 10)),
            CommandResult::Integer(1)
        );
    }

    #[test]
    fn expire_and_persist_rewrite_the_value_read_or_count_zero() {
        let expire = Command::Expire {
            key: b("k"),
            expiry: Expiry::AfterMillis(10),
        };
        let exchanges = vec![
            (read("k"), found("v", None, 1)),
            (put("v", Some(ExpiresAt::AfterMillis(10))), written()),
        ];
        assert_eq!(run(expire.clone(), exchanges), CommandResult::Count(1));
        assert_eq!(
            run(expire.clone(), vec![(read("k"), absent())]),
            CommandResult::Count(0)
        );
        let persist = Command::Persist { key: b("k") };
        let exchanges = vec![
            (read("k"), found("v", Some(50), 1)),
            (put("v", None), written()),
        ];
        assert_eq!(run(persist.clone(), exchanges), CommandResult::Count(1));
        assert_eq!(
            run(persist, vec![(read("k"), found("v", None, 1))]),
            CommandResult::Count(0)
        );
        let lost = ClientReply::Indeterminate { acks: 1, needed: 2 };
        let exchanges = vec![
            (read("k"), found("v", None, 1)),
            (put("v", Some(ExpiresAt::AfterMillis(10))), lost.clone()),
        ];
        assert_eq!(run(expire, exchanges), CommandResult::Failed(lost));
    }

    #[test]
    fn getex_returns_the_value_and_writes_only_with_an_option() {
        let getex = |option| Command::GetEx {
            key: b("k"),
            option,
        };
        let value = CommandResult::Value(ValueRead::Value(b("v")));
        assert_eq!(
            run(getex(None), vec![(read("k"), found("v", Some(9), 1))]),
            value
        );
        assert_eq!(
            run(getex(None), vec![(read("k"), absent())]),
            CommandResult::Value(ValueRead::Absent)
        );
        let exchanges = vec![
            (read("k"), found("v", Some(9), 1)),
            (put("v", None), written()),
        ];
        assert_eq!(run(getex(Some(GetExOption::Persist)), exchanges), value);
        let option = Some(GetExOption::Expire(Expiry::AtUnixMillis(3)));
        let exchanges = vec![
            (read("k"), found("v", None, 1)),
            (put("v", Some(ExpiresAt::AtMicros(3_000))), written()),
        ];
        assert_eq!(run(getex(option), exchanges), value);
    }

    #[test]
    fn a_reply_of_the_wrong_kind_ends_the_command_as_failed() {
        let unavailable = ClientReply::Unavailable { acks: 0, needed: 2 };
        let result = run(
            Command::Ttl {
                key: b("k"),
                millis: false,
            },
            vec![(read("k"), unavailable.clone())],
        );
        assert_eq!(result, CommandResult::Failed(unavailable));
    }

    /// A counter answers `GetExpiring` with a plain `Found` (it has no expiry): TTL reports
    /// none, PERSIST removes nothing, EXPIRE is refused before anything is written.
    #[test]
    fn ttl_commands_on_a_counter_see_no_expiry_and_never_set_one() {
        let counter = || ClientReply::Found {
            values: vec![b("12")],
            context: CausalContext::default(),
            acks: 2,
        };
        let ttl = Command::Ttl {
            key: b("k"),
            millis: false,
        };
        assert_eq!(
            run(ttl, vec![(read("k"), counter())]),
            CommandResult::Integer(-1)
        );
        let persist = Command::Persist { key: b("k") };
        assert_eq!(
            run(persist, vec![(read("k"), counter())]),
            CommandResult::Count(0)
        );
        let expire = Command::Expire {
            key: b("k"),
            expiry: Expiry::AfterMillis(10),
        };
        assert!(matches!(
            run(expire, vec![(read("k"), counter())]),
            CommandResult::Unsupported(why) if why.contains("counters never expire")
        ));
    }
}
