//! The simulated network: latency with jitter (which reorders), loss, duplication, and symmetric
//! or one-way partitions between nodes. Clients reach every node; only node links are cut.

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
            dropped: 0,
            duplicated: 0,
        }
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
}
