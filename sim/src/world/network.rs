//! The simulated network: latency with jitter (which reorders), loss, duplication, and symmetric
//! or one-way partitions between nodes. Clients reach every node; only node links are cut.
//!
//! Each link (sender, receiver) can have a bounded queue (`[network] queue_messages_max`): a
//! message is in its link's queue from the send until it is delivered (a lost message never
//! occupied it; each copy of a duplicated one does). A send to a full queue is not made; the
//! world then feeds the sender `handle_send_failed`, as the production node's per-peer queues
//! do, so the core's back-pressure decisions meet seeds.

use rand::Rng;

/// Link state and message fate between nodes.
#[derive(Clone, Debug)]
pub struct Network {
    nodes: usize,
    /// `blocked[from * nodes + to]`: messages from `from` to `to` are lost.
    blocked: Vec<bool>,
    latency_ns: (u64, u64),
    client_latency_ns: (u64, u64),
    drop: f64,
    duplicate: f64,
    /// Bound of each link's queue (`None`: unbounded).
    queue_messages_max: Option<u32>,
    /// `queued[from * nodes + to]`: messages on the link, sent and not yet delivered.
    queued: Vec<u32>,
    /// Sends not made because the link's queue was full.
    pub refused: u64,
    /// Messages lost to partitions or random drops.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

fn ms_range_to_ns(range: &[f64]) -> (u64, u64) {
    let lo = (range[0] * 1e6).round() as u64;
    let hi = (range[1] * 1e6).round() as u64;
    (lo, hi.max(lo))
}

impl Network {
    /// A fully connected network.
    pub fn new(
        nodes: usize,
        latency_ms: &[f64],
        client_latency_ms: &[f64],
        drop: f64,
        duplicate: f64,
    ) -> Self {
        Network {
            nodes,
            blocked: vec![false; nodes * nodes],
            latency_ns: ms_range_to_ns(latency_ms),
            client_latency_ns: ms_range_to_ns(client_latency_ms),
            drop,
            duplicate,
            queue_messages_max: None,
            queued: vec![0; nodes * nodes],
            refused: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    /// Bounds every link's queue to `max` messages in flight.
    pub fn with_queue_messages_max(mut self, max: Option<u32>) -> Self {
        self.queue_messages_max = max;
        self
    }

    /// Lifts the bound of every link's queue (for the final reads; see there).
    pub fn unbound_queues(&mut self) {
        self.queue_messages_max = None;
    }

    /// Whether the link from `from` to `to` can take one more message; a full link counts the
    /// refusal. Draws nothing from the seed, so an unbounded network runs as before.
    pub fn has_room(&mut self, from: u32, to: u32) -> bool {
        let Some(max) = self.queue_messages_max else {
            return true;
        };
        let room = self.queued[self.link(from, to)] < max;
        if !room {
            self.refused += 1;
        }
        room
    }

    /// `copies` deliveries of one message were scheduled on the link.
    pub fn enqueued(&mut self, from: u32, to: u32, copies: u32) {
        let link = self.link(from, to);
        self.queued[link] += copies;
    }

    /// One delivery on the link happened (whether or not the receiver was up).
    pub fn delivered(&mut self, from: u32, to: u32) {
        let link = self.link(from, to);
        debug_assert!(self.queued[link] > 0, "a delivery that was never queued");
        self.queued[link] = self.queued[link].saturating_sub(1);
    }

    fn link(&self, from: u32, to: u32) -> usize {
        from as usize * self.nodes + to as usize
    }

    /// Cuts every link between different groups; nodes in no group form one more group.
    pub fn partition(&mut self, groups: &[Vec<u32>]) {
        let mut group_of = vec![usize::MAX; self.nodes];
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                group_of[m as usize] = g;
            }
        }
        for from in 0..self.nodes {
            for to in 0..self.nodes {
                if group_of[from] != group_of[to] {
                    self.blocked[from * self.nodes + to] = true;
                }
            }
        }
    }

    /// Cuts the links from each of `from` to each of `to`, one way only.
    pub fn one_way(&mut self, from: &[u32], to: &[u32]) {
        for &f in from {
            for &t in to {
                if f != t {
                    self.blocked[f as usize * self.nodes + t as usize] = true;
                }
            }
        }
    }

    /// Ends random loss and duplication (the liveness phase has no faults).
    pub fn calm(&mut self) {
        self.drop = 0.0;
        self.duplicate = 0.0;
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// True if any link is cut.
    pub fn is_partitioned(&self) -> bool {
        self.blocked.iter().any(|&b| b)
    }

    /// Delivery delays for one message from `from` to `to`: none if lost, two if duplicated.
    pub fn fate(&mut self, from: u32, to: u32, rng: &mut impl Rng) -> Fate {
        if self.blocked[from as usize * self.nodes + to as usize]
            || (self.drop > 0.0 && rng.gen_bool(self.drop))
        {
            self.dropped += 1;
            return Fate::Lost;
        }
        let first = rng.gen_range(self.latency_ns.0..=self.latency_ns.1);
        if self.duplicate > 0.0 && rng.gen_bool(self.duplicate) {
            self.duplicated += 1;
            let second = rng.gen_range(self.latency_ns.0..=self.latency_ns.1);
            return Fate::Twice(first, second);
        }
        Fate::Once(first)
    }

    /// Delay of one client ↔ node hop.
    pub fn client_delay(&self, rng: &mut impl Rng) -> u64 {
        rng.gen_range(self.client_latency_ns.0..=self.client_latency_ns.1)
    }
}

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Never arrives.
    Lost,
    /// Arrives after this many nanoseconds.
    Once(u64),
    /// Arrives twice.
    Twice(u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn partitions_cut_between_groups_only() {
        let mut net = Network::new(4, &[1.0, 1.0], &[0.1, 0.1], 0.0, 0.0);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        net.partition(&[vec![0, 1], vec![2]]);
        assert_eq!(net.fate(0, 1, &mut rng), Fate::Once(1_000_000));
        assert_eq!(net.fate(0, 2, &mut rng), Fate::Lost);
        assert_eq!(
            net.fate(3, 2, &mut rng),
            Fate::Lost,
            "unlisted nodes form their own group"
        );
        net.heal();
        net.one_way(&[0], &[2]);
        assert_eq!(net.fate(0, 2, &mut rng), Fate::Lost);
        assert_eq!(net.fate(2, 0, &mut rng), Fate::Once(1_000_000));
    }

    #[test]
    fn a_full_link_refuses_until_a_delivery_frees_it() {
        let mut net = Network::new(3, &[1.0, 1.0], &[0.1, 0.1], 0.0, 0.0);
        assert!(net.has_room(0, 1), "unbounded by default");
        let mut net = net.with_queue_messages_max(Some(2));
        net.enqueued(0, 1, 2);
        assert!(!net.has_room(0, 1), "two in flight on a link of two");
        assert!(net.has_room(1, 0), "links are per direction");
        assert!(net.has_room(0, 2), "and per peer");
        net.delivered(0, 1);
        assert!(net.has_room(0, 1));
        assert_eq!(net.refused, 1);
    }
}
