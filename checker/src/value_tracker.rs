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

/// Per-value counts of readers and possible writers still to be linearized.
#[derive(Debug)]
pub struct ValueTracker {
    /// Value read by each local operation (determinate reads only), or `NONE`.
    op_read: Vec<u32>,
    /// Value written by each local operation (if it takes effect), or `NONE`.
    op_write: Vec<u32>,
    readers: Vec<u32>,
    writers: Vec<u32>,
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
        let initial = model.register_initial_value()?;
        let mut ids: BTreeMap<ValueCode, u32> = BTreeMap::new();
        let mut id_of = |value: ValueCode| -> u32 {
            let next = ids.len() as u32;
            *ids.entry(value).or_insert(next)
        };
        let current = id_of(initial);
        let mut op_read = Vec::with_capacity(ops.len());
        let mut op_write = Vec::with_capacity(ops.len());
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
            op_read.push(read.filter(|_| determinate).map_or(NONE, &mut id_of));
            op_write.push(write.map_or(NONE, &mut id_of));
        }
        let values = ids.len();
        let mut readers = vec![0u32; values];
        let mut writers = vec![0u32; values];
        for (&r, &w) in op_read.iter().zip(&op_write) {
            if r != NONE {
                readers[r as usize] += 1;
            }
            if w != NONE {
                writers[w as usize] += 1;
            }
        }
        let orphans = readers
            .iter()
            .zip(&writers)
            .filter(|(&r, &w)| r > 0 && w == 0)
            .count() as u32;
        Some(Self {
            op_read,
            op_write,
            readers,
            writers,
            orphans,
            current,
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
        let (read, write) = (self.op_read[local], self.op_write[local]);
        if write != NONE {
            self.adjust(write, 0, 1);
        }
        if read != NONE {
            self.adjust(read, 1, 0);
        }
        self.current = self.history_of_current.pop().unwrap_or(self.current);
    }

    /// True if some read left can never be linearized.
    #[inline]
    pub fn doomed(&self) -> bool {
        self.orphans > u32::from(self.is_orphan(self.current))
    }
}
