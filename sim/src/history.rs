//! The history record: every client operation as the client saw it. Checkers (durability here,
//! linearizability and convergence in the checkers issue) read only this and the replicas' final
//! storage, never the system's opinion of itself.

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
    /// For an ok write: the version the coordinator reported.
    pub version: Option<WriteVersion>,
    /// For a write in vector-clock mode: the causal context it carried (what its client had read).
    pub context: Option<CausalContext>,
    /// Replicas that acknowledged (reads: answered) before the reply.
    pub acks: u8,
    /// The node the client sent the request to.
    pub coordinator: u32,
    /// When the client sent it, simulated nanoseconds.
    pub invoke_ns: u64,
    /// When the client got an answer; `None` if it gave up first.
    pub complete_ns: Option<u64>,
    /// How it ended.
    pub outcome: OpOutcome,
    /// Invoked during the fault phase (counts toward availability).
    pub during_faults: bool,
}

impl HistoryOp {
    /// True for puts and deletes.
    pub fn is_write(&self) -> bool {
        !matches!(self.kind, OpKind::Get)
    }
}

/// A whole run's operations, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations.
    pub ops: Vec<HistoryOp>,
}
