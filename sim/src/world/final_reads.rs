//! The final protocol reads: after the liveness phase every key is read at `all` through the
//! protocol, so the checkers can compare what a client would read with what the replicas hold.

use super::event::ClientResponse;
use super::{Event, Phase, World, NANOS_PER_MS};
use crate::workload::value_id;
use ringkv_core::{ClientReply, ClientRequest, Consistency, RequestId};
use std::collections::BTreeMap;

/// The client id of the final protocol reads (no workload client has it).
pub(super) const FINAL_READER: u32 = u32::MAX;

/// Attempts of one final read before it counts as failed.
const FINAL_READ_ATTEMPTS_MAX: u32 = 5;

/// How long the final reads may take before the run ends without them.
const FINAL_READS_NS: u64 = 10_000 * NANOS_PER_MS;

/// The outcome of one final protocol read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalRead {
    /// The ids of the values returned (empty = not found).
    Values(Vec<u64>),
    /// No answer or a failure.
    Failed(String),
}

impl World {
    /// After the liveness phase: read every key through the protocol at `all`, so the checkers can
    /// compare what a client would read with what the replicas hold. Returns false when there is
    /// nothing to read.
    pub(super) fn start_final_reads(&mut self) -> bool {
        self.phase = Phase::Done;
        // The final reads measure what the replicas hold, and they are issued all at once: a
        // bounded link would refuse most of that burst by design, which says nothing about the
        // data, so the measurement runs over unbounded links (back-pressure had the whole run).
        self.network.unbound_queues();
        let keys = u32::try_from(self.workload.key_count()).unwrap_or(u32::MAX);
        let n = usize::from(self.config.n);
        for key_index in 0..keys {
            let key = self.workload.key(key_index).clone();
            let coordinator = self
                .ring
                .preference_list(&key, n)
                .first()
                .map_or(0, |id| id.0);
            let request = RequestId((u64::from(FINAL_READER) << 32) | u64::from(key_index));
            let body = ClientRequest::Get {
                key,
                consistency: Some(Consistency::All),
            };
            self.schedule(
                self.now,
                Event::ClientArrive {
                    node: coordinator,
                    request,
                    body,
                },
            );
        }
        self.schedule(self.now + FINAL_READS_NS, Event::FinalEnd);
        keys > 0
    }

    /// A reply to a final read; false once every key has answered.
    pub(super) fn on_final_read(&mut self, request: RequestId, reply: ClientResponse) -> bool {
        let key = u32::try_from(request.0 & 0xffff_ffff).unwrap_or(u32::MAX);
        let read = match reply {
            ClientResponse::Reply(ClientReply::Found { values, .. }) => {
                FinalRead::Values(values.iter().map(|v| value_id(v)).collect())
            }
            ClientResponse::Reply(ClientReply::NotFound { .. }) => FinalRead::Values(Vec::new()),
            other => {
                // A final read can fail only if the cluster has not settled; ask again a few times
                // so a slow replica is told apart from a stuck one.
                let attempts = self.final_read_attempts.entry(key).or_insert(0);
                *attempts += 1;
                if *attempts < FINAL_READ_ATTEMPTS_MAX {
                    let retry = RequestId(request.0);
                    let body = ClientRequest::Get {
                        key: self.workload.key(key).clone(),
                        consistency: Some(Consistency::All),
                    };
                    let node =
                        u32::try_from(u64::from(*attempts) % self.nodes.len() as u64).unwrap_or(0);
                    self.schedule(
                        self.now + 100 * NANOS_PER_MS,
                        Event::ClientArrive {
                            node,
                            request: retry,
                            body,
                        },
                    );
                    return true;
                }
                FinalRead::Failed(format!("{other:?}"))
            }
        };
        self.final_reads.insert(key, read);
        self.final_reads.len() < self.workload.key_count()
    }

    /// What the final protocol reads returned, by key index.
    pub fn final_reads(&self) -> &BTreeMap<u32, FinalRead> {
        &self.final_reads
    }
}
