//! The operations a coordinator has in flight, each paired with exactly one deadline.
//!
//! The pairing is kept by construction: an operation enters with its deadline ([`InFlight::track`])
//! and leaves with it ([`InFlight::untrack_with_deadline`], [`InFlight::pop_due`]); callers change
//! an operation only through [`InFlight::get_mut`], which cannot reach its deadline. The fields are
//! private to this file so that no other path exists.
//!
//! Each operation's own invariants are checked after every input of the node. Walking every
//! operation then (a coordinator holds each read until its deadline for read repair, tens per
//! node) was most of a 5-node run's invariant time (issue #15), so the node checks only the
//! operations that can have changed: the ones tracked or handed out mutably since the last check
//! ([`InFlight::check_changed`]). An operation not among them is, field for field, what it was
//! when last found valid, so this catches every violation the full walk
//! ([`InFlight::check_invariants`]) catches; tests run both.

use super::Operation;
use crate::hash::IdHashing;
use crate::id::OperationId;
use crate::time::Instant;
use std::collections::{BTreeSet, HashMap};

/// Operations in flight and their deadlines.
#[derive(Default)]
pub(in crate::node) struct InFlight {
    /// Found by id only, never iterated where the order could reach an output (the deadlines
    /// give the order): hashed, which costs a SET about half of the ordered map it replaced
    /// (issue #15).
    operations: HashMap<OperationId, (Instant, Operation), IdHashing>,
    deadlines: BTreeSet<(Instant, OperationId)>,
    /// Operations tracked or handed out mutably since [`InFlight::clear_changed`]: the only
    /// ones whose invariants can have changed. Emptied after every input of the node.
    changed: Vec<OperationId>,
}

impl InFlight {
    /// Operations in flight.
    pub(in crate::node) fn len(&self) -> usize {
        self.operations.len()
    }

    /// Starts tracking `operation` as `op`, due at `deadline`.
    pub(in crate::node) fn track(
        &mut self,
        op: OperationId,
        operation: Operation,
        deadline: Instant,
    ) {
        self.operations.insert(op, (deadline, operation));
        self.deadlines.insert((deadline, op));
        self.changed.push(op);
    }

    /// Stops tracking `op`: its operation and deadline, if it was tracked.
    pub(in crate::node) fn untrack_with_deadline(
        &mut self,
        op: OperationId,
    ) -> Option<(Instant, Operation)> {
        let (deadline, operation) = self.operations.remove(&op)?;
        self.deadlines.remove(&(deadline, op));
        Some((deadline, operation))
    }

    /// The operation tracked as `op`.
    pub(in crate::node) fn get(&self, op: OperationId) -> Option<&Operation> {
        self.operations.get(&op).map(|(_, operation)| operation)
    }

    /// The operation tracked as `op`, to change (its deadline stays as tracked).
    pub(in crate::node) fn get_mut(&mut self, op: OperationId) -> Option<&mut Operation> {
        let (_, operation) = self.operations.get_mut(&op)?;
        self.changed.push(op);
        Some(operation)
    }

    /// The earliest deadline, if any operation is in flight.
    pub(in crate::node) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Stops tracking the operation with the earliest deadline, if that deadline is at or before
    /// `now`.
    pub(in crate::node) fn pop_due(&mut self, now: Instant) -> Option<(OperationId, Operation)> {
        loop {
            let &(deadline, op) = self.deadlines.first()?;
            if deadline > now {
                return None;
            }
            self.deadlines.pop_first();
            // Paired by construction, so present; if not, the deadline alone goes.
            if let Some((_, operation)) = self.operations.remove(&op) {
                return Some((op, operation));
            }
        }
    }

    /// The ids in flight, in no particular order (never let it reach an output).
    pub(in crate::node) fn ids(&self) -> impl Iterator<Item = OperationId> + '_ {
        self.operations.keys().copied()
    }

    /// The ids in flight that were tracked or handed out mutably since
    /// [`InFlight::clear_changed`] (an id may come more than once; never let the order reach an
    /// output).
    pub(in crate::node) fn changed_ids(&self) -> impl Iterator<Item = OperationId> + '_ {
        self.changed
            .iter()
            .copied()
            .filter(|op| self.operations.contains_key(op))
    }

    /// Forgets which operations changed (after the node's invariants were checked, or when
    /// they are not checked at all).
    pub(in crate::node) fn clear_changed(&mut self) {
        self.changed.clear();
    }

    /// Every operation's pairing with its deadline and its own invariants.
    pub(in crate::node) fn check_invariants(&self) {
        self.check_pairing_count();
        for (deadline, op) in &self.deadlines {
            let tracked = self.operations.get(op).map(|(d, _)| d);
            assert_eq!(tracked, Some(deadline), "deadline of an unknown operation");
        }
        for (_, operation) in self.operations.values() {
            operation.check_invariants();
        }
    }

    /// [`InFlight::check_invariants`] for the operations changed since
    /// [`InFlight::clear_changed`], given that all held when it was called: every other
    /// operation and its deadline are as they were then. With the counts equal, each changed
    /// operation's own deadline present means no other deadline of a changed id is left.
    pub(in crate::node) fn check_changed(&self) {
        self.check_pairing_count();
        for op in &self.changed {
            let Some((deadline, operation)) = self.operations.get(op) else {
                continue;
            };
            assert!(
                self.deadlines.contains(&(*deadline, *op)),
                "deadline of an unknown operation"
            );
            operation.check_invariants();
        }
    }

    fn check_pairing_count(&self) {
        assert_eq!(
            self.deadlines.len(),
            self.operations.len(),
            "every operation has exactly one deadline"
        );
    }

    /// Test access: the deadlines in order.
    #[cfg(test)]
    pub(in crate::node) fn deadlines(&self) -> impl Iterator<Item = (Instant, OperationId)> + '_ {
        self.deadlines.iter().copied()
    }

    /// Test access: breaks the pairing, as a bug would.
    #[cfg(test)]
    pub(in crate::node) fn drop_deadlines(&mut self) {
        self.deadlines.clear();
    }
}
