//! A hand-written encoder and decoder for the peer messages a cluster sends most: anti-entropy's
//! roots (every replica, every round, to each partner) and the small SWIM messages (probes, acks,
//! indirect probes, pushes), and the push-pull tables (with the ring log some of them carry, see
//! `ring_log`). On a 100-node simulation they are nine in ten of all messages, and
//! bincode's serde path spent about 1,100 instructions on each (a visitor per enum, per struct and
//! per vector element, and a limit check per byte read): a seventh of the run's CPU for a few
//! dozen bytes.
//!
//! Like `record`, the encoder writes serde's bytes exactly and leaves every other message to
//! serde; the decoder's result is serde's exactly: any input it does not accept whole (another
//! message, a cut or damaged frame, a trailing byte) yields `None`, and the caller decodes it with
//! serde, so a malformed frame gets serde's own error. The tests compare both codecs on every
//! shape, on varint boundaries and on damaged input.

use super::ring_log::{put_ring_log, read_ring_log};
use super::varint::{put_varint, Reader};
use crate::id::NodeId;
use crate::membership::{GossipEntry, GossipMessage, Liveness, RingVersion};
use crate::message::Message;

/// `Message`'s variant indexes (serde numbers variants in declaration order).
const AE_ROOTS_VARIANT: u64 = 6;
const GOSSIP_VARIANT: u64 = 12;
/// `GossipMessage`'s variant indexes.
const PING_VARIANT: u64 = 0;
const ACK_VARIANT: u64 = 1;
const PING_REQ_VARIANT: u64 = 2;
const PUSH_VARIANT: u64 = 3;
const STATE_VARIANT: u64 = 4;

/// Appends the bytes of `message` as serde writes them and returns true, if it is one of the
/// messages this module knows; returns false (and appends nothing) for any other.
pub(super) fn encode(message: &Message, out: &mut Vec<u8>) -> bool {
    match message {
        Message::AeRoots { roots } => {
            out.reserve(2 + roots.len() * 14);
            put_varint(out, AE_ROOTS_VARIANT);
            put_varint(out, roots.len() as u64);
            for &(range, root) in roots {
                put_varint(out, u64::from(range));
                put_varint(out, root);
            }
        }
        Message::Gossip(gossip) => return encode_gossip(gossip, out),
        _ => return false,
    }
    true
}

/// [`encode`] of a gossip message.
fn encode_gossip(gossip: &GossipMessage, out: &mut Vec<u8>) -> bool {
    let (variant, probe, target, ring_version, updates) = match gossip {
        GossipMessage::Ping {
            probe,
            ring_version,
            updates,
        } => (PING_VARIANT, Some(*probe), None, ring_version, updates),
        GossipMessage::Ack {
            probe,
            ring_version,
            updates,
        } => (ACK_VARIANT, Some(*probe), None, ring_version, updates),
        GossipMessage::PingReq {
            probe,
            target,
            ring_version,
            updates,
        } => (
            PING_REQ_VARIANT,
            Some(*probe),
            Some(*target),
            ring_version,
            updates,
        ),
        GossipMessage::Gossip {
            ring_version,
            updates,
        } => (PUSH_VARIANT, None, None, ring_version, updates),
        GossipMessage::State {
            entries,
            ring_version,
            ring,
            reply_wanted,
        } => {
            let log_bytes = ring.as_ref().map_or(0, |log| 10 + log.changes.len() * 24);
            out.reserve(21 + entries.len() * 15 + log_bytes);
            put_varint(out, GOSSIP_VARIANT);
            put_varint(out, STATE_VARIANT);
            put_entries(out, entries);
            put_varint(out, ring_version.changes);
            put_varint(out, ring_version.fingerprint);
            // An option's tag and a bool take one byte each.
            match ring {
                None => out.push(0),
                Some(log) => {
                    out.push(1);
                    put_ring_log(out, log);
                }
            }
            out.push(u8::from(*reply_wanted));
            return true;
        }
        GossipMessage::Addresses { .. } => return false,
    };
    out.reserve(34 + updates.len() * 15);
    put_varint(out, GOSSIP_VARIANT);
    put_varint(out, variant);
    if let Some(probe) = probe {
        put_varint(out, probe);
    }
    if let Some(target) = target {
        put_varint(out, u64::from(target.0));
    }
    put_varint(out, ring_version.changes);
    put_varint(out, ring_version.fingerprint);
    put_entries(out, updates);
    true
}

/// The message `bytes` encode, if they are a whole message of a kind this module knows; `None`
/// for anything else, valid or not.
/// Whether `bytes` begin with one of this file's message variants written in one byte, as
/// every encoder writes it: such a frame is none of `replication`'s messages, so the caller
/// skips that decoder's attempt (gossip and anti-entropy roots are nine in ten of a large
/// cluster's messages). A variant written in more bytes answers `false` (the caller then tries
/// both decoders, as before).
pub(super) fn leads(bytes: &[u8]) -> bool {
    bytes
        .first()
        .is_some_and(|&b| u64::from(b) == AE_ROOTS_VARIANT || u64::from(b) == GOSSIP_VARIANT)
}

pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
    let mut reader = Reader::new(bytes);
    let message = match reader.varint_u32()? {
        AE_ROOTS_VARIANT => {
            let count = length(&mut reader)?;
            let mut roots = Vec::with_capacity(count);
            for _ in 0..count {
                let range = u32::try_from(reader.varint_u32()?).ok()?;
                roots.push((range, reader.varint_u64()?));
            }
            Message::AeRoots { roots }
        }
        GOSSIP_VARIANT => Message::Gossip(decode_gossip(&mut reader)?),
        _ => return None,
    };
    (reader.remaining() == 0).then_some(message)
}

fn decode_gossip(reader: &mut Reader<'_>) -> Option<GossipMessage> {
    let variant = reader.varint_u32()?;
    if variant == STATE_VARIANT {
        let entries = entries(reader)?;
        let ring_version = RingVersion {
            changes: reader.varint_u64()?,
            fingerprint: reader.varint_u64()?,
        };
        let ring = match reader.byte()? {
            0 => None,
            1 => Some(read_ring_log(reader)?),
            _ => return None,
        };
        let reply_wanted = match reader.byte()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        return Some(GossipMessage::State {
            entries,
            ring_version,
            ring,
            reply_wanted,
        });
    }
    let probe = match variant {
        PING_VARIANT | ACK_VARIANT | PING_REQ_VARIANT => reader.varint_u64()?,
        PUSH_VARIANT => 0,
        _ => return None,
    };
    let target = match variant {
        PING_REQ_VARIANT => NodeId(u32::try_from(reader.varint_u32()?).ok()?),
        _ => NodeId(0),
    };
    let ring_version = RingVersion {
        changes: reader.varint_u64()?,
        fingerprint: reader.varint_u64()?,
    };
    let updates = entries(reader)?;
    Some(match variant {
        PING_VARIANT => GossipMessage::Ping {
            probe,
            ring_version,
            updates,
        },
        ACK_VARIANT => GossipMessage::Ack {
            probe,
            ring_version,
            updates,
        },
        PING_REQ_VARIANT => GossipMessage::PingReq {
            probe,
            target,
            ring_version,
            updates,
        },
        _ => GossipMessage::Gossip {
            ring_version,
            updates,
        },
    })
}

/// A vector of membership claims.
fn entries(reader: &mut Reader<'_>) -> Option<Vec<GossipEntry>> {
    let count = length(reader)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(GossipEntry {
            node: NodeId(u32::try_from(reader.varint_u32()?).ok()?),
            incarnation: reader.varint_u64()?,
            liveness: match reader.varint_u32()? {
                0 => Liveness::Alive,
                1 => Liveness::Suspect,
                2 => Liveness::Down,
                _ => return None,
            },
        });
    }
    Some(entries)
}

fn put_entries(out: &mut Vec<u8>, entries: &[GossipEntry]) {
    put_varint(out, entries.len() as u64);
    for entry in entries {
        put_varint(out, u64::from(entry.node.0));
        put_varint(out, entry.incarnation);
        put_varint(out, liveness_variant(entry.liveness));
    }
}

/// A vector's length, if the input could hold that many elements (each takes at least two
/// bytes here): a damaged length never reserves more than the frame could fill.
fn length(reader: &mut Reader<'_>) -> Option<usize> {
    let count = usize::try_from(reader.varint_u64()?).ok()?;
    (count <= reader.remaining() / 2).then_some(count)
}

fn liveness_variant(liveness: Liveness) -> u64 {
    match liveness {
        Liveness::Alive => 0,
        Liveness::Suspect => 1,
        Liveness::Down => 2,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Varints at their boundaries (every hand-written codec's tests use them).
    pub(in crate::codec) const EDGES: [u64; 9] = [
        0,
        1,
        250,
        251,
        65_535,
        65_536,
        u32::MAX as u64,
        u32::MAX as u64 + 1,
        u64::MAX,
    ];

    fn node(i: usize) -> NodeId {
        NodeId(u32::try_from(EDGES[i % 7]).unwrap_or(u32::MAX))
    }

    fn updates(count: usize) -> Vec<GossipEntry> {
        (0..count)
            .map(|i| GossipEntry {
                node: node(i),
                incarnation: EDGES[(i + 3) % EDGES.len()],
                liveness: [Liveness::Alive, Liveness::Suspect, Liveness::Down][i % 3],
            })
            .collect()
    }

    /// Every shape this module handles, with varints at their boundaries, and a few it leaves to
    /// serde (the codec's round-trip test uses them too).
    pub(in crate::codec) fn samples() -> Vec<Message> {
        let edges = EDGES;
        let mut samples = Vec::new();
        for (i, &edge) in edges.iter().enumerate() {
            let ring_version = RingVersion {
                changes: edge,
                fingerprint: edges[(i + 5) % edges.len()],
            };
            let probe = edges[(i + 2) % edges.len()];
            let count = [0, 1, 3, 8, 300][i % 5];
            samples.push(Message::Gossip(GossipMessage::Ping {
                probe,
                ring_version,
                updates: updates(count),
            }));
            samples.push(Message::Gossip(GossipMessage::Ack {
                probe,
                ring_version,
                updates: updates(count),
            }));
            samples.push(Message::Gossip(GossipMessage::PingReq {
                probe,
                target: node(i + 1),
                ring_version,
                updates: updates(count),
            }));
            samples.push(Message::Gossip(GossipMessage::Gossip {
                ring_version,
                updates: updates(count),
            }));
            samples.push(Message::AeRoots {
                roots: (0..count)
                    .map(|j| {
                        let range = u32::try_from(edges[(i + j) % 7]).unwrap_or(u32::MAX);
                        (range, edges[(i + j + 4) % edges.len()])
                    })
                    .collect(),
            });
        }
        samples.extend(state_samples());
        samples.push(Message::AeInterior {
            range: 3,
            hashes: vec![1, 2],
        });
        samples
    }

    /// Push-pull tables, with and without a ring log.
    fn state_samples() -> Vec<Message> {
        let edges = EDGES;
        let mut samples = Vec::new();
        for (i, reply_wanted) in [(0, true), (1, false), (3, true), (100, false)] {
            samples.push(Message::Gossip(GossipMessage::State {
                entries: updates(i),
                ring_version: RingVersion {
                    changes: edges[i % edges.len()],
                    fingerprint: edges[(i + 1) % edges.len()],
                },
                ring: None,
                reply_wanted,
            }));
        }
        samples.push(Message::Gossip(GossipMessage::State {
            entries: updates(3),
            ring_version: RingVersion::default(),
            ring: Some(crate::membership::RingLog {
                vnodes_per_node: 64,
                changes: Vec::new(),
            }),
            reply_wanted: true,
        }));
        for (i, &edge) in edges.iter().enumerate() {
            samples.push(Message::Gossip(GossipMessage::State {
                entries: updates(i),
                ring_version: RingVersion {
                    changes: edge,
                    fingerprint: 7,
                },
                ring: Some(ring_log(i, edge)),
                reply_wanted: i % 2 == 0,
            }));
        }
        samples
    }

    /// A ring log of every change kind, with names of every length class (and not all ASCII)
    /// and numbers at varint boundaries.
    fn ring_log(i: usize, edge: u64) -> crate::membership::RingLog {
        use crate::membership::RingChange;
        use crate::ring::{Member, NodeLocation};
        let narrow = u32::try_from(edge).unwrap_or(u32::MAX);
        let names = [
            String::new(),
            "dc1".to_string(),
            "räck-ö".repeat(50),
            "r".repeat(251),
        ];
        let mut changes = Vec::new();
        for j in 0..[1, 3, 8][i % 3] {
            changes.push(RingChange::Join(Member {
                id: node(i + j),
                location: NodeLocation {
                    datacenter: names[j % names.len()].clone(),
                    rack: names[(j + i) % names.len()].clone(),
                    weight: narrow.wrapping_add(u32::try_from(j).unwrap_or(0)),
                },
            }));
            changes.push(RingChange::Leave(node(j + 2)));
            changes.push(RingChange::Remove(node(i + j + 5)));
        }
        crate::membership::RingLog {
            vnodes_per_node: narrow,
            changes,
        }
    }

    fn serde_bytes(message: &Message) -> Vec<u8> {
        bincode::serde::encode_to_vec(message, super::super::config()).unwrap_or_default()
    }

    fn serde_decode(bytes: &[u8]) -> Option<Message> {
        let (message, used) =
            bincode::serde::decode_from_slice(bytes, super::super::decode_config()).ok()?;
        (used == bytes.len()).then_some(message)
    }

    #[test]
    fn writes_the_bytes_serde_writes() {
        for message in samples() {
            let mut out = vec![7u8];
            if encode(&message, &mut out) {
                assert_eq!(out[1..], serde_bytes(&message)[..], "{message:?}");
            } else {
                assert_eq!(out, vec![7u8], "wrote something for {message:?}");
                assert!(
                    matches!(message, Message::AeInterior { .. }),
                    "left to serde: {message:?}"
                );
            }
        }
    }

    #[test]
    fn reads_what_serde_reads_and_nothing_else() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for message in samples() {
            let bytes = serde_bytes(&message);
            let handled = encode(&message, &mut Vec::new());
            assert_eq!(decode(&bytes), handled.then(|| message.clone()));
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), None, "a cut frame of {message:?}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode(&longer), None, "a trailing byte");
            for _ in 0..300 {
                let mut damaged = bytes.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..damaged.len());
                    damaged[at] = rng.gen();
                }
                if let Some(mine) = decode(&damaged) {
                    assert_eq!(Some(mine), serde_decode(&damaged), "{damaged:?}");
                }
            }
        }
    }
}
