//! Faults: the actions, and the nemesis that draws a schedule of them from the seed.

use crate::scenario::{FaultSpec, NemesisSpec};
use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;

/// One fault action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultAction {
    /// Groups that cannot reach each other.
    Partition(Vec<Vec<u32>>),
    /// Links cut one way.
    OneWay {
        /// Senders.
        from: Vec<u32>,
        /// Receivers.
        to: Vec<u32>,
    },
    /// Every link restored.
    Heal,
    /// Node crash.
    Crash(u32),
    /// Node restart.
    Restart(u32),
    /// Node frozen for `ms`.
    Pause {
        /// The node.
        node: u32,
        /// Milliseconds.
        ms: u64,
    },
    /// A node joins the ring (takes over its vnodes; data follows by anti-entropy).
    Join(u32),
    /// A node leaves the ring (decommission: it keeps running and streams its data out).
    Leave(u32),
    /// An operator removes a dead node: stopped for good and taken out of the ring.
    Remove(u32),
    /// Wall-clock step.
    ClockJump {
        /// The node.
        node: u32,
        /// Milliseconds, negative is backwards.
        ms: i64,
    },
    // New variants go last: the fingerprint hashes the discriminant.
    /// A replaced machine: the node loses its process and its whole disk, synced data included,
    /// and starts again at once with empty storage under the same id. The only fault that
    /// destroys durable copies, so the only one that shows whether W durable copies were really
    /// made before an acknowledgement.
    Wipe(u32),
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Partition(groups) => {
                let groups: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
                write!(f, "partition {}", groups.join(" | "))
            }
            FaultAction::OneWay { from, to } => write!(f, "one-way {from:?} -/-> {to:?}"),
            FaultAction::Heal => write!(f, "heal"),
            FaultAction::Crash(n) => write!(f, "crash n{n}"),
            FaultAction::Restart(n) => write!(f, "restart n{n}"),
            FaultAction::Pause { node, ms } => write!(f, "pause n{node} {ms}ms"),
            FaultAction::Join(n) => write!(f, "join n{n}"),
            FaultAction::Leave(n) => write!(f, "leave n{n}"),
            FaultAction::Remove(n) => write!(f, "remove n{n}"),
            FaultAction::ClockJump { node, ms } => write!(f, "clock-jump n{node} {ms:+}ms"),
            FaultAction::Wipe(n) => write!(f, "wipe n{n}"),
        }
    }
}

impl FaultAction {
    /// The action of a scheduled `[[fault]]` (validated to have exactly one).
    pub fn from_spec(spec: &FaultSpec) -> Option<FaultAction> {
        if let Some(groups) = &spec.partition {
            return Some(FaultAction::Partition(groups.clone()));
        }
        if let Some(one_way) = &spec.one_way {
            return Some(FaultAction::OneWay {
                from: one_way.from.clone(),
                to: one_way.to.clone(),
            });
        }
        if spec.heal == Some(true) {
            return Some(FaultAction::Heal);
        }
        if let Some(node) = spec.crash {
            return Some(FaultAction::Crash(node));
        }
        if let Some(node) = spec.restart {
            return Some(FaultAction::Restart(node));
        }
        if let Some(node) = spec.join {
            return Some(FaultAction::Join(node));
        }
        if let Some(node) = spec.leave {
            return Some(FaultAction::Leave(node));
        }
        if let Some(node) = spec.remove {
            return Some(FaultAction::Remove(node));
        }
        if let Some(node) = spec.wipe {
            return Some(FaultAction::Wipe(node));
        }
        if let Some(pause) = &spec.pause {
            return Some(FaultAction::Pause {
                node: pause.node,
                ms: pause.ms,
            });
        }
        spec.clock_jump.as_ref().map(|jump| FaultAction::ClockJump {
            node: jump.node,
            ms: jump.ms,
        })
    }
}

/// Draws the nemesis schedule for the fault phase: alternately injects a fault of an enabled kind
/// and restores an earlier one, so the cluster sees both faults and recoveries. At most a minority
/// of nodes is down at once, so quorums stay possible somewhere.
pub fn draw_schedule(
    spec: &NemesisSpec,
    nodes: u32,
    duration_ms: u64,
    rng: &mut impl Rng,
) -> Vec<(u64, FaultAction)> {
    let mut kinds: Vec<&str> = Vec::new();
    if spec.partitions {
        kinds.push("partition");
    }
    if spec.crashes {
        kinds.push("crash");
    }
    if spec.clock_jumps {
        kinds.push("clock");
    }
    if spec.pauses {
        kinds.push("pause");
    }
    let mut schedule = Vec::new();
    if kinds.is_empty() || nodes == 0 {
        draw_wipe(spec, nodes, duration_ms, rng, &mut schedule);
        return schedule;
    }
    let all: Vec<u32> = (0..nodes).collect();
    let mut down: Vec<u32> = Vec::new();
    let mut partitioned = false;
    let mut at = rng.gen_range(spec.interval_ms[0]..=spec.interval_ms[1]);
    while at < duration_ms {
        let can_restore = partitioned || !down.is_empty();
        if can_restore && rng.gen_bool(0.5) {
            if partitioned && (down.is_empty() || rng.gen_bool(0.5)) {
                partitioned = false;
                schedule.push((at, FaultAction::Heal));
            } else if let Some(i) = (!down.is_empty()).then(|| rng.gen_range(0..down.len())) {
                schedule.push((at, FaultAction::Restart(down.swap_remove(i))));
            }
        } else {
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let node = rng.gen_range(0..nodes);
            match kind {
                "partition" => {
                    partitioned = true;
                    let mut shuffled = all.clone();
                    shuffled.shuffle(rng);
                    let action = match rng.gen_range(0..3) {
                        0 => FaultAction::Partition(vec![vec![node]]),
                        1 => {
                            let cut = rng.gen_range(1..=nodes.max(2) / 2) as usize;
                            let cut = cut.min(shuffled.len());
                            FaultAction::Partition(vec![
                                shuffled[..cut].to_vec(),
                                shuffled[cut..].to_vec(),
                            ])
                        }
                        _ => FaultAction::OneWay {
                            from: vec![node],
                            to: all.iter().copied().filter(|&n| n != node).collect(),
                        },
                    };
                    schedule.push((at, action));
                }
                "crash" => {
                    if (down.len() as u32 + 1) * 2 < nodes.max(2) + 1 && !down.contains(&node) {
                        down.push(node);
                        schedule.push((at, FaultAction::Crash(node)));
                    }
                }
                "clock" => {
                    let ms = rng.gen_range(-5000..=5000);
                    schedule.push((at, FaultAction::ClockJump { node, ms }));
                }
                _ => {
                    let ms = rng.gen_range(100..=3000);
                    schedule.push((at, FaultAction::Pause { node, ms }));
                }
            }
        }
        at += rng.gen_range(spec.interval_ms[0]..=spec.interval_ms[1]);
    }
    draw_wipe(spec, nodes, duration_ms, rng, &mut schedule);
    schedule
}

/// With `wipes`, one machine replaced in the middle half of the fault phase, drawn after every
/// other fault so that turning wipes on leaves the rest of the schedule as it was.
fn draw_wipe(
    spec: &NemesisSpec,
    nodes: u32,
    duration_ms: u64,
    rng: &mut impl Rng,
    schedule: &mut Vec<(u64, FaultAction)>,
) {
    if !spec.wipes || nodes == 0 {
        return;
    }
    let at = rng.gen_range(duration_ms / 4..=duration_ms * 3 / 4);
    let node = rng.gen_range(0..nodes);
    let place = schedule.partition_point(|(t, _)| *t <= at);
    schedule.insert(place, (at, FaultAction::Wipe(node)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn spec(wipes: bool) -> NemesisSpec {
        NemesisSpec {
            partitions: true,
            crashes: true,
            wipes,
            ..NemesisSpec::default()
        }
    }

    #[test]
    fn wipes_add_one_wipe_mid_run_and_leave_the_rest_alone() {
        for seed in 0..50 {
            let without = draw_schedule(
                &spec(false),
                5,
                40_000,
                &mut ChaCha8Rng::seed_from_u64(seed),
            );
            let with = draw_schedule(&spec(true), 5, 40_000, &mut ChaCha8Rng::seed_from_u64(seed));
            let wipes: Vec<_> = with
                .iter()
                .filter(|(_, a)| matches!(a, FaultAction::Wipe(_)))
                .collect();
            assert_eq!(wipes.len(), 1, "seed {seed}: {with:?}");
            assert!((10_000..=30_000).contains(&wipes[0].0), "seed {seed}");
            let rest: Vec<_> = with
                .iter()
                .filter(|(_, a)| !matches!(a, FaultAction::Wipe(_)))
                .cloned()
                .collect();
            assert_eq!(rest, without, "seed {seed}");
            assert!(
                with.windows(2).all(|w| w[0].0 <= w[1].0),
                "seed {seed}: out of order"
            );
        }
    }
}
