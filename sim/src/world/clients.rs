//! The workload's clients: each sends one request at a time to a coordinator, retries a refused
//! connection elsewhere, records what it saw in the history, and paces itself over the fault
//! phase.

use super::event::ClientResponse;
use super::{Event, Phase, World};
use crate::history::{HistoryOp, OpKind, OpOutcome};
use crate::workload::value_id;
use rand::Rng;
use ringkv_core::{ClientReply, ClientRequest, RequestId};

impl World {
    pub(super) fn client_send(&mut self, client: u32) {
        if self.phase != Phase::Faults || self.issued >= self.operations {
            return;
        }
        let c = &mut self.clients[client as usize];
        if c.in_flight.is_some() {
            return;
        }
        let request = RequestId((u64::from(client) << 32) | u64::from(c.next_seq));
        c.next_seq += 1;
        self.issued += 1;
        let rng = &mut self.workload_rng;
        let kind = self.workload.draw_kind(rng);
        let key_index = self.workload.draw_key(rng);
        let coordinator = if self.local_coordinators && self.datacenters > 1 {
            // Nodes are dealt round-robin over datacenters: node i lives in i mod datacenters.
            let home = client % self.datacenters;
            let per_dc = (self.nodes.len() as u32).div_ceil(self.datacenters);
            let pick = rng.gen_range(0..per_dc);
            (home + pick * self.datacenters).min(self.nodes.len() as u32 - 1)
        } else {
            rng.gen_range(0..self.nodes.len() as u32)
        };
        let key = self.workload.key(key_index).clone();
        let context = match kind {
            OpKind::Get => None,
            _ => self.clients[client as usize].contexts.remove(&key_index),
        };
        let context_sent = context.clone();
        let (value, body) = match kind {
            OpKind::Get => (
                0,
                ClientRequest::Get {
                    key,
                    consistency: None,
                },
            ),
            OpKind::Put => {
                let (id, bytes) = self.workload.draw_value(&mut self.workload_rng);
                (
                    id,
                    ClientRequest::Put {
                        key,
                        value: bytes,
                        context,
                        consistency: None,
                    },
                )
            }
            OpKind::Delete => (
                0,
                ClientRequest::Delete {
                    key,
                    context,
                    consistency: None,
                },
            ),
        };
        let index = self.history.ops.len();
        self.history.ops.push(HistoryOp {
            client,
            key: key_index,
            kind,
            value,
            read: Vec::new(),
            version: None,
            context: context_sent,
            acks: 0,
            coordinator,
            invoke_ns: self.now,
            complete_ns: None,
            outcome: OpOutcome::Indeterminate,
            during_faults: true,
        });
        self.clients[client as usize].in_flight = Some((request, index));
        let delay = self.network.client_delay(&mut self.net_rng);
        self.schedule(
            self.now + delay,
            Event::ClientArrive {
                node: coordinator,
                request,
                body,
            },
        );
        self.schedule(
            self.now + self.client_timeout_ns,
            Event::ClientGiveUp { request },
        );
    }

    fn take_in_flight(&mut self, request: RequestId) -> Option<(u32, usize)> {
        let client = u32::try_from(request.0 >> 32).ok()?;
        let c = self.clients.get_mut(client as usize)?;
        match c.in_flight {
            Some((r, index)) if r == request => {
                c.in_flight = None;
                Some((client, index))
            }
            _ => None,
        }
    }

    pub(super) fn on_client_reply(&mut self, request: RequestId, reply: ClientResponse) {
        let Some((client, index)) = self.take_in_flight(request) else {
            return;
        };
        if let ClientResponse::Refused { node, body } = &reply {
            // A client library tries another node when one refuses the connection: the request
            // never started anywhere, so it is the same operation.
            let c = &mut self.clients[client as usize];
            if c.refusals + 1 < self.nodes.len() as u32 {
                c.refusals += 1;
                c.in_flight = Some((request, index));
                let others = self.nodes.len() as u32 - 1;
                let next =
                    (node + 1 + self.workload_rng.gen_range(0..others)) % self.nodes.len() as u32;
                self.history.ops[index].coordinator = next;
                let delay = self.network.client_delay(&mut self.net_rng);
                let body = body.clone();
                self.schedule(
                    self.now + delay,
                    Event::ClientArrive {
                        node: next,
                        request,
                        body,
                    },
                );
                return;
            }
        }
        self.clients[client as usize].refusals = 0;
        if let ClientResponse::Reply(
            ClientReply::Found { context, .. } | ClientReply::NotFound { context, .. },
        ) = &reply
        {
            let key = self.history.ops[index].key;
            self.clients[client as usize]
                .contexts
                .insert(key, context.clone());
        }
        let op = &mut self.history.ops[index];
        op.complete_ns = Some(self.now);
        match reply {
            ClientResponse::Refused { .. } => op.outcome = OpOutcome::Failed,
            ClientResponse::Reply(reply) => match reply {
                ClientReply::Found { values, acks, .. } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                    op.read = values.iter().map(|v| value_id(v)).collect();
                }
                ClientReply::NotFound { acks, .. } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                }
                ClientReply::Written { version, acks } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                    op.version = Some(version);
                }
                ClientReply::Unavailable { acks, .. } => {
                    op.outcome = OpOutcome::Failed;
                    op.acks = acks;
                }
                ClientReply::Indeterminate { acks, .. } => {
                    op.outcome = OpOutcome::Indeterminate;
                    op.acks = acks;
                }
                ClientReply::Rejected(_) => op.outcome = OpOutcome::Failed,
            },
        }
        self.schedule_next(client);
    }

    pub(super) fn on_client_give_up(&mut self, request: RequestId) {
        let Some((client, _index)) = self.take_in_flight(request) else {
            return;
        };
        self.clients[client as usize].refusals = 0;
        // The op stays `Indeterminate` with no completion time.
        self.schedule_next(client);
    }

    fn schedule_next(&mut self, client: u32) {
        let jitter = self.workload_rng.gen_range(0..=self.op_gap_ns / 4);
        let c = &mut self.clients[client as usize];
        c.next_due += self.op_gap_ns;
        let at = c.next_due.max(self.now) + jitter;
        self.schedule(at, Event::ClientSend { client });
    }
}
