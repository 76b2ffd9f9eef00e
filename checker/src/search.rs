//! The linearizability search for one key: Wing & Gong's algorithm with Lowe's memo.
//!
//! Invocations and returns form one doubly linked list in time order. The search walks it from
//! the head: at an invocation it tries to linearize that operation next (the model must accept it
//! and the resulting (set, state) configuration must be new), and on success removes the
//! operation's entries from the list and restarts at the head. Reaching a return means that
//! operation should already have been linearized, so the last choice is undone. Linking and
//! unlinking are O(1) and done in LIFO order (dancing links), so undo is exact.
//!
//! Indeterminate operations have an invocation entry but no return entry: nothing forces them
//! to be linearized, and the search succeeds once every determinate operation is.
//!
//! The search is resumable: [`KeySearch::run`] takes a step budget and returns
//! [`Progress::Paused`] when it is spent, which lets the scheduler interleave keys.

use crate::fxhash::mix64;
use crate::history::History;
use crate::memo::{Memo, ENTRY_OVERHEAD_BYTES};
use crate::model::Model;

const HEAD: u32 = 0;

/// Where a paused or finished search stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The budget ran out; call [`KeySearch::run`] again.
    Paused,
    /// A linearization of every determinate operation exists.
    Linearizable,
    /// No linearization exists; see [`KeySearch::failure`].
    NotLinearizable,
    /// The memo reached its entry limit; the search cannot continue.
    MemoFull,
}

/// The deepest point the search reached, kept for the report of a violation.
#[derive(Clone, Debug)]
pub struct Failure<S> {
    /// History indices of the longest linearizable prefix found, in linearization order.
    pub prefix: Vec<usize>,
    /// The model state after that prefix.
    pub state_after_prefix: S,
    /// The determinate operation that had to come next but could not (history index).
    pub culprit: usize,
}

#[derive(Clone, Copy, Debug)]
struct Frame<S> {
    op: u32,
    state_before: S,
}

/// A resumable search over the operations of one key.
#[derive(Debug)]
pub struct KeySearch<'a, M: Model> {
    model: &'a M,
    history: &'a History<M::Input, M::Output>,
    /// History index of each local operation; local order is invocation order.
    ops: Vec<usize>,
    determinate: Vec<bool>,
    /// Entry `e` (1-based; 0 is the head, `tail` the end) belongs to local op `entry_op[e]`.
    entry_op: Vec<u32>,
    entry_is_call: Vec<bool>,
    next: Vec<u32>,
    prev: Vec<u32>,
    tail: u32,
    call_entry: Vec<u32>,
    return_entry: Vec<u32>,
    zobrist: Vec<u64>,
    set: Vec<u64>,
    set_hash: u64,
    state: M::State,
    stack: Vec<Frame<M::State>>,
    cursor: u32,
    remaining_determinate: usize,
    total_determinate: usize,
    memo: Memo<M::State>,
    memo_entries_max: usize,
    steps: u64,
    best_depth: usize,
    best_prefix: Vec<u32>,
    best_state: M::State,
    best_culprit: Option<u32>,
    /// `stack[..stack_floor]` is unchanged since the last save into `best_prefix`.
    stack_floor: usize,
    finished: Option<Progress>,
}

impl<'a, M: Model> KeySearch<'a, M> {
    /// A search over `ops` (history indices, all of one key). Indeterminate read-only operations
    /// must already be removed (they constrain nothing).
    pub fn new(
        model: &'a M,
        history: &'a History<M::Input, M::Output>,
        ops: &[usize],
        memo_entries_max: usize,
    ) -> Self {
        let mut ops = ops.to_vec();
        ops.sort_by_key(|&i| (history.operations[i].invoke_time, i));
        let n = ops.len();
        let determinate: Vec<bool> =
            ops.iter().map(|&i| history.operations[i].return_time().is_some()).collect();

        // Events sorted by time; at equal times invocations come first, so operations touching
        // the same instant count as concurrent (the permissive reading).
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
        for (local, &i) in ops.iter().enumerate() {
            let op = &history.operations[i];
            events.push((op.invoke_time, 0, local as u32));
            if let Some(time) = op.return_time() {
                events.push((time, 1, local as u32));
            }
        }
        events.sort_unstable();
        let entries = events.len();
        let tail = entries as u32 + 1;
        let mut entry_op = vec![0u32; entries + 2];
        let mut entry_is_call = vec![false; entries + 2];
        let mut call_entry = vec![0u32; n];
        let mut return_entry = vec![0u32; n];
        for (position, &(_, kind, local)) in events.iter().enumerate() {
            let e = position as u32 + 1;
            entry_op[e as usize] = local;
            entry_is_call[e as usize] = kind == 0;
            if kind == 0 {
                call_entry[local as usize] = e;
            } else {
                return_entry[local as usize] = e;
            }
        }
        let next: Vec<u32> = (0..entries as u32 + 2).map(|e| (e + 1).min(tail)).collect();
        let prev: Vec<u32> = (0..entries as u32 + 2).map(|e| e.saturating_sub(1)).collect();
        let zobrist = (0..n as u64).map(|i| mix64(i.wrapping_add(0x2545_f491_4f6c_dd1d))).collect();
        let words = n.div_ceil(64).max(1);
        let remaining_determinate = determinate.iter().filter(|&&d| d).count();
        let state = model.init();
        Self {
            model,
            history,
            ops,
            determinate,
            entry_op,
            entry_is_call,
            next,
            prev,
            tail,
            call_entry,
            return_entry,
            zobrist,
            set: vec![0; words],
            set_hash: 0,
            state,
            stack: Vec::with_capacity(n),
            cursor: 1.min(tail),
            remaining_determinate,
            total_determinate: remaining_determinate,
            memo: Memo::new(words),
            memo_entries_max,
            steps: 0,
            best_depth: 0,
            best_prefix: Vec::new(),
            best_state: state,
            best_culprit: None,
            stack_floor: 0,
            finished: None,
        }
    }

    /// Steps taken so far (one step = one list entry visited).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Operations in the search.
    pub fn operations(&self) -> usize {
        self.ops.len()
    }

    /// Entries in the memo.
    pub fn memo_entries(&self) -> usize {
        self.memo.len()
    }

    /// Approximate bytes one memo entry costs for this key.
    pub fn memo_entry_bytes(&self) -> usize {
        self.set.len() * 8 + ENTRY_OVERHEAD_BYTES
    }

    /// Runs at most `budget` steps.
    pub fn run(&mut self, budget: u64) -> Progress {
        if let Some(done) = self.finished {
            return done;
        }
        let progress = self.run_inner(budget);
        if progress != Progress::Paused {
            self.finished = Some(progress);
        }
        progress
    }

    fn run_inner(&mut self, budget: u64) -> Progress {
        let history = self.history;
        let model = self.model;
        let mut used = 0u64;
        loop {
            if self.remaining_determinate == 0 {
                self.steps += used;
                return Progress::Linearizable;
            }
            if used >= budget {
                self.steps += used;
                return Progress::Paused;
            }
            used += 1;
            let e = self.cursor;
            if e != self.tail && self.entry_is_call[e as usize] {
                let local = self.entry_op[e as usize] as usize;
                let op = &history.operations[self.ops[local]];
                if let Some(next_state) = model.step(self.state, &op.input, op.output()) {
                    let word = local / 64;
                    let bit = 1u64 << (local % 64);
                    self.set[word] |= bit;
                    let next_hash = self.set_hash ^ self.zobrist[local];
                    if self.memo.insert(next_hash, &self.set, next_state) {
                        self.stack.push(Frame { op: local as u32, state_before: self.state });
                        self.lift(local);
                        self.state = next_state;
                        self.set_hash = next_hash;
                        if self.determinate[local] {
                            self.remaining_determinate -= 1;
                        }
                        self.cursor = self.next[HEAD as usize];
                        if self.memo.len() >= self.memo_entries_max {
                            self.steps += used;
                            return Progress::MemoFull;
                        }
                        continue;
                    }
                    self.set[word] &= !bit;
                }
                self.cursor = self.next[e as usize];
            } else {
                // A return (or, defensively, the end): the last choice was wrong.
                let culprit = if e == self.tail { None } else { Some(self.entry_op[e as usize]) };
                self.note_depth(culprit);
                let Some(frame) = self.stack.pop() else {
                    self.steps += used;
                    return Progress::NotLinearizable;
                };
                self.stack_floor = self.stack_floor.min(self.stack.len());
                let local = frame.op as usize;
                self.unlift(local);
                self.set[local / 64] &= !(1u64 << (local % 64));
                self.set_hash ^= self.zobrist[local];
                self.state = frame.state_before;
                if self.determinate[local] {
                    self.remaining_determinate += 1;
                }
                self.cursor = self.next[self.call_entry[local] as usize];
            }
        }
    }

    /// Saves the current stack as the best prefix if it is the deepest so far. Only the part
    /// of the stack that changed since the last save is copied, so saving is amortised O(1).
    fn note_depth(&mut self, culprit: Option<u32>) {
        let depth = self.total_determinate - self.remaining_determinate;
        if depth > self.best_depth || self.best_culprit.is_none() {
            self.best_depth = depth;
            self.best_prefix.truncate(self.stack_floor);
            self.best_prefix.extend(self.stack[self.stack_floor..].iter().map(|f| f.op));
            self.stack_floor = self.stack.len();
            self.best_state = self.state;
            self.best_culprit = culprit;
        }
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    fn relink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        self.prev[n as usize] = e;
    }

    fn lift(&mut self, local: usize) {
        self.unlink(self.call_entry[local]);
        if self.determinate[local] {
            self.unlink(self.return_entry[local]);
        }
    }

    fn unlift(&mut self, local: usize) {
        if self.determinate[local] {
            self.relink(self.return_entry[local]);
        }
        self.relink(self.call_entry[local]);
    }

    /// The deepest point reached, once [`KeySearch::run`] returned
    /// [`Progress::NotLinearizable`] (or any time after at least one backtrack).
    pub fn failure(&self) -> Option<Failure<M::State>> {
        let culprit = self.best_culprit?;
        Some(Failure {
            prefix: self.best_prefix.iter().map(|&l| self.ops[l as usize]).collect(),
            state_after_prefix: self.best_state,
            culprit: self.ops[culprit as usize],
        })
    }
}
