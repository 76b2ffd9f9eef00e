//! The member table: every other known member's state, in id order.
//!
//! Why a sorted vector and not a `BTreeMap`: a push-pull `State` carries a whole table, also in
//! id order (after the sender's own entry), and the receiver looks up every entry; random peer
//! draws index it directly. With the table
//! contiguous and a cursor that remembers where the last lookup ended, each lookup of a sorted
//! message is one comparison instead of a walk down a tree of cache-cold nodes, and the scans
//! that run per input (failure detection, deadlines, invariants) read one block of memory.
//! Inserts shift the tail, but they happen once per member discovered (bounded by
//! `members_max`), against one lookup per entry of every message.

use crate::id::NodeId;

/// Members by id, ascending and unique (iteration order reaches outputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MemberTable<V> {
    entries: Vec<(NodeId, V)>,
}

impl<V> Default for MemberTable<V> {
    fn default() -> Self {
        MemberTable {
            entries: Vec::new(),
        }
    }
}

impl<V> MemberTable<V> {
    /// The index of `node`, trying `hint` first (where the caller expects it: the position
    /// after the previous lookup of a walk in id order), then the slot after it (a walk over a
    /// sender's table skips the sender's own slot here, which that table lacks).
    ///
    /// Without a hint: ids are unique and ascending, so `node` cannot sit past index
    /// `node - first id`, and sits exactly there when the ids below it are dense (most tables:
    /// ids are handed out in order), or one before after one removal. Those two are tried (the
    /// second also tells an absent id in a dense table: its slot), then a binary search of the
    /// entries before that bound. A search of the whole table was most of
    /// a 1,000-node run's probe round (ten cache misses in a table per node).
    fn position(&self, node: NodeId, hint: usize) -> Result<usize, usize> {
        if self.entries.get(hint).is_some_and(|(id, _)| *id == node) {
            return Ok(hint);
        }
        let next = hint.saturating_add(1);
        if self.entries.get(next).is_some_and(|(id, _)| *id == node) {
            return Ok(next);
        }
        let Some(&(first, _)) = self.entries.first() else {
            return Err(0);
        };
        let Some(bound) = node.0.checked_sub(first.0) else {
            return Err(0);
        };
        let bound = usize::try_from(bound).unwrap_or(usize::MAX);
        // Every entry from `bound` on has an id of at least `node`.
        let end = bound.min(self.entries.len());
        if end < self.entries.len() && self.entries[end].0 == node {
            return Ok(end);
        }
        if let Some(before) = end.checked_sub(1) {
            if self.entries[before].0 == node {
                return Ok(before);
            }
            // Absent, and this is where it would go (a node asking for itself, in a dense table).
            if self.entries[before].0 < node {
                return Err(end);
            }
        }
        self.entries[..end].binary_search_by_key(&node, |(id, _)| *id)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn contains_key(&self, node: &NodeId) -> bool {
        self.position(*node, usize::MAX).is_ok()
    }

    pub(super) fn get(&self, node: &NodeId) -> Option<&V> {
        let index = self.position(*node, usize::MAX).ok()?;
        self.entries.get(index).map(|(_, state)| state)
    }

    pub(super) fn get_mut(&mut self, node: &NodeId) -> Option<&mut V> {
        let mut cursor = usize::MAX;
        self.get_mut_from(node, &mut cursor)
    }

    /// [`MemberTable::get_mut`] for walks in id order: `cursor` is where the previous lookup
    /// ended and is moved past this one when `node` is found.
    pub(super) fn get_mut_from(&mut self, node: &NodeId, cursor: &mut usize) -> Option<&mut V> {
        let index = self.position(*node, *cursor).ok()?;
        *cursor = index + 1;
        self.entries.get_mut(index).map(|(_, state)| state)
    }

    /// Inserts or replaces `node`'s state.
    pub(super) fn insert(&mut self, node: NodeId, state: V) {
        match self.position(node, usize::MAX) {
            Ok(index) => self.entries[index].1 = state,
            Err(index) => self.entries.insert(index, (node, state)),
        }
    }

    /// The member at position `index` in id order (for uniform random draws).
    pub(super) fn get_index(&self, index: usize) -> Option<(&NodeId, &V)> {
        self.entries.get(index).map(|(node, state)| (node, state))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &V)> {
        self.entries.iter().map(|(node, state)| (node, state))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.entries.iter().map(|(node, _)| node)
    }

    /// Panics unless the ids are strictly ascending.
    pub(super) fn check_invariants(&self) {
        assert!(
            self.entries.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "member table out of order"
        );
    }
}

impl<V> FromIterator<(NodeId, V)> for MemberTable<V> {
    /// From any order; a later duplicate replaces an earlier one, as `BTreeMap` would.
    fn from_iter<I: IntoIterator<Item = (NodeId, V)>>(items: I) -> Self {
        let mut table = MemberTable::default();
        for (node, state) in items {
            table.insert(node, state);
        }
        table
    }
}

impl<'a, V> IntoIterator for &'a MemberTable<V> {
    type Item = (&'a NodeId, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (NodeId, V)>, fn(&'a (NodeId, V)) -> Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(node, state)| (node, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_as_a_btree_map() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut table = MemberTable::default();
        let mut model = BTreeMap::new();
        let mut cursor = 0;
        for step in 0..5000u32 {
            let node = NodeId(rng.gen_range(0..40));
            match rng.gen_range(0..4) {
                0 => {
                    table.insert(node, step);
                    model.insert(node, step);
                }
                1 => assert_eq!(table.get(&node), model.get(&node)),
                2 => {
                    if rng.gen_bool(0.2) {
                        cursor = rng.gen_range(0..50);
                    }
                    let got = table.get_mut_from(&node, &mut cursor).map(|v| {
                        *v += 1;
                        *v
                    });
                    let want = model.get_mut(&node).map(|v| {
                        *v += 1;
                        *v
                    });
                    assert_eq!(got, want);
                }
                _ => assert_eq!(table.contains_key(&node), model.contains_key(&node)),
            }
            table.check_invariants();
        }
        assert_eq!(table.len(), model.len());
        assert!(table.iter().eq(model.iter()));
        assert!(table.keys().eq(model.keys()));
        let rebuilt: MemberTable<u32> = model.iter().rev().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(rebuilt, table);
    }
}
