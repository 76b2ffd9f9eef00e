//! Preference lists without walking the whole ring.
//!
//! [`choose_replicas`](super::choose_replicas) is the placement policy, stated over the complete
//! clockwise walk of distinct members. Building that walk costs a pass over every token (the
//! last members to appear are found only near the end: a coupon collector over `tokens` draws),
//! so a node computing the replicas of each of its ring's ranges paid `ranges × tokens`: with
//! 100 nodes of 64 vnodes, 41 million steps per ring adoption, and most of the simulator's time.
//!
//! A [`Placer`] gives the same answer while generating the walk only as far as a pick needs it.
//! A pick takes the first member in walk order whose load is lowest; the load of any member is
//! that of its rack, so the lowest load over all racks is a floor no later member can beat, and
//! a scan that has met a member at the floor can stop. With `n` small against the number of
//! racks the floor is met within a few members, so a preference list costs a few tokens. When
//! the floor is not reachable (a rack already exhausted) the scan goes on to the end of the
//! walk, exactly as the policy does. The tests compare both on random rings.

use super::Ring;
use crate::id::NodeId;

/// Computes preference lists over one ring, reusing its buffers between calls: build one per
/// batch of lookups (every range of the ring, say) rather than one per lookup.
#[derive(Debug)]
pub struct Placer<'a> {
    ring: &'a Ring,
    /// Datacenter of each dense rack index.
    rack_datacenter: Vec<u32>,
    /// Per member: already in `walk`.
    seen: Vec<bool>,
    /// Distinct members in clockwise order, generated so far.
    walk: Vec<u32>,
    /// Per position of `walk`: already chosen.
    taken: Vec<bool>,
    /// Tokens stepped over so far from the start of the walk.
    steps: usize,
    /// Token index the walk starts at.
    start: usize,
    per_datacenter: Vec<u32>,
    per_rack: Vec<u32>,
    chosen: Vec<u32>,
}

impl<'a> Placer<'a> {
    /// A placer for `ring` (costs one pass over its members).
    pub fn new(ring: &'a Ring) -> Self {
        let racks = ring
            .data
            .rack_of
            .iter()
            .map(|&r| r as usize + 1)
            .max()
            .unwrap_or(0);
        let datacenters = ring
            .data
            .datacenter_of
            .iter()
            .map(|&d| d as usize + 1)
            .max()
            .unwrap_or(0);
        let mut rack_datacenter = vec![0; racks];
        for (&rack, &datacenter) in ring.data.rack_of.iter().zip(&ring.data.datacenter_of) {
            rack_datacenter[rack as usize] = datacenter;
        }
        Placer {
            ring,
            rack_datacenter,
            seen: vec![false; ring.data.members.len()],
            walk: Vec::new(),
            taken: Vec::new(),
            steps: 0,
            start: 0,
            per_datacenter: vec![0; datacenters],
            per_rack: vec![0; racks],
            chosen: Vec::new(),
        }
    }

    /// The same list as [`Ring::preference_list_for_hash`].
    pub fn preference_list_for_hash(&mut self, hash: u64, n: usize) -> Vec<NodeId> {
        let start = self.ring.data.tokens.partition_point(|&(t, _)| t < hash);
        self.place(start, n);
        self.chosen_ids()
    }

    /// The same list as [`Ring::range_replicas`].
    pub fn range_replicas(&mut self, index: u32, n: usize) -> Vec<NodeId> {
        // Range `index` ends at token `index`, and tokens are sorted and unique, so the walk
        // starts there: no search (which was a quarter of a placement over 6,400 tokens).
        let start = index as usize;
        if start >= self.ring.data.tokens.len() {
            return Vec::new();
        }
        self.place(start, n);
        self.chosen_ids()
    }

    /// The ids of the members the last placement chose, in pick order.
    fn chosen_ids(&self) -> Vec<NodeId> {
        let members = &self.ring.data.members;
        self.chosen
            .iter()
            .map(|&m| members[m as usize].id)
            .collect()
    }

    /// Leaves the chosen member indices, in pick order, in `self.chosen`, for the walk that
    /// starts at token index `start` (the first token at or after the key's hash; past the
    /// last token the walk wraps to the first).
    fn place(&mut self, start: usize, n: usize) {
        self.reset();
        let tokens = &self.ring.data.tokens;
        if tokens.is_empty() {
            return;
        }
        self.start = start;
        let quota = self.ring.data.quota.as_deref();
        for _ in 0..n {
            let floor = self.floor(quota);
            let mut best: Option<(usize, (u32, u32))> = None;
            let mut position = 0;
            while position < self.walk.len() || self.extend() {
                if !self.taken[position] {
                    let member = self.walk[position] as usize;
                    if let Some(load) = self.load(member, quota) {
                        if best.is_none_or(|(_, l)| load < l) {
                            best = Some((position, load));
                            if Some(load) == floor {
                                // No member anywhere on the walk has a lower load.
                                break;
                            }
                        }
                    }
                }
                position += 1;
            }
            let best = best.map(|(position, _)| position).or_else(|| {
                // Every quota is filled (or none applies): the rest in walk order.
                quota.and_then(|_| self.first_untaken())
            });
            let Some(position) = best else { break };
            self.taken[position] = true;
            let member = self.walk[position] as usize;
            self.per_datacenter[self.ring.data.datacenter_of[member] as usize] += 1;
            self.per_rack[self.ring.data.rack_of[member] as usize] += 1;
            self.chosen.push(self.walk[position]);
        }
    }

    /// The load `choose_replicas` gives `member`, or `None` when its datacenter's quota is full.
    fn load(&self, member: usize, quota: Option<&[u32]>) -> Option<(u32, u32)> {
        let datacenter = self.ring.data.datacenter_of[member] as usize;
        let in_datacenter = self.per_datacenter[datacenter];
        let in_rack = self.per_rack[self.ring.data.rack_of[member] as usize];
        match quota {
            Some(quota) => (in_datacenter < quota.get(datacenter).copied().unwrap_or(0))
                .then_some((0, in_rack)),
            None => Some((in_datacenter, in_rack)),
        }
    }

    /// The lowest load any member could have now (racks of eligible datacenters only), or `None`
    /// when no member is eligible.
    fn floor(&self, quota: Option<&[u32]>) -> Option<(u32, u32)> {
        let mut floor: Option<(u32, u32)> = None;
        for (rack, &datacenter) in self.rack_datacenter.iter().enumerate() {
            let datacenter = datacenter as usize;
            let in_datacenter = self.per_datacenter[datacenter];
            let load = match quota {
                Some(quota) => {
                    if in_datacenter >= quota.get(datacenter).copied().unwrap_or(0) {
                        continue;
                    }
                    (0, self.per_rack[rack])
                }
                None => (in_datacenter, self.per_rack[rack]),
            };
            if floor.is_none_or(|f| load < f) {
                floor = Some(load);
            }
        }
        floor
    }

    /// The first position not chosen yet, generating the walk as far as needed.
    fn first_untaken(&mut self) -> Option<usize> {
        let mut position = 0;
        while position < self.walk.len() || self.extend() {
            if !self.taken[position] {
                return Some(position);
            }
            position += 1;
        }
        None
    }

    /// Appends the next distinct member clockwise to the walk; false when the ring is done.
    fn extend(&mut self) -> bool {
        let tokens = &self.ring.data.tokens;
        while self.steps < tokens.len() && self.walk.len() < self.seen.len() {
            let (_, member) = tokens[(self.start + self.steps) % tokens.len()];
            self.steps += 1;
            if !self.seen[member as usize] {
                self.seen[member as usize] = true;
                self.walk.push(member);
                self.taken.push(false);
                return true;
            }
        }
        false
    }

    /// Clears what the last call touched (only that, so a call costs what it walked).
    fn reset(&mut self) {
        for &member in &self.walk {
            self.seen[member as usize] = false;
        }
        for &member in &self.chosen {
            let member = member as usize;
            self.per_datacenter[self.ring.data.datacenter_of[member] as usize] = 0;
            self.per_rack[self.ring.data.rack_of[member] as usize] = 0;
        }
        self.walk.clear();
        self.taken.clear();
        self.chosen.clear();
        self.steps = 0;
    }
}
