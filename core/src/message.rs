//! Messages between nodes. Every field is plain data so the codec can carry it; a receiver treats
//! every message as untrusted (late, duplicated, reordered or from a restarted peer).

use crate::id::OperationId;
use crate::membership::GossipMessage;
use crate::version::{LwwRecord, Record, VersionVector, WriteVersion};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of the peer protocol; peers with another version are refused by the transport.
/// 3: vector-clock dots and version vectors name an `ActorId` (node and data epoch), not a node.
/// 4: gossip is SWIM (probes, indirect probes, piggybacked claims, push-pull) instead of
///    heartbeat tables: a version-3 node could not decode it.
pub const PROTOCOL_VERSION: u16 = 4;

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Message {
    /// Coordinator → replica: send your record of `key`.
    Read {
        /// Round-trip id at the coordinator.
        op: OperationId,
        /// The key.
        key: Bytes,
    },
    /// Replica → coordinator: my record (`None` if I hold nothing).
    ReadReply {
        /// Echoed round-trip id.
        op: OperationId,
        /// `id::key_digest` of the key read: the coordinator ignores a reply about another key.
        key_digest: u64,
        /// The record, or an error from storage.
        record: Result<Option<Record>, ReplicaError>,
    },
    /// Coordinator → replica: merge `record` into your copy of `key` and acknowledge once durable.
    Write {
        /// Round-trip id at the coordinator.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The record to merge.
        record: Record,
    },
    /// Coordinator → fallback (sloppy quorum): keep `record` as a durable hint for `for_node`, and
    /// acknowledge once durable (the reply is a `WriteReply`).
    HintedWrite {
        /// Round-trip id at the coordinator.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The record to hand to `for_node` later.
        record: Record,
        /// The replica this fallback stands in for.
        for_node: crate::id::NodeId,
    },
    /// Replica → coordinator: the write is merged and durable (or refused).
    WriteReply {
        /// Echoed round-trip id.
        op: OperationId,
        /// `id::key_digest` of the key written: the coordinator ignores a reply about another key.
        key_digest: u64,
        /// `Ok` once durable.
        result: Result<(), ReplicaError>,
    },
    /// Client-facing node → a replica of the key (vector-clock mode): coordinate this put, creating
    /// its dot from your own durable copy.
    CoordinatePut {
        /// Round-trip id at the client-facing node.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The value, `None` for a delete.
        value: Option<Bytes>,
        /// The client's causal context.
        context: VersionVector,
        /// Durable acknowledgements required.
        needed: u8,
    },
    /// Anti-entropy, step 1 (initiator → peer replica): my roots of ranges we both replicate.
    AeRoots {
        /// (range index, root hash).
        roots: Vec<(u32, u64)>,
    },
    /// Step 2 (peer → initiator), for a range whose root differs: my interior hashes.
    AeInterior {
        /// Range index.
        range: u32,
        /// Interior hashes, `LEAVES / FANOUT` of them.
        hashes: Vec<u64>,
    },
    /// Step 3 (initiator → peer): my leaf hashes under the interior nodes that differ.
    AeLeaves {
        /// Range index.
        range: u32,
        /// (interior node, its `FANOUT` leaf hashes).
        groups: Vec<(u8, Vec<u64>)>,
    },
    /// Step 4 (peer → initiator): my (key, digest) entries of the leaves that differ.
    AeDigests {
        /// Range index.
        range: u32,
        /// The differing leaves.
        leaves: Vec<u16>,
        /// My entries in those leaves.
        entries: Vec<(Bytes, u64)>,
    },
    /// Steps 5 and 6 (either way): records to merge, and keys whose records the sender wants.
    AeRecords {
        /// Records to merge (never acknowledged: merging is idempotent).
        records: Vec<(Bytes, Record)>,
        /// Keys the receiver should send back.
        want: Vec<Bytes>,
    },
    /// Coordinating replica → client-facing node: how the put ended.
    CoordinatePutReply {
        /// Echoed round-trip id.
        op: OperationId,
        /// `id::key_digest` of the key put: the client-facing node ignores a reply about another key.
        key_digest: u64,
        /// The outcome.
        outcome: ForwardedOutcome,
    },
    /// Membership gossip (SWIM probes, piggybacked updates, push-pull and the versioned ring),
    /// for the membership machine.
    Gossip(GossipMessage),
    /// Coordinator → replica, `linearizable` level: like `Read`, but only from a replica on the
    /// same ring (`epoch`) that holds the key's range (see `node::handover`). Answered by a
    /// `ReadReply`, an error when refused.
    LinRead {
        /// Round-trip id at the coordinator.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The coordinator's ring epoch when the operation started.
        epoch: u64,
    },
    /// Coordinator → replica, `linearizable` level: like `Write`, refused (and not applied) by a
    /// replica on another ring or that does not hold the key's range yet.
    LinWrite {
        /// Round-trip id at the coordinator.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The record to merge.
        record: Record,
        /// The coordinator's ring epoch when the operation started.
        epoch: u64,
    },
    /// A replica that does not hold some of its ranges yet → a current or previous replica of
    /// them: send one page of your records in `ranges`, from key `start` on.
    HandoverPull {
        /// The puller's ring epoch (the answerer must hold the same ring).
        epoch: u64,
        /// The epoch of the ring the puller held just before (0: none known).
        previous: u64,
        /// Range indices of the ring of `epoch`.
        ranges: Vec<u32>,
        /// First key of the page.
        start: Bytes,
    },
    /// The answer to a `HandoverPull`.
    HandoverPage {
        /// Echoed epoch.
        epoch: u64,
        /// Echoed first key.
        start: Bytes,
        /// The page, or why the answerer refused (another ring, or its ring not durable yet).
        page: Result<HandoverPage, ReplicaError>,
    },
    /// Coordinator → replica (`SCAN`, see `node::scan`): your keys whose token lies in
    /// `from..=to`, in token order, about `keys_max` of them. (Appended: encoded by position.)
    ScanRange {
        /// Round-trip id at the coordinator.
        op: OperationId,
        /// First token of the interval.
        from: u64,
        /// Last token of the interval (inclusive).
        to: u64,
        /// Keys wanted (the page may hold a few more that share its last token).
        keys_max: u32,
    },
    /// The answer to a `ScanRange`.
    ScanRangeReply {
        /// Echoed round-trip id.
        op: OperationId,
        /// Echoed first token: the coordinator ignores a reply about another interval.
        from: u64,
        /// The page, or why the replica refused.
        page: Result<ScanPage, ReplicaError>,
    },
    /// Coordinator → every member (`DBSIZE`): count your live keys.
    CountLive {
        /// Round-trip id at the coordinator.
        op: OperationId,
    },
    /// The answer to a `CountLive`.
    CountLiveReply {
        /// Echoed round-trip id.
        op: OperationId,
        /// (the token ending a range this member replicates, its live keys here).
        ranges: Vec<(u64, u64)>,
    },
    /// Client-facing node → one replica of the key: apply this increment to your own slot, then
    /// replicate the counter's state; answered by a `CoordinatePutReply`. Sent to one replica
    /// only and never retried elsewhere (an increment applied twice would count twice);
    /// duplicates are dropped by the receiver like forwarded puts. Last on purpose.
    CoordinateIncrement {
        /// Round-trip id at the client-facing node.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// What to add.
        delta: i64,
        /// Durable acknowledgements required.
        needed: u8,
    },
    /// Paxos proposer → replica, phase 1 (see `node::paxos`): promise to accept nothing below
    /// `ballot` for `key`, and tell me your Paxos state and record. Fenced by `epoch` like
    /// `LinRead`.
    PaxosPrepare {
        /// Round-trip id of the proposer's round.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The round's ballot.
        ballot: Ballot,
        /// The proposer's ring epoch.
        epoch: u64,
    },
    /// Replica → proposer: the answer to a `PaxosPrepare`, sent once the promise is durable.
    PaxosPromise {
        /// Echoed round-trip id.
        op: OperationId,
        /// `id::key_digest` of the key.
        key_digest: u64,
        /// The promise (granted or not), or why the replica refused to answer.
        result: Result<Promise, ReplicaError>,
    },
    /// Paxos proposer → replica, phase 2: accept `proposal` at `ballot` unless you promised a
    /// higher ballot.
    PaxosPropose {
        /// Round-trip id of the proposer's round.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The round's ballot.
        ballot: Ballot,
        /// The record proposed (its lww version is fixed here, so a re-proposal writes the
        /// same version).
        proposal: LwwRecord,
        /// The proposer's ring epoch.
        epoch: u64,
    },
    /// Replica → proposer: whether the proposal was accepted (`Ok(true)`, sent once durable) or
    /// refused for a higher promise (`Ok(false)`, no effect).
    PaxosAccept {
        /// Echoed round-trip id.
        op: OperationId,
        /// `id::key_digest` of the key.
        key_digest: u64,
        /// Accepted, refused for a higher promise, or an error.
        result: Result<bool, ReplicaError>,
    },
    /// Paxos proposer → replica, phase 3: `record` was chosen at `ballot`; merge it into your
    /// record and remember the commit. Acknowledged by a `WriteReply` once durable.
    PaxosCommit {
        /// Round-trip id of the proposer's round.
        op: OperationId,
        /// The key.
        key: Bytes,
        /// The ballot it was chosen at.
        ballot: Ballot,
        /// The chosen record.
        record: LwwRecord,
        /// The proposer's ring epoch.
        epoch: u64,
    },
}

/// A Paxos ballot: a hybrid-clock timestamp of the proposer and its node id, so two proposers
/// never share one and a later round of one proposer always has a higher one (see
/// `node::paxos`). Ordered by time, then node.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Ballot {
    /// Hybrid-logical-clock microseconds at the proposer.
    pub micros: u64,
    /// The proposer.
    pub node: crate::id::NodeId,
}

/// A replica's answer to a `PaxosPrepare`: its Paxos state for the key and its record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Promise {
    /// The promise was made (the ballot is at least every one promised before).
    pub granted: bool,
    /// The highest ballot promised, after this prepare.
    pub promised: Option<Ballot>,
    /// The latest proposal accepted and not known committed: (ballot, record).
    pub accepted: Option<(Ballot, LwwRecord)>,
    /// The ballot of the most recent commit this replica applied.
    pub committed: Option<Ballot>,
    /// The replica's record of the key.
    pub record: Option<Record>,
}

/// One replica's page of a scan interval.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanPage {
    /// (key, record) in token order; records carry versions and liveness with their values
    /// emptied (the coordinator needs only which version is newest and whether it is live).
    pub records: Vec<(Bytes, Record)>,
    /// The replica stopped before the end of the interval: it holds keys after the page's
    /// last token. A page never ends in the middle of the keys sharing one token.
    pub truncated: bool,
}

/// One page of a range pull, with what the answerer vouches for (see `node::handover`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandoverPage {
    /// Records in the requested ranges among the keys scanned.
    pub records: Vec<(Bytes, Record)>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Bytes>,
    /// Requested ranges the answerer is a ready replica of, on the shared ring.
    pub ready_now: Vec<u32>,
    /// Ranges of the previous ring (overlapping the requested ones) that the answerer was a
    /// ready replica of when it adopted the shared ring directly from it.
    pub ready_before: Vec<u32>,
}

/// The outcome of a forwarded put.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ForwardedOutcome {
    /// Durable on `acks` replicas.
    Written {
        /// The dot created.
        version: WriteVersion,
        /// Durable acknowledgements.
        acks: u8,
    },
    /// Not enough acknowledgements in time; may take effect later.
    Indeterminate {
        /// Durable acknowledgements.
        acks: u8,
    },
    /// Refused before any effect.
    Rejected(crate::client::RequestError),
    /// An increment is durable on `acks` replicas; the counter's value just after it on the
    /// replica that applied it. Last on purpose: variants are encoded by position.
    Counted {
        /// The counter's value.
        value: i64,
        /// Durable acknowledgements.
        acks: u8,
    },
}

/// Why a replica could not serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaError {
    /// Storage failed or is poisoned.
    Storage,
    /// The replica is over a limit.
    Busy,
    /// Linearizable level: the replica holds another ring than the coordinator (fencing).
    RingMismatch,
    /// Linearizable level: the replica does not hold the key's range yet (handover pending).
    NotReady,
    /// The replica's disk is full: the write was refused before any effect (unlike `Storage`,
    /// which may come after it was staged). Last on purpose: variants are encoded by position.
    NoSpace,
}

impl Message {
    /// True for anti-entropy traffic (counted separately by drivers).
    pub fn is_anti_entropy(&self) -> bool {
        matches!(
            self,
            Message::AeRoots { .. }
                | Message::AeInterior { .. }
                | Message::AeLeaves { .. }
                | Message::AeDigests { .. }
                | Message::AeRecords { .. }
        )
    }

    /// A short name of the message kind, for traces and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Read { .. } => "read",
            Message::ReadReply { .. } => "read-reply",
            Message::Write { .. } => "write",
            Message::WriteReply { .. } => "write-reply",
            Message::HintedWrite { .. } => "hinted-write",
            Message::CoordinatePut { .. } => "coordinate-put",
            Message::CoordinatePutReply { .. } => "coordinate-put-reply",
            Message::AeRoots { .. } => "ae-roots",
            Message::AeInterior { .. } => "ae-interior",
            Message::AeLeaves { .. } => "ae-leaves",
            Message::AeDigests { .. } => "ae-digests",
            Message::AeRecords { .. } => "ae-records",
            Message::Gossip(GossipMessage::Ping { .. }) => "gossip-ping",
            Message::Gossip(GossipMessage::Ack { .. }) => "gossip-ack",
            Message::Gossip(GossipMessage::PingReq { .. }) => "gossip-ping-req",
            Message::Gossip(GossipMessage::Gossip { .. }) => "gossip-push",
            Message::Gossip(GossipMessage::State { .. }) => "gossip-state",
            Message::Gossip(GossipMessage::Addresses { .. }) => "gossip-addresses",
            Message::LinRead { .. } => "lin-read",
            Message::LinWrite { .. } => "lin-write",
            Message::HandoverPull { .. } => "handover-pull",
            Message::HandoverPage { .. } => "handover-page",
            Message::ScanRange { .. } => "scan-range",
            Message::ScanRangeReply { .. } => "scan-range-reply",
            Message::CountLive { .. } => "count-live",
            Message::CountLiveReply { .. } => "count-live-reply",
            Message::CoordinateIncrement { .. } => "coordinate-increment",
            Message::PaxosPrepare { .. } => "paxos-prepare",
            Message::PaxosPromise { .. } => "paxos-promise",
            Message::PaxosPropose { .. } => "paxos-propose",
            Message::PaxosAccept { .. } => "paxos-accept",
            Message::PaxosCommit { .. } => "paxos-commit",
        }
    }
}
