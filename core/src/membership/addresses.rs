//! Where each member serves clients, spread by gossip so any node can tell a client which node to
//! dial for a key (`KV.RING`, token-aware routing).
//!
//! ## Why a separate message and not a field of [`GossipEntry`](super::GossipEntry)
//! The wire format is not self-describing: a field appended to `Syn`/`Ack` would make every
//! message of a new node undecodable by an old one and the reverse. A new variant
//! ([`GossipMessage::Addresses`](super::GossipMessage::Addresses)) is appended instead: an old
//! node refuses just that message (it cannot decode it, counts it and goes on), every other
//! message still flows both ways, so a rolling upgrade keeps working. It also costs nothing when
//! no address is set (the simulator sets none, so its traces are unchanged).
//!
//! ## Protocol
//! An address belongs to one incarnation of its node: a restart raises the incarnation and may
//! bring a new address, and the higher incarnation wins a merge (ties keep what is held, so two
//! nodes never argue). Each node keeps the table of addresses it knows, its own included.
//! * **Rumour:** for [`RUMOUR_ROUNDS`] gossip rounds after this node learned something new (its
//!   own address set, a newer entry merged), its whole table goes with each round's `Syn`s to the
//!   same targets, asking for an answer.
//! * **Push-pull:** a receiver merges what it is sent, and when asked answers with the entries it
//!   holds newer than (or missing from) what it was sent; an answer asks for none, so an exchange
//!   is two messages at most. A node that restarts learns the whole table from its first contacts.
//! * **Anti-entropy:** once quiet, every [`REFRESH_ROUNDS`] rounds the table goes to the first
//!   target of the round anyway, so a node cut off during a rumour still converges.
//!
//! Limits: a message of more than `members_max` entries, or an entry with a host over
//! [`CLIENT_HOST_BYTES_MAX`] bytes, is refused whole and counted; only nodes already in the member
//! table (or in the ring) are recorded, so the table never outgrows `members_max`.

use crate::id::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Gossip rounds a node keeps pushing its table after learning something new. With a fanout of
/// three this reaches every node of a few hundred with overwhelming probability, and the
/// refresh pushes catch any miss.
pub const RUMOUR_ROUNDS: u32 = 10;

/// Rounds between two refresh pushes once quiet (5 s at the default 100 ms rounds).
pub const REFRESH_ROUNDS: u32 = 50;

/// Longest host name accepted in an address (DNS names are at most 253 bytes).
pub const CLIENT_HOST_BYTES_MAX: usize = 255;

/// Where a node accepts client (RESP) connections.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientAddress {
    /// Host name or IP address text, as a client should dial it.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One node's client address as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressEntry {
    /// The node.
    pub node: NodeId,
    /// The incarnation the address belongs to (a higher one wins).
    pub incarnation: u64,
    /// The address.
    pub address: ClientAddress,
}

/// Counters of the address table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressStats {
    /// Address messages sent.
    pub sent: u64,
    /// Address messages refused whole (too many entries, a host too long).
    pub refused: u64,
    /// Entries about nodes not in the member table, dropped.
    pub dropped: u64,
}

/// The address table of one node: the addresses it knows and when to push them. Owned by
/// [`super::Membership`], which calls it from its gossip round and its message handler.
#[derive(Clone, Debug, Default)]
pub struct ClientAddresses {
    /// This node's own address, if the driver set one.
    own: Option<ClientAddress>,
    /// Every other node's address with its incarnation, in id order (iteration reaches output).
    known: BTreeMap<NodeId, (u64, ClientAddress)>,
    /// Rounds of rumour left.
    rumour_rounds_left: u32,
    /// Rounds since the table was last pushed.
    rounds_quiet: u32,
    /// Changes to the table so far (own address set, newer entries merged): a driver republishes
    /// what it shows when this moves.
    changes: u64,
    stats: AddressStats,
}

impl ClientAddresses {
    /// Sets this node's own address (at start, or when its listener moves): news to spread.
    pub fn set_own(&mut self, address: ClientAddress) {
        if self.own.as_ref() != Some(&address) {
            self.own = Some(address);
            self.rumour_rounds_left = RUMOUR_ROUNDS;
            self.changes += 1;
        }
    }

    /// The address of `node` (`me` is this node).
    pub fn get(&self, me: NodeId, node: NodeId) -> Option<&ClientAddress> {
        if node == me {
            self.own.as_ref()
        } else {
            self.known.get(&node).map(|(_, address)| address)
        }
    }

    /// Changes to the table so far; it moves whenever an address is set or learned.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Counters.
    pub fn stats(&self) -> AddressStats {
        self.stats
    }

    /// The whole table as entries, this node's own first (`me` at `incarnation`).
    fn entries(&self, me: NodeId, incarnation: u64) -> Vec<AddressEntry> {
        let own = self.own.iter().map(|address| AddressEntry {
            node: me,
            incarnation,
            address: address.clone(),
        });
        own.chain(
            self.known
                .iter()
                .map(|(&node, (incarnation, address))| AddressEntry {
                    node,
                    incarnation: *incarnation,
                    address: address.clone(),
                }),
        )
        .collect()
    }

    /// A gossip round to `targets`: the entries to push to each (asking for an answer), or
    /// nothing. Pure over the table and the round count, no randomness: the round's targets
    /// were already drawn.
    pub fn on_round(
        &mut self,
        me: NodeId,
        incarnation: u64,
        targets: &[NodeId],
    ) -> Vec<(NodeId, Vec<AddressEntry>)> {
        self.rounds_quiet = self.rounds_quiet.saturating_add(1);
        if (self.own.is_none() && self.known.is_empty()) || targets.is_empty() {
            return Vec::new();
        }
        let chosen: &[NodeId] = if self.rumour_rounds_left > 0 {
            self.rumour_rounds_left -= 1;
            targets
        } else if self.rounds_quiet >= REFRESH_ROUNDS {
            &targets[..1]
        } else {
            return Vec::new();
        };
        self.rounds_quiet = 0;
        let entries = self.entries(me, incarnation);
        self.stats.sent += chosen.len() as u64;
        chosen.iter().map(|&to| (to, entries.clone())).collect()
    }

    /// Merges `entries` received by `me` (at `incarnation`); `is_member` says which nodes may be
    /// recorded. Returns the answer to send back when `answer_wanted`: the entries held newer
    /// than, or missing from, what was received (empty: send nothing). A message over
    /// `entries_max` entries or with an oversized host is refused whole.
    pub fn merge(
        &mut self,
        me: NodeId,
        incarnation: u64,
        entries: &[AddressEntry],
        entries_max: usize,
        answer_wanted: bool,
        is_member: impl Fn(NodeId) -> bool,
    ) -> Vec<AddressEntry> {
        if entries.len() > entries_max
            || entries
                .iter()
                .any(|e| e.address.host.len() > CLIENT_HOST_BYTES_MAX || e.address.host.is_empty())
        {
            self.stats.refused += 1;
            return Vec::new();
        }
        let mut news = false;
        let mut theirs: BTreeMap<NodeId, u64> = BTreeMap::new();
        for entry in entries {
            let seen = theirs.entry(entry.node).or_insert(entry.incarnation);
            *seen = (*seen).max(entry.incarnation);
            if entry.node == me {
                // Our own address is ours to say; a stale claim is answered below.
                continue;
            }
            if !is_member(entry.node) {
                self.stats.dropped += 1;
                continue;
            }
            let newer = self
                .known
                .get(&entry.node)
                .is_none_or(|(held, _)| entry.incarnation > *held);
            if newer {
                self.known
                    .insert(entry.node, (entry.incarnation, entry.address.clone()));
                news = true;
                self.changes += 1;
            }
        }
        if news {
            self.rumour_rounds_left = RUMOUR_ROUNDS;
        }
        if !answer_wanted {
            return Vec::new();
        }
        self.entries(me, incarnation)
            .into_iter()
            .filter(|mine| {
                theirs
                    .get(&mine.node)
                    .is_none_or(|&seen| seen < mine.incarnation)
            })
            .collect()
    }

    /// Panics if an internal invariant is broken: never an entry about `me`, never more than
    /// `entries_max` entries, never an oversized host.
    pub fn check_invariants(&self, me: NodeId, entries_max: usize) {
        assert!(!self.known.contains_key(&me), "own address in the table");
        assert!(self.known.len() <= entries_max, "address table too large");
        assert!(self.rumour_rounds_left <= RUMOUR_ROUNDS, "rumour overrun");
        for (_, address) in self.known.values() {
            assert!(
                !address.host.is_empty() && address.host.len() <= CLIENT_HOST_BYTES_MAX,
                "bad host held"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> ClientAddress {
        ClientAddress {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn entry(node: u32, incarnation: u64, port: u16) -> AddressEntry {
        AddressEntry {
            node: NodeId(node),
            incarnation,
            address: address(port),
        }
    }

    #[test]
    fn silent_without_any_address() {
        let mut table = ClientAddresses::default();
        for _ in 0..(REFRESH_ROUNDS * 3) {
            assert!(table.on_round(NodeId(1), 1, &[NodeId(2)]).is_empty());
        }
    }

    #[test]
    fn rumour_then_quiet_then_refresh() {
        let mut table = ClientAddresses::default();
        table.set_own(address(7000));
        let targets = [NodeId(2), NodeId(3)];
        for _ in 0..RUMOUR_ROUNDS {
            let pushes = table.on_round(NodeId(1), 4, &targets);
            assert_eq!(pushes.len(), 2);
            assert_eq!(pushes[0].1, vec![entry(1, 4, 7000)]);
        }
        for _ in 1..REFRESH_ROUNDS {
            assert!(table.on_round(NodeId(1), 4, &targets).is_empty());
        }
        let refresh = table.on_round(NodeId(1), 4, &targets);
        assert_eq!(refresh.len(), 1, "a refresh goes to one target");
        assert_eq!(refresh[0].0, NodeId(2));
    }

    #[test]
    fn higher_incarnation_wins_and_answers_carry_only_what_the_sender_lacks() {
        let mut table = ClientAddresses::default();
        table.set_own(address(7001));
        let member = |_| true;
        // Learn node 2 at incarnation 3; an older claim does not replace it.
        assert_eq!(
            table.merge(NodeId(1), 1, &[entry(2, 3, 7002)], 8, false, member),
            vec![]
        );
        table.merge(NodeId(1), 1, &[entry(2, 2, 9999)], 8, false, member);
        assert_eq!(table.get(NodeId(1), NodeId(2)), Some(&address(7002)));
        // Node 3 knows only itself: the answer is us and node 2.
        let answer = table.merge(NodeId(1), 1, &[entry(3, 1, 7003)], 8, true, member);
        assert_eq!(answer, vec![entry(1, 1, 7001), entry(2, 3, 7002)]);
        // A sender that knows everything as new as we do gets nothing back.
        let all = [entry(1, 1, 7001), entry(2, 3, 7002), entry(3, 1, 7003)];
        assert!(table.merge(NodeId(1), 1, &all, 8, true, member).is_empty());
        // A claim about us at an older incarnation is answered with our current entry.
        let answer = table.merge(NodeId(1), 2, &[entry(1, 1, 7001)], 8, true, member);
        assert_eq!(answer.first(), Some(&entry(1, 2, 7001)));
        table.check_invariants(NodeId(1), 8);
    }

    #[test]
    fn oversized_messages_and_strangers_are_refused() {
        let mut table = ClientAddresses::default();
        let many: Vec<AddressEntry> = (2..20).map(|n| entry(n, 1, 7000)).collect();
        assert!(table
            .merge(NodeId(1), 1, &many, 8, true, |_| true)
            .is_empty());
        let long = AddressEntry {
            address: ClientAddress {
                host: "h".repeat(CLIENT_HOST_BYTES_MAX + 1),
                port: 1,
            },
            ..entry(2, 1, 1)
        };
        table.merge(NodeId(1), 1, &[long], 8, false, |_| true);
        assert_eq!(table.stats().refused, 2);
        table.merge(NodeId(1), 1, &[entry(9, 1, 7009)], 8, false, |n| {
            n != NodeId(9)
        });
        assert_eq!(table.get(NodeId(1), NodeId(9)), None);
        assert_eq!(table.stats().dropped, 1);
        table.check_invariants(NodeId(1), 8);
    }

    #[test]
    fn addresses_print_as_dialable_text() {
        assert_eq!(address(6380).to_string(), "127.0.0.1:6380");
        let v6 = ClientAddress {
            host: "::1".into(),
            port: 6380,
        };
        assert_eq!(v6.to_string(), "[::1]:6380");
    }
}
