//! `ringkv-client` against three real `ringkv-node` processes: every node's `KV.RING` comes to
//! name every node's client address (gossiped), the client spreads keys over their replicas,
//! and its requests keep succeeding when a node (the one it was seeded with) is killed.

mod common;

use common::*;
use ringkv_client::{Client, ClientConfig};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "9a1c2b9a7e6d5c4b3a2918f7e6d5c4b3\n";

fn node_args(dir: &Path, id: usize, peer_ports: &[u16]) -> Vec<String> {
    member_args(dir, id, peer_ports, "off")
}

#[test]
fn the_client_routes_to_replicas_and_fails_over_when_a_node_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    std::fs::write(
        dir.path().join("base.toml"),
        "cluster_name = \"test\"\n[replication]\nn = 3\nr = 2\nw = 2\n",
    )
    .expect("config");
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<NodeProcess> = (1..=3)
        .map(|id| {
            NodeProcess::start(
                dir.path(),
                &node_args(dir.path(), id, &peer_ports),
                &format!("node{id}"),
            )
        })
        .collect();
    for node in &mut nodes {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    let addresses: BTreeSet<String> = nodes.iter().map(|n| n.client_addr.clone()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Gossip brings every node's client address to every node.
    for node in &nodes {
        poll_until(
            "KV.RING names every node's client address",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                let mut config = ClientConfig::new([node.client_addr.clone()]);
                config.refresh_interval_ms = 0;
                let client = runtime
                    .block_on(Client::connect(config))
                    .map_err(|e| e.to_string())?;
                let named: BTreeSet<String> = client.ring().addresses().into_values().collect();
                if named == addresses {
                    Ok(())
                } else {
                    Err(format!("{} names {named:?}", node.client_addr))
                }
            },
        );
    }

    let seed = nodes[0].client_addr.clone();
    let mut config = ClientConfig::new([seed.clone()]);
    config.refresh_interval_ms = 200;
    let client = runtime.block_on(Client::connect(config)).expect("connect");
    let keys: Vec<String> = (0..300).map(|i| format!("route{i}")).collect();
    let mut primaries = BTreeSet::new();
    for key in &keys {
        let candidates = client.candidates(key.as_bytes());
        let replicas: BTreeSet<String> = candidates.iter().take(3).cloned().collect();
        assert_eq!(replicas, addresses, "{key}: every node replicates at n = 3");
        primaries.insert(candidates[0].clone());
    }
    assert_eq!(
        primaries, addresses,
        "each node is the first replica of some keys"
    );

    runtime.block_on(async {
        for key in &keys {
            client.set(key.as_bytes(), b"one").await.expect("set");
        }
        for key in &keys {
            assert_eq!(
                client.get(key.as_bytes()).await.expect("get"),
                Some(b"one".to_vec())
            );
        }
    });
    assert_eq!(client.stats().failovers, 0, "nothing failed yet");

    // Kill the seed node; with n = 3 and w = 2 the two others acknowledge every write, and the
    // client goes to them for the keys whose first replica was the dead node.
    let killed = nodes.remove(0);
    killed.kill();
    runtime.block_on(async {
        for key in &keys {
            client
                .set(key.as_bytes(), b"two")
                .await
                .unwrap_or_else(|e| panic!("set {key} with a node down: {e}"));
        }
        for key in &keys {
            assert_eq!(
                client.get(key.as_bytes()).await.expect("get"),
                Some(b"two".to_vec()),
                "{key}"
            );
        }
        // The ring can still be fetched with the seed gone (from the nodes it named).
        client
            .refresh_ring()
            .await
            .expect("refresh without the seed");
    });
    assert!(
        client.stats().failovers > 0,
        "some keys had the dead node first: {:?}",
        client.stats()
    );
    drop(client);
    drop(runtime);
    for node in nodes {
        assert_eq!(node.terminate().code(), Some(0));
    }
}
