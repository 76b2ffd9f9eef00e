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
///
/// Two parallel vectors in range order, not a map: anti-entropy looks up a tree for every range
/// it compares and every root a peer sends (half a million lookups in a 100-node run), and a
/// binary search over a node's few hundred range numbers, side by side in memory, costs a third
/// of a search down a tree of nodes. Trees are added rarely (a range read or written for the
/// first time since the last ring change), so the shift an insertion costs is paid rarely.
#[derive(Default)]
pub(super) struct Trees {
    /// The ranges that have a tree, ascending.
    ranges: Vec<u32>,
    /// `trees[i]` is the tree of `ranges[i]`.
    trees: Vec<RangeTree>,
    /// The ranges whose tree holds keys, ascending.
    held: Vec<u32>,
    changed: bool,
    /// Where [`Trees::position_or_insert`] last found or put a range (it may be past the end
    /// after a clear). Anti-entropy reads trees in range order (a round walks this node's ranges
    /// in order, a peer's roots come in the peer's order), so the next range asked for is
    /// usually at this position or the one after: two comparisons instead of a search (a
    /// search per root was 4% of a 100-node run).
    hint: usize,
}

impl Trees {
    /// The tree of `range`, if one is held.
    pub(super) fn get(&self, range: &u32) -> Option<&RangeTree> {
        let at = self.ranges.binary_search(range).ok()?;
        self.trees.get(at)
    }

    /// The position of the tree of `range`, created empty if none.
    fn position_or_insert(&mut self, range: u32) -> usize {
        // Ranges are unique and ascending, so a range found at the hint is where a search
        // would find it.
        let hint = self.hint;
        for at in [hint, hint.wrapping_add(1)] {
            if self.ranges.get(at) == Some(&range) {
                self.hint = at;
                return at;
            }
        }
        let at = match self.ranges.binary_search(&range) {
            Ok(at) => at,
            Err(at) => {
                self.ranges.insert(at, range);
                self.trees.insert(at, RangeTree::default());
                at
            }
        };
        self.hint = at;
        at
    }

    /// Records in the tree of `range` (created if none) that `key` now holds `record`.
    pub(super) fn update(&mut self, range: u32, key: &Bytes, record: &Record) {
        self.changed = true;
        let at = self.position_or_insert(range);
        let tree = &mut self.trees[at];
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
        let at = self.position_or_insert(range);
        &mut self.trees[at]
    }

    /// Drops every tree.
    pub(super) fn clear(&mut self) {
        self.changed = true;
        self.ranges.clear();
        self.trees.clear();
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
        (self.ranges, self.trees) = by_range.into_iter().unzip();
    }

    /// The ranges whose tree holds keys, ascending.
    pub(super) fn held(&self) -> &[u32] {
        &self.held
    }

    /// The ranges that have a tree, ascending.
    pub(super) fn ranges(&self) -> &[u32] {
        &self.ranges
    }

    /// The trees of ranges `first` and above, in range order.
    pub(super) fn starting_at(&self, first: u32) -> impl Iterator<Item = (u32, &RangeTree)> {
        let at = self.ranges.partition_point(|&range| range < first);
        self.ranges[at..]
            .iter()
            .copied()
            .zip(self.trees[at..].iter())
    }

    /// Number of trees held.
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    /// Lookups in order, in reverse and at random (hint or search) find each range where it is
    /// and create the missing ones in order.
    #[test]
    fn positions_are_where_the_ranges_are() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
        let mut trees = Trees::default();
        let mut model = BTreeSet::new();
        let mut lookups: Vec<u32> = (0..300).collect();
        lookups.extend((0..300).rev());
        lookups.extend((0..3_000).map(|_| rng.gen_range(0..400)));
        lookups.extend((0..400).step_by(3));
        for (i, range) in lookups.into_iter().enumerate() {
            if i == 4_000 {
                trees.clear();
                model.clear();
            }
            let at = trees.position_or_insert(range);
            model.insert(range);
            assert_eq!(trees.ranges()[at], range);
            assert_eq!(trees.ranges().len(), trees.trees.len());
            assert!(trees.ranges().iter().copied().eq(model.iter().copied()));
        }
    }
}
