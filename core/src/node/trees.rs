//! A node's anti-entropy hash trees, one per range held: an index of local data (see `store`).
//!
//! Anti-entropy's invariant over them (no tree with keys for a range the ring does not have) is
//! checked after every input of the node, which on a large cluster (a tree per range of each
//! node, most inputs gossip that touches no tree) was 4–8% of a run in cache misses alone. The
//! trees note whether they changed since the last check, through the only ways to change them
//! (the map is private to this file), so the node re-checks only after an input that changed
//! them or the ring: the check's outcome depends on nothing else. Reading a tree's hashes (which
//! may create it empty, for a range a peer asked about) is not a change: an empty tree cannot
//! break the check.
//!
//! The trees also keep the list of ranges whose tree holds keys: anti-entropy offers the ones
//! this node no longer replicates every round, and walking every tree for them (a few hundred per
//! node, a few holding keys) was a fortieth of a 100-node simulation. A tree's key count only
//! grows (a write replaces a key's digest, never removes the key), so the list changes only when
//! a first key lands in a tree and when the trees are dropped or replaced.

use crate::antientropy::RangeTree;
use crate::version::Record;
use bytes::Bytes;
use std::collections::BTreeMap;

/// The trees by range, the ranges whose tree holds keys, and whether any tree changed since
/// [`Trees::clear_changed`].
#[derive(Default)]
pub(super) struct Trees {
    by_range: BTreeMap<u32, RangeTree>,
    /// The ranges whose tree holds keys, ascending.
    held: Vec<u32>,
    changed: bool,
}

impl Trees {
    /// The tree of `range`, if one is held.
    pub(super) fn get(&self, range: &u32) -> Option<&RangeTree> {
        self.by_range.get(range)
    }

    /// Records in the tree of `range` (created if none) that `key` now holds `record`.
    pub(super) fn update(&mut self, range: u32, key: &Bytes, record: &Record) {
        self.changed = true;
        let tree = self.by_range.entry(range).or_default();
        let was_empty = tree.is_empty();
        tree.update(key, record);
        if was_empty && !tree.is_empty() {
            if let Err(at) = self.held.binary_search(&range) {
                self.held.insert(at, range);
            }
        }
    }

    /// The tree of `range`, created empty if none, to read its hashes (computed lazily, hence
    /// `mut`). Not a change (see the module doc); writes go through [`Trees::update`].
    pub(super) fn read(&mut self, range: u32) -> &mut RangeTree {
        self.by_range.entry(range).or_default()
    }

    /// Drops every tree.
    pub(super) fn clear(&mut self) {
        self.changed = true;
        self.by_range.clear();
        self.held.clear();
    }

    /// Replaces every tree (a finished rebuild's shadow).
    pub(super) fn replace(&mut self, by_range: BTreeMap<u32, RangeTree>) {
        self.changed = true;
        self.held = by_range
            .iter()
            .filter(|(_, tree)| !tree.is_empty())
            .map(|(&range, _)| range)
            .collect();
        self.by_range = by_range;
    }

    /// The ranges whose tree holds keys, ascending.
    pub(super) fn held(&self) -> &[u32] {
        &self.held
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
