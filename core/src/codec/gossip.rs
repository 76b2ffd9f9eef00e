//! A hand-written path through the wire encoding for the one message that dominates a large
//! cluster's traffic: a gossip `Syn` or `Ack` without a ring log (a list of `(node, incarnation,
//! heartbeat)` triples). Through serde, each of the three varints of every entry passes the
//! generic encoder and decoder machinery; with 100 members that was a third of a simulated
//! 100-node cluster's instructions.
//!
//! The bytes are bincode's, exactly (the tests compare both ways on every shape and boundary
//! value): the variant index as a varint, the entry count as a varint, each entry's three
//! varints, the ring version's two, and the `None` tag of the ring log. Anything else (another
//! message, a ring log, an `Addresses` list) is left to serde; so is any input this decoder does
//! not accept whole, so a malformed message gets serde's own error.

use super::varint::{put_varint, Reader};
use crate::id::NodeId;
use crate::membership::{GossipEntry, GossipMessage, RingVersion};
use crate::message::Message;

/// `Message::Gossip`'s variant index (its place in the enum; the tests check it).
const GOSSIP_VARIANT: u64 = 12;
/// `GossipMessage::Syn`'s variant index.
const SYN_VARIANT: u64 = 0;
/// `GossipMessage::Ack`'s variant index.
const ACK_VARIANT: u64 = 1;
/// The fewest bytes an entry takes (three one-byte varints).
const ENTRY_BYTES_MIN: usize = 3;
/// What an entry usually takes (a small node id and incarnation, a heartbeat past 250): room
/// reserved up front so that the output grows once.
const ENTRY_BYTES_TYPICAL: usize = 6;

/// Appends `message`'s encoding to `out` and returns true, if it is a gossip `Syn` or `Ack`
/// without a ring log; otherwise writes nothing and returns false.
pub(super) fn encode(message: &Message, out: &mut Vec<u8>) -> bool {
    let (variant, entries, version) = match message {
        Message::Gossip(GossipMessage::Syn {
            entries,
            ring_version,
            ring: None,
        }) => (SYN_VARIANT, entries, ring_version),
        Message::Gossip(GossipMessage::Ack {
            entries,
            ring_version,
            ring: None,
        }) => (ACK_VARIANT, entries, ring_version),
        _ => return false,
    };
    out.reserve(entries.len() * ENTRY_BYTES_TYPICAL + 32);
    put_varint(out, GOSSIP_VARIANT);
    put_varint(out, variant);
    put_varint(out, u64::try_from(entries.len()).unwrap_or(u64::MAX));
    for entry in entries {
        put_varint(out, u64::from(entry.node.0));
        put_varint(out, entry.incarnation);
        put_varint(out, entry.heartbeat);
    }
    put_varint(out, version.changes);
    put_varint(out, version.fingerprint);
    out.push(0); // ring: None
    true
}

/// The message `bytes` encode, if they are a whole gossip `Syn` or `Ack` without a ring log.
/// `None` for anything else, valid or not: the caller then decodes with serde.
pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
    let mut reader = Reader::new(bytes);
    if reader.varint_u32()? != GOSSIP_VARIANT {
        return None;
    }
    let variant = reader.varint_u32()?;
    if variant != SYN_VARIANT && variant != ACK_VARIANT {
        return None;
    }
    let count = usize::try_from(reader.varint_u64()?).ok()?;
    if count > reader.remaining() / ENTRY_BYTES_MIN {
        return None; // cut or corrupt: serde reports it
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let node = u32::try_from(reader.varint_u32()?).ok()?;
        entries.push(GossipEntry {
            node: NodeId(node),
            incarnation: reader.varint_u64()?,
            heartbeat: reader.varint_u64()?,
        });
    }
    let ring_version = RingVersion {
        changes: reader.varint_u64()?,
        fingerprint: reader.varint_u64()?,
    };
    if reader.byte()? != 0 || reader.remaining() != 0 {
        return None;
    }
    Some(Message::Gossip(if variant == SYN_VARIANT {
        GossipMessage::Syn {
            entries,
            ring_version,
            ring: None,
        }
    } else {
        GossipMessage::Ack {
            entries,
            ring_version,
            ring: None,
        }
    }))
}
