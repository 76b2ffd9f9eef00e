//! Quorum as a value: a tracker that records the answers of one round trip and says where the
//! round stands, `Pending`, `Met` or `Failed`, instead of booleans recomputed in every handler
//! (raft-rs's `quorum/majority.rs` and `joint.rs` are the model; STYLE.md §3 and §6).
//!
//! Three shapes of quorum share one tracker:
//! * **a plain count**: `needed` of the voters (`one`, `quorum`, `all`, a number, a majority);
//! * **stand-ins**: with sloppy quorum, a fallback answers for a replica that stayed silent; its
//!   acknowledgement counts once, *as that replica* (so the replica's own late acknowledgement,
//!   or a second stand-in's, is a duplicate and counts for nothing). A refusal is different: the
//!   replica counts as refused only once *every* copy sent for it (its own and each stand-in's)
//!   was refused, because a stand-in's refusal says nothing of the copy the silent replica may
//!   still apply, and a replica's refusal nothing of the hint its stand-in may hold. Counting one
//!   copy's refusal for the replica let a write be answered "no effect" while the other copy
//!   took effect;
//! * **per-datacenter groups**: `each_quorum` is the joint rule (every group reaches its own
//!   majority), `local_quorum` the same rule over the coordinator's datacenter alone.
//!
//! A refusal counts toward `Failed` as soon as the quorum can no longer be met from the voters
//! that have not refused (for groups: as soon as one group cannot). An answer from a node that is
//! neither a voter nor a stand-in, or a second answer from the same (logical) voter, is stale and
//! changes nothing: the caller counts it as such.

use crate::id::NodeId;

/// Where a quorum stands: a value, never an error (STYLE.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumOutcome {
    /// Neither met nor impossible yet.
    Pending,
    /// The quorum is met, with `acks` positive answers in all (groups: counting every voter).
    Met {
        /// Positive answers recorded.
        acks: usize,
    },
    /// Too many voters refused for the quorum to be met any more.
    Failed {
        /// Positive answers recorded (groups: in the first group that can no longer be met).
        got: usize,
        /// Positive answers that were required (groups: of that group).
        needed: usize,
    },
}

/// One datacenter's replicas and how many of them must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The group's replicas (all of them voters of the quorum).
    pub members: Vec<NodeId>,
    /// Answers required from `members`.
    pub needed: usize,
}

/// How answers are judged.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// `needed` of all voters.
    Count { needed: usize },
    /// Every group's own quorum (the joint rule).
    Groups(Vec<Group>),
}

/// What one answer did to the tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Counted, for the logical voter named (the replica a stand-in answers for).
    Counted(NodeId),
    /// Not counted: not a voter nor a stand-in, or its logical voter already answered.
    Stale,
}

/// The answers of one round trip to a set of voters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    voters: Vec<NodeId>,
    rule: Rule,
    /// (fallback, the voter it stands in for).
    stand_ins: Vec<(NodeId, NodeId)>,
    /// Logical voters that answered yes, in order of arrival.
    acked: Vec<NodeId>,
    /// Nodes (voters or stand-ins) that refused, in order of arrival: a logical voter is refused
    /// once it and every stand-in for it are here (see [`Quorum::is_refused`]).
    refusals: Vec<NodeId>,
}

impl Quorum {
    /// `needed` positive answers of `voters`.
    pub fn count(voters: Vec<NodeId>, needed: usize) -> Self {
        Quorum::with_rule(voters, Rule::Count { needed })
    }

    /// Every group's own quorum; the groups' members must be among `voters` (a voter outside
    /// every group may answer, and counts in `acks`, but decides nothing).
    pub fn grouped(voters: Vec<NodeId>, groups: Vec<Group>) -> Self {
        debug_assert!(
            groups
                .iter()
                .all(|g| g.members.iter().all(|m| voters.contains(m))),
            "a group member that is not a voter"
        );
        Quorum::with_rule(voters, Rule::Groups(groups))
    }

    fn with_rule(voters: Vec<NodeId>, rule: Rule) -> Self {
        let capacity = voters.len();
        Quorum {
            voters,
            rule,
            stand_ins: Vec::new(),
            acked: Vec::with_capacity(capacity),
            refusals: Vec::new(),
        }
    }

    /// Adds a voter that counts as itself (a sloppy read asks a fallback for its own copy).
    pub fn add_voter(&mut self, node: NodeId) {
        if !self.voters.contains(&node) {
            self.voters.push(node);
        }
    }

    /// `fallback` answers from now on for `voter` (sloppy writes: a hinted copy).
    pub fn add_stand_in(&mut self, fallback: NodeId, voter: NodeId) {
        debug_assert!(self.voters.contains(&voter), "a stand-in for a non-voter");
        self.stand_ins.push((fallback, voter));
    }

    /// The logical voter `from` answers for: the replica it stands in for, or itself if it is
    /// a voter; `None` if it may not answer at all.
    pub fn logical(&self, from: NodeId) -> Option<NodeId> {
        if let Some(&(_, voter)) = self.stand_ins.iter().find(|(f, _)| *f == from) {
            return Some(voter);
        }
        self.voters.contains(&from).then_some(from)
    }

    /// Whether `from` may answer (a voter or a stand-in).
    pub fn is_asked(&self, from: NodeId) -> bool {
        self.logical(from).is_some()
    }

    /// Whether `voter` (a logical voter) has answered either way.
    pub fn has_answered(&self, voter: NodeId) -> bool {
        self.acked.contains(&voter) || self.is_refused(voter)
    }

    /// Whether every copy sent for `voter` (its own and each stand-in's) was refused, and none
    /// acknowledged: only then can the voter no longer count toward the quorum.
    pub fn is_refused(&self, voter: NodeId) -> bool {
        !self.acked.contains(&voter)
            && self.refusals.contains(&voter)
            && self
                .stand_ins
                .iter()
                .filter(|&&(_, v)| v == voter)
                .all(|(f, _)| self.refusals.contains(f))
    }

    /// Records `from`'s answer: an acknowledgement once per logical voter, a refusal once per
    /// node (it counts against the voter only with its other copies', see [`Quorum::is_refused`]).
    pub fn record(&mut self, from: NodeId, yes: bool) -> Recorded {
        let Some(voter) = self.logical(from) else {
            return Recorded::Stale;
        };
        if self.acked.contains(&voter) || self.refusals.contains(&from) {
            return Recorded::Stale;
        }
        if yes {
            self.acked.push(voter);
        } else {
            self.refusals.push(from);
        }
        Recorded::Counted(voter)
    }

    /// Logical voters refused, in voter order.
    fn refused(&self) -> impl Iterator<Item = NodeId> + '_ {
        // Without a refusal (the usual case) no voter is refused: no look at each of them (this
        // runs on every answer and in every invariant check).
        let voters = if self.refusals.is_empty() {
            &[][..]
        } else {
            &self.voters[..]
        };
        voters.iter().copied().filter(|&v| self.is_refused(v))
    }

    /// Where the quorum stands. A pure function of the answers recorded.
    pub fn outcome(&self) -> QuorumOutcome {
        let acks = self.acked.len();
        match &self.rule {
            Rule::Count { needed } => {
                if acks >= *needed {
                    QuorumOutcome::Met { acks }
                } else if self.voters.len().saturating_sub(self.refused_voters()) < *needed {
                    QuorumOutcome::Failed {
                        got: acks,
                        needed: *needed,
                    }
                } else {
                    QuorumOutcome::Pending
                }
            }
            Rule::Groups(groups) => {
                let refused: Vec<NodeId> = self.refused().collect();
                let count = |list: &[NodeId], group: &Group| {
                    group.members.iter().filter(|m| list.contains(m)).count()
                };
                let failed = groups
                    .iter()
                    .find(|group| group.members.len() - count(&refused, group) < group.needed);
                if let Some(group) = failed {
                    QuorumOutcome::Failed {
                        got: count(&self.acked, group),
                        needed: group.needed,
                    }
                } else if groups.iter().all(|g| count(&self.acked, g) >= g.needed) {
                    QuorumOutcome::Met { acks }
                } else {
                    QuorumOutcome::Pending
                }
            }
        }
    }

    /// Whether the quorum is met.
    pub fn is_met(&self) -> bool {
        matches!(self.outcome(), QuorumOutcome::Met { .. })
    }

    /// Whether the quorum counts per datacenter group.
    pub fn is_grouped(&self) -> bool {
        matches!(self.rule, Rule::Groups(_))
    }

    /// Positive answers recorded.
    pub fn acks(&self) -> usize {
        self.acked.len()
    }

    /// Logical voters refused (every copy sent for them refused).
    pub fn refused_voters(&self) -> usize {
        self.refused().count()
    }

    /// Refusals received, one per node that refused (a voter and its stand-in are two).
    pub fn refusals(&self) -> usize {
        self.refusals.len()
    }

    /// Every voter has answered either way: nothing more can arrive.
    pub fn all_answered(&self) -> bool {
        self.acked.len() + self.refused_voters() >= self.voters.len()
    }

    /// The voters (a stand-in is not one).
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// The logical voters that answered yes.
    pub fn acked(&self) -> &[NodeId] {
        &self.acked
    }

    /// (fallback, voter) pairs.
    pub fn stand_ins(&self) -> &[(NodeId, NodeId)] {
        &self.stand_ins
    }

    /// Whether some stand-in answers for `voter`.
    pub fn has_stand_in(&self, voter: NodeId) -> bool {
        self.stand_ins.iter().any(|&(_, v)| v == voter)
    }

    /// Internal consistency; panics only on a bug.
    pub fn check_invariants(&self) {
        for voter in &self.acked {
            assert!(self.voters.contains(voter), "an answer from a non-voter");
        }
        for (i, node) in self.refusals.iter().enumerate() {
            assert!(self.is_asked(*node), "a refusal from a node never asked");
            assert!(
                !self.refusals[..i].contains(node),
                "a refusal counted twice"
            );
        }
        for (i, voter) in self.acked.iter().enumerate() {
            assert!(
                !self.acked[..i].contains(voter),
                "an acknowledgement counted twice"
            );
        }
        assert!(
            self.acked.len() + self.refused_voters() <= self.voters.len(),
            "more answers than voters"
        );
        for (i, (fallback, voter)) in self.stand_ins.iter().enumerate() {
            assert!(self.voters.contains(voter), "a stand-in for a non-voter");
            assert!(!self.voters.contains(fallback), "a voter standing in");
            assert!(
                self.stand_ins[..i].iter().all(|(f, _)| f != fallback),
                "a fallback standing in twice"
            );
        }
        if let Rule::Groups(groups) = &self.rule {
            for group in groups {
                assert!(group.needed <= group.members.len(), "an impossible group");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn ids(list: &[u32]) -> Vec<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    /// One answer of a table row: node, yes or no.
    type Answer = (u32, bool);

    /// Plays `answers` into `quorum` and renders each step's record and outcome.
    fn play(name: &str, mut quorum: Quorum, answers: &[Answer], out: &mut String) {
        let _ = writeln!(out, "{name}");
        for &(node, yes) in answers {
            let recorded = quorum.record(NodeId(node), yes);
            quorum.check_invariants();
            let verb = if yes { "ack" } else { "refuse" };
            let _ = writeln!(
                out,
                "  n{node} {verb:<6} -> {recorded:?}, {:?}",
                quorum.outcome()
            );
        }
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "a table, one row per case")]
    fn a_table_of_quorums() {
        let mut out = String::new();
        let three = || ids(&[1, 2, 3]);
        play(
            "quorum 2 of 3",
            Quorum::count(three(), 2),
            &[(1, true), (1, true), (2, true), (3, true)],
            &mut out,
        );
        play(
            "quorum 2 of 3, two refusals fail it",
            Quorum::count(three(), 2),
            &[(1, false), (2, true), (3, false)],
            &mut out,
        );
        play(
            "all of 3, one refusal fails it at once",
            Quorum::count(three(), 3),
            &[(1, true), (2, false), (3, true)],
            &mut out,
        );
        play(
            "one of 3, a stranger is stale",
            Quorum::count(three(), 1),
            &[(9, true), (2, false), (1, false), (3, true)],
            &mut out,
        );
        play(
            "a refusal then an answer from the same voter",
            Quorum::count(three(), 2),
            &[(1, false), (1, true), (2, true), (3, true)],
            &mut out,
        );
        let mut sloppy = Quorum::count(three(), 2);
        sloppy.add_stand_in(NodeId(4), NodeId(2));
        sloppy.add_stand_in(NodeId(5), NodeId(3));
        play(
            "stand-ins 4 for 2 and 5 for 3: each counts once, as its voter",
            sloppy.clone(),
            &[(4, true), (2, true), (5, true), (3, true)],
            &mut out,
        );
        play(
            "a voter is refused only when its own copy and its stand-in's both are",
            sloppy.clone(),
            &[(1, true), (4, false), (3, false), (5, false), (2, false)],
            &mut out,
        );
        play(
            "a stand-in's acknowledgement makes good its voter's refusal",
            sloppy,
            &[(2, false), (3, false), (4, true), (5, false), (1, true)],
            &mut out,
        );
        let mut read = Quorum::count(three(), 2);
        read.add_voter(NodeId(4));
        play(
            "a fallback asked for its own copy counts as itself",
            read,
            &[(1, false), (2, false), (4, true), (3, true)],
            &mut out,
        );
        let each = vec![
            Group {
                members: ids(&[1, 2, 3]),
                needed: 2,
            },
            Group {
                members: ids(&[4, 5, 6]),
                needed: 2,
            },
        ];
        let six = || ids(&[1, 2, 3, 4, 5, 6]);
        play(
            "each_quorum: four acks in one datacenter are not enough",
            Quorum::grouped(six(), each.clone()),
            &[(1, true), (2, true), (3, true), (4, true), (5, true)],
            &mut out,
        );
        play(
            "each_quorum: one datacenter losing its majority fails the whole",
            Quorum::grouped(six(), each),
            &[(1, true), (2, true), (5, false), (4, true), (6, false)],
            &mut out,
        );
        let local = vec![Group {
            members: ids(&[1, 2, 3]),
            needed: 2,
        }];
        play(
            "local_quorum: the other datacenter counts in acks but decides nothing",
            Quorum::grouped(six(), local),
            &[(4, true), (5, true), (6, false), (1, true), (3, true)],
            &mut out,
        );
        insta::assert_snapshot!(out);
    }

    #[test]
    fn an_empty_quorum_is_met_and_an_impossible_one_fails_at_once() {
        assert_eq!(
            Quorum::count(ids(&[1]), 0).outcome(),
            QuorumOutcome::Met { acks: 0 }
        );
        assert_eq!(
            Quorum::count(ids(&[1, 2]), 3).outcome(),
            QuorumOutcome::Failed { got: 0, needed: 3 }
        );
        assert_eq!(
            Quorum::count(Vec::new(), 1).outcome(),
            QuorumOutcome::Failed { got: 0, needed: 1 }
        );
    }

    #[test]
    fn every_voter_answering_ends_the_round() {
        let mut quorum = Quorum::count(ids(&[1, 2, 3]), 3);
        assert!(!quorum.all_answered());
        quorum.record(NodeId(1), true);
        quorum.record(NodeId(2), false);
        assert!(!quorum.all_answered());
        quorum.record(NodeId(3), true);
        assert!(quorum.all_answered());
        assert_eq!((quorum.acks(), quorum.refused_voters()), (2, 1));
    }
}
