//! Group commit, as one sans-IO helper both drivers run (issue #12, item 5).
//!
//! The node asks for durability with `Output::Persist { token }`; a token covers every write
//! staged before it. A driver does not fsync once per token: it records the requests here, runs
//! one fsync when [`GroupCommit::poll_sync`] says one is due, and reports back the token that
//! fsync covers. The fsync itself stays with the driver (the node's driver runs it inline
//! between inputs, the simulator completes it after a drawn disk latency); this struct only
//! decides which token each fsync answers for, which is where group commit goes wrong:
//!
//! * **A sync acknowledges only what was requested before it began.** A token requested while
//!   an fsync runs names writes that fsync may not cover, so it waits for the next fsync.
//! * **A failed sync fails everything pending and ends group commit** (PITFALLS: fsyncgate; a
//!   failed fsync is never retried). The failure is reported for the highest pending token, in
//!   flight or waiting, so nothing requested so far can be acknowledged later, and nothing
//!   requested afterwards is ever synced. A restart (a new helper, with recovered storage)
//!   starts over.
//!
//! It lives in `core` beside the [`Storage`](super::Storage) seam because it is about persist
//! tokens, a core type, and applies to every engine (the in-memory one and the LSM); it does no
//! IO and reads no clock.
//!
//! Which token an fsync answers for is the driver's choice within those rules, so the simulator
//! makes it badly on purpose ([`GroupCommit::with_fault_points`]; a production driver uses
//! [`GroupCommit::new`], whose fault points are off):
//!
//! * `storage/group-commit-split-batch`: an fsync answers only for the oldest waiting token and
//!   leaves the newer ones for the next fsync, as a driver that caps its batches would. The
//!   writes of the newer tokens are durable before they are acknowledged.
//! * `storage/group-commit-ack-next-sync`: a completed fsync acknowledges nothing and its token
//!   waits for the next one, as a driver that reports completions late would; the driver starts
//!   that next fsync at once (it asks [`GroupCommit::poll_sync`] after every completion).

use crate::buggify::FaultPoints;
use crate::node::PersistToken;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The group-commit state of one node's storage: requested tokens, the sync in flight, and
/// whether a sync has failed.
#[derive(Clone, Debug, Default)]
pub struct GroupCommit {
    /// The highest token requested since the last sync began.
    waiting: Option<PersistToken>,
    /// The lowest token requested since the last sync began (as far as this helper knows: after
    /// a split batch, the highest, since the ones between were not kept); set exactly when
    /// `waiting` is.
    waiting_oldest: Option<PersistToken>,
    /// The token the sync in flight answers for.
    syncing: Option<PersistToken>,
    /// A sync failed: nothing is synced or acknowledged again.
    failed: bool,
    /// The simulator's fault points and the RNG they draw from; `None` in production.
    faults: Option<Box<(FaultPoints, ChaCha8Rng)>>,
}

impl GroupCommit {
    /// Nothing requested, nothing in flight, no fault points (every production driver).
    pub fn new() -> GroupCommit {
        GroupCommit::default()
    }

    /// As [`GroupCommit::new`], making the legal-but-unusual choices of the module doc at the
    /// sites `points` switches on, drawing from an RNG seeded with `rng_seed` (the simulator;
    /// with disabled points this is [`GroupCommit::new`]).
    pub fn with_fault_points(points: FaultPoints, rng_seed: u64) -> GroupCommit {
        GroupCommit {
            faults: points
                .enabled()
                .then(|| Box::new((points, ChaCha8Rng::seed_from_u64(rng_seed)))),
            ..GroupCommit::default()
        }
    }

    /// The node asked for `token` (`Output::Persist`). Ignored after a failed sync: the storage
    /// is poisoned and is never asked to sync again.
    pub fn handle_persist_request(&mut self, token: PersistToken) {
        if self.failed {
            return;
        }
        self.waiting = Some(self.waiting.map_or(token, |w| w.max(token)));
        self.waiting_oldest = Some(self.waiting_oldest.map_or(token, |w| w.min(token)));
        self.check_invariants();
    }

    /// If a sync is due (a token is waiting, no sync runs, none failed), begins it and returns the
    /// token it answers for. The driver then runs one fsync that covers every write staged up to
    /// this moment, and reports its end with [`GroupCommit::handle_sync_completed`] or
    /// [`GroupCommit::handle_sync_failed`].
    pub fn poll_sync(&mut self) -> Option<PersistToken> {
        if self.failed || self.syncing.is_some() {
            return None;
        }
        let newest = self.waiting?;
        let oldest = self.waiting_oldest.unwrap_or(newest);
        let token = if oldest < newest && self.fires_split_batch() {
            // The newer tokens stay waiting; what they name between `oldest` and `newest` is
            // not known here, so the rest of the batch is not split again.
            self.waiting_oldest = Some(newest);
            oldest
        } else {
            self.waiting = None;
            self.waiting_oldest = None;
            newest
        };
        self.syncing = Some(token);
        self.check_invariants();
        Some(token)
    }

    fn fires_split_batch(&mut self) -> bool {
        match self.faults.as_deref_mut() {
            Some((points, rng)) => crate::buggify!(points, rng, "storage/group-commit-split-batch"),
            None => false,
        }
    }

    fn fires_ack_next_sync(&mut self) -> bool {
        match self.faults.as_deref_mut() {
            Some((points, rng)) => {
                crate::buggify!(points, rng, "storage/group-commit-ack-next-sync")
            }
            None => false,
        }
    }

    /// The sync in flight succeeded: the token to report to the node (`handle_persisted`). Never
    /// a token requested after that sync began: those wait for the next one.
    pub fn handle_sync_completed(&mut self) -> Option<PersistToken> {
        let token = self.syncing.take();
        if let Some(late) = token.filter(|_| self.fires_ack_next_sync()) {
            // Acknowledged by the next sync instead, with whatever waits: it is older than all
            // of it, so it is the batch's oldest token and the newest only if nothing waits.
            self.waiting = Some(self.waiting.map_or(late, |w| w.max(late)));
            self.waiting_oldest = Some(late);
            self.check_invariants();
            return None;
        }
        self.check_invariants();
        token
    }

    /// The sync in flight failed: the token to report to the node (`handle_persist_failed`), the
    /// highest pending one, in flight or waiting, so every pending write fails with it. No sync
    /// is due ever after.
    pub fn handle_sync_failed(&mut self) -> Option<PersistToken> {
        let token = match (self.syncing.take(), self.waiting.take()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.waiting_oldest = None;
        self.failed = true;
        self.check_invariants();
        token
    }

    /// Nothing waits and no sync runs (a driver that is shutting down may stop).
    pub fn is_idle(&self) -> bool {
        self.waiting.is_none() && self.syncing.is_none()
    }

    /// A token waits for a sync and none is in flight: [`GroupCommit::poll_sync`] would begin
    /// one (a driver that defers its syncs checks this to know it owes one).
    pub fn is_sync_due(&self) -> bool {
        self.waiting.is_some() && self.syncing.is_none() && !self.failed
    }

    /// A sync is in flight.
    pub fn is_syncing(&self) -> bool {
        self.syncing.is_some()
    }

    /// A sync has failed (the storage is poisoned until restarted).
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Panics if the state is inconsistent (a bug).
    pub fn check_invariants(&self) {
        if self.failed {
            assert!(self.is_idle(), "a failed group commit holds nothing");
        }
        if let (Some(waiting), Some(syncing)) = (self.waiting, self.syncing) {
            assert!(
                waiting > syncing,
                "a waiting token is newer than the sync in flight"
            );
        }
        assert_eq!(
            self.waiting.is_some(),
            self.waiting_oldest.is_some(),
            "a waiting batch has an oldest and a newest token"
        );
        if let (Some(newest), Some(oldest)) = (self.waiting, self.waiting_oldest) {
            assert!(
                oldest <= newest,
                "the oldest waiting token is not newer than the newest"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> PersistToken {
        PersistToken(n)
    }

    #[test]
    fn requests_while_idle_are_one_sync_for_the_highest_token() {
        let mut g = GroupCommit::new();
        assert_eq!(g.poll_sync(), None, "nothing requested");
        g.handle_persist_request(t(1));
        g.handle_persist_request(t(3));
        g.handle_persist_request(t(2));
        assert_eq!(g.poll_sync(), Some(t(3)));
        assert_eq!(g.poll_sync(), None, "one sync at a time");
        assert_eq!(g.handle_sync_completed(), Some(t(3)));
        assert!(g.is_idle());
        assert_eq!(g.poll_sync(), None);
    }

    /// `is_sync_due` says exactly when `poll_sync` would begin a sync (a driver that defers its
    /// syncs relies on it to know it owes one).
    #[test]
    fn a_sync_is_due_exactly_when_poll_sync_would_begin_one() {
        let mut g = GroupCommit::new();
        assert!(!g.is_sync_due(), "nothing requested");
        g.handle_persist_request(t(1));
        assert!(g.is_sync_due());
        assert_eq!(g.poll_sync(), Some(t(1)));
        assert!(!g.is_sync_due(), "one in flight");
        g.handle_persist_request(t(2));
        assert!(!g.is_sync_due(), "waits for the one in flight");
        assert_eq!(g.handle_sync_completed(), Some(t(1)));
        assert!(g.is_sync_due(), "the waiting token is owed the next sync");
        assert_eq!(g.poll_sync(), Some(t(2)));
        g.handle_persist_request(t(3));
        assert_eq!(g.handle_sync_failed(), Some(t(3)));
        g.handle_persist_request(t(4));
        assert!(!g.is_sync_due(), "never after a failure");
        assert_eq!(g.poll_sync(), None);
    }

    #[test]
    fn a_sync_never_acknowledges_a_token_requested_after_it_began() {
        let mut g = GroupCommit::new();
        g.handle_persist_request(t(1));
        assert_eq!(g.poll_sync(), Some(t(1)));
        g.handle_persist_request(t(2));
        g.handle_persist_request(t(4));
        assert_eq!(
            g.poll_sync(),
            None,
            "the second batch waits for the running sync"
        );
        assert_eq!(
            g.handle_sync_completed(),
            Some(t(1)),
            "only the token requested before the sync began"
        );
        assert_eq!(
            g.poll_sync(),
            Some(t(4)),
            "the waiting batch gets its own sync"
        );
        assert_eq!(g.handle_sync_completed(), Some(t(4)));
        assert!(g.is_idle());
    }

    #[test]
    fn a_failed_sync_fails_every_pending_token_and_nothing_after_it_is_acknowledged() {
        let mut g = GroupCommit::new();
        g.handle_persist_request(t(1));
        assert_eq!(g.poll_sync(), Some(t(1)));
        g.handle_persist_request(t(2));
        assert_eq!(
            g.handle_sync_failed(),
            Some(t(2)),
            "the failure covers the waiting batch too"
        );
        assert!(g.has_failed() && g.is_idle());
        g.handle_persist_request(t(3));
        assert_eq!(g.poll_sync(), None, "never synced again (fsyncgate)");
        assert_eq!(
            g.handle_sync_completed(),
            None,
            "nothing is ever acknowledged"
        );
        assert!(g.is_idle());
        g.check_invariants();
    }

    #[test]
    fn a_failure_with_nothing_waiting_reports_the_token_in_flight() {
        let mut g = GroupCommit::new();
        g.handle_persist_request(t(5));
        assert_eq!(g.poll_sync(), Some(t(5)));
        assert_eq!(g.handle_sync_failed(), Some(t(5)));
        assert_eq!(g.poll_sync(), None);
    }

    /// Under the simulator's fault points (both sites live at some of these seeds, firing at
    /// some calls), group commit keeps its rules: a sync acknowledges only a token requested
    /// before it began, acknowledgements never go backwards, and once requests stop, driving
    /// syncs until none is due acknowledges the newest token.
    #[test]
    fn split_batches_and_late_acknowledgements_keep_the_rules_and_acknowledge_everything() {
        use rand::{Rng, SeedableRng};
        let mut fired = crate::buggify::SiteCounts::new();
        for seed in 0..200 {
            let points = FaultPoints::new(seed, true);
            let ((), counts) = crate::buggify::record(|| {
                let mut g = GroupCommit::with_fault_points(points, seed);
                let mut driver = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let (mut next, mut acknowledged) = (1u64, 0u64);
                // The newest token requested before the sync in flight began.
                let mut covered_by_sync = 0u64;
                let complete = |g: &mut GroupCommit, acknowledged: &mut u64, covered: u64| {
                    if let Some(token) = g.handle_sync_completed() {
                        assert!(
                            token.0 <= covered,
                            "seed {seed}: acknowledged {token:?} past {covered}"
                        );
                        assert!(
                            token.0 >= *acknowledged,
                            "seed {seed}: acknowledgements went back"
                        );
                        *acknowledged = token.0;
                    }
                };
                for _ in 0..300 {
                    match driver.gen_range(0..3) {
                        0 => {
                            g.handle_persist_request(t(next));
                            next += 1;
                        }
                        1 if g.poll_sync().is_some() => covered_by_sync = next - 1,
                        1 => {}
                        _ if g.is_syncing() => complete(&mut g, &mut acknowledged, covered_by_sync),
                        _ => {}
                    }
                    g.check_invariants();
                }
                // Requests stop: the driver syncs while one is due, as both drivers do.
                for _ in 0..1000 {
                    if g.is_syncing() {
                        complete(&mut g, &mut acknowledged, covered_by_sync);
                    } else if g.poll_sync().is_some() {
                        covered_by_sync = next - 1;
                    } else {
                        break;
                    }
                }
                assert!(
                    g.is_idle(),
                    "seed {seed}: syncs stopped with requests pending"
                );
                assert_eq!(
                    acknowledged,
                    next - 1,
                    "seed {seed}: the newest token is acknowledged"
                );
            });
            for (site, count) in counts {
                fired.entry(site).or_default().add(count);
            }
        }
        for site in [
            "storage/group-commit-split-batch",
            "storage/group-commit-ack-next-sync",
        ] {
            let count = fired.get(site).copied().unwrap_or_default();
            assert!(count.fired > 0, "{site} never fired: {count:?}");
        }
    }

    #[test]
    fn production_group_commit_has_no_fault_points() {
        let mut g = GroupCommit::with_fault_points(FaultPoints::new(7, false), 7);
        assert!(g.faults.is_none());
        let ((), counts) = crate::buggify::record(|| {
            for n in 1..100 {
                g.handle_persist_request(t(2 * n));
                g.handle_persist_request(t(2 * n + 1));
                assert_eq!(
                    g.poll_sync(),
                    Some(t(2 * n + 1)),
                    "one sync for the whole batch"
                );
                assert_eq!(g.handle_sync_completed(), Some(t(2 * n + 1)));
            }
        });
        assert!(counts.is_empty());
    }

    #[test]
    fn a_completion_without_a_sync_in_flight_acknowledges_nothing() {
        let mut g = GroupCommit::new();
        assert_eq!(g.handle_sync_completed(), None);
        g.handle_persist_request(t(1));
        assert_eq!(
            g.handle_sync_completed(),
            None,
            "a requested token is not acknowledged before its sync began"
        );
        assert_eq!(g.poll_sync(), Some(t(1)));
    }
}
