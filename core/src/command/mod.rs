//! Client commands (`SET`, `GET`, `DEL`, `MSET`, `KV.PUT` with `CONTEXT`, ...) as sans-IO
//! machines over [`ClientRequest`]s.
//!
//! A command's consistency semantics live here once, for every driver: the node runs them for
//! RESP clients and the simulator's workload runs them on seeds, so what a `SET` means in
//! vector-clock mode is checked where it is shipped. A machine emits one request at a time
//! ([`CommandMachine::poll_request`]), consumes its reply ([`CommandMachine::handle_reply`]) and
//! ends with one typed [`CommandResult`] ([`CommandMachine::poll_result`]). It holds no IO, no
//! time and no randomness: timeouts and retries belong to the driver and to the coordinator.
//!
//! The meanings, per conflict mode:
//! * `SET key value`: last-write-wins: one put. Vector clocks: a read, then a put carrying the
//!   read's context, so the write supersedes exactly the siblings that read saw (a put without a
//!   context would only add a sibling, which is not what a Redis client means by `SET`).
//! * `DEL key ...`: per key, a read, then (if it found a live value) a delete carrying the read's
//!   context; the result counts the keys found and deleted, as Redis counts them.
//! * `GET key`: one read: absent, one value, or a conflict when siblings exist (plain `GET` has
//!   no way to return several values; `KV.GET` has).
//! * `EXISTS`, `MGET`, `MSET`: the per-key commands above, one key after the other, in order.
//! * `KV.GET`, `KV.PUT`, `KV.DEL`: one request each, with the client's level and context as
//!   given: the explicit read-modify-write interface.
//! * `INCR`, `INCRBY`, `DECR`, `DECRBY`: one increment request, answered with the counter's
//!   value (see `counter` for the parsing and `version::counter` for the CRDT).
//!
//! * `SET key value EX|PX|EXAT|PXAT|KEEPTTL`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`,
//!   `TTL`, `PTTL`, `PERSIST`, `GETEX`: see [`ttl`] (last-write-wins mode only).
//!
//! A multi-key command stops at the first reply that is not a success and reports it: the keys
//! before it were done, the ones after it were not tried (Redis gives no atomicity here either).

use crate::client::{CausalContext, ClientReply, ClientRequest, Consistency};
use crate::version::{ConflictMode, WriteVersion};
use bytes::Bytes;
use std::collections::VecDeque;

pub mod counter;
pub mod scan;
pub mod ttl;

pub use ttl::GetExOption;

/// The options of `SET` beyond key and value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// `EX`/`PX`/`EXAT`/`PXAT`: when the value expires; `None`: never (or `KEEPTTL`).
    pub expiry: Option<Expiry>,
    /// `KEEPTTL`: keep the expiry the key already has.
    pub keep_ttl: bool,
    /// `NX`/`XX`: write only if the key is absent / present (linearizable path).
    pub condition: Option<SetCondition>,
    /// `GET`: reply with the value the key held before (linearizable path).
    pub get: bool,
}
/// When a value expires, as the client gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// `EX`/`PX`: this many milliseconds after the write.
    AfterMillis(u64),
    /// `EXAT`/`PXAT`: at this Unix time in milliseconds.
    AtUnixMillis(u64),
}
/// `SET NX` / `SET XX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCondition {
    /// `NX`: only if the key has no live value.
    Absent,
    /// `XX`: only if the key has a live value.
    Present,
}
pub mod conditional;

/// A client command, parsed by a driver from its own protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `GET key`.
    Get {
        /// The key.
        key: Bytes,
    },
    /// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// The options beyond key and value.
        options: SetOptions,
    },
    /// `DEL key [key ...]`.
    Del {
        /// The keys, deleted in order.
        keys: Vec<Bytes>,
    },
    /// `EXISTS key [key ...]`.
    Exists {
        /// The keys, read in order.
        keys: Vec<Bytes>,
    },
    /// `MGET key [key ...]`.
    MGet {
        /// The keys, read in order.
        keys: Vec<Bytes>,
    },
    /// `MSET key value [key value ...]`.
    MSet {
        /// The pairs, each set as by `SET`, in order.
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `KV.GET key [LEVEL level]`.
    KvGet {
        /// The key.
        key: Bytes,
        /// Level, or the cluster default.
        level: Option<Consistency>,
    },
    /// `KV.PUT key value [LEVEL level] [CONTEXT context]`.
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
    /// `KV.DEL key [LEVEL level] [CONTEXT context]`.
    KvDel {
        /// The key.
        key: Bytes,
        /// Level, or the cluster default.
        level: Option<Consistency>,
        /// The context of the read this delete follows.
        context: Option<CausalContext>,
    },
    /// `INCR`, `INCRBY`, `DECR`, `DECRBY` (see [`counter::parse`]).
    Increment {
        /// The key.
        key: Bytes,
        /// What to add (negative: subtract).
        delta: i64,
        /// The name the client used, for logs and traces.
        name: &'static str,
    },
    /// `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT key t` (a time already past expires the key at
    /// once, as Redis deletes it).
    Expire {
        /// The key.
        key: Bytes,
        /// The new expiry.
        expiry: Expiry,
    },
    /// `TTL key` / `PTTL key`.
    Ttl {
        /// The key.
        key: Bytes,
        /// `PTTL`: milliseconds rather than seconds.
        millis: bool,
    },
    /// `PERSIST key`.
    Persist {
        /// The key.
        key: Bytes,
    },
    /// `GETEX key [EX|PX|EXAT|PXAT t|PERSIST]`.
    GetEx {
        /// The key.
        key: Bytes,
        /// The expiry to set or remove, if any.
        option: Option<GetExOption>,
    },
    /// `KV.CAS key ABSENT new` / `KV.CAS key VALUE expected new`: a compare-and-set (see
    /// `conditional`).
    KvCas {
        /// The key.
        key: Bytes,
        /// The live value the key must hold; `None`: the key must have none.
        expected: Option<Bytes>,
        /// The value to write.
        value: Bytes,
    },
}

impl Command {
    /// The command's name as clients type it, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "GET",
            Command::Set { .. } => "SET",
            Command::Del { .. } => "DEL",
            Command::Exists { .. } => "EXISTS",
            Command::MGet { .. } => "MGET",
            Command::MSet { .. } => "MSET",
            Command::KvGet { .. } => "KV.GET",
            Command::KvPut { .. } => "KV.PUT",
            Command::KvDel { .. } => "KV.DEL",
            Command::Increment { name, .. } => name,
            Command::Expire { .. } => "EXPIRE",
            Command::Ttl { millis: false, .. } => "TTL",
            Command::Ttl { millis: true, .. } => "PTTL",
            Command::Persist { .. } => "PERSIST",
            Command::GetEx { .. } => "GETEX",
            Command::KvCas { .. } => "KV.CAS",
        }
    }
}

/// What a plain read of one key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueRead {
    /// No live value.
    Absent,
    /// Exactly one live value.
    Value(Bytes),
    /// Several concurrent values (vector-clock siblings): plain `GET` cannot return them.
    Conflict {
        /// How many.
        siblings: usize,
    },
}

impl ValueRead {
    fn of(mut values: Vec<Bytes>) -> ValueRead {
        match values.len() {
            0 => ValueRead::Absent,
            1 => ValueRead::Value(values.swap_remove(0)),
            siblings => ValueRead::Conflict { siblings },
        }
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResult {
    /// `SET` and `MSET`: every write acknowledged.
    Done,
    /// `GET`.
    Value(ValueRead),
    /// `DEL` (keys found and deleted) and `EXISTS` (keys found).
    Count(u64),
    /// `MGET`, one per key in order.
    Values(Vec<ValueRead>),
    /// `KV.GET`: every sibling, and the context to write back with.
    Read {
        /// The live values (empty: not found).
        values: Vec<Bytes>,
        /// The context to pass to a later `KV.PUT` or `KV.DEL`.
        context: CausalContext,
        /// Replicas that answered.
        acks: u8,
    },
    /// `KV.PUT` and `KV.DEL`.
    Written {
        /// The version written.
        version: WriteVersion,
        /// Replicas that acknowledged durably.
        acks: u8,
    },
    /// The first reply that was not a success (`Unavailable`, `Indeterminate`, `Rejected`, or a
    /// reply of the wrong kind), which ended the command. An `Indeterminate` write may still take
    /// effect; the driver reports it as such.
    Failed(ClientReply),
    /// `INCR` and friends: the counter's value after the increment, on the replica that applied
    /// it; `TTL`/`PTTL`: a signed integer as Redis gives it (-2 absent, -1 no expiry).
    Integer(i64),
    /// A form this build does not run (for example `SET ... NX` before conditional writes
    /// exist); nothing was sent.
    Unsupported(&'static str),
    /// A conditional `SET` or `KV.CAS` (see `conditional`): whether it wrote, and the live value
    /// its condition was judged on.
    Conditional {
        /// The condition held and the write is durable on a majority.
        applied: bool,
        /// The live value before (`None`: absent).
        previous: Option<Bytes>,
    },
}

/// What the machine does with one key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Read; the result records what it found (`GET`, `MGET`).
    Read,
    /// Read; the result counts it if found (`EXISTS`).
    Exists,
    /// Read (vector clocks only), then put with the read's context.
    Set { value: Bytes },
    /// Read, then delete with the read's context if found; counts it if deleted.
    Delete,
    /// One read at `level`.
    KvGet { level: Option<Consistency> },
    /// One put as given.
    KvPut {
        value: Bytes,
        level: Option<Consistency>,
        context: Option<CausalContext>,
    },
    /// One delete as given.
    KvDel {
        level: Option<Consistency>,
        context: Option<CausalContext>,
    },
    /// One increment.
    Increment { delta: i64 },
    /// One conditional write (always the linearizable path).
    Conditional {
        condition: crate::client::WriteCondition,
        value: Bytes,
    },
}

/// Where the current key's step stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// The request is built and waits for `poll_request`.
    Ready(ClientRequest),
    /// The request is out; the next input is its reply.
    Waiting(RequestRole),
}

/// What the reply awaited answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestRole {
    /// The read a step starts with.
    Read,
    /// The write a step ends with.
    Write,
}

/// One command in progress. See the module documentation for the meanings.
#[derive(Clone, Debug)]
pub struct CommandMachine {
    conflict: ConflictMode,
    /// Which result the command assembles.
    kind: ResultKind,
    /// The steps not yet started, in order.
    steps: VecDeque<(Bytes, Step)>,
    /// The step running, and where it stands.
    current: Option<(Bytes, Step, Stage)>,
    count: u64,
    reads: Vec<ValueRead>,
    result: Option<CommandResult>,
    /// True once `poll_result` has handed the result out.
    finished: bool,
    /// A TTL command runs in its own machine (see [`ttl`]); the fields above then stay idle.
    /// Boxed: every GET and SET builds and moves this machine, which the TTL machine inline
    /// more than doubled in size (issue #15).
    ttl: Option<Box<ttl::TtlMachine>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResultKind {
    Done,
    Value,
    Count,
    Values,
    Single,
}

/// What `command` becomes: its result's shape and the steps (one per key), in order.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per command: a table, read top to bottom"
)]
fn plan(command: Command) -> (ResultKind, Vec<(Bytes, Step)>) {
    match command {
        Command::Get { key } => (ResultKind::Value, vec![(key, Step::Read)]),
        Command::Set {
            key,
            value,
            options,
        } => match conditional::set_condition(&options) {
            Some(condition) => (
                ResultKind::Single,
                vec![(key, Step::Conditional { condition, value })],
            ),
            None => (ResultKind::Done, vec![(key, Step::Set { value })]),
        },
        Command::KvCas {
            key,
            expected,
            value,
        } => (
            ResultKind::Single,
            vec![(
                key,
                Step::Conditional {
                    condition: conditional::cas_condition(expected),
                    value,
                },
            )],
        ),
        Command::Del { keys } => (
            ResultKind::Count,
            keys.into_iter().map(|k| (k, Step::Delete)).collect(),
        ),
        Command::Exists { keys } => (
            ResultKind::Count,
            keys.into_iter().map(|k| (k, Step::Exists)).collect(),
        ),
        Command::MGet { keys } => (
            ResultKind::Values,
            keys.into_iter().map(|k| (k, Step::Read)).collect(),
        ),
        Command::MSet { pairs } => (
            ResultKind::Done,
            pairs
                .into_iter()
                .map(|(key, value)| (key, Step::Set { value }))
                .collect(),
        ),
        Command::KvGet { key, level } => (ResultKind::Single, vec![(key, Step::KvGet { level })]),
        Command::KvPut {
            key,
            value,
            level,
            context,
        } => (
            ResultKind::Single,
            vec![(
                key,
                Step::KvPut {
                    value,
                    level,
                    context,
                },
            )],
        ),
        Command::KvDel {
            key,
            level,
            context,
        } => (
            ResultKind::Single,
            vec![(key, Step::KvDel { level, context })],
        ),
        Command::Increment { key, delta, .. } => {
            (ResultKind::Single, vec![(key, Step::Increment { delta })])
        }
        // `ttl_op` took these.
        Command::Expire { key, .. }
        | Command::Ttl { key, .. }
        | Command::Persist { key }
        | Command::GetEx { key, .. } => (ResultKind::Single, vec![(key, Step::Read)]),
    }
}

impl CommandMachine {
    /// Starts `command` on a cluster in `conflict` mode.
    pub fn new(command: Command, conflict: ConflictMode) -> Self {
        let command = match ttl_op(command) {
            Ok((key, op)) => {
                return CommandMachine::with_ttl(conflict, ttl::TtlMachine::new(key, op))
            }
            Err(command) => command,
        };
        let (kind, steps) = plan(command);
        let mut machine = CommandMachine {
            conflict,
            kind,
            steps: steps.into(),
            current: None,
            count: 0,
            reads: Vec::new(),
            result: None,
            finished: false,
            ttl: None,
        };
        machine.start_next();
        machine.check_invariants();
        machine
    }

    /// The next request to send, once; `None` while a reply is awaited or when the command is
    /// over. Every request returned must be answered with [`Self::handle_reply`] (a driver that
    /// gives up answers it with `Indeterminate` or `Unavailable`) before the next appears.
    pub fn poll_request(&mut self) -> Option<ClientRequest> {
        if let Some(ttl) = self.ttl.as_mut() {
            return ttl.poll_request();
        }
        let (_, _, stage) = self.current.as_mut()?;
        let Stage::Ready(request) = stage else {
            return None;
        };
        let role = match request {
            // This machine builds no scans (`command::scan` does).
            ClientRequest::Get { .. }
            | ClientRequest::GetExpiring { .. }
            | ClientRequest::Scan { .. }
            | ClientRequest::CountKeys => RequestRole::Read,
            ClientRequest::Put { .. }
            | ClientRequest::Delete { .. }
            | ClientRequest::PutExpiring { .. }
            | ClientRequest::Increment { .. }
            | ClientRequest::Conditional { .. } => RequestRole::Write,
        };
        // Moved out, not cloned: the machine keeps only the role of what it sent.
        let Stage::Ready(request) = std::mem::replace(stage, Stage::Waiting(role)) else {
            return None;
        };
        self.check_invariants();
        Some(request)
    }

    /// The reply to the request [`Self::poll_request`] returned last. A reply nobody waits for
    /// (none was sent, or the command is over) is ignored: the machine never panics on input.
    #[expect(
        clippy::too_many_lines,
        reason = "the transition table (role, step, reply): one arm per transition"
    )]
    pub fn handle_reply(&mut self, reply: ClientReply) {
        if let Some(ttl) = self.ttl.as_mut() {
            ttl.handle_reply(reply);
            return;
        }
        let role = match &self.current {
            Some((_, _, Stage::Waiting(role))) => *role,
            _ => return,
        };
        let Some((key, step, _)) = self.current.take() else {
            return;
        };
        match (role, step, reply) {
            // Reads that end their step.
            (RequestRole::Read, Step::Read, ClientReply::Found { values, .. }) => {
                self.record_read(ValueRead::of(values));
                self.start_next();
            }
            (RequestRole::Read, Step::Read, ClientReply::NotFound { .. }) => {
                self.record_read(ValueRead::Absent);
                self.start_next();
            }
            (RequestRole::Read, Step::Exists, ClientReply::Found { .. }) => {
                self.count += 1;
                self.start_next();
            }
            (RequestRole::Read, Step::Exists | Step::Delete, ClientReply::NotFound { .. }) => {
                self.start_next()
            }
            (
                RequestRole::Read,
                Step::KvGet { .. },
                ClientReply::Found {
                    values,
                    context,
                    acks,
                },
            ) => {
                self.result = Some(CommandResult::Read {
                    values,
                    context,
                    acks,
                });
                self.start_next();
            }
            (RequestRole::Read, Step::KvGet { .. }, ClientReply::NotFound { context, acks }) => {
                self.result = Some(CommandResult::Read {
                    values: Vec::new(),
                    context,
                    acks,
                });
                self.start_next();
            }
            // Reads that lead to a write with their context.
            (
                RequestRole::Read,
                Step::Set { value },
                ClientReply::Found { context, .. } | ClientReply::NotFound { context, .. },
            ) => {
                let request = ClientRequest::Put {
                    key: key.clone(),
                    value: value.clone(),
                    context: Some(context),
                    consistency: None,
                };
                self.current = Some((key, Step::Set { value }, Stage::Ready(request)));
            }
            (RequestRole::Read, Step::Delete, ClientReply::Found { context, .. }) => {
                let request = ClientRequest::Delete {
                    key: key.clone(),
                    context: Some(context),
                    consistency: None,
                };
                self.current = Some((key, Step::Delete, Stage::Ready(request)));
            }
            // Writes.
            (RequestRole::Write, Step::Set { .. }, ClientReply::Written { .. }) => {
                self.start_next()
            }
            (RequestRole::Write, Step::Delete, ClientReply::Written { .. }) => {
                self.count += 1;
                self.start_next();
            }
            (
                RequestRole::Write,
                Step::KvPut { .. } | Step::KvDel { .. },
                ClientReply::Written { version, acks },
            ) => {
                self.result = Some(CommandResult::Written { version, acks });
                self.start_next();
            }
            (RequestRole::Write, Step::Increment { .. }, ClientReply::Counted { value, .. }) => {
                self.result = Some(CommandResult::Integer(value));
            }
            (
                RequestRole::Write,
                Step::Conditional { .. },
                ClientReply::Conditional {
                    applied, previous, ..
                },
            ) => {
                self.result = Some(CommandResult::Conditional { applied, previous });
                self.start_next();
            }
            // Anything else ends the command: a failure, or a reply of the wrong kind.
            (_, _, reply) => {
                self.steps.clear();
                self.result = Some(CommandResult::Failed(reply));
            }
        }
        self.check_invariants();
    }

    /// The command's result, once, when it is over.
    pub fn poll_result(&mut self) -> Option<CommandResult> {
        if let Some(ttl) = self.ttl.as_mut() {
            if self.finished {
                return None;
            }
            let result = ttl.take_result()?;
            self.finished = true;
            return Some(result);
        }
        if self.finished || self.current.is_some() {
            return None;
        }
        self.finished = true;
        let result = self.result.take().unwrap_or(match self.kind {
            ResultKind::Done => CommandResult::Done,
            ResultKind::Count => CommandResult::Count(self.count),
            ResultKind::Values => CommandResult::Values(std::mem::take(&mut self.reads)),
            ResultKind::Value => {
                CommandResult::Value(self.reads.pop().unwrap_or(ValueRead::Absent))
            }
            // A single-request command always sets its result before it ends.
            ResultKind::Single => CommandResult::Failed(ClientReply::Rejected(
                crate::client::RequestError::InvalidConsistency,
            )),
        });
        self.check_invariants();
        Some(result)
    }

    /// True once the result is known (whether or not it was polled).
    pub fn is_over(&self) -> bool {
        self.ttl
            .as_ref()
            .map_or(self.current.is_none(), |t| t.is_over())
    }

    /// Panics if the machine's state is inconsistent (a bug, never an input).
    pub fn check_invariants(&self) {
        if let Some(ttl) = &self.ttl {
            assert!(self.current.is_none() && self.steps.is_empty());
            ttl.check_invariants();
        }
        if self.current.is_none() {
            assert!(self.steps.is_empty(), "steps remain with none running");
        }
        if matches!(self.result, Some(CommandResult::Failed(_))) {
            assert!(self.current.is_none(), "a failed command still runs");
        }
        if let Some((key, step, Stage::Ready(request))) = &self.current {
            // The key moved into the request when the step does not use it again.
            assert!(
                key.is_empty() || request.key() == key,
                "a request for another key"
            );
            let write = !matches!(request, ClientRequest::Get { .. });
            match step {
                Step::Read | Step::Exists | Step::KvGet { .. } => assert!(!write),
                Step::KvPut { .. }
                | Step::KvDel { .. }
                | Step::Increment { .. }
                | Step::Conditional { .. } => {
                    assert!(write)
                }
                Step::Set { .. } | Step::Delete => {}
            }
        }
        assert!(
            self.reads.len() <= 1 || self.kind == ResultKind::Values,
            "only MGET gathers several reads"
        );
    }

    /// A machine that runs one TTL command.
    fn with_ttl(conflict: ConflictMode, ttl: ttl::TtlMachine) -> Self {
        let machine = CommandMachine {
            conflict,
            kind: ResultKind::Single,
            steps: VecDeque::new(),
            current: None,
            count: 0,
            reads: Vec::new(),
            result: None,
            finished: false,
            ttl: Some(Box::new(ttl)),
        };
        machine.check_invariants();
        machine
    }

    /// Keeps what a read step found: a `GET`'s one read is its result at once (no list to
    /// allocate per command); `MGET` gathers its reads in order.
    fn record_read(&mut self, read: ValueRead) {
        if self.kind == ResultKind::Value {
            self.result = Some(CommandResult::Value(read));
        } else {
            self.reads.push(read);
        }
    }

    /// Starts the next step, or ends the command if none is left.
    fn start_next(&mut self) {
        self.current = None;
        let Some((mut key, mut step)) = self.steps.pop_front() else {
            return;
        };
        // What the step needs no more once its request is built moves into the request: a
        // clone of a key or value as parsed allocated its shared header (issue #15). Only a
        // read that leads to a write (a delete; a set under vector clocks) uses its key again.
        let key_used_again = match &step {
            Step::Delete => true,
            Step::Set { .. } => self.conflict == ConflictMode::VectorClock,
            _ => false,
        };
        let request_key = if key_used_again {
            key.clone()
        } else {
            std::mem::take(&mut key)
        };
        let request = match &mut step {
            Step::Read | Step::Exists | Step::Delete => ClientRequest::Get {
                key: request_key,
                consistency: None,
            },
            Step::Set { value } => match self.conflict {
                // A read first: only its context lets the put replace what is there.
                ConflictMode::VectorClock => ClientRequest::Get {
                    key: request_key,
                    consistency: None,
                },
                ConflictMode::Lww => ClientRequest::Put {
                    key: request_key,
                    value: std::mem::take(value),
                    context: None,
                    consistency: None,
                },
            },
            Step::KvGet { level } => ClientRequest::Get {
                key: request_key,
                consistency: *level,
            },
            Step::KvPut {
                value,
                level,
                context,
            } => ClientRequest::Put {
                key: request_key,
                value: std::mem::take(value),
                context: context.take(),
                consistency: *level,
            },
            Step::KvDel { level, context } => ClientRequest::Delete {
                key: request_key,
                context: context.clone(),
                consistency: *level,
            },
            Step::Increment { delta } => ClientRequest::Increment {
                key: request_key,
                delta: *delta,
                consistency: None,
            },
            Step::Conditional { condition, value } => ClientRequest::Conditional {
                key: request_key,
                condition: condition.clone(),
                value: Some(value.clone()),
            },
        };
        self.current = Some((key, step, Stage::Ready(request)));
    }
}

#[cfg(test)]
mod tests;

/// The TTL machine's work for `command`, or the command back if it is not a TTL command. A
/// plain `SET` (no options) stays on the ordinary path, so its requests are unchanged.
fn ttl_op(command: Command) -> Result<(Bytes, ttl::TtlOp), Command> {
    use ttl::TtlOp;
    Ok(match command {
        Command::Set {
            key,
            value,
            options,
        } if options.expiry.is_some() || options.keep_ttl => {
            // `NX`/`XX`/`GET` alone are conditional writes (the ordinary path below); with an
            // expiry they would need it inside the Paxos proposal, which is not carried yet.
            let op = if options.condition.is_some() || options.get {
                TtlOp::Refuse("SET combining NX, XX or GET with an expiry is not supported yet")
            } else if options.keep_ttl && options.expiry.is_some() {
                TtlOp::Refuse("SET with KEEPTTL and an expiry")
            } else if let Some(expiry) = options.expiry {
                TtlOp::SetExpiring {
                    value,
                    expires: expiry.expires_at(),
                }
            } else {
                TtlOp::SetKeepTtl { value }
            };
            (key, op)
        }
        Command::Expire { key, expiry } => (
            key,
            TtlOp::Expire {
                expires: expiry.expires_at(),
            },
        ),
        Command::Ttl { key, millis } => (key, TtlOp::Ttl { millis }),
        Command::Persist { key } => (key, TtlOp::Persist),
        Command::GetEx { key, option } => (key, TtlOp::GetEx { option }),
        other => return Err(other),
    })
}
