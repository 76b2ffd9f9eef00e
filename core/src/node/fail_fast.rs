//! Failing fast: a request whose needed replicas the failure detector already judges `Down` is
//! refused at once, with nothing sent, instead of waiting out `request_timeout_ms` (issue #13,
//! item 6).
//!
//! The decision is a pure policy over a snapshot ([`shortfall`]): which nodes could answer the
//! request at all ([`Need`]: its replicas, or for sloppy quorum any node of the ring, which can
//! stand in; per datacenter group for `local_quorum` and `each_quorum`), and which of them are
//! `Down`. A request is refused only if even every node *not* judged `Down` answering would not
//! be enough, so the rule never refuses a request the protocol could still complete unless the
//! detector is wrong about a node.
//!
//! Why the detector's errors are acceptable here: `Down` is the slow verdict (a probe unanswered
//! for `suspect_after_ms`, then `down_after_ms` without a refutation, three seconds by default,
//! and the node's refutation makes it `Alive` again at once), the same verdict that already routes sloppy writes
//! to stand-ins. A false `Down` lasts from a heal until the first gossip exchange across it (a
//! node contacts one `Down` peer per round with probability `down / (live + 1)`, so about a round
//! or two); a request refused in that window is retried safely (see below), where without the
//! rule it would have waited. The scenarios measured before and after are listed in the commit
//! that introduced this module and in node/README.md's error table.
//!
//! The refusal is `Rejected(RequestError::ReplicasDown)`: a read has no effect, and a write is
//! refused before any replica (this node included) was asked to apply it, so a retry is always
//! safe. Without gossip (no failure detector) nothing is ever judged `Down` and the rule is off.

use super::context::Context;
use super::coordinator::Coordinator;
use super::gossip::is_down;
use crate::client::{ClientRequest, RequestError};
use crate::id::NodeId;
use crate::membership::Membership;
use crate::quorum::Group;
use crate::storage::Storage;
use crate::time::Instant;
use crate::version::ConflictMode;

/// Which nodes could contribute to a request's replies.
#[derive(Clone, Copy, Debug)]
pub(super) enum Need<'a> {
    /// `needed` replies from `replicas` themselves: strict quorums (no hand-off configured, the
    /// vector-clock write path, and the linearizable level, which never uses fallbacks).
    Strict {
        /// The key's replicas.
        replicas: &'a [NodeId],
        /// Replies required.
        needed: usize,
    },
    /// `needed` replies from the replicas or their stand-ins, which sloppy quorum takes from
    /// anywhere on the ring: every member counts.
    Sloppy {
        /// Every member of the ring.
        members: &'a [NodeId],
        /// Replies required.
        needed: usize,
    },
    /// `local_quorum` / `each_quorum`: each group's majority from that group's own replicas
    /// (these levels never hand off).
    Grouped {
        /// (the group's replicas, replies required of them).
        groups: &'a [Group],
    },
}

/// A request that cannot gather its replies from the nodes not judged `Down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shortfall {
    /// Nodes not judged `Down` that could answer (in the first short group, for grouped levels).
    pub reachable: usize,
    /// Replies required of them.
    pub needed: usize,
}

/// `Some` when fewer nodes than needed are not judged `Down` (`is_down`: the failure detector's
/// verdict; the caller answers `false` for itself). A pure policy, tested as a table.
pub(super) fn shortfall(need: Need<'_>, is_down: impl Fn(NodeId) -> bool) -> Option<Shortfall> {
    let live = |nodes: &[NodeId]| nodes.iter().filter(|&&n| !is_down(n)).count();
    match need {
        Need::Strict {
            replicas: nodes,
            needed,
        }
        | Need::Sloppy {
            members: nodes,
            needed,
        } => {
            let reachable = live(nodes);
            (reachable < needed).then_some(Shortfall { reachable, needed })
        }
        Need::Grouped { groups } => groups.iter().find_map(|group| {
            let reachable = live(&group.members);
            (reachable < group.needed).then_some(Shortfall {
                reachable,
                needed: group.needed,
            })
        }),
    }
}

/// When each node was last heard from, found by id only (never iterated). Written on every
/// message a node receives: the ids of a cluster are numbered from 0, so those below
/// [`HeardFrom::DENSE_IDS`] index a vector (one cache line touched per message; the hashed map it
/// replaced touched two, and the ordered map before it a walk, 14% of a 1,000-node run, issue
/// #15), the rest a hashed map.
#[derive(Debug, Default)]
pub(super) struct HeardFrom {
    /// By id: the instant's nanoseconds, or [`HeardFrom::NEVER`].
    dense: Vec<u64>,
    /// Ids from [`HeardFrom::DENSE_IDS`] on, and an instant of `u64::MAX` nanoseconds (the
    /// sentinel's value) of any id.
    sparse: std::collections::HashMap<NodeId, Instant, crate::hash::IdHashing>,
}

impl HeardFrom {
    /// Ids below this are kept in the vector (8 bytes each, grown to the largest id heard).
    const DENSE_IDS: u32 = 1 << 12;
    /// A slot of the vector for an id not heard from (or kept in `sparse`).
    const NEVER: u64 = u64::MAX;

    /// `node` was heard from at `at` (the latest time it was).
    pub(super) fn insert(&mut self, node: NodeId, at: Instant) {
        let nanos = at.as_nanos();
        if node.0 < Self::DENSE_IDS && nanos != Self::NEVER {
            let index = node.0 as usize;
            if index >= self.dense.len() {
                self.dense.resize(index + 1, Self::NEVER);
            }
            self.dense[index] = nanos;
            self.sparse.remove(&node);
        } else {
            if let Some(slot) = self.dense.get_mut(node.0 as usize) {
                *slot = Self::NEVER;
            }
            self.sparse.insert(node, at);
        }
    }

    /// When `node` was last heard from, if ever.
    pub(super) fn get(&self, node: NodeId) -> Option<Instant> {
        match self.dense.get(node.0 as usize) {
            Some(&nanos) if nanos != Self::NEVER => Some(Instant::from_nanos(nanos)),
            _ => self.sparse.get(&node).copied(),
        }
    }
}

impl Coordinator {
    /// Records a message from `from` (a ring member) at `now`; only with a failure detector
    /// (`gossip`), whose verdicts this evidence overrides.
    pub(super) fn note_heard<S: Storage>(
        &mut self,
        ctx: &Context<S>,
        gossip: bool,
        from: NodeId,
        now: Instant,
    ) {
        // Ring members only, so the map is bounded by the ring's history.
        if gossip && ctx.ring.contains(from) {
            self.heard_from.insert(from, now);
        }
    }

    /// Whether `node` sent this node anything within the failure detector's suspicion time: a
    /// node judged `Down` that is heard from directly (a reply, a request it coordinates, an
    /// anti-entropy round) is up and reaching us, whatever gossip says. This closes most
    /// of the window after a heal in which the verdict is stale: the healed node's own traffic
    /// arrives before gossip has carried its refutation here.
    fn heard_recently(&self, membership: &Membership, node: NodeId, now: Instant) -> bool {
        let window = membership.config().suspect_after();
        self.heard_from
            .get(node)
            .is_some_and(|at| now.saturating_duration_since(at) < window)
    }

    /// The refusal for a request about to start whose needed nodes are judged `Down`, if any.
    /// Called after the level's replicas, count and datacenter groups (`groups`) are
    /// known and before anything is sent or applied.
    pub(super) fn replicas_down<S: Storage>(
        &self,
        ctx: &Context<S>,
        membership: Option<&Membership>,
        body: &ClientRequest,
        (linearizable, replicas): (bool, &[NodeId]),
        needed: u8,
        groups: Option<&[Group]>,
    ) -> Option<RequestError> {
        // Without a failure detector nothing is ever `Down`: skip the walk.
        let detector = membership?;
        let cluster = &ctx.config.cluster;
        let read = matches!(body, ClientRequest::Get { .. });
        // Which paths hand off (mirrors `start_read` / `start_write`): plain reads, and writes
        // in last-write-wins mode, below the linearizable level and outside datacenter levels.
        let sloppy = cluster.sloppy_quorum
            && !linearizable
            && groups.is_none()
            && (read || cluster.conflict == ConflictMode::Lww);
        let members: Vec<NodeId>;
        let need = match groups {
            Some(groups) => Need::Grouped { groups },
            None if sloppy => {
                members = ctx.ring.members().iter().map(|m| m.id).collect();
                Need::Sloppy {
                    members: &members,
                    needed: usize::from(needed),
                }
            }
            None => Need::Strict {
                replicas,
                needed: usize::from(needed),
            },
        };
        let now = ctx.last_monotonic;
        let short = shortfall(need, |node| {
            node != ctx.id && is_down(membership, node) && !self.heard_recently(detector, node, now)
        })?;
        Some(RequestError::ReplicasDown {
            reachable: u8::try_from(short.reachable).unwrap_or(u8::MAX),
            needed: u8::try_from(short.needed).unwrap_or(u8::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u32]) -> Vec<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    /// The vector-and-map store answers as an ordered map of the latest instant per node, for
    /// ids below and above the vector's bound and for the instant equal to its sentinel.
    #[test]
    fn heard_from_behaves_as_a_map_of_the_latest_instant() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut heard = HeardFrom::default();
        let mut model = std::collections::BTreeMap::new();
        let pick = [
            0,
            1,
            7,
            999,
            HeardFrom::DENSE_IDS - 1,
            HeardFrom::DENSE_IDS,
            u32::MAX,
        ];
        for _ in 0..4000 {
            let node = NodeId(pick[rng.gen_range(0..pick.len())]);
            if rng.gen_bool(0.5) {
                let at = if rng.gen_bool(0.1) {
                    Instant::from_nanos(u64::MAX)
                } else {
                    Instant::from_nanos(rng.gen_range(0..1000))
                };
                heard.insert(node, at);
                model.insert(node, at);
            }
            for &id in &pick {
                assert_eq!(
                    heard.get(NodeId(id)),
                    model.get(&NodeId(id)).copied(),
                    "n{id}"
                );
            }
        }
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "a table, one row per case")]
    fn refuses_only_when_the_live_nodes_cannot_be_enough() {
        let replicas = ids(&[1, 2, 3]);
        let ring = ids(&[0, 1, 2, 3, 4]);
        let group = |members: &[u32]| Group {
            members: ids(members),
            needed: 2,
        };
        let groups = vec![group(&[1, 2, 3]), group(&[4, 5, 6])];
        // (need, down nodes, expected shortfall as (reachable, needed))
        type Row<'a> = (Need<'a>, Vec<u32>, Option<(usize, usize)>);
        let table: Vec<Row<'_>> = vec![
            // Strict quorum of 2 of 3.
            (
                Need::Strict {
                    replicas: &replicas,
                    needed: 2,
                },
                vec![],
                None,
            ),
            (
                Need::Strict {
                    replicas: &replicas,
                    needed: 2,
                },
                vec![3],
                None,
            ),
            (
                Need::Strict {
                    replicas: &replicas,
                    needed: 2,
                },
                vec![2, 3],
                Some((1, 2)),
            ),
            (
                Need::Strict {
                    replicas: &replicas,
                    needed: 2,
                },
                vec![0, 4],
                None,
            ),
            // `all` needs every replica; `one` any.
            (
                Need::Strict {
                    replicas: &replicas,
                    needed: 3,
                },
                vec![1],
                Some((2, 3)),
            ),
            (
                Need::Strict {
                    replicas: &replicas,
                    needed: 1,
                },
                vec![2, 3],
                None,
            ),
            (
                Need::Strict {
                    replicas: &replicas,
                    needed: 1,
                },
                vec![1, 2, 3],
                Some((0, 1)),
            ),
            // Sloppy: stand-ins anywhere on the ring make up for down replicas.
            (
                Need::Sloppy {
                    members: &ring,
                    needed: 2,
                },
                vec![2, 3],
                None,
            ),
            (
                Need::Sloppy {
                    members: &ring,
                    needed: 3,
                },
                vec![1, 2],
                None,
            ),
            (
                Need::Sloppy {
                    members: &ring,
                    needed: 3,
                },
                vec![1, 2, 3],
                Some((2, 3)),
            ),
            (
                Need::Sloppy {
                    members: &ring,
                    needed: 2,
                },
                vec![1, 2, 3, 4],
                Some((1, 2)),
            ),
            // Grouped: every group's majority, from its own replicas only.
            (Need::Grouped { groups: &groups }, vec![1], None),
            (Need::Grouped { groups: &groups }, vec![1, 4], None),
            (Need::Grouped { groups: &groups }, vec![5, 6], Some((1, 2))),
            (
                Need::Grouped { groups: &groups },
                vec![1, 2, 0, 7],
                Some((1, 2)),
            ),
        ];
        for (need, down, expected) in table {
            let got = shortfall(need, |n| down.contains(&n.0)).map(|s| (s.reachable, s.needed));
            assert_eq!(got, expected, "{need:?} with {down:?} down");
        }
    }
}

#[cfg(test)]
mod node_tests {
    use super::super::gossip_tests::{Cluster, STEP_MS};
    use crate::client::{ClientReply, ClientRequest, Consistency, RequestError};
    use crate::config::ClusterConfig;
    use crate::id::{NodeId, RequestId};
    use crate::membership::MemberStatus;
    use crate::node::Output;
    use crate::storage::Storage;
    use bytes::Bytes;

    /// Four nodes, n = 3, nodes 2 and 3 dead and judged `Down` by the others.
    fn cluster_with_two_down(sloppy_quorum: bool) -> Cluster {
        let config = ClusterConfig {
            vnodes_per_node: 16,
            sloppy_quorum,
            // Far beyond the test's horizon: an answer in it is an answer at once.
            sloppy_after_ms: 60_000,
            request_timeout_ms: 120_000,
            ..ClusterConfig::default()
        };
        let mut cluster = Cluster::with_config(4, 0, config);
        cluster.run_ms(500);
        cluster.dead[2] = true;
        cluster.dead[3] = true;
        cluster.run_ms(2_000);
        for down in [2, 3] {
            assert_eq!(
                cluster.nodes[0].member_status(NodeId(down)),
                Some(MemberStatus::Down),
                "n0 has not judged n{down} down"
            );
        }
        cluster
    }

    /// A key whose replicas include both dead nodes and node 0.
    fn key_on_both_dead(cluster: &Cluster) -> Bytes {
        let ring = cluster.nodes[0].ring().clone();
        (0..10_000)
            .map(|i| Bytes::from(format!("key{i}")))
            .find(|k| {
                let replicas = ring.preference_list(k, 3);
                [0, 2, 3].iter().all(|&n| replicas.contains(&NodeId(n)))
            })
            .expect("some key has replicas 0, 2 and 3")
    }

    /// Sends `request` to node 0; returns its reply if it came before any other node was heard
    /// from, and how many messages node 0 sent in that first drain. Everything is then
    /// delivered as the harness does.
    fn ask_now(
        cluster: &mut Cluster,
        id: u64,
        request: ClientRequest,
    ) -> (Option<ClientReply>, usize) {
        let now = cluster.now();
        cluster.nodes[0].handle_client(now, RequestId(id), request);
        let mut reply = None;
        let mut sent = Vec::new();
        while let Some(output) = cluster.nodes[0].poll_output() {
            match output {
                Output::Reply { request, reply: r } if request == RequestId(id) => reply = Some(r),
                Output::Reply { request, reply } => cluster.replies.push((request, reply)),
                Output::Send { to, message } => sent.push((to, message)),
                Output::Persist { token } => {
                    cluster.nodes[0].storage_mut().sync().expect("sync");
                    cluster.nodes[0].handle_persisted(now, token);
                }
                Output::Event(_) => {}
            }
        }
        let count = sent.len();
        for (to, message) in sent {
            let j = to.0 as usize;
            if !cluster.dead[j] {
                cluster.nodes[j].handle_message(now, NodeId(0), message);
                cluster.pump(j);
            }
        }
        (reply, count)
    }

    fn put(key: &Bytes, level: Consistency) -> ClientRequest {
        ClientRequest::Put {
            key: key.clone(),
            value: Bytes::from_static(b"v"),
            context: None,
            consistency: Some(level),
        }
    }

    fn get(key: &Bytes, level: Consistency) -> ClientRequest {
        ClientRequest::Get {
            key: key.clone(),
            consistency: Some(level),
        }
    }

    #[test]
    fn a_quorum_of_down_replicas_fails_at_once_with_no_effect() {
        let mut cluster = cluster_with_two_down(false);
        let key = key_on_both_dead(&cluster);
        let refused = ClientReply::Rejected(RequestError::ReplicasDown {
            reachable: 1,
            needed: 2,
        });
        let (reply, sent) = ask_now(&mut cluster, 1, put(&key, Consistency::Quorum));
        assert_eq!(reply, Some(refused.clone()), "a quorum write waited");
        assert_eq!(sent, 0, "a refused write sent copies");
        assert_eq!(
            cluster.nodes[0].ctx.local_record(&key),
            Ok(None),
            "a refused write was applied by the coordinator's own replica"
        );
        let (reply, _) = ask_now(&mut cluster, 2, get(&key, Consistency::Quorum));
        assert_eq!(reply, Some(refused), "a quorum read waited");
        // What the live replica can serve alone is still served.
        let (reply, _) = ask_now(&mut cluster, 3, get(&key, Consistency::One));
        assert!(
            matches!(reply, Some(ClientReply::NotFound { acks: 1, .. })),
            "a read at `one` was refused: {reply:?}"
        );
        let (reply, _) = ask_now(&mut cluster, 4, get(&key, Consistency::Linearizable));
        assert!(
            matches!(
                reply,
                Some(ClientReply::Rejected(RequestError::ReplicasDown { .. }))
            ),
            "a linearizable read (strict majority) waited: {reply:?}"
        );
    }

    #[test]
    fn sloppy_quorum_counts_stand_ins_before_refusing() {
        let mut cluster = cluster_with_two_down(true);
        let key = key_on_both_dead(&cluster);
        // Two live nodes of four: a stand-in makes up a quorum of two...
        cluster.replies.clear();
        let (reply, sent) = ask_now(&mut cluster, 1, put(&key, Consistency::Quorum));
        assert!(
            !matches!(
                reply,
                Some(ClientReply::Rejected(RequestError::ReplicasDown { .. }))
            ),
            "a sloppy write that a stand-in can complete was refused"
        );
        assert!(sent > 0, "the sloppy write sent nothing to its stand-in");
        cluster.run_ms(STEP_MS);
        assert!(
            cluster
                .replies
                .iter()
                .any(|(id, r)| *id == RequestId(1) && matches!(r, ClientReply::Written { .. }))
                || matches!(reply, Some(ClientReply::Written { .. })),
            "the sloppy write did not complete: {reply:?} {:?}",
            cluster.replies
        );
        // ... but nothing makes up `all` (three) from two live nodes.
        let (reply, sent) = ask_now(&mut cluster, 2, put(&key, Consistency::All));
        assert_eq!(
            reply,
            Some(ClientReply::Rejected(RequestError::ReplicasDown {
                reachable: 2,
                needed: 3
            }))
        );
        assert_eq!(sent, 0);
    }

    #[test]
    fn a_node_heard_again_is_no_longer_refused() {
        let mut cluster = cluster_with_two_down(false);
        let key = key_on_both_dead(&cluster);
        let (reply, _) = ask_now(&mut cluster, 1, put(&key, Consistency::Quorum));
        assert!(matches!(
            reply,
            Some(ClientReply::Rejected(RequestError::ReplicasDown { .. }))
        ));
        cluster.dead[3] = false;
        cluster.run_ms(1_000);
        assert_ne!(
            cluster.nodes[0].member_status(NodeId(3)),
            Some(MemberStatus::Down),
            "n3 is still judged down a second after it came back"
        );
        cluster.replies.clear();
        let (reply, _) = ask_now(&mut cluster, 2, put(&key, Consistency::Quorum));
        assert!(
            !matches!(reply, Some(ClientReply::Rejected(_))),
            "refused after the replica came back: {reply:?}"
        );
        cluster.run_ms(STEP_MS);
        assert!(
            cluster
                .replies
                .iter()
                .any(|(id, r)| *id == RequestId(2)
                    && matches!(r, ClientReply::Written { acks: 2, .. })),
            "the write did not complete on the two live replicas: {:?}",
            cluster.replies
        );
    }

    #[test]
    fn a_down_node_heard_from_directly_is_not_counted_down() {
        let mut cluster = cluster_with_two_down(false);
        let key = key_on_both_dead(&cluster);
        // n3 reaches n0 (an anti-entropy round, say) before gossip has carried its heartbeat.
        let now = cluster.now();
        let roots = crate::message::Message::AeRoots { roots: Vec::new() };
        cluster.nodes[0].handle_message(now, NodeId(3), roots);
        cluster.pump(0);
        assert_eq!(
            cluster.nodes[0].member_status(NodeId(3)),
            Some(MemberStatus::Down),
            "the test needs n3 still judged down"
        );
        let (reply, sent) = ask_now(&mut cluster, 1, put(&key, Consistency::Quorum));
        assert_eq!(
            reply, None,
            "refused although n3 was just heard from: {reply:?}"
        );
        assert!(sent > 0, "the write was not sent to its replicas");
        // Once that evidence is older than the suspicion time, the verdict counts again.
        cluster.run_ms(1_500);
        let (reply, _) = ask_now(&mut cluster, 2, put(&key, Consistency::Quorum));
        assert!(
            matches!(
                reply,
                Some(ClientReply::Rejected(RequestError::ReplicasDown { .. }))
            ),
            "{reply:?}"
        );
    }
}
