use super::harness::*;
use super::*;
use rand::SeedableRng;
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

fn at(millis: u64) -> Instant {
    Instant::from_nanos(millis * 1_000_000)
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
            assert!(truth - seen <= 8, "{observer} sees {node} at {seen}, truth {truth}");
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
            .run_until_true(Duration::from_secs(30), |h| h.all_see(5, MemberStatus::Down))
            .expect("every node judged the crashed node down");
        let took = down.saturating_duration_since(crashed_at);
        let config = config();
        assert!(took >= config.down_after_total() - config.gossip_interval() * 2);
        assert!(took <= config.down_after_total() + ms(2_000), "took {took:?}");
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
    h.run_until_true(Duration::from_secs(30), |h| h.all_see(3, MemberStatus::Down))
        .expect("down everywhere");
    assert!(h.restart(3));
    h.run_until_true(Duration::from_secs(5), |h| h.all_see(3, MemberStatus::Alive))
        .expect("alive everywhere after the restart");
    assert_eq!(h.machine(0).and_then(|m| m.member(node_id(3))).map(|v| v.incarnation), Some(2));
}

#[test]
fn restart_without_a_persisted_incarnation_refutes_the_old_one() {
    let mut h = cluster(8, 9, NetworkModel::default());
    h.run_for(Duration::from_secs(2));
    h.crash(2);
    h.run_until_true(Duration::from_secs(30), |h| h.all_see(2, MemberStatus::Down))
        .expect("down everywhere");
    // Same incarnation as before and a heartbeat back at zero: older than what peers hold.
    assert!(h.restart_with(2, 1, initial_ring(8, &config())));
    h.run_until_true(Duration::from_secs(5), |h| h.all_see(2, MemberStatus::Alive))
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
    h.run_until_true(Duration::from_secs(5), |h| h.all_see(10, MemberStatus::Alive))
        .expect("newcomer alive everywhere");
}
