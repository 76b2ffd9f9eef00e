//! Node-level tests with a tiny synchronous driver: messages are delivered in FIFO order and
//! persist requests are completed only when the test says so.

use super::*;
use crate::client::{ClientReply, ClientRequest, Consistency};
use crate::config::ClusterConfig;
use crate::id::OperationId;
use crate::ring::NodeLocation;
use crate::storage::MemStorage;
use crate::time::{Instant, Now, WallMicros};
use crate::version::ConflictMode;
use bytes::Bytes;
use std::collections::VecDeque;

/// When the tests' nodes start (before any of their inputs).
fn boot() -> Now {
    Now {
        monotonic: Instant::ZERO,
        wall: WallMicros(0),
    }
}

struct Cluster {
    nodes: Vec<Node<MemStorage>>,
    in_flight: VecDeque<(NodeId, NodeId, Message)>,
    persists: Vec<Vec<PersistToken>>,
    replies: Vec<(RequestId, ClientReply)>,
    now: Now,
}

impl Cluster {
    fn new(conflict: ConflictMode) -> Cluster {
        let ring = three_node_ring(16);
        let cluster = ClusterConfig {
            conflict,
            ..ClusterConfig::default()
        };
        let nodes = (0..3)
            .map(|i| {
                let config = NodeConfig {
                    id: NodeId(i),
                    cluster: cluster.clone(),
                    rng_seed: u64::from(i),
                };
                Node::new(config, ring.clone(), MemStorage::new(), boot()).expect("valid")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            in_flight: VecDeque::new(),
            persists: vec![Vec::new(); 3],
            replies: Vec::new(),
            now: Now {
                monotonic: Instant::from_nanos(1),
                wall: WallMicros(1_000_000),
            },
        };
        // Like a driver: drain after construction, so each node's incarnation is durable.
        for i in 0..3 {
            cluster.drain(i);
        }
        cluster.persist_all();
        cluster
    }

    fn drain(&mut self, i: usize) {
        while let Some(output) = self.nodes[i].poll_output() {
            match output {
                Output::Send { to, message } => {
                    self.in_flight.push_back((NodeId(i as u32), to, message))
                }
                Output::Persist { token } => self.persists[i].push(token),
                Output::Reply { request, reply } => self.replies.push((request, reply)),
                Output::Event(_) => {}
            }
        }
    }

    fn client(&mut self, at: usize, id: u64, body: ClientRequest) {
        self.nodes[at].handle_client(self.now, RequestId(id), body);
        self.drain(at);
    }

    /// Delivers messages until none is left (persist requests stay pending).
    fn deliver_all(&mut self) {
        while let Some((from, to, message)) = self.in_flight.pop_front() {
            let i = to.0 as usize;
            self.nodes[i].handle_message(self.now, from, message);
            self.drain(i);
        }
    }

    /// Completes every pending persist request, then delivers what that releases.
    fn persist_all(&mut self) {
        for i in 0..3 {
            for token in std::mem::take(&mut self.persists[i]) {
                self.nodes[i].storage_mut().sync().expect("sync");
                self.nodes[i].handle_persisted(self.now, token);
                self.drain(i);
            }
        }
        self.deliver_all();
    }

    fn settle(&mut self) {
        for _ in 0..10 {
            self.deliver_all();
            self.persist_all();
        }
    }

    fn reply(&self, id: u64) -> Option<&ClientReply> {
        self.replies
            .iter()
            .find(|(r, _)| r.0 == id)
            .map(|(_, reply)| reply)
    }
}

fn put(key: &'static str, value: &'static str) -> ClientRequest {
    ClientRequest::Put {
        key: Bytes::from_static(key.as_bytes()),
        value: Bytes::from_static(value.as_bytes()),
        context: None,
        consistency: None,
    }
}

fn get(key: &'static str) -> ClientRequest {
    ClientRequest::Get {
        key: Bytes::from_static(key.as_bytes()),
        consistency: None,
    }
}

#[test]
fn a_write_is_acknowledged_only_after_w_replicas_persisted() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, put("k", "v"));
    c.deliver_all();
    assert!(
        c.reply(1).is_none(),
        "acknowledged before anything was durable"
    );
    // Persist on one replica only: still short of w = 2.
    let first = c
        .persists
        .iter()
        .position(|p| !p.is_empty())
        .expect("a persist request");
    for token in std::mem::take(&mut c.persists[first]) {
        c.nodes[first].storage_mut().sync().expect("sync");
        c.nodes[first].handle_persisted(c.now, token);
        c.drain(first);
    }
    c.deliver_all();
    assert!(c.reply(1).is_none(), "acknowledged with one durable copy");
    c.persist_all();
    assert!(matches!(c.reply(1), Some(ClientReply::Written { acks, .. }) if *acks >= 2));
    c.client(1, 2, get("k"));
    c.settle();
    match c.reply(2) {
        Some(ClientReply::Found { values, .. }) => {
            assert_eq!(values, &vec![Bytes::from_static(b"v")])
        }
        other => panic!("read after write: {other:?}"),
    }
}

#[test]
fn delete_writes_a_tombstone_that_reads_as_not_found() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, put("k", "v"));
    c.settle();
    let delete = ClientRequest::Delete {
        key: Bytes::from_static(b"k"),
        context: None,
        consistency: Some(Consistency::All),
    };
    c.client(2, 2, delete);
    c.settle();
    assert!(matches!(
        c.reply(2),
        Some(ClientReply::Written { acks: 3, .. })
    ));
    c.client(1, 3, get("k"));
    c.settle();
    assert!(matches!(c.reply(3), Some(ClientReply::NotFound { .. })));
}

#[test]
fn an_unmet_quorum_times_out_as_indeterminate_or_unavailable() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, put("k", "v"));
    c.client(0, 2, get("k"));
    c.in_flight.clear(); // every message to the other replicas is lost
    let later = Now {
        monotonic: Instant::from_nanos(10_000_000_000),
        wall: c.now.wall,
    };
    assert!(c.nodes[0].poll_timeout().is_some());
    c.nodes[0].handle_timeout(later);
    c.drain(0);
    assert!(matches!(
        c.reply(1),
        Some(ClientReply::Indeterminate { needed: 2, .. })
    ));
    assert!(matches!(
        c.reply(2),
        Some(ClientReply::Unavailable { needed: 2, .. })
    ));
    assert_eq!(c.nodes[0].operations_in_flight(), 0);
}

#[test]
fn oversized_values_are_rejected_before_any_effect() {
    let mut c = Cluster::new(ConflictMode::Lww);
    let value = Bytes::from(vec![0u8; (1 << 20) + 1]);
    let body = ClientRequest::Put {
        key: Bytes::from_static(b"k"),
        value,
        context: None,
        consistency: None,
    };
    c.client(0, 1, body);
    assert!(matches!(
        c.reply(1),
        Some(ClientReply::Rejected(RequestError::ValueTooLarge { .. }))
    ));
    assert!(c.in_flight.is_empty());
}

#[test]
fn siblings_are_bounded_in_bytes_so_a_record_always_fits_one_message() {
    // Default limits: values up to 1 MiB, records up to 8 MiB over all siblings.
    let mut c = Cluster::new(ConflictMode::VectorClock);
    for id in 1..=9u64 {
        let body = ClientRequest::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![id as u8; 1 << 20]),
            context: None,
            consistency: None,
        };
        c.client(0, id, body);
        c.settle();
    }
    for id in 1..=8 {
        assert!(
            matches!(c.reply(id), Some(ClientReply::Written { .. })),
            "{id}: {:?}",
            c.reply(id).map(|_| "not written")
        );
    }
    assert!(
        matches!(
            c.reply(9),
            Some(ClientReply::Rejected(RequestError::SiblingsTooLarge {
                max: 8_388_608,
                ..
            }))
        ),
        "the ninth concurrent 1 MiB sibling must be refused"
    );
    // Every record any replica holds still encodes within the peer message limit.
    for node in &mut c.nodes {
        if let Ok(Some(record)) = crate::storage::Storage::get(node.storage_mut(), b"k") {
            let encoded = crate::codec::encode_value(&record).len();
            assert!(encoded > 0 && encoded <= crate::codec::MESSAGE_BYTES_MAX);
        }
    }
}

#[test]
fn vector_clocks_keep_concurrent_writes_and_a_context_resolves_them() {
    let mut c = Cluster::new(ConflictMode::VectorClock);
    c.client(0, 1, put("k", "a"));
    c.client(1, 2, put("k", "b"));
    c.settle();
    assert!(
        matches!(c.reply(1), Some(ClientReply::Written { .. })),
        "{:?}",
        c.reply(1)
    );
    assert!(
        matches!(c.reply(2), Some(ClientReply::Written { .. })),
        "{:?}",
        c.reply(2)
    );
    c.client(2, 3, get("k"));
    c.settle();
    let Some(ClientReply::Found {
        values, context, ..
    }) = c.reply(3).cloned()
    else {
        panic!("{:?}", c.reply(3));
    };
    assert_eq!(values.len(), 2, "both concurrent writes are siblings");
    let resolve = ClientRequest::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"ab"),
        context: Some(context),
        consistency: Some(Consistency::All),
    };
    c.client(2, 4, resolve);
    c.settle();
    c.client(0, 5, get("k"));
    c.settle();
    match c.reply(5) {
        Some(ClientReply::Found { values, .. }) => {
            assert_eq!(values, &vec![Bytes::from_static(b"ab")])
        }
        other => panic!("{other:?}"),
    }
}

use crate::client::RequestError;

/// Anti-entropy after divergence of D keys out of K moves bytes in proportion to D (plus the
/// tree overhead of the ranges that differ), not to K.
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: its phases read top to bottom"
)]
#[test]
fn anti_entropy_bytes_scale_with_divergence_not_key_count() {
    use crate::codec::encode_value as encode;
    use crate::storage::Storage;
    const KEYS: usize = 100_000;
    const DIVERGENT: usize = 100;
    let ring = three_node_ring(64);
    let record = |ts: u64| lww_record(ts, 100);
    let key = |i: usize| Bytes::from(format!("key{i:07}"));
    let mut storages = vec![MemStorage::new(); 3];
    for i in 0..KEYS {
        for storage in &mut storages {
            storage.put(key(i), record(1)).expect("put");
        }
    }
    let divergent: Vec<Bytes> = (0..DIVERGENT).map(|i| key(i * 997 % KEYS)).collect();
    let mut divergent_bytes = 0;
    for k in &divergent {
        storages[0].put(k.clone(), record(2)).expect("put");
        divergent_bytes += encode(&(k.clone(), record(2))).len();
    }
    let all_bytes = KEYS * encode(&(key(0), record(1))).len();
    let cluster = ClusterConfig {
        anti_entropy_ranges_per_round: 256,
        ..ClusterConfig::default()
    };
    let mut nodes = nodes_over(storages, &cluster, &ring);
    let mut ae_bytes = 0usize;
    let mut queue: VecDeque<(NodeId, NodeId, Message)> = VecDeque::new();
    let mut converged_after = None;
    for round in 1..=5u64 {
        let now = Now {
            monotonic: Instant::from_nanos(round * 2_000_000_000),
            wall: WallMicros(1),
        };
        for (i, node) in nodes.iter_mut().enumerate() {
            node.handle_timeout(now);
            while let Some(output) = node.poll_output() {
                if let Output::Send { to, message } = output {
                    queue.push_back((NodeId(i as u32), to, message));
                }
            }
        }
        while let Some((from, to, message)) = queue.pop_front() {
            if message.is_anti_entropy() {
                ae_bytes += encode(&message).len();
            }
            let i = to.0 as usize;
            nodes[i].handle_message(now, from, message);
            while let Some(output) = nodes[i].poll_output() {
                match output {
                    Output::Send { to, message } => {
                        queue.push_back((NodeId(i as u32), to, message))
                    }
                    Output::Persist { token } => {
                        nodes[i].storage_mut().sync().expect("sync");
                        nodes[i].handle_persisted(now, token);
                    }
                    _ => {}
                }
            }
        }
        let healed = nodes.iter_mut().all(|n| {
            divergent
                .iter()
                .all(|k| n.storage_mut().get(k).expect("get") == Some(record(2)))
        });
        if healed {
            converged_after = Some(round);
            break;
        }
    }
    assert!(
        converged_after.is_some(),
        "anti-entropy did not repair the divergent keys"
    );
    let ratio = ae_bytes as f64 / divergent_bytes as f64;
    println!(
        "anti-entropy: K={KEYS} D={DIVERGENT}: {ae_bytes} bytes moved for {divergent_bytes} divergent bytes \
         (ratio {ratio:.1}; all keys are {all_bytes} bytes), repaired after {} rounds",
        converged_after.unwrap_or(0)
    );
    assert!(ratio < 40.0, "ratio {ratio}");
    assert!(
        ae_bytes * 50 < all_bytes,
        "{ae_bytes} bytes is not small beside {all_bytes}"
    );
}

#[test]
fn read_repair_brings_a_stale_replica_up_to_date() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, put("k", "old"));
    c.settle();
    // The new value reaches only two replicas: every message to the third is lost.
    c.client(0, 2, put("k", "new"));
    let replicas = c.nodes[0].ring().preference_list(b"k", 3);
    let stale = replicas[2];
    c.in_flight.retain(|(_, to, _)| *to != stale);
    c.settle();
    let before = c.nodes[stale.0 as usize]
        .storage_mut()
        .get(b"k")
        .expect("get");
    assert!(before.is_some_and(|r| r.live_values() == vec![Bytes::from_static(b"old")]));
    c.client(
        1,
        3,
        ClientRequest::Get {
            key: Bytes::from_static(b"k"),
            consistency: Some(Consistency::All),
        },
    );
    c.settle();
    let after = c.nodes[stale.0 as usize]
        .storage_mut()
        .get(b"k")
        .expect("get");
    assert!(after.is_some_and(|r| r.live_values() == vec![Bytes::from_static(b"new")]));
    assert!(c.nodes[1].stats().read_repairs >= 1);
}

#[test]
fn a_full_tree_rebuild_finds_data_changed_behind_the_engine_and_nothing_else() {
    use crate::storage::Storage;
    let ring = three_node_ring(16);
    let record = |ts: u64| lww_record(ts, 10);
    let key = |i: usize| Bytes::from(format!("key{i:04}"));
    let mut storage = MemStorage::new();
    for i in 0..50 {
        storage.put(key(i), record(1)).expect("put");
    }
    storage.sync().expect("sync");
    let cluster = ClusterConfig {
        anti_entropy_interval_ms: 100,
        tree_rebuild_interval_ms: 1_000,
        tree_rebuild_keys_per_step: 7,
        ..ClusterConfig::default()
    };
    let config = NodeConfig {
        id: NodeId(0),
        cluster,
        rng_seed: 0,
    };
    let mut node = Node::new(config, ring, storage, boot()).expect("valid");
    // Bit rot stand-ins: one record changes and one vanishes without the node knowing.
    node.storage_mut().put(key(3), record(9)).expect("put");
    node.storage_mut().delete(&key(5)).expect("delete");
    let mut mismatch_events = 0;
    let mut request = 0;
    let mut step = |node: &mut Node<MemStorage>, tick: u64, write: bool| {
        let now = Now {
            monotonic: Instant::from_nanos(tick * 50_000_000),
            wall: WallMicros(1_000_000 + tick * 50_000),
        };
        if write {
            // Writes through the node while a pass runs must never count as a mismatch.
            request += 1;
            let k = if tick.is_multiple_of(2) {
                "key0001"
            } else {
                "key0049"
            };
            node.handle_client(now, RequestId(request), put(k, "new"));
        }
        node.handle_timeout(now);
        while let Some(output) = node.poll_output() {
            if let Output::Event(NodeEvent::TreeRebuildMismatch { .. }) = output {
                mismatch_events += 1;
            }
        }
    };
    let mut tick = 1;
    while node.tree_rebuild_stats().passes < 1 {
        step(&mut node, tick, false);
        tick += 1;
        assert!(tick < 10_000, "the first pass never finished");
    }
    let first = node.tree_rebuild_stats().clone();
    assert!(first.ranges_mismatched >= 1, "{first:?}");
    assert!(first.keys_scanned >= 49, "{first:?}");
    while node.tree_rebuild_stats().passes < 3 {
        step(&mut node, tick, true);
        tick += 1;
        assert!(tick < 20_000, "later passes never finished");
    }
    assert_eq!(
        node.tree_rebuild_stats().ranges_mismatched,
        first.ranges_mismatched,
        "writes through the node during a pass are not mismatches"
    );
    assert_eq!(mismatch_events, 1);
}

/// Nodes 0, 1, 2 in one datacenter, one rack each.
fn three_node_ring(vnodes: u32) -> Ring {
    let mut ring = Ring::new(vnodes);
    for i in 0..3 {
        let location = NodeLocation {
            datacenter: "dc".into(),
            rack: format!("r{i}"),
            weight: 1,
        };
        ring.add_node(NodeId(i), location).expect("fresh");
    }
    ring
}

/// A last-write-wins record at timestamp `ts` with a value of `len` bytes.
fn lww_record(ts: u64, len: usize) -> crate::version::Record {
    use crate::version::{LwwRecord, LwwVersion, Record};
    Record::Lww(LwwRecord {
        version: LwwVersion {
            timestamp_micros: ts,
            node: NodeId(0),
            nonce: 0,
        },
        value: Some(Bytes::from(vec![7u8; len])),
        expires_at_micros: None,
    })
}

#[test]
fn an_operator_repair_sweeps_every_range_even_with_periodic_anti_entropy_off() {
    use crate::storage::Storage;
    let ring = three_node_ring(16);
    let key = |i: usize| Bytes::from(format!("key{i:04}"));
    let mut storages = vec![MemStorage::new(); 3];
    for i in 0..220 {
        for (n, storage) in storages.iter_mut().enumerate() {
            // Node 0 missed the last twenty writes.
            if n > 0 || i < 200 {
                storage.put(key(i), lww_record(1, 10)).expect("put");
            }
        }
    }
    let cluster = ClusterConfig {
        anti_entropy_interval_ms: 0,
        anti_entropy_ranges_per_round: 4,
        ..ClusterConfig::default()
    };
    let mut nodes = nodes_over(storages, &cluster, &ring);
    let held = |node: &mut Node<MemStorage>| {
        (0..220)
            .filter(|&i| node.storage_mut().get(&key(i)).ok().flatten().is_some())
            .count()
    };
    run_millis(&mut nodes, 0, 500, |_| {});
    assert_eq!(
        held(&mut nodes[0]),
        200,
        "anti-entropy is off: nothing repaired"
    );
    let now = Now {
        monotonic: Instant::from_nanos(500 * 1_000_000 + 1),
        wall: WallMicros(1_500_000),
    };
    let rounds = nodes[0].start_repair(now);
    assert!(rounds >= 2, "a sweep of every range takes several rounds");
    run_millis(&mut nodes, 500, 1_000, |_| {});
    assert_eq!(nodes[0].repair_rounds_left(), 0);
    assert_eq!(
        held(&mut nodes[0]),
        220,
        "the repair sweep brought every key"
    );
}

#[test]
fn a_restart_with_the_wall_clock_set_back_never_stamps_below_earlier_writes() {
    use crate::version::Record;
    // Two nodes, n = 1: node 0 coordinates writes for a key only node 1 holds, so node 0's own
    // storage never sees the timestamps it hands out.
    let mut ring = Ring::new(16);
    for i in 0..2 {
        let location = NodeLocation {
            datacenter: "dc".into(),
            rack: format!("r{i}"),
            weight: 1,
        };
        ring.add_node(NodeId(i), location).expect("fresh");
    }
    let key = (0..1000)
        .map(|i| format!("key{i}"))
        .find(|k| ring.preference_list(k.as_bytes(), 1) == vec![NodeId(1)])
        .expect("node 1 owns some key");
    let cluster = ClusterConfig {
        n: 1,
        r: 1,
        w: 1,
        ..ClusterConfig::default()
    };
    let config = NodeConfig {
        id: NodeId(0),
        cluster,
        rng_seed: 3,
    };
    let write = |node: &mut Node<MemStorage>, wall_micros: u64, id: u64| -> u64 {
        let now = Now {
            monotonic: Instant::from_nanos(id * 1_000_000),
            wall: WallMicros(wall_micros),
        };
        let body = ClientRequest::Put {
            key: Bytes::from(key.clone()),
            value: Bytes::from_static(b"v"),
            context: None,
            consistency: None,
        };
        node.handle_client(now, RequestId(id), body);
        let mut stamp = None;
        while let Some(output) = node.poll_output() {
            match output {
                Output::Send {
                    message:
                        Message::Write {
                            record: Record::Lww(r),
                            ..
                        },
                    ..
                } => stamp = Some(r.version.timestamp_micros),
                Output::Persist { token } => {
                    node.storage_mut().sync().expect("sync");
                    node.handle_persisted(now, token);
                }
                _ => {}
            }
        }
        stamp.expect("the write went to node 1")
    };
    let mut node =
        Node::new(config.clone(), ring.clone(), MemStorage::new(), boot()).expect("valid");
    let before = write(&mut node, 50_000_000, 1);
    let mut storage = node.into_storage();
    storage.crash();
    // The wall clock went back 20 s while the node was down.
    let mut node = Node::new(config, ring, storage, boot()).expect("valid");
    let after = write(&mut node, 30_000_000, 2);
    assert!(
        after > before,
        "stamped {after} after the restart, below {before} from before it"
    );
}

/// Drives `nodes` millisecond by millisecond from `from_ms` to `to_ms`: timeouts, then every
/// message delivered at once (FIFO) and every persist completed at once; `seen` sees each message.
fn run_millis(
    nodes: &mut [Node<MemStorage>],
    from_ms: u64,
    to_ms: u64,
    mut seen: impl FnMut(&Message),
) {
    use crate::storage::Storage;
    for ms in from_ms..to_ms {
        let now = Now {
            monotonic: Instant::from_nanos(ms * 1_000_000 + 1),
            wall: WallMicros(1_000_000 + ms * 1000),
        };
        let mut queue: VecDeque<(usize, NodeId, Message)> = VecDeque::new();
        for i in 0..nodes.len() {
            nodes[i].handle_timeout(now);
            let mut active = Some(i);
            while let Some(j) = active.take() {
                while let Some(output) = nodes[j].poll_output() {
                    match output {
                        Output::Send { to, message } => queue.push_back((j, to, message)),
                        Output::Persist { token } => {
                            nodes[j].storage_mut().sync().expect("sync");
                            nodes[j].handle_persisted(now, token);
                        }
                        _ => {}
                    }
                }
                if let Some((from, to, message)) = queue.pop_front() {
                    seen(&message);
                    let k = to.0 as usize;
                    nodes[k].handle_message(now, NodeId(from as u32), message);
                    active = Some(k);
                }
            }
        }
    }
}

#[test]
fn anti_entropy_messages_of_large_values_stay_within_the_message_limit() {
    use crate::codec::{encode_value as encode, MESSAGE_BYTES_MAX};
    use crate::storage::Storage;
    let ring = three_node_ring(16);
    // Forty 1 MiB values (40 MiB in all) in one range, so one exchange covers them all; node 0
    // lacks them.
    let range_of = |k: &Bytes| ring.range_index_for_hash(Ring::key_hash(k));
    let first = Bytes::from("big0");
    let keys: Vec<Bytes> = (0..100_000)
        .map(|i| Bytes::from(format!("big{i}")))
        .filter(|k| range_of(k) == range_of(&first))
        .take(40)
        .collect();
    assert_eq!(keys.len(), 40);
    let key = |i: usize| keys[i].clone();
    let mut storages = vec![MemStorage::new(); 3];
    for i in 0..40 {
        for storage in storages.iter_mut().skip(1) {
            storage.put(key(i), lww_record(1, 1 << 20)).expect("put");
        }
    }
    let cluster = ClusterConfig {
        anti_entropy_interval_ms: 20,
        ..ClusterConfig::default()
    };
    let mut nodes = nodes_over(storages, &cluster, &ring);
    let (mut largest, mut record_messages) = (0, 0);
    run_millis(&mut nodes, 0, 2_000, |message| {
        if let Message::AeRecords { records, .. } = message {
            if !records.is_empty() {
                record_messages += 1;
                largest = largest.max(encode(message).len());
            }
        }
    });
    let held = (0..40)
        .filter(|&i| nodes[0].storage_mut().get(&key(i)).ok().flatten().is_some())
        .count();
    assert_eq!(held, 40, "every large value reached node 0");
    assert!(record_messages >= 10, "40 MiB needs many messages");
    assert!(
        largest > 0 && largest <= MESSAGE_BYTES_MAX / 2,
        "an anti-entropy message of {largest} bytes"
    );
}

/// One node per storage (node i over `storages[i]`, made durable first), all on `ring`.
fn nodes_over(
    storages: Vec<MemStorage>,
    cluster: &ClusterConfig,
    ring: &Ring,
) -> Vec<Node<MemStorage>> {
    use crate::storage::Storage;
    storages
        .into_iter()
        .enumerate()
        .map(|(i, mut storage)| {
            storage.sync().expect("sync");
            let config = NodeConfig {
                id: NodeId(i as u32),
                cluster: cluster.clone(),
                rng_seed: i as u64,
            };
            Node::new(config, ring.clone(), storage, boot()).expect("valid")
        })
        .collect()
}

// ------------------------------------------------------------- issue #11, items 2 to 5

/// Drains `node`, completing every persist request at once; returns what it sent.
fn drain_persisting(node: &mut Node<MemStorage>, now: Now) -> Vec<(NodeId, Message)> {
    let mut sent = Vec::new();
    while let Some(output) = node.poll_output() {
        match output {
            Output::Send { to, message } => sent.push((to, message)),
            Output::Persist { token } => {
                node.storage_mut().sync().expect("sync");
                node.handle_persisted(now, token);
            }
            Output::Reply { .. } | Output::Event(_) => {}
        }
    }
    sent
}

fn single_node(storage: MemStorage, cluster: ClusterConfig) -> Node<MemStorage> {
    let config = NodeConfig {
        id: NodeId(0),
        cluster,
        rng_seed: 0,
    };
    Node::new(config, three_node_ring(16), storage, boot()).expect("valid")
}

fn ops_sent(sent: &[(NodeId, Message)]) -> Vec<OperationId> {
    sent.iter()
        .filter_map(|(_, m)| match m {
            Message::Read { op, .. } | Message::Write { op, .. } => Some(*op),
            _ => None,
        })
        .collect()
}

#[test]
fn operation_ids_are_never_reused_by_a_restarted_process() {
    let now = Now {
        monotonic: Instant::from_nanos(1),
        wall: WallMicros(1_000_000),
    };
    let mut node = single_node(MemStorage::new(), ClusterConfig::default());
    drain_persisting(&mut node, now);
    node.handle_client(now, RequestId(1), get("k"));
    let first = ops_sent(&drain_persisting(&mut node, now));
    assert!(!first.is_empty());
    let mut restarted = single_node(node.into_storage(), ClusterConfig::default());
    drain_persisting(&mut restarted, now);
    restarted.handle_client(now, RequestId(1), get("k"));
    let second = ops_sent(&drain_persisting(&mut restarted, now));
    assert!(!second.is_empty());
    assert!(
        first.iter().all(|op| !second.contains(op)),
        "{first:?} reused by the next incarnation: {second:?}"
    );
    assert_eq!(first[0].incarnation() + 1, second[0].incarnation());
}

#[test]
fn no_operation_id_leaves_a_node_before_its_incarnation_is_durable() {
    let now = Now {
        monotonic: Instant::from_nanos(1),
        wall: WallMicros(1_000_000),
    };
    let mut node = single_node(MemStorage::new(), ClusterConfig::default());
    node.handle_client(now, RequestId(1), get("k"));
    let mut tokens = Vec::new();
    while let Some(output) = node.poll_output() {
        match output {
            Output::Persist { token } => tokens.push(token),
            other => panic!("{other:?} before the incarnation was durable"),
        }
    }
    // A crash now loses the bump: the next process reuses the number, which is safe only
    // because this one never used it.
    let mut storage = node.into_storage();
    storage.crash();
    let mut restarted = single_node(storage, ClusterConfig::default());
    restarted.handle_client(now, RequestId(2), get("k"));
    let mut sent_before = 0;
    let mut pending = Vec::new();
    while let Some(output) = restarted.poll_output() {
        match output {
            Output::Persist { token } => pending.push(token),
            Output::Send { .. } => sent_before += 1,
            _ => {}
        }
    }
    assert_eq!(sent_before, 0);
    restarted.storage_mut().sync().expect("sync");
    for token in pending {
        restarted.handle_persisted(now, token);
    }
    let sent = drain_persisting(&mut restarted, now);
    assert_eq!(
        ops_sent(&sent).len(),
        2,
        "the held read goes out once durable"
    );
    assert!(ops_sent(&sent).iter().all(|op| op.incarnation() == 1));
}

#[test]
fn a_reply_about_another_key_or_from_a_stranger_is_stale() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, put("a", "value-of-a"));
    c.client(0, 2, put("b", "value-of-b"));
    c.settle();
    let all = Some(Consistency::All);
    let read_a = ClientRequest::Get {
        key: Bytes::from_static(b"a"),
        consistency: all,
    };
    c.client(0, 3, read_a);
    let reads: Vec<(NodeId, OperationId)> = c
        .in_flight
        .iter()
        .filter_map(|(_, to, m)| match m {
            Message::Read { op, .. } => Some((*to, *op)),
            _ => None,
        })
        .collect();
    assert_eq!(reads.len(), 2);
    c.in_flight.clear();
    // Each replica "answers" with key b's record (a late reply to another operation), and a
    // node that is no replica answers too: none of it may count.
    let b_record = c.nodes[1].storage_mut().get(b"b").expect("get");
    let stale_before = c.nodes[0].stats().stale_replies;
    for &(replica, op) in &reads {
        let wrong_key = Message::ReadReply {
            op,
            key_digest: crate::id::key_digest(b"b"),
            record: Ok(b_record.clone()),
        };
        c.nodes[0].handle_message(c.now, replica, wrong_key);
        let stranger = Message::ReadReply {
            op,
            key_digest: crate::id::key_digest(b"a"),
            record: Ok(b_record.clone()),
        };
        c.nodes[0].handle_message(c.now, NodeId(9), stranger);
    }
    c.drain(0);
    assert_eq!(c.nodes[0].stats().stale_replies, stale_before + 4);
    assert!(c.reply(3).is_none(), "answered from another key's replies");
    // The real answers still complete the read, with a's value.
    for &(replica, op) in &reads {
        let record = c.nodes[replica.0 as usize]
            .storage_mut()
            .get(b"a")
            .expect("get");
        let reply = Message::ReadReply {
            op,
            key_digest: crate::id::key_digest(b"a"),
            record: Ok(record),
        };
        c.nodes[0].handle_message(c.now, replica, reply);
    }
    c.drain(0);
    match c.reply(3) {
        Some(ClientReply::Found { values, .. }) => {
            assert_eq!(values, &vec![Bytes::from_static(b"value-of-a")])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_write_reply_about_another_key_is_not_an_acknowledgement() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, put("a", "v"));
    let writes: Vec<(NodeId, OperationId)> = c
        .in_flight
        .iter()
        .filter_map(|(_, to, m)| match m {
            Message::Write { op, .. } => Some((*to, *op)),
            _ => None,
        })
        .collect();
    c.in_flight.clear();
    for &(replica, op) in &writes {
        let reply = Message::WriteReply {
            op,
            key_digest: crate::id::key_digest(b"other"),
            result: Ok(()),
        };
        c.nodes[0].handle_message(c.now, replica, reply);
    }
    c.drain(0);
    c.persist_all();
    assert!(
        c.reply(1).is_none(),
        "acknowledged by replies about another key"
    );
}

/// A fallback (node 0) keeping a hint for node 2, stored at monotonic `stored_ms` and wall
/// `wall_micros`; sloppy quorum with `hint_age_max_ms` = 3 s.
fn fallback_with_hint(stored_ms: u64, wall_micros: u64) -> (Node<MemStorage>, Bytes) {
    let cluster = ClusterConfig {
        sloppy_quorum: true,
        hint_age_max_ms: 3_000,
        hint_replay_interval_ms: 500,
        ..ClusterConfig::default()
    };
    let at = Now {
        monotonic: Instant::from_nanos(stored_ms * 1_000_000),
        wall: WallMicros(wall_micros),
    };
    let mut node = single_node(MemStorage::new(), cluster);
    drain_persisting(&mut node, at);
    let key = Bytes::from_static(b"k");
    let hinted = Message::HintedWrite {
        op: OperationId::new(7, 1),
        key: key.clone(),
        record: lww_record(wall_micros, 10),
        for_node: NodeId(2),
    };
    node.handle_message(at, NodeId(1), hinted);
    let sent = drain_persisting(&mut node, at);
    assert!(
        sent.iter()
            .any(|(to, m)| *to == NodeId(1)
                && matches!(m, Message::WriteReply { result: Ok(()), .. })),
        "{sent:?}"
    );
    assert_eq!(node.pending_hints().get(&NodeId(2)).map(|p| p.0), Some(1));
    (node, key)
}

fn at(ms: u64, wall_micros: u64) -> Now {
    Now {
        monotonic: Instant::from_nanos(ms * 1_000_000),
        wall: WallMicros(wall_micros),
    }
}

#[test]
fn an_aged_hint_is_counted_and_replayed_but_kept_until_its_owner_holds_it() {
    let (mut node, key) = fallback_with_hint(1_000, 1_000_000);
    // Long past hint_age_max_ms, with every replay lost: the hint stays.
    let mut replays = Vec::new();
    for step in 1..=20u64 {
        let now = at(1_000 + step * 500, 1_000_000 + step * 500_000);
        node.handle_timeout(now);
        replays.extend(
            drain_persisting(&mut node, now)
                .into_iter()
                .filter(|(to, m)| *to == NodeId(2) && matches!(m, Message::Write { .. })),
        );
    }
    assert_eq!(node.pending_hints().get(&NodeId(2)).map(|p| p.0), Some(1));
    assert_eq!(node.hint_stats().aged, 1, "counted once");
    assert_eq!(node.hint_stats().expired, 0);
    let Some((_, Message::Write { op, .. })) = replays.last().cloned() else {
        panic!("no replay sent");
    };
    let now = at(20_000, 20_000_000);
    // A reply from another node, or about another key, does not deliver it.
    let wrong_node = Message::WriteReply {
        op,
        key_digest: crate::id::key_digest(&key),
        result: Ok(()),
    };
    node.handle_message(now, NodeId(1), wrong_node);
    let wrong_key = Message::WriteReply {
        op,
        key_digest: crate::id::key_digest(b"other"),
        result: Ok(()),
    };
    node.handle_message(now, NodeId(2), wrong_key);
    drain_persisting(&mut node, now);
    assert_eq!(node.pending_hints().get(&NodeId(2)).map(|p| p.0), Some(1));
    let delivered = Message::WriteReply {
        op,
        key_digest: crate::id::key_digest(&key),
        result: Ok(()),
    };
    node.handle_message(now, NodeId(2), delivered);
    drain_persisting(&mut node, now);
    assert!(node.pending_hints().is_empty());
    assert_eq!(node.hint_stats().delivered, 1);
}

#[test]
fn a_hint_ages_on_the_monotonic_clock_not_by_a_wall_clock_step() {
    let wall = 1_000_000_000;
    let (mut node, _) = fallback_with_hint(1_000, wall);
    // The wall clock steps four hours forward; only one second passes on the monotonic clock.
    let four_hours_micros = 4 * 3_600 * 1_000_000;
    let now = at(2_000, wall + four_hours_micros);
    node.handle_timeout(now);
    drain_persisting(&mut node, now);
    assert_eq!(node.hint_stats().aged, 0, "a wall-clock step aged the hint");
    let later = at(4_500, wall + four_hours_micros);
    node.handle_timeout(later);
    drain_persisting(&mut node, later);
    assert_eq!(node.hint_stats().aged, 1);
    assert_eq!(node.pending_hints().get(&NodeId(2)).map(|p| p.0), Some(1));
}

/// The ring of `three_node_ring(16)` without node 2: node 2 left (decommissioned or removed).
fn ring_without_node_2() -> Ring {
    let mut ring = three_node_ring(16);
    ring.remove_node(NodeId(2)).expect("a member");
    ring
}

/// Replay rounds from `from_ms`, every 500 ms, `rounds` of them; returns what the node sent.
fn replay_rounds(node: &mut Node<MemStorage>, from_ms: u64, rounds: u64) -> Vec<(NodeId, Message)> {
    let mut sent = Vec::new();
    for step in 1..=rounds {
        let ms = from_ms + step * 500;
        let now = at(ms, 1_000_000 + ms * 1_000);
        node.handle_timeout(now);
        sent.extend(drain_persisting(node, now));
    }
    sent
}

// Swarm quarantine "sloppy-single-acknowledgement" (issue #11): with W = 1 a sloppy write can be
// acknowledged by one fallback's hint alone, so that hint is the write's only copy. When its owner
// left the ring the hint was deleted unsent ("anti-entropy fills the owner's ranges"), but
// anti-entropy only moves what replicas hold, never a hint: the acknowledged write was lost
// (swarm seeds 282, 512, 582 and 1149 of a sloppy W = 1 draw; the fault was a leave).

#[test]
fn a_hint_whose_owner_left_becomes_a_copy_here_when_this_node_now_replicates_the_key() {
    // n = 3 over the two members left: node 0 replicates every key.
    let (mut node, key) = fallback_with_hint(1_000, 1_000_000);
    node.update_ring(ring_without_node_2());
    drain_persisting(&mut node, at(1_000, 1_000_000));
    assert_eq!(
        node.storage_mut().get(&key).expect("readable"),
        None,
        "not yet a copy: only the hint holds it"
    );
    replay_rounds(&mut node, 1_000, 2);
    assert_eq!(
        node.storage_mut().get(&key).expect("readable"),
        Some(lww_record(1_000_000, 10)),
        "the hint's write is lost: no replica of the new ring holds it"
    );
    assert!(
        node.pending_hints().is_empty(),
        "{:?}",
        node.pending_hints()
    );
    assert_eq!(node.hint_stats().rehomed, 1);
    assert_eq!(node.hint_stats().expired, 0);
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: its phases read top to bottom"
)]
#[test]
fn a_hint_whose_owner_left_goes_to_a_current_replica_and_stays_until_it_holds_it() {
    let cluster = ClusterConfig {
        n: 1,
        w: 1,
        r: 1,
        sloppy_quorum: true,
        hint_replay_interval_ms: 500,
        ..ClusterConfig::default()
    };
    let new_ring = ring_without_node_2();
    // A key that node 2 owned alone and node 1 owns alone once node 2 has left.
    let key = (0..1_000)
        .map(|i| Bytes::from(format!("key{i}")))
        .find(|k| {
            three_node_ring(16).preference_list(k, 1) == [NodeId(2)]
                && new_ring.preference_list(k, 1) == [NodeId(1)]
        })
        .expect("some key moves from node 2 to node 1");
    let start = at(1_000, 1_000_000);
    let mut node = single_node(MemStorage::new(), cluster);
    drain_persisting(&mut node, start);
    let hinted = Message::HintedWrite {
        op: OperationId::new(7, 1),
        key: key.clone(),
        record: lww_record(1_000_000, 10),
        for_node: NodeId(2),
    };
    node.handle_message(start, NodeId(1), hinted);
    drain_persisting(&mut node, start);
    node.update_ring(new_ring);
    drain_persisting(&mut node, start);
    // Every replay is lost for a while: the hint stays, and goes to node 1, never to node 2.
    let sent = replay_rounds(&mut node, 1_000, 6);
    let replays: Vec<OperationId> = sent
        .iter()
        .filter_map(|(to, m)| match m {
            Message::Write { op, key: k, .. } if *k == key => {
                assert_eq!(*to, NodeId(1), "replayed to {to:?}, not the key's replica");
                Some(*op)
            }
            _ => None,
        })
        .collect();
    assert!(replays.len() >= 2, "{sent:?}");
    assert_eq!(node.pending_hints().get(&NodeId(2)).map(|p| p.0), Some(1));
    let op = *replays.last().expect("a replay");
    let now = at(5_000, 5_000_000);
    let reply = |result| Message::WriteReply {
        op,
        key_digest: crate::id::key_digest(&key),
        result,
    };
    // The departed owner's answer, or a refusal, does not deliver it.
    node.handle_message(now, NodeId(2), reply(Ok(())));
    drain_persisting(&mut node, now);
    assert_eq!(node.pending_hints().get(&NodeId(2)).map(|p| p.0), Some(1));
    node.handle_message(
        now,
        NodeId(1),
        reply(Err(crate::message::ReplicaError::Busy)),
    );
    drain_persisting(&mut node, now);
    assert_eq!(node.pending_hints().get(&NodeId(2)).map(|p| p.0), Some(1));
    // A later replay that node 1 acknowledges durably does.
    let sent = replay_rounds(&mut node, 5_000, 1);
    let Some(op) = sent.iter().find_map(|(to, m)| match m {
        Message::Write { op, .. } if *to == NodeId(1) => Some(*op),
        _ => None,
    }) else {
        panic!("no replay after a refusal: {sent:?}");
    };
    let delivered = Message::WriteReply {
        op,
        key_digest: crate::id::key_digest(&key),
        result: Ok(()),
    };
    node.handle_message(now, NodeId(1), delivered);
    drain_persisting(&mut node, now);
    assert!(
        node.pending_hints().is_empty(),
        "{:?}",
        node.pending_hints()
    );
    assert_eq!(node.hint_stats().rehomed, 1);
    assert_eq!(node.hint_stats().delivered, 1);
}

#[test]
fn a_new_hint_that_does_not_fit_is_refused_so_it_never_counts_toward_w() {
    let cluster = ClusterConfig {
        sloppy_quorum: true,
        hints_per_target_max: 1,
        ..ClusterConfig::default()
    };
    let now = at(1, 1_000_000);
    let mut node = single_node(MemStorage::new(), cluster);
    drain_persisting(&mut node, now);
    let mut answers = Vec::new();
    for (i, key) in [&b"k1"[..], &b"k2"[..]].into_iter().enumerate() {
        let hinted = Message::HintedWrite {
            op: OperationId::new(7, i as u32 + 1),
            key: Bytes::copy_from_slice(key),
            record: lww_record(5, 10),
            for_node: NodeId(2),
        };
        node.handle_message(now, NodeId(1), hinted);
        for (_, m) in drain_persisting(&mut node, now) {
            if let Message::WriteReply { result, .. } = m {
                answers.push(result);
            }
        }
    }
    assert_eq!(
        answers,
        vec![Ok(()), Err(crate::message::ReplicaError::Busy)]
    );
    assert_eq!(node.hint_stats().overflowed, 1);
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: its phases read top to bottom"
)]
#[test]
fn a_datacenter_level_read_never_hands_off_to_another_datacenter() {
    let mut ring = Ring::new(16);
    for i in 0..6u32 {
        let location = NodeLocation {
            datacenter: format!("dc{}", i % 2),
            rack: format!("r{}", i / 2),
            weight: 1,
        };
        ring.add_node(NodeId(i), location).expect("fresh");
    }
    let cluster = ClusterConfig {
        n: 6,
        r: 2,
        w: 2,
        consistency: Some(Consistency::LocalQuorum),
        sloppy_quorum: true,
        sloppy_after_ms: 100,
        request_timeout_ms: 1_000,
        ..ClusterConfig::default()
    };
    let start = at(1, 1_000_000);
    let mut nodes: Vec<Node<MemStorage>> = (0..6)
        .map(|i| {
            let config = NodeConfig {
                id: NodeId(i),
                cluster: cluster.clone(),
                rng_seed: u64::from(i),
            };
            let mut node =
                Node::new(config, ring.clone(), MemStorage::new(), start).expect("valid");
            drain_persisting(&mut node, start);
            node
        })
        .collect();
    nodes[0].handle_client(start, RequestId(1), get("k"));
    let reads = drain_persisting(&mut nodes[0], start);
    assert_eq!(reads.len(), 5, "{reads:?}");
    // Past the hand-off point, the other datacenter answers; the local replicas stay silent.
    let handoff = at(150, 1_150_000);
    nodes[0].handle_timeout(handoff);
    let mut replies = Vec::new();
    for (to, message) in drain_persisting(&mut nodes[0], handoff)
        .into_iter()
        .chain(reads)
    {
        if to.0 % 2 == 1 {
            let i = to.0 as usize;
            nodes[i].handle_message(handoff, NodeId(0), message);
            replies.extend(
                drain_persisting(&mut nodes[i], handoff)
                    .into_iter()
                    .map(|r| (to, r.1)),
            );
        }
    }
    let mut answered = false;
    for (from, reply) in replies {
        nodes[0].handle_message(handoff, from, reply);
        while let Some(output) = nodes[0].poll_output() {
            answered |= matches!(output, Output::Reply { .. });
        }
    }
    assert!(!answered, "answered without a local majority");
    let end = at(2_000, 3_000_000);
    nodes[0].handle_timeout(end);
    let mut last = None;
    while let Some(output) = nodes[0].poll_output() {
        if let Output::Reply { reply, .. } = output {
            last = Some(reply);
        }
    }
    assert!(
        matches!(last, Some(ClientReply::Unavailable { needed: 2, .. })),
        "{last:?}"
    );
}

/// Takes the messages `from` has in flight, in order.
fn take_sent_by(c: &mut Cluster, from: usize) -> Vec<(NodeId, Message)> {
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut c.in_flight)
        .into_iter()
        .partition(|(f, _, _)| f.0 as usize == from);
    c.in_flight = rest.into();
    mine.into_iter().map(|(_, to, m)| (to, m)).collect()
}

#[test]
fn an_unqueued_write_is_one_refusal_and_a_later_answer_from_that_replica_is_stale() {
    let mut c = Cluster::new(ConflictMode::Lww);
    let all = ClientRequest::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        context: None,
        consistency: Some(Consistency::All),
    };
    c.client(0, 1, all);
    let sent = take_sent_by(&mut c, 0);
    let (to, write) = sent
        .iter()
        .find(|(_, m)| matches!(m, Message::Write { .. }))
        .cloned()
        .expect("a write to another replica");
    // The driver could not queue it: the replica's Busy refusal puts `all` out of reach at
    // once, with no deadline, and the write may still land elsewhere (indeterminate).
    c.nodes[0].handle_send_failed(c.now, to, write.clone());
    c.drain(0);
    assert_eq!(
        c.reply(1),
        Some(&ClientReply::Indeterminate { acks: 0, needed: 3 })
    );
    assert_eq!(c.nodes[0].send_failure_stats().requests_refused, 1);
    // The same failure reported twice, then every copy delivered and answered anyway (a
    // duplicate that did get through): no second reply, no acknowledgement beside the refusal.
    c.nodes[0].handle_send_failed(c.now, to, write);
    c.drain(0);
    c.in_flight
        .extend(sent.into_iter().map(|(to, m)| (NodeId(0), to, m)));
    c.settle();
    let replies = c.replies.iter().filter(|(r, _)| r.0 == 1).count();
    assert_eq!(replies, 1, "one outcome per request: {:?}", c.replies);
}

#[test]
fn a_read_refused_only_for_back_pressure_is_rejected_busy_at_once() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, get("k"));
    for (to, read) in take_sent_by(&mut c, 0) {
        c.nodes[0].handle_send_failed(c.now, to, read);
        c.drain(0);
    }
    assert_eq!(
        c.reply(1),
        Some(&ClientReply::Rejected(crate::client::RequestError::Busy))
    );
}

#[test]
fn an_unqueued_reply_is_dropped_and_counted_and_the_deadline_answers() {
    let mut c = Cluster::new(ConflictMode::Lww);
    c.client(0, 1, put("k", "v"));
    c.deliver_all();
    // Each replica persists and answers, but its reply cannot be queued back to the coordinator.
    for i in 1..3 {
        for token in std::mem::take(&mut c.persists[i]) {
            c.nodes[i].storage_mut().sync().expect("sync");
            c.nodes[i].handle_persisted(c.now, token);
            c.drain(i);
        }
        let sent = take_sent_by(&mut c, i);
        assert_eq!(sent.len(), 1, "one acknowledgement: {sent:?}");
        for (to, reply) in sent {
            assert!(matches!(reply, Message::WriteReply { .. }), "{reply:?}");
            c.nodes[i].handle_send_failed(c.now, to, reply);
            c.drain(i);
        }
        assert!(c.in_flight.is_empty(), "a dropped reply is not resent");
        assert_eq!(c.nodes[i].send_failure_stats().replies_dropped, 1);
    }
    c.persist_all();
    assert!(c.reply(1).is_none(), "one durable copy is short of w = 2");
    let later = Now {
        monotonic: Instant::from_nanos(10_000_000_000),
        wall: c.now.wall,
    };
    c.nodes[0].handle_timeout(later);
    c.drain(0);
    assert_eq!(
        c.reply(1),
        Some(&ClientReply::Indeterminate { acks: 1, needed: 2 })
    );
}

/// Issue 13, item 4: a full scan at R = 2 returns every key acknowledged at W = 2 and not
/// deleted, exactly once and in token order, and no deleted key: through a coordinator whose own
/// copy missed half the writes (pages end where the sparsest truncated replica page ends), with
/// pages of 7 keys, and across a ring change in the middle (node 2 leaves; the cursor is a token,
/// so the walk goes on where it was).
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, step by step: its phases read top to bottom"
)]
#[test]
fn a_scan_returns_every_live_key_once_across_a_stale_replica_and_a_ring_change() {
    let mut c = Cluster::new(ConflictMode::Lww);
    let key = |i: u32| Bytes::from(format!("key{i}"));
    let write = |c: &mut Cluster, id: u64, body: ClientRequest, skip_node_2: bool| {
        c.client(0, id, body);
        for _ in 0..10 {
            if skip_node_2 {
                c.in_flight.retain(|(_, to, _)| to.0 != 2);
            }
            c.deliver_all();
            c.persist_all();
        }
        assert!(
            matches!(c.reply(id), Some(ClientReply::Written { .. })),
            "write {id}: {:?}",
            c.reply(id)
        );
    };
    let mut id = 0;
    for i in 0..60 {
        id += 1;
        let body = ClientRequest::Put {
            key: key(i),
            value: Bytes::from_static(b"v"),
            context: None,
            consistency: None,
        };
        write(&mut c, id, body, i < 40);
    }
    for i in (0..60).step_by(3) {
        id += 1;
        let body = ClientRequest::Delete {
            key: key(i),
            context: None,
            consistency: None,
        };
        write(&mut c, id, body, false);
    }
    let live: std::collections::BTreeSet<Bytes> = (0..60).filter(|i| i % 3 != 0).map(key).collect();
    let mut seen = Vec::new();
    let mut from = 0u64;
    let mut pages = 0;
    loop {
        id += 1;
        pages += 1;
        let body = ClientRequest::Scan {
            from,
            keys_max: 7,
            consistency: None,
        };
        // Node 2 coordinates until the ring change, then node 0.
        let at = if pages <= 3 { 2 } else { 0 };
        c.client(at, id, body);
        c.settle();
        let Some(ClientReply::ScanPage { keys, next, .. }) = c.reply(id).cloned() else {
            panic!("page {pages}: {:?}", c.reply(id));
        };
        seen.extend(keys);
        if pages == 3 {
            for node in &mut c.nodes {
                node.update_ring(ring_without_node_2());
            }
            c.settle();
        }
        match next {
            Some(next) => {
                assert!(next > from, "the cursor only grows");
                from = next;
            }
            None => break,
        }
    }
    assert!(pages > 4, "pages of 7 keys");
    let tokens: Vec<u64> = seen.iter().map(|k| Ring::key_hash(k)).collect();
    assert!(tokens.is_sorted(), "token order");
    assert_eq!(seen.len(), live.len(), "no key twice: {seen:?}");
    assert_eq!(
        seen.into_iter().collect::<std::collections::BTreeSet<_>>(),
        live
    );
}

/// `DBSIZE` counts live keys (tombstones excluded) once per range, not once per replica.
#[test]
fn the_key_count_excludes_tombstones_and_counts_each_range_once() {
    let mut c = Cluster::new(ConflictMode::Lww);
    for (id, k) in [(1, "a"), (2, "b"), (3, "c")] {
        c.client(0, id, put(k, "v"));
        c.settle();
    }
    let delete = ClientRequest::Delete {
        key: Bytes::from_static(b"b"),
        context: None,
        consistency: None,
    };
    c.client(1, 4, delete);
    c.settle();
    c.client(2, 5, ClientRequest::CountKeys);
    c.settle();
    assert_eq!(
        c.reply(5),
        Some(&ClientReply::KeyCount {
            live_keys: 2,
            answered: 3,
            members: 3
        })
    );
}

// ------------------------------------------------------- sloppy writes: copies and stand-ins

/// A ring of `count` nodes, one rack each, in one datacenter.
fn ring_of(count: u32) -> Ring {
    let mut ring = Ring::new(16);
    for i in 0..count {
        let location = NodeLocation {
            datacenter: "dc".into(),
            rack: format!("r{i}"),
            weight: 1,
        };
        ring.add_node(NodeId(i), location).expect("fresh");
    }
    ring
}

/// Sloppy-quorum nodes over `ring` (`n` replicas, `r` = `w` = `quorum`, hand-off after 100 ms of a
/// 1 s timeout), started at `start` with their incarnations durable.
fn sloppy_nodes(ring: &Ring, n: u8, quorum: u8, start: Now) -> Vec<Node<MemStorage>> {
    let cluster = ClusterConfig {
        n,
        r: quorum,
        w: quorum,
        sloppy_quorum: true,
        sloppy_after_ms: 100,
        request_timeout_ms: 1_000,
        ..ClusterConfig::default()
    };
    (0..ring.len() as u32)
        .map(|i| {
            let config = NodeConfig {
                id: NodeId(i),
                cluster: cluster.clone(),
                rng_seed: u64::from(i),
            };
            let mut node =
                Node::new(config, ring.clone(), MemStorage::new(), start).expect("valid");
            drain_persisting(&mut node, start);
            node
        })
        .collect()
}

/// The client replies `node` has ready.
fn replies_of(node: &mut Node<MemStorage>) -> Vec<ClientReply> {
    let mut replies = Vec::new();
    while let Some(output) = node.poll_output() {
        if let Output::Reply { reply, .. } = output {
            replies.push(reply);
        }
    }
    replies
}

/// Swarm seed 1409 (n = 1, w = 1, sloppy): the replica stays silent, its stand-in refuses the
/// hinted copy. The replica may still apply its own copy, so the write is not "no effect".
#[test]
fn a_stand_in_refusing_leaves_a_write_indeterminate_while_its_replica_may_apply_it() {
    let (ring, start) = (ring_of(3), at(1, 1_000_000));
    let mut nodes = sloppy_nodes(&ring, 1, 1, start);
    // The key's walk: its replica, then the fallback, then the coordinator (so the fallback is
    // another node, not the coordinator keeping the hint itself).
    let walk = ring.preference_list(b"k", 3);
    let (replica, c) = (walk[0], walk[2].0 as usize);
    nodes[c].handle_client(start, RequestId(1), put("k", "v"));
    let sent = drain_persisting(&mut nodes[c], start);
    assert!(
        sent.iter()
            .any(|(to, m)| *to == replica && matches!(m, Message::Write { .. })),
        "{sent:?}"
    );
    // The replica never answers; at the hand-off point a fallback gets a hinted copy.
    let handoff = at(150, 1_150_000);
    nodes[c].handle_timeout(handoff);
    let hinted: Vec<(NodeId, Message)> = drain_persisting(&mut nodes[c], handoff)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::HintedWrite { .. }))
        .collect();
    let [(fallback, hint)] = hinted.as_slice() else {
        panic!("one hinted copy: {hinted:?}");
    };
    // The fallback refuses it (the driver could not queue it: its `Busy` refusal).
    nodes[c].handle_send_failed(handoff, *fallback, hint.clone());
    let early = replies_of(&mut nodes[c]);
    assert!(
        early.is_empty(),
        "answered while a copy may apply: {early:?}"
    );
    let end = at(2_000, 3_000_000);
    nodes[c].handle_timeout(end);
    assert_eq!(
        replies_of(&mut nodes[c]),
        vec![ClientReply::Indeterminate { acks: 0, needed: 1 }]
    );
}

/// Hints-race seed 11: a coordinator that is a replica, its own fsync slow, one replica cut off
/// and a single fallback left. The fallback must stand in for the cut-off replica: the local copy
/// is staged here and is not lost in the network.
#[test]
fn a_sloppy_write_spends_its_fallback_on_a_cut_off_replica_not_on_its_own_slow_fsync() {
    let (ring, start) = (ring_of(4), at(1, 1_000_000));
    let mut nodes = sloppy_nodes(&ring, 3, 2, start);
    let replicas = ring.preference_list(b"k", 3);
    let coordinator = replicas[0];
    let c = coordinator.0 as usize;
    nodes[c].handle_client(start, RequestId(1), put("k", "v"));
    // The local copy's persist stays pending (a slow fsync); the writes to the others go out.
    let mut writes = Vec::new();
    while let Some(output) = nodes[c].poll_output() {
        if let Output::Send { to, message } = output {
            writes.push((to, message));
        }
    }
    assert_eq!(writes.len(), 2, "{writes:?}");
    let (reached, cut_off) = (replicas[1], replicas[2]);
    // The reached replica acknowledges; the cut-off one never gets its copy.
    let (_, write) = writes
        .into_iter()
        .find(|(to, _)| *to == reached)
        .expect("a write to the reached replica");
    let r = reached.0 as usize;
    nodes[r].handle_message(start, coordinator, write);
    for (to, reply) in drain_persisting(&mut nodes[r], start) {
        assert_eq!(to, coordinator);
        nodes[c].handle_message(start, reached, reply);
    }
    let handoff = at(150, 1_150_000);
    nodes[c].handle_timeout(handoff);
    let mut stand_ins = Vec::new();
    while let Some(output) = nodes[c].poll_output() {
        if let Output::Send {
            to,
            message: Message::HintedWrite { for_node, .. },
        } = output
        {
            stand_ins.push((to, for_node));
        }
    }
    assert!(
        stand_ins.iter().any(|&(_, for_node)| for_node == cut_off),
        "no stand-in for the cut-off replica: {stand_ins:?}"
    );
    assert!(
        stand_ins
            .iter()
            .all(|&(_, for_node)| for_node != coordinator),
        "a stand-in for this node's own staged copy: {stand_ins:?}"
    );
}

/// A key whose one replica (n = 1) on `three_node_ring(16)` is `owner`.
fn key_owned_by(owner: u32) -> &'static str {
    let ring = three_node_ring(16);
    ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"]
        .into_iter()
        .find(|key| ring.preference_list(key.as_bytes(), 1) == [NodeId(owner)])
        .expect("one of a dozen keys lands on each node")
}

/// A read only this node replicates (n = 1) is answered within the input, without being
/// tracked, with the replies the tracked path gives; it still takes an operation id, so the
/// ids of the round trips after it (and every seed's messages) are unchanged.
#[test]
fn a_read_only_this_node_replicates_is_answered_at_once_and_still_takes_an_operation_id() {
    let now = Now {
        monotonic: Instant::from_nanos(1),
        wall: WallMicros(1_000_000),
    };
    let one = ClusterConfig {
        n: 1,
        r: 1,
        w: 1,
        ..ClusterConfig::default()
    };
    let (here, there) = (key_owned_by(0), key_owned_by(1));
    let remote_read_op = |local_reads: usize| {
        let mut node = single_node(MemStorage::new(), one.clone());
        drain_persisting(&mut node, now);
        for i in 0..local_reads {
            node.handle_client(now, RequestId(i as u64), get(here));
            assert_eq!(node.operations_in_flight(), 0, "answered within the input");
            let replies = replies_of(&mut node);
            assert!(
                matches!(replies.as_slice(), [ClientReply::NotFound { acks: 1, .. }]),
                "{replies:?}"
            );
        }
        node.handle_client(now, RequestId(99), get(there));
        ops_sent(&drain_persisting(&mut node, now))[0]
    };
    assert_eq!(remote_read_op(2).0, remote_read_op(0).0 + 2);

    let mut node = single_node(MemStorage::new(), one);
    drain_persisting(&mut node, now);
    node.handle_client(now, RequestId(1), put(here, "v"));
    drain_persisting(&mut node, now);
    node.handle_client(now, RequestId(2), get(here));
    let replies = replies_of(&mut node);
    let [ClientReply::Found {
        values, acks: 1, ..
    }] = replies.as_slice()
    else {
        panic!("{replies:?}");
    };
    assert_eq!(values.as_slice(), [Bytes::from_static(b"v")]);
    // A write staged but never durable after a failed sync: the one replica refuses to serve
    // it, so the read fails as unavailable (0 of 1), as the tracked path answers.
    node.handle_client(now, RequestId(3), put(here, "w"));
    let mut token = None;
    while let Some(output) = node.poll_output() {
        if let Output::Persist { token: t } = output {
            token = Some(t);
        }
    }
    node.storage_mut().inject_sync_failure();
    assert!(node.storage_mut().sync().is_err());
    node.handle_persist_failed(now, token.expect("a persist request"), "disk".into());
    let _ = replies_of(&mut node);
    node.handle_client(now, RequestId(4), get(here));
    let replies = replies_of(&mut node);
    assert!(
        matches!(
            replies.as_slice(),
            [ClientReply::Unavailable { acks: 0, needed: 1 }]
        ),
        "{replies:?}"
    );
    node.check_invariants();
}
