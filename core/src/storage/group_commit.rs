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

use crate::node::PersistToken;

/// The group-commit state of one node's storage: requested tokens, the sync in flight, and
/// whether a sync has failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupCommit {
    /// The highest token requested since the last sync began.
    waiting: Option<PersistToken>,
    /// The token the sync in flight answers for.
    syncing: Option<PersistToken>,
    /// A sync failed: nothing is synced or acknowledged again.
    failed: bool,
}

impl GroupCommit {
    /// Nothing requested, nothing in flight.
    pub fn new() -> GroupCommit {
        GroupCommit::default()
    }

    /// The node asked for `token` (`Output::Persist`). Ignored after a failed sync: the storage
    /// is poisoned and is never asked to sync again.
    pub fn handle_persist_request(&mut self, token: PersistToken) {
        if self.failed {
            return;
        }
        self.waiting = Some(self.waiting.map_or(token, |w| w.max(token)));
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
        let token = self.waiting.take()?;
        self.syncing = Some(token);
        self.check_invariants();
        Some(token)
    }

    /// The sync in flight succeeded: the token to report to the node (`handle_persisted`). Never
    /// a token requested after that sync began: those wait for the next one.
    pub fn handle_sync_completed(&mut self) -> Option<PersistToken> {
        let token = self.syncing.take();
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
        self.failed = true;
        self.check_invariants();
        token
    }

    /// Nothing waits and no sync runs (a driver that is shutting down may stop).
    pub fn is_idle(&self) -> bool {
        self.waiting.is_none() && self.syncing.is_none()
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
