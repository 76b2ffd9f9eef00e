//! Token allocation: a new node takes slices of the largest ranges of the most over-loaded members.
//!
//! Random tokens give each node an ownership error of about `1/sqrt(vnodes)` (±12% at 64 vnodes,
//! so some node is routinely 25% off). Carving the new node's share out of whoever holds the most
//! above its target keeps every node close to even and moves only the new node's share of keys.

use super::Ring;
use crate::hash::hash_pair;
use crate::id::NodeId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A range `(start, end]` of one member, ordered by length, then lowest `end` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OwnedRange {
    len: u128,
    end: Reverse<u64>,
    start: u64,
}

/// Size of the token space: ranges are measured in `u128` to represent the whole of it.
pub(super) const RING_SPACE: u128 = 1 << 64;

/// Space owned by each member index, as primary.
pub(super) fn owned_space(ring: &Ring) -> Vec<u128> {
    let mut owned = vec![0u128; ring.data.members.len()];
    let tokens = &ring.data.tokens;
    let count = tokens.len();
    // The range of the first token starts at the last one (the ring wraps).
    let mut previous = tokens.last().map_or(0, |&(token, _)| token);
    for &(token, member) in tokens {
        owned[member as usize] += range_len(previous, token, count);
        previous = token;
    }
    owned
}

/// Length of `(previous, token]`; a lone token owns everything.
pub(super) fn range_len(previous: u64, token: u64, token_count: usize) -> u128 {
    if token_count == 1 {
        RING_SPACE
    } else if token > previous {
        u128::from(token - previous)
    } else {
        RING_SPACE - u128::from(previous) + u128::from(token)
    }
}

/// Chooses `vnodes` new tokens for node `id` of weight `weight`. Pure: reads the ring only.
pub(super) fn allocate(ring: &Ring, id: NodeId, weight: u32, vnodes: u32) -> Vec<u64> {
    if ring.data.tokens.is_empty() {
        // First node: evenly spaced, rotated by a per-node offset.
        let step = RING_SPACE / u128::from(vnodes);
        let offset = u128::from(hash_pair(u64::from(id.0), 0));
        return (0..u128::from(vnodes))
            .map(|i| ((offset + i * step) % RING_SPACE) as u64)
            .collect();
    }
    let total_weight: u128 = ring
        .data
        .members
        .iter()
        .map(|m| u128::from(m.location.weight))
        .sum::<u128>()
        + u128::from(weight);
    let target_of = |w: u32| RING_SPACE * u128::from(w) / total_weight;
    let owned = owned_space(ring);
    // Donors ordered by (space above target, lowest index first): only the donor's share
    // changes in a step, so it is popped and pushed back, and the heap's top is always the
    // member the policy names (`max_by_key` over all members gives the same, at O(members)).
    let mut donors: BinaryHeap<(i128, Reverse<usize>)> = ring
        .data
        .members
        .iter()
        .enumerate()
        .map(|(m, member)| {
            let surplus = owned[m] as i128 - target_of(member.location.weight) as i128;
            (surplus, Reverse(m))
        })
        .collect();
    // Each member's ranges, largest first, ties to the lowest token (the first in ring order).
    // A step splits only the donor's chosen range `(start, end]`: the new node takes
    // `(start, token]` and the donor keeps `(token, end]`, so no other entry changes.
    let (grouped, first) = ranges_by_member(ring);
    let members = ring.data.members.len();
    let mut ranges: Vec<Option<BinaryHeap<OwnedRange>>> = vec![None; members];
    let mut chosen = Vec::with_capacity(vnodes as usize);
    let mut still_wanted = target_of(weight);
    for vnodes_left in (1..=u128::from(vnodes)).rev() {
        let quota = still_wanted / vnodes_left;
        if quota == 0 {
            break;
        }
        let Some((surplus, Reverse(donor))) = donors.pop() else {
            break;
        };
        let Some(heap) = donor_ranges(&mut ranges, ring, &grouped, &first, donor) else {
            break;
        };
        let Some(range) = heap.pop() else {
            break;
        };
        if range.len < 2 {
            break;
        }
        let take = quota.min(range.len - 1);
        let token = ((u128::from(range.start) + take) % RING_SPACE) as u64;
        donors.push((surplus - take as i128, Reverse(donor)));
        heap.push(OwnedRange {
            len: range.len - take,
            end: range.end,
            start: token,
        });
        still_wanted = still_wanted.saturating_sub(take);
        chosen.push(token);
    }
    chosen
}

/// Every member's ranges, grouped by member in one vector of token indices (each names the
/// range that token ends): member `m`'s at `first[m]..first[m + 1]` (returned as `(grouped,
/// first)`), in ring order. A member's group becomes a heap only when it is first chosen as a
/// donor ([`donor_ranges`]): a join takes from a few dozen members, and making a heap (and a
/// vector) of every member's ranges on each of a 1,000-node ring's joins was most of building
/// it; grouping indices rather than whole ranges writes an eighth of the bytes (filling the
/// grouped ranges was a sixth of building that ring). The order is total (ends are unique
/// tokens), so every heap of a group pops it the same way.
fn ranges_by_member(ring: &Ring) -> (Vec<u32>, Vec<usize>) {
    let members = ring.data.members.len();
    let mut first = vec![0usize; members + 1];
    for &(_, member) in &ring.data.tokens {
        // Indices past the members (none in a valid ring) are left out, as before.
        if let Some(next) = first.get_mut(member as usize + 1) {
            *next += 1;
        }
    }
    for m in 0..members {
        first[m + 1] += first[m];
    }
    let mut grouped = vec![0u32; first[members]];
    let mut cursor = first[..members].to_vec();
    for (i, &(_, member)) in ring.data.tokens.iter().enumerate() {
        if let Some(at) = cursor.get_mut(member as usize) {
            grouped[*at] = u32::try_from(i).unwrap_or(u32::MAX);
            *at += 1;
        }
    }
    (grouped, first)
}

/// The range ending at token index `i` of `ring`.
fn range_ending_at(ring: &Ring, i: usize) -> Option<OwnedRange> {
    let tokens = &ring.data.tokens;
    let count = tokens.len();
    let end = tokens.get(i)?.0;
    let start = tokens.get((i + count - 1) % count)?.0;
    Some(OwnedRange {
        len: range_len(start, end, count),
        end: Reverse(end),
        start,
    })
}

/// Member `donor`'s ranges as a heap, made from its group of `grouped` (`first[donor]..
/// first[donor + 1]`) the first time it is asked for.
fn donor_ranges<'a>(
    ranges: &'a mut [Option<BinaryHeap<OwnedRange>>],
    ring: &Ring,
    grouped: &[u32],
    first: &[usize],
    donor: usize,
) -> Option<&'a mut BinaryHeap<OwnedRange>> {
    let group = grouped.get(*first.get(donor)?..*first.get(donor + 1)?)?;
    let heap = ranges.get_mut(donor)?;
    if heap.is_none() {
        let group: Option<Vec<OwnedRange>> = group
            .iter()
            .map(|&i| range_ending_at(ring, i as usize))
            .collect();
        *heap = Some(BinaryHeap::from(group?));
    }
    heap.as_mut()
}
