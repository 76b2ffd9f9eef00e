//! Preference lists remembered per range.
//!
//! Placement is a pure function of the ring, and every key of a range has the same replicas, so
//! a list computed once serves every later request for its range until the ring changes. A
//! coordinator asks for one on every request: building a [`Placer`](super::Placer) (one pass
//! over the members and five small vectors) and walking the tokens cost 11% of a node's
//! instructions per `GET` (callgrind, `redis-benchmark -c 50`, one node), most of it allocation.
//!
//! The cache is part of the ring's value only as a memo: it is skipped by equality, hashing and
//! serialisation, and every change to the ring replaces it with an empty one. It holds lists for
//! one replica count (the first asked for: the cluster's `n`); other counts are computed each
//! time. Slots are filled lazily, so a ring that is only gossiped never pays for it, and a ring
//! with many ranges pays only for the ranges its requests touch.
//!
//! Clones share it. What it remembers is a pure function of the ring's value, and a clone that
//! changes gets a fresh memo of its own, so sharing can never hand one ring another's lists.
//! Sharing is what makes a ring version cost one placement per process instead of one per
//! holder: the simulator starts every node from clones of one seed ring, and a node's
//! anti-entropy and handover list every range's replicas on each adoption (100 nodes each
//! placing 6,400 ranges was most of `gossip-100.toml`'s time). The ring's epoch (an encoding
//! of the whole ring, hashed) is remembered here for the same reason.

use crate::id::NodeId;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// A slot not computed yet.
const UNKNOWN: u32 = u32::MAX;
/// A slot past the end of a list shorter than `n` (a ring of fewer than `n` members).
const ABSENT: u32 = u32::MAX - 1;

/// Lists of `replicas` node ids per range, `UNKNOWN` until computed.
#[derive(Debug)]
struct Lists {
    replicas: usize,
    slots: Box<[AtomicU32]>,
}

/// What is remembered of one ring value.
#[derive(Debug, Default)]
struct Memo {
    lists: OnceLock<Lists>,
    epoch: OnceLock<u64>,
    by_node: OnceLock<RangesByNode>,
    /// Whether this ring is one change from the ring whose data is held here (the first one
    /// asked about; held, so its address cannot be reused by another while it is remembered).
    successor: OnceLock<(Arc<super::RingData>, bool)>,
}

/// For `replicas` replicas, the ranges each node is a replica of, in range order.
#[derive(Debug)]
struct RangesByNode {
    replicas: usize,
    ranges: std::collections::BTreeMap<NodeId, Vec<u32>>,
}

/// The memo of a ring's preference lists and epoch (see the module doc).
#[derive(Clone, Debug, Default)]
pub(super) struct PlacementCache {
    /// Shared by the ring's clones; one pointer, since rings travel inside messages and enums.
    memo: Arc<Memo>,
}

impl PlacementCache {
    /// The list of range `range` (of `ranges`) for `replicas` replicas: remembered, or
    /// computed by `compute` and remembered when `replicas` is the count this cache holds.
    pub(super) fn get_or_compute(
        &self,
        range: usize,
        ranges: usize,
        replicas: usize,
        compute: impl FnOnce() -> Vec<NodeId>,
    ) -> Vec<NodeId> {
        // Node ids `UNKNOWN` and `ABSENT` cannot be remembered; such a ring computes each time.
        if replicas == 0 || range >= ranges {
            return compute();
        }
        let lists = self.memo.lists.get_or_init(|| Lists {
            replicas,
            slots: (0..ranges * replicas)
                .map(|_| AtomicU32::new(UNKNOWN))
                .collect(),
        });
        if lists.replicas != replicas {
            return compute();
        }
        let slots = &lists.slots[range * replicas..(range + 1) * replicas];
        // The first slot is written last (Release), so a known first slot means a whole list.
        if slots[0].load(Ordering::Acquire) != UNKNOWN {
            return slots
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .take_while(|&id| id != ABSENT)
                .map(NodeId)
                .collect();
        }
        let list = compute();
        if list.len() > replicas || list.iter().any(|id| id.0 >= ABSENT) {
            return list;
        }
        for (i, slot) in slots.iter().enumerate().skip(1).rev() {
            slot.store(list.get(i).map_or(ABSENT, |id| id.0), Ordering::Relaxed);
        }
        slots[0].store(list.first().map_or(ABSENT, |id| id.0), Ordering::Release);
        list
    }
}

impl PlacementCache {
    /// The ranges `node` is one of `replicas` replicas of, in range order, from an index of
    /// every node built by `build` (the list of every range, in range order) the first time it
    /// is asked for; `None` if the index holds another replica count (the caller walks the
    /// lists itself). Every node of a process lists its ranges on each adoption of a ring: the
    /// index makes that one walk of the ranges per ring value instead of one per node (1,000
    /// nodes each walking 64,000 ranges was 9% of `gossip-1000.toml`).
    pub(super) fn ranges_of(
        &self,
        node: NodeId,
        replicas: usize,
        build: impl FnOnce() -> Vec<(u32, Vec<NodeId>)>,
    ) -> Option<&[u32]> {
        let index = self.memo.by_node.get_or_init(|| {
            let mut ranges: std::collections::BTreeMap<NodeId, Vec<u32>> = Default::default();
            for (range, list) in build() {
                for id in list {
                    let of_node = ranges.entry(id).or_default();
                    // A list naming a node twice still makes it a replica of the range once.
                    if of_node.last() != Some(&range) {
                        of_node.push(range);
                    }
                }
            }
            RangesByNode { replicas, ranges }
        });
        (index.replicas == replicas).then(|| index.ranges.get(&node).map_or(&[][..], Vec::as_slice))
    }

    /// Whether this ring follows `previous` (a ring's data, shared by its clones) by one change:
    /// remembered for the first `previous` asked about, else `decide`d. Every node of a process
    /// adopting a new ring version asks this of the same previous version, and deciding replays
    /// the change on a copy of the whole ring (5% of a 1,000-node run).
    pub(super) fn successor_of(
        &self,
        previous: &Arc<super::RingData>,
        decide: impl FnOnce() -> bool,
    ) -> bool {
        if let Some((held, answer)) = self.memo.successor.get() {
            // The same allocation, held alive since: the same immutable value.
            if Arc::ptr_eq(held, previous) {
                return *answer;
            }
            return decide();
        }
        let answer = decide();
        // Another holder may have set it meanwhile (for another previous): that one stays.
        let _ = self.memo.successor.set((Arc::clone(previous), answer));
        answer
    }

    /// The ring's epoch: remembered, or computed by `compute` and remembered.
    pub(super) fn epoch(&self, compute: impl FnOnce() -> u64) -> u64 {
        *self.memo.epoch.get_or_init(compute)
    }
}

impl PartialEq for PlacementCache {
    /// A memo never makes two rings differ.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PlacementCache {}

impl std::hash::Hash for PlacementCache {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}
