//! `KV.RING`: the ring as a client needs it to route each request to a replica of its key
//! (token-aware routing; the `ringkv-client` crate is the reference user).
//!
//! Reply: `[ring_version, [[start_token, end_token, [[node_id, client_host, client_port], ...]],
//! ...]]`. `ring_version` is an integer (joins and removals applied to the ring; it only grows
//! on a node, and `/ring` gives the fingerprint beside it). A range owns the tokens in
//! `(start_token, end_token]`; the first range wraps (its start is the last range's end). Tokens
//! are unsigned 64-bit integers sent as decimal bulk strings (RESP integers are signed and would
//! not hold the upper half). A key's token is `ringkv_core::hash::hash_bytes(key)`. Replicas come
//! in preference order (the first is the range's owner), `replication.n` of them; a replica
//! whose client address gossip has not brought yet has `nil` host and port. Adjacent ranges with
//! the same replicas are merged, so the reply is usually far shorter than one row per vnode.
//!
//! Why from the published [`MembershipView`] and not from the driver: answering never waits
//! behind the data path, and the view is exactly what `/ring` shows.

use crate::admin::MembershipView;
use crate::resp::Reply;
use ringkv_core::NodeId;

/// One range of the reply: `(start, end]` and its replicas in preference order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingRange {
    /// Exclusive start token (the previous range's end).
    pub start: u64,
    /// Inclusive end token.
    pub end: u64,
    /// Replicas, first the owner.
    pub replicas: Vec<NodeId>,
}

/// The ranges of `view`'s ring with `n` replicas each, adjacent ranges with equal replicas
/// merged. Pure over the view, so it is tested as a table.
pub fn ring_ranges(view: &MembershipView, n: usize) -> Vec<RingRange> {
    let ring = &view.ring;
    let tokens: Vec<u64> = ring.tokens().map(|(token, _)| token).collect();
    let mut ranges: Vec<RingRange> = Vec::new();
    let Some(&last) = tokens.last() else {
        return ranges;
    };
    let mut start = last;
    for (index, &end) in tokens.iter().enumerate() {
        let replicas = u32::try_from(index)
            .map(|i| ring.range_replicas(i, n))
            .unwrap_or_default();
        match ranges.last_mut() {
            // Never merged into the first range: it wraps, and a merge would hide where.
            Some(previous) if index > 1 && previous.replicas == replicas => previous.end = end,
            _ => ranges.push(RingRange {
                start,
                end,
                replicas,
            }),
        }
        start = end;
    }
    ranges
}

/// The `KV.RING` reply for `view` with `n` replicas per key.
pub fn ring_reply(view: &MembershipView, n: usize) -> Reply {
    let token = |t: u64| Reply::text(t.to_string());
    let ranges = ring_ranges(view, n)
        .into_iter()
        .map(|range| {
            let replicas = range
                .replicas
                .iter()
                .map(|node| {
                    let (host, port) = match view.client_addresses.get(node) {
                        Some(address) => (
                            Reply::text(address.host.clone()),
                            Reply::Integer(i64::from(address.port)),
                        ),
                        None => (Reply::Null, Reply::Null),
                    };
                    Reply::Array(vec![Reply::Integer(i64::from(node.0)), host, port])
                })
                .collect();
            Reply::Array(vec![
                token(range.start),
                token(range.end),
                Reply::Array(replicas),
            ])
        })
        .collect();
    let version = i64::try_from(view.ring_version.changes).unwrap_or(i64::MAX);
    Reply::Array(vec![Reply::Integer(version), Reply::Array(ranges)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::membership::{ClientAddress, RingVersion};
    use ringkv_core::{NodeLocation, Ring};
    use std::collections::BTreeMap;

    fn view(nodes: u32, vnodes: u32) -> MembershipView {
        let mut ring = Ring::new(vnodes);
        for id in 1..=nodes {
            let location = NodeLocation {
                datacenter: "dc".into(),
                rack: format!("r{id}"),
                weight: 1,
            };
            ring.add_node(NodeId(id), location).expect("add");
        }
        let client_addresses = (1..nodes)
            .map(|id| {
                let address = ClientAddress {
                    host: "127.0.0.1".into(),
                    port: 7000 + id as u16,
                };
                (NodeId(id), address)
            })
            .collect::<BTreeMap<_, _>>();
        MembershipView {
            ring,
            ring_version: RingVersion {
                changes: u64::from(nodes),
                fingerprint: 1,
            },
            members: Vec::new(),
            ranges_replicated: 0,
            client_addresses,
        }
    }

    /// The range a token falls in, found the way a client does: the first range whose end is
    /// at or after the token, else the first (wrapping) range.
    fn range_of(ranges: &[RingRange], token: u64) -> &RingRange {
        let index = ranges.partition_point(|r| r.end < token);
        ranges.get(index).unwrap_or(&ranges[0])
    }

    #[test]
    fn every_key_finds_the_replicas_the_ring_gives_it() {
        for (nodes, n) in [(1, 1), (3, 3), (3, 2), (5, 3)] {
            let view = view(nodes, 16);
            let ranges = ring_ranges(&view, n);
            assert!(ranges.len() <= view.ring.range_count());
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "ranges are contiguous");
                assert!(pair[0].end < pair[1].end, "ranges are sorted");
            }
            assert_eq!(
                ranges[0].start,
                ranges[ranges.len() - 1].end,
                "the first wraps"
            );
            for i in 0..2000u32 {
                let key = format!("key-{i}");
                let token = ringkv_core::hash::hash_bytes(key.as_bytes());
                assert_eq!(
                    range_of(&ranges, token).replicas,
                    view.ring.preference_list(key.as_bytes(), n),
                    "{nodes} nodes, n = {n}, {key}"
                );
            }
            // The extremes of the token space too.
            for token in [0, 1, u64::MAX] {
                assert_eq!(
                    range_of(&ranges, token).replicas,
                    view.ring.preference_list_for_hash(token, n)
                );
            }
        }
    }

    #[test]
    fn the_reply_names_addresses_and_nil_for_unknown_ones() {
        let view = view(3, 4);
        let Reply::Array(top) = ring_reply(&view, 3) else {
            panic!("not an array")
        };
        assert_eq!(top[0], Reply::Integer(3));
        let Reply::Array(ranges) = &top[1] else {
            panic!("ranges not an array")
        };
        assert!(!ranges.is_empty());
        let mut saw_nil = false;
        for range in ranges {
            let Reply::Array(parts) = range else {
                panic!("range not an array")
            };
            let Reply::Array(replicas) = &parts[2] else {
                panic!("replicas not an array")
            };
            assert_eq!(replicas.len(), 3);
            for replica in replicas {
                match replica {
                    Reply::Array(r) if r[0] == Reply::Integer(3) => {
                        assert_eq!(r[1], Reply::Null);
                        saw_nil = true;
                    }
                    Reply::Array(r) => assert_eq!(r[1], Reply::text("127.0.0.1")),
                    other => panic!("replica {other:?}"),
                }
            }
        }
        assert!(saw_nil, "node 3 has no address in the view");
    }

    #[test]
    fn an_empty_ring_is_an_empty_list() {
        let view = view(0, 4);
        assert_eq!(
            ring_reply(&view, 3),
            Reply::Array(vec![Reply::Integer(0), Reply::Array(Vec::new())])
        );
    }
}
