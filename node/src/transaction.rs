//! `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`: refused, so that a transaction is never
//! partially applied (issue #13, item 5).
//!
//! Why refusal and not transactions: a Redis transaction runs its commands with nothing
//! interleaved, and a Dynamo-style store has no single place where that could happen (a key's
//! replicas are several nodes; keys of one transaction live on different ones). What must never
//! happen is what did before: `MULTI` answered "unknown command", the queued commands then ran
//! one by one, and only `EXEC` failed, so a client library that raised on `EXEC` (redis-py's
//! default `pipeline()`) reported a failure after its writes had landed.
//!
//! So `MULTI` is refused, and the connection then refuses every command until `EXEC` or
//! `DISCARD`: nothing sent as part of the transaction runs. `EXEC` answers
//! `-EXECABORT` (Redis's reply for a transaction discarded because a queued command was refused),
//! `DISCARD` answers `+OK`; both end the refusal. `QUIT` and `RESET` still work (they change no
//! data; `RESET` ends the refusal as it ends a Redis transaction). What client libraries do with
//! this: redis-py's `pipeline()` reads every reply, sees `EXECABORT` and raises the `MULTI`
//! error (`ResponseError`); redis-rs's atomic pipelines return the first error. Either way no
//! command of the transaction ran, and the connection is clean again after `EXEC`.
//!
//! `WATCH` and `UNWATCH` are refused too: without transactions there is nothing to make
//! conditional, and an `UNWATCH` that answered `OK` would suggest a `WATCH` had meant something.
//! For a conditional write use the linearizable path (`SET NX`/`XX`, `KV.CAS`).

use crate::resp::Reply;

/// Text of the reply to `MULTI`.
pub const MULTI_REFUSED: &str = "ERR MULTI is not supported by ringkv (a transaction cannot be \
     made atomic across replicas): this connection now refuses every command until EXEC or \
     DISCARD, so nothing queued runs";

/// Text of the reply to a command sent after a refused `MULTI`.
pub const QUEUED_REFUSED: &str = "ERR refused: MULTI was refused on this connection, so no \
     command runs until EXEC or DISCARD (nothing queued is ever run)";

/// Text of the reply to `EXEC` after a refused `MULTI`.
pub const EXEC_ABORTED: &str = "EXECABORT Transaction discarded: ringkv does not support MULTI, \
     and none of the commands sent after it ran";

/// Text of the reply to `WATCH` and `UNWATCH`.
pub const WATCH_REFUSED: &str = "ERR WATCH and UNWATCH are not supported by ringkv (there are no \
     transactions to make conditional); use SET with NX or XX, or KV.CAS, on the linearizable \
     path";

/// One connection's transaction state: whether it is inside a refused `MULTI`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransactionRefusal {
    open: bool,
}

impl TransactionRefusal {
    /// Screens a command before it is parsed, by its name (the first argument). `Some(reply)`:
    /// answered here and not run; `None`: run it as usual. Inside a refused `MULTI` only `QUIT`
    /// and `RESET` run (and `RESET` must call [`Self::reset`]); `EXEC` and `DISCARD` end it.
    pub fn screen(&mut self, name: &[u8]) -> Option<Reply> {
        if !self.open {
            return None;
        }
        let is = |word: &str| name.eq_ignore_ascii_case(word.as_bytes());
        if is("exec") {
            self.open = false;
            Some(Reply::Error(EXEC_ABORTED.to_string()))
        } else if is("discard") {
            self.open = false;
            Some(Reply::ok())
        } else if is("quit") || is("reset") {
            None
        } else if is("multi") {
            Some(Reply::err(
                "MULTI calls can not be nested (and MULTI is not supported by ringkv): send \
                 EXEC or DISCARD",
            ))
        } else {
            Some(Reply::Error(QUEUED_REFUSED.to_string()))
        }
    }

    /// `MULTI` outside a refused one: refuse it and start refusing what follows.
    pub fn multi(&mut self) -> Reply {
        self.open = true;
        Reply::Error(MULTI_REFUSED.to_string())
    }

    /// `EXEC` outside a refused `MULTI`.
    pub fn exec_without_multi() -> Reply {
        Reply::err("EXEC without MULTI")
    }

    /// `DISCARD` outside a refused `MULTI`.
    pub fn discard_without_multi() -> Reply {
        Reply::err("DISCARD without MULTI")
    }

    /// `WATCH` or `UNWATCH`.
    pub fn watch() -> Reply {
        Reply::Error(WATCH_REFUSED.to_string())
    }

    /// `RESET`: the connection leaves any refused `MULTI`.
    pub fn reset(&mut self) {
        self.open = false;
    }

    /// Whether the connection is inside a refused `MULTI`.
    pub fn is_open(&self) -> bool {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(reply: Option<Reply>) -> Option<String> {
        reply.map(|reply| match reply {
            Reply::Error(text) => text.split(' ').next().unwrap_or_default().to_string(),
            Reply::Simple(text) => format!("+{text}"),
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn nothing_runs_between_a_refused_multi_and_exec_or_discard() {
        let mut state = TransactionRefusal::default();
        assert_eq!(state.screen(b"SET"), None, "outside MULTI commands run");
        assert_eq!(
            state.screen(b"EXEC"),
            None,
            "EXEC without MULTI is parsed as usual"
        );
        assert!(matches!(state.multi(), Reply::Error(t) if t.contains("MULTI is not supported")));
        // (name, reply prefix: None means the command runs, still inside: whether it stays open)
        let table: [(&[u8], Option<&str>, bool); 9] = [
            (b"SET", Some("ERR"), true),
            (b"incr", Some("ERR"), true),
            (b"GET", Some("ERR"), true),
            (b"KV.PUT", Some("ERR"), true),
            (b"nonsense", Some("ERR"), true),
            (b"WATCH", Some("ERR"), true),
            (b"MULTI", Some("ERR"), true),
            (b"QUIT", None, true),
            (b"exec", Some("EXECABORT"), false),
        ];
        for (name, expected, still_open) in table {
            let got = prefix(state.screen(name));
            assert_eq!(
                got.as_deref(),
                expected,
                "{}",
                String::from_utf8_lossy(name)
            );
            assert_eq!(
                state.is_open(),
                still_open,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert_eq!(state.screen(b"SET"), None, "EXEC ended the refusal");
        state.multi();
        assert_eq!(prefix(state.screen(b"DISCARD")).as_deref(), Some("+OK"));
        assert_eq!(state.screen(b"SET"), None, "DISCARD ended the refusal");
        state.multi();
        assert_eq!(
            state.screen(b"RESET"),
            None,
            "RESET runs, and must end the refusal"
        );
        state.reset();
        assert!(!state.is_open());
    }
}
