//! The node's real clocks: the only place that reads them (the core takes time as an argument).
//!
//! Monotonic time is measured from the moment the [`Clock`] is built; the wall clock is the
//! system's, in microseconds since the Unix epoch, and may jump (the core's hybrid clock copes).

use ringkv_core::{Instant, Now, WallMicros};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads monotonic and wall time for the driver and converts core instants to tokio instants.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose monotonic origin is now.
    #[allow(
        clippy::disallowed_methods,
        reason = "the node's real clock: the only place it is read"
    )]
    pub fn start() -> Self {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// The current time as the core wants it.
    #[allow(
        clippy::disallowed_methods,
        reason = "the node's real clock: the only place it is read"
    )]
    pub fn now(&self) -> Now {
        let elapsed = std::time::Instant::now().saturating_duration_since(self.origin);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Now {
            monotonic: Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)),
            wall: WallMicros(u64::try_from(wall.as_micros()).unwrap_or(u64::MAX)),
        }
    }

    /// The tokio instant at which the core's monotonic clock reads `instant`.
    pub fn to_tokio(&self, instant: Instant) -> tokio::time::Instant {
        let at = self
            .origin
            .checked_add(Duration::from_nanos(instant.as_nanos()))
            // Far-future deadlines: a day from the origin is as good as never for a timer.
            .unwrap_or(self.origin + Duration::from_secs(86_400 * 365));
        tokio::time::Instant::from_std(at)
    }

    /// Time since the clock started (for uptime).
    #[allow(
        clippy::disallowed_methods,
        reason = "the node's real clock: the only place it is read"
    )]
    pub fn uptime(&self) -> Duration {
        std::time::Instant::now().saturating_duration_since(self.origin)
    }

    /// A stopwatch started now, for measuring latencies.
    pub fn stopwatch() -> Stopwatch {
        Stopwatch(Self::tokio_now())
    }

    /// Tokio's notion of now, for deadlines of the driver's own (shutdown, handshakes).
    #[allow(
        clippy::disallowed_methods,
        reason = "the node's real clock: the only place it is read"
    )]
    pub fn tokio_now() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

/// Measures the time since it was started.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(tokio::time::Instant);

impl Stopwatch {
    /// Time since the stopwatch started.
    pub fn elapsed(&self) -> Duration {
        Clock::tokio_now().saturating_duration_since(self.0)
    }
}
