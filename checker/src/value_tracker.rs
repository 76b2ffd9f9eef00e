//! Early detection of doomed configurations for register-like models.
//!
//! If some read of value `v` is still to be linearized, the register does not hold `v` now, and
//! no operation left can write `v`, that read can never be linearized: the configuration fails,
//! however the other operations are ordered. The plain search only notices when it reaches that
//! read's return, after trying every order of the operations in between, which is exponential
//! in the concurrency. Counting readers and possible writers per value makes the test O(1) per
//! step.
//!
//! It relies on the [`Model::access`] contract: an operation with a write part leaves the
//! register holding the written value, and nothing else changes it.

use std::collections::BTreeMap;

use crate::history::History;
use crate::model::{Access, Model, ValueCode};

const NONE: u32 = u32::MAX;

/// Dense value ids of a key's register operations, with reader and writer counts.
#[derive(Clone, Debug)]
pub struct ValueIds {
    /// Value read by each operation (determinate reads only), or [`NO_VALUE`].
    pub op_read: Vec<u32>,
    /// Value written by each operation (if it takes effect), or [`NO_VALUE`].
    pub op_write: Vec<u32>,
    /// The initial value.
    pub initial: u32,
    /// Operations reading each value.
    pub readers: Vec<u32>,
    /// Operations that may write each value.
    pub writers: Vec<u32>,
    /// Value an indeterminate operation reads if it takes effect (a compare-and-set), or
    /// [`NO_VALUE`].
    pub op_maybe_read: Vec<u32>,
    /// Indeterminate operations that may read each value.
    pub maybe_readers: Vec<u32>,
    /// Determinate operations whose constraint on the state [`Access`] does not describe
    /// ([`Access::Inert`], e.g. a failed compare-and-set).
    pub op_inert: Vec<bool>,
    /// How many of those there are.
    pub inert: u32,
    /// For an indeterminate blind write: the previous indeterminate blind write of the same
    /// value (in the caller's local order), or [`NO_VALUE`]. Such twins are interchangeable, so a
    /// search only ever needs to linearize the first one not yet linearized.
    pub twin_before: Vec<u32>,
}

/// "No value" in [`ValueIds`].
pub const NO_VALUE: u32 = NONE;

impl ValueIds {
    /// Ids for the operations `ops` (history indices, in the caller's local order), or `None`
    /// if the model is not a register or some operation's effect is opaque.
    pub fn new<M: Model>(
        model: &M,
        history: &History<M::Input, M::Output>,
        ops: &[usize],
    ) -> Option<Self> {
        let initial = model.register_initial_value()?;
        let mut ids: BTreeMap<ValueCode, u32> = BTreeMap::new();
        let mut id_of = |value: ValueCode| -> u32 {
            let next = ids.len() as u32;
            *ids.entry(value).or_insert(next)
        };
        let initial = id_of(initial);
        let mut op_read = Vec::with_capacity(ops.len());
        let mut op_write = Vec::with_capacity(ops.len());
        let mut op_maybe_read = Vec::with_capacity(ops.len());
        let mut op_inert = Vec::with_capacity(ops.len());
        for &index in ops {
            let op = &history.operations[index];
            let determinate = op.output().is_some();
            let (read, write) = match model.access(&op.input, op.output()) {
                Access::Opaque => return None,
                Access::Inert => (None, None),
                Access::Read(value) => (Some(value), None),
                Access::Write(value) => (None, Some(value)),
                Access::ReadWrite { read, write } => (Some(read), Some(write)),
            };
            op_inert.push(determinate && read.is_none() && write.is_none());
            op_read.push(read.filter(|_| determinate).map_or(NONE, &mut id_of));
            op_maybe_read.push(read.filter(|_| !determinate).map_or(NONE, &mut id_of));
            op_write.push(write.map_or(NONE, &mut id_of));
        }
        let mut readers = vec![0u32; ids.len()];
        let mut writers = vec![0u32; ids.len()];
        let mut maybe_readers = vec![0u32; ids.len()];
        for &m in &op_maybe_read {
            if m != NONE {
                maybe_readers[m as usize] += 1;
            }
        }
        let inert = op_inert.iter().filter(|&&i| i).count() as u32;
        let mut last_blind: BTreeMap<u32, u32> = BTreeMap::new();
        let mut twin_before = vec![NONE; ops.len()];
        for (local, &index) in ops.iter().enumerate() {
            let blind =
                op_read[local] == NONE && op_maybe_read[local] == NONE && op_write[local] != NONE;
            if blind && history.operations[index].output().is_none() {
                if let Some(previous) = last_blind.insert(op_write[local], local as u32) {
                    twin_before[local] = previous;
                }
            }
        }
        for (&r, &w) in op_read.iter().zip(&op_write) {
            if r != NONE {
                readers[r as usize] += 1;
            }
            if w != NONE {
                writers[w as usize] += 1;
            }
        }
        Some(Self {
            op_read,
            op_write,
            initial,
            readers,
            writers,
            op_maybe_read,
            maybe_readers,
            op_inert,
            inert,
            twin_before,
        })
    }
}

/// Per-value counts of readers and possible writers still to be linearized.
#[derive(Debug)]
pub struct ValueTracker {
    /// Value read by each local operation (determinate reads only), or `NONE`.
    op_read: Vec<u32>,
    /// Value written by each local operation (if it takes effect), or `NONE`.
    op_write: Vec<u32>,
    readers: Vec<u32>,
    writers: Vec<u32>,
    op_maybe_read: Vec<u32>,
    maybe_readers: Vec<u32>,
    op_inert: Vec<bool>,
    /// Inert determinate operations left.
    inert: u32,
    twin_before: Vec<u32>,
    /// Values with readers left and no writers left.
    orphans: u32,
    /// The value the register holds now.
    current: u32,
    /// Previous values of `current`, one per linearized operation.
    history_of_current: Vec<u32>,
}

impl ValueTracker {
    /// A tracker for the local operations `ops` (history indices), or `None` if the model is
    /// not a register or some operation's effect is opaque.
    pub fn new<M: Model>(
        model: &M,
        history: &History<M::Input, M::Output>,
        ops: &[usize],
    ) -> Option<Self> {
        let ids = ValueIds::new(model, history, ops)?;
        let orphans = ids
            .readers
            .iter()
            .zip(&ids.writers)
            .filter(|(&r, &w)| r > 0 && w == 0)
            .count() as u32;
        Some(Self {
            twin_before: ids.twin_before,
            op_read: ids.op_read,
            op_write: ids.op_write,
            readers: ids.readers,
            writers: ids.writers,
            op_maybe_read: ids.op_maybe_read,
            maybe_readers: ids.maybe_readers,
            op_inert: ids.op_inert,
            inert: ids.inert,
            orphans,
            current: ids.initial,
            history_of_current: Vec::with_capacity(ops.len()),
        })
    }

    fn is_orphan(&self, value: u32) -> bool {
        self.readers[value as usize] > 0 && self.writers[value as usize] == 0
    }

    fn adjust(&mut self, value: u32, readers: i32, writers: i32) {
        let before = self.is_orphan(value);
        let v = value as usize;
        self.readers[v] = self.readers[v].wrapping_add_signed(readers);
        self.writers[v] = self.writers[v].wrapping_add_signed(writers);
        let after = self.is_orphan(value);
        self.orphans = self.orphans + u32::from(after) - u32::from(before);
    }

    /// Records that local operation `local` was linearized (it took effect).
    #[inline]
    pub fn linearize(&mut self, local: usize) {
        self.history_of_current.push(self.current);
        let maybe = self.op_maybe_read[local];
        if maybe != NONE {
            self.maybe_readers[maybe as usize] -= 1;
        }
        self.inert -= u32::from(self.op_inert[local]);
        let (read, write) = (self.op_read[local], self.op_write[local]);
        if read != NONE {
            self.adjust(read, -1, 0);
        }
        if write != NONE {
            self.adjust(write, 0, -1);
            self.current = write;
        }
    }

    /// Undoes the last [`ValueTracker::linearize`], which must have been of `local`.
    #[inline]
    pub fn unlinearize(&mut self, local: usize) {
        let maybe = self.op_maybe_read[local];
        if maybe != NONE {
            self.maybe_readers[maybe as usize] += 1;
        }
        self.inert += u32::from(self.op_inert[local]);
        let (read, write) = (self.op_read[local], self.op_write[local]);
        if write != NONE {
            self.adjust(write, 0, 1);
        }
        if read != NONE {
            self.adjust(read, 1, 0);
        }
        self.current = self.history_of_current.pop().unwrap_or(self.current);
    }

    /// True if linearizing indeterminate operation `local` now cannot help: nothing left could
    /// observe the value it writes (no read of it, no compare-and-set from it) and no operation
    /// left constrains the state in a way the counts do not see. Not linearizing it is then at
    /// least as good, since only blind writes could follow it while its value is held.
    #[inline]
    pub fn useless_write(&self, local: usize) -> bool {
        let write = self.op_write[local];
        write != NONE
            && self.inert == 0
            && self.readers[write as usize] == 0
            && self.maybe_readers[write as usize] <= u32::from(self.op_maybe_read[local] == write)
    }

    /// The previous interchangeable indeterminate operation of `local`, if any (see
    /// [`ValueIds::twin_before`]).
    #[inline]
    pub fn twin_before(&self, local: usize) -> Option<usize> {
        let twin = self.twin_before[local];
        (twin != NONE).then_some(twin as usize)
    }

    /// True if some read left can never be linearized.
    #[inline]
    pub fn doomed(&self) -> bool {
        self.orphans > u32::from(self.is_orphan(self.current))
    }
}
