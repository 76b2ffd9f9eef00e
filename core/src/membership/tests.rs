use super::harness::*;
use super::*;
use crate::ring::{Member, NodeLocation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

fn config() -> MembershipConfig {
    MembershipConfig {
        vnodes_per_node: 8,
        ..MembershipConfig::default()
    }
}

fn cluster(nodes: usize, seed: u64, network: NetworkModel) -> Harness {
    Harness::new(nodes, seed, config(), network).expect("valid configuration")
}

fn lossy() -> NetworkModel {
    NetworkModel {
        latency_ms: (1, 80),
        drop: 0.2,
        duplicate: 0.2,
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn no_status_changes(h: &Harness) -> bool {
    !h.events
        .iter()
        .any(|e| matches!(e.event, MembershipEvent::StatusChanged { .. }))
}

#[test]
fn default_config_is_valid_and_errors_name_the_field() {
    assert_eq!(MembershipConfig::default().validate(), Ok(()));
    let cases: Vec<(MembershipConfig, &str)> = vec![
        (
            MembershipConfig {
                gossip_interval_ms: 0,
                ..config()
            },
            "gossip_interval_ms",
        ),
        (
            MembershipConfig {
                fanout: 0,
                ..config()
            },
            "fanout",
        ),
        (
            MembershipConfig {
                suspect_after_ms: 200,
                ..config()
            },
            "suspect_after_ms",
        ),
        (
            MembershipConfig {
                down_after_ms: 0,
                ..config()
            },
            "down_after_ms",
        ),
        (
            MembershipConfig {
                members_max: 0,
                ..config()
            },
            "members_max",
        ),
        (
            MembershipConfig {
                vnodes_per_node: 0,
                ..config()
            },
            "vnodes_per_node",
        ),
    ];
    for (config, field) in cases {
        assert_eq!(config.validate().map_err(|e| e.field), Err(field));
    }
}

#[test]
fn incarnations_converge_without_false_suspicion() {
    let mut h = cluster(20, 1, NetworkModel::default());
    h.run_for(Duration::from_secs(10));
    for observer in 0..20 {
        let m = h.machine(observer).expect("running");
        assert_eq!(m.alive_members().len(), 20);
        for node in (0..20).filter(|&node| node != observer) {
            // Every node announced its incarnation (1) at start; the announcements and the
            // push-pulls reached everyone.
            let seen = m.member(node_id(node)).expect("known").incarnation;
            assert_eq!(seen, 1, "{observer} sees {node} at incarnation {seen}");
        }
    }
    assert!(no_status_changes(&h), "a healthy cluster suspected someone");
    // Steady state: every node probes once per round, so every node was probed.
    let stats = h.machine(0).expect("running").stats();
    assert!(
        stats.pings_sent >= 99 && stats.probes_failed == 0,
        "{stats:?}"
    );
}

#[test]
fn crashed_node_becomes_suspect_then_down_everywhere() {
    for network in [NetworkModel::default(), lossy()] {
        let mut h = cluster(12, 7, network);
        h.run_for(Duration::from_secs(3));
        h.crash(5);
        let crashed_at = h.now();
        let down = h
            .run_until_true(Duration::from_secs(30), |h| {
                h.all_see(5, MemberStatus::Down)
            })
            .expect("every node judged the crashed node down");
        let took = down.saturating_duration_since(crashed_at);
        let config = config();
        if network == NetworkModel::default() {
            // Without loss nobody suspects a live member: the first failed probe was sent at
            // most a round trip before the crash.
            assert!(took >= config.down_after_total() - ms(10), "took {took:?}");
        }
        assert!(
            took <= config.down_after_total() + ms(2_000),
            "took {took:?}"
        );
        for observer in h.running() {
            // Since the crash: Suspect then Down, or straight to Down when the `Down` claim
            // arrived first (or the lossy network had it suspected already).
            let seen: Vec<_> = h
                .events
                .iter()
                .filter(|e| e.at >= crashed_at && e.observer == node_id(observer))
                .filter_map(|e| match e.event {
                    MembershipEvent::StatusChanged { node, from, to } if node == node_id(5) => {
                        Some((from, to))
                    }
                    _ => None,
                })
                .collect();
            let via_suspect = vec![
                (MemberStatus::Alive, MemberStatus::Suspect),
                (MemberStatus::Suspect, MemberStatus::Down),
            ];
            let direct = vec![(MemberStatus::Alive, MemberStatus::Down)];
            let suspected_before = vec![(MemberStatus::Suspect, MemberStatus::Down)];
            assert!(
                seen == via_suspect || seen == direct || seen == suspected_before,
                "observer {observer}: {seen:?}"
            );
            let m = h.machine(observer).expect("running");
            assert!(!m.alive_members().contains(&node_id(5)));
        }
    }
}

#[test]
fn restarted_node_is_alive_again_everywhere() {
    let mut h = cluster(12, 8, lossy());
    h.run_for(Duration::from_secs(2));
    h.crash(3);
    h.run_until_true(Duration::from_secs(30), |h| {
        h.all_see(3, MemberStatus::Down)
    })
    .expect("down everywhere");
    assert!(h.restart(3));
    h.run_until_true(Duration::from_secs(5), |h| {
        h.all_see(3, MemberStatus::Alive)
    })
    .expect("alive everywhere after the restart");
    // The restart's incarnation (2), or a later one if the lossy network made someone suspect
    // the restarted node and it refuted.
    let seen = h.machine(0).and_then(|m| m.member(node_id(3)));
    let own = h.machine(3).map(Membership::incarnation);
    assert!(
        seen.as_ref().is_some_and(|v| v.incarnation >= 2),
        "{seen:?}"
    );
    assert_eq!(seen.map(|v| v.incarnation), own);
}

#[test]
fn restart_without_a_persisted_incarnation_refutes_the_old_one() {
    let mut h = cluster(8, 9, NetworkModel::default());
    h.run_for(Duration::from_secs(2));
    h.crash(2);
    h.run_until_true(Duration::from_secs(30), |h| {
        h.all_see(2, MemberStatus::Down)
    })
    .expect("down everywhere");
    // Same incarnation as before: peers hold it `Down` at that incarnation, which beats it.
    assert!(h.restart_with(2, 1, initial_ring(8, &config())));
    h.run_until_true(Duration::from_secs(5), |h| {
        h.all_see(2, MemberStatus::Alive)
    })
    .expect("alive everywhere after refutation");
    let m = h.machine(2).expect("running");
    assert!(m.incarnation() >= 2);
    assert!(m.stats().refutations >= 1);
    assert!(h.events.iter().any(|e| e.observer == node_id(2)
        && matches!(e.event, MembershipEvent::IncarnationChanged { .. })));
}

#[test]
fn join_on_one_node_reaches_every_node_including_the_newcomer() {
    let mut h = cluster(10, 11, lossy());
    h.run_for(Duration::from_secs(2));
    // The newcomer starts with an empty ring and knows one seed.
    let mut newcomer = config();
    newcomer.seeds = vec![node_id(4)];
    let empty = RingLog {
        vnodes_per_node: newcomer.vnodes_per_node,
        changes: Vec::new(),
    };
    assert!(h.start(10, newcomer, 1, empty));
    h.run_for(Duration::from_secs(1));
    let now = h.now();
    let version = h
        .machine_mut(0)
        .expect("running")
        .join(now, member(10))
        .expect("join accepted");
    h.drain(0);
    let converged = |h: &Harness| {
        h.running().iter().all(|&i| {
            h.machine(i)
                .is_some_and(|m| m.ring_version() == version && m.ring().contains(node_id(10)))
        })
    };
    h.run_until_true(Duration::from_secs(10), converged)
        .expect("every node adopted the new ring");
    let reference = h.machine(0).expect("running").ring().clone();
    for i in h.running() {
        assert_eq!(h.machine(i).expect("running").ring(), &reference);
    }
    h.run_until_true(Duration::from_secs(5), |h| {
        h.all_see(10, MemberStatus::Alive)
    })
    .expect("newcomer alive everywhere");
}

#[test]
fn concurrent_joins_converge_on_one_ring_and_the_loser_is_reported() {
    let mut h = cluster(8, 12, NetworkModel::default());
    h.run_for(Duration::from_secs(1));
    let now = h.now();
    let a = h
        .machine_mut(1)
        .expect("running")
        .join(now, member(20))
        .expect("ok");
    let b = h
        .machine_mut(6)
        .expect("running")
        .join(now, member(21))
        .expect("ok");
    h.drain(1);
    h.drain(6);
    assert_eq!(a.changes, b.changes);
    assert_ne!(a, b);
    let winner = a.max(b);
    h.run_until_true(Duration::from_secs(10), |h| {
        h.running()
            .iter()
            .all(|&i| h.machine(i).is_some_and(|m| m.ring_version() == winner))
    })
    .expect("one ring everywhere");
    let (loser_node, lost) = if winner == a { (6, 21) } else { (1, 20) };
    assert!(h.events.iter().any(|e| e.observer == node_id(loser_node)
        && e.event
            == MembershipEvent::RingChangeDiscarded {
                change: RingChange::Join(member(lost))
            }));
    // The operator reissues the lost join; both are then members everywhere.
    let now = h.now();
    let v = h
        .machine_mut(loser_node)
        .expect("running")
        .join(now, member(lost))
        .expect("ok");
    h.drain(loser_node);
    h.run_until_true(Duration::from_secs(10), |h| {
        h.running()
            .iter()
            .all(|&i| h.machine(i).is_some_and(|m| m.ring_version() == v))
    })
    .expect("reissued join everywhere");
    let ring = h.machine(0).expect("running").ring().clone();
    assert!(ring.contains(node_id(20)) && ring.contains(node_id(21)));
}

#[test]
fn leave_marks_left_everywhere_and_remove_needs_a_down_node() {
    let mut h = cluster(8, 13, lossy());
    h.run_for(Duration::from_secs(2));
    let now = h.now();
    // Removing a live node is refused.
    assert!(matches!(
        h.machine_mut(0).expect("running").remove(now, node_id(3)),
        Err(MembershipError::NotDown { .. })
    ));
    let v = h
        .machine_mut(0)
        .expect("running")
        .leave(now, node_id(2))
        .expect("ok");
    h.drain(0);
    h.run_until_true(Duration::from_secs(10), |h| {
        h.running()
            .iter()
            .all(|&i| h.machine(i).is_some_and(|m| m.ring_version() == v))
    })
    .expect("leave everywhere");
    for i in h.running() {
        let m = h.machine(i).expect("running");
        assert_eq!(m.status(node_id(2)), Some(MemberStatus::Left));
        assert!(!m.ring().contains(node_id(2)));
    }
    // Node 5 dies; once it is down at node 0, the operator removes it.
    h.crash(5);
    h.run_until_true(Duration::from_secs(30), |h| {
        h.machine(0).and_then(|m| m.status(node_id(5))) == Some(MemberStatus::Down)
    })
    .expect("down at node 0");
    let now = h.now();
    let v = h
        .machine_mut(0)
        .expect("running")
        .remove(now, node_id(5))
        .expect("ok");
    h.drain(0);
    h.run_until_true(Duration::from_secs(10), |h| {
        h.running()
            .iter()
            .all(|&i| h.machine(i).is_some_and(|m| m.ring_version() == v))
    })
    .expect("remove everywhere");
    h.run_for(Duration::from_secs(5));
    for i in h.running() {
        let m = h.machine(i).expect("running");
        assert_eq!(m.status(node_id(5)), Some(MemberStatus::Left));
        assert_eq!(m.ring().len(), 6);
        assert_eq!(m.alive_members().len(), 6);
    }
}

#[test]
fn a_removed_node_that_comes_back_does_not_rejoin_the_ring() {
    // An operator removes dead node 4; then its old process starts again from state that predates
    // the removal (the ring it knew still lists it). The cluster must keep it out, and it must
    // learn the newer ring rather than spread its older one.
    let mut h = cluster(6, 21, lossy());
    h.run_for(Duration::from_secs(2));
    h.crash(4);
    h.run_until_true(Duration::from_secs(30), |h| {
        h.machine(0).and_then(|m| m.status(node_id(4))) == Some(MemberStatus::Down)
    })
    .expect("down at node 0");
    let now = h.now();
    let v = h
        .machine_mut(0)
        .expect("running")
        .remove(now, node_id(4))
        .expect("ok");
    h.drain(0);
    h.run_until_true(Duration::from_secs(10), |h| {
        h.running()
            .iter()
            .all(|&i| h.machine(i).is_some_and(|m| m.ring_version() == v))
    })
    .expect("remove everywhere");
    assert!(h.restart(4));
    assert!(h.machine(4).is_some_and(|m| m.ring().contains(node_id(4))));
    h.run_until_true(Duration::from_secs(10), |h| {
        h.machine(4).is_some_and(|m| m.ring_version() == v)
    })
    .expect("the removed node learns the newer ring");
    h.run_for(Duration::from_secs(5));
    for i in h.running() {
        let m = h.machine(i).expect("running");
        assert_eq!(m.ring_version(), v, "node {i}");
        assert!(!m.ring().contains(node_id(4)), "node {i}");
        if i != 4 {
            assert_eq!(m.status(node_id(4)), Some(MemberStatus::Left), "node {i}");
        }
    }
}

#[test]
fn duplicated_reordered_and_lost_messages_are_tolerated() {
    let network = NetworkModel {
        latency_ms: (1, 400),
        drop: 0.3,
        duplicate: 0.5,
    };
    let mut h = cluster(16, 14, network);
    h.run_for(Duration::from_secs(3));
    h.crash(9);
    h.run_until_true(Duration::from_secs(30), |h| {
        h.all_see(9, MemberStatus::Down)
    })
    .expect("down everywhere despite loss");
    assert!(h.restart(9));
    h.run_until_true(Duration::from_secs(10), |h| {
        h.all_see(9, MemberStatus::Alive)
    })
    .expect("alive everywhere despite loss");
    // Stale claims (an older incarnation, whatever its liveness), replayed late and many
    // times, change nothing: merges keep the larger claim.
    let mut m = h.machine(0).expect("running").clone();
    let before: Vec<_> = m
        .members()
        .into_iter()
        .map(|v| (v.node, v.incarnation, v.status))
        .collect();
    let old = GossipMessage::State {
        entries: before
            .iter()
            .filter(|&&(node, incarnation, _)| node != node_id(0) && incarnation > 0)
            .map(|&(node, incarnation, _)| GossipEntry {
                node,
                incarnation: incarnation - 1,
                liveness: Liveness::Down,
            })
            .collect(),
        ring_version: RingVersion::default(),
        ring: None,
        reply_wanted: false,
    };
    for _ in 0..3 {
        m.handle_message(h.now(), node_id(1), old.clone());
        m.check_invariants();
    }
    let after: Vec<_> = m
        .members()
        .into_iter()
        .map(|v| (v.node, v.incarnation, v.status))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn partitioned_halves_find_each_other_after_heal() {
    let mut h = cluster(10, 15, NetworkModel::default());
    h.run_for(Duration::from_secs(2));
    h.partition(&[0, 1, 2, 3, 4]);
    h.run_until_true(Duration::from_secs(30), |h| {
        (0..5).all(|a| {
            (5..10).all(|b| {
                h.machine(a).and_then(|m| m.status(node_id(b))) == Some(MemberStatus::Down)
                    && h.machine(b).and_then(|m| m.status(node_id(a))) == Some(MemberStatus::Down)
            })
        })
    })
    .expect("each side judges the other down");
    h.heal();
    h.run_until_true(Duration::from_secs(10), |h| {
        (0..10).all(|n| h.all_see(n, MemberStatus::Alive))
    })
    .expect("everyone alive again after heal");
}

#[test]
fn a_local_pause_is_not_blamed_on_peers() {
    let config = config();
    let ring = initial_ring(3, &config);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut m = Membership::new(config.clone(), node_id(0), 1, ring, Instant::ZERO).expect("valid");
    m.handle_timeout(Instant::ZERO, &mut rng);
    while m.poll_output().is_some() {}
    // The driver stalls for ten seconds, then ticks: no peer is suspected on that evidence alone.
    let resumed = Instant::ZERO.saturating_add(Duration::from_secs(10));
    m.handle_timeout(resumed, &mut rng);
    m.check_invariants();
    assert_eq!(m.stats().local_pauses, 1);
    assert_eq!(m.alive_members().len(), 3);
    // But continued silence after the pause is: each peer is probed within a round of the
    // resumption (two peers, one probe per round), suspected when its probe fails and down
    // after the suspicion timeout.
    let later = resumed
        .saturating_add(config.down_after_total())
        .saturating_add(config.gossip_interval());
    let mut t = resumed;
    while t < later {
        t = m.poll_timeout().expect("timer").min(later);
        m.handle_timeout(t, &mut rng);
        m.check_invariants();
    }
    assert_eq!(m.alive_members(), vec![node_id(0)]);
    assert_eq!(m.status(node_id(1)), Some(MemberStatus::Down));
}

#[expect(
    clippy::too_many_lines,
    reason = "a table of malformed inputs, each checked the same way"
)]
#[test]
fn untrusted_input_is_refused_never_panics() {
    let config = MembershipConfig {
        members_max: 8,
        ring_changes_max: 4,
        ..config()
    };
    let ring = initial_ring(3, &config);
    let mut m =
        Membership::new(config.clone(), node_id(0), 1, ring.clone(), Instant::ZERO).expect("valid");
    let now = Instant::ZERO;
    // Too many entries: refused whole.
    let flood = GossipMessage::State {
        entries: (0..100)
            .map(|i| GossipEntry {
                node: NodeId(1000 + i),
                incarnation: 1,
                liveness: Liveness::Alive,
            })
            .collect(),
        ring_version: RingVersion::default(),
        ring: None,
        reply_wanted: true,
    };
    m.handle_message(now, node_id(1), flood);
    assert_eq!(m.stats().messages_refused, 1);
    // More piggybacked updates than any sender puts on a probe: refused whole, unanswered.
    let crowded = GossipMessage::Ping {
        probe: 1,
        ring_version: RingVersion::default(),
        updates: (0..=PIGGYBACK_UPDATES_MAX as u32)
            .map(|i| GossipEntry {
                node: NodeId(i % 3),
                incarnation: 1,
                liveness: Liveness::Alive,
            })
            .collect(),
    };
    m.handle_message(now, node_id(1), crowded);
    assert_eq!(m.stats().messages_refused, 2);
    assert_eq!(m.poll_output(), None, "a refused ping is not answered");
    // Within the message limit but over the table: the extra entries are dropped and counted.
    let many = GossipMessage::Gossip {
        updates: (0..8)
            .map(|i| GossipEntry {
                node: NodeId(1000 + i),
                incarnation: 1,
                liveness: Liveness::Alive,
            })
            .collect(),
        ring_version: RingVersion::default(),
    };
    m.handle_message(now, node_id(1), many);
    m.check_invariants();
    assert!(m.stats().entries_dropped > 0);
    assert!(m.members().len() <= config.members_max);
    // Bad ring logs claiming a huge version: refused, the ring is unchanged.
    let claim = RingVersion {
        changes: u64::MAX,
        fingerprint: 0,
    };
    let bad_logs = vec![
        RingLog {
            vnodes_per_node: 99,
            changes: ring.changes.clone(),
        },
        RingLog {
            vnodes_per_node: config.vnodes_per_node,
            changes: vec![RingChange::Remove(NodeId(77))],
        },
        RingLog {
            vnodes_per_node: config.vnodes_per_node,
            changes: vec![RingChange::Join(member(1)); 2],
        },
        RingLog {
            vnodes_per_node: config.vnodes_per_node,
            changes: (0..5).map(|i| RingChange::Join(member(i))).collect(),
        },
        RingLog {
            vnodes_per_node: config.vnodes_per_node,
            changes: vec![RingChange::Join(Member {
                id: NodeId(9),
                location: NodeLocation {
                    datacenter: "x".repeat(1000),
                    rack: String::new(),
                    weight: 1,
                },
            })],
        },
        RingLog {
            vnodes_per_node: config.vnodes_per_node,
            changes: vec![RingChange::Join(Member {
                id: NodeId(9),
                location: NodeLocation {
                    datacenter: String::new(),
                    rack: String::new(),
                    weight: u32::MAX,
                },
            })],
        },
    ];
    let before = m.ring_version();
    for log in bad_logs {
        m.handle_message(
            now,
            node_id(1),
            GossipMessage::State {
                entries: Vec::new(),
                ring_version: claim,
                ring: Some(log),
                reply_wanted: false,
            },
        );
        m.check_invariants();
    }
    assert_eq!(m.ring_version(), before);
    assert_eq!(m.stats().rings_refused, 6);
    // Random and truncated bytes never decode into a panic.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let valid = crate::codec::encode_value(&GossipMessage::State {
        entries: vec![GossipEntry {
            node: NodeId(1),
            incarnation: 2,
            liveness: Liveness::Suspect,
        }],
        ring_version: RingVersion::default(),
        ring: Some(ring),
        reply_wanted: true,
    });
    for cut in 0..valid.len() {
        assert!(crate::codec::decode_value::<GossipMessage>(&valid[..cut]).is_err());
    }
    for _ in 0..2_000 {
        let len = rng.gen_range(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Ok(message) = crate::codec::decode_value::<GossipMessage>(&bytes) {
            m.handle_message(now, node_id(2), message);
            m.check_invariants();
        }
    }
}

#[test]
fn the_widest_message_stays_within_the_bound() {
    let config = MembershipConfig {
        members_max: 200,
        ring_changes_max: 50,
        location_name_bytes_max: 40,
        ..config()
    };
    assert_eq!(config.validate(), Ok(()));
    let widest = GossipMessage::State {
        reply_wanted: true,
        entries: (0..config.members_max)
            .map(|_| GossipEntry {
                node: NodeId(u32::MAX),
                incarnation: u64::MAX,
                liveness: Liveness::Down,
            })
            .collect(),
        ring_version: RingVersion {
            changes: u64::MAX,
            fingerprint: u64::MAX,
        },
        ring: Some(RingLog {
            vnodes_per_node: u32::MAX,
            changes: (0..config.ring_changes_max)
                .map(|_| {
                    RingChange::Join(Member {
                        id: NodeId(u32::MAX),
                        location: NodeLocation {
                            datacenter: "d".repeat(config.location_name_bytes_max),
                            rack: "r".repeat(config.location_name_bytes_max),
                            weight: u32::MAX,
                        },
                    })
                })
                .collect(),
        }),
    };
    assert!(crate::codec::encode_value(&widest).len() <= config.message_bytes_max());
    let too_wide = MembershipConfig {
        ring_changes_max: 65_536,
        location_name_bytes_max: 1_024,
        ..config
    };
    assert_eq!(
        too_wide.validate().map_err(|e| e.field),
        Err("ring_changes_max")
    );
}

#[test]
fn same_seed_same_trace() {
    let run = |seed| {
        let mut h = cluster(10, seed, lossy());
        h.run_for(Duration::from_secs(2));
        h.crash(4);
        h.run_for(Duration::from_secs(5));
        assert!(h.restart(4));
        h.run_for(Duration::from_secs(2));
        (h.events.clone(), h.messages_sent, h.bytes_sent)
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22), "another seed, another trace");
}

/// The measurement asked for by the failure-handling issue. Run with
/// `cargo test -p ringkv-core --release membership::tests::detection_table -- --nocapture`.
#[test]
fn detection_table() {
    let config = MembershipConfig::default();
    println!(
        "gossip_interval_ms {} fanout {} suspect_after_ms {} down_after_ms {} (latency 1-5 ms, no loss)",
        config.gossip_interval_ms, config.fanout, config.suspect_after_ms, config.down_after_ms
    );
    println!("{}", DetectionReport::HEADER);
    for nodes in [5, 20, 100] {
        let report = measure_detection(nodes, 42, config.clone()).expect("measured");
        println!("{report}");
        let log2 = (nodes as f64).log2();
        // Generous O(log n) bounds: the wait for a probe plus the spread of the `Down` claim,
        // and the spread of a restart.
        assert!(
            report.recovery_rounds <= 2.0 * log2 + 3.0,
            "recovery took {} rounds",
            report.recovery_rounds
        );
        assert!(
            report.crash_spread_rounds <= 2.0 * log2 + 3.0,
            "crash news took {} rounds beyond the timeouts",
            report.crash_spread_rounds
        );
        assert_eq!(report.false_suspicions, 0);
        // Steady state: a ping and an ack per node per round, plus the rare push-pull.
        let per_round =
            report.messages_per_node_per_second * config.gossip_interval_ms as f64 / 1_000.0;
        assert!(per_round <= 2.5, "{per_round} messages per round");
    }
    let network = NetworkModel {
        latency_ms: (1, 50),
        drop: 0.1,
        duplicate: 0.05,
    };
    println!("same, latency 1-50 ms, 10% loss, 5% duplication");
    println!("{}", DetectionReport::HEADER);
    for nodes in [5, 20, 100] {
        let report = measure_detection_on(nodes, 42, config.clone(), network).expect("measured");
        println!("{report}");
        let log2 = (nodes as f64).log2();
        assert!(report.recovery_rounds <= 3.0 * log2 + 5.0);
        assert!(report.crash_spread_rounds <= 3.0 * log2 + 5.0);
        // A lost probe and all its indirect probes make a suspicion now and then; the member
        // refutes it well within the suspicion timeout.
        assert_eq!(report.false_downs, 0);
    }
}

#[test]
fn rebuild_from_a_held_ring_equals_a_replay_from_empty() {
    let config = MembershipConfig {
        ring_changes_max: 12,
        ..config()
    };
    let join = |i: u32| {
        RingChange::Join(Member {
            id: NodeId(i),
            location: NodeLocation {
                datacenter: "dc1".into(),
                rack: format!("r{}", i % 3),
                weight: 1 + i % 2,
            },
        })
    };
    let log = |changes: Vec<RingChange>| RingLog {
        vnodes_per_node: config.vnodes_per_node,
        changes,
    };
    let held = RingState::build(log((0..5).map(join).collect()), &config).expect("valid");
    let candidates = vec![
        // Extensions: one join, a removal and a join, a leave of a member.
        log((0..6).map(join).collect()),
        log((0..5)
            .map(join)
            .chain([RingChange::Remove(NodeId(2)), join(9)])
            .collect()),
        log((0..5)
            .map(join)
            .chain([RingChange::Leave(NodeId(0))])
            .collect()),
        // The held log itself, a shorter one, a diverging one.
        log((0..5).map(join).collect()),
        log((0..3).map(join).collect()),
        log((0..4).map(join).chain([join(7), join(8)]).collect()),
        // Extensions that do not replay: a removal of a non-member, too many changes, another
        // vnode setting.
        log((0..5)
            .map(join)
            .chain([RingChange::Remove(NodeId(42))])
            .collect()),
        log((0..13).map(join).collect()),
        RingLog {
            vnodes_per_node: 3,
            changes: (0..6).map(join).collect(),
        },
    ];
    for candidate in candidates {
        let rebuilt = held.rebuild(candidate.clone(), &config);
        let replayed = RingState::build(candidate.clone(), &config);
        assert_eq!(rebuilt, replayed, "{candidate:?}");
    }
}

/// Client addresses ([`super::addresses`]) reach every node over a lossy network, and a node
/// restarted with a new address (a new incarnation) replaces its old one everywhere.
#[test]
fn client_addresses_converge_and_follow_a_restart() {
    let port = |index: usize, generation: u16| 6000 + 100 * generation + index as u16;
    let address = |index: usize, generation: u16| ClientAddress {
        host: "127.0.0.1".into(),
        port: port(index, generation),
    };
    let nodes = 12;
    let mut h = cluster(nodes, 7, lossy());
    for index in 0..nodes {
        h.machine_mut(index)
            .expect("running")
            .set_client_address(address(index, 0));
    }
    let everyone_knows = |h: &Harness, of: usize, generation: u16| {
        h.running().iter().all(|&i| {
            h.machine(i).and_then(|m| m.client_address(node_id(of)))
                == Some(&address(of, generation))
        })
    };
    let converged = h.run_until_true(ms(10_000), |h| {
        (0..nodes).all(|of| everyone_knows(h, of, 0))
    });
    assert!(converged.is_some(), "addresses did not reach every node");
    h.crash(3);
    h.run_for(ms(500));
    assert!(h.restart(3));
    h.machine_mut(3)
        .expect("restarted")
        .set_client_address(address(3, 1));
    let moved = h.run_until_true(ms(10_000), |h| {
        everyone_knows(h, 3, 1) && (0..nodes).all(|of| of == 3 || everyone_knows(h, of, 0))
    });
    assert!(
        moved.is_some(),
        "the restarted node's new address (and everyone else's, at the restarted node) did not spread"
    );
}

/// BUGGIFY "membership/suspect-late" and "gossip/peer-choice" (sim-only fault points, all live
/// here): suspicion may come up to a round late, but never early, and `Down` still comes within
/// its bound: the three peers are probed in the first three rounds, each probe fails after
/// `suspect_after_ms` (plus at most a round late), the suspicion times out `down_after_ms`
/// later. Every message goes to a member.
#[test]
fn with_fault_points_live_detection_stays_within_its_bound() {
    let config = config();
    let ring = initial_ring(4, &config);
    let suspect = config.suspect_after();
    let down = config
        .down_after_total()
        .saturating_add(config.gossip_interval().saturating_mul(3));
    let mut postponed = 0;
    for seed in 0..64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut m = Membership::new(config.clone(), node_id(0), 1, ring.clone(), Instant::ZERO)
            .expect("ok");
        m.set_fault_points(crate::buggify::FaultPoints::new(seed, true));
        // The peers are silent from the start.
        let mut first_ping = std::collections::BTreeMap::new();
        let mut t = Instant::ZERO;
        let end = Instant::ZERO.saturating_add(down.saturating_mul(2));
        while t <= end {
            m.handle_timeout(t, &mut rng);
            m.check_invariants();
            let silent = t.saturating_duration_since(Instant::ZERO);
            while let Some(output) = m.poll_output() {
                if let MembershipOutput::Send { to, message } = output {
                    assert!(to != node_id(0) && (1..4).any(|i| node_id(i) == to));
                    if matches!(message, GossipMessage::Ping { .. }) {
                        first_ping.entry(to).or_insert(silent);
                    }
                }
            }
            for peer in 1..4 {
                let status = m.status(node_id(peer)).expect("known");
                if silent < suspect {
                    assert_eq!(status, MemberStatus::Alive, "seed {seed}: suspected early");
                } else if silent >= down {
                    assert_eq!(status, MemberStatus::Down, "seed {seed}: down late");
                } else if status == MemberStatus::Alive
                    && first_ping
                        .get(&node_id(peer))
                        .is_some_and(|&sent| silent >= sent + suspect)
                {
                    // The peer's first probe has failed by now: only the fault point holds the
                    // suspicion back.
                    postponed += 1;
                }
            }
            let next = m.poll_timeout().expect("a timer");
            assert!(next > t, "seed {seed}: a due timer left at {t:?}");
            t = next;
        }
    }
    assert!(
        postponed > 0,
        "the suspect-late site never fired in 64 seeds"
    );
}

/// A lone machine of `nodes` members (this node is 0) at time zero, its start outputs drained.
fn lone(nodes: usize) -> (Membership, ChaCha8Rng) {
    let config = config();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut m = Membership::new(
        config.clone(),
        node_id(0),
        1,
        initial_ring(nodes, &config),
        Instant::ZERO,
    )
    .expect("valid");
    m.handle_timeout(Instant::ZERO, &mut rng);
    m.check_invariants();
    (m, rng)
}

fn at(millis: u64) -> Instant {
    Instant::ZERO.saturating_add(ms(millis))
}

/// Drains the outputs into (sends, events).
fn outputs(m: &mut Membership) -> (Vec<(NodeId, GossipMessage)>, Vec<MembershipEvent>) {
    let mut sends = Vec::new();
    let mut events = Vec::new();
    while let Some(output) = m.poll_output() {
        match output {
            MembershipOutput::Send { to, message } => sends.push((to, message)),
            MembershipOutput::Event(event) => events.push(event),
        }
    }
    (sends, events)
}

/// What a machine sent (when, to whom) and reported (when) over a stretch of timers.
type Timeline = (
    Vec<(Instant, NodeId, GossipMessage)>,
    Vec<(Instant, MembershipEvent)>,
);

/// Runs `m`'s timers up to `end`, checking invariants, collecting what it sent and reported.
/// The target and number of the first `Ping` among `sends`.
fn first_ping(sends: &[(NodeId, GossipMessage)]) -> Option<(NodeId, u64)> {
    sends.iter().find_map(|(to, msg)| match msg {
        GossipMessage::Ping { probe, .. } => Some((*to, *probe)),
        _ => None,
    })
}

fn run_timers(m: &mut Membership, rng: &mut ChaCha8Rng, end: Instant) -> Timeline {
    let mut sends = Vec::new();
    let mut events = Vec::new();
    loop {
        let t = m.poll_timeout().expect("a timer");
        if t > end {
            return (sends, events);
        }
        m.handle_timeout(t, rng);
        m.check_invariants();
        let (s, e) = outputs(m);
        sends.extend(s.into_iter().map(|(to, msg)| (t, to, msg)));
        events.extend(e.into_iter().map(|e| (t, e)));
    }
}

/// The probe cycle of one silent member, step by step: a `Ping`, the indirect `PingReq`s half
/// way through `suspect_after_ms`, `Suspect` at its end (spread as an update), `Down` after the
/// suspicion timeout `down_after_ms` (spread too). Members that answer stay `Alive`.
#[test]
fn a_silent_member_is_probed_indirectly_then_suspected_then_down() {
    let (mut m, mut rng) = lone(6);
    let config = config();
    let (first, _) = outputs(&mut m);
    let (victim, number) = first_ping(&first).expect("the first round probes someone");
    let mut t = 0;
    // Every other member answers each of its probes at once.
    let mut reqs = Vec::new();
    let mut suspected_at = None;
    let mut down_at = None;
    let mut down_carried = false;
    while t < 4_000 {
        let next = m.poll_timeout().expect("a timer");
        t = next.saturating_duration_since(Instant::ZERO).as_millis() as u64;
        m.handle_timeout(next, &mut rng);
        m.check_invariants();
        let (sends, events) = outputs(&mut m);
        for (to, msg) in sends {
            down_carried |= msg
                .entries()
                .iter()
                .any(|e| e.node == victim && e.liveness == Liveness::Down);
            match msg {
                GossipMessage::Ping { probe, .. } if to != victim => {
                    let ack = GossipMessage::Ack {
                        probe,
                        ring_version: m.ring_version(),
                        updates: Vec::new(),
                    };
                    m.handle_message(next, to, ack);
                    m.check_invariants();
                }
                GossipMessage::PingReq { probe, target, .. } => {
                    assert_eq!(target, victim, "only the silent one is probed indirectly");
                    assert_ne!(to, victim);
                    if probe == number {
                        reqs.push((t, to));
                    }
                }
                _ => {}
            }
        }
        let _ = outputs(&mut m);
        for event in events {
            match event {
                MembershipEvent::StatusChanged { node, to, .. } if node == victim => {
                    if to == MemberStatus::Suspect && suspected_at.is_none() {
                        suspected_at = Some(t);
                    }
                    if to == MemberStatus::Down {
                        down_at = Some(t);
                    }
                }
                MembershipEvent::StatusChanged { node, .. } => panic!("{node} judged"),
                _ => {}
            }
        }
    }
    let half = config.suspect_after_ms / 2;
    assert_eq!(reqs.len(), config.fanout, "fanout helpers: {reqs:?}");
    assert!(reqs.iter().all(|&(at, _)| at == half), "{reqs:?}");
    assert_eq!(suspected_at, Some(config.suspect_after_ms));
    assert_eq!(
        down_at,
        Some(config.suspect_after_ms + config.down_after_ms)
    );
    assert!(down_carried, "the Down claim is not piggybacked");
    assert!(
        m.stats().probes_failed >= 1,
        "the failed probes are counted"
    );
}

/// An `Ack` relayed by a helper in time saves the member from suspicion.
#[test]
fn a_relayed_ack_in_time_prevents_suspicion() {
    let (mut m, mut rng) = lone(4);
    let (first, _) = outputs(&mut m);
    let (victim, number) = first_ping(&first).expect("a probe");
    // Half way: the indirect probes go out; a helper relays the target's answer.
    let (sends, _) = run_timers(&mut m, &mut rng, at(500));
    let helper = sends
        .iter()
        .find_map(|(_, to, msg)| matches!(msg, GossipMessage::PingReq { .. }).then_some(*to))
        .expect("indirect probes");
    let relayed = GossipMessage::Ack {
        probe: number,
        ring_version: m.ring_version(),
        updates: Vec::new(),
    };
    m.handle_message(at(600), helper, relayed);
    m.check_invariants();
    let (_, events) = run_timers(&mut m, &mut rng, at(1_050));
    assert!(
        !events.iter().any(|(_, e)| matches!(e,
            MembershipEvent::StatusChanged { node, .. } if *node == victim)),
        "suspected despite the relayed ack: {events:?}"
    );
}

/// A helper runs the indirect probe: its own `Ping` to the target, and the target's `Ack`
/// relayed to the requester under the requester's probe number; asked about itself, it answers.
#[test]
fn an_indirect_probe_is_relayed_to_the_requester() {
    let (mut m, _) = lone(4);
    let _ = outputs(&mut m);
    let request = GossipMessage::PingReq {
        probe: 77,
        target: node_id(2),
        ring_version: m.ring_version(),
        updates: Vec::new(),
    };
    m.handle_message(at(10), node_id(1), request);
    m.check_invariants();
    let (sends, _) = outputs(&mut m);
    let [(to, GossipMessage::Ping { probe, .. })] = sends.as_slice() else {
        panic!("one ping expected: {sends:?}");
    };
    assert_eq!(*to, node_id(2));
    let ack = GossipMessage::Ack {
        probe: *probe,
        ring_version: m.ring_version(),
        updates: Vec::new(),
    };
    // An ack from anyone else is not the target's answer.
    m.handle_message(at(20), node_id(3), ack.clone());
    assert_eq!(outputs(&mut m).0, Vec::new());
    m.handle_message(at(20), node_id(2), ack);
    m.check_invariants();
    let (sends, _) = outputs(&mut m);
    assert!(
        matches!(sends.as_slice(), [(to, GossipMessage::Ack { probe: 77, .. })] if *to == node_id(1)),
        "{sends:?}"
    );
    // Asked to probe itself: the answer is immediate.
    let about_me = GossipMessage::PingReq {
        probe: 78,
        target: node_id(0),
        ring_version: m.ring_version(),
        updates: Vec::new(),
    };
    m.handle_message(at(30), node_id(3), about_me);
    let (sends, _) = outputs(&mut m);
    assert!(
        matches!(sends.as_slice(), [(to, GossipMessage::Ack { probe: 78, .. })] if *to == node_id(3)),
        "{sends:?}"
    );
}

/// A suspicion (or a `Down`) about this node at its incarnation is refuted: the incarnation goes
/// up, the driver is told to persist it, and the very next message carries the refutation. A
/// stale claim (an older incarnation) is ignored.
#[test]
fn a_suspected_node_refutes_with_a_higher_incarnation() {
    for liveness in [Liveness::Suspect, Liveness::Down] {
        let (mut m, _) = lone(4);
        let _ = outputs(&mut m);
        let claim = |incarnation| GossipMessage::Gossip {
            ring_version: RingVersion::default(),
            updates: vec![GossipEntry {
                node: node_id(0),
                incarnation,
                liveness,
            }],
        };
        m.handle_message(at(5), node_id(1), claim(0));
        assert_eq!(m.incarnation(), 1, "a stale claim is ignored");
        m.handle_message(at(5), node_id(1), claim(1));
        m.check_invariants();
        assert_eq!(m.incarnation(), 2);
        assert_eq!(m.stats().refutations, 1);
        let (_, events) = outputs(&mut m);
        assert!(events.contains(&MembershipEvent::IncarnationChanged { incarnation: 2 }));
        let ping = GossipMessage::Ping {
            probe: 9,
            ring_version: m.ring_version(),
            updates: Vec::new(),
        };
        m.handle_message(at(6), node_id(2), ping);
        let (sends, _) = outputs(&mut m);
        let refutation = GossipEntry {
            node: node_id(0),
            incarnation: 2,
            liveness: Liveness::Alive,
        };
        assert!(
            matches!(sends.as_slice(), [(_, GossipMessage::Ack { probe: 9, updates, .. })]
                if updates.contains(&refutation)),
            "{sends:?}"
        );
    }
}

/// A message to a member this node holds `Suspect` carries that claim first, so the member
/// refutes even if the rumour never reached it.
#[test]
fn a_message_to_a_suspect_member_tells_it() {
    let (mut m, _) = lone(4);
    let _ = outputs(&mut m);
    let suspicion = GossipEntry {
        node: node_id(2),
        incarnation: 1,
        liveness: Liveness::Suspect,
    };
    let news = GossipMessage::Gossip {
        ring_version: RingVersion::default(),
        updates: vec![suspicion],
    };
    m.handle_message(at(5), node_id(1), news);
    assert_eq!(m.status(node_id(2)), Some(MemberStatus::Suspect));
    let ping = GossipMessage::Ping {
        probe: 4,
        ring_version: m.ring_version(),
        updates: Vec::new(),
    };
    m.handle_message(at(6), node_id(2), ping);
    let (sends, _) = outputs(&mut m);
    assert!(
        matches!(sends.as_slice(), [(_, GossipMessage::Ack { updates, .. })]
            if updates.first() == Some(&suspicion)),
        "{sends:?}"
    );
    // Its refutation wins and clears the suspicion timer.
    let refuted = GossipMessage::Gossip {
        ring_version: RingVersion::default(),
        updates: vec![GossipEntry {
            liveness: Liveness::Alive,
            incarnation: 2,
            ..suspicion
        }],
    };
    m.handle_message(at(7), node_id(2), refuted);
    m.check_invariants();
    assert_eq!(m.status(node_id(2)), Some(MemberStatus::Alive));
}

/// Piggybacking is bounded: no message carries more than `PIGGYBACK_UPDATES_MAX` updates, and
/// each update goes out exactly `4 × ceil(log10(n + 1))` times, then no more.
#[test]
fn piggybacked_updates_are_bounded_and_retransmitted_a_fixed_number_of_times() {
    let nodes = 40;
    let (mut m, _) = lone(nodes);
    let mut sent = std::collections::BTreeMap::new();
    let (start, _) = outputs(&mut m);
    // The start push-pull's `State` carries the table, not updates: not counted.
    for (_, message) in start {
        if matches!(message, GossipMessage::State { .. }) {
            continue;
        }
        for entry in message.entries() {
            *sent.entry(entry.node).or_insert(0) += 1;
        }
    }
    // Thirty suspicions arrive at once (incarnation 1: news, so spread on).
    let entries: Vec<GossipEntry> = (1..31)
        .map(|i| GossipEntry {
            node: node_id(i),
            incarnation: 1,
            liveness: Liveness::Suspect,
        })
        .collect();
    let state = GossipMessage::State {
        entries: entries.clone(),
        ring_version: RingVersion::default(),
        ring: None,
        reply_wanted: false,
    };
    m.handle_message(at(1), node_id(35), state);
    m.check_invariants();
    let _ = outputs(&mut m);
    let limit = 4 * 2; // ceil(log10(41)) = 2
    for probe in 0..200 {
        // Pings from a member this node holds `Alive` (so no claim about the sender goes first).
        let ping = GossipMessage::Ping {
            probe,
            ring_version: m.ring_version(),
            updates: Vec::new(),
        };
        m.handle_message(at(2), node_id(38), ping);
        m.check_invariants();
        let (sends, _) = outputs(&mut m);
        for (_, message) in sends {
            assert!(message.entries().len() <= PIGGYBACK_UPDATES_MAX);
            for entry in message.entries() {
                *sent.entry(entry.node).or_insert(0) += 1;
            }
        }
    }
    for entry in &entries {
        assert_eq!(sent.get(&entry.node), Some(&limit), "{:?}", entry.node);
    }
    // The start announcement of node 0 itself was sent as often (its first round took some).
    assert_eq!(sent.get(&node_id(0)), Some(&limit));
}

/// Push-pull: a `State` asking for an answer gets this node's whole table, with the ring log
/// when the asker's ring is older; the answer asks for none. A newer ring seen on any message
/// makes this node pull it (at most once per round).
#[expect(
    clippy::too_many_lines,
    reason = "an exchange and a pull, each message checked"
)]
#[test]
fn push_pull_answers_with_the_table_and_pulls_newer_rings() {
    let (mut m, _) = lone(5);
    let _ = outputs(&mut m);
    let push = GossipMessage::State {
        entries: vec![GossipEntry {
            node: node_id(1),
            incarnation: 3,
            liveness: Liveness::Alive,
        }],
        ring_version: RingVersion::default(),
        ring: None,
        reply_wanted: true,
    };
    m.handle_message(at(1), node_id(1), push);
    m.check_invariants();
    let (sends, _) = outputs(&mut m);
    let [(
        to,
        GossipMessage::State {
            entries,
            ring,
            reply_wanted: false,
            ..
        },
    )] = sends.as_slice()
    else {
        panic!("one answer expected: {sends:?}");
    };
    assert_eq!(*to, node_id(1));
    assert_eq!(entries.len(), 5, "own entry and four members");
    assert_eq!(entries[0].node, node_id(0));
    assert!(entries.contains(&GossipEntry {
        node: node_id(1),
        incarnation: 3,
        liveness: Liveness::Alive
    }));
    assert_eq!(
        ring.as_ref(),
        Some(m.ring_state().log()),
        "the asker's ring is older"
    );
    // A node with a newer ring pings us: we pull with a `State` and adopt its answer's log.
    let mut newer = m.ring_state().log().clone();
    newer.changes.push(RingChange::Join(member(7)));
    let version = newer.version();
    let ping = |probe| GossipMessage::Ping {
        probe,
        ring_version: version,
        updates: Vec::new(),
    };
    m.handle_message(at(2), node_id(2), ping(1));
    m.handle_message(at(3), node_id(3), ping(2));
    let (sends, _) = outputs(&mut m);
    let pulls: Vec<NodeId> = sends
        .iter()
        .filter(|(_, msg)| {
            matches!(
                msg,
                GossipMessage::State {
                    reply_wanted: true,
                    ..
                }
            )
        })
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(pulls, vec![node_id(2)], "one pull per round");
    let answer = GossipMessage::State {
        entries: Vec::new(),
        ring_version: version,
        ring: Some(newer),
        reply_wanted: false,
    };
    m.handle_message(at(4), node_id(2), answer);
    m.check_invariants();
    assert_eq!(m.ring_version(), version);
    assert_eq!(m.status(node_id(7)), Some(MemberStatus::Alive));
}

/// A `Down` member is contacted by a ping and by a push-pull now and then; the live ones are
/// probed in a shuffled round-robin (each once per pass).
#[test]
fn probes_cover_every_live_member_each_pass_and_push_pulls_reach_down_ones() {
    let (mut m, mut rng) = lone(9);
    let mut probed = Vec::new();
    let (start, _) = outputs(&mut m);
    for (to, msg) in start {
        if let GossipMessage::Ping { probe, .. } = msg {
            probed.push(to);
            let ack = GossipMessage::Ack {
                probe,
                ring_version: m.ring_version(),
                updates: Vec::new(),
            };
            m.handle_message(Instant::ZERO, to, ack);
        }
    }
    // Member 8 is Down here (it was in the first pass).
    let down = GossipMessage::Gossip {
        ring_version: RingVersion::default(),
        updates: vec![GossipEntry {
            node: node_id(8),
            incarnation: 1,
            liveness: Liveness::Down,
        }],
    };
    m.handle_message(at(1), node_id(1), down);
    let _ = outputs(&mut m);
    let mut states_to_down = 0;
    let mut t = 0;
    while t < 120_000 {
        let next = m.poll_timeout().expect("timer");
        t = next.saturating_duration_since(Instant::ZERO).as_millis() as u64;
        m.handle_timeout(next, &mut rng);
        let (sends, _) = outputs(&mut m);
        for (to, msg) in sends {
            match msg {
                GossipMessage::Ping { probe, .. } => {
                    probed.push(to);
                    let ack = GossipMessage::Ack {
                        probe,
                        ring_version: m.ring_version(),
                        updates: Vec::new(),
                    };
                    m.handle_message(next, to, ack);
                }
                GossipMessage::State { .. } if to == node_id(8) => states_to_down += 1,
                _ => {}
            }
        }
        let _ = outputs(&mut m);
        m.check_invariants();
    }
    // Member 8 gets a `Ping` now and then, outside the probe order (probability 1/8 a round:
    // about 150 in 1,200 rounds); the live members are probed once per pass each.
    let to_down = probed.iter().filter(|&&n| n == node_id(8)).count();
    assert!(
        (80..=250).contains(&to_down),
        "{to_down} pings to the Down member"
    );
    probed.retain(|&n| n != node_id(8));
    for pass in probed.chunks_exact(7) {
        let mut pass = pass.to_vec();
        pass.sort();
        assert_eq!(pass, (1..8).map(node_id).collect::<Vec<_>>());
    }
    // Probability 1/8 per push-pull, one push-pull per 2 s: about 7 in two minutes.
    assert!((2..=20).contains(&states_to_down), "{states_to_down}");
}
