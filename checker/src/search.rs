//! The linearizability search for one key: Wing & Gong's algorithm with Lowe's memo.
//!
//! Invocations and returns of determinate operations form one doubly linked list in time order.
//! The search walks it from the head: at an invocation it tries to linearize that operation next
//! (the model must accept it and the resulting (set, state) configuration must be new), and on
//! success removes the operation's entries from the list and restarts at the head. Reaching a
//! return means that operation should already have been linearized, so the last choice is
//! undone. Linking and unlinking are O(1) and done in LIFO order (dancing links), so undo is exact.
//!
//! Indeterminate operations (unknown outcome) have no return: nothing forces them to be
//! linearized, and the search succeeds once every determinate operation is. They live in a second
//! list, in invocation order, and are tried only when the walk of the first list reaches a return
//! (is stuck), and only those invoked by then. Dominance rules keep them from multiplying the
//! search space, all sound because leaving an indeterminate operation unlinearized never removes
//! an option:
//! - linearizing one that leaves the state unchanged is skipped (not linearizing it is as good);
//! - linearizing one right after another indeterminate one is skipped when it alone would reach
//!   the same state from before the other (that configuration, with one operation fewer, is
//!   explored by the same scan);
//! - for register-like models, a blind write nothing left can observe is skipped, and so is one
//!   whose identical twin (an earlier indeterminate write of the same value) is still
//!   unlinearized: the twin does the same job.
//!
//! One more rule prunes determinate operations: one that never changes the state
//! ([`Model::preserves_state`]: a read, a compare-and-set known to have failed) can be linearized
//! as soon as it is a legal candidate, because moving it earlier in any linearization keeps it
//! valid (it is legal here and changes nothing, and everything that must precede it already
//! does). So when it is linearized, the alternatives at that point are not tried: if it fails,
//! the point fails. Such candidates are looked for first, in a separate pass.
//!
//! For register-like models a [`ValueTracker`] also rejects, in O(1), any step after which some
//! read left can never see its value again (see [`crate::value_tracker`]).
//!
//! The search is resumable: [`KeySearch::run`] takes a step budget and returns
//! [`Progress::Paused`] when it is spent, which lets the scheduler interleave keys.

use crate::fxhash::mix64;
use crate::history::History;
use crate::memo::{Memo, ENTRY_OVERHEAD_BYTES};
use crate::model::Model;
use crate::value_tracker::ValueTracker;

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

/// A doubly linked list over slots `1..=n`, with `0` the head and `n + 1` the tail.
#[derive(Debug)]
struct Links {
    next: Vec<u32>,
    prev: Vec<u32>,
}

impl Links {
    fn new(n: usize) -> Self {
        let tail = n as u32 + 1;
        Self {
            next: (0..=tail).map(|e| (e + 1).min(tail)).collect(),
            prev: (0..=tail).map(|e| e.saturating_sub(1)).collect(),
        }
    }

    fn tail(&self) -> u32 {
        self.next.len() as u32 - 1
    }

    fn first(&self) -> u32 {
        self.next[0]
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    /// Undoes the matching `unlink`; calls must be in reverse order of the unlinks.
    fn relink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        self.prev[n as usize] = e;
    }
}

#[derive(Clone, Copy, Debug)]
struct Frame<S> {
    op: u32,
    state_before: S,
    /// For an indeterminate operation: the return entry that was blocking when it was chosen.
    bound: u32,
    /// The operation left the state unchanged, so it was the only choice worth trying here.
    forced: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Walking the determinate events for a candidate that leaves the state unchanged.
    Stutter,
    /// Walking the determinate events for any other candidate.
    Determinate,
    /// Stuck at return entry `bound`: trying indeterminate operations invoked by then.
    Indeterminate { bound: u32 },
}

/// A resumable search over the operations of one key.
#[derive(Debug)]
pub struct KeySearch<'a, M: Model> {
    model: &'a M,
    history: &'a History<M::Input, M::Output>,
    /// History index of each local operation; local order is invocation order.
    ops: Vec<usize>,
    determinate: Vec<bool>,
    /// Determinate operations that never change the state ([`Model::preserves_state`]).
    stutters: Vec<bool>,
    /// The determinate events: entry `e` belongs to local op `entry_op[e]`.
    events: Links,
    entry_op: Vec<u32>,
    entry_is_call: Vec<bool>,
    entry_time: Vec<u64>,
    call_entry: Vec<u32>,
    return_entry: Vec<u32>,
    /// The indeterminate operations in invocation order: slot `s` is local op `slot_op[s]`.
    pending: Links,
    slot_op: Vec<u32>,
    slot_invoke: Vec<u64>,
    /// Slot of each indeterminate local op.
    op_slot: Vec<u32>,
    zobrist: Vec<u64>,
    set: Vec<u64>,
    set_hash: u64,
    state: M::State,
    stack: Vec<Frame<M::State>>,
    phase: Phase,
    cursor: u32,
    remaining_determinate: usize,
    total_determinate: usize,
    memo: Memo<M::State>,
    memo_entries_max: usize,
    /// Register-like models only: detects reads that can no longer be linearized.
    tracker: Option<ValueTracker>,
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
    /// should already be removed (they constrain nothing).
    pub fn new(
        model: &'a M,
        history: &'a History<M::Input, M::Output>,
        ops: &[usize],
        memo_entries_max: usize,
    ) -> Self {
        Self::with_tracking(model, history, ops, memo_entries_max, true)
    }

    /// [`KeySearch::new`], optionally without the [`ValueTracker`]. Without it the search is
    /// slower but fails later, so its longest linearizable prefix explains a violation better.
    pub fn with_tracking(
        model: &'a M,
        history: &'a History<M::Input, M::Output>,
        ops: &[usize],
        memo_entries_max: usize,
        track_values: bool,
    ) -> Self {
        let mut ops = ops.to_vec();
        ops.sort_by_key(|&i| (history.operations[i].invoke_time, i));
        let n = ops.len();
        let determinate: Vec<bool> = ops
            .iter()
            .map(|&i| history.operations[i].return_time().is_some())
            .collect();

        let stutters: Vec<bool> = ops
            .iter()
            .map(|&i| {
                let op = &history.operations[i];
                op.output()
                    .is_some_and(|output| model.preserves_state(&op.input, output))
            })
            .collect();

        // Events sorted by time; at equal times invocations come first, so operations touching
        // the same instant count as concurrent (the permissive reading).
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
        let mut slot_op = vec![0u32];
        let mut slot_invoke = vec![0u64];
        let mut op_slot = vec![0u32; n];
        for (local, &i) in ops.iter().enumerate() {
            let op = &history.operations[i];
            match op.return_time() {
                Some(time) => {
                    events.push((op.invoke_time, 0, local as u32));
                    events.push((time, 1, local as u32));
                }
                None => {
                    op_slot[local] = slot_op.len() as u32;
                    slot_op.push(local as u32);
                    slot_invoke.push(op.invoke_time);
                }
            }
        }
        events.sort_unstable();
        let entries = events.len();
        let mut entry_op = vec![0u32; entries + 2];
        let mut entry_is_call = vec![false; entries + 2];
        let mut entry_time = vec![u64::MAX; entries + 2];
        let mut call_entry = vec![0u32; n];
        let mut return_entry = vec![0u32; n];
        for (position, &(time, kind, local)) in events.iter().enumerate() {
            let e = position + 1;
            entry_op[e] = local;
            entry_is_call[e] = kind == 0;
            entry_time[e] = time;
            if kind == 0 {
                call_entry[local as usize] = e as u32;
            } else {
                return_entry[local as usize] = e as u32;
            }
        }
        let pending = Links::new(slot_op.len() - 1);
        let events = Links::new(entries);
        let zobrist = (0..n as u64)
            .map(|i| mix64(i.wrapping_add(0x2545_f491_4f6c_dd1d)))
            .collect();
        let words = n.div_ceil(64).max(1);
        let remaining_determinate = determinate.iter().filter(|&&d| d).count();
        let state = model.init();
        let cursor = events.first();
        let tracker = if track_values {
            ValueTracker::new(model, history, &ops)
        } else {
            None
        };
        Self {
            model,
            history,
            ops,
            determinate,
            stutters,
            events,
            entry_op,
            entry_is_call,
            entry_time,
            call_entry,
            return_entry,
            pending,
            slot_op,
            slot_invoke,
            op_slot,
            zobrist,
            set: vec![0; words],
            set_hash: 0,
            state,
            stack: Vec::with_capacity(n),
            phase: Phase::Stutter,
            cursor,
            remaining_determinate,
            total_determinate: remaining_determinate,
            memo: Memo::new(words),
            memo_entries_max,
            tracker,
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

    /// True if this search uses a [`ValueTracker`].
    pub fn tracks_values(&self) -> bool {
        self.tracker.is_some()
    }

    /// History indices of the operations in the search, in invocation order.
    pub fn searched(&self) -> &[usize] {
        &self.ops
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
            match self.phase {
                Phase::Stutter => {
                    let e = self.cursor;
                    if !self.entry_is_call[e as usize] {
                        self.phase = Phase::Determinate;
                        self.cursor = self.events.first();
                        continue;
                    }
                    let local = self.entry_op[e as usize] as usize;
                    let op = &history.operations[self.ops[local]];
                    if self.stutters[local]
                        && model.step(self.state, &op.input, op.output()).is_some()
                    {
                        if self.try_linearize(local, self.state, 0) {
                            if self.memo.len() >= self.memo_entries_max {
                                self.steps += used;
                                return Progress::MemoFull;
                            }
                            continue;
                        }
                        // Already explored (or doomed) with this operation first, which is as
                        // good as any order: this configuration fails too.
                        self.note_depth(Some(local as u32));
                        if !self.backtrack() {
                            self.steps += used;
                            return Progress::NotLinearizable;
                        }
                        continue;
                    }
                    self.cursor = self.events.next[e as usize];
                }
                Phase::Determinate => {
                    let e = self.cursor;
                    if !self.entry_is_call[e as usize] {
                        // A return (or, defensively, the tail): only indeterminate operations
                        // invoked by now can still help before backtracking.
                        self.phase = Phase::Indeterminate { bound: e };
                        self.cursor = self.pending.first();
                        continue;
                    }
                    let local = self.entry_op[e as usize] as usize;
                    let op = &history.operations[self.ops[local]];
                    if let Some(next_state) = model.step(self.state, &op.input, op.output()) {
                        // State-preserving candidates were all handled by the stutter pass.
                        if !self.stutters[local] && self.try_linearize(local, next_state, 0) {
                            if self.memo.len() >= self.memo_entries_max {
                                self.steps += used;
                                return Progress::MemoFull;
                            }
                            continue;
                        }
                    }
                    self.cursor = self.events.next[e as usize];
                }
                Phase::Indeterminate { bound } => {
                    let slot = self.cursor;
                    if slot != self.pending.tail()
                        && self.slot_invoke[slot as usize] <= self.entry_time[bound as usize]
                    {
                        let local = self.slot_op[slot as usize] as usize;
                        let op = &history.operations[self.ops[local]];
                        if let Some(next_state) = model.step(self.state, &op.input, None) {
                            if !self.dominated(local, &op.input, next_state)
                                && self.try_linearize(local, next_state, bound)
                            {
                                if self.memo.len() >= self.memo_entries_max {
                                    self.steps += used;
                                    return Progress::MemoFull;
                                }
                                continue;
                            }
                        }
                        self.cursor = self.pending.next[slot as usize];
                        continue;
                    }
                    let culprit =
                        (bound != self.events.tail()).then(|| self.entry_op[bound as usize]);
                    self.note_depth(culprit);
                    if !self.backtrack() {
                        self.steps += used;
                        return Progress::NotLinearizable;
                    }
                }
            }
        }
    }

    /// True if linearizing an indeterminate operation with `input`, reaching `next_state`, is
    /// dominated by not linearizing it (see the module documentation).
    fn dominated(&self, local: usize, input: &M::Input, next_state: M::State) -> bool {
        if next_state == self.state {
            return true;
        }
        if let Some(tracker) = &self.tracker {
            if tracker.useless_write(local) {
                return true;
            }
            // An identical, earlier indeterminate write not linearized yet does the same job.
            if let Some(twin) = tracker.twin_before(local) {
                if self.set[twin / 64] & (1u64 << (twin % 64)) == 0 {
                    return true;
                }
            }
        }
        match self.stack.last() {
            Some(top) if !self.determinate[top.op as usize] => {
                self.model.step(top.state_before, input, None) == Some(next_state)
            }
            _ => false,
        }
    }

    /// Linearizes `local` next if the resulting configuration is new and not doomed; returns
    /// whether it did.
    #[inline]
    fn try_linearize(&mut self, local: usize, next_state: M::State, bound: u32) -> bool {
        if let Some(tracker) = &mut self.tracker {
            tracker.linearize(local);
            if tracker.doomed() {
                tracker.unlinearize(local);
                return false;
            }
        }
        let word = local / 64;
        let bit = 1u64 << (local % 64);
        self.set[word] |= bit;
        let next_hash = self.set_hash ^ self.zobrist[local];
        if !self.memo.insert(next_hash, &self.set, next_state) {
            self.set[word] &= !bit;
            if let Some(tracker) = &mut self.tracker {
                tracker.unlinearize(local);
            }
            return false;
        }
        let forced = self.stutters[local];
        self.stack.push(Frame {
            op: local as u32,
            state_before: self.state,
            bound,
            forced,
        });
        if self.determinate[local] {
            self.events.unlink(self.call_entry[local]);
            self.events.unlink(self.return_entry[local]);
            self.remaining_determinate -= 1;
        } else {
            self.pending.unlink(self.op_slot[local]);
        }
        self.state = next_state;
        self.set_hash = next_hash;
        self.phase = Phase::Stutter;
        self.cursor = self.events.first();
        true
    }

    /// Undoes the last choice, and keeps undoing while the undone choice was forced (it had no
    /// alternatives worth trying), then resumes the scan after it. False if nothing is left.
    fn backtrack(&mut self) -> bool {
        loop {
            match self.pop() {
                None => return false,
                Some(true) => continue,
                Some(false) => return true,
            }
        }
    }

    /// Undoes the last linearization; `None` if there is none, else whether it was forced.
    fn pop(&mut self) -> Option<bool> {
        let frame = self.stack.pop()?;
        self.stack_floor = self.stack_floor.min(self.stack.len());
        let local = frame.op as usize;
        if let Some(tracker) = &mut self.tracker {
            tracker.unlinearize(local);
        }
        self.set[local / 64] &= !(1u64 << (local % 64));
        self.set_hash ^= self.zobrist[local];
        self.state = frame.state_before;
        if self.determinate[local] {
            self.events.relink(self.return_entry[local]);
            self.events.relink(self.call_entry[local]);
            self.remaining_determinate += 1;
            self.phase = Phase::Determinate;
            self.cursor = self.events.next[self.call_entry[local] as usize];
        } else {
            let slot = self.op_slot[local];
            self.pending.relink(slot);
            self.phase = Phase::Indeterminate { bound: frame.bound };
            self.cursor = self.pending.next[slot as usize];
        }
        Some(frame.forced)
    }

    /// Saves the current stack as the best prefix if it is the deepest so far. Only the part
    /// of the stack that changed since the last save is copied, so saving is amortised O(1).
    fn note_depth(&mut self, culprit: Option<u32>) {
        let depth = self.total_determinate - self.remaining_determinate;
        if depth > self.best_depth || self.best_culprit.is_none() {
            self.best_depth = depth;
            self.best_prefix.truncate(self.stack_floor);
            self.best_prefix
                .extend(self.stack[self.stack_floor..].iter().map(|f| f.op));
            self.stack_floor = self.stack.len();
            self.best_state = self.state;
            self.best_culprit = culprit;
        }
    }

    /// The deepest point reached, once [`KeySearch::run`] returned
    /// [`Progress::NotLinearizable`] (or any time after at least one backtrack).
    pub fn failure(&self) -> Option<Failure<M::State>> {
        let culprit = self.best_culprit?;
        Some(Failure {
            prefix: self
                .best_prefix
                .iter()
                .map(|&l| self.ops[l as usize])
                .collect(),
            state_after_prefix: self.best_state,
            culprit: self.ops[culprit as usize],
        })
    }
}
