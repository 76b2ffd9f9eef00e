//! The node's incarnation: a number kept in its own storage and bumped durably at every start, so
//! the operation ids of one process are never reused by the next (STYLE: "Identity survives
//! restarts").
//!
//! Why: replies are matched to operations by id. With ids restarting at 1 in every process, a late
//! reply to a previous process's round trip was taken as the answer to a new operation on another
//! key, and a linearizable read wrote that key's record back under the wrong key (issue #11,
//! item 2). The incarnation fills the high half of every `OperationId`.
//!
//! The bump must be durable before the first id of the new incarnation leaves the node: a crash
//! before the sync would let the next start read the old number and bump to the same one again.
//! Until the bump is durable, inputs that would allocate ids (client requests, forwarded puts) wait
//! in a bounded queue and hint replay waits for its next round; a node that cannot persist never
//! coordinates.

use super::Node;
use crate::client::{ClientReply, ClientRequest, RequestError};
use crate::codec;
use crate::id::{key_digest, NodeId, RequestId};
use crate::message::{ForwardedOutcome, Message};
use crate::storage::Storage;
use crate::time::Now;
use crate::version::{LwwRecord, LwwVersion, Record};
use bytes::Bytes;

/// Where the incarnation lives (reserved key, never replicated).
pub const INCARNATION_KEY: &[u8] = b"\xff\xffmeta/incarnation";

/// An input that allocates operation ids, held until the incarnation is durable.
#[derive(Debug)]
pub(super) enum Deferred {
    /// A client request.
    Client(RequestId, ClientRequest),
    /// A message from a peer (a forwarded put).
    Message(NodeId, Box<Message>),
}

/// The incarnation after `stored`, the number the previous process persisted (`None` on a fresh
/// data directory). A pure policy; 0 is never returned, so no allocated id is `OperationId(0)`.
pub fn next_incarnation(stored: Option<u32>) -> u32 {
    stored.unwrap_or(0).saturating_add(1).max(1)
}

impl<S: Storage> Node<S> {
    /// At start-up: reads the previous incarnation and stages the next one.
    pub(super) fn bump_incarnation(&mut self) {
        let stored = match self.ctx.storage.get(INCARNATION_KEY) {
            Ok(Some(Record::Lww(LwwRecord {
                value: Some(bytes), ..
            }))) => codec::decode_value::<u32>(&bytes).ok(),
            _ => None,
        };
        self.ctx.incarnation = next_incarnation(stored);
        self.stage_incarnation();
    }

    /// Stages the incarnation record. If storage refuses it (a full disk), nothing may stand for
    /// its durability: the sequence is set past anything durable, and the next held input
    /// tries again (the disk may have room by then; issue 17, item 6).
    fn stage_incarnation(&mut self) {
        let record = Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: u64::from(self.ctx.incarnation),
                node: self.ctx.id,
                nonce: 0,
            },
            value: Some(Bytes::from(codec::encode_value(&self.ctx.incarnation))),
            expires_at_micros: None,
        });
        // If staging fails the sequence stays ahead of anything durable and the node does not
        // coordinate: the safe outcome for a node whose storage refuses writes.
        self.ctx.incarnation_sequence =
            match self.ctx.stage(Bytes::from_static(INCARNATION_KEY), record) {
                Ok(()) => self.ctx.durability.staged().max(1),
                Err(_) => u64::MAX,
            };
    }

    /// Holds `input` until the incarnation is durable, or gives it back if it need not wait.
    /// Past `requests_in_flight_max` held inputs, or on storage that can no longer persist, the
    /// input is refused instead (busy, or storage unavailable): refused before any effect.
    pub(super) fn defer_until_durable(&mut self, input: Deferred) -> Result<(), Deferred> {
        if self.ctx.incarnation_durable() {
            return Err(input);
        }
        if self.ctx.incarnation_sequence == u64::MAX && !self.ctx.durability.is_poisoned() {
            self.stage_incarnation();
        }
        let refusal = if self.ctx.durability.is_poisoned() {
            Some(RequestError::StorageUnavailable)
        } else if self.ctx.incarnation_sequence == u64::MAX {
            // Still refused (a full disk): answered now rather than held until space is back.
            Some(RequestError::OutOfDiskSpace)
        } else if self.deferred.len() >= self.ctx.config.cluster.requests_in_flight_max {
            Some(RequestError::Busy)
        } else {
            None
        };
        match refusal {
            Some(e) => self.refuse(input, e),
            None => self.deferred.push_back(input),
        }
        Ok(())
    }

    /// Storage failed before the incarnation became durable: every held input is refused.
    pub(super) fn refuse_deferred(&mut self) {
        while let Some(input) = self.deferred.pop_front() {
            self.refuse(input, RequestError::StorageUnavailable);
        }
    }

    fn refuse(&mut self, input: Deferred, e: RequestError) {
        match input {
            Deferred::Client(request, _) => self.ctx.reply(request, ClientReply::Rejected(e)),
            Deferred::Message(from, message) => {
                let (op, key) = match *message {
                    Message::CoordinatePut { op, key, .. } => (op, key),
                    Message::CoordinateIncrement { op, key, .. } => {
                        let reply = super::counter::refused_increment(op, &key, e);
                        self.ctx.send(from, reply);
                        return;
                    }
                    // Only requests that allocate ids are held; anything else has no one waiting.
                    _ => return,
                };
                let reply = Message::CoordinatePutReply {
                    op,
                    key_digest: key_digest(&key),
                    outcome: ForwardedOutcome::Rejected(e),
                };
                self.ctx.send(from, reply);
            }
        }
    }

    /// Starts the held inputs once the incarnation is durable.
    pub(super) fn release_deferred(&mut self, now: Now) {
        if !self.ctx.incarnation_durable() {
            return;
        }
        while let Some(input) = self.deferred.pop_front() {
            match input {
                Deferred::Client(request, body) => self.start_request(now, request, body),
                Deferred::Message(from, message) => self.serve_message(now, from, *message),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_start_at_one_and_only_grow() {
        assert_eq!(next_incarnation(None), 1);
        assert_eq!(next_incarnation(Some(0)), 1);
        assert_eq!(next_incarnation(Some(41)), 42);
        assert_eq!(next_incarnation(Some(u32::MAX)), u32::MAX);
    }
}
