//! Dotted causal containers (dotted version vectors) for the `vector-clock` conflict mode.
//!
//! A key's record is a version vector (every write event this replica knows of for the key) plus
//! the siblings still live, each tagged with the dot of the write that made it. Only a replica of
//! the key creates dots, from its own entry, after its own copy is durable: so for each actor the
//! dots of one key are contiguous and "dot ≤ vv[actor]" means "known", which is what lets a read's
//! context name exactly what it saw (PITFALLS: "Sibling explosion").
//!
//! Pruning rule (bounded clock size): when a vector has more than `entries_max` entries, entries of
//! actors that are not current replicas of the key and own no live sibling are dropped, lowest
//! counter first. Dropping an entry can only make an old sibling look concurrent again (a false
//! sibling a client can resolve), never hide a write. Entries of current replicas are kept, so a
//! replica never reuses a dot.

use crate::id::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One write event: the `counter`-th write of `actor` to this key.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Dot {
    /// The replica that created the event.
    pub actor: NodeId,
    /// Its per-key event counter, from 1.
    pub counter: u64,
}

/// A version vector: for each actor, the highest counter known. Kept sorted by actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct VersionVector {
    entries: Vec<(NodeId, u64)>,
}

impl VersionVector {
    /// The counter known for `actor` (0 if none).
    pub fn get(&self, actor: NodeId) -> u64 {
        self.entries
            .binary_search_by_key(&actor, |&(a, _)| a)
            .map_or(0, |i| self.entries[i].1)
    }

    /// True if the event `dot` is in this vector's history.
    pub fn contains(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Raises `actor`'s entry to at least `counter`.
    pub fn raise(&mut self, actor: NodeId, counter: u64) {
        match self.entries.binary_search_by_key(&actor, |&(a, _)| a) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(counter),
            Err(i) => self.entries.insert(i, (actor, counter)),
        }
    }

    /// Pointwise maximum.
    pub fn join(&self, other: &VersionVector) -> VersionVector {
        let mut joined = self.clone();
        for &(actor, counter) in &other.entries {
            joined.raise(actor, counter);
        }
        joined
    }

    /// True if every event of `other` is in `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|&(a, c)| self.get(a) >= c)
    }

    /// Entries in actor order.
    pub fn entries(&self) -> &[(NodeId, u64)] {
        &self.entries
    }

    /// Number of actors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no event is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The record of one key in vector-clock mode.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct CausalRecord {
    /// Every write event known for this key.
    pub clock: VersionVector,
    /// Live siblings sorted by dot; `None` is a delete (tombstone sibling).
    pub siblings: Vec<(Dot, Option<Bytes>)>,
}

impl CausalRecord {
    /// Join of two replicas' records: a sibling survives if both hold it or the other side has
    /// not seen its dot; the clocks are joined.
    pub fn join(&self, other: &CausalRecord) -> CausalRecord {
        let mut siblings: Vec<(Dot, Option<Bytes>)> = Vec::new();
        for (dot, value) in &self.siblings {
            let in_other = other
                .siblings
                .binary_search_by_key(dot, |(d, _)| *d)
                .is_ok();
            if in_other || !other.clock.contains(*dot) {
                siblings.push((*dot, value.clone()));
            }
        }
        for (dot, value) in &other.siblings {
            let in_self = self.siblings.binary_search_by_key(dot, |(d, _)| *d).is_ok();
            if !in_self && !self.clock.contains(*dot) {
                siblings.push((*dot, value.clone()));
            }
        }
        siblings.sort_by_key(|(d, _)| *d);
        CausalRecord {
            clock: self.clock.join(&other.clock),
            siblings,
        }
    }

    /// A new write event by `actor` whose client had seen `context`: the siblings named by the
    /// context are superseded, concurrent ones stay. Returns the new record and the new dot.
    pub fn update(
        &self,
        actor: NodeId,
        context: &VersionVector,
        value: Option<Bytes>,
    ) -> (CausalRecord, Dot) {
        let counter = self.clock.get(actor).max(context.get(actor)) + 1;
        let dot = Dot { actor, counter };
        let mut siblings: Vec<(Dot, Option<Bytes>)> = self
            .siblings
            .iter()
            .filter(|(d, _)| !context.contains(*d))
            .cloned()
            .collect();
        siblings.push((dot, value));
        siblings.sort_by_key(|(d, _)| *d);
        let mut clock = self.clock.join(context);
        clock.raise(actor, counter);
        (CausalRecord { clock, siblings }, dot)
    }

    /// Applies the pruning rule in the module doc; `replicas` are the key's current replicas.
    pub fn prune(&mut self, entries_max: usize, replicas: &[NodeId]) {
        while self.clock.len() > entries_max {
            let victim = self
                .clock
                .entries
                .iter()
                .filter(|(actor, _)| {
                    !replicas.contains(actor)
                        && !self.siblings.iter().any(|(d, _)| d.actor == *actor)
                })
                .min_by_key(|&&(actor, counter)| (counter, actor))
                .map(|&(actor, _)| actor);
            match victim {
                Some(actor) => self.clock.entries.retain(|(a, _)| *a != actor),
                None => break,
            }
        }
    }

    /// Values of the live (non-tombstone) siblings, in dot order.
    pub fn live_values(&self) -> impl Iterator<Item = &Bytes> {
        self.siblings.iter().filter_map(|(_, v)| v.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    fn value(s: &'static str) -> Option<Bytes> {
        Some(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn concurrent_puts_become_siblings_and_a_context_put_supersedes_them() {
        let empty = CausalRecord::default();
        let (a, dot_a) = empty.update(n(1), &VersionVector::default(), value("a"));
        let (b, dot_b) = empty.update(n(2), &VersionVector::default(), value("b"));
        let both = a.join(&b);
        assert_eq!(both.live_values().count(), 2);
        assert!(both.clock.contains(dot_a) && both.clock.contains(dot_b));
        // A client that read both writes "c" with that context: one value remains.
        let (c, _) = both.update(n(1), &both.clock, value("c"));
        assert_eq!(
            c.live_values().collect::<Vec<_>>(),
            vec![&Bytes::from_static(b"c")]
        );
        // A replica still holding only "b" merges and keeps only "c".
        assert_eq!(b.join(&c).live_values().count(), 1);
    }

    #[test]
    fn context_supersedes_exactly_what_was_seen() {
        let empty = CausalRecord::default();
        let (a, _) = empty.update(n(1), &VersionVector::default(), value("a"));
        let seen = a.clock.clone();
        // A concurrent write the client did not see.
        let (ab, _) = a.update(n(1), &VersionVector::default(), value("b"));
        let (abc, _) = ab.update(n(1), &seen, value("c"));
        let live: Vec<_> = abc.live_values().collect();
        assert_eq!(
            live,
            vec![&Bytes::from_static(b"b"), &Bytes::from_static(b"c")]
        );
    }

    #[test]
    fn join_is_commutative_associative_and_idempotent() {
        let empty = CausalRecord::default();
        let (a, _) = empty.update(n(1), &VersionVector::default(), value("a"));
        let (b, _) = empty.update(n(2), &VersionVector::default(), value("b"));
        let (c, _) = a.update(n(3), &a.clock, None);
        assert_eq!(a.join(&b), b.join(&a));
        assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
        assert_eq!(a.join(&a), a);
        // The delete superseded "a" but not the concurrent "b".
        assert_eq!(a.join(&b).join(&c).live_values().count(), 1);
    }

    #[test]
    fn pruning_keeps_replicas_and_sibling_owners() {
        let mut record = CausalRecord::default();
        for actor in 1..=6 {
            record.clock.raise(n(actor), u64::from(actor));
        }
        record.siblings.push((
            Dot {
                actor: n(2),
                counter: 2,
            },
            value("x"),
        ));
        record.prune(3, &[n(5), n(6)]);
        let actors: Vec<NodeId> = record.clock.entries().iter().map(|&(a, _)| a).collect();
        assert_eq!(actors, vec![n(2), n(5), n(6)]);
    }
}
