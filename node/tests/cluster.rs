//! Three real `ringkv-node` processes on loopback: replication across processes, a node killed
//! and restarted, bad input on the peer port, a peer with the wrong secret, and
//! `ringkv local-cluster` starting and stopping a cluster.

mod common;

use common::*;
use ringkv_core::NodeId;
use ringkv_node::peer::frame::encode_frame;
use ringkv_node::peer::handshake::{self, HandshakeError, PeerAuth};
use ringkv_node::resp::Reply;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

const SECRET: &str = "4f1c2b9a7e6d5c4b3a2918f7e6d5c4b3\n";

struct ClusterLayout {
    peer_ports: Vec<u16>,
}

impl ClusterLayout {
    fn new(nodes: usize) -> Self {
        ClusterLayout {
            peer_ports: (0..nodes).map(|_| free_port()).collect(),
        }
    }

    fn node_args(&self, dir: &Path, id: usize) -> Vec<String> {
        let mut all = args(&[
            "--node-id",
            &id.to_string(),
            "--client-listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--peer-listen",
            &format!("127.0.0.1:{}", self.peer_ports[id - 1]),
            "--cluster-secret-file",
            "secret",
            "--data-dir",
            &format!("data{id}"),
            "--config",
            dir.join("base.toml").to_str().expect("utf8 path"),
        ]);
        for (j, port) in self.peer_ports.iter().enumerate() {
            if j + 1 != id {
                all.push("--peer".into());
                all.push(format!("{}=127.0.0.1:{port}", j + 1));
            }
        }
        all
    }

    fn start(&self, dir: &Path, id: usize) -> NodeProcess {
        NodeProcess::start(dir, &self.node_args(dir, id), &format!("node{id}"))
    }
}

fn prepare(dir: &Path) {
    std::fs::write(dir.join("secret"), SECRET).expect("secret");
    // The file holds what the flags do not: the replication defaults, spelled out.
    std::fs::write(
        dir.join("base.toml"),
        "cluster_name = \"test\"\n[replication]\nn = 3\nr = 2\nw = 2\n",
    )
    .expect("config");
}

fn wait_for_mesh(nodes: &mut [NodeProcess]) {
    for node in nodes.iter_mut() {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
}

#[test]
fn three_processes_replicate_and_survive_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path());
    let layout = ClusterLayout::new(3);
    let mut nodes: Vec<NodeProcess> = (1..=3).map(|id| layout.start(dir.path(), id)).collect();
    wait_for_mesh(&mut nodes);

    let mut first = nodes[0].client();
    let mut second = nodes[1].client();
    for i in 0..300 {
        let reply = first
            .command(&["SET", &format!("key{i}"), &format!("one{i}")])
            .expect("set");
        assert_eq!(reply, ok(), "write {i} through node 1");
    }
    for i in 0..300 {
        let reply = second.command(&["GET", &format!("key{i}")]).expect("get");
        assert_eq!(reply, bulk(&format!("one{i}")), "read {i} through node 2");
    }
    let mut third = nodes[2].client();
    let all = third
        .command(&["KV.GET", "key7", "LEVEL", "all"])
        .expect("kv.get");
    assert_eq!(field(&all, "acks"), Reply::Integer(3));

    // Kill node 3; with n = 3 and w = 2 the two others still acknowledge every write.
    let killed = nodes.pop().expect("node 3");
    killed.kill();
    for i in 0..300 {
        let reply = first
            .command(&["SET", &format!("key{i}"), &format!("two{i}")])
            .expect("set");
        assert_eq!(reply, ok(), "write {i} with node 3 down");
    }
    let mut restarted = layout.start(dir.path(), 3);
    // Node 3 reaching its peers wakes their reconnects to it (no backoff wait); until both
    // directions are up a read may still come back short of R, which the loop below retries
    // (each attempt waits for the node's own request deadline, never for a test sleep).
    restarted.wait_for_line(ringkv_node::server::PEERS_REACHED);
    let mut third = restarted.client();
    for i in 0..300 {
        // The other replicas answer too; the merge returns the newest acknowledged value even
        // where node 3 missed the second round of writes.
        let mut attempts = 0;
        let reply = loop {
            attempts += 1;
            let reply = third
                .command(&["KV.GET", &format!("key{i}"), "LEVEL", "quorum"])
                .expect("kv.get");
            if matches!(reply, Reply::Error(_)) && attempts < 30 {
                continue;
            }
            break reply;
        };
        assert_eq!(
            field(&reply, "values"),
            Reply::Array(vec![bulk(&format!("two{i}"))]),
            "key{i} after restart"
        );
    }
    for node in nodes.into_iter().chain([restarted]) {
        assert_eq!(node.terminate().code(), Some(0));
    }
}

#[test]
fn bad_peers_are_refused_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path());
    let layout = ClusterLayout::new(2);
    std::fs::write(
        dir.path().join("base.toml"),
        "cluster_name = \"test\"\n[replication]\nn = 2\nr = 1\nw = 2\n",
    )
    .expect("config");
    let mut nodes: Vec<NodeProcess> = (1..=2).map(|id| layout.start(dir.path(), id)).collect();
    wait_for_mesh(&mut nodes);
    let peer_addr = format!("127.0.0.1:{}", layout.peer_ports[0]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let attempt = |auth: PeerAuth, expected: u32| {
        runtime.block_on(async {
            let mut stream = tokio::net::TcpStream::connect(&peer_addr)
                .await
                .expect("connect");
            handshake::dial(&mut stream, &auth, NodeId(expected)).await
        })
    };
    let members = [NodeId(1), NodeId(2)].into_iter().collect();
    let good_secret = SECRET.trim().as_bytes().to_vec();
    // The wrong secret: the node's challenge does not verify, and it refuses us.
    let wrong = PeerAuth {
        node_id: NodeId(2),
        cluster_name: "test".into(),
        secret: b"not the cluster secret at all!!!".to_vec(),
        members: std::collections::BTreeSet::clone(&members),
    };
    assert!(matches!(attempt(wrong, 1), Err(HandshakeError::BadProof)));
    // Another cluster's name, an unknown id, the wrong node: all refused.
    let other_cluster = PeerAuth {
        node_id: NodeId(2),
        cluster_name: "other".into(),
        secret: good_secret.clone(),
        members: std::collections::BTreeSet::clone(&members),
    };
    assert!(attempt(other_cluster, 1).is_err());
    let stranger = PeerAuth {
        node_id: NodeId(9),
        cluster_name: "test".into(),
        secret: good_secret.clone(),
        members: std::collections::BTreeSet::clone(&members),
    };
    assert!(attempt(stranger, 1).is_err());

    // Random bytes, truncated frames and oversized or corrupt frames on the peer port.
    for seed in 0..10u8 {
        let mut raw = std::net::TcpStream::connect(&peer_addr).expect("connect");
        let bytes: Vec<u8> = (0..300u32)
            .map(|i| (i as u8).wrapping_mul(seed | 1) ^ seed)
            .collect();
        let _ = raw.write_all(&bytes);
    }
    let mut frame = Vec::new();
    encode_frame(b"RKVH\x01\x00", &mut frame);
    let mut raw = std::net::TcpStream::connect(&peer_addr).expect("connect");
    let _ = raw.write_all(&frame[..frame.len() - 2]);
    drop(raw);
    let mut raw = std::net::TcpStream::connect(&peer_addr).expect("connect");
    let _ = raw.write_all(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
    drop(raw);
    // A peer that authenticates properly but then sends garbage frames: only it is cut off.
    let impostor_garbage = runtime.block_on(async {
        let auth = PeerAuth {
            node_id: NodeId(2),
            cluster_name: "test".into(),
            secret: good_secret.clone(),
            members: std::collections::BTreeSet::clone(&members),
        };
        let mut stream = tokio::net::TcpStream::connect(&peer_addr)
            .await
            .expect("connect");
        handshake::dial(&mut stream, &auth, NodeId(1)).await?;
        let mut bad = Vec::new();
        encode_frame(&[0xee; 40], &mut bad);
        tokio::io::AsyncWriteExt::write_all(&mut stream, &bad)
            .await
            .map_err(|e| HandshakeError::Frame(ringkv_node::peer::frame::FrameError::Io(e)))?;
        Ok::<(), HandshakeError>(())
    });
    assert!(impostor_garbage.is_ok(), "{impostor_garbage:?}");

    // The cluster still replicates (w = 2 needs both nodes) and serves clients.
    let mut c = nodes[0].client();
    assert_eq!(c.command(&["SET", "after", "attack"]).expect("set"), ok());
    let mut c2 = nodes[1].client();
    assert_eq!(c2.command(&["GET", "after"]).expect("get"), bulk("attack"));
    let stderr = nodes[0].stderr();
    assert!(
        stderr.contains("peer connection refused"),
        "refusals are logged"
    );
    assert!(
        stderr.contains("connection closed"),
        "bad frames are logged"
    );
}

#[test]
fn local_cluster_starts_and_stops_three_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["local-cluster", "--nodes", "3", "--base-port", "0", "--dir"])
        .arg(dir.path().join("cluster"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ringkv");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = loop {
        let line = lines
            .next()
            .expect("local-cluster printed its ready line")
            .expect("utf8");
        if line.contains("ready; clients:") {
            break line;
        }
    };
    let addresses: Vec<String> = ready
        .split("clients:")
        .nth(1)
        .expect("addresses")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(addresses.len(), 3);
    let mut a =
        ringkv_node::resp_client::RespClient::connect(&addresses[0], LINE_WAIT).expect("connect");
    assert_eq!(a.command(&["SET", "shared", "value"]).expect("set"), ok());
    let mut c =
        ringkv_node::resp_client::RespClient::connect(&addresses[2], LINE_WAIT).expect("connect");
    assert_eq!(c.command(&["GET", "shared"]).expect("get"), bulk("value"));

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "local-cluster exits 0; output: {rest:?}");
    assert_eq!(
        rest.iter()
            .filter(|l| l.contains("stopped cleanly"))
            .count(),
        3,
        "{rest:?}"
    );
}

fn installed(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn redis_cli_and_redis_benchmark_run_against_three_nodes() {
    if !installed("redis-cli") || !installed("redis-benchmark") {
        eprintln!("redis-tools not installed (apt-get install redis-tools): test skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path());
    let layout = ClusterLayout::new(3);
    let mut nodes: Vec<NodeProcess> = (1..=3).map(|id| layout.start(dir.path(), id)).collect();
    wait_for_mesh(&mut nodes);
    let port = |node: &NodeProcess| {
        node.client_addr
            .rsplit(':')
            .next()
            .expect("port")
            .to_string()
    };
    let cli = |node: &NodeProcess, command: &[&str]| {
        let output = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port(node)])
            .args(command)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(cli(&nodes[0], &["PING"]), "PONG");
    assert_eq!(cli(&nodes[0], &["SET", "tool", "works"]), "OK");
    assert_eq!(cli(&nodes[1], &["GET", "tool"]), "works");
    assert_eq!(cli(&nodes[2], &["DEL", "tool"]), "1");
    assert_eq!(cli(&nodes[0], &["GET", "tool"]), "");

    let output = std::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port(&nodes[1])])
        .args([
            "-t", "set,get", "-n", "2000", "-c", "10", "-r", "1000", "-q",
        ])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for test in ["SET: ", "GET: "] {
        assert!(text.contains(test), "redis-benchmark ran {test}: {text}");
    }
    assert!(!text.contains("ERR"), "{text}");
}

#[test]
fn sigkill_during_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    prepare(dir.path());
    let layout = ClusterLayout::new(3);
    let mut nodes: Vec<Option<NodeProcess>> = (1..=3)
        .map(|id| Some(layout.start(dir.path(), id)))
        .collect();
    for node in nodes.iter_mut().flatten() {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    const KEYS: usize = 2000;
    let coordinator = nodes[0].as_ref().expect("node 1").client_addr.clone();
    let (progress_tx, progress_rx) = std::sync::mpsc::channel::<usize>();
    let writer = std::thread::spawn(move || {
        let mut client = ringkv_node::resp_client::RespClient::connect(&coordinator, LINE_WAIT)
            .expect("connect");
        let mut acknowledged = std::collections::BTreeMap::new();
        let mut indeterminate = 0;
        for i in 0..KEYS {
            let key = format!("load{}", i % 500);
            let value = format!("v{i}");
            match client.command(&["SET", &key, &value]).expect("set") {
                Reply::Simple(ok) if ok == "OK" => {
                    acknowledged.insert(key, value);
                }
                Reply::Error(e) if e.starts_with("INDETERMINATE") => {
                    // It may or may not take effect: a later acknowledged write supersedes it,
                    // and until then this key is not checked.
                    acknowledged.remove(&key);
                    indeterminate += 1;
                }
                other => panic!("write {i}: {other:?}"),
            }
            let _ = progress_tx.send(i + 1);
        }
        (acknowledged, indeterminate)
    });
    // Kill node 3 after 300 acknowledged writes, restart it at 700; node 2 at 1100 and 1500.
    let plan = [
        (300, 2, false),
        (700, 2, true),
        (1100, 1, false),
        (1500, 1, true),
    ];
    let mut step = 0;
    while let Ok(done) = progress_rx.recv() {
        while step < plan.len() && done >= plan[step].0 {
            let (_, index, restart) = plan[step];
            if restart {
                nodes[index] = Some(layout.start(dir.path(), index + 1));
            } else if let Some(node) = nodes[index].take() {
                node.kill();
            }
            step += 1;
        }
    }
    let (acknowledged, indeterminate) = writer.join().expect("writer");
    assert!(
        acknowledged.len() > 400,
        "most writes are acknowledged ({indeterminate} were not)"
    );
    for node in nodes.iter_mut().flatten().skip(1) {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    let mut reader = nodes[1].as_ref().expect("node 2").client();
    for (key, value) in &acknowledged {
        let mut attempts = 0;
        let reply = loop {
            attempts += 1;
            let reply = reader
                .command(&["KV.GET", key, "LEVEL", "all"])
                .expect("kv.get");
            if matches!(reply, Reply::Error(_)) && attempts < 30 {
                continue;
            }
            break reply;
        };
        assert_eq!(
            field(&reply, "values"),
            Reply::Array(vec![bulk(value)]),
            "{key} lost its acknowledged value"
        );
    }
}
