//! Operator membership commands and what the admin endpoint reports about membership.
//!
//! The driver owns the node, so an operator's join, leave or remove travels to it as an
//! [`crate::driver::Input::Admin`] and the answer comes back on a channel. What `/ring`,
//! `/admin/repair` and `/metrics` show is a [`MembershipView`]: a snapshot the driver publishes
//! whenever the ring or a member's status changes, so reading it never waits for the driver.

use crate::config::Settings;
use crate::metrics::{status_label, RepairCounters};
use ringkv_core::membership::{
    ClientAddress, MemberStatus, MemberView, MembershipError, RingVersion,
};
use ringkv_core::node::AdminError;
use ringkv_core::ring::Member;
use ringkv_core::{NodeId, NodeLocation, Ring, Storage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An operator's membership change, carried out by the driver on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// `member` joins the ring.
    Join(Member),
    /// The node decommissions (it streams its ranges out, then owns nothing).
    Leave(NodeId),
    /// The dead node is removed (refused unless this node judges it down).
    Remove(NodeId),
}

impl AdminCommand {
    /// The command's name in URLs and replies.
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::Join(_) => "join",
            AdminCommand::Leave(_) => "leave",
            AdminCommand::Remove(_) => "remove",
        }
    }

    /// The node the command is about.
    pub fn node(&self) -> NodeId {
        match self {
            AdminCommand::Join(member) => member.id,
            AdminCommand::Leave(id) | AdminCommand::Remove(id) => *id,
        }
    }
}

/// The reply to an [`AdminCommand`]: the new ring version, or why the change was refused.
pub type AdminResult = Result<RingVersion, AdminError>;

/// An operator-readable reason for a refused command (the core's own text, except for the
/// refusal an operator meets most: removing a node that is not down yet).
pub fn refusal_reason(error: &AdminError) -> String {
    match error {
        AdminError::Membership(MembershipError::NotDown { node, status }) => {
            let status = status.map_or("unknown to this node", status_label);
            format!(
                "node {} is {status} here; only a node this node's failure detector judges down \
                 can be removed (wait until /ring shows it \"down\", or use leave for a live node)",
                node.0
            )
        }
        other => other.to_string(),
    }
}

/// Membership as the driver last saw it.
#[derive(Clone, Debug)]
pub struct MembershipView {
    /// The ring the node places keys with.
    pub ring: Ring,
    /// Its version.
    pub ring_version: RingVersion,
    /// Every node the failure detector knows (this one included), in id order.
    pub members: Vec<MemberView>,
    /// Ranges this node replicates in that ring.
    pub ranges_replicated: usize,
    /// Where each node serves clients, as far as gossip has told this node (`KV.RING`).
    pub client_addresses: BTreeMap<NodeId, ClientAddress>,
}

impl MembershipView {
    /// Takes the snapshot from `node` (`n` replicas per key).
    pub fn of<S: Storage>(node: &ringkv_core::Node<S>, n: usize) -> MembershipView {
        let ring = node.ring().clone();
        let ranges_replicated = (0..ring.range_count())
            .filter_map(|i| u32::try_from(i).ok())
            .filter(|&range| ring.range_replicas(range, n).contains(&node.id()))
            .count();
        let (ring_version, members) = match node.membership() {
            Some(m) => (m.ring_version(), m.members()),
            None => (RingVersion::default(), Vec::new()),
        };
        let client_addresses = node
            .membership()
            .map(|m| {
                members
                    .iter()
                    .filter_map(|v| Some((v.node, m.client_address(v.node)?.clone())))
                    .collect()
            })
            .unwrap_or_default();
        MembershipView {
            ring,
            ring_version,
            members,
            ranges_replicated,
            client_addresses,
        }
    }

    /// This node's judgement of `node`.
    pub fn status(&self, node: NodeId) -> Option<MemberStatus> {
        self.members
            .iter()
            .find(|m| m.node == node)
            .map(|m| m.status)
    }
}

/// Where each node of the configuration can be reached, and where it would sit in the ring.
#[derive(Clone, Debug, Default)]
pub struct AddressBook {
    entries: BTreeMap<NodeId, (String, NodeLocation)>,
}

impl AddressBook {
    /// This node and every configured peer (spares included).
    pub fn from_settings(settings: &Settings) -> AddressBook {
        let mut entries = BTreeMap::new();
        entries.insert(
            settings.node_id,
            (settings.peer_listen.to_string(), settings.location.clone()),
        );
        for peer in &settings.peers {
            entries.insert(peer.id, (peer.addr.clone(), peer.location.clone()));
        }
        AddressBook { entries }
    }

    /// The ring member `node` would be on joining, if its address is known.
    pub fn member(&self, node: NodeId) -> Option<Member> {
        self.entries.get(&node).map(|(_, location)| Member {
            id: node,
            location: location.clone(),
        })
    }

    /// `node`'s peer address, if known.
    pub fn addr(&self, node: NodeId) -> Option<&str> {
        self.entries.get(&node).map(|(addr, _)| addr.as_str())
    }

    /// Every node in the book, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.entries.keys().copied()
    }
}

/// A JSON string literal of `text` (names from a peer's ring log are not trusted to be plain:
/// serde_json escapes whatever they hold).
pub fn json_string(text: &str) -> String {
    to_json(text)
}

/// `value` as compact JSON. Serializing these plain documents (string keys, finite numbers)
/// cannot fail; if it ever did, the reader gets `null` rather than a half-written document.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// A ring version in JSON; the fingerprint as 16 hex digits (a u64 does not survive a JSON
/// number in every reader).
#[derive(Serialize)]
pub struct VersionDocument {
    changes: u64,
    fingerprint: String,
}

impl From<RingVersion> for VersionDocument {
    fn from(version: RingVersion) -> Self {
        Self {
            changes: version.changes,
            fingerprint: format!("{:016x}", version.fingerprint),
        }
    }
}

/// A ring version as JSON (see [`VersionDocument`]).
pub fn version_json(version: RingVersion) -> String {
    to_json(&VersionDocument::from(version))
}

#[derive(Serialize)]
struct RingDocument<'a> {
    node: u32,
    ring_version: VersionDocument,
    nodes: Vec<RingMember<'a>>,
    outside_ring: Vec<OutsideMember<'a>>,
}

#[derive(Serialize)]
struct RingMember<'a> {
    id: u32,
    status: &'a str,
    state: &'a str,
    addr: Option<&'a str>,
    datacenter: &'a str,
    rack: &'a str,
    weight: u32,
    vnodes: usize,
    /// Fraction of the ring, rounded to 4 decimals.
    ownership: f64,
}

#[derive(Serialize)]
struct OutsideMember<'a> {
    id: u32,
    status: &'a str,
    state: &'a str,
    addr: Option<&'a str>,
}

/// One node as `/ring` and the status page show it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberRow {
    /// Its id.
    pub id: u32,
    /// Whether it is a member of the ring (else a spare or a departed node).
    pub in_ring: bool,
    /// This node's failure detector's judgement (`alive`, `suspect`, `down`, ...; `unknown`).
    pub status: String,
    /// Whether this node's connection to it is up (`up`, `unreachable`).
    pub state: String,
    /// Its peer address from the address book, if known.
    pub addr: Option<String>,
    /// Its datacenter: the ring's for a member, the address book's otherwise.
    pub datacenter: Option<String>,
    /// Its rack, likewise.
    pub rack: Option<String>,
    /// Its ring weight, likewise.
    pub weight: Option<u32>,
    /// Its tokens in the ring (0 outside it).
    pub vnodes: usize,
    /// The fraction of the hash space it owns as first replica (0 outside it).
    pub ownership: f64,
}

/// Every node this one knows: the ring members in ring order, then the nodes outside the ring
/// (spares and departed nodes) in id order. One derivation for `/ring`, `/status.json` and the
/// CLI table, so they cannot disagree about a member.
pub fn member_rows(
    me: NodeId,
    view: &MembershipView,
    book: &AddressBook,
    connected: &BTreeMap<NodeId, Arc<AtomicBool>>,
) -> Vec<MemberRow> {
    let ownership = view.ring.ownership();
    let mut vnodes: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (_, owner) in view.ring.tokens() {
        *vnodes.entry(owner).or_default() += 1;
    }
    let state = |node: NodeId| {
        let up = node == me
            || connected
                .get(&node)
                .is_some_and(|flag| flag.load(Ordering::Relaxed));
        if up { "up" } else { "unreachable" }.to_string()
    };
    let status = |node: NodeId| {
        view.status(node)
            .map_or("unknown", status_label)
            .to_string()
    };
    let mut rows: Vec<MemberRow> = view
        .ring
        .members()
        .iter()
        .map(|member| MemberRow {
            id: member.id.0,
            in_ring: true,
            status: status(member.id),
            state: state(member.id),
            addr: book.addr(member.id).map(str::to_string),
            datacenter: Some(member.location.datacenter.clone()),
            rack: Some(member.location.rack.clone()),
            weight: Some(member.location.weight),
            vnodes: vnodes.get(&member.id).copied().unwrap_or(0),
            ownership: ownership.get(&member.id).copied().unwrap_or(0.0),
        })
        .collect();
    let mut outside: Vec<NodeId> = view
        .members
        .iter()
        .map(|m| m.node)
        .chain(book.nodes())
        .filter(|&node| !view.ring.contains(node))
        .collect();
    outside.sort();
    outside.dedup();
    rows.extend(outside.into_iter().map(|id| {
        let location = book.member(id).map(|m| m.location);
        MemberRow {
            id: id.0,
            in_ring: false,
            status: status(id),
            state: state(id),
            addr: book.addr(id).map(str::to_string),
            datacenter: location.as_ref().map(|l| l.datacenter.clone()),
            rack: location.as_ref().map(|l| l.rack.clone()),
            weight: location.as_ref().map(|l| l.weight),
            vnodes: 0,
            ownership: 0.0,
        }
    }));
    rows
}

/// The `/ring` document: the ring version; each ring member with its status (this node's
/// failure detector), connection state, location, vnodes and ownership; and the known nodes
/// outside the ring (spares and departed nodes).
pub fn ring_json(
    me: NodeId,
    view: &MembershipView,
    book: &AddressBook,
    connected: &BTreeMap<NodeId, Arc<AtomicBool>>,
) -> String {
    let rows = member_rows(me, view, book, connected);
    let nodes = rows
        .iter()
        .filter(|row| row.in_ring)
        .map(|row| RingMember {
            id: row.id,
            status: &row.status,
            state: &row.state,
            addr: row.addr.as_deref(),
            datacenter: row.datacenter.as_deref().unwrap_or_default(),
            rack: row.rack.as_deref().unwrap_or_default(),
            weight: row.weight.unwrap_or_default(),
            vnodes: row.vnodes,
            ownership: (row.ownership * 1e4).round() / 1e4,
        })
        .collect();
    let outside_ring = rows
        .iter()
        .filter(|row| !row.in_ring)
        .map(|row| OutsideMember {
            id: row.id,
            status: &row.status,
            state: &row.state,
            addr: row.addr.as_deref(),
        })
        .collect();
    let document = RingDocument {
        node: me.0,
        ring_version: view.ring_version.into(),
        nodes,
        outside_ring,
    };
    to_json(&document) + "\n"
}

/// Anti-entropy settings the repair report states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairSchedule {
    /// Time between rounds; 0 when anti-entropy is off.
    pub interval_ms: u64,
    /// Ranges compared per round.
    pub ranges_per_round: usize,
}

/// The `/admin/repair` document: the anti-entropy schedule and progress, and, after `POST`, the
/// rounds of the full sweep just started (`started`: the core compares every range this node
/// holds with its other replicas back to back, a round every few milliseconds, even when
/// periodic anti-entropy is off).
pub fn repair_json(
    view: &MembershipView,
    schedule: RepairSchedule,
    repair: &RepairCounters,
    started: Option<usize>,
) -> String {
    let (running, reason, sweep_ms) = if let Some(rounds) = started {
        (
            schedule.interval_ms > 0,
            format!(
                "repair started: {rounds} anti-entropy rounds back to back compare all {} ranges \
                 this node replicates (and offer those it holds but no longer replicates) with \
                 their other replicas; watch records_repaired here or on the peers",
                view.ranges_replicated
            ),
            None,
        )
    } else if schedule.interval_ms == 0 {
        (
            false,
            "periodic anti-entropy is off on this node (repair.anti_entropy_interval_ms = 0); \
             read repair and hinted handoff repair replicas, and POST /admin/repair sweeps every \
             range once"
                .to_string(),
            None,
        )
    } else {
        let rounds = view
            .ranges_replicated
            .div_ceil(schedule.ranges_per_round.max(1))
            .max(1) as u64;
        let sweep = rounds.saturating_mul(schedule.interval_ms);
        (
            true,
            format!(
                "repair runs continuously: every {} ms this node compares up to {} of its {} \
                 ranges with another replica (a full sweep about every {sweep} ms); POST \
                 /admin/repair starts a full sweep now",
                schedule.interval_ms, schedule.ranges_per_round, view.ranges_replicated
            ),
            Some(sweep),
        )
    };
    let document = RepairDocument {
        started: started.is_some(),
        rounds_scheduled: started.unwrap_or(0),
        anti_entropy_running: running,
        reason,
        interval_ms: schedule.interval_ms,
        ranges_per_round: schedule.ranges_per_round,
        ranges_replicated: view.ranges_replicated,
        sweep_ms_estimate: sweep_ms,
        rounds: repair.anti_entropy_rounds.get(),
        ranges_compared: repair.anti_entropy_ranges_compared.get(),
        ranges_differing: repair.anti_entropy_ranges_differing.get(),
        records_sent: repair.anti_entropy_records_sent.get(),
        records_repaired: repair.anti_entropy_records_repaired.get(),
        read_repairs: repair.read_repairs.get(),
        hints_pending: repair.hints_pending.get(),
    };
    to_json(&document) + "\n"
}

/// The `/admin/repair` document's fields, in the order they are written.
#[derive(Serialize)]
struct RepairDocument {
    started: bool,
    rounds_scheduled: usize,
    anti_entropy_running: bool,
    reason: String,
    interval_ms: u64,
    ranges_per_round: usize,
    ranges_replicated: usize,
    sweep_ms_estimate: Option<u64>,
    rounds: u64,
    ranges_compared: u64,
    ranges_differing: u64,
    records_sent: u64,
    records_repaired: u64,
    read_repairs: u64,
    hints_pending: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("dc1"), "\"dc1\"");
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn a_refused_remove_says_why_in_words() {
        let error = AdminError::Membership(MembershipError::NotDown {
            node: NodeId(2),
            status: Some(MemberStatus::Alive),
        });
        let reason = refusal_reason(&error);
        assert!(reason.starts_with("node 2 is alive here"), "{reason}");
        assert!(reason.contains("judges down"), "{reason}");
    }

    #[test]
    fn the_ring_document_lists_members_and_spares() {
        let mut ring = Ring::new(8);
        let location = NodeLocation {
            datacenter: "dc1".into(),
            rack: "r1".into(),
            weight: 1,
        };
        for id in [1, 2] {
            ring.add_node(NodeId(id), location.clone()).expect("add");
        }
        let members = [
            (1, MemberStatus::Alive),
            (2, MemberStatus::Down),
            (3, MemberStatus::Alive),
        ]
        .into_iter()
        .map(|(id, status)| MemberView {
            node: NodeId(id),
            incarnation: 1,
            heartbeat: 1,
            status,
            location: None,
        })
        .collect();
        let view = MembershipView {
            ring,
            ring_version: RingVersion {
                changes: 2,
                fingerprint: 0xab,
            },
            members,
            ranges_replicated: 16,
            client_addresses: BTreeMap::new(),
        };
        let json = ring_json(NodeId(1), &view, &AddressBook::default(), &BTreeMap::new());
        assert!(
            json.contains("\"ring_version\":{\"changes\":2,\"fingerprint\":\"00000000000000ab\"}"),
            "{json}"
        );
        assert!(
            json.contains("{\"id\":2,\"status\":\"down\",\"state\":\"unreachable\""),
            "{json}"
        );
        assert!(json.contains("\"vnodes\":8"), "{json}");
        assert!(
            json.contains("\"outside_ring\":[{\"id\":3,\"status\":\"alive\""),
            "{json}"
        );
    }
}
