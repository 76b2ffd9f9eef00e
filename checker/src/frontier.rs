//! A second search for one key, breadth-first in time: Lowe's "just-in-time linearization".
//!
//! The depth-first search ([`crate::search`]) finds a linearization fast, but to prove there is
//! none it must exhaust every linearization of everything before the failure, which on a long
//! single-key history with many clients can exceed any budget. This search walks the events in
//! time order and keeps the *frontier*: every distinct (model state, set of pending operations
//! already linearized) reachable by a linearization of what has happened so far. Operations are
//! linearized only when a return forces it (just in time). Memory and work depend on how many
//! operations are pending at once, not on the length of the history, and a violation shows up as
//! an empty frontier at the return that cannot be honoured.
//!
//! The scheduler runs both searches on a key, step for step, and takes the first answer.
//!
//! The same reductions as the depth-first search apply inside a closure: a legal
//! state-preserving operation is linearized without trying alternatives, and an indeterminate
//! operation is not linearized when that leaves the state unchanged, when linearizing it
//! instead of the indeterminate operation just before reaches the same state, when nothing left
//! can observe what it writes, or when an identical earlier one is still unlinearized.

use crate::fxhash::hash_one;
use crate::history::History;
use crate::memo::Memo;
use crate::model::Model;
use crate::search::Progress;
use crate::value_tracker::{ValueIds, NO_VALUE};

const NONE: u32 = u32::MAX;

/// Where the frontier search failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontierFailure {
    /// The operation (history index) that no linearization of the past can fit before its
    /// return.
    pub culprit: usize,
    /// Its return time.
    pub return_time: u64,
    /// If some ways to fit it were dropped because they left a later read with no write of its
    /// value to see: the earliest such read (history index), the likely real culprit.
    pub starved_read: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
struct Node<S> {
    state: S,
    /// The register value id of `state` (register-like models only).
    value: u32,
    /// Offset of the node's set in `scratch`.
    offset: usize,
    /// State before the last operation, if that operation was indeterminate.
    before_indeterminate: Option<S>,
}

/// A resumable breadth-first linearizability search over the operations of one key.
#[derive(Debug)]
pub struct FrontierSearch<'a, M: Model> {
    model: &'a M,
    history: &'a History<M::Input, M::Output>,
    /// History index of each local operation (invocation order).
    ops: Vec<usize>,
    stutters: Vec<bool>,
    determinate: Vec<bool>,
    /// (time, 0 = invoke / 1 = return, local op), invocations first at equal times.
    events: Vec<(u64, u8, u32)>,
    next_event: usize,
    slot_of: Vec<u32>,
    slot_op: Vec<u32>,
    free_slots: Vec<u32>,
    words: usize,
    /// The frontier: one set of `words` words per state (and value id).
    sets: Vec<u64>,
    states: Vec<M::State>,
    values: Vec<u32>,
    /// The frontier being built for the current return event.
    next_sets: Vec<u64>,
    next_states: Vec<M::State>,
    next_values: Vec<u32>,
    /// Register-like models: value ids, with readers and writers counted down as operations
    /// return, so a configuration that leaves a future read without a writer is dropped.
    value_ids: Option<ValueIds>,
    /// Index of the next frontier configuration to expand for the current return event.
    config_cursor: usize,
    seen: Memo<M::State>,
    visited: Memo<M::State>,
    scratch: Vec<u64>,
    stack: Vec<Node<M::State>>,
    entries_max: usize,
    steps: u64,
    finished: Option<Progress>,
    failure: Option<FrontierFailure>,
    /// A value some configuration of the current event was dropped for (see `orphaned`).
    orphaned_value: std::cell::Cell<u32>,
}

impl<'a, M: Model> FrontierSearch<'a, M> {
    /// A search over `ops` (history indices, all of one key), with at most `entries_max`
    /// configurations in a frontier or in one closure.
    pub fn new(
        model: &'a M,
        history: &'a History<M::Input, M::Output>,
        ops: &[usize],
        entries_max: usize,
    ) -> Self {
        let mut ops = ops.to_vec();
        ops.sort_by_key(|&i| (history.operations[i].invoke_time, i));
        let determinate: Vec<bool> = ops
            .iter()
            .map(|&i| history.operations[i].return_time().is_some())
            .collect();
        let stutters = ops
            .iter()
            .map(|&i| {
                let op = &history.operations[i];
                op.output()
                    .is_some_and(|output| model.preserves_state(&op.input, output))
            })
            .collect();
        let mut events = Vec::with_capacity(2 * ops.len());
        for (local, &i) in ops.iter().enumerate() {
            let op = &history.operations[i];
            events.push((op.invoke_time, 0u8, local as u32));
            if let Some(time) = op.return_time() {
                events.push((time, 1u8, local as u32));
            }
        }
        events.sort_unstable();
        // Slots needed: the most operations pending at once (indeterminate ones stay pending).
        let (mut pending, mut pending_max) = (0usize, 0usize);
        for &(_, kind, _) in &events {
            if kind == 0 {
                pending += 1;
                pending_max = pending_max.max(pending);
            } else {
                pending -= 1;
            }
        }
        let words = pending_max.div_ceil(64).max(1);
        let value_ids = ValueIds::new(model, history, &ops);
        let initial_value = value_ids.as_ref().map_or(NO_VALUE, |ids| ids.initial);
        Self {
            model,
            history,
            stutters,
            determinate,
            slot_of: vec![NONE; ops.len()],
            ops,
            events,
            next_event: 0,
            slot_op: Vec::new(),
            free_slots: Vec::new(),
            words,
            sets: vec![0; words],
            states: vec![model.init()],
            values: vec![initial_value],
            next_sets: Vec::new(),
            next_states: Vec::new(),
            next_values: Vec::new(),
            value_ids,
            config_cursor: 0,
            seen: Memo::new(words),
            visited: Memo::new(words),
            scratch: Vec::new(),
            stack: Vec::new(),
            entries_max,
            steps: 0,
            finished: None,
            failure: None,
            orphaned_value: std::cell::Cell::new(NO_VALUE),
        }
    }

    /// Steps taken so far (one step = one configuration expanded).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Configurations in the current frontier.
    pub fn frontier_len(&self) -> usize {
        self.states.len()
    }

    /// Where the search failed, after [`Progress::NotLinearizable`].
    pub fn failure(&self) -> Option<FrontierFailure> {
        self.failure
    }

    /// Runs at most about `budget` steps (one closure is never split).
    pub fn run(&mut self, budget: u64) -> Progress {
        if let Some(done) = self.finished {
            return done;
        }
        let progress = self.run_inner(budget);
        if progress != Progress::Paused {
            self.finished = Some(progress);
            // The frontier is no longer needed; free it.
            self.sets = Vec::new();
            self.scratch = Vec::new();
            self.seen = Memo::new(1);
            self.visited = Memo::new(1);
        }
        progress
    }

    fn run_inner(&mut self, budget: u64) -> Progress {
        let start = self.steps;
        loop {
            if self.steps - start >= budget {
                return Progress::Paused;
            }
            let Some(&(time, kind, local)) = self.events.get(self.next_event) else {
                return Progress::Linearizable;
            };
            let local = local as usize;
            if kind == 0 {
                let slot = self.free_slots.pop().unwrap_or_else(|| {
                    self.slot_op.push(NONE);
                    self.slot_op.len() as u32 - 1
                });
                self.slot_op[slot as usize] = local as u32;
                self.slot_of[local] = slot;
                self.next_event += 1;
                self.steps += 1;
                continue;
            }
            // A return: expand the frontier configurations one by one.
            if self.config_cursor == 0 {
                self.orphaned_value.set(NO_VALUE);
                self.seen.clear();
                self.visited.clear();
                self.next_sets.clear();
                self.next_states.clear();
                self.next_values.clear();
            }
            while self.config_cursor < self.states.len() || !self.stack.is_empty() {
                if self.steps - start >= budget {
                    return Progress::Paused;
                }
                let within_limits = if self.stack.is_empty() {
                    let i = self.config_cursor;
                    self.config_cursor += 1;
                    self.start_closure(i, local)
                } else {
                    self.expand_node(local)
                };
                if !within_limits {
                    return Progress::MemoFull;
                }
            }
            self.config_cursor = 0;
            std::mem::swap(&mut self.sets, &mut self.next_sets);
            std::mem::swap(&mut self.states, &mut self.next_states);
            std::mem::swap(&mut self.values, &mut self.next_values);
            if let Some(ids) = &mut self.value_ids {
                // It is linearized in every configuration now.
                let (read, write) = (ids.op_read[local], ids.op_write[local]);
                if read != NO_VALUE {
                    ids.readers[read as usize] -= 1;
                }
                if write != NO_VALUE {
                    ids.writers[write as usize] -= 1;
                }
                ids.inert -= u32::from(ids.op_inert[local]);
            }
            let slot = self.slot_of[local];
            self.slot_op[slot as usize] = NONE;
            self.free_slots.push(slot);
            self.next_event += 1;
            if self.states.is_empty() {
                let starved_read = self.earliest_reader_left(self.orphaned_value.get());
                self.failure = Some(FrontierFailure {
                    culprit: self.ops[local],
                    return_time: time,
                    starved_read,
                });
                return Progress::NotLinearizable;
            }
        }
    }

    fn add_next(
        &mut self,
        state: M::State,
        value: u32,
        set_offset: usize,
        clear_slot: u32,
    ) -> bool {
        let words = self.words;
        let mut set = [0u64; 4];
        let set: &mut [u64] = if words <= 4 {
            set[..words].copy_from_slice(&self.scratch[set_offset..set_offset + words]);
            &mut set[..words]
        } else {
            // Rare (more than 256 operations pending at once): take the slow path.
            return self.add_next_wide(state, value, set_offset, clear_slot);
        };
        set[clear_slot as usize / 64] &= !(1u64 << (clear_slot % 64));
        if self.seen.insert(hash_one(&set), set, state) {
            self.next_sets.extend_from_slice(set);
            self.next_states.push(state);
            self.next_values.push(value);
        }
        self.seen.len() <= self.entries_max
    }

    fn add_next_wide(
        &mut self,
        state: M::State,
        value: u32,
        set_offset: usize,
        clear_slot: u32,
    ) -> bool {
        let mut set = self.scratch[set_offset..set_offset + self.words].to_vec();
        set[clear_slot as usize / 64] &= !(1u64 << (clear_slot % 64));
        if self.seen.insert(hash_one(&set), &set, state) {
            self.next_sets.extend_from_slice(&set);
            self.next_states.push(state);
            self.next_values.push(value);
        }
        self.seen.len() <= self.entries_max
    }

    /// Pushes a closure node if its configuration is new in this event's closures.
    fn push_node(
        &mut self,
        state: M::State,
        value: u32,
        parent_offset: usize,
        add_slot: u32,
        before: Option<M::State>,
    ) -> bool {
        let words = self.words;
        let offset = self.scratch.len();
        self.scratch
            .extend_from_within(parent_offset..parent_offset + words);
        self.scratch[offset + add_slot as usize / 64] |= 1u64 << (add_slot % 64);
        let set = &self.scratch[offset..offset + words];
        if self.visited.insert(hash_one(&set), set, state) {
            self.stack.push(Node {
                state,
                value,
                offset,
                before_indeterminate: before,
            });
        } else {
            self.scratch.truncate(offset);
        }
        self.visited.len() <= self.entries_max
    }

    /// The register value after local operation `local` takes effect on `value`.
    fn value_after(&self, value: u32, local: usize) -> u32 {
        match &self.value_ids {
            Some(ids) if ids.op_write[local] != NO_VALUE => ids.op_write[local],
            _ => value,
        }
    }

    /// True if moving from value `from` to `to` by linearizing `local` (on top of the pending
    /// operations linearized in the set at `offset`) leaves `from` with reads to come and no
    /// possible writer: a doomed configuration.
    fn orphaned(&self, from: u32, to: u32, offset: usize, local: usize) -> bool {
        let Some(ids) = &self.value_ids else {
            return false;
        };
        if from == to || from == NO_VALUE || ids.readers[from as usize] == 0 {
            return false;
        }
        let (mut readers, mut writers) = (ids.readers[from as usize], ids.writers[from as usize]);
        for (slot, &pending) in self.slot_op.iter().enumerate() {
            if pending == NONE {
                continue;
            }
            let linearized = pending as usize == local
                || self.scratch[offset + slot / 64] & (1u64 << (slot % 64)) != 0;
            if linearized {
                readers -= u32::from(ids.op_read[pending as usize] == from);
                writers -= u32::from(ids.op_write[pending as usize] == from);
            }
        }
        let orphaned = readers > 0 && writers == 0;
        if orphaned {
            self.orphaned_value.set(from);
        }
        orphaned
    }

    /// The read of `value` that is starved: the earliest one not invoked yet (those pending now
    /// could still see the value in some configuration), else the earliest not yet returned.
    fn earliest_reader_left(&self, value: u32) -> Option<usize> {
        let ids = self.value_ids.as_ref()?;
        if value == NO_VALUE {
            return None;
        }
        // Local order is invocation order; returned operations have had their event.
        let returned: std::collections::BTreeSet<u32> = self.events[..self.next_event]
            .iter()
            .filter(|e| e.1 == 1)
            .map(|e| e.2)
            .collect();
        let now = self.events.get(self.next_event).map_or(u64::MAX, |e| e.0);
        let candidates = || {
            (0..self.ops.len())
                .filter(|&l| ids.op_read[l] == value && !returned.contains(&(l as u32)))
        };
        candidates()
            .find(|&l| self.history.operations[self.ops[l]].invoke_time > now)
            .or_else(|| candidates().next())
            .map(|l| self.ops[l])
    }

    /// True if linearizing indeterminate operation `local` at the node whose set is at `offset`
    /// cannot help (see [`crate::value_tracker::ValueTracker::useless_write`]).
    fn useless_write(&self, offset: usize, local: usize) -> bool {
        let Some(ids) = &self.value_ids else {
            return false;
        };
        let write = ids.op_write[local];
        if write == NO_VALUE {
            return false;
        }
        let twin = ids.twin_before[local];
        if twin != NO_VALUE {
            // An identical, earlier indeterminate write still unlinearized does the same job.
            let slot = self.slot_of[twin as usize] as usize;
            if self.scratch[offset + slot / 64] & (1u64 << (slot % 64)) == 0 {
                return true;
            }
        }
        let (mut readers, mut maybe, mut inert) = (
            ids.readers[write as usize],
            ids.maybe_readers[write as usize],
            ids.inert,
        );
        if readers == 0 && maybe == 0 && inert == 0 {
            return true;
        }
        for (slot, &pending) in self.slot_op.iter().enumerate() {
            let p = pending as usize;
            if pending == NONE
                || (p != local && self.scratch[offset + slot / 64] & (1u64 << (slot % 64)) == 0)
            {
                continue;
            }
            readers -= u32::from(ids.op_read[p] == write);
            maybe -= u32::from(ids.op_maybe_read[p] == write);
            inert -= u32::from(ids.op_inert[p]);
        }
        readers == 0 && maybe == 0 && inert == 0
    }

    /// Starts the closure of frontier configuration `i` for the return of `returning`; false if
    /// a limit was hit.
    fn start_closure(&mut self, i: usize, returning: usize) -> bool {
        let words = self.words;
        let slot_r = self.slot_of[returning];
        let state = self.states[i];
        let value = self.values[i];
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.sets[i * words..(i + 1) * words]);
        if self.scratch[slot_r as usize / 64] & (1u64 << (slot_r % 64)) != 0 {
            // Already linearized: it just stops being pending.
            self.steps += 1;
            return self.add_next(state, value, 0, slot_r);
        }
        let set = &self.scratch[0..words];
        if !self.visited.insert(hash_one(&set), set, state) {
            self.steps += 1;
            return true;
        }
        self.stack.clear();
        self.stack.push(Node {
            state,
            value,
            offset: 0,
            before_indeterminate: None,
        });
        true
    }

    /// Expands the next node of the current closure; false if a limit was hit.
    fn expand_node(&mut self, returning: usize) -> bool {
        let slot_r = self.slot_of[returning];
        let history = self.history;
        let model = self.model;
        if let Some(node) = self.stack.pop() {
            self.steps += 1;
            let r = &history.operations[self.ops[returning]];
            let r_value = self.value_after(node.value, returning);
            let r_legal = model.step(node.state, &r.input, r.output());
            if let Some(after) =
                r_legal.filter(|_| !self.orphaned(node.value, r_value, node.offset, returning))
            {
                if !self.add_next(after, r_value, node.offset, slot_r) {
                    return false;
                }
                if self.stutters[returning] {
                    // Linearizing it here is as good as anywhere later.
                    return true;
                }
            }
            // A legal state-preserving pending operation goes first, alone.
            let mut forced = false;
            for slot in 0..self.slot_op.len() as u32 {
                let local = self.slot_op[slot as usize];
                if local == NONE || slot == slot_r || !self.stutters[local as usize] {
                    continue;
                }
                if self.scratch[node.offset + slot as usize / 64] & (1u64 << (slot % 64)) != 0 {
                    continue;
                }
                let op = &history.operations[self.ops[local as usize]];
                if model.step(node.state, &op.input, op.output()).is_some() {
                    if !self.push_node(node.state, node.value, node.offset, slot, None) {
                        return false;
                    }
                    forced = true;
                    break;
                }
            }
            if forced {
                return true;
            }
            for slot in 0..self.slot_op.len() as u32 {
                let local = self.slot_op[slot as usize];
                if local == NONE || slot == slot_r || self.stutters[local as usize] {
                    continue;
                }
                if self.scratch[node.offset + slot as usize / 64] & (1u64 << (slot % 64)) != 0 {
                    continue;
                }
                let op = &history.operations[self.ops[local as usize]];
                let determinate = self.determinate[local as usize];
                let output = if determinate { op.output() } else { None };
                let Some(after) = model.step(node.state, &op.input, output) else {
                    continue;
                };
                if !determinate {
                    let dominated = after == node.state
                        || self.useless_write(node.offset, local as usize)
                        || node.before_indeterminate.is_some_and(|before| {
                            model.step(before, &op.input, None) == Some(after)
                        });
                    if dominated {
                        continue;
                    }
                }
                let value = self.value_after(node.value, local as usize);
                if self.orphaned(node.value, value, node.offset, local as usize) {
                    continue;
                }
                let before = (!determinate).then_some(node.state);
                if !self.push_node(after, value, node.offset, slot, before) {
                    return false;
                }
            }
        }
        true
    }
}
