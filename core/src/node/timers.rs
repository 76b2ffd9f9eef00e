//! The node's closed timer table: every periodic mechanism's next wake-up, keyed by [`Timer`].
//! `poll_timeout` is the minimum of this table and the operation deadlines, so a mechanism cannot
//! add a wake-up the driver does not see. Membership keeps its own schedule (it is a machine of
//! its own, driven alone by the membership harness); the node mirrors it here (`Timer::Gossip`).

use crate::time::Instant;

/// A periodic mechanism's timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The next anti-entropy round (`antientropy`).
    AntiEntropy,
    /// The next hint replay round (`hints`).
    HintReplay,
    /// The next handover pull round (`handover`).
    HandoverPull,
    /// Membership's next wake-up (a gossip round or a suspicion deadline): a copy of
    /// `Membership::poll_timeout`, refreshed after every input the machine takes (`gossip`).
    Gossip,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::AntiEntropy,
        Timer::HintReplay,
        Timer::HandoverPull,
        Timer::Gossip,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// When each timer fires next, if armed.
#[derive(Clone, Debug, Default)]
pub(super) struct Timers {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl Timers {
    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.slot()]
    }

    pub(super) fn set(&mut self, timer: Timer, at: Option<Instant>) {
        self.at[timer.slot()] = at;
    }

    pub(super) fn arm(&mut self, timer: Timer, at: Instant) {
        self.set(timer, Some(at));
    }

    pub(super) fn disarm(&mut self, timer: Timer) {
        self.set(timer, None);
    }

    pub(super) fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// Whether `timer` is armed for `now` or earlier.
    pub(super) fn due(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The earliest armed timer.
    pub(super) fn next(&self) -> Option<Instant> {
        // A fold over the slots: the minimum of the armed ones, as flattening them gave, without
        // the adapter's state per slot (this runs after every input of the node).
        self.at
            .iter()
            .fold(None, |earliest, &at| match (earliest, at) {
                (Some(earliest), Some(at)) => Some(earliest.min(at)),
                (earliest, at) => earliest.or(at),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_table_reports_its_earliest_armed_timer_and_what_is_due() {
        let t0 = Instant::ZERO;
        let at = |ms| t0.saturating_add(Duration::from_millis(ms));
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.arm(Timer::HintReplay, at(30));
        timers.arm(Timer::AntiEntropy, at(10));
        assert_eq!(timers.next(), Some(at(10)));
        assert!(timers.due(Timer::AntiEntropy, at(10)));
        assert!(!timers.due(Timer::HintReplay, at(29)));
        assert!(
            !timers.due(Timer::HandoverPull, at(1_000)),
            "unarmed is never due"
        );
        timers.disarm(Timer::AntiEntropy);
        assert_eq!(timers.next(), Some(at(30)));
        assert!(!timers.is_armed(Timer::AntiEntropy));
    }
}
