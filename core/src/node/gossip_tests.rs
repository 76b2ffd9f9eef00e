//! Gossip wired into the node: failure detection routes sloppy writes around a dead replica at
//! once, and an operator's ring change made on one node reaches every node by gossip alone.

use super::*;
use crate::client::{ClientReply, ClientRequest, Consistency};
use crate::config::ClusterConfig;
use crate::membership::{MemberStatus, MembershipConfig, RingChange, RingLog};
use crate::ring::{Member, NodeLocation};
use crate::storage::MemStorage;
use crate::time::{Instant, Now, WallMicros};
use bytes::Bytes;
use std::collections::VecDeque;

pub(super) const STEP_MS: u64 = 20;

/// Nodes with gossip, driven in steps of `STEP_MS` (also used by `fail_fast`'s tests).
pub(super) struct Cluster {
    pub(super) nodes: Vec<Node<MemStorage>>,
    /// Nodes that neither send nor receive (crashed, as far as the others can tell).
    pub(super) dead: Vec<bool>,
    pub(super) replies: Vec<(RequestId, ClientReply)>,
    tick: u64,
}

fn location(i: u32) -> NodeLocation {
    NodeLocation {
        datacenter: "dc".into(),
        rack: format!("r{i}"),
        weight: 1,
    }
}

impl Cluster {
    /// `members` nodes in the initial ring, `spares` more running outside it.
    fn new(members: u32, spares: u32) -> Cluster {
        let cluster = ClusterConfig {
            vnodes_per_node: 16,
            sloppy_quorum: true,
            // Far beyond the test's horizon: only the failure detector can hand off in time.
            sloppy_after_ms: 60_000,
            request_timeout_ms: 120_000,
            ..ClusterConfig::default()
        };
        Cluster::with_config(members, spares, cluster)
    }

    /// As [`Cluster::new`], every node running `cluster` (its `vnodes_per_node` must be 16).
    pub(super) fn with_config(members: u32, spares: u32, cluster: ClusterConfig) -> Cluster {
        let membership = MembershipConfig {
            gossip_interval_ms: 50,
            suspect_after_ms: 300,
            down_after_ms: 600,
            vnodes_per_node: 16,
            seeds: (0..members).map(NodeId).collect(),
            ..MembershipConfig::default()
        };
        let seed_ring = RingLog {
            vnodes_per_node: 16,
            changes: (0..members)
                .map(|i| {
                    RingChange::Join(Member {
                        id: NodeId(i),
                        location: location(i),
                    })
                })
                .collect(),
        };
        let now = Cluster::now_at(0);
        let nodes = (0..members + spares)
            .map(|i| {
                let config = NodeConfig {
                    id: NodeId(i),
                    cluster: cluster.clone(),
                    rng_seed: u64::from(i),
                };
                Node::with_membership(
                    config,
                    membership.clone(),
                    seed_ring.clone(),
                    MemStorage::new(),
                    now,
                )
                .expect("valid")
            })
            .collect();
        Cluster {
            nodes,
            dead: vec![false; (members + spares) as usize],
            replies: Vec::new(),
            tick: 0,
        }
    }

    fn now_at(tick: u64) -> Now {
        Now {
            monotonic: Instant::from_nanos(tick * STEP_MS * 1_000_000 + 1),
            wall: WallMicros(1_000_000 + tick * STEP_MS * 1000),
        }
    }

    pub(super) fn now(&self) -> Now {
        Cluster::now_at(self.tick)
    }

    /// Drains node `i`: sends are delivered at once (FIFO), persists complete at once.
    pub(super) fn pump(&mut self, first: usize) {
        let mut queue: VecDeque<usize> = VecDeque::from([first]);
        while let Some(i) = queue.pop_front() {
            while let Some(output) = self.nodes[i].poll_output() {
                let now = self.now();
                match output {
                    Output::Send { to, message } => {
                        let j = to.0 as usize;
                        if self.dead[i] || self.dead[j] {
                            continue;
                        }
                        self.nodes[j].handle_message(now, NodeId(i as u32), message);
                        queue.push_back(j);
                    }
                    Output::Persist { token } => {
                        self.nodes[i].storage_mut().sync().expect("sync");
                        self.nodes[i].handle_persisted(now, token);
                    }
                    Output::Reply { request, reply } => self.replies.push((request, reply)),
                    Output::Event(_) => {}
                }
            }
        }
    }

    pub(super) fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / STEP_MS {
            self.tick += 1;
            let now = self.now();
            for i in 0..self.nodes.len() {
                if self.dead[i] {
                    continue;
                }
                self.nodes[i].handle_timeout(now);
                self.pump(i);
            }
        }
    }
}

#[test]
fn a_replica_judged_down_gets_a_stand_in_at_once() {
    let mut cluster = Cluster::new(4, 0);
    cluster.run_ms(500);
    cluster.dead[3] = true;
    cluster.run_ms(2_000);
    for i in 0..3 {
        assert_eq!(
            cluster.nodes[i].member_status(NodeId(3)),
            Some(MemberStatus::Down),
            "n{i} has not judged n3 down"
        );
    }
    // A key that n3 replicates, written at `all` from a node that is not its replica's stand-in.
    let ring = cluster.nodes[0].ring().clone();
    let key = (0..1000)
        .map(|i| format!("key{i}"))
        .find(|k| ring.preference_list(k.as_bytes(), 3).contains(&NodeId(3)))
        .expect("n3 replicates some key");
    let request = ClientRequest::Put {
        key: Bytes::from(key.clone()),
        value: Bytes::from_static(b"v"),
        context: None,
        consistency: Some(Consistency::All),
    };
    let now = cluster.now();
    cluster.nodes[0].handle_client(now, RequestId(1), request);
    cluster.pump(0);
    cluster.run_ms(STEP_MS);
    assert!(
        matches!(
            cluster.replies.first(),
            Some((RequestId(1), ClientReply::Written { .. }))
        ),
        "a write at `all` with a dead replica waited instead of using a stand-in: {:?}",
        cluster.replies
    );
    let hints: usize = cluster
        .nodes
        .iter()
        .map(|n| n.pending_hints().get(&NodeId(3)).map_or(0, |h| h.0))
        .sum();
    assert_eq!(hints, 1, "one stand-in holds the hint for n3");
}

#[test]
fn a_join_made_on_one_node_reaches_every_node_by_gossip() {
    let mut cluster = Cluster::new(4, 1);
    cluster.run_ms(300);
    let before = cluster.nodes[0].ring().clone();
    assert!(!before.contains(NodeId(4)));
    let member = Member {
        id: NodeId(4),
        location: location(4),
    };
    let now = cluster.now();
    cluster.nodes[1].admin_join(now, member).expect("join");
    cluster.pump(1);
    cluster.run_ms(2_000);
    let ring = cluster.nodes[1].ring().clone();
    assert!(ring.contains(NodeId(4)));
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert_eq!(node.ring(), &ring, "n{i} did not converge on the new ring");
    }
    // The ring survives a restart: it was persisted in the node's own storage.
    let started = cluster.now();
    let storage = std::mem::replace(&mut cluster.nodes[2], {
        let spare = NodeConfig {
            id: NodeId(99),
            cluster: ClusterConfig::default(),
            rng_seed: 0,
        };
        Node::new(spare, Ring::new(16), MemStorage::new(), started).expect("valid")
    })
    .into_storage();
    let config = NodeConfig {
        id: NodeId(2),
        cluster: ClusterConfig {
            vnodes_per_node: 16,
            ..ClusterConfig::default()
        },
        rng_seed: 7,
    };
    let membership = MembershipConfig {
        vnodes_per_node: 16,
        ..MembershipConfig::default()
    };
    let empty = RingLog {
        vnodes_per_node: 16,
        changes: Vec::new(),
    };
    let restarted =
        Node::with_membership(config, membership, empty, storage, cluster.now()).expect("valid");
    assert_eq!(restarted.ring(), &ring);
    assert_eq!(
        restarted.membership().map(|m| m.incarnation()),
        Some(2),
        "a restart raises the persisted incarnation"
    );
}
