//! Dotted causal containers (dotted version vectors) for the `vector-clock` conflict mode.
//!
//! A key's record is a version vector (every write event this replica knows of for the key) plus
//! the siblings still live, each tagged with the dot of the write that made it. Only a replica of
//! the key creates dots, from its own entry, after its own copy is durable: so for each actor the
//! dots of one key are contiguous and "dot ≤ vv[actor]" means "known", which is what lets a read's
//! context name exactly what it saw (PITFALLS: "Sibling explosion"). The actor is an
//! [`ActorId`], one incarnation of a node's data, so a node whose disk was replaced never repeats
//! a dot it issued before (see `actor`).
//!
//! Pruning rule (bounded clock size): when a vector has more than `entries_max` entries, entries
//! that own no live sibling are dropped, lowest counter first, if their actor is not of a current
//! replica of the key, or is an earlier data incarnation of the pruning node itself (an actor
//! whose data is gone never issues a dot again). The pruning node's current actor is never
//! dropped. Dropping an entry can only make an old sibling look concurrent again (a false sibling
//! a client can resolve), never hide a write. Every incarnation of the other current replicas is
//! kept (the pruner cannot tell which one is current), so a replica's current actor never loses
//! its entry and a replica never reuses a dot.

use super::actor::ActorId;
use crate::id::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One write event: the `counter`-th write of `actor` to this key.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Dot {
    /// The data incarnation of the replica that created the event.
    pub actor: ActorId,
    /// Its per-key event counter, from 1.
    pub counter: u64,
}

/// A version vector: for each actor, the highest counter known. Kept sorted by actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct VersionVector {
    entries: Vec<(ActorId, u64)>,
}

impl VersionVector {
    /// The counter known for `actor` (0 if none).
    pub fn get(&self, actor: ActorId) -> u64 {
        self.entries
            .binary_search_by_key(&actor, |&(a, _)| a)
            .map_or(0, |i| self.entries[i].1)
    }

    /// True if the event `dot` is in this vector's history.
    pub fn contains(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Raises `actor`'s entry to at least `counter`.
    pub fn raise(&mut self, actor: ActorId, counter: u64) {
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
        // Monotone: a join never forgets an event of either side.
        debug_assert!(joined.dominates(self) && joined.dominates(other));
        joined
    }

    /// True if every event of `other` is in `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|&(a, c)| self.get(a) >= c)
    }

    /// Entries in actor order.
    pub fn entries(&self) -> &[(ActorId, u64)] {
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
        let joined = CausalRecord {
            clock: self.clock.join(&other.clock),
            siblings,
        };
        // Every surviving sibling is an event the joined clock knows (the clock covers them).
        debug_assert!(joined
            .siblings
            .iter()
            .all(|(d, _)| joined.clock.contains(*d)));
        joined
    }

    /// A new write event by `actor` whose client had seen `context`: the siblings named by the
    /// context are superseded, concurrent ones stay. Returns the new record and the new dot.
    pub fn update(
        &self,
        actor: ActorId,
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
        // A stamp moves strictly forward: the new clock holds everything known before, and the
        // new dot is an event neither the record nor the client's context had seen.
        debug_assert!(clock.dominates(&self.clock) && clock.dominates(context));
        debug_assert!(!self.clock.contains(dot) && !context.contains(dot) && clock.contains(dot));
        (CausalRecord { clock, siblings }, dot)
    }

    /// Applies the pruning rule in the module doc; `replicas` are the key's current replicas and
    /// `current` the pruning replica's own actor.
    pub fn prune(&mut self, entries_max: usize, replicas: &[NodeId], current: ActorId) {
        let own_counter = self.clock.get(current);
        let known_siblings = self
            .siblings
            .iter()
            .filter(|(d, _)| self.clock.contains(*d))
            .count();
        while self.clock.len() > entries_max {
            let victim = self
                .clock
                .entries
                .iter()
                .filter(|(actor, _)| {
                    // The pruner's other incarnations are retired: their data is gone.
                    let retired = actor.node == current.node;
                    *actor != current
                        && (retired || !replicas.contains(&actor.node))
                        && !self.siblings.iter().any(|(d, _)| d.actor == *actor)
                })
                .min_by_key(|&&(actor, counter)| (counter, actor))
                .map(|&(actor, _)| actor);
            match victim {
                Some(actor) => self.clock.entries.retain(|(a, _)| *a != actor),
                None => break,
            }
        }
        debug_assert_eq!(
            self.clock.get(current),
            own_counter,
            "the pruning replica's own entry is kept"
        );
        debug_assert_eq!(
            self.siblings
                .iter()
                .filter(|(d, _)| self.clock.contains(*d))
                .count(),
            known_siblings,
            "no live sibling's dot leaves the vector"
        );
    }

    /// Values of the live (non-tombstone) siblings, in dot order.
    pub fn live_values(&self) -> impl Iterator<Item = &Bytes> {
        self.siblings.iter().filter_map(|(_, v)| v.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::DataEpoch;

    /// Node `i`'s actor in its first data incarnation.
    fn n(i: u32) -> ActorId {
        ActorId::new(NodeId(i), DataEpoch(1))
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
        record.prune(3, &[NodeId(5), NodeId(6)], n(5));
        let actors: Vec<ActorId> = record.clock.entries().iter().map(|&(a, _)| a).collect();
        assert_eq!(actors, vec![n(2), n(5), n(6)]);
    }

    #[test]
    fn pruning_drops_the_pruners_retired_incarnations_but_no_incarnation_of_another_replica() {
        let retired = ActorId::new(NodeId(1), DataEpoch(7));
        let current = ActorId::new(NodeId(1), DataEpoch(8));
        // Node 2 was wiped too; node 1 cannot tell which of node 2's actors is current.
        let other_old = ActorId::new(NodeId(2), DataEpoch(3));
        let other_new = ActorId::new(NodeId(2), DataEpoch(4));
        let mut record = CausalRecord::default();
        for (actor, counter) in [(retired, 9), (current, 1), (other_old, 5), (other_new, 2)] {
            record.clock.raise(actor, counter);
        }
        record.prune(2, &[NodeId(1), NodeId(2)], current);
        let actors: Vec<ActorId> = record.clock.entries().iter().map(|&(a, _)| a).collect();
        assert_eq!(actors, vec![current, other_old, other_new]);
    }

    /// Clients hold contexts, and peers and disks hold records, of the format before actors had
    /// epochs (protocol 2, record format 1: entries keyed by `NodeId` alone). Those bytes are
    /// refused with an error, never misread as vectors of this format, and no cut of a valid
    /// encoding panics.
    #[test]
    fn vectors_of_the_node_keyed_format_are_refused_and_cut_bytes_are_errors() {
        use crate::client::CausalContext;
        use crate::codec::{decode_value, encode_value};
        for entries in 1..=6u32 {
            let old: Vec<(NodeId, u64)> = (0..entries)
                .map(|i| (NodeId(i), u64::from(i) * 1000 + 3))
                .collect();
            let bytes = encode_value(&old);
            assert!(decode_value::<VersionVector>(&bytes).is_err(), "{old:?}");
            assert!(decode_value::<CausalContext>(&bytes).is_err(), "{old:?}");
        }
        let mut vector = VersionVector::default();
        vector.raise(ActorId::new(NodeId(3), DataEpoch(u64::MAX)), 9);
        vector.raise(n(1), 2);
        let bytes = encode_value(&vector);
        assert_eq!(decode_value::<VersionVector>(&bytes), Ok(vector));
        for cut in 0..bytes.len() {
            assert!(decode_value::<VersionVector>(&bytes[..cut]).is_err());
        }
    }

    /// Issue #11, swarm's "vector-clock-disk-wipe": a replica whose disk was replaced counts its
    /// dots from an empty record again. Under the same actor its first new dot is one the other
    /// replicas already know, so they drop the new write; under a new data incarnation the write
    /// is concurrent with the old one and survives every merge.
    #[test]
    fn a_replica_whose_data_was_wiped_repeats_no_dot_under_a_new_incarnation() {
        let before_wipe = ActorId::new(NodeId(1), DataEpoch(11));
        let (written, old_dot) =
            CausalRecord::default().update(before_wipe, &VersionVector::default(), value("a"));
        // Another replica holds the acknowledged write; the wiped replica holds nothing.
        let survivor = written.clone();
        let wiped = CausalRecord::default();

        // The failure: the same actor after the wipe.
        let (_, reused) = wiped.update(before_wipe, &VersionVector::default(), value("b"));
        assert_eq!(
            reused, old_dot,
            "the counter starts again from an empty record"
        );
        assert!(
            survivor.clock.contains(reused),
            "the survivor takes the new write as already known"
        );

        // The fix: a new incarnation of node 1's data.
        let after_wipe = ActorId::new(NodeId(1), DataEpoch(12));
        let (rewritten, new_dot) = wiped.update(after_wipe, &VersionVector::default(), value("b"));
        assert_ne!(new_dot, old_dot);
        assert!(!survivor.clock.contains(new_dot));
        let merged = survivor.join(&rewritten);
        assert_eq!(merged, rewritten.join(&survivor));
        assert_eq!(
            merged.live_values().collect::<Vec<_>>(),
            vec![&Bytes::from_static(b"a"), &Bytes::from_static(b"b")],
            "both acknowledged writes survive as siblings"
        );
    }
}
