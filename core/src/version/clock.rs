//! Hybrid logical clock for last-write-wins timestamps.
//!
//! PITFALLS ("Last-write-wins loses acknowledged writes"): timestamps must never go backwards on a
//! node, even when its wall clock jumps back. Each stamp is `max(wall, last + 1)`, and stamps seen
//! in other nodes' versions are folded in, so a write that causally follows another gets a higher
//! timestamp even across skewed clocks.

use crate::time::WallMicros;

/// A per-node hybrid logical clock, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct HybridClock {
    last_micros: u64,
}

impl HybridClock {
    /// A clock that will never stamp at or below `floor_micros`.
    pub fn new(floor_micros: u64) -> Self {
        HybridClock {
            last_micros: floor_micros,
        }
    }

    /// A fresh timestamp, strictly above every earlier one from this clock.
    pub fn stamp(&mut self, wall: WallMicros) -> u64 {
        self.last_micros = wall.0.max(self.last_micros.saturating_add(1));
        self.last_micros
    }

    /// Folds in a timestamp seen in another node's version.
    pub fn observe(&mut self, micros: u64) {
        self.last_micros = self.last_micros.max(micros);
    }

    /// The last timestamp issued or observed.
    pub fn last_micros(&self) -> u64 {
        self.last_micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_when_the_wall_clock_jumps_back() {
        let mut clock = HybridClock::default();
        let a = clock.stamp(WallMicros(1_000));
        let b = clock.stamp(WallMicros(500));
        let c = clock.stamp(WallMicros(500));
        assert!(a < b && b < c, "{a} {b} {c}");
        clock.observe(10_000);
        assert!(clock.stamp(WallMicros(600)) > 10_000);
    }
}
