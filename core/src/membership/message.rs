//! What gossip puts on the wire. Plain data: decoding untrusted bytes (through `crate::codec`)
//! cannot panic, and the receiver checks every length against its own limits before using it.

use super::addresses::AddressEntry;
use super::ring_log::{RingLog, RingVersion};
use crate::id::NodeId;
use serde::{Deserialize, Serialize};

/// One member's liveness as the sender knows it. Ordered by `(incarnation, heartbeat)`: a restart
/// raises the incarnation (and resets the heartbeat), each gossip round of the member itself
/// raises the heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GossipEntry {
    /// The member.
    pub node: NodeId,
    /// Raised each time the member restarts (or refutes a newer claim about itself).
    pub incarnation: u64,
    /// Raised by the member once per gossip round.
    pub heartbeat: u64,
}

impl GossipEntry {
    /// The freshness order: the larger pair is the newer news.
    pub fn freshness(&self) -> (u64, u64) {
        (self.incarnation, self.heartbeat)
    }
}

/// A gossip exchange: the initiator sends its whole table (`Syn`), the receiver answers with what
/// it knows better (`Ack`). Push-pull spreads news in both directions per contact.
///
/// Size: at most `members_max` entries (each a few varint bytes) plus, only when the peer's ring
/// is known or suspected to be older, one ring log of at most `ring_changes_max` changes. A
/// receiver refuses (and counts) anything larger.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GossipMessage {
    /// Opens an exchange: the sender's full table.
    Syn {
        /// Every member the sender knows, its own entry included.
        entries: Vec<GossipEntry>,
        /// The sender's ring version.
        ring_version: RingVersion,
        /// The sender's ring log, when it believes the receiver's ring is older.
        ring: Option<RingLog>,
    },
    /// Answers a `Syn`: the entries the receiver knows newer than the `Syn` said (or that the
    /// `Syn` lacked).
    Ack {
        /// Entries newer at the receiver of the `Syn`.
        entries: Vec<GossipEntry>,
        /// The replier's ring version.
        ring_version: RingVersion,
        /// The replier's ring log, when the `Syn` showed an older version.
        ring: Option<RingLog>,
    },
    /// Client addresses ([`super::addresses`]): appended last so that nodes without it refuse
    /// only this message. Carries no liveness and no ring.
    Addresses {
        /// Addresses the sender knows (its own first, if it has one).
        entries: Vec<AddressEntry>,
        /// True for a push (answer with what you hold newer), false for the answer itself.
        answer_wanted: bool,
    },
}

impl GossipMessage {
    /// The liveness entries carried (none in an `Addresses` message).
    pub fn entries(&self) -> &[GossipEntry] {
        match self {
            GossipMessage::Syn { entries, .. } | GossipMessage::Ack { entries, .. } => entries,
            GossipMessage::Addresses { .. } => &[],
        }
    }

    /// The ring version the sender holds (the empty ring's for an `Addresses` message, which
    /// does not say: the receiver handles that message before looking at versions).
    pub fn ring_version(&self) -> RingVersion {
        match self {
            GossipMessage::Syn { ring_version, .. } | GossipMessage::Ack { ring_version, .. } => {
                *ring_version
            }
            GossipMessage::Addresses { .. } => RingVersion::default(),
        }
    }

    /// The ring log carried, if any.
    pub fn ring(&self) -> Option<&RingLog> {
        match self {
            GossipMessage::Syn { ring, .. } | GossipMessage::Ack { ring, .. } => ring.as_ref(),
            GossipMessage::Addresses { .. } => None,
        }
    }
}
