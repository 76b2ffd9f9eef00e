//! The ring log a push-pull `State` carries to a node whose ring is older, by hand: on a
//! 1,000-node simulation every joiner's first exchanges carry a log of a thousand joins, and
//! serde spent a visitor per change, per member and per location on each, and most of the
//! instructions of the whole codec (issue #15).
//!
//! Called by `frequent` for the `State` message; the encoder writes serde's bytes exactly and
//! the reader's result is serde's: anything it does not accept (a damaged varint, a string that
//! is not UTF-8, an unknown change) yields `None`, and the caller leaves the frame to serde.

use super::varint::{put_varint, Reader};
use crate::id::NodeId;
use crate::membership::{RingChange, RingLog};
use crate::ring::{Member, NodeLocation};

/// `RingChange`'s variant indexes.
const JOIN_VARIANT: u64 = 0;
const LEAVE_VARIANT: u64 = 1;
const REMOVE_VARIANT: u64 = 2;
/// Fewest bytes a change takes (a variant and a node), so that a damaged count never reserves
/// more changes than the frame could hold.
const CHANGE_BYTES_MIN: usize = 2;

/// Appends the bytes serde writes for `log`.
pub(super) fn put_ring_log(out: &mut Vec<u8>, log: &RingLog) {
    put_varint(out, u64::from(log.vnodes_per_node));
    put_varint(out, log.changes.len() as u64);
    for change in &log.changes {
        match change {
            RingChange::Join(member) => {
                put_varint(out, JOIN_VARIANT);
                put_varint(out, u64::from(member.id.0));
                put_string(out, &member.location.datacenter);
                put_string(out, &member.location.rack);
                put_varint(out, u64::from(member.location.weight));
            }
            RingChange::Leave(node) => {
                put_varint(out, LEAVE_VARIANT);
                put_varint(out, u64::from(node.0));
            }
            RingChange::Remove(node) => {
                put_varint(out, REMOVE_VARIANT);
                put_varint(out, u64::from(node.0));
            }
        }
    }
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Reads what [`put_ring_log`] writes; `None` for anything else.
pub(super) fn read_ring_log(reader: &mut Reader<'_>) -> Option<RingLog> {
    let vnodes_per_node = read_u32(reader)?;
    let count = usize::try_from(reader.varint_u64()?).ok()?;
    if count > reader.remaining() / CHANGE_BYTES_MIN {
        return None;
    }
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        changes.push(match reader.varint_u32()? {
            JOIN_VARIANT => RingChange::Join(Member {
                id: NodeId(read_u32(reader)?),
                location: NodeLocation {
                    datacenter: read_string(reader)?,
                    rack: read_string(reader)?,
                    weight: read_u32(reader)?,
                },
            }),
            LEAVE_VARIANT => RingChange::Leave(NodeId(read_u32(reader)?)),
            REMOVE_VARIANT => RingChange::Remove(NodeId(read_u32(reader)?)),
            _ => return None,
        });
    }
    Some(RingLog {
        vnodes_per_node,
        changes,
    })
}

fn read_u32(reader: &mut Reader<'_>) -> Option<u32> {
    u32::try_from(reader.varint_u32()?).ok()
}

/// A string as serde reads one: a length, then that many bytes of UTF-8.
fn read_string(reader: &mut Reader<'_>) -> Option<String> {
    let len = usize::try_from(reader.varint_u64()?).ok()?;
    let bytes = reader.take_slice(len)?;
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}
