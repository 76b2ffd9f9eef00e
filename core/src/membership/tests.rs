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

/// The status changes `observer` reported about `node`, in order.
fn history(h: &Harness, observer: usize, node: usize) -> Vec<(MemberStatus, MemberStatus)> {
    h.events
        .iter()
        .filter(|e| e.observer == node_id(observer))
        .filter_map(|e| match e.event {
            MembershipEvent::StatusChanged { node: n, from, to } if n == node_id(node) => {
                Some((from, to))
            }
            _ => None,
        })
        .collect()
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
fn heartbeats_converge_without_false_suspicion() {
    let mut h = cluster(20, 1, NetworkModel::default());
    h.run_for(Duration::from_secs(10));
    for observer in 0..20 {
        let m = h.machine(observer).expect("running");
        assert_eq!(m.alive_members().len(), 20);
        for node in 0..20 {
            let truth = h.machine(node).expect("running").heartbeat();
            let seen = m.member(node_id(node)).expect("known").heartbeat;
            // Everyone's view lags the truth by a few rounds at most.
            assert!(
                truth - seen <= 8,
                "{observer} sees {node} at {seen}, truth {truth}"
            );
        }
    }
    assert!(no_status_changes(&h), "a healthy cluster suspected someone");
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
        assert!(took >= config.down_after_total() - config.gossip_interval() * 2);
        assert!(
            took <= config.down_after_total() + ms(2_000),
            "took {took:?}"
        );
        for observer in h.running() {
            assert_eq!(
                history(&h, observer, 5),
                vec![
                    (MemberStatus::Alive, MemberStatus::Suspect),
                    (MemberStatus::Suspect, MemberStatus::Down)
                ],
                "observer {observer}"
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
    assert_eq!(
        h.machine(0)
            .and_then(|m| m.member(node_id(3)))
            .map(|v| v.incarnation),
        Some(2)
    );
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
    // Same incarnation as before and a heartbeat back at zero: older than what peers hold.
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
    // Replaying every message a second time, late and in reverse order, changes nothing but
    // the ack traffic: merges are maxima.
    let mut m = h.machine(0).expect("running").clone();
    let before: Vec<_> = m
        .members()
        .into_iter()
        .map(|v| (v.node, v.incarnation, v.heartbeat))
        .collect();
    let old = GossipMessage::Syn {
        entries: before
            .iter()
            .map(|&(node, incarnation, heartbeat)| GossipEntry {
                node,
                incarnation,
                heartbeat: heartbeat.saturating_sub(5),
            })
            .filter(|e| e.node != node_id(0))
            .collect(),
        ring_version: RingVersion::default(),
        ring: None,
    };
    for _ in 0..3 {
        m.handle_message(h.now(), node_id(1), old.clone());
        m.check_invariants();
    }
    let after: Vec<_> = m
        .members()
        .into_iter()
        .map(|v| (v.node, v.incarnation, v.heartbeat))
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
    // But continued silence after the pause is.
    let later = resumed.saturating_add(config.down_after_total());
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
    let flood = GossipMessage::Syn {
        entries: (0..100)
            .map(|i| GossipEntry {
                node: NodeId(1000 + i),
                incarnation: 1,
                heartbeat: 1,
            })
            .collect(),
        ring_version: RingVersion::default(),
        ring: None,
    };
    m.handle_message(now, node_id(1), flood);
    assert_eq!(m.stats().messages_refused, 1);
    // Within the message limit but over the table: the extra entries are dropped and counted.
    let many = GossipMessage::Ack {
        entries: (0..8)
            .map(|i| GossipEntry {
                node: NodeId(1000 + i),
                incarnation: 1,
                heartbeat: 1,
            })
            .collect(),
        ring_version: RingVersion::default(),
        ring: None,
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
            GossipMessage::Syn {
                entries: Vec::new(),
                ring_version: claim,
                ring: Some(log),
            },
        );
        m.check_invariants();
    }
    assert_eq!(m.ring_version(), before);
    assert_eq!(m.stats().rings_refused, 6);
    // Random and truncated bytes never decode into a panic.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let valid = crate::codec::encode_value(&GossipMessage::Syn {
        entries: vec![GossipEntry {
            node: NodeId(1),
            incarnation: 2,
            heartbeat: 3,
        }],
        ring_version: RingVersion::default(),
        ring: Some(ring),
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
    let widest = GossipMessage::Syn {
        entries: (0..config.members_max)
            .map(|_| GossipEntry {
                node: NodeId(u32::MAX),
                incarnation: u64::MAX,
                heartbeat: u64::MAX,
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
    assert_ne!(run(21).1, run(22).1);
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
        // Generous O(log n) bounds: dissemination of one heartbeat and of a restart.
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
        // Push-pull: `fanout` requests and about as many replies per node per round.
        let per_round =
            report.messages_per_node_per_second * config.gossip_interval_ms as f64 / 1_000.0;
        assert!(
            per_round <= 2.0 * config.fanout as f64 + 1.0,
            "{per_round} messages per round"
        );
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
        assert_eq!(report.false_suspicions, 0);
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
/// here): suspicion may come up to a round late, but never early, and `Down` still comes exactly
/// at `suspect_after_ms + down_after_ms`; every gossip target stays a distinct member.
#[test]
fn with_fault_points_live_detection_stays_within_its_bound() {
    let config = config();
    let ring = initial_ring(4, &config);
    let suspect = config.suspect_after();
    let down = config.down_after_total();
    let mut postponed = 0;
    for seed in 0..64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut m = Membership::new(config.clone(), node_id(0), 1, ring.clone(), Instant::ZERO)
            .expect("ok");
        m.set_fault_points(crate::buggify::FaultPoints::new(seed, true));
        // The peers are silent from the start: their progress is at time zero.
        let mut t = Instant::ZERO;
        let end = Instant::ZERO.saturating_add(down.saturating_mul(2));
        while t <= end {
            m.handle_timeout(t, &mut rng);
            m.check_invariants();
            let silent = t.saturating_duration_since(Instant::ZERO);
            while let Some(output) = m.poll_output() {
                if let MembershipOutput::Send { to, .. } = output {
                    assert!(to != node_id(0) && (1..4).any(|i| node_id(i) == to));
                }
            }
            for peer in 1..4 {
                let status = m.status(node_id(peer)).expect("known");
                if silent < suspect {
                    assert_eq!(status, MemberStatus::Alive, "seed {seed}: suspected early");
                } else if silent >= down {
                    assert_eq!(status, MemberStatus::Down, "seed {seed}: down late");
                } else if status == MemberStatus::Alive {
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

#[test]
fn an_ack_carries_what_is_fresher_here_than_every_claim_of_the_syn() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let config = config();
    for case in 0..300 {
        let mut m = Membership::new(
            config.clone(),
            node_id(0),
            rng.gen_range(0..3),
            initial_ring(8, &config),
            Instant::ZERO,
        )
        .expect("valid");
        let claim = |rng: &mut ChaCha8Rng| GossipEntry {
            node: node_id(rng.gen_range(0..10)),
            incarnation: rng.gen_range(0..3),
            heartbeat: rng.gen_range(0..4),
        };
        // Some news first, so the table holds a mix of fresher and staler entries.
        let news: Vec<GossipEntry> = (0..rng.gen_range(0..12)).map(|_| claim(&mut rng)).collect();
        m.handle_message(
            Instant::ZERO,
            node_id(2),
            GossipMessage::Ack {
                entries: news,
                ring_version: RingVersion::default(),
                ring: None,
            },
        );
        while m.poll_output().is_some() {}
        let mut syn: Vec<GossipEntry> =
            (0..rng.gen_range(0..14)).map(|_| claim(&mut rng)).collect();
        // Most cases in the shape a `Syn` has: one entry, then the rest in id order.
        if case % 3 != 0 && syn.len() > 1 {
            syn[1..].sort_by_key(|entry| entry.node);
        }
        m.handle_message(
            Instant::ZERO,
            node_id(1),
            GossipMessage::Syn {
                entries: syn.clone(),
                ring_version: RingVersion::default(),
                ring: None,
            },
        );
        m.check_invariants();
        let mut acks = Vec::new();
        while let Some(output) = m.poll_output() {
            if let MembershipOutput::Send {
                message: GossipMessage::Ack { entries, .. },
                ..
            } = output
            {
                acks.push(entries);
            }
        }
        // The model, over the table after the merge: own entry first, then the rest by id.
        let views = m.members();
        let own = views.iter().filter(|v| v.node == node_id(0));
        let others = views.iter().filter(|v| v.node != node_id(0));
        let want: Vec<GossipEntry> = own
            .chain(others)
            .map(|v| GossipEntry {
                node: v.node,
                incarnation: v.incarnation,
                heartbeat: v.heartbeat,
            })
            .filter(|mine| {
                syn.iter()
                    .filter(|claim| claim.node == mine.node)
                    .all(|claim| claim.freshness() < mine.freshness())
            })
            .collect();
        assert_eq!(acks, vec![want], "case {case}: syn {syn:?}");
    }
}
