//! The node's data epoch (core `node::data_epoch`) is kept in the store's reserved meta: on this
//! engine it must survive a crash, flushes and compactions, so that a restarted node keeps its
//! vector-clock actor, while an empty disk gives a new one (issue #11, a replaced machine).

use bytes::Bytes;
use ringkv_core::version::{LwwRecord, LwwVersion};
use ringkv_core::{
    ClusterConfig, ConflictMode, Node, NodeConfig, NodeId, NodeLocation, Output, Record, Ring,
    Storage,
};
use ringkv_core::{Instant, Now, WallMicros};
use ringkv_lsm::fs::{CrashMode, SimFs};
use ringkv_lsm::maintenance::MaintenanceStep;
use ringkv_lsm::{Lsm, LsmConfig, LsmStorage};

type Engine = LsmStorage<SimFs>;

fn now() -> Now {
    Now {
        monotonic: Instant::from_nanos(1),
        wall: WallMicros(1_000_000),
    }
}

/// Starts node 0 in vector-clock mode over `storage` as process `process`, completing its
/// start-up persists.
fn start(storage: Engine, process: u64) -> Node<Engine> {
    let mut ring = Ring::new(8);
    for i in 0..3 {
        let location = NodeLocation {
            datacenter: "dc".into(),
            rack: format!("r{i}"),
            weight: 1,
        };
        ring.add_node(NodeId(i), location).expect("fresh");
    }
    let config = NodeConfig {
        id: NodeId(0),
        cluster: ClusterConfig {
            conflict: ConflictMode::VectorClock,
            ..ClusterConfig::default()
        },
        rng_seed: process,
    };
    let mut node = Node::new(config, ring, storage, now()).expect("valid");
    // Core's one drain loop; each completed persist may produce more output.
    loop {
        let mut outputs: Vec<Output> = Vec::new();
        ringkv_core::drive::drain(&mut node, &mut outputs);
        let tokens: Vec<_> = outputs
            .into_iter()
            .filter_map(|output| match output {
                Output::Persist { token } => Some(token),
                _ => None,
            })
            .collect();
        if tokens.is_empty() {
            return node;
        }
        for token in tokens {
            node.storage_mut().sync().expect("sync");
            node.handle_persisted(now(), token);
        }
    }
}

fn crash_and_reopen(node: Node<Engine>) -> Engine {
    let mut fs = node.into_storage().into_inner().into_fs();
    fs.crash(CrashMode::LoseUnsynced);
    LsmStorage::new(Lsm::open(fs, LsmConfig::tiny_for_tests()).expect("reopen"))
}

fn fresh_engine(seed: u64) -> Engine {
    LsmStorage::new(Lsm::open(SimFs::seeded(seed), LsmConfig::tiny_for_tests()).expect("open"))
}

#[test]
fn the_data_epoch_survives_crashes_and_compaction_and_a_new_disk_gets_a_new_one() {
    let node = start(fresh_engine(1), 1);
    let actor = node.actor();
    assert_eq!(actor.node, NodeId(0));
    assert_ne!(actor.epoch.0, 0, "an epoch is drawn on an empty store");

    // A restart on the same disk keeps the actor.
    let mut node = start(crash_and_reopen(node), 2);
    assert_eq!(node.actor(), actor);

    // Enough other records to flush the memtable and compact several times over (writes do no
    // maintenance: a driver runs the scheduler's steps, as here after each sync).
    for i in 0..400u32 {
        let record = Record::Lww(LwwRecord {
            version: LwwVersion {
                timestamp_micros: u64::from(i) + 1,
                node: NodeId(0),
                nonce: 0,
            },
            value: Some(Bytes::from(vec![b'x'; 64])),
            expires_at_micros: None,
        });
        node.storage_mut()
            .put(Bytes::from(format!("key{:03}", i % 97)), record)
            .expect("put");
        if i % 50 == 0 {
            node.storage_mut().sync().expect("sync");
            let step = MaintenanceStep {
                compaction_budget_bytes: 1 << 20,
                collect_value_log: true,
            };
            node.storage_mut().maintain(step, 0).expect("maintain");
        }
    }
    node.storage_mut().sync().expect("sync");
    assert!(
        node.storage_mut().lsm_mut().stats().compactions >= 2,
        "compacted several times"
    );
    let node = start(crash_and_reopen(node), 3);
    assert_eq!(node.actor(), actor, "kept through flushes and compactions");

    // A replaced disk: same node, empty engine.
    let replaced = start(fresh_engine(2), 4);
    assert_eq!(replaced.actor().node, NodeId(0));
    assert_ne!(replaced.actor(), actor);
}
