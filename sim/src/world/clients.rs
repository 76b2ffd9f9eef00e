//! The workload's clients: each sends one request at a time to a coordinator, retries a refused
//! connection elsewhere, records what it saw in the history, and paces itself over the fault
//! phase. With `workload.interface = "commands"` a client runs client commands through core's
//! command machines instead, one request of a command at a time (a vector-clock `SET` is a read
//! and then a write with that read's context), and the history records each command and its
//! requests.

use super::event::ClientResponse;
use super::{Event, Phase, World};
use crate::checks::cas::CasStep;
use crate::history::{
    CommandOutcome, CommandRecord, CommandResultKind, HistoryOp, OpKind, OpOutcome, ScanRecord,
};
use crate::workload::{value_id, CommandKind};
use rand::Rng;
use ringkv_core::command::{Command, CommandMachine, CommandResult, Expiry, SetOptions, ValueRead};
use ringkv_core::{ClientReply, ClientRequest, RequestId, WriteCondition};

/// A client command in progress (`workload.interface = "commands"`).
#[derive(Debug)]
pub(super) struct RunningCommand {
    /// Core's machine for it: the node runs the same one for a RESP client.
    machine: CommandMachine,
    /// Its index in `History::commands`.
    record: usize,
    /// The key, as an index into the workload's key set.
    key: u32,
    /// The node its requests go to (a client's connection), moved when one refuses.
    coordinator: u32,
}

impl World {
    pub(super) fn client_send(&mut self, client: u32) {
        if self.phase != Phase::Faults || self.issued >= self.operations {
            return;
        }
        let c = &self.clients[client as usize];
        if c.in_flight.is_some() || c.command.is_some() {
            return;
        }
        if self.workload.commands() {
            self.command_start(client);
            return;
        }
        // Drawn only when scans are on, so other scenarios keep their random streams.
        if self.scan_fraction > 0.0 && self.workload_rng.gen_bool(self.scan_fraction) {
            self.scan_start(client);
            return;
        }
        self.issued += 1;
        let rng = &mut self.workload_rng;
        let kind = self.workload.draw_kind(rng);
        let key_index = self.workload.draw_key(rng);
        let coordinator = self.draw_coordinator(client);
        let key = self.workload.key(key_index).clone();
        let context = match kind {
            OpKind::Get => None,
            _ => self.clients[client as usize].contexts.remove(&key_index),
        };
        let body = match kind {
            OpKind::Get => ClientRequest::Get {
                key,
                consistency: None,
            },
            OpKind::Put => {
                let (_, bytes) = self.workload.draw_value(&mut self.workload_rng);
                let cas = self.workload.draw_cas(&mut self.workload_rng);
                let seen = self.clients[client as usize].seen.get(&key_index);
                match (cas, seen) {
                    (true, seen) => {
                        let step = CasStep {
                            expected: seen.map(|v| value_id(v)),
                            applied: None,
                            value: bytes.clone(),
                        };
                        self.cas_steps.insert(self.history.ops.len(), step);
                        let condition = match seen {
                            Some(expected) => WriteCondition::Equals(expected.clone()),
                            // Saw no value (or saw it deleted): create it only if still absent.
                            None => WriteCondition::Absent,
                        };
                        ClientRequest::Conditional {
                            key,
                            condition,
                            value: Some(bytes),
                        }
                    }
                    _ => ClientRequest::Put {
                        key,
                        value: bytes,
                        context,
                        consistency: None,
                    },
                }
            }
            OpKind::Delete => ClientRequest::Delete {
                key,
                context,
                consistency: None,
            },
            OpKind::Increment => ClientRequest::Increment {
                key,
                delta: self.workload.draw_delta(&mut self.workload_rng),
                consistency: None,
            },
        };
        self.issue(client, coordinator, key_index, body, None);
    }

    /// The node a client sends its next operation to.
    fn draw_coordinator(&mut self, client: u32) -> u32 {
        let rng = &mut self.workload_rng;
        if self.local_coordinators && self.datacenters > 1 {
            // Nodes are dealt round-robin over datacenters: node i lives in i mod datacenters.
            let home = client % self.datacenters;
            let per_dc = (self.nodes.len() as u32).div_ceil(self.datacenters);
            let pick = rng.gen_range(0..per_dc);
            (home + pick * self.datacenters).min(self.nodes.len() as u32 - 1)
        } else {
            rng.gen_range(0..self.nodes.len() as u32)
        }
    }

    /// Sends one request for `client` and records it in the history (as one step of command
    /// `command`, if any).
    fn issue(
        &mut self,
        client: u32,
        coordinator: u32,
        key_index: u32,
        body: ClientRequest,
        command: Option<usize>,
    ) {
        let c = &mut self.clients[client as usize];
        let request = RequestId((u64::from(client) << 32) | u64::from(c.next_seq));
        c.next_seq += 1;
        let (kind, value, context) = match &body {
            ClientRequest::Get { .. } | ClientRequest::GetExpiring { .. } => (OpKind::Get, 0, None),
            ClientRequest::Put { value, context, .. } => {
                (OpKind::Put, value_id(value), context.clone())
            }
            ClientRequest::PutExpiring { value, .. } => (OpKind::Put, value_id(value), None),
            ClientRequest::Delete { context, .. } => (OpKind::Delete, 0, context.clone()),
            // Not drawn by the workload (no history model for a scan yet): recorded as reads.
            ClientRequest::Scan { .. } | ClientRequest::CountKeys => (OpKind::Get, 0, None),
            ClientRequest::Increment { .. } => (OpKind::Increment, 0, None),
            // Recorded as a put of its new value; `cas_steps` holds what it expected.
            ClientRequest::Conditional { value, .. } => {
                (OpKind::Put, value.as_deref().map_or(0, value_id), None)
            }
        };
        let delta = match &body {
            ClientRequest::Increment { delta, .. } => *delta,
            _ => 0,
        };
        let expires = match &body {
            ClientRequest::PutExpiring { expires, .. } => Some(*expires),
            _ => None,
        };
        let index = self.history.ops.len();
        self.history.ops.push(HistoryOp {
            client,
            key: key_index,
            kind,
            value,
            read: Vec::new(),
            delta,
            version: None,
            context,
            acks: 0,
            coordinator,
            expires,
            invoke_ns: self.now,
            complete_ns: None,
            outcome: OpOutcome::Indeterminate,
            during_faults: true,
            command,
        });
        if let Some(record) = command {
            self.history.commands[record].ops.push(index);
        }
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

    /// Starts a client command (`workload.interface = "commands"`): draws it and runs core's
    /// machine for it, the code the node runs for a RESP client.
    fn command_start(&mut self, client: u32) {
        self.issued += 1;
        let rng = &mut self.workload_rng;
        let kind = self.workload.draw_command(rng);
        let key_index = self.workload.draw_key(rng);
        let coordinator = self.draw_coordinator(client);
        let key = self.workload.key(key_index).clone();
        let contexts = &mut self.clients[client as usize].contexts;
        let command = match kind {
            CommandKind::Get => Command::Get { key },
            CommandKind::Del => Command::Del { keys: vec![key] },
            CommandKind::KvGet => Command::KvGet { key, level: None },
            CommandKind::KvDel => Command::KvDel {
                key,
                level: None,
                context: contexts.remove(&key_index),
            },
            CommandKind::Set | CommandKind::KvPut => {
                let context = match kind {
                    CommandKind::KvPut => contexts.remove(&key_index),
                    _ => None,
                };
                let (_, value) = self.workload.draw_value(&mut self.workload_rng);
                match kind {
                    CommandKind::KvPut => Command::KvPut {
                        key,
                        value,
                        level: None,
                        context,
                    },
                    _ => Command::Set {
                        key,
                        value,
                        options: SetOptions::default(),
                    },
                }
            }
            CommandKind::SetPx | CommandKind::SetPxAt => {
                let ttl_ms = self.workload.draw_ttl_ms(&mut self.workload_rng);
                let (_, value) = self.workload.draw_value(&mut self.workload_rng);
                let expiry = match kind {
                    // The client's idea of now is true time (its own clock is exact).
                    CommandKind::SetPxAt => {
                        let now_ms = super::clocks::NodeClock::default().wall(self.now).0 / 1000;
                        Expiry::AtUnixMillis(now_ms + ttl_ms)
                    }
                    _ => Expiry::AfterMillis(ttl_ms),
                };
                Command::Set {
                    key,
                    value,
                    options: SetOptions {
                        expiry: Some(expiry),
                        ..SetOptions::default()
                    },
                }
            }
            CommandKind::PExpire => Command::Expire {
                key,
                expiry: Expiry::AfterMillis(self.workload.draw_ttl_ms(&mut self.workload_rng)),
            },
            CommandKind::Persist => Command::Persist { key },
            CommandKind::PTtl => Command::Ttl { key, millis: true },
        };
        let record = self.history.commands.len();
        self.history.commands.push(CommandRecord {
            client,
            name: command.name(),
            key: key_index,
            ops: Vec::new(),
            outcome: CommandOutcome::Unfinished,
        });
        self.clients[client as usize].command = Some(RunningCommand {
            machine: CommandMachine::new(command, self.workload.conflict()),
            record,
            key: key_index,
            coordinator,
        });
        self.command_step(client);
    }

    /// Sends the running command's next request, or records its result and moves the client on.
    fn command_step(&mut self, client: u32) {
        let Some(running) = self.clients[client as usize].command.as_mut() else {
            return;
        };
        if let Some(body) = running.machine.poll_request() {
            let (coordinator, key, record) = (running.coordinator, running.key, running.record);
            if self.phase != Phase::Faults {
                // The workload is over: a command's later steps are not sent into the liveness
                // phase (its earlier requests may still have taken effect).
                self.command_abandon(client);
                return;
            }
            self.issue(client, coordinator, key, body, Some(record));
            return;
        }
        let Some(result) = running.machine.poll_result() else {
            return;
        };
        let (key, record) = (running.key, running.record);
        let kind = match result {
            CommandResult::Done => CommandResultKind::Done,
            CommandResult::Value(read) => CommandResultKind::Value {
                siblings: match read {
                    ValueRead::Absent => 0,
                    ValueRead::Value(_) => 1,
                    ValueRead::Conflict { siblings } => siblings,
                },
            },
            CommandResult::Count(count) => CommandResultKind::Count(count),
            CommandResult::Values(_) => CommandResultKind::Read,
            CommandResult::Read { context, .. } => {
                // Only KV.GET hands a context to the client, for its next KV.PUT or KV.DEL.
                self.clients[client as usize].contexts.insert(key, context);
                CommandResultKind::Read
            }
            CommandResult::Written { .. } => CommandResultKind::Written,
            CommandResult::Failed(reply) => CommandResultKind::Failed {
                indeterminate: matches!(reply, ClientReply::Indeterminate { .. }),
            },
            CommandResult::Integer(n) => CommandResultKind::Integer(n),
            CommandResult::Unsupported(_) => CommandResultKind::Failed {
                indeterminate: false,
            },
            CommandResult::Conditional { applied: true, .. } => CommandResultKind::Written,
            CommandResult::Conditional { applied: false, .. } => CommandResultKind::Done,
        };
        self.history.commands[record].outcome = CommandOutcome::Result(kind);
        self.clients[client as usize].command = None;
        self.schedule_next(client);
    }

    /// Gives up on the running command (no answer in time, every node refused, or the workload
    /// ended): it stays `Unfinished` in the history.
    fn command_abandon(&mut self, client: u32) {
        if self.clients[client as usize].command.take().is_some() {
            self.schedule_next(client);
        }
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
        if index == SCAN_PAGE {
            self.on_scan_page(client, reply);
            return;
        }
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
                if let Some(running) = self.clients[client as usize].command.as_mut() {
                    // The command's later steps go where this one was served.
                    running.coordinator = next;
                }
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
        let in_command = self.history.ops[index].command.is_some();
        // A client that speaks commands sees a context only through KV.GET (see `command_step`).
        if let (
            false,
            ClientResponse::Reply(
                ClientReply::Found { context, .. } | ClientReply::NotFound { context, .. },
            ),
        ) = (in_command, &reply)
        {
            let key = self.history.ops[index].key;
            self.clients[client as usize]
                .contexts
                .insert(key, context.clone());
        }
        self.remember_seen(client, index, &reply);
        let op = &mut self.history.ops[index];
        op.complete_ns = Some(self.now);
        let for_command = match &reply {
            ClientResponse::Reply(reply) if in_command => Some(reply.clone()),
            _ => None,
        };
        if let Some(ClientReply::Found { context, .. } | ClientReply::NotFound { context, .. }) =
            &for_command
        {
            // What a command's read saw, so the history shows which context its write carried.
            op.context = Some(context.clone());
        }
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
                ClientReply::FoundExpiring { value, acks, .. } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                    op.read = vec![value_id(&value)];
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
                ClientReply::ScanPage { acks, .. } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                }
                ClientReply::KeyCount { .. } => op.outcome = OpOutcome::Ok,
                ClientReply::Counted { acks, .. } => {
                    op.outcome = OpOutcome::Ok;
                    op.acks = acks;
                }
                ClientReply::Conditional {
                    applied,
                    previous,
                    version,
                    acks,
                } => {
                    // Not applied: known to have had no effect (`checks::cas` reads why).
                    op.outcome = if applied {
                        OpOutcome::Ok
                    } else {
                        OpOutcome::Failed
                    };
                    op.acks = acks;
                    op.version = version;
                    op.read = previous.iter().map(|v| value_id(v)).collect();
                    if let Some(step) = self.cas_steps.get_mut(&index) {
                        step.applied = Some(applied);
                    }
                }
            },
        }
        if !in_command {
            self.schedule_next(client);
            return;
        }
        match (for_command, self.clients[client as usize].command.as_mut()) {
            (Some(reply), Some(running)) => {
                running.machine.handle_reply(reply);
                self.command_step(client);
            }
            // Refused by every node: the command cannot go on.
            _ => self.command_abandon(client),
        }
    }

    /// What a reply tells its client about the key's live value, for the client's next
    /// compare-and-set of it (`workload.cas_fraction`; requests interface only).
    fn remember_seen(&mut self, client: u32, index: usize, reply: &ClientResponse) {
        if self.history.ops[index].command.is_some() {
            return;
        }
        let key = self.history.ops[index].key;
        let now_holds = match reply {
            ClientResponse::Reply(ClientReply::Found { values, .. }) if values.len() == 1 => {
                Some(values.first().cloned())
            }
            ClientResponse::Reply(ClientReply::NotFound { .. }) => Some(None),
            ClientResponse::Reply(ClientReply::Conditional {
                applied, previous, ..
            }) => match (applied, self.cas_steps.get(&index)) {
                (true, Some(step)) => Some(Some(step.value.clone())),
                _ => Some(previous.clone()),
            },
            _ => None,
        };
        let seen = &mut self.clients[client as usize].seen;
        match now_holds {
            Some(Some(value)) => {
                seen.insert(key, value);
            }
            Some(None) => {
                seen.remove(&key);
            }
            None => {}
        }
    }

    pub(super) fn on_client_give_up(&mut self, request: RequestId) {
        let Some((client, index)) = self.take_in_flight(request) else {
            return;
        };
        self.clients[client as usize].refusals = 0;
        if index == SCAN_PAGE {
            // The scan stays unfinished in the history.
            self.clients[client as usize].scan = None;
            self.schedule_next(client);
            return;
        }
        // The op stays `Indeterminate` with no completion time, and a command it was a step of
        // stays unfinished.
        if self.clients[client as usize].command.is_some() {
            self.command_abandon(client);
        } else {
            self.schedule_next(client);
        }
    }

    fn schedule_next(&mut self, client: u32) {
        let jitter = self.workload_rng.gen_range(0..=self.op_gap_ns / 4);
        let c = &mut self.clients[client as usize];
        c.next_due += self.op_gap_ns;
        let at = c.next_due.max(self.now) + jitter;
        self.schedule(at, Event::ClientSend { client });
    }
}

/// The history index a scan page's request stands under (it is no `HistoryOp`: the other checks
/// never see scans).
const SCAN_PAGE: usize = usize::MAX;

impl World {
    /// Starts a full scan for `client` (`workload.scan_fraction`): pages from cursor 0.
    fn scan_start(&mut self, client: u32) {
        self.issued += 1;
        let record = self.history.scans.len();
        self.history.scans.push(ScanRecord {
            client,
            invoke_ns: self.now,
            ..ScanRecord::default()
        });
        self.clients[client as usize].scan = Some(record);
        self.scan_page(client, 0);
    }

    /// Sends the page of the running scan that starts at token `from`, to a drawn coordinator.
    fn scan_page(&mut self, client: u32, from: u64) {
        let coordinator = self.draw_coordinator(client);
        let c = &mut self.clients[client as usize];
        let request = RequestId((u64::from(client) << 32) | u64::from(c.next_seq));
        c.next_seq += 1;
        c.in_flight = Some((request, SCAN_PAGE));
        let body = ClientRequest::Scan {
            from,
            keys_max: self.scan_keys_max,
            consistency: None,
        };
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

    /// A page of `client`'s scan was answered (or refused): record its keys and go on, or end
    /// the scan (unfinished unless the ring was walked).
    fn on_scan_page(&mut self, client: u32, reply: ClientResponse) {
        let Some(record) = self.clients[client as usize].scan else {
            return;
        };
        let next = match reply {
            ClientResponse::Reply(ClientReply::ScanPage { mut keys, next, .. }) => {
                if self.unsafe_scan_skip_last_key && next.is_some() {
                    keys.pop();
                }
                let scan = &mut self.history.scans[record];
                scan.pages += 1;
                for key in keys {
                    let index = self.workload.index_of(&key).unwrap_or(u32::MAX);
                    scan.keys.push(index);
                }
                if next.is_none() {
                    scan.complete_ns = Some(self.now);
                }
                next
            }
            // A failed page ends the scan, unfinished (a client would retry the same cursor).
            _ => None,
        };
        match next {
            Some(from) if self.phase == Phase::Faults => self.scan_page(client, from),
            _ => {
                self.clients[client as usize].scan = None;
                self.schedule_next(client);
            }
        }
    }
}
