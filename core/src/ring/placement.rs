//! Replica choice: a pure policy over the clockwise walk of distinct members.

/// Picks `n` members from `walk` (distinct member indices in clockwise order from the key).
///
/// Without `quota`, each pick is the first member in walk order that minimises (replicas already
/// in its datacenter, replicas already in its rack): datacenters are spread first, then racks,
/// and only then does a location repeat; the first pick is always the range owner.
///
/// With `quota` (replicas wanted per dense datacenter index, Cassandra's NetworkTopologyStrategy),
/// a member is eligible only while its datacenter is below its quota, and among the eligible the
/// first in walk order with the fewest replicas in its rack wins. Once every quota is filled,
/// further picks (when `n` asks for more, e.g. the whole walk for fallback nodes) follow walk
/// order.
pub fn choose_replicas(
    walk: &[u32],
    datacenter_of: &[u32],
    rack_of: &[u32],
    n: usize,
    quota: Option<&[u32]>,
) -> Vec<u32> {
    let n = n.min(walk.len());
    let mut chosen: Vec<u32> = Vec::with_capacity(n);
    let mut taken = vec![false; walk.len()];
    let mut per_datacenter: Vec<u32> = vec![0; datacenter_of.len()];
    let mut per_rack: Vec<u32> = vec![0; rack_of.len()];
    for _ in 0..n {
        let mut best: Option<(usize, (u32, u32))> = None;
        for (position, &member) in walk.iter().enumerate() {
            if taken[position] {
                continue;
            }
            let datacenter = datacenter_of[member as usize] as usize;
            let in_datacenter = per_datacenter[datacenter];
            let load = match quota {
                Some(quota) => {
                    if in_datacenter >= quota.get(datacenter).copied().unwrap_or(0) {
                        continue;
                    }
                    (0, per_rack[rack_of[member as usize] as usize])
                }
                None => (in_datacenter, per_rack[rack_of[member as usize] as usize]),
            };
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((position, load));
                if load == (0, 0) {
                    break;
                }
            }
        }
        let best = best.map(|(position, _)| position).or_else(|| {
            // Every quota is filled (or none applies): the rest in walk order.
            quota.and_then(|_| taken.iter().position(|t| !t))
        });
        let Some(position) = best else { break };
        taken[position] = true;
        let member = walk[position];
        per_datacenter[datacenter_of[member as usize] as usize] += 1;
        per_rack[rack_of[member as usize] as usize] += 1;
        chosen.push(member);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racks_spread_before_repeats() {
        // walk order: 0 (rack 0), 1 (rack 0), 2 (rack 1), 3 (rack 2)
        let walk = [0, 1, 2, 3];
        let datacenter = [0, 0, 0, 0];
        let rack = [0, 0, 1, 2];
        assert_eq!(
            choose_replicas(&walk, &datacenter, &rack, 3, None),
            vec![0, 2, 3]
        );
        assert_eq!(
            choose_replicas(&walk, &datacenter, &rack, 4, None),
            vec![0, 2, 3, 1]
        );
    }

    #[test]
    fn datacenters_spread_before_racks() {
        // 0: dc0 rack0, 1: dc0 rack1, 2: dc1 rack2
        let walk = [0, 1, 2];
        let datacenter = [0, 0, 1];
        let rack = [0, 1, 2];
        assert_eq!(
            choose_replicas(&walk, &datacenter, &rack, 2, None),
            vec![0, 2]
        );
    }

    #[test]
    fn never_more_than_the_walk() {
        assert_eq!(
            choose_replicas(&[1, 0], &[0, 0], &[0, 0], 5, None),
            vec![1, 0]
        );
    }

    #[test]
    fn quotas_fill_each_datacenter_then_the_walk_continues() {
        // walk: 0 dc0, 1 dc0, 2 dc1, 3 dc0, 4 dc1; racks all distinct.
        let walk = [0, 1, 2, 3, 4];
        let datacenter = [0, 0, 1, 0, 1];
        let rack = [0, 1, 2, 3, 4];
        let quota = [2, 1];
        assert_eq!(
            choose_replicas(&walk, &datacenter, &rack, 3, Some(&quota)),
            vec![0, 1, 2]
        );
        // Asking for the whole walk: quota replicas first, then the others in walk order.
        assert_eq!(
            choose_replicas(&walk, &datacenter, &rack, 5, Some(&quota)),
            vec![0, 1, 2, 3, 4]
        );
        // A datacenter without a quota holds no replica.
        assert_eq!(
            choose_replicas(&walk, &datacenter, &rack, 2, Some(&[2, 0])),
            vec![0, 1]
        );
    }
}
