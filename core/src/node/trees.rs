//! A node's anti-entropy hash trees, one per range held: an index of local data (see `store`).
//!
//! Anti-entropy's invariant over them (no tree with keys for a range the ring does not have) is
//! checked after every input of the node, which on a large cluster (a tree per range of each
//! node, most inputs gossip that touches no tree) was 4–8% of a run in cache misses alone. The
//! trees note whether they changed since the last check, through the only ways to change them
//! (the map is private to this file), so the node re-checks only after an input that changed
//! them or the ring: the check's outcome depends on nothing else.

use crate::antientropy::RangeTree;
use std::collections::BTreeMap;

/// The trees by range, and whether any changed since [`Trees::clear_changed`].
#[derive(Default)]
pub(super) struct Trees {
    by_range: BTreeMap<u32, RangeTree>,
    changed: bool,
}

impl Trees {
    /// The tree of `range`, if one is held.
    pub(super) fn get(&self, range: &u32) -> Option<&RangeTree> {
        self.by_range.get(range)
    }

    /// The tree of `range`, created empty if none, to change.
    pub(super) fn entry_or_default(&mut self, range: u32) -> &mut RangeTree {
        self.changed = true;
        self.by_range.entry(range).or_default()
    }

    /// Drops every tree.
    pub(super) fn clear(&mut self) {
        self.changed = true;
        self.by_range.clear();
    }

    /// Replaces every tree (a finished rebuild's shadow).
    pub(super) fn replace(&mut self, by_range: BTreeMap<u32, RangeTree>) {
        self.changed = true;
        self.by_range = by_range;
    }

    /// The trees in range order.
    pub(super) fn as_map(&self) -> &BTreeMap<u32, RangeTree> {
        &self.by_range
    }

    /// Number of trees held.
    pub(super) fn len(&self) -> usize {
        self.by_range.len()
    }

    /// Whether any tree was created, changed or dropped since [`Trees::clear_changed`].
    pub(super) fn changed(&self) -> bool {
        self.changed
    }

    /// Forgets the changes so far (the invariants were checked after them).
    pub(super) fn clear_changed(&mut self) {
        self.changed = false;
    }
}
