use super::*;
use crate::hash::hash_pair;

fn location(datacenter: &str, rack: &str) -> NodeLocation {
    NodeLocation {
        datacenter: datacenter.to_string(),
        rack: rack.to_string(),
        weight: 1,
    }
}

fn ring_of(nodes: u32, vnodes: u32) -> Ring {
    let mut ring = Ring::new(vnodes);
    for i in 0..nodes {
        ring.add_node(NodeId(i), location("dc1", &format!("r{}", i % 3)))
            .expect("fresh node");
    }
    ring
}

fn key(i: u32) -> Vec<u8> {
    format!("user:{i:08}").into_bytes()
}

const KEYS: u32 = 200_000;

fn primary_counts(ring: &Ring) -> BTreeMap<NodeId, u32> {
    let mut counts = BTreeMap::new();
    for i in 0..KEYS {
        let owner = ring.preference_list(&key(i), 1)[0];
        *counts.entry(owner).or_insert(0) += 1;
    }
    counts
}

#[test]
fn ownership_within_fifteen_percent_of_even() {
    for vnodes in [64, 128, 256] {
        let ring = ring_of(10, vnodes);
        let counts = primary_counts(&ring);
        assert_eq!(counts.len(), 10);
        let even = f64::from(KEYS) / 10.0;
        for (node, count) in &counts {
            let deviation = (f64::from(*count) - even) / even;
            assert!(
                deviation.abs() <= 0.15,
                "{node} owns {count} keys, {:.1}% off even with {vnodes} vnodes",
                deviation * 100.0
            );
        }
        for (node, share) in ring.ownership() {
            assert!(
                (share - 0.1).abs() <= 0.015,
                "{node} owns {share} of the space"
            );
        }
    }
}

#[test]
fn adding_one_node_to_ten_moves_about_one_eleventh() {
    let before = ring_of(10, 64);
    let mut after = before.clone();
    after
        .add_node(NodeId(10), location("dc1", "r1"))
        .expect("fresh node");
    let mut moved = 0u32;
    for i in 0..KEYS {
        let old = before.preference_list(&key(i), 1)[0];
        let new = after.preference_list(&key(i), 1)[0];
        if old != new {
            assert_eq!(new, NodeId(10), "a key moved between two old nodes");
            moved += 1;
        }
    }
    let fraction = f64::from(moved) / f64::from(KEYS);
    let ideal = 1.0 / 11.0;
    assert!(
        (fraction - ideal).abs() <= ideal * 0.15,
        "moved {fraction:.4} of keys, ideal {ideal:.4}"
    );
    // With three replicas: every replica copy that moves must move to the new node, and the
    // copies moved stay within 1.25x of the ideal 1/11 of all copies.
    let mut copies_moved = 0u32;
    for i in 0..KEYS {
        let old = before.preference_list(&key(i), 3);
        let new = after.preference_list(&key(i), 3);
        for replica in new.iter().filter(|r| !old.contains(r)) {
            assert_eq!(*replica, NodeId(10), "a copy moved between two old nodes");
            copies_moved += 1;
        }
    }
    let copies_fraction = f64::from(copies_moved) / f64::from(3 * KEYS);
    assert!(
        copies_fraction <= ideal * 1.25,
        "moved {copies_fraction:.4} of replica copies, ideal {ideal:.4}"
    );
    println!(
        "10 -> 11 nodes: {moved} of {KEYS} primaries moved ({:.3}x ideal); {copies_moved} of {} replica copies (n=3) moved ({:.3}x ideal)",
        fraction / ideal,
        3 * KEYS,
        copies_fraction / ideal
    );
}

#[test]
fn weight_two_owns_twice_as_much() {
    let mut ring = ring_of(4, 64);
    let mut heavy = location("dc1", "r0");
    heavy.weight = 2;
    ring.add_node(NodeId(9), heavy).expect("fresh node");
    let shares = ring.ownership();
    let light = shares[&NodeId(0)];
    assert!((shares[&NodeId(9)] / light - 2.0).abs() < 0.2, "{shares:?}");
}

#[test]
fn preference_list_uses_distinct_racks() {
    let ring = ring_of(6, 64);
    for i in 0..2000 {
        let replicas = ring.preference_list(&key(i), 3);
        let mut racks: Vec<&str> = replicas
            .iter()
            .map(|id| ring.members()[id.0 as usize].location.rack.as_str())
            .collect();
        racks.sort_unstable();
        racks.dedup();
        assert_eq!(racks.len(), 3, "key {i} replicas {replicas:?}");
    }
}

#[test]
fn preference_list_spreads_datacenters_first() {
    let mut ring = Ring::new(64);
    for i in 0..6u32 {
        let dc = if i < 3 { "east" } else { "west" };
        ring.add_node(NodeId(i), location(dc, &format!("r{i}")))
            .expect("fresh node");
    }
    for i in 0..2000 {
        let replicas = ring.preference_list(&key(i), 2);
        let dcs: Vec<&str> = replicas
            .iter()
            .map(|id| ring.members()[id.0 as usize].location.datacenter.as_str())
            .collect();
        assert_ne!(dcs[0], dcs[1], "key {i} replicas {replicas:?}");
        let three = ring.preference_list(&key(i), 3);
        assert_eq!(&three[..2], &replicas[..], "placement is a prefix");
    }
}

#[test]
fn preference_list_is_distinct_and_capped() {
    let ring = ring_of(3, 16);
    let replicas = ring.preference_list(b"k", 5);
    assert_eq!(replicas.len(), 3);
    let mut sorted = replicas.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 3);
    assert!(Ring::new(8).preference_list(b"k", 3).is_empty());
}

#[test]
fn removing_a_node_moves_only_its_keys() {
    let before = ring_of(6, 64);
    let mut after = before.clone();
    after.remove_node(NodeId(3)).expect("member");
    assert_eq!(
        after.remove_node(NodeId(3)),
        Err(RingError::NotMember(NodeId(3)))
    );
    for i in 0..5000 {
        let old = before.preference_list(&key(i), 1)[0];
        let new = after.preference_list(&key(i), 1)[0];
        if old != NodeId(3) {
            assert_eq!(old, new);
        }
    }
}

#[test]
fn placement_snapshot() {
    let ring = ring_of(5, 64);
    let placements: Vec<String> = (0..12)
        .map(|i| {
            let replicas: Vec<String> = ring
                .preference_list(&key(i), 3)
                .iter()
                .map(ToString::to_string)
                .collect();
            format!(
                "{} -> {}",
                String::from_utf8_lossy(&key(i)),
                replicas.join(",")
            )
        })
        .collect();
    insta::assert_snapshot!(placements.join("\n"));
}

#[test]
fn replicas_per_datacenter_place_exactly_the_configured_counts() {
    let mut ring = Ring::new(64);
    for i in 0..9 {
        let datacenter = ["dc1", "dc2", "dc3"][i as usize % 3];
        ring.add_node(NodeId(i), location(datacenter, &format!("r{i}")))
            .expect("fresh node");
    }
    // dc3 is left out: it holds no replica.
    ring.set_datacenter_replicas(&[("dc1".into(), 3), ("dc2".into(), 2)]);
    let datacenter_of = |ring: &Ring, id: NodeId| ring.datacenter_of(id).map(str::to_string);
    for i in 0..20_000 {
        let replicas = ring.preference_list(&key(i), 5);
        assert_eq!(replicas.len(), 5);
        let count = |dc: &str| {
            replicas
                .iter()
                .filter(|&&r| datacenter_of(&ring, r).as_deref() == Some(dc))
                .count()
        };
        assert_eq!((count("dc1"), count("dc2"), count("dc3")), (3, 2, 0));
        // The whole walk (fallbacks) still reaches every member, each once.
        let mut walk = ring.preference_list(&key(i), 9);
        walk.sort();
        walk.dedup();
        assert_eq!(walk.len(), 9);
    }
    // Clearing the policy restores the even spread over all three datacenters.
    ring.set_datacenter_replicas(&[]);
    let replicas = ring.preference_list(&key(1), 3);
    let mut dcs: Vec<String> = replicas
        .iter()
        .filter_map(|&r| datacenter_of(&ring, r))
        .collect();
    dcs.sort();
    dcs.dedup();
    assert_eq!(dcs.len(), 3);
}

/// The placement policy as stated: `choose_replicas` over the complete clockwise walk of
/// distinct members (what `Placer` must reproduce without building the whole walk).
fn reference_preference_list(ring: &Ring, hash: u64, n: usize) -> Vec<NodeId> {
    let mut walk: Vec<u32> = Vec::new();
    if !ring.data.tokens.is_empty() {
        let start = ring.data.tokens.partition_point(|&(t, _)| t < hash);
        for step in 0..ring.data.tokens.len() {
            let (_, member) = ring.data.tokens[(start + step) % ring.data.tokens.len()];
            if !walk.contains(&member) {
                walk.push(member);
            }
        }
    }
    choose_replicas(
        &walk,
        &ring.data.datacenter_of,
        &ring.data.rack_of,
        n,
        ring.data.quota.as_deref(),
    )
    .into_iter()
    .map(|m| ring.data.members[m as usize].id)
    .collect()
}

#[test]
fn placer_matches_the_policy_over_the_whole_walk() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let mut lookups = 0;
    for case in 0..120 {
        let nodes = rng.gen_range(1..40u32);
        let vnodes = [1, 2, 4, 16][case % 4];
        let datacenters = rng.gen_range(1..4u32);
        let racks = rng.gen_range(1..6u32);
        let mut ring = Ring::new(vnodes);
        for i in 0..nodes {
            let mut at = location(
                &format!("dc{}", rng.gen_range(0..datacenters)),
                &format!("r{}", rng.gen_range(0..racks)),
            );
            at.weight = rng.gen_range(1..4);
            ring.add_node(NodeId(rng.gen_range(0..1000)), at).ok();
            // Some departures, so member indices shift under the tokens.
            if i % 7 == 6 {
                let id = ring.members()[rng.gen_range(0..ring.len())].id;
                ring.remove_node(id).expect("a member");
            }
        }
        if case % 3 == 0 {
            let quota: Vec<(String, u8)> = (0..datacenters)
                .map(|d| (format!("dc{d}"), rng.gen_range(0..3)))
                .collect();
            ring.set_datacenter_replicas(&quota);
        }
        let mut placer = Placer::new(&ring);
        for _ in 0..60 {
            let hash = rng.gen::<u64>();
            let n = rng.gen_range(0..ring.len() + 3);
            let expected = reference_preference_list(&ring, hash, n);
            assert_eq!(
                placer.preference_list_for_hash(hash, n),
                expected,
                "case {case}"
            );
            assert_eq!(
                ring.preference_list_for_hash(hash, n),
                expected,
                "case {case}"
            );
            lookups += 1;
        }
        for range in 0..u32::try_from(ring.range_count()).expect("small") {
            let n = 3;
            let token = ring.data.tokens[range as usize].0;
            assert_eq!(
                placer.range_replicas(range, n),
                reference_preference_list(&ring, token, n)
            );
        }
    }
    assert_eq!(lookups, 120 * 60);
}

/// Token allocation as first written: a scan of every member for the donor and of every token
/// for its largest range, per vnode. `tokens::allocate` must choose the same tokens.
fn reference_allocate(ring: &Ring, id: NodeId, weight: u32, vnodes: u32) -> Vec<u64> {
    if ring.data.tokens.is_empty() {
        // First node: evenly spaced, rotated by a per-node offset.
        let step = tokens::RING_SPACE / u128::from(vnodes);
        let offset = u128::from(hash_pair(u64::from(id.0), 0));
        return (0..u128::from(vnodes))
            .map(|i| ((offset + i * step) % tokens::RING_SPACE) as u64)
            .collect();
    }
    let total_weight: u128 = ring
        .data
        .members
        .iter()
        .map(|m| u128::from(m.location.weight))
        .sum::<u128>()
        + u128::from(weight);
    let target_of = |w: u32| tokens::RING_SPACE * u128::from(w) / total_weight;
    let mut owned = tokens::owned_space(ring);
    // Working copy of (token, owner) where the new node is index `members.len()`.
    let new_owner = u32::try_from(ring.data.members.len()).unwrap_or(u32::MAX);
    let mut tokens: Vec<(u64, u32)> = ring.data.tokens.clone();
    let mut chosen = Vec::with_capacity(vnodes as usize);
    let mut still_wanted = target_of(weight);
    for vnodes_left in (1..=u128::from(vnodes)).rev() {
        let quota = still_wanted / vnodes_left;
        if quota == 0 {
            break;
        }
        // Donor: the member furthest above its target (ties: lowest index, deterministic).
        let donor = (0..ring.data.members.len())
            .max_by_key(|&m| {
                let target = target_of(ring.data.members[m].location.weight);
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
            let len = tokens::range_len(previous, token, count);
            if best.is_none_or(|(l, _)| len > l) {
                best = Some((len, previous));
            }
        }
        let Some((len, start)) = best else { break };
        if len < 2 {
            break;
        }
        let take = quota.min(len - 1);
        let token = ((u128::from(start) + take) % tokens::RING_SPACE) as u64;
        owned[donor] -= take;
        still_wanted = still_wanted.saturating_sub(take);
        chosen.push(token);
        let position = tokens.partition_point(|&(t, _)| t < token);
        tokens.insert(position, (token, new_owner));
    }
    chosen
}

#[test]
fn allocation_matches_the_scanning_allocator() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let mut allocations = 0;
    for case in 0..40 {
        let vnodes = [1, 3, 8, 64][case % 4];
        let mut ring = Ring::new(vnodes);
        for _ in 0..rng.gen_range(1..30) {
            let id = NodeId(rng.gen_range(0..500));
            let weight = rng.gen_range(1..4);
            let expected = reference_allocate(&ring, id, weight, weight * vnodes);
            assert_eq!(
                tokens::allocate(&ring, id, weight, weight * vnodes),
                expected,
                "case {case}"
            );
            allocations += 1;
            let mut at = location("dc1", &format!("r{}", rng.gen_range(0..3)));
            at.weight = weight;
            if ring.add_node(id, at).is_ok() {
                let sorted = ring.data.tokens.windows(2).all(|w| w[0].0 < w[1].0);
                assert!(sorted, "tokens stay sorted and unique");
            }
            if rng.gen_range(0..5) == 0 {
                let id = ring.members()[rng.gen_range(0..ring.len())].id;
                ring.remove_node(id).expect("a member");
            }
        }
    }
    assert!(allocations > 40);
}

/// The remembered lists are the placer's, for every range and for hashes inside ranges, across
/// joins, removals and a datacenter policy change (each of which must forget them), and for a
/// replica count other than the remembered one.
#[test]
fn remembered_preference_lists_match_a_fresh_placement_across_ring_changes() {
    let fresh =
        |ring: &Ring, hash: u64, n: usize| Placer::new(ring).preference_list_for_hash(hash, n);
    let check = |ring: &Ring| {
        for round in 0u32..2 {
            // The second round reads what the first remembered.
            for index in 0..ring.range_count() {
                let token = ring.data.tokens[index].0;
                assert_eq!(
                    ring.range_replicas(index as u32, 3),
                    fresh(ring, token, 3),
                    "range {index}, round {round}"
                );
                let inside = token.wrapping_sub(1 + u64::from(round));
                assert_eq!(
                    ring.preference_list_for_hash(inside, 3),
                    fresh(ring, inside, 3)
                );
            }
            assert_eq!(
                ring.preference_list_for_hash(u64::MAX, 3),
                fresh(ring, u64::MAX, 3)
            );
            assert_eq!(ring.preference_list_for_hash(7, 2), fresh(ring, 7, 2));
        }
    };
    let ring = each_ring_change(&check);
    // A clone and a decoded copy start without the memo and answer the same.
    let copy = ring.clone();
    check(&copy);
    assert_eq!(copy, ring);
}

/// A ring smaller than `n` remembers its short lists as short.
#[test]
fn a_ring_smaller_than_n_remembers_short_lists() {
    let ring = ring_of(2, 4);
    for _ in 0..2 {
        for index in 0..ring.range_count() {
            assert_eq!(ring.range_replicas(index as u32, 3).len(), 2);
        }
    }
    assert!(Ring::new(4).preference_list(b"k", 3).is_empty());
}

#[test]
fn contains_agrees_with_the_member_list_on_dense_and_sparse_rings() {
    let mut ring = ring_of(12, 4);
    let mut held: std::collections::BTreeSet<u32> = (0..12).collect();
    for removed in [0, 5, 6, 11] {
        ring.remove_node(NodeId(removed)).expect("a member");
        held.remove(&removed);
        for joined in [20 + removed, 40 + removed] {
            ring.add_node(NodeId(joined), location("dc1", "r0"))
                .expect("fresh node");
            held.insert(joined);
        }
        for id in (0..50).chain([u32::MAX - 1, u32::MAX]) {
            assert_eq!(ring.contains(NodeId(id)), held.contains(&id), "n{id}");
        }
    }
    assert!(!Ring::new(4).contains(NodeId(0)));
}

/// The index of each node's ranges answers as filtering every range's replicas does, for the
/// count it was built for and for another, across ring changes and on rings smaller than `n`.
#[test]
fn ranges_replicated_by_a_node_match_the_filtered_walk() {
    let walk = |ring: &Ring, node: NodeId, n: usize| -> Vec<(u32, Vec<NodeId>)> {
        ring.every_range_replicas(n)
            .filter(|(_, replicas)| replicas.contains(&node))
            .collect()
    };
    let check = |ring: &Ring| {
        for n in [3, 2, 3] {
            for id in 0..9 {
                let node = NodeId(id);
                assert_eq!(
                    ring.ranges_replicated_by(node, n),
                    walk(ring, node, n),
                    "n{id}, {n} replicas"
                );
            }
        }
    };
    let ring = each_ring_change(&check);
    check(&ring.clone());
}

/// Runs `check` on a ring after each kind of change (joins in another datacenter, a removal, a
/// per-datacenter replica policy) and returns the last ring.
fn each_ring_change(check: &impl Fn(&Ring)) -> Ring {
    let mut ring = ring_of(2, 8);
    check(&ring);
    for id in 2..7 {
        ring.add_node(NodeId(id), location("dc2", &format!("r{id}")))
            .expect("fresh node");
        check(&ring);
    }
    ring.remove_node(NodeId(0)).expect("member");
    check(&ring);
    ring.set_datacenter_replicas(&[("dc1".to_string(), 1), ("dc2".to_string(), 2)]);
    check(&ring);
    ring
}
