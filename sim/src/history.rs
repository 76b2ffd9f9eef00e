//! The history record: every client operation as the client saw it. Checkers (durability here,
//! linearizability and convergence in the checkers issue) read only this and the replicas' final
//! storage, never the system's opinion of itself.

use ringkv_core::version::ExpiresAt;
use ringkv_core::{CausalContext, WriteVersion};

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A read.
    Get,
    /// A write of a value.
    Put,
    /// A delete (a write of "absent").
    Delete,
    /// A counter increment by `HistoryOp::delta` (`workload.counters`).
    Increment,
}

/// How an operation ended, from the client's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpOutcome {
    /// Succeeded: a read's values are valid; a write is acknowledged durable on W replicas.
    Ok,
    /// Known to have had no effect (refused, or a read that could not gather R replies).
    Failed,
    /// May or may not have taken effect: a write short of W, or no answer before the client gave
    /// up. Such a write may still surface later through read repair or anti-entropy.
    Indeterminate,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HistoryOp {
    /// The client process.
    pub client: u32,
    /// The key, as an index into the workload's key set.
    pub key: u32,
    /// Read, write or delete.
    pub kind: OpKind,
    /// For a put: the unique id of the value written (its first 8 bytes). 0 for gets and deletes:
    /// "absent" is the value 0 in register models.
    pub value: u64,
    /// For an ok get: the ids of the values read (empty = not found; several = siblings).
    pub read: Vec<u64>,
    /// For an increment: what it added (negative: subtracted). 0 otherwise.
    pub delta: i64,
    /// For an ok write: the version the coordinator reported.
    pub version: Option<WriteVersion>,
    /// For a write in vector-clock mode: the causal context it carried (what its client had read).
    /// For an ok read that is a step of a command: the context it returned.
    pub context: Option<CausalContext>,
    /// Replicas that acknowledged (reads: answered) before the reply.
    pub acks: u8,
    /// The node the client sent the request to.
    pub coordinator: u32,
    /// For a put of an expiring value (`PutExpiring`): when it expires, as the request said.
    pub expires: Option<ExpiresAt>,
    /// When the client sent it, simulated nanoseconds.
    pub invoke_ns: u64,
    /// When the client got an answer; `None` if it gave up first.
    pub complete_ns: Option<u64>,
    /// How it ended.
    pub outcome: OpOutcome,
    /// Invoked during the fault phase (counts toward availability).
    pub during_faults: bool,
    /// With `workload.interface = "commands"`: the index in [`History::commands`] of the client
    /// command this request was one step of (a `SET`'s read and write share one).
    pub command: Option<usize>,
}

impl HistoryOp {
    /// True for puts and deletes.
    pub fn is_write(&self) -> bool {
        !matches!(self.kind, OpKind::Get)
    }
}

/// How a client command ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CommandOutcome {
    /// Still running when the run ended, or abandoned: a request of it got no answer in time,
    /// or every node refused it. Its last write may or may not take effect.
    Unfinished,
    /// Ended with core's result (`Failed` holds the reply that ended it).
    Result(CommandResultKind),
}

/// A command's result without its payload (the ops hold the values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandResultKind {
    /// `SET`: acknowledged.
    Done,
    /// `GET`: absent, a value, or a conflict of this many siblings (0 = absent, 1 = a value).
    Value {
        /// Live values read.
        siblings: usize,
    },
    /// `DEL`: keys found and deleted.
    Count(u64),
    /// `KV.GET`: the values and context were returned.
    Read,
    /// `KV.PUT`, `KV.DEL`: acknowledged.
    Written,
    /// `TTL`/`PTTL`: the integer answered.
    Integer(i64),
    /// A reply that was not a success ended it; `indeterminate` if that reply was a write's
    /// `Indeterminate` (the write may still take effect).
    Failed {
        /// The ending reply was `Indeterminate`.
        indeterminate: bool,
    },
}

/// One client command (`workload.interface = "commands"`): the requests it made are the ops
/// whose `command` names it, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommandRecord {
    /// The client process.
    pub client: u32,
    /// `SET`, `GET`, `DEL`, `KV.GET`, `KV.PUT`, `KV.DEL`.
    pub name: &'static str,
    /// The key, as an index into the workload's key set.
    pub key: u32,
    /// Indexes in [`History::ops`] of its requests, in order.
    pub ops: Vec<usize>,
    /// How it ended.
    pub outcome: CommandOutcome,
}

impl CommandRecord {
    /// True if the command was acknowledged as having written (a `SET`, a `KV.PUT`/`KV.DEL`, or
    /// a `DEL` that found the key and deleted it).
    pub fn wrote(&self) -> bool {
        matches!(
            self.outcome,
            CommandOutcome::Result(
                CommandResultKind::Done
                    | CommandResultKind::Written
                    | CommandResultKind::Count(1..)
            )
        )
    }
}

/// A whole run's operations, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations.
    pub ops: Vec<HistoryOp>,
    /// The client commands, in invocation order (empty unless `workload.interface = "commands"`).
    pub commands: Vec<CommandRecord>,
    /// The full scans, in invocation order (empty unless `workload.scan_fraction > 0`).
    pub scans: Vec<ScanRecord>,
}

/// One full scan by one client: pages from cursor 0 until the ring was walked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScanRecord {
    /// The client process.
    pub client: u32,
    /// When its first page was sent.
    pub invoke_ns: u64,
    /// When its last page was answered (`None`: it did not finish: a page failed or the
    /// workload ended).
    pub complete_ns: Option<u64>,
    /// The keys returned, as indexes into the workload's key set, in the order returned (a key
    /// the workload never wrote is recorded as `u32::MAX`).
    pub keys: Vec<u32>,
    /// Pages answered.
    pub pages: u32,
}
