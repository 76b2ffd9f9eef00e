//! The persist-before-ack pipeline: staged writes are numbered; an acknowledgement that depends on
//! them waits until a persist token at least that high has been reported durable. One persist
//! request covers everything staged before it (group commit).
//!
//! It also remembers which keys were staged after the last completed sync: after a failed sync
//! (poisoned) those records may or may not be durable (PITFALLS: fsyncgate), and a read that
//! returned one could go backwards after a restart, so reads of exactly those keys are refused;
//! every other key's record is durable and is still served (issue 17, item 7).

use super::PersistToken;
use crate::id::{NodeId, OperationId};
use bytes::Bytes;
use std::collections::{BTreeSet, VecDeque};

/// Work to do once a write is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterPersist {
    /// Acknowledge a coordinator's `Write`.
    AckRemote {
        /// The coordinator.
        to: NodeId,
        /// Its round-trip id.
        op: OperationId,
        /// Digest of the key written, echoed so the coordinator can check the reply.
        key_digest: u64,
    },
    /// Count this node's own copy toward an operation it coordinates.
    AckLocal(OperationId),
    /// Nothing waits (repairs: read repair and anti-entropy are never acknowledged).
    Nothing,
    /// The handover record staged with this mark is durable (see `handover`).
    HandoverDurable(u64),
    /// Send the Paxos reply held under this number (see `paxos`): a promise or an acceptance
    /// leaves the replica only once durable.
    PaxosReply(u64),
}

#[derive(Debug, Default)]
pub(super) struct Durability {
    staged: u64,
    requested: u64,
    durable: u64,
    poisoned: bool,
    waiting: VecDeque<(u64, AfterPersist)>,
    /// Keys staged and not known durable when a sync failed: empty until then, and frozen
    /// after (nothing is staged once poisoned). Built only at the failure, from
    /// `unsynced_order`: keeping an ordered map of every staged key up to date cost an insertion
    /// and a removal per write, about 3% of a SET's instructions (issue #15).
    unsynced_keys: BTreeSet<Bytes>,
    /// The stagings not yet known durable, in order, with their sequence numbers; bounded by
    /// what is staged between two syncs.
    unsynced_order: VecDeque<(u64, Bytes)>,
}

impl Durability {
    /// Records that one more write was staged in storage.
    pub(super) fn staged_one(&mut self) {
        self.staged += 1;
    }

    /// Records that the write just counted by [`Durability::staged_one`] was to `key`.
    pub(super) fn staged_key(&mut self, key: &Bytes) {
        debug_assert!(!self.poisoned, "nothing is staged after a failed sync");
        self.unsynced_order.push_back((self.staged, key.clone()));
    }

    /// Whether a read of `key` can be answered truthfully from storage: always while syncs
    /// succeed; after a failed sync, only if `key` was not staged since the last completed
    /// sync (its stored record is then durable, so no restart can take it back).
    pub(super) fn readable(&self, key: &[u8]) -> bool {
        !self.poisoned || !self.unsynced_keys.contains(key)
    }

    /// Queues `then` behind every write staged so far; returns it back if nothing is pending, so
    /// the caller can act at once.
    pub(super) fn after_pending(&mut self, then: AfterPersist) -> Option<AfterPersist> {
        if self.staged > self.durable {
            self.waiting.push_back((self.staged, then));
            None
        } else {
            Some(then)
        }
    }

    /// A persist request for what has been staged since the last one.
    pub(super) fn take_persist_request(&mut self) -> Option<PersistToken> {
        if self.poisoned || self.staged == self.requested {
            return None;
        }
        self.requested = self.staged;
        Some(PersistToken(self.staged))
    }

    /// `token` is durable: returns the work now released, in order.
    pub(super) fn persisted(&mut self, token: PersistToken) -> Vec<AfterPersist> {
        if self.poisoned {
            return Vec::new();
        }
        // A token can only cover what was requested; clamp a confused driver.
        self.durable = self.durable.max(token.0.min(self.requested));
        while let Some(&(seq, _)) = self.unsynced_order.front() {
            if seq > self.durable {
                break;
            }
            self.unsynced_order.pop_front();
        }
        let mut released = Vec::new();
        while let Some(&(seq, then)) = self.waiting.front() {
            if seq > self.durable {
                break;
            }
            self.waiting.pop_front();
            released.push(then);
        }
        released
    }

    /// A sync failed: everything waiting fails, and nothing is ever requested again.
    pub(super) fn poison(&mut self) -> Vec<AfterPersist> {
        if !self.poisoned {
            self.unsynced_keys = self
                .unsynced_order
                .iter()
                .map(|(_, key)| key.clone())
                .collect();
        }
        self.poisoned = true;
        self.waiting.drain(..).map(|(_, then)| then).collect()
    }

    /// How many writes were staged so far (the sequence number of the latest).
    pub(super) fn staged(&self) -> u64 {
        self.staged
    }

    /// Whether the `seq`-th staged write is known durable.
    pub(super) fn is_durable_through(&self, seq: u64) -> bool {
        self.durable >= seq
    }

    /// True after a failed sync.
    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Internal consistency; panics only on a bug in this crate. Paired: `durable <= requested
    /// <= staged`; a waiter sits behind a staged write not yet durable, in order; an unsynced
    /// key (and each staging in the order list) is one staged after the last completed sync.
    pub(super) fn check_invariants(&self) {
        assert!(self.durable <= self.requested && self.requested <= self.staged);
        let mut previous = self.durable;
        for &(seq, _) in &self.waiting {
            assert!(
                seq > self.durable && seq >= previous && seq <= self.staged,
                "waiters are ordered and behind a pending staged write"
            );
            previous = seq;
        }
        let mut previous = self.durable;
        for &(seq, _) in &self.unsynced_order {
            assert!(
                seq > self.durable && seq >= previous && seq <= self.staged,
                "unsynced stagings are ordered and pending"
            );
            previous = seq;
        }
        assert!(
            self.poisoned || self.unsynced_keys.is_empty(),
            "unsynced keys are gathered only when a sync fails"
        );
        assert!(self.unsynced_keys.len() <= self.unsynced_order.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_wait_for_their_own_token() {
        let mut d = Durability::default();
        assert!(d
            .after_pending(AfterPersist::AckLocal(OperationId(0)))
            .is_some());
        d.staged_one();
        assert!(d
            .after_pending(AfterPersist::AckLocal(OperationId(1)))
            .is_none());
        let first = d.take_persist_request().expect("request");
        d.staged_one();
        assert!(d
            .after_pending(AfterPersist::AckLocal(OperationId(2)))
            .is_none());
        assert_eq!(
            d.persisted(first),
            vec![AfterPersist::AckLocal(OperationId(1))]
        );
        let second = d.take_persist_request().expect("request");
        assert_eq!(d.take_persist_request(), None);
        assert_eq!(
            d.persisted(second),
            vec![AfterPersist::AckLocal(OperationId(2))]
        );
        d.check_invariants();
    }

    #[test]
    fn a_failed_sync_releases_nothing_as_durable() {
        let mut d = Durability::default();
        d.staged_one();
        assert!(d
            .after_pending(AfterPersist::AckLocal(OperationId(1)))
            .is_none());
        let token = d.take_persist_request().expect("request");
        assert_eq!(d.poison().len(), 1);
        assert!(d.persisted(token).is_empty());
        d.staged_one();
        assert_eq!(d.take_persist_request(), None, "never retried");
    }

    #[test]
    fn after_a_failed_sync_only_keys_staged_since_the_last_sync_are_unreadable() {
        let mut d = Durability::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        d.staged_one();
        d.staged_key(&a);
        d.staged_one();
        d.staged_key(&b);
        assert!(
            d.readable(b"a") && d.readable(b"b"),
            "not poisoned: all readable"
        );
        let first = d.take_persist_request().expect("request");
        assert!(d.persisted(first).is_empty());
        d.staged_one();
        d.staged_key(&a);
        let _ = d.take_persist_request().expect("request");
        d.check_invariants();
        assert!(d.poison().is_empty());
        assert!(!d.readable(b"a"), "staged after the last completed sync");
        assert!(d.readable(b"b"), "durable");
        assert!(d.readable(b"c"), "never staged");
        d.check_invariants();
        // Frozen: a later token (a confused driver) makes nothing readable again.
        assert!(d.persisted(PersistToken(3)).is_empty());
        assert!(!d.readable(b"a"));
        d.check_invariants();
    }

    #[test]
    #[should_panic(expected = "behind a pending staged write")]
    fn a_waiter_behind_nothing_staged_is_caught() {
        let mut d = Durability::default();
        d.waiting.push_back((1, AfterPersist::Nothing));
        d.check_invariants();
    }
}
