//! Consistent hashing with virtual nodes and rack/datacenter-aware replica placement.
//!
//! The ring is plain data (tokens and member locations) so it can be versioned and gossiped;
//! placement is a pure function over it. A token `t` owns the range `(previous token, t]`, wrapping
//! around the 64-bit hash space.

mod cache;
mod placement;
mod placer;
mod tokens;

pub use placement::choose_replicas;
pub use placer::Placer;

use crate::hash::hash_bytes;
use crate::id::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where a node lives and how much of the ring it should own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct NodeLocation {
    /// Datacenter name.
    pub datacenter: String,
    /// Rack name, unique within its datacenter.
    pub rack: String,
    /// Relative capacity: a node of weight 2 receives twice the vnodes of weight 1.
    pub weight: u32,
}

/// One physical member of the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct Member {
    /// The node.
    pub id: NodeId,
    /// Its location and weight.
    pub location: NodeLocation,
}

/// Why a ring change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The node is already a member.
    AlreadyMember(NodeId),
    /// The node is not a member.
    NotMember(NodeId),
    /// A weight of zero, or more vnodes than the ring supports.
    InvalidWeight(NodeId),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::AlreadyMember(id) => write!(f, "{id} is already a ring member"),
            RingError::NotMember(id) => write!(f, "{id} is not a ring member"),
            RingError::InvalidWeight(id) => write!(f, "{id} has an invalid weight"),
        }
    }
}

impl std::error::Error for RingError {}

/// Most vnodes one node may hold, bounding the cost of a placement walk.
pub const VNODES_PER_NODE_MAX: u32 = 4096;

/// The consistent-hash ring: members and their vnode tokens.
///
/// Clones share the ring's data until one of them changes (copy on write): every node holds the
/// ring, and the nodes of one process (a simulator runs hundreds) mostly hold the same version,
/// so a clone is a pointer, not a copy of every token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ring {
    data: Arc<RingData>,
    /// Preference lists and epoch computed so far (a memo: not part of the ring's value).
    placements: cache::PlacementCache,
}

/// The ring's value. Its serde form is the ring's (`Ring` encodes as exactly this).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
struct RingData {
    vnodes_per_node: u32,
    /// Sorted by id; the position is the member index used in `tokens`.
    members: Vec<Member>,
    /// Sorted by token; unique tokens.
    tokens: Vec<(u64, u32)>,
    /// Dense datacenter index per member (for placement without string compares).
    datacenter_of: Vec<u32>,
    /// Dense (datacenter, rack) index per member.
    rack_of: Vec<u32>,
    /// Replicas wanted per datacenter name (empty: spread `n` evenly over the datacenters).
    #[serde(default)]
    datacenter_replicas: BTreeMap<String, u32>,
    /// `datacenter_replicas` by dense datacenter index (`None` when the policy is empty).
    #[serde(default)]
    quota: Option<Vec<u32>>,
    /// Joins and removals applied since the empty ring: the ring's version. Part of equality, so
    /// a ring that returns to an earlier shape (a join undone by a removal) is still a later ring,
    /// which the linearizable level's fencing relies on (`node::handover`).
    #[serde(default)]
    changes: u64,
}

impl RingData {
    /// Recomputes the dense location indices and quotas after a change of members or policy.
    fn reindex_locations(&mut self) {
        let mut datacenters: BTreeMap<&str, u32> = BTreeMap::new();
        let mut racks: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for member in &self.members {
            let next = u32::try_from(datacenters.len()).unwrap_or(u32::MAX);
            datacenters
                .entry(member.location.datacenter.as_str())
                .or_insert(next);
            let next = u32::try_from(racks.len()).unwrap_or(u32::MAX);
            racks
                .entry((
                    member.location.datacenter.as_str(),
                    member.location.rack.as_str(),
                ))
                .or_insert(next);
        }
        let datacenter_of = self
            .members
            .iter()
            .map(|m| datacenters[m.location.datacenter.as_str()])
            .collect();
        let rack_of = self
            .members
            .iter()
            .map(|m| racks[&(m.location.datacenter.as_str(), m.location.rack.as_str())])
            .collect();
        self.quota = (!self.datacenter_replicas.is_empty()).then(|| {
            let mut quota = vec![0; datacenters.len()];
            for (name, &index) in &datacenters {
                quota[index as usize] = self.datacenter_replicas.get(*name).copied().unwrap_or(0);
            }
            quota
        });
        self.datacenter_of = datacenter_of;
        self.rack_of = rack_of;
    }
}

impl Serialize for Ring {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Ring {
            data: Arc::new(RingData::deserialize(deserializer)?),
            placements: cache::PlacementCache::default(),
        })
    }
}

impl Ring {
    /// An empty ring whose members receive `vnodes_per_node × weight` tokens each.
    pub fn new(vnodes_per_node: u32) -> Self {
        Ring {
            data: Arc::new(RingData {
                vnodes_per_node: vnodes_per_node.clamp(1, VNODES_PER_NODE_MAX),
                members: Vec::new(),
                tokens: Vec::new(),
                datacenter_of: Vec::new(),
                rack_of: Vec::new(),
                datacenter_replicas: BTreeMap::new(),
                quota: None,
                changes: 0,
            }),
            placements: cache::PlacementCache::default(),
        }
    }

    /// Sets how many replicas each datacenter holds (names not listed hold none); an empty list
    /// restores the default even spread. Every node must use the same policy: it is part of the
    /// cluster configuration, not of the gossiped ring log.
    pub fn set_datacenter_replicas(&mut self, replicas: &[(String, u8)]) {
        let policy: BTreeMap<String, u32> = replicas
            .iter()
            .map(|(name, count)| (name.clone(), u32::from(*count)))
            .collect();
        // Every node sets the policy on each ring it adopts; the same policy is no change, and
        // keeps the data and memo the ring shares with its clones.
        if policy == self.data.datacenter_replicas {
            return;
        }
        let data = self.data_mut();
        data.datacenter_replicas = policy;
        data.reindex_locations();
    }

    /// Adds a node, carving its tokens out of the most loaded members so ownership stays even and
    /// only about `weight / total weight` of the keys move (all of them to the new node).
    pub fn add_node(&mut self, id: NodeId, location: NodeLocation) -> Result<(), RingError> {
        if self.data.members.iter().any(|m| m.id == id) {
            return Err(RingError::AlreadyMember(id));
        }
        let vnodes = location
            .weight
            .checked_mul(self.data.vnodes_per_node)
            .filter(|&v| v > 0 && v <= VNODES_PER_NODE_MAX * 16)
            .ok_or(RingError::InvalidWeight(id))?;
        let new_tokens = tokens::allocate(self, id, location.weight, vnodes);
        let data = self.data_mut();
        let position = data.members.partition_point(|m| m.id < id);
        data.members.insert(position, Member { id, location });
        // Member indices at or after `position` shift by one (none when the node goes last,
        // as joins in id order do: then the walk over every token is skipped).
        let new_index = u32::try_from(position).unwrap_or(u32::MAX);
        if position + 1 < data.members.len() {
            for (_, member) in &mut data.tokens {
                if *member >= new_index {
                    *member += 1;
                }
            }
        }
        // Tokens are unique, so merging the sorted new ones in gives what sorting the lot would.
        let mut new_tokens: Vec<(u64, u32)> =
            new_tokens.into_iter().map(|t| (t, new_index)).collect();
        new_tokens.sort_unstable();
        data.tokens = merge_sorted(std::mem::take(&mut data.tokens), new_tokens);
        data.reindex_locations();
        data.changes += 1;
        Ok(())
    }

    /// Removes a node; its ranges fall to the next tokens clockwise.
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), RingError> {
        let position = self
            .data
            .members
            .iter()
            .position(|m| m.id == id)
            .ok_or(RingError::NotMember(id))?;
        let data = self.data_mut();
        data.members.remove(position);
        let removed = u32::try_from(position).unwrap_or(u32::MAX);
        data.tokens.retain(|&(_, m)| m != removed);
        for (_, member) in &mut data.tokens {
            if *member > removed {
                *member -= 1;
            }
        }
        data.reindex_locations();
        data.changes += 1;
        Ok(())
    }

    /// Joins and removals applied since the empty ring.
    pub fn changes(&self) -> u64 {
        self.data.changes
    }

    /// The ring's data, for a change: its own copy if clones share it, and an empty memo (every
    /// change of members, tokens or policy makes remembered lists and the epoch stale).
    fn data_mut(&mut self) -> &mut RingData {
        self.placements = cache::PlacementCache::default();
        Arc::make_mut(&mut self.data)
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.data.members
    }

    /// The datacenter of member `id`.
    pub fn datacenter_of(&self, id: NodeId) -> Option<&str> {
        self.data
            .members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| self.data.members[i].location.datacenter.as_str())
    }

    /// True if `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        // Ids are unique and sorted, so member `id` sits at index `id` or below, and at exactly
        // `id` when the ids are dense from zero (every cluster until its first removal). The
        // guess saves a binary search over cache-cold members on every message a node receives
        // (`Coordinator::note_heard`).
        let at_most = usize::try_from(id.0).unwrap_or(usize::MAX);
        if self.data.members.get(at_most).is_some_and(|m| m.id == id) {
            return true;
        }
        // After one removal below `id`, the member sits one slot lower: a second guess before
        // the search saves a cache-cold read of the last member on every message.
        if at_most
            .checked_sub(1)
            .and_then(|below| self.data.members.get(below))
            .is_some_and(|m| m.id == id)
        {
            return true;
        }
        // And no lower than `id` less the ids missing below the highest (after a removal, one).
        let missing = self.data.members.last().map_or(0, |last| {
            usize::try_from(last.id.0)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.data.members.len() - 1)
        });
        let end = self.data.members.len().min(at_most.saturating_add(1));
        let start = at_most.saturating_sub(missing).min(end);
        self.data.members[start..end]
            .binary_search_by_key(&id, |m| m.id)
            .is_ok()
    }

    /// Number of physical members.
    pub fn len(&self) -> usize {
        self.data.members.len()
    }

    /// True when the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.data.members.is_empty()
    }

    /// All tokens, sorted, each with its owner's member index: the ring's own vector, borrowed
    /// (for a caller that needs only the tokens, where collecting them copied the whole ring).
    pub(crate) fn token_entries(&self) -> &[(u64, u32)] {
        &self.data.tokens
    }

    /// All tokens with their owners, sorted by token.
    pub fn tokens(&self) -> impl Iterator<Item = (u64, NodeId)> + '_ {
        self.data
            .tokens
            .iter()
            .map(|&(t, m)| (t, self.data.members[m as usize].id))
    }

    /// The ring position of a key.
    pub fn key_hash(key: &[u8]) -> u64 {
        hash_bytes(key)
    }

    /// The `n` replicas of `key`, primary first: distinct physical nodes, spread over distinct
    /// datacenters and racks before any repeats. Fewer than `n` only if the ring is smaller.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.preference_list_for_hash(Self::key_hash(key), n)
    }

    /// `preference_list` for a precomputed ring position: [`choose_replicas`] over the clockwise
    /// walk from `hash`, computed by a [`Placer`] (which walks only as far as the choice needs).
    pub fn preference_list_for_hash(&self, hash: u64, n: usize) -> Vec<NodeId> {
        // Every hash of a range has its token's list.
        let range = self.range_index_for_hash(hash).map_or(0, |r| r as usize);
        self.placements
            .get_or_compute(range, self.data.tokens.len(), n, || {
                Placer::new(self).preference_list_for_hash(hash, n)
            })
    }

    /// Number of ranges (one per token).
    pub fn range_count(&self) -> usize {
        self.data.tokens.len()
    }

    /// The range containing `hash`: the index of the first token at or after it, wrapping.
    pub fn range_index_for_hash(&self, hash: u64) -> Option<u32> {
        if self.data.tokens.is_empty() {
            return None;
        }
        let index = self.data.tokens.partition_point(|&(t, _)| t < hash) % self.data.tokens.len();
        u32::try_from(index).ok()
    }

    /// The `n` replicas of every range, in range order: [`Ring::range_replicas`] for each, with
    /// one [`Placer`] for the lists not remembered yet.
    pub fn every_range_replicas(&self, n: usize) -> impl Iterator<Item = (u32, Vec<NodeId>)> + '_ {
        let ranges = self.data.tokens.len();
        let mut placer: Option<Placer<'_>> = None;
        (0..ranges)
            .filter_map(|index| u32::try_from(index).ok())
            .map(move |index| {
                let list = self
                    .placements
                    .get_or_compute(index as usize, ranges, n, || {
                        placer
                            .get_or_insert_with(|| Placer::new(self))
                            .range_replicas(index, n)
                    });
                (index, list)
            })
    }

    /// The ranges whose `n` replicas include `node`, in range order, each with its replicas:
    /// [`Ring::every_range_replicas`] filtered, from an index of every node built once per ring
    /// value and shared by its clones (see `cache`).
    pub fn ranges_replicated_by(&self, node: NodeId, n: usize) -> Vec<(u32, Vec<NodeId>)> {
        let indexed = self
            .placements
            .ranges_of(node, n, || self.every_range_replicas(n).collect());
        match indexed {
            Some(ranges) => ranges
                .iter()
                .map(|&range| (range, self.range_replicas(range, n)))
                .collect(),
            None => self
                .every_range_replicas(n)
                .filter(|(_, replicas)| replicas.contains(&node))
                .collect(),
        }
    }

    /// Whether this ring is `previous` after exactly the change `decide` checks, remembered per
    /// ring value for the first `previous` asked about (by its shared data: clones of one ring
    /// value share it, and the value behind shared data never changes). `decide` must be a
    /// pure function of the two rings' values.
    pub fn follows(&self, previous: &Ring, decide: impl FnOnce() -> bool) -> bool {
        self.placements.successor_of(&previous.data, decide)
    }

    /// The ring's fingerprint: a hash of its encoding (members, tokens, policy and change
    /// count). Computed once per ring value and shared by its clones.
    pub fn epoch(&self) -> u64 {
        self.placements
            .epoch(|| hash_bytes(&crate::codec::encode_value(self)))
    }

    /// The `n` replicas of range `index` (the same nodes as for every key in it). For many
    /// ranges of one ring, [`Ring::every_range_replicas`].
    pub fn range_replicas(&self, index: u32, n: usize) -> Vec<NodeId> {
        let ranges = self.data.tokens.len();
        self.placements
            .get_or_compute(index as usize, ranges, n, || {
                Placer::new(self).range_replicas(index, n)
            })
    }

    /// The member owning the range that contains `hash` (the first replica).
    pub fn primary_for_hash(&self, hash: u64) -> Option<NodeId> {
        if self.data.tokens.is_empty() {
            return None;
        }
        let index = self.data.tokens.partition_point(|&(t, _)| t < hash) % self.data.tokens.len();
        Some(self.data.members[self.data.tokens[index].1 as usize].id)
    }

    /// Fraction of the hash space each member owns as primary.
    pub fn ownership(&self) -> BTreeMap<NodeId, f64> {
        let owned = tokens::owned_space(self);
        let total = tokens::RING_SPACE as f64;
        self.data
            .members
            .iter()
            .zip(owned)
            .map(|(m, space)| (m.id, space as f64 / total))
            .collect()
    }
}

/// The sorted union of two sorted lists.
fn merge_sorted<T: Ord + Copy>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    // `b` is a node's few dozen tokens and `a` the whole ring: each of `b` finds its place by a
    // binary search and the runs of `a` between them are copied whole, where comparing and
    // pushing every element of `a` was a tenth of building a 1,000-node ring. Equal elements
    // keep `a`'s first, as an element-wise merge does.
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let mut rest = &a[..];
    for &next in &b {
        let run = rest.partition_point(|&x| x <= next);
        merged.extend_from_slice(&rest[..run]);
        merged.push(next);
        rest = &rest[run..];
    }
    merged.extend_from_slice(rest);
    merged
}

#[cfg(test)]
mod tests;
