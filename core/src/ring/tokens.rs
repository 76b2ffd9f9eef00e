//! Token allocation: a new node takes slices of the largest ranges of the most over-loaded members.
//!
//! Random tokens give each node an ownership error of about `1/sqrt(vnodes)` (±12% at 64 vnodes,
//! so some node is routinely 25% off). Carving the new node's share out of whoever holds the most
//! above its target keeps every node close to even and moves only the new node's share of keys.

use super::Ring;
use crate::hash::hash_pair;
use crate::id::NodeId;

/// Size of the token space: ranges are measured in `u128` to represent the whole of it.
pub(super) const RING_SPACE: u128 = 1 << 64;

/// Space owned by each member index, as primary.
pub(super) fn owned_space(ring: &Ring) -> Vec<u128> {
    let mut owned = vec![0u128; ring.members.len()];
    let count = ring.tokens.len();
    for (i, &(token, member)) in ring.tokens.iter().enumerate() {
        let previous = ring.tokens[(i + count - 1) % count].0;
        owned[member as usize] += range_len(previous, token, count);
    }
    owned
}

/// Length of `(previous, token]`; a lone token owns everything.
fn range_len(previous: u64, token: u64, token_count: usize) -> u128 {
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
    if ring.tokens.is_empty() {
        // First node: evenly spaced, rotated by a per-node offset.
        let step = RING_SPACE / u128::from(vnodes);
        let offset = u128::from(hash_pair(u64::from(id.0), 0));
        return (0..u128::from(vnodes))
            .map(|i| ((offset + i * step) % RING_SPACE) as u64)
            .collect();
    }
    let total_weight: u128 = ring
        .members
        .iter()
        .map(|m| u128::from(m.location.weight))
        .sum::<u128>()
        + u128::from(weight);
    let target_of = |w: u32| RING_SPACE * u128::from(w) / total_weight;
    let mut owned = owned_space(ring);
    // Working copy of (token, owner) where the new node is index `members.len()`.
    let new_owner = u32::try_from(ring.members.len()).unwrap_or(u32::MAX);
    let mut tokens: Vec<(u64, u32)> = ring.tokens.clone();
    let mut chosen = Vec::with_capacity(vnodes as usize);
    let mut still_wanted = target_of(weight);
    for vnodes_left in (1..=u128::from(vnodes)).rev() {
        let quota = still_wanted / vnodes_left;
        if quota == 0 {
            break;
        }
        // Donor: the member furthest above its target (ties: lowest index, deterministic).
        let donor = (0..ring.members.len())
            .max_by_key(|&m| {
                let target = target_of(ring.members[m].location.weight);
                (owned[m] as i128 - target as i128, std::cmp::Reverse(m))
            })
            .unwrap_or(0);
        // The donor's largest range.
        let count = tokens.len();
        let mut best: Option<(u128, u64)> = None;
        for (i, &(token, member)) in tokens.iter().enumerate() {
            if member as usize != donor {
                continue;
            }
            let previous = tokens[(i + count - 1) % count].0;
            let len = range_len(previous, token, count);
            if best.is_none_or(|(l, _)| len > l) {
                best = Some((len, previous));
            }
        }
        let Some((len, start)) = best else { break };
        if len < 2 {
            break;
        }
        let take = quota.min(len - 1);
        let token = ((u128::from(start) + take) % RING_SPACE) as u64;
        owned[donor] -= take;
        still_wanted = still_wanted.saturating_sub(take);
        chosen.push(token);
        let position = tokens.partition_point(|&(t, _)| t < token);
        tokens.insert(position, (token, new_owner));
    }
    chosen
}
