//! Each node's wall clock: an offset, a drift and scheduled jumps over simulated time. Monotonic
//! time is the simulator's own and never skews.

use ringkv_core::WallMicros;

/// Wall-clock time at the simulation's start (2026-01-01T00:00:00Z), so timestamps look real.
const EPOCH_MICROS: i64 = 1_767_225_600_000_000;

/// One node's wall clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeClock {
    /// Constant offset, microseconds.
    pub offset_us: i64,
    /// Drift, parts per million.
    pub drift_ppm: i64,
    /// Sum of the jumps so far, microseconds.
    pub jumps_us: i64,
}

impl NodeClock {
    /// The wall-clock reading at simulated time `sim_ns`.
    pub fn wall(&self, sim_ns: u64) -> WallMicros {
        let sim_us = i64::try_from(sim_ns / 1000).unwrap_or(i64::MAX);
        let drift = sim_us.saturating_mul(self.drift_ppm) / 1_000_000;
        let micros = EPOCH_MICROS + sim_us + drift + self.offset_us + self.jumps_us;
        WallMicros(u64::try_from(micros).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_drift_and_jumps_add_up() {
        let mut clock = NodeClock {
            offset_us: 500,
            drift_ppm: 100,
            jumps_us: 0,
        };
        let base = NodeClock::default();
        let t = 10_000_000_000; // 10 s
        assert_eq!(clock.wall(t).0 - base.wall(t).0, 500 + 1000);
        clock.jumps_us = -3_000_000;
        assert!(clock.wall(t) < base.wall(t));
    }
}
