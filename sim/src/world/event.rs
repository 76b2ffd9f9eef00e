//! Events of the simulation and their ordering in the queue.

use super::FaultAction;
use ringkv_core::{ClientReply, ClientRequest, Message, RequestId};

/// What a client receives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientResponse {
    /// The coordinator's reply.
    Reply(ClientReply),
    /// The node was down: the request never started (the client may send it elsewhere).
    Refused {
        /// The node that refused.
        node: u32,
        /// The request, for a retry.
        body: ClientRequest,
    },
}

/// Something that happens at one instant of simulated time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A message reaches a node.
    Deliver {
        /// Receiver.
        to: u32,
        /// Sender.
        from: u32,
        /// The message.
        message: Message,
    },
    /// A client request reaches its coordinator.
    ClientArrive {
        /// The coordinator.
        node: u32,
        /// Request id (client in the high 32 bits).
        request: RequestId,
        /// The request.
        body: ClientRequest,
    },
    /// A reply reaches its client.
    ClientReply {
        /// Request id.
        request: RequestId,
        /// The reply.
        reply: ClientResponse,
    },
    /// A client stops waiting.
    ClientGiveUp {
        /// Request id.
        request: RequestId,
    },
    /// A client issues its next operation.
    ClientSend {
        /// The client.
        client: u32,
    },
    /// A node's timer fires.
    Timer {
        /// The node.
        node: u32,
        /// The incarnation that armed it.
        incarnation: u32,
    },
    /// A node's fsync completes.
    DiskSynced {
        /// The node.
        node: u32,
        /// The incarnation that asked.
        incarnation: u32,
        /// The persist token.
        token: u64,
        /// The storage sequence the fsync covers (writes staged before it began).
        point: u64,
    },
    /// A fault is applied.
    Fault(FaultAction),
    /// The fault phase ends: everything heals.
    PhaseChange,
    /// The liveness phase ends; the final protocol reads start.
    End,
    /// The final reads' time is up: the run ends.
    FinalEnd,
    // New variants go last: the fingerprint hashes the discriminant, so inserting one earlier
    // would change the fingerprint of every run without changing any behaviour.
    /// An operator tries again to remove a crashed node (gossip: it must be judged `Down`).
    AdminRemove {
        /// The node to remove.
        node: u32,
    },
    /// An operator tries again a change that found no running member to issue it on (every
    /// other member crashed or paused).
    AdminRetry(super::membership::AdminChange),
    /// A node's maintenance tick is due (LSM nodes only: compaction, value-log collection).
    Maintenance {
        /// The node.
        node: u32,
        /// The incarnation whose scheduler asked.
        incarnation: u32,
    },
}

impl Event {
    /// The node this event is delivered to, if one (paused nodes defer their events).
    pub fn node(&self) -> Option<u32> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::ClientArrive { node, .. }
            | Event::Timer { node, .. }
            | Event::DiskSynced { node, .. }
            | Event::Maintenance { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// A one-line description for `--trace` (values are shown by length, not content).
    pub fn describe(&self) -> String {
        match self {
            Event::Deliver { to, from, message } => {
                let detail = match message {
                    Message::Read { op, key }
                    | Message::Write { op, key, .. }
                    | Message::LinRead { op, key, .. }
                    | Message::LinWrite { op, key, .. }
                    | Message::CoordinatePut { op, key, .. } => {
                        format!("op {} key {}", op.0, String::from_utf8_lossy(key))
                    }
                    Message::PaxosPrepare {
                        op, key, ballot, ..
                    }
                    | Message::PaxosPropose {
                        op, key, ballot, ..
                    }
                    | Message::PaxosCommit {
                        op, key, ballot, ..
                    } => format!(
                        "op {} key {} ballot {}.{}",
                        op.0,
                        String::from_utf8_lossy(key),
                        ballot.micros,
                        ballot.node
                    ),
                    Message::PaxosPromise { op, result, .. } => match result {
                        Ok(p) => format!("op {} granted {}", op.0, p.granted),
                        Err(e) => format!("op {} refused {e:?}", op.0),
                    },
                    Message::PaxosAccept { op, result, .. } => format!("op {} {result:?}", op.0),
                    Message::ReadReply { op, record, .. } => format!(
                        "op {} {}",
                        op.0,
                        if record.is_ok() { "ok" } else { "error" }
                    ),
                    Message::WriteReply { op, result, .. } => format!(
                        "op {} {}",
                        op.0,
                        if result.is_ok() { "ok" } else { "error" }
                    ),
                    Message::CoordinatePutReply { op, outcome, .. } => {
                        format!("op {} {outcome:?}", op.0)
                    }
                    Message::CoordinateIncrement { op, key, delta, .. } => {
                        format!(
                            "op {} key {} by {delta}",
                            op.0,
                            String::from_utf8_lossy(key)
                        )
                    }
                    Message::HintedWrite {
                        op, key, for_node, ..
                    } => format!(
                        "op {} key {} hint for {for_node}",
                        op.0,
                        String::from_utf8_lossy(key)
                    ),
                    Message::AeRoots { roots } => format!("{} roots", roots.len()),
                    Message::AeInterior { range, .. } => format!("range {range}"),
                    Message::AeLeaves { range, groups } => {
                        format!("range {range}, {} groups", groups.len())
                    }
                    Message::AeDigests { range, entries, .. } => {
                        format!("range {range}, {} digests", entries.len())
                    }
                    Message::AeRecords { records, want } => {
                        format!("{} records, wants {}", records.len(), want.len())
                    }
                    Message::HandoverPull { ranges, .. } => format!("{} ranges", ranges.len()),
                    Message::HandoverPage { page, .. } => match page {
                        Ok(page) => format!("{} records", page.records.len()),
                        Err(e) => format!("refused {e:?}"),
                    },
                    Message::ScanRange { op, from, to, .. } => {
                        format!("op {} tokens {from}..={to}", op.0)
                    }
                    Message::ScanRangeReply { op, page, .. } => match page {
                        Ok(page) => format!("op {} {} records", op.0, page.records.len()),
                        Err(e) => format!("op {} refused {e:?}", op.0),
                    },
                    Message::CountLive { op } => format!("op {}", op.0),
                    Message::CountLiveReply { op, ranges } => {
                        format!("op {} {} ranges", op.0, ranges.len())
                    }
                    Message::Gossip(gossip) => format!(
                        "{} entries, ring v{}{}",
                        gossip.entries().len(),
                        gossip.ring_version().changes,
                        if gossip.ring().is_some() {
                            " + log"
                        } else {
                            ""
                        }
                    ),
                };
                format!("n{from} -> n{to} {} {detail}", message.kind())
            }
            Event::ClientArrive {
                node,
                request,
                body,
            } => {
                let what = match body {
                    ClientRequest::Get { key, .. } => {
                        format!("get {}", String::from_utf8_lossy(key))
                    }
                    ClientRequest::Put { key, value, .. } => {
                        format!(
                            "put {} ({} bytes, id {})",
                            String::from_utf8_lossy(key),
                            value.len(),
                            crate::workload::value_id(value)
                        )
                    }
                    ClientRequest::Delete { key, .. } => {
                        format!("delete {}", String::from_utf8_lossy(key))
                    }
                    ClientRequest::Scan { from, keys_max, .. } => {
                        format!("scan from {from} ({keys_max} keys)")
                    }
                    ClientRequest::CountKeys => "count keys".to_string(),
                    ClientRequest::Increment { key, delta, .. } => {
                        format!("incrby {} {delta}", String::from_utf8_lossy(key))
                    }
                    ClientRequest::PutExpiring {
                        key,
                        value,
                        expires,
                        ..
                    } => format!(
                        "put {} ({} bytes, id {}, expires {expires:?})",
                        String::from_utf8_lossy(key),
                        value.len(),
                        crate::workload::value_id(value)
                    ),
                    ClientRequest::GetExpiring { key, .. } => {
                        format!("get-expiring {}", String::from_utf8_lossy(key))
                    }
                    ClientRequest::Conditional { key, value, .. } => format!(
                        "conditional {} (id {})",
                        String::from_utf8_lossy(key),
                        value.as_deref().map_or(0, crate::workload::value_id)
                    ),
                };
                format!("c{} -> n{node} {what}", request.0 >> 32)
            }
            Event::ClientReply { request, reply } => {
                let what = match reply {
                    ClientResponse::Refused { node, .. } => format!("refused by n{node}"),
                    ClientResponse::Reply(ClientReply::Found { values, acks, .. }) => {
                        let ids: Vec<u64> = values
                            .iter()
                            .map(|v| crate::workload::value_id(v))
                            .collect();
                        format!("found {ids:?} acks {acks}")
                    }
                    ClientResponse::Reply(r) => format!("{r:?}"),
                };
                format!("n? -> c{} {what}", request.0 >> 32)
            }
            Event::ClientGiveUp { request } => format!(
                "c{} gives up on request {}",
                request.0 >> 32,
                request.0 & 0xffff_ffff
            ),
            Event::ClientSend { client } => format!("c{client} ready"),
            Event::Timer { node, .. } => format!("n{node} timer"),
            Event::DiskSynced { node, token, .. } => format!("n{node} fsync done (token {token})"),
            Event::Maintenance { node, .. } => format!("n{node} maintenance tick"),
            Event::Fault(action) => format!("FAULT {action}"),
            Event::AdminRemove { node } => format!("ADMIN remove n{node} (retry)"),
            Event::AdminRetry(change) => {
                format!("ADMIN {change} (retry: no member to issue it on)")
            }
            Event::PhaseChange => "PHASE liveness: heal all, restart all".to_string(),
            Event::End => "END of liveness: final reads at `all`".to_string(),
            Event::FinalEnd => "END".to_string(),
        }
    }
}

/// The events to come, earliest first, ties in the order they were scheduled.
///
/// Why a heap of small keys over a slab and not a heap of events: an event carries a whole
/// message inline (a gossip table's header, a record), and a binary heap moves its elements
/// along a path of about log2(len) slots on every push and pop. Moving a 24-byte key instead
/// of the event saved those copies; the order is the keys' alone, so it is the same.
#[derive(Debug, Default)]
pub struct EventQueue {
    heap: KeyHeap,
    /// Events by slot; `None` where the slot is free.
    slots: Vec<Option<Event>>,
    /// Free slots, reused before the slab grows.
    free: Vec<usize>,
}

impl EventQueue {
    /// Schedules `event` at `time` (simulated nanoseconds); `sequence` breaks ties and must
    /// be unique.
    pub fn push(&mut self, time: u64, sequence: u64, event: Event) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(event);
                slot
            }
            None => {
                self.slots.push(Some(event));
                self.slots.len() - 1
            }
        };
        self.heap.push(Key {
            time,
            sequence,
            slot,
        });
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(u64, Event)> {
        let key = self.heap.pop()?;
        let event = self.slots.get_mut(key.slot).and_then(Option::take);
        self.free.push(key.slot);
        // `push` fills a slot before its key exists, and only `pop` empties it, once.
        assert!(event.is_some(), "a queued key without its event");
        event.map(|event| (key.time, event))
    }
}

/// An event's place in the queue.
#[derive(Clone, Copy, Debug)]
struct Key {
    /// When, simulated nanoseconds.
    time: u64,
    /// Tie-breaker: the order of scheduling.
    sequence: u64,
    /// Where the event waits in the slab.
    slot: usize,
}

impl Key {
    /// Whether this key's event comes first.
    #[inline]
    fn before(&self, other: &Key) -> bool {
        self.order() < other.order()
    }

    /// `(time, sequence)` as one number, ordered as the pair is: one wide comparison without
    /// a branch, where comparing the pair branched on equal times.
    #[inline]
    fn order(&self) -> u128 {
        (u128::from(self.time) << 64) | u128::from(self.sequence)
    }
}

/// A min-heap of keys with four children per node: half the levels of a binary heap, so a pop
/// (sift down, most of the queue's time: 5% of a 5-node run in `BinaryHeap::pop`) walks half as
/// far, comparing four siblings that sit side by side. Keys are unique, so every correct
/// priority queue pops them in the same order.
#[derive(Debug, Default)]
struct KeyHeap {
    keys: Vec<Key>,
}

impl KeyHeap {
    const ARITY: usize = 4;

    fn push(&mut self, key: Key) {
        let mut at = self.keys.len();
        self.keys.push(key);
        while at > 0 {
            let parent = (at - 1) / Self::ARITY;
            if !key.before(&self.keys[parent]) {
                break;
            }
            self.keys[at] = self.keys[parent];
            at = parent;
        }
        self.keys[at] = key;
    }

    /// Floyd's pop: the hole left at the root goes down along the earliest children to a leaf,
    /// then `last` (the heap's last key, which came from the bottom and usually belongs near
    /// it) goes up from there. That spares the comparison with `last` at every level on the
    /// way down, and a family of four is compared without a bounds check per sibling.
    fn pop(&mut self) -> Option<Key> {
        let last = self.keys.pop()?;
        let Some(&first) = self.keys.first() else {
            return Some(last);
        };
        let len = self.keys.len();
        let mut hole = 0;
        loop {
            let child = hole * Self::ARITY + 1;
            let family = self.keys.get(child..child + Self::ARITY);
            let earliest = if let Some(family) = family.and_then(|f| <&[Key; 4]>::try_from(f).ok())
            {
                child + Self::earliest(family)
            } else if child < len {
                child + Self::earliest(&self.keys[child..])
            } else {
                break;
            };
            self.keys[hole] = self.keys[earliest];
            hole = earliest;
        }
        while hole > 0 {
            let parent = (hole - 1) / Self::ARITY;
            if !last.before(&self.keys[parent]) {
                break;
            }
            self.keys[hole] = self.keys[parent];
            hole = parent;
        }
        self.keys[hole] = last;
        Some(first)
    }

    /// The index of the earliest of `siblings` (not empty).
    #[inline(always)]
    fn earliest(siblings: &[Key]) -> usize {
        let mut best = 0;
        let mut best_order = siblings[0].order();
        for (i, sibling) in siblings.iter().enumerate().skip(1) {
            let order = sibling.order();
            if order < best_order {
                best = i;
                best_order = order;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_pops_by_time_then_sequence_and_reuses_slots() {
        let mut queue = EventQueue::default();
        queue.push(20, 1, Event::End);
        queue.push(10, 2, Event::PhaseChange);
        queue.push(10, 3, Event::FinalEnd);
        assert_eq!(queue.pop(), Some((10, Event::PhaseChange)));
        queue.push(5, 4, Event::ClientSend { client: 1 });
        assert_eq!(queue.pop(), Some((5, Event::ClientSend { client: 1 })));
        assert_eq!(queue.pop(), Some((10, Event::FinalEnd)));
        assert_eq!(queue.pop(), Some((20, Event::End)));
        assert_eq!(queue.pop(), None);
        assert_eq!(queue.slots.len(), 3, "freed slots are reused");
    }

    /// Pushes and pops interleaved at random pop what a sorted list of the keys would.
    #[test]
    fn the_heap_pops_keys_in_order_as_a_sorted_list_would() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut heap = KeyHeap::default();
        let mut model: Vec<(u64, u64)> = Vec::new();
        for sequence in 0..20_000u64 {
            if rng.gen_bool(0.55) {
                let time = rng.gen_range(0..300);
                heap.push(Key {
                    time,
                    sequence,
                    slot: 0,
                });
                model.push((time, sequence));
            } else {
                model.sort_unstable_by(|a, b| b.cmp(a));
                let want = model.pop();
                let got = heap.pop().map(|k| (k.time, k.sequence));
                assert_eq!(got, want);
            }
        }
        model.sort_unstable_by(|a, b| b.cmp(a));
        while let Some(want) = model.pop() {
            assert_eq!(heap.pop().map(|k| (k.time, k.sequence)), Some(want));
        }
        assert!(heap.pop().is_none());
    }
}
