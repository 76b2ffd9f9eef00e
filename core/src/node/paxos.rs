//! Conditional writes: per-key single-decree Paxos rounds, in the style of Cassandra's
//! lightweight transactions (issue #13, item 2; PITFALLS: "Conditional writes on top of quorums
//! are not atomic").
//!
//! Why not ABD: the `linearizable` level's ABD write queries a majority and then writes; two
//! concurrent compare-and-sets that both read value `a` would both write, and both succeed. A
//! compare-and-set needs the read and the write of one key to be a single step, which is what a
//! Paxos round gives: while a proposer holds the promise of a majority, no other proposer can
//! get a proposal accepted by a majority.
//!
//! One round, for a key with replicas `R` and majority `m`:
//! 1. **Prepare** with a ballot (this node's hybrid clock and id: unique across nodes and, with
//!    the clock floor, across restarts). Each replica promises durably to accept nothing lower
//!    and answers with its promise, its accepted proposal, the ballot of its latest commit and
//!    its record of the key.
//! 2. If the promises name an accepted proposal newer than every commit they name, some earlier
//!    round may have chosen it: it is **re-proposed** at our ballot and committed first, and the
//!    round starts over (skipping this loses chosen values: the `skip-replay` flaw).
//! 3. Otherwise the condition is judged on the newest record of the majority. False: that record
//!    is written back to a majority (as an ABD read does, so no later read can see an older one)
//!    and the reply says "not applied". True: the new record, with an lww version strictly
//!    higher than any version seen, is **proposed**; a replica accepts unless it promised a
//!    higher ballot (accepting lower ones: the `accept-lower-ballot` flaw).
//! 4. Once a majority accepted, the record is **committed**: merged into every replica's record
//!    like a linearizable write; the reply comes once a majority has it durably.
//!
//! Contention (a promise or acceptance refused for a higher ballot) is retried after a random
//! backoff from the node's own rng until the request's deadline. A proposal of the request's own
//! value that some replica may have accepted makes the outcome `Indeterminate` if the round
//! cannot finish: a later round could still choose it.
//!
//! Why plain linearizable reads (ABD) stay linearizable alongside: records only ever hold chosen
//! values, committed in ballot order with versions that grow with the ballot (each proposal's
//! version is above everything its majority reported, and its majority intersects the majority
//! that accepted the previous chosen value). So "the newest version on a majority" is the latest
//! chosen value that is visible anywhere; an ABD read returns it and writes it back before
//! answering, as it does for ABD writes. A value is visible (in some record) only once chosen,
//! and the proposer that chose it, or the next round to find it accepted, commits it.
//!
//! Only conditional writes are Paxos rounds. Plain writes (`PUT`/`DEL`, at `linearizable` as at
//! every other level) do not take part: at `linearizable` they stay ABD writes (query a
//! majority, then write a strictly higher version), which keeps the many-writer contention of
//! plain linearizable workloads from livelocking ballots. The cost, the same rule as Cassandra's
//! (do not mix LWT and non-LWT writes on a key): **mixing plain writes and conditional writes on
//! the same key is not linearizable.** A plain write lands outside the ballot order, so it can
//! fall between a compare-and-set's read and its write and be silently lost, or a round can
//! judge its condition against a value a plain write has since replaced. Use conditional writes
//! only (`SET ... GET` without `NX`/`XX` is the unconditional write that goes through Paxos) on a
//! key that is ever used with one; linearizable reads are safe on such a key.
//!
//! Where the acceptor state lives: per key, under the reserved key `PAXOS_PREFIX | key`, as an
//! lww record whose value is the encoded [`PaxosState`]. A reserved key rather than a record
//! field because the state belongs to one acceptor: read repair, anti-entropy, hints and handover
//! copy records between replicas, and all of them skip reserved keys (a copied promise would be a
//! promise nobody made). The cost: a replica whose disk is wiped, or a replica that joins the
//! key's range, starts with no promise (it re-learns records through handover); as in Cassandra,
//! Paxos safety then rests on the other replicas of the majority.
//!
//! Strict majorities of the key's `n` replicas only, never fallbacks; last-write-wins clusters
//! only (vector-clock clusters refuse with `LinearizableNeedsLww`). Every message carries the
//! proposer's ring epoch and replicas fence it like `LinRead`/`LinWrite` (see `handover`).

use super::context::Context;
use super::coordinator::{Coordinator, Operation};
use super::durability::{AfterPersist, Durability};
use super::handover::Handover;
use super::replica::Applied;
use crate::client::{ClientReply, WriteCondition};
use crate::codec;
use crate::id::{key_digest, NodeId, OperationId, RequestId};
use crate::message::{Ballot, Message, Promise, ReplicaError};
use crate::storage::Storage;
use crate::time::{Instant, Now};
use crate::version::{LwwRecord, LwwVersion, Record, WriteVersion};
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where each key's acceptor state lives (reserved: never replicated, see the module docs).
pub const PAXOS_PREFIX: &[u8] = b"\xff\xffpaxos/";

/// The first backoff after contention, doubled per round up to `BACKOFF_MS_MAX`; the wait is
/// drawn uniformly below it so two contending proposers drift apart.
const BACKOFF_MS_MIN: u64 = 2;
/// The largest backoff drawn (a request's deadline bounds the retries anyway).
const BACKOFF_MS_MAX: u64 = 64;

/// TEST ONLY: a planted Paxos bug, so the simulator can show its `cas` check catches it
/// (accepted by `ClusterConfig::validate` only in simulation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaxosFlaw {
    /// No bug.
    #[default]
    None,
    /// Replicas accept a proposal whatever they promised.
    AcceptLowerBallot,
    /// Proposers ignore accepted proposals found in the promises.
    SkipReplay,
}

/// One replica's durable Paxos state for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaxosState {
    /// The highest ballot promised.
    pub promised: Option<Ballot>,
    /// The latest proposal accepted and not known committed.
    pub accepted: Option<(Ballot, LwwRecord)>,
    /// The ballot of the latest commit applied.
    pub committed: Option<Ballot>,
}

impl PaxosState {
    /// Whether the accepted proposal, if any, is at or below the promise: true of every state
    /// the policies below make from one that already was (a stored state is bytes from disk,
    /// so this is checked on transitions, never asserted on a loaded state).
    pub fn ballots_ordered(&self) -> bool {
        self.accepted
            .as_ref()
            .is_none_or(|(ballot, _)| self.promised >= Some(*ballot))
    }
}

/// The state after promising `ballot`, or `None` if a higher ballot was promised (a repeated
/// prepare of the same ballot is promised again). A pure policy.
pub fn promise(state: &PaxosState, ballot: Ballot) -> Option<PaxosState> {
    if state.promised.is_some_and(|p| p > ballot) {
        return None;
    }
    Some(PaxosState {
        promised: Some(ballot),
        ..state.clone()
    })
}

/// The state after accepting `proposal` at `ballot`, or `None` if a higher ballot was promised.
/// A pure policy.
pub fn accept(
    state: &PaxosState,
    ballot: Ballot,
    proposal: &LwwRecord,
    flaw: PaxosFlaw,
) -> Option<PaxosState> {
    let refused = state.promised.is_some_and(|p| p > ballot);
    if refused && flaw != PaxosFlaw::AcceptLowerBallot {
        return None;
    }
    Some(PaxosState {
        promised: state.promised.max(Some(ballot)),
        accepted: Some((ballot, proposal.clone())),
        committed: state.committed,
    })
}

/// The state after a commit at `ballot`: an accepted proposal no newer than it is no longer in
/// progress. A pure policy.
pub fn commit(state: &PaxosState, ballot: Ballot) -> PaxosState {
    let committed = state.committed.max(Some(ballot));
    let accepted = state.accepted.clone().filter(|(b, _)| Some(*b) > committed);
    PaxosState {
        promised: state.promised,
        accepted,
        committed,
    }
}

/// The proposal a round must finish before its own: the highest-ballot accepted proposal of the
/// promises, if it is newer than every commit they report. A pure policy.
pub fn in_progress(promises: &[Promise]) -> Option<(Ballot, LwwRecord)> {
    let committed = promises.iter().filter_map(|p| p.committed).max();
    promises
        .iter()
        .filter_map(|p| p.accepted.clone())
        .max_by_key(|(b, _)| *b)
        .filter(|(b, _)| Some(*b) > committed)
}

/// The backoff before round `round` (1-based), drawn from the node's rng. A pure policy.
pub fn backoff(round: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = BACKOFF_MS_MIN
        .saturating_mul(1 << round.min(8))
        .min(BACKOFF_MS_MAX);
    Duration::from_millis(rng.gen_range(1..=ceiling))
}

/// Whether a phase reached its majority: a value, decided from a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumOutcome {
    /// Still waiting.
    Pending,
    /// A majority said yes.
    Met,
    /// Too many said no for a majority to be possible.
    Failed,
}

/// The yes and no votes of one phase, one per replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Votes {
    yes: Vec<NodeId>,
    no: Vec<NodeId>,
}

impl Votes {
    /// Counts `from`'s vote once; `false` if it already voted (a duplicate).
    fn record(&mut self, from: NodeId, yes: bool) -> bool {
        if self.yes.contains(&from) || self.no.contains(&from) {
            return false;
        }
        if yes {
            self.yes.push(from);
        } else {
            self.no.push(from);
        }
        true
    }

    /// The outcome with `replicas` voters of which `needed` must say yes. A pure policy.
    pub fn outcome(&self, replicas: usize, needed: usize) -> QuorumOutcome {
        if self.yes.len() >= needed {
            QuorumOutcome::Met
        } else if replicas.saturating_sub(self.no.len()) < needed {
            QuorumOutcome::Failed
        } else {
            QuorumOutcome::Pending
        }
    }

    fn acks(&self) -> u8 {
        u8::try_from(self.yes.len()).unwrap_or(u8::MAX)
    }
}

/// What a Paxos request wants written: only conditional writes are Paxos rounds (plain
/// writes at `linearizable` are ABD writes, see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Intent {
    /// A conditional write (`SET NX|XX|GET`, `KV.CAS`): replies `Conditional`.
    Conditional {
        condition: WriteCondition,
        value: Option<Bytes>,
    },
}

/// Where a round stands.
#[derive(Debug)]
enum Phase {
    /// Waiting for promises.
    Prepare {
        votes: Votes,
        promises: Vec<Promise>,
    },
    /// Waiting for acceptances of `proposal` (`own`: the request's value, else a re-proposal).
    Propose {
        own: bool,
        proposal: LwwRecord,
        previous: Option<Bytes>,
        votes: Votes,
        /// A refusal that may have come after the proposal was staged (not a plain "promised
        /// higher"): the proposal may be accepted there.
        unclean: bool,
    },
    /// Waiting for durable commits of `record`.
    Commit {
        own: bool,
        record: LwwRecord,
        previous: Option<Bytes>,
        votes: Votes,
    },
    /// Condition false: waiting for the write-back of the record it was judged on.
    WriteBack {
        previous: Option<Bytes>,
        votes: Votes,
    },
    /// Contention: the next round starts at the tracked deadline.
    Backoff,
}

/// A Paxos request in flight at its proposer.
#[derive(Debug)]
pub(super) struct PaxosOperation {
    request: RequestId,
    key: Bytes,
    intent: Intent,
    replicas: Vec<NodeId>,
    needed: u8,
    epoch: u64,
    final_deadline: Instant,
    ballot: Ballot,
    /// Rounds started (1 for the first).
    rounds: u32,
    /// The highest ballot any replica reported: the next round's must be above it.
    highest_seen: Option<Ballot>,
    phase: Phase,
}

impl PaxosOperation {
    pub(super) fn check_invariants(&self) {
        assert!(self.rounds >= 1);
        assert!(
            usize::from(self.needed) > self.replicas.len() / 2,
            "strict majority"
        );
        assert!(usize::from(self.needed) <= self.replicas.len());
        if let Phase::Propose { proposal, .. }
        | Phase::Commit {
            record: proposal, ..
        } = &self.phase
        {
            assert!(proposal.version.timestamp_micros > 0);
        }
        let votes = match &self.phase {
            Phase::Prepare { votes, promises } => {
                // Each granted promise is a yes vote; the promises leave the phase with it.
                assert_eq!(promises.len(), votes.yes.len(), "one promise per yes vote");
                Some(votes)
            }
            Phase::Propose { votes, .. }
            | Phase::Commit { votes, .. }
            | Phase::WriteBack { votes, .. } => Some(votes),
            Phase::Backoff => None,
        };
        if let Some(votes) = votes {
            for voter in votes.yes.iter().chain(&votes.no) {
                assert!(self.replicas.contains(voter), "only replicas vote");
            }
            assert!(
                votes.yes.iter().all(|v| !votes.no.contains(v)),
                "a replica votes once"
            );
        }
    }
}

/// The reserved storage key of `key`'s acceptor state.
fn state_key(key: &[u8]) -> Bytes {
    let mut stored = Vec::with_capacity(PAXOS_PREFIX.len() + key.len());
    stored.extend_from_slice(PAXOS_PREFIX);
    stored.extend_from_slice(key);
    Bytes::from(stored)
}

/// The live value a condition is judged on, at the proposer's hybrid now: an expired value is
/// absent (as for reads, expiry is judged after the merge); a counter's value is its decimal.
fn live(record: Option<&Record>, now_micros: u64) -> Option<Bytes> {
    match record {
        Some(Record::Lww(r)) => r.live_value_at(now_micros).cloned(),
        Some(counter @ Record::Counter(_)) => counter.live_values().pop(),
        _ => None,
    }
}

/// The Paxos mechanism of one node (see the module docs).
///
/// As an acceptor it owns the replies that wait for their state to be durable; the per-key
/// acceptor state itself lives in storage under reserved keys, never only in memory (a promise
/// must survive a crash). As a proposer its rounds live in the coordinator's operation table,
/// where they share the deadlines and stale-reply rules of every other operation; [`Proposer`]
/// is the view that works on them.
#[derive(Debug, Default)]
pub(super) struct Paxos {
    /// Replies waiting for their durability, by number (see `AfterPersist::PaxosReply`).
    held: BTreeMap<u64, (NodeId, Message)>,
    /// The number of the next held reply.
    next_held: u64,
}

/// An acceptor's answer to one request.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A refusal that rests on nothing staged: it leaves at once.
    Now(Message),
    /// It rests on acceptor state (staged now or earlier, maybe not yet durable): it leaves once
    /// everything staged so far is durable, so a crash cannot take back what it said.
    WhenDurable(Message),
}

impl Paxos {
    /// A Paxos message from `from`: requests go to this node's acceptor, promises and
    /// acceptances to the round (of this node's proposer) they answer.
    pub(super) fn handle_message<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        coordinator: &mut Coordinator,
        handover: &mut Handover,
        from: NodeId,
        message: Message,
    ) {
        let mut proposer = self.proposer(ctx, coordinator, handover);
        match message {
            Message::PaxosPromise {
                op,
                key_digest,
                result,
            } => proposer.on_promise(from, op, key_digest, result),
            Message::PaxosAccept {
                op,
                key_digest,
                result,
            } => proposer.on_accept(from, op, key_digest, result),
            request => proposer.serve(from, request),
        }
    }

    /// The persist held reply `number` waited for is durable: the reply leaves.
    pub(super) fn handle_persisted<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        coordinator: &mut Coordinator,
        handover: &mut Handover,
        number: u64,
    ) {
        if let Some((to, reply)) = self.release(number) {
            self.proposer(ctx, coordinator, handover).respond(to, reply);
        }
    }

    /// The persist held reply `number` waited for failed: the reply becomes a storage refusal
    /// (one that may come after staging, see `Proposer::on_accept`).
    pub(super) fn handle_persist_failed<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        coordinator: &mut Coordinator,
        handover: &mut Handover,
        number: u64,
    ) {
        if let Some((to, reply)) = self.refuse(number) {
            self.proposer(ctx, coordinator, handover).respond(to, reply);
        }
    }

    /// The proposer's view for one input: this state and the state of the mechanisms a round
    /// works on.
    pub(super) fn proposer<'a, S: Storage>(
        &'a mut self,
        ctx: &'a mut Context<S>,
        coordinator: &'a mut Coordinator,
        handover: &'a mut Handover,
    ) -> Proposer<'a, S> {
        Proposer {
            paxos: self,
            ctx,
            coordinator,
            handover,
        }
    }

    // ---------------------------------------------------------------- acceptor (replica)

    /// Serves an acceptor request from `from` (a prepare, a proposal, a commit, or this node's
    /// own copy of a write-back) and returns the reply that leaves now, if any; a reply that
    /// waits for durability is held until `handle_persisted`.
    fn serve<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        handover: &mut Handover,
        from: NodeId,
        request: Message,
    ) -> Option<Message> {
        let answer = match request {
            Message::PaxosPrepare {
                op,
                key,
                ballot,
                epoch,
            } => prepare(ctx, handover, op, key, ballot, epoch),
            Message::PaxosPropose {
                op,
                key,
                ballot,
                proposal,
                epoch,
            } => propose(ctx, handover, op, key, ballot, proposal, epoch),
            Message::PaxosCommit {
                op,
                key,
                ballot,
                record,
                epoch,
            } => commit_record(ctx, handover, op, key, ballot, record, epoch),
            Message::LinWrite {
                op,
                key,
                record,
                epoch,
            } => write_back(ctx, handover, op, key, &record, epoch),
            // The node routes only acceptor requests here; anything else has no answer.
            _ => return None,
        };
        match answer {
            Answer::Now(reply) => Some(reply),
            Answer::WhenDurable(reply) => self.hold(ctx, from, reply),
        }
    }

    /// Holds `reply` to `to` until everything staged so far is durable; returns it if that is
    /// already so (or its refusal, if storage cannot make it so).
    fn hold<S: Storage>(
        &mut self,
        ctx: &mut Context<S>,
        to: NodeId,
        reply: Message,
    ) -> Option<Message> {
        let number = self.next_held;
        self.next_held += 1;
        self.held.insert(number, (to, reply));
        match ctx.wait_durable(AfterPersist::PaxosReply(number)) {
            Ok(Applied::Now) => self.release(number).map(|(_, reply)| reply),
            Ok(Applied::Pending) => None,
            Err(_) => self.refuse(number).map(|(_, reply)| reply),
        }
    }

    /// Held reply `number`, now free to leave.
    fn release(&mut self, number: u64) -> Option<(NodeId, Message)> {
        self.held.remove(&number)
    }

    /// Held reply `number` as a storage refusal: its state never became durable.
    fn refuse(&mut self, number: u64) -> Option<(NodeId, Message)> {
        let (to, reply) = self.held.remove(&number)?;
        let refused = match reply {
            Message::PaxosPromise { op, key_digest, .. } => Message::PaxosPromise {
                op,
                key_digest,
                result: Err(ReplicaError::Storage),
            },
            Message::PaxosAccept { op, key_digest, .. } => Message::PaxosAccept {
                op,
                key_digest,
                result: Err(ReplicaError::Storage),
            },
            Message::WriteReply { op, key_digest, .. } => Message::WriteReply {
                op,
                key_digest,
                result: Err(ReplicaError::Storage),
            },
            other => other,
        };
        Some((to, refused))
    }

    /// Internal consistency; panics only on a bug in this crate. Paired with `durability`: a
    /// reply is held only while a persist is pending (it is released by that persist).
    pub(super) fn check_invariants(&self, durability: &Durability) {
        for (&number, (_, reply)) in &self.held {
            assert!(
                number < self.next_held,
                "held replies are numbered in order"
            );
            let accepted = match reply {
                Message::PaxosPromise { result, .. } => result.is_ok(),
                Message::PaxosAccept { result, .. } => result.is_ok(),
                Message::WriteReply { result, .. } => result.is_ok(),
                _ => false,
            };
            assert!(accepted, "only answers resting on acceptor state are held");
        }
        assert!(
            self.held.is_empty() || !durability.is_durable_through(durability.staged()),
            "a reply is held only while a persist is pending"
        );
    }
}

/// `key`'s acceptor state as stored (the default if none).
fn load_state<S: Storage>(ctx: &mut Context<S>, key: &[u8]) -> Result<PaxosState, ReplicaError> {
    match ctx.local_record(&state_key(key))? {
        Some(Record::Lww(LwwRecord {
            value: Some(bytes), ..
        })) => codec::decode_value(&bytes).map_err(|_| ReplicaError::Storage),
        _ => Ok(PaxosState::default()),
    }
}

/// Stages `key`'s acceptor state `after`, which the pure policies made from `before`.
fn stage_state<S: Storage>(
    ctx: &mut Context<S>,
    key: &[u8],
    before: &PaxosState,
    after: &PaxosState,
) -> Result<(), ReplicaError> {
    // The policies only ever raise a promise or a commit, and keep an accepted proposal at or
    // below the promise (asserted as a transition: a stored state is bytes from disk).
    assert!(
        after.promised >= before.promised,
        "a promise never goes back"
    );
    assert!(
        after.committed >= before.committed,
        "a commit never goes back"
    );
    assert!(
        !before.ballots_ordered() || after.ballots_ordered(),
        "an accepted proposal stays at or below the promise"
    );
    // The record's version is irrelevant (nothing merges it); the value is the state.
    let record = Record::Lww(LwwRecord {
        version: LwwVersion {
            timestamp_micros: 1,
            node: ctx.id,
            nonce: 0,
        },
        value: Some(Bytes::from(codec::encode_value(after))),
        expires_at_micros: None,
    });
    ctx.stage(state_key(key), record)
}

/// Phase 1 at an acceptor: promise `ballot` (durably) and report what it holds for `key`.
fn prepare<S: Storage>(
    ctx: &mut Context<S>,
    handover: &mut Handover,
    op: OperationId,
    key: Bytes,
    ballot: Ballot,
    epoch: u64,
) -> Answer {
    let key_digest = key_digest(&key);
    let reply = |result| Message::PaxosPromise {
        op,
        key_digest,
        result,
    };
    let found = handover.lin_admit(ctx, epoch, &key).and_then(|()| {
        let state = load_state(ctx, &key)?;
        let record = ctx.local_record(&key)?;
        ctx.observe_record(record.as_ref());
        Ok((state, record))
    });
    let (state, record) = match found {
        Ok(found) => found,
        Err(e) => return Answer::Now(reply(Err(e))),
    };
    let Some(promised) = promise(&state, ballot) else {
        // Sent once the higher promise it names is durable (see `propose`).
        return Answer::WhenDurable(reply(Ok(Promise {
            granted: false,
            promised: state.promised,
            accepted: None,
            committed: state.committed,
            record: None,
        })));
    };
    let staged = if promised == state {
        Ok(())
    } else {
        stage_state(ctx, &key, &state, &promised)
    };
    match staged {
        Ok(()) => Answer::WhenDurable(reply(Ok(Promise {
            granted: true,
            promised: promised.promised,
            accepted: promised.accepted,
            committed: promised.committed,
            record,
        }))),
        Err(e) => Answer::Now(reply(Err(e))),
    }
}

/// Phase 2 at an acceptor: accept `proposal` at `ballot` unless a higher ballot was promised.
fn propose<S: Storage>(
    ctx: &mut Context<S>,
    handover: &mut Handover,
    op: OperationId,
    key: Bytes,
    ballot: Ballot,
    proposal: LwwRecord,
    epoch: u64,
) -> Answer {
    let key_digest = key_digest(&key);
    let reply = |result| Message::PaxosAccept {
        op,
        key_digest,
        result,
    };
    let state = match handover
        .lin_admit(ctx, epoch, &key)
        .and_then(|()| load_state(ctx, &key))
    {
        Ok(state) => state,
        Err(e) => return Answer::Now(reply(Err(e))),
    };
    let flaw = ctx.config.cluster.unsafe_paxos_flaw;
    if state.accepted.as_ref().is_some_and(|(b, _)| *b == ballot) {
        // A duplicate of a proposal already accepted: say so (once durable), never "refused",
        // which the proposer takes as proof that nothing was accepted here.
        return Answer::WhenDurable(reply(Ok(true)));
    }
    let Some(accepted) = accept(&state, ballot, &proposal, flaw) else {
        // Refused on a promise that may still be only staged: the refusal leaves once it is
        // durable, so a crash cannot forget the promise after the proposer took the refusal
        // as final (a late duplicate of the proposal could then be accepted).
        return Answer::WhenDurable(reply(Ok(false)));
    };
    match stage_state(ctx, &key, &state, &accepted) {
        Ok(()) => Answer::WhenDurable(reply(Ok(true))),
        Err(e) => Answer::Now(reply(Err(e))),
    }
}

/// Phase 3 at an acceptor: the chosen `record` is merged like a linearizable write and the
/// accepted proposal it settles is retired.
fn commit_record<S: Storage>(
    ctx: &mut Context<S>,
    handover: &mut Handover,
    op: OperationId,
    key: Bytes,
    ballot: Ballot,
    record: LwwRecord,
    epoch: u64,
) -> Answer {
    let key_digest = key_digest(&key);
    let reply = |result| Message::WriteReply {
        op,
        key_digest,
        result,
    };
    let state = match handover
        .lin_admit(ctx, epoch, &key)
        .and_then(|()| load_state(ctx, &key))
    {
        Ok(state) => state,
        Err(e) => return Answer::Now(reply(Err(e))),
    };
    let record = Record::Lww(record);
    ctx.observe_record(Some(&record));
    let committed = commit(&state, ballot);
    let staged = stage_state(ctx, &key, &state, &committed)
        .and_then(|()| ctx.apply(key, &record, AfterPersist::Nothing));
    match staged {
        Ok(_) => Answer::WhenDurable(reply(Ok(()))),
        Err(e) => Answer::Now(reply(Err(e))),
    }
}

/// This node's own copy of a write-back (other replicas get it as a plain `LinWrite`).
fn write_back<S: Storage>(
    ctx: &mut Context<S>,
    handover: &mut Handover,
    op: OperationId,
    key: Bytes,
    record: &Record,
    epoch: u64,
) -> Answer {
    let key_digest = key_digest(&key);
    let applied = handover
        .lin_admit(ctx, epoch, &key)
        .and_then(|()| ctx.apply(key, record, AfterPersist::Nothing));
    let reply = |result| Message::WriteReply {
        op,
        key_digest,
        result,
    };
    match applied {
        Ok(_) => Answer::WhenDurable(reply(Ok(()))),
        Err(e) => Answer::Now(reply(Err(e))),
    }
}

// ---------------------------------------------------------------- proposer (coordinator)

/// The proposer at work for one input: the Paxos state and, borrowed from the node, the state
/// of the mechanisms a round works on. Its fields are its dependencies: the shared context, the
/// coordinator's operation table (rounds in flight and their deadlines) and the handover state
/// (the ring epoch that fences every Paxos message, and the admission of this node's own
/// acceptor).
pub(super) struct Proposer<'a, S> {
    paxos: &'a mut Paxos,
    ctx: &'a mut Context<S>,
    coordinator: &'a mut Coordinator,
    handover: &'a mut Handover,
}

/// The round in flight as `op`, if it is one and about the key with digest `digest`.
fn round_of(
    coordinator: &mut Coordinator,
    op: OperationId,
    digest: u64,
) -> Option<&mut PaxosOperation> {
    match coordinator.in_flight.get_mut(op) {
        Some(Operation::Paxos(p)) if key_digest(&p.key) == digest => Some(p),
        _ => None,
    }
}

impl<S: Storage> Proposer<'_, S> {
    /// An acceptor request for this node's acceptor; its reply, if one leaves now, goes back.
    fn serve(&mut self, from: NodeId, request: Message) {
        if let Some(reply) = self.paxos.serve(self.ctx, self.handover, from, request) {
            self.respond(from, reply);
        }
    }

    /// Sends an acceptor's reply, or hands it straight to the proposer when that is this node.
    fn respond(&mut self, to: NodeId, reply: Message) {
        if to != self.ctx.id {
            self.ctx.send(to, reply);
            return;
        }
        let me = self.ctx.id;
        match reply {
            Message::PaxosPromise {
                op,
                key_digest,
                result,
            } => self.on_promise(me, op, key_digest, result),
            Message::PaxosAccept {
                op,
                key_digest,
                result,
            } => self.on_accept(me, op, key_digest, result),
            Message::WriteReply {
                op,
                key_digest,
                result,
            } => {
                // This node's own commit or write-back: the operation is a round's (ids are
                // unique, so it is no hint replay or plain write); one that ended is stale.
                let now = Now {
                    monotonic: self.ctx.last_monotonic,
                    wall: self.ctx.last_wall,
                };
                if !self.on_write_reply(now, me, op, Some(key_digest), result) {
                    self.ctx.stats.stale_replies += 1;
                }
            }
            other => self.ctx.send(to, other),
        }
    }

    /// Sends `request` to every replica but this node, in replica order, then serves this
    /// node's own copy if it is a replica: one fan-out for every phase.
    fn fan_out(&mut self, replicas: &[NodeId], request: Message) {
        let me = self.ctx.id;
        for &replica in replicas.iter().filter(|&&r| r != me) {
            self.ctx.send(replica, request.clone());
        }
        if replicas.contains(&me) {
            self.serve(me, request);
        }
    }

    /// Starts a Paxos request; `needed` is a strict majority of `replicas`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    pub(super) fn start(
        &mut self,
        now: Now,
        request: RequestId,
        key: Bytes,
        intent: Intent,
        needed: u8,
        replicas: Vec<NodeId>,
        deadline: Instant,
    ) {
        self.handover.activate(self.ctx);
        let epoch = self.handover.epoch();
        let operation = PaxosOperation {
            request,
            key,
            intent,
            replicas,
            needed,
            epoch,
            final_deadline: deadline,
            ballot: Ballot::default(),
            rounds: 0,
            highest_seen: None,
            phase: Phase::Backoff,
        };
        self.round(now, operation);
    }

    /// Starts the next round: a fresh operation id (replies to earlier rounds are stale), a
    /// ballot above every one seen, and prepares to every replica.
    fn round(&mut self, now: Now, mut operation: PaxosOperation) {
        let stamp = self.ctx.stamp(now.wall);
        let micros = operation
            .highest_seen
            .map_or(stamp, |seen| stamp.max(seen.micros.saturating_add(1)));
        self.ctx.clock.observe(micros);
        self.ctx.raise_clock_floor(micros);
        operation.ballot = Ballot {
            micros,
            node: self.ctx.id,
        };
        operation.rounds += 1;
        operation.phase = Phase::Prepare {
            votes: Votes::default(),
            promises: Vec::new(),
        };
        let op = self.ctx.allocate_operation();
        let (key, ballot, epoch) = (operation.key.clone(), operation.ballot, operation.epoch);
        let replicas = operation.replicas.clone();
        let deadline = operation.final_deadline;
        self.coordinator
            .track(op, Operation::Paxos(Box::new(operation)), deadline);
        let prepare = Message::PaxosPrepare {
            op,
            key,
            ballot,
            epoch,
        };
        self.fan_out(&replicas, prepare);
    }

    /// A replica's promise (or refusal) for round `op`.
    pub(super) fn on_promise(
        &mut self,
        from: NodeId,
        op: OperationId,
        digest: u64,
        result: Result<Promise, ReplicaError>,
    ) {
        let Some(paxos) = round_of(self.coordinator, op, digest) else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        let Phase::Prepare { votes, promises } = &mut paxos.phase else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        if !paxos.replicas.contains(&from) {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        let granted = matches!(&result, Ok(p) if p.granted);
        if !votes.record(from, granted) {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        if let Ok(promise) = result {
            paxos.highest_seen = paxos.highest_seen.max(promise.promised);
            if promise.granted {
                promises.push(promise);
            }
        }
        match votes.outcome(paxos.replicas.len(), usize::from(paxos.needed)) {
            QuorumOutcome::Pending => {}
            QuorumOutcome::Failed => self.contention(op),
            QuorumOutcome::Met => self.promised(op),
        }
    }

    /// A majority promised: finish an earlier proposal, or judge the condition.
    fn promised(&mut self, op: OperationId) {
        let flaw = self.ctx.config.cluster.unsafe_paxos_flaw;
        let now_micros = self.ctx.hybrid_now_micros();
        let Some(Operation::Paxos(paxos)) = self.coordinator.in_flight.get_mut(op) else {
            return;
        };
        let Phase::Prepare { promises, .. } = &mut paxos.phase else {
            return;
        };
        let promises = std::mem::take(promises);
        let merged = promises
            .iter()
            .filter_map(|p| p.record.clone())
            .reduce(|a, b| a.merge(&b));
        let earlier = in_progress(&promises).filter(|_| flaw != PaxosFlaw::SkipReplay);
        if let Some((_, proposal)) = earlier {
            paxos.phase = Phase::Propose {
                own: false,
                proposal,
                previous: None,
                votes: Votes::default(),
                unclean: false,
            };
            return self.send_proposal(op);
        }
        let previous = live(merged.as_ref(), now_micros);
        let Intent::Conditional { condition, value } = &paxos.intent;
        if condition.holds(previous.as_ref()) {
            let value = value.clone();
            return self.propose_own(op, &promises, value, previous);
        }
        match merged {
            // Nothing anywhere in the majority: nothing to make visible.
            None => self.finish(op, 0),
            Some(record) => self.write_back(op, record, previous),
        }
    }

    /// The condition is false: the record it was judged on is written back to a majority (as an
    /// ABD read does), so no later read can see an older one.
    fn write_back(&mut self, op: OperationId, record: Record, previous: Option<Bytes>) {
        let Some(Operation::Paxos(paxos)) = self.coordinator.in_flight.get_mut(op) else {
            return;
        };
        paxos.phase = Phase::WriteBack {
            previous,
            votes: Votes::default(),
        };
        let (key, epoch, replicas) = (paxos.key.clone(), paxos.epoch, paxos.replicas.clone());
        let write = Message::LinWrite {
            op,
            key,
            record,
            epoch,
        };
        self.fan_out(&replicas, write);
    }

    /// The condition holds: propose the request's value, with a version above every one the
    /// majority reported (records and accepted proposals).
    fn propose_own(
        &mut self,
        op: OperationId,
        promises: &[Promise],
        value: Option<Bytes>,
        previous: Option<Bytes>,
    ) {
        let seen = promises
            .iter()
            .flat_map(|p| {
                let record = match &p.record {
                    Some(Record::Lww(r)) => Some(r.version.timestamp_micros),
                    _ => None,
                };
                let accepted = p.accepted.as_ref().map(|(_, r)| r.version.timestamp_micros);
                record.into_iter().chain(accepted)
            })
            .max();
        let stamp = self.ctx.stamp(self.ctx.last_wall);
        let timestamp_micros = seen.map_or(stamp, |s| stamp.max(s.saturating_add(1)));
        self.ctx.clock.observe(timestamp_micros);
        self.ctx.raise_clock_floor(timestamp_micros);
        let version = LwwVersion {
            timestamp_micros,
            node: self.ctx.id,
            nonce: self.ctx.rng.gen(),
        };
        let Some(Operation::Paxos(paxos)) = self.coordinator.in_flight.get_mut(op) else {
            return;
        };
        paxos.phase = Phase::Propose {
            own: true,
            proposal: LwwRecord {
                version,
                value,
                expires_at_micros: None,
            },
            previous,
            votes: Votes::default(),
            unclean: false,
        };
        self.send_proposal(op);
    }

    fn send_proposal(&mut self, op: OperationId) {
        let Some(Operation::Paxos(paxos)) = self.coordinator.in_flight.get(op) else {
            return;
        };
        let Phase::Propose { proposal, .. } = &paxos.phase else {
            return;
        };
        let propose = Message::PaxosPropose {
            op,
            key: paxos.key.clone(),
            ballot: paxos.ballot,
            proposal: proposal.clone(),
            epoch: paxos.epoch,
        };
        let replicas = paxos.replicas.clone();
        self.fan_out(&replicas, propose);
    }

    /// A replica's acceptance (or refusal) of round `op`'s proposal.
    pub(super) fn on_accept(
        &mut self,
        from: NodeId,
        op: OperationId,
        digest: u64,
        result: Result<bool, ReplicaError>,
    ) {
        let Some(paxos) = round_of(self.coordinator, op, digest) else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        let Phase::Propose { votes, unclean, .. } = &mut paxos.phase else {
            self.ctx.stats.stale_replies += 1;
            return;
        };
        if !paxos.replicas.contains(&from) || !votes.record(from, result == Ok(true)) {
            self.ctx.stats.stale_replies += 1;
            return;
        }
        // Only "promised higher" and an unsent message are known to have left nothing behind.
        *unclean |= !matches!(result, Ok(_) | Err(ReplicaError::Busy));
        match votes.outcome(paxos.replicas.len(), usize::from(paxos.needed)) {
            QuorumOutcome::Pending => {}
            QuorumOutcome::Met => self.send_commit(op),
            QuorumOutcome::Failed => {
                let Phase::Propose {
                    own,
                    votes,
                    unclean,
                    ..
                } = &paxos.phase
                else {
                    return;
                };
                let replicas = paxos.replicas.len();
                let all_voted = votes.yes.len() + votes.no.len() >= replicas;
                if !*own || (all_voted && !*unclean && votes.yes.is_empty()) {
                    // Nobody holds our value accepted: a new round may choose another.
                    self.contention(op);
                } else if all_voted {
                    // Some replica holds our proposal accepted (or may): a later round could
                    // still choose it, so a new proposal of ours could write the value twice.
                    let acks = votes.acks();
                    self.end(op, |needed| ClientReply::Indeterminate { acks, needed });
                }
                // Otherwise wait for the replicas still silent: one may have accepted.
            }
        }
    }

    fn send_commit(&mut self, op: OperationId) {
        let Some(Operation::Paxos(paxos)) = self.coordinator.in_flight.get_mut(op) else {
            return;
        };
        let Phase::Propose {
            own,
            proposal,
            previous,
            ..
        } = &paxos.phase
        else {
            return;
        };
        let record = proposal.clone();
        paxos.phase = Phase::Commit {
            own: *own,
            record: record.clone(),
            previous: previous.clone(),
            votes: Votes::default(),
        };
        let commit = Message::PaxosCommit {
            op,
            key: paxos.key.clone(),
            ballot: paxos.ballot,
            record,
            epoch: paxos.epoch,
        };
        let replicas = paxos.replicas.clone();
        if crate::buggify!(
            self.ctx.faults,
            &mut self.ctx.rng,
            "paxos/commit-fanout-order"
        ) {
            return self.fan_out_reordered(&replicas, commit);
        }
        self.fan_out(&replicas, commit);
    }

    /// BUGGIFY (`paxos/commit-fanout-order`): the commit leaves in another legal order, either
    /// this node's own copy first and the others reversed, or one replica's copy last (after
    /// this node's own copy may already have answered). A commit is an idempotent merge of a
    /// chosen value, so no order of its copies may matter.
    fn fan_out_reordered(&mut self, replicas: &[NodeId], request: Message) {
        let me = self.ctx.id;
        let mut others: Vec<NodeId> = replicas.iter().copied().filter(|&r| r != me).collect();
        let own_first = self.ctx.rng.gen::<bool>();
        let late = if own_first || others.is_empty() {
            others.reverse();
            None
        } else {
            Some(others.remove(self.ctx.rng.gen_range(0..others.len())))
        };
        let own = replicas.contains(&me);
        if own && own_first {
            self.serve(me, request.clone());
        }
        for replica in others {
            self.ctx.send(replica, request.clone());
        }
        if own && !own_first {
            self.serve(me, request.clone());
        }
        if let Some(replica) = late {
            self.ctx.send(replica, request);
        }
    }

    /// A commit's or a write-back's durable acknowledgement (or refusal). Returns `false` if
    /// `op` is not a Paxos round (the caller handles it).
    pub(super) fn on_write_reply(
        &mut self,
        now: Now,
        from: NodeId,
        op: OperationId,
        digest: Option<u64>,
        result: Result<(), ReplicaError>,
    ) -> bool {
        let Some(Operation::Paxos(paxos)) = self.coordinator.in_flight.get_mut(op) else {
            return false;
        };
        if digest.is_some_and(|d| d != key_digest(&paxos.key)) || !paxos.replicas.contains(&from) {
            self.ctx.stats.stale_replies += 1;
            return true;
        }
        let (replicas, needed) = (paxos.replicas.len(), usize::from(paxos.needed));
        let outcome = match &mut paxos.phase {
            Phase::Commit { votes, .. } | Phase::WriteBack { votes, .. } => {
                if !votes.record(from, result.is_ok()) {
                    self.ctx.stats.stale_replies += 1;
                    return true;
                }
                votes.outcome(replicas, needed)
            }
            _ => {
                self.ctx.stats.stale_replies += 1;
                return true;
            }
        };
        match (outcome, &paxos.phase) {
            (QuorumOutcome::Pending, _) => {}
            (QuorumOutcome::Met, Phase::Commit { own: false, .. }) => {
                // The earlier proposal is chosen and committed: now our own round.
                if let Some(Operation::Paxos(paxos)) = self.coordinator.untrack(op) {
                    self.round(now, *paxos);
                }
            }
            (QuorumOutcome::Met, Phase::Commit { votes, .. })
            | (QuorumOutcome::Met, Phase::WriteBack { votes, .. }) => {
                let acks = votes.acks();
                self.finish(op, acks);
            }
            (
                QuorumOutcome::Failed,
                Phase::Commit {
                    own: true, votes, ..
                },
            ) => {
                let acks = votes.acks();
                self.end(op, |needed| ClientReply::Indeterminate { acks, needed });
            }
            (QuorumOutcome::Failed, _) => self.contention(op),
            // Votes are counted only in the commit and write-back phases.
            (QuorumOutcome::Met, _) => {}
        }
        true
    }

    /// The round cannot finish (refusals for higher ballots, or replicas refusing): try again
    /// after a backoff, if the deadline allows.
    fn contention(&mut self, op: OperationId) {
        let Some(Operation::Paxos(mut paxos)) = self.coordinator.untrack(op) else {
            return;
        };
        paxos.phase = Phase::Backoff;
        let mut wait = backoff(paxos.rounds, &mut self.ctx.rng);
        if crate::buggify!(self.ctx.faults, &mut self.ctx.rng, "paxos/retry-backoff") {
            // Any wait is legal: the next round's ballot is above every one seen whenever it
            // starts, so retrying at once (duelling proposers) or long after (a promise left
            // standing) must stay safe; the request's deadline still bounds it.
            wait = if self.ctx.rng.gen() {
                Duration::ZERO
            } else {
                Duration::from_millis(BACKOFF_MS_MAX.saturating_mul(4))
            };
        }
        let at = self.ctx.last_monotonic.saturating_add(wait);
        let deadline = at.min(paxos.final_deadline);
        self.coordinator
            .track(op, Operation::Paxos(paxos), deadline);
    }

    /// The request's answer after a successful commit or write-back.
    fn finish(&mut self, op: OperationId, acks: u8) {
        let Some(Operation::Paxos(paxos)) = self.coordinator.untrack(op) else {
            return;
        };
        let reply = match paxos.phase {
            Phase::Commit {
                record, previous, ..
            } => ClientReply::Conditional {
                applied: true,
                previous,
                version: Some(WriteVersion::Lww(record.version)),
                acks,
            },
            Phase::WriteBack { previous, .. } => ClientReply::Conditional {
                applied: false,
                previous,
                version: None,
                acks,
            },
            // The condition was false and the majority held nothing at all.
            _ => ClientReply::Conditional {
                applied: false,
                previous: None,
                version: None,
                acks,
            },
        };
        self.ctx.reply(paxos.request, reply);
    }

    /// Ends the request with `reply(needed)`.
    fn end(&mut self, op: OperationId, reply: impl FnOnce(u8) -> ClientReply) {
        if let Some(Operation::Paxos(paxos)) = self.coordinator.untrack(op) {
            let reply = reply(paxos.needed);
            self.ctx.reply(paxos.request, reply);
        }
    }

    /// The tracked deadline of a Paxos request passed (its entry is already removed): the end
    /// of a backoff starts the next round; the request's own deadline ends it.
    pub(super) fn on_deadline(&mut self, now: Now, op: OperationId, paxos: PaxosOperation) {
        let expired = now.monotonic >= paxos.final_deadline;
        if !expired && matches!(paxos.phase, Phase::Backoff) {
            return self.round(now, paxos);
        }
        if !expired {
            // A spurious deadline (cannot happen: only backoffs track an earlier one).
            let deadline = paxos.final_deadline;
            return self
                .coordinator
                .track(op, Operation::Paxos(Box::new(paxos)), deadline);
        }
        let reply = match &paxos.phase {
            Phase::Propose {
                own: true, votes, ..
            }
            | Phase::Commit {
                own: true, votes, ..
            } => ClientReply::Indeterminate {
                acks: votes.acks(),
                needed: paxos.needed,
            },
            Phase::Prepare { votes, .. }
            | Phase::Propose { votes, .. }
            | Phase::Commit { votes, .. }
            | Phase::WriteBack { votes, .. } => ClientReply::Unavailable {
                acks: votes.acks(),
                needed: paxos.needed,
            },
            Phase::Backoff => ClientReply::Unavailable {
                acks: 0,
                needed: paxos.needed,
            },
        };
        self.ctx.reply(paxos.request, reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ballot(micros: u64, node: u32) -> Ballot {
        Ballot {
            micros,
            node: NodeId(node),
        }
    }

    fn record(micros: u64, value: &'static [u8]) -> LwwRecord {
        LwwRecord {
            version: LwwVersion {
                timestamp_micros: micros,
                node: NodeId(1),
                nonce: 0,
            },
            value: Some(Bytes::from_static(value)),
            expires_at_micros: None,
        }
    }

    #[test]
    fn promises_and_acceptances_never_go_below_a_promise() {
        let empty = PaxosState::default();
        let promised = promise(&empty, ballot(5, 1)).expect("first promise");
        assert_eq!(promised.promised, Some(ballot(5, 1)));
        assert_eq!(promise(&promised, ballot(4, 9)), None, "lower ballot");
        assert!(
            promise(&promised, ballot(5, 1)).is_some(),
            "repeated prepare"
        );
        assert!(
            promise(&promised, ballot(5, 2)).is_some(),
            "higher node breaks tie"
        );
        let proposal = record(10, b"a");
        assert_eq!(
            accept(&promised, ballot(4, 9), &proposal, PaxosFlaw::None),
            None
        );
        let planted = accept(
            &promised,
            ballot(4, 9),
            &proposal,
            PaxosFlaw::AcceptLowerBallot,
        );
        assert!(planted.is_some(), "the planted flaw accepts");
        let accepted = accept(&promised, ballot(5, 1), &proposal, PaxosFlaw::None)
            .expect("the promised ballot is accepted");
        assert_eq!(accepted.accepted, Some((ballot(5, 1), proposal.clone())));
        let higher = accept(&accepted, ballot(7, 2), &proposal, PaxosFlaw::None).expect("higher");
        assert_eq!(
            higher.promised,
            Some(ballot(7, 2)),
            "accepting raises the promise"
        );
    }

    #[test]
    fn commits_retire_accepted_proposals_no_newer_than_them() {
        let state = PaxosState {
            promised: Some(ballot(9, 1)),
            accepted: Some((ballot(8, 1), record(1, b"a"))),
            committed: None,
        };
        assert_eq!(commit(&state, ballot(8, 1)).accepted, None);
        assert_eq!(commit(&state, ballot(8, 1)).committed, Some(ballot(8, 1)));
        assert!(commit(&state, ballot(7, 1)).accepted.is_some());
        let later = commit(&commit(&state, ballot(8, 1)), ballot(3, 1));
        assert_eq!(later.committed, Some(ballot(8, 1)), "commits never go back");
    }

    fn granted(accepted: Option<(Ballot, LwwRecord)>, committed: Option<Ballot>) -> Promise {
        Promise {
            granted: true,
            promised: None,
            accepted,
            committed,
            record: None,
        }
    }

    #[test]
    fn the_highest_accepted_proposal_newer_than_every_commit_is_in_progress() {
        let a = (ballot(5, 1), record(50, b"a"));
        let b = (ballot(6, 2), record(60, b"b"));
        assert_eq!(in_progress(&[]), None);
        assert_eq!(
            in_progress(&[granted(Some(a.clone()), None), granted(None, None)]),
            Some(a.clone())
        );
        assert_eq!(
            in_progress(&[
                granted(Some(a.clone()), None),
                granted(Some(b.clone()), None)
            ]),
            Some(b.clone())
        );
        // Committed at a later ballot by another replica of the majority: not in progress.
        assert_eq!(
            in_progress(&[
                granted(Some(a.clone()), None),
                granted(None, Some(ballot(7, 3)))
            ]),
            None
        );
        assert_eq!(
            in_progress(&[granted(Some(b.clone()), Some(ballot(5, 1)))]),
            Some(b)
        );
    }

    #[test]
    fn votes_decide_from_a_table() {
        let mut votes = Votes::default();
        assert_eq!(votes.outcome(3, 2), QuorumOutcome::Pending);
        assert!(votes.record(NodeId(1), true));
        assert!(!votes.record(NodeId(1), false), "one vote per replica");
        assert_eq!(votes.outcome(3, 2), QuorumOutcome::Pending);
        assert!(votes.record(NodeId(2), false));
        assert_eq!(votes.outcome(3, 2), QuorumOutcome::Pending);
        assert!(votes.record(NodeId(3), false));
        assert_eq!(votes.outcome(3, 2), QuorumOutcome::Failed);
        let mut met = Votes::default();
        met.record(NodeId(1), true);
        met.record(NodeId(2), true);
        assert_eq!(met.outcome(3, 2), QuorumOutcome::Met);
    }

    #[test]
    fn conditions_judge_the_live_value() {
        let a = Bytes::from_static(b"a");
        let empty = Bytes::new();
        assert!(WriteCondition::Absent.holds(None));
        assert!(
            !WriteCondition::Absent.holds(Some(&empty)),
            "an empty value exists"
        );
        assert!(WriteCondition::Present.holds(Some(&empty)));
        assert!(!WriteCondition::Present.holds(None));
        assert!(WriteCondition::Equals(a.clone()).holds(Some(&a)));
        assert!(!WriteCondition::Equals(empty.clone()).holds(None));
        assert!(WriteCondition::Always.holds(None));
    }

    #[test]
    fn backoff_stays_within_its_bounds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..40 {
            let wait = backoff(round, &mut rng);
            assert!(wait >= Duration::from_millis(1));
            assert!(wait <= Duration::from_millis(BACKOFF_MS_MAX));
        }
    }

    // ---------------------------------------------------------------- the acceptor itself

    use crate::config::{ClusterConfig, NodeConfig};
    use crate::ring::{NodeLocation, Ring};
    use crate::storage::MemStorage;
    use crate::time::WallMicros;

    const PROPOSER: NodeId = NodeId(1);

    /// One acceptor's state and what it works on. The Paxos struct is the mechanism under test;
    /// the context and handover state come from a node (they have no constructor of their own),
    /// and no input goes through the node's dispatch.
    fn acceptor() -> super::super::Node<MemStorage> {
        let mut ring = Ring::new(8);
        for i in 0..3 {
            let location = NodeLocation {
                datacenter: "dc".into(),
                rack: format!("r{i}"),
                weight: 1,
            };
            ring.add_node(NodeId(i), location).expect("fresh");
        }
        let config = NodeConfig {
            id: NodeId(0),
            cluster: ClusterConfig::default(),
            rng_seed: 3,
        };
        let start = crate::time::Now {
            monotonic: crate::time::Instant::from_nanos(1),
            wall: crate::time::WallMicros(1_000_000),
        };
        let mut node =
            super::super::Node::new(config, ring, MemStorage::new(), start).expect("valid");
        let now = Now {
            monotonic: Instant::from_nanos(1),
            wall: WallMicros(1_000_000),
        };
        while let Some(output) = node.poll_output() {
            if let super::super::Output::Persist { token } = output {
                node.handle_persisted(now, token);
            }
        }
        node
    }

    /// Serves `request` from the proposer at the acceptor; the reply that leaves at once.
    fn serve(node: &mut super::super::Node<MemStorage>, request: Message) -> Option<Message> {
        let reply = node
            .paxos
            .serve(&mut node.ctx, &mut node.handover, PROPOSER, request);
        node.paxos.check_invariants(&node.ctx.durability);
        reply
    }

    /// Completes the pending persist; the held replies it releases.
    fn persist(node: &mut super::super::Node<MemStorage>) -> Vec<(NodeId, Message)> {
        let Some(token) = node.ctx.durability.take_persist_request() else {
            return Vec::new();
        };
        node.ctx.storage.sync().expect("memory storage syncs");
        let released = node
            .ctx
            .durability
            .persisted(token)
            .into_iter()
            .filter_map(|then| match then {
                AfterPersist::PaxosReply(number) => node.paxos.release(number),
                _ => None,
            })
            .collect();
        node.paxos.check_invariants(&node.ctx.durability);
        released
    }

    fn key() -> Bytes {
        Bytes::from_static(b"k")
    }

    fn prepare_at(epoch: u64, op: u64, at: Ballot) -> Message {
        Message::PaxosPrepare {
            op: OperationId(op),
            key: key(),
            ballot: at,
            epoch,
        }
    }

    fn propose_at(epoch: u64, op: u64, at: Ballot, proposal: &LwwRecord) -> Message {
        Message::PaxosPropose {
            op: OperationId(op),
            key: key(),
            ballot: at,
            proposal: proposal.clone(),
            epoch,
        }
    }

    fn promise_of(reply: &Message) -> Promise {
        match reply {
            Message::PaxosPromise {
                result: Ok(promise),
                ..
            } => promise.clone(),
            other => panic!("not a promise: {other:?}"),
        }
    }

    fn accepted_of(reply: &Message) -> bool {
        match reply {
            Message::PaxosAccept {
                result: Ok(accepted),
                ..
            } => *accepted,
            other => panic!("not an acceptance: {other:?}"),
        }
    }

    #[test]
    fn a_promise_leaves_only_once_durable_and_binds_the_acceptor() {
        let mut node = acceptor();
        let epoch = node.handover.epoch();
        assert_eq!(serve(&mut node, prepare_at(epoch, 1, ballot(5, 1))), None);
        let released = persist(&mut node);
        assert_eq!(
            released.len(),
            1,
            "the held promise leaves with its persist"
        );
        let (to, reply) = &released[0];
        assert_eq!(*to, PROPOSER);
        let promise = promise_of(reply);
        assert!(promise.granted);
        assert_eq!(promise.promised, Some(ballot(5, 1)));

        // A lower ballot is refused and told the promise it lost to (once that is durable:
        // here it already is).
        let refused = serve(&mut node, prepare_at(epoch, 2, ballot(4, 2))).expect("now");
        let refusal = promise_of(&refused);
        assert!(!refusal.granted);
        assert_eq!(refusal.promised, Some(ballot(5, 1)));
        // A proposal at the lower ballot is refused too.
        let proposal = record(10, b"a");
        let refused = serve(&mut node, propose_at(epoch, 2, ballot(4, 2), &proposal));
        assert_eq!(refused.as_ref().map(accepted_of), Some(false));
        // The stored state survives in storage, not in the Paxos struct.
        assert_eq!(
            load_state(&mut node.ctx, &key())
                .expect("readable")
                .promised,
            Some(ballot(5, 1))
        );
    }

    #[test]
    fn an_accepted_proposal_is_reported_to_the_next_prepare_until_committed() {
        let mut node = acceptor();
        let epoch = node.handover.epoch();
        serve(&mut node, prepare_at(epoch, 1, ballot(5, 1)));
        persist(&mut node);
        let proposal = record(10, b"a");
        assert_eq!(
            serve(&mut node, propose_at(epoch, 1, ballot(5, 1), &proposal)),
            None,
            "the acceptance waits for its persist"
        );
        let released = persist(&mut node);
        assert_eq!(released.len(), 1);
        assert!(accepted_of(&released[0].1));
        // A duplicate of the accepted proposal is acknowledged again, never refused.
        let again = serve(&mut node, propose_at(epoch, 1, ballot(5, 1), &proposal));
        assert_eq!(again.as_ref().map(accepted_of), Some(true));

        // A later proposer learns the accepted proposal, so it can finish it first.
        serve(&mut node, prepare_at(epoch, 2, ballot(7, 2)));
        let promise = promise_of(&persist(&mut node)[0].1);
        assert_eq!(promise.accepted, Some((ballot(5, 1), proposal.clone())));
        assert_eq!(
            in_progress(&[promise]),
            Some((ballot(5, 1), proposal.clone()))
        );

        // Committed, the record is stored and the proposal no longer in progress.
        let commit = Message::PaxosCommit {
            op: OperationId(3),
            key: key(),
            ballot: ballot(7, 2),
            record: proposal.clone(),
            epoch,
        };
        assert_eq!(serve(&mut node, commit), None);
        let released = persist(&mut node);
        assert!(matches!(
            released[..],
            [(PROPOSER, Message::WriteReply { result: Ok(()), .. })]
        ));
        assert_eq!(
            node.ctx.local_record(&key()).expect("readable"),
            Some(Record::Lww(proposal))
        );
        serve(&mut node, prepare_at(epoch, 4, ballot(9, 1)));
        let promise = promise_of(&persist(&mut node)[0].1);
        assert_eq!(promise.accepted, None);
        assert_eq!(promise.committed, Some(ballot(7, 2)));
        assert_eq!(in_progress(&[promise]), None);
    }

    #[test]
    fn a_held_reply_whose_persist_fails_becomes_a_storage_refusal() {
        let mut node = acceptor();
        let epoch = node.handover.epoch();
        assert_eq!(serve(&mut node, prepare_at(epoch, 1, ballot(5, 1))), None);
        assert_eq!(node.paxos.held.len(), 1);
        let refused: Vec<_> = node
            .ctx
            .durability
            .poison()
            .into_iter()
            .filter_map(|then| match then {
                AfterPersist::PaxosReply(number) => node.paxos.refuse(number),
                _ => None,
            })
            .collect();
        assert!(matches!(
            refused[..],
            [(
                PROPOSER,
                Message::PaxosPromise {
                    result: Err(ReplicaError::Storage),
                    ..
                }
            )]
        ));
        assert!(node.paxos.held.is_empty());
        node.paxos.check_invariants(&node.ctx.durability);
    }

    #[test]
    fn a_request_from_another_ring_epoch_is_refused_at_once() {
        let mut node = acceptor();
        let stale = Message::PaxosPrepare {
            op: OperationId(1),
            key: key(),
            ballot: ballot(5, 1),
            epoch: node.handover.epoch().wrapping_add(1),
        };
        let reply = serve(&mut node, stale).expect("a refusal leaves at once");
        assert!(matches!(
            reply,
            Message::PaxosPromise {
                result: Err(ReplicaError::RingMismatch),
                ..
            }
        ));
        assert!(node.paxos.held.is_empty(), "nothing staged, nothing held");
    }

    #[test]
    #[should_panic(expected = "only answers resting on acceptor state are held")]
    fn holding_a_refusal_is_caught() {
        let node = acceptor();
        let mut paxos = Paxos::default();
        paxos.held.insert(
            0,
            (
                PROPOSER,
                Message::PaxosAccept {
                    op: OperationId(1),
                    key_digest: 0,
                    result: Err(ReplicaError::Busy),
                },
            ),
        );
        paxos.next_held = 1;
        paxos.check_invariants(&node.ctx.durability);
    }

    #[test]
    fn the_policies_keep_ballots_ordered() {
        let mut state = PaxosState::default();
        assert!(state.ballots_ordered());
        for (i, b) in [ballot(3, 1), ballot(2, 2), ballot(6, 1), ballot(6, 1)]
            .into_iter()
            .enumerate()
        {
            if let Some(next) = promise(&state, b) {
                state = next;
            }
            assert!(state.ballots_ordered(), "after promise {i}");
            for flaw in [PaxosFlaw::None, PaxosFlaw::AcceptLowerBallot] {
                if let Some(next) = accept(&state, b, &record(1, b"v"), flaw) {
                    assert!(next.ballots_ordered(), "after accept {i} {flaw:?}");
                    assert!(next.promised >= state.promised);
                }
            }
            let committed = commit(&state, b);
            assert!(committed.ballots_ordered());
            assert!(committed.committed >= state.committed);
        }
        let unordered = PaxosState {
            promised: Some(ballot(1, 1)),
            accepted: Some((ballot(2, 1), record(1, b"v"))),
            committed: None,
        };
        assert!(!unordered.ballots_ordered());
    }
}
