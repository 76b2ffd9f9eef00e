//! Time as a value. The core never reads a clock: drivers pass monotonic time (`Instant`) and each
//! node's wall clock (`WallMicros`) into every call, so the simulator can skew, drift and jump them.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Monotonic time in nanoseconds since an arbitrary, driver-chosen origin. Used for timers and
/// deadlines only; it never reaches stored data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The origin of monotonic time.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// This instant moved forward by `duration`, saturating at the end of time.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A node's wall-clock reading in microseconds since the Unix epoch. It may jump backwards or
/// drift; it is used only for last-write-wins timestamps (through the hybrid logical clock) and
/// tombstone expiry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WallMicros(pub u64);

/// What a driver passes with every input: monotonic time for timers and the node's wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub monotonic: Instant,
    /// The node's own wall clock, for version timestamps.
    pub wall: WallMicros,
}
