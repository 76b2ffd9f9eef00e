//! What gossip puts on the wire. Plain data: decoding untrusted bytes (through `crate::codec`)
//! cannot panic, and the receiver checks every length against its own limits before using it.

use super::addresses::AddressEntry;
use super::ring_log::{RingLog, RingVersion};
use crate::id::NodeId;
use serde::{Deserialize, Serialize};

/// Most membership updates one probe, ack or gossip message carries (piggybacked news). A
/// receiver refuses a message with more. Why 8: a crash produces two updates (suspect, down), a
/// restart one; eight leave room for several concurrent events while keeping every message a
/// few dozen bytes, whatever the cluster size.
pub const PIGGYBACK_UPDATES_MAX: usize = 8;

/// A member's liveness as a gossiped claim. Ordered: at one incarnation `Down` beats `Suspect`
/// beats `Alive`; only the member itself raises its incarnation (to refute a suspicion or after
/// a restart), so an `Alive` claim at a higher incarnation beats both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Liveness {
    /// Answering probes (or not yet found otherwise).
    Alive,
    /// A probe and its indirect probes went unanswered; the member may refute.
    Suspect,
    /// Suspected for the whole suspicion timeout without refuting.
    Down,
}

/// One claim about a member: `(incarnation, liveness)`, ordered lexicographically (the larger
/// claim is the newer news; see [`Liveness`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GossipEntry {
    /// The member.
    pub node: NodeId,
    /// Raised by the member itself on each restart or refutation.
    pub incarnation: u64,
    /// What the sender holds about the member at that incarnation.
    pub liveness: Liveness,
}

impl GossipEntry {
    /// The precedence order: the larger pair wins a merge.
    pub fn precedence(&self) -> (u64, Liveness) {
        (self.incarnation, self.liveness)
    }
}

/// The messages of the SWIM-style protocol (see the module doc of `membership`). Every message
/// but `State` and `Addresses` is small: at most [`PIGGYBACK_UPDATES_MAX`] updates and the ring
/// version; `State` (the low-rate push-pull) carries the whole table, at most `members_max`
/// entries, plus the ring log only when the peer's ring is known or shown to be older.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GossipMessage {
    /// A probe: answer with an `Ack` carrying the same `probe` number.
    Ping {
        /// The prober's number for this probe.
        probe: u64,
        /// The sender's ring version.
        ring_version: RingVersion,
        /// Piggybacked membership updates.
        updates: Vec<GossipEntry>,
    },
    /// Answers a `Ping` (directly, or relayed by a helper of an indirect probe).
    Ack {
        /// The probe answered.
        probe: u64,
        /// The sender's ring version.
        ring_version: RingVersion,
        /// Piggybacked membership updates.
        updates: Vec<GossipEntry>,
    },
    /// Asks the receiver to probe `target` and relay its `Ack` (indirect probe).
    PingReq {
        /// The requester's probe number, echoed in the relayed `Ack`.
        probe: u64,
        /// The member to probe.
        target: NodeId,
        /// The sender's ring version.
        ring_version: RingVersion,
        /// Piggybacked membership updates.
        updates: Vec<GossipEntry>,
    },
    /// Pushes pending updates to a few random peers (no answer expected).
    Gossip {
        /// The sender's ring version.
        ring_version: RingVersion,
        /// Membership updates.
        updates: Vec<GossipEntry>,
    },
    /// Push-pull anti-entropy: the sender's whole table (its own entry first).
    State {
        /// Every member the sender knows, itself included.
        entries: Vec<GossipEntry>,
        /// The sender's ring version.
        ring_version: RingVersion,
        /// The sender's ring log, when it believes the receiver's ring is older.
        ring: Option<RingLog>,
        /// True for the opening push (answer with your own `State`), false for the answer.
        reply_wanted: bool,
    },
    /// Client addresses ([`super::addresses`]). Carries no liveness and no ring.
    Addresses {
        /// Addresses the sender knows (its own first, if it has one).
        entries: Vec<AddressEntry>,
        /// True for a push (answer with what you hold newer), false for the answer itself.
        answer_wanted: bool,
    },
}

impl GossipMessage {
    /// The membership claims carried (piggybacked updates, or a `State`'s table).
    pub fn entries(&self) -> &[GossipEntry] {
        match self {
            GossipMessage::Ping { updates, .. }
            | GossipMessage::Ack { updates, .. }
            | GossipMessage::PingReq { updates, .. }
            | GossipMessage::Gossip { updates, .. } => updates,
            GossipMessage::State { entries, .. } => entries,
            GossipMessage::Addresses { .. } => &[],
        }
    }

    /// The ring version the sender holds (the empty ring's for an `Addresses` message, which
    /// does not say: the receiver handles that message before looking at versions).
    pub fn ring_version(&self) -> RingVersion {
        match self {
            GossipMessage::Ping { ring_version, .. }
            | GossipMessage::Ack { ring_version, .. }
            | GossipMessage::PingReq { ring_version, .. }
            | GossipMessage::Gossip { ring_version, .. }
            | GossipMessage::State { ring_version, .. } => *ring_version,
            GossipMessage::Addresses { .. } => RingVersion::default(),
        }
    }

    /// The ring log carried, if any.
    pub fn ring(&self) -> Option<&RingLog> {
        match self {
            GossipMessage::State { ring, .. } => ring.as_ref(),
            _ => None,
        }
    }

    /// Most claims this kind of message may carry: a `State` up to the table size, the others
    /// up to [`PIGGYBACK_UPDATES_MAX`].
    pub fn entries_max(&self, members_max: usize) -> usize {
        match self {
            GossipMessage::State { .. } => members_max,
            _ => PIGGYBACK_UPDATES_MAX,
        }
    }
}
