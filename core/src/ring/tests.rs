use super::*;

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
