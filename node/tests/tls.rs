//! TLS on the client port and on peer links (issue #14 item 3), with real processes: a 3-node
//! cluster started by `ringkv local-cluster --tls` (a throwaway CA and node certificates),
//! served to `redis-cli --tls`, refusing a plaintext client and a peer whose certificate the CA
//! did not sign while staying healthy; and nodes refusing to start on bad certificate files.

mod common;

use common::{args, metric, NodeProcess, LINE_WAIT};
use ringkv_node::clock::Clock;
use ringkv_node::resp::Reply;
use ringkv_node::resp_client::RespClient;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// `ringkv local-cluster --tls`, stopped (SIGTERM, then reaped) on drop.
struct TlsCluster {
    child: Child,
    dir: PathBuf,
    /// Client addresses, node 1 first.
    clients: Vec<String>,
}

impl TlsCluster {
    fn start(dir: &Path) -> TlsCluster {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["local-cluster", "--tls", "--nodes", "3", "--base-port", "0"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringkv local-cluster");
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
        // Keep draining its output so the cluster never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        let clients = ready
            .split("clients:")
            .nth(1)
            .expect("addresses")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        TlsCluster {
            child,
            dir: dir.to_path_buf(),
            clients,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("tls").join("ca.pem")
    }

    /// A `key = "value"` of node `id`'s configuration file.
    fn config_value(&self, id: usize, key: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("node{id}.toml"))).expect("node config");
        text.lines()
            .find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
            .unwrap_or_else(|| panic!("no {key} in node{id}.toml"))
    }

    fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// A TLS connection through our own client, trusting the cluster's CA.
    fn tls_client(&self, node: usize) -> RespClient {
        let config = ringkv_node::tls::client_config(&self.ca_file(), None).expect("config");
        RespClient::connect_tls(&self.clients[node], LINE_WAIT, Arc::new(config))
            .expect("TLS connect")
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

/// Polls until `done` holds; panics after [`LINE_WAIT`] (a hang guard, not a timing assertion).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Clock::stopwatch();
    while !done() {
        assert!(start.elapsed() < LINE_WAIT, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20)); // polling pace only
    }
}

/// `redis-cli --tls --cacert CA -h HOST -p PORT ARGS...`: its stdout, trimmed.
fn redis_cli(ca: &Path, addr: &str, tls: bool, parts: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut command = Command::new("redis-cli");
    if tls {
        command.arg("--tls").arg("--cacert").arg(ca);
    }
    let output = command
        .args(["-h", host, "-p", port])
        .args(parts)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn redis_cli_present() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_tls_cluster_serves_redis_cli_and_refuses_plaintext_clients_and_untrusted_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = TlsCluster::start(&dir.path().join("cluster"));
    assert_eq!(cluster.clients.len(), 3);
    let ca = cluster.ca_file();

    // Writes through each node, read back through every node: the peer links (mutual TLS)
    // replicate, the client ports (TLS) serve.
    if redis_cli_present() {
        for (i, addr) in cluster.clients.iter().enumerate() {
            let key = format!("key{i}");
            let value = format!("value{i}");
            assert_eq!(redis_cli(&ca, addr, true, &["SET", &key, &value]), "OK");
        }
        for addr in &cluster.clients {
            for i in 0..3 {
                assert_eq!(
                    redis_cli(&ca, addr, true, &["GET", &format!("key{i}")]),
                    format!("value{i}"),
                    "key{i} through {addr}"
                );
            }
        }
        // redis-cli without --tls reads the node's plaintext refusal.
        let refused = redis_cli(&ca, &cluster.clients[0], false, &["PING"]);
        assert!(refused.contains("requires TLS"), "{refused}");
    } else {
        println!("redis-cli not found (install redis-tools): its part of this test is skipped");
        let mut client = cluster.tls_client(0);
        assert_eq!(
            client.command(&["SET", "key0", "value0"]).expect("set"),
            Reply::Simple("OK".into())
        );
        let mut other = cluster.tls_client(2);
        assert_eq!(
            other.command(&["GET", "key0"]).expect("get"),
            Reply::Bulk(bytes::Bytes::from_static(b"value0"))
        );
    }

    // A plaintext client on a TLS port: a RESP error it can read, then the connection closes;
    // the node counts it and goes on serving.
    let node1_http = cluster.config_value(1, "http_listen");
    let failures_before = metric(&node1_http, "ringkv_client_tls_failures_total");
    let mut plain = RespClient::connect(&cluster.clients[0], LINE_WAIT).expect("connect");
    match plain.command(&["PING"]) {
        Ok(Reply::Error(text)) => assert!(text.contains("requires TLS"), "{text}"),
        other => panic!("expected the plaintext refusal, got {other:?}"),
    }
    assert!(plain.read_reply().is_err(), "the connection is closed");
    wait_until("the plaintext client to be counted", || {
        metric(&node1_http, "ringkv_client_tls_failures_total") > failures_before
    });
    assert_eq!(
        cluster.tls_client(0).command(&["PING"]).expect("ping"),
        Reply::Simple("PONG".into())
    );

    // A stranger with the cluster secret, claiming to be node 3, trusting the cluster's CA but
    // holding a certificate of its own CA: nodes 1 and 2 refuse it at TLS, before it can say
    // anything, log it and count it.
    let stranger = ringkv_node::tls::write_throwaway_pki(
        &dir.path().join("stranger"),
        &["stranger".to_string()],
    )
    .expect("stranger's certificates");
    let trusted = dir.path().join("stranger").join("trusts.pem");
    let both = std::fs::read_to_string(&stranger.ca_file).expect("ca")
        + &std::fs::read_to_string(&ca).expect("ca");
    std::fs::write(&trusted, both).expect("write");
    let (cert, key) = &stranger.nodes[0];
    let config = dir.path().join("stranger.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 3\nclient_listen = \"127.0.0.1:0\"\npeer_listen = \"127.0.0.1:0\"\n\
             http_listen = \"off\"\ndata_dir = \"{data}\"\ncluster_name = \"local\"\n\
             cluster_secret_file = \"{secret}\"\n\
             peers = [\"1={peer1}\", \"2={peer2}\"]\n\
             [tls]\npeer_cert_file = \"{cert}\"\npeer_key_file = \"{key}\"\nca_file = \"{ca}\"\n",
            data = dir.path().join("stranger-data").display(),
            secret = cluster.dir.join("cluster.secret").display(),
            peer1 = cluster.config_value(1, "peer_listen"),
            peer2 = cluster.config_value(2, "peer_listen"),
            cert = cert.display(),
            key = key.display(),
            ca = trusted.display(),
        ),
    )
    .expect("write");
    let node2_http = cluster.config_value(2, "http_listen");
    let stranger = NodeProcess::start(
        dir.path(),
        &args(&["--config", config.to_str().expect("utf8")]),
        "stranger",
    );
    for (id, http_addr) in [(1, &node1_http), (2, &node2_http)] {
        wait_until("the stranger to be refused and logged", || {
            metric(http_addr, "ringkv_peer_tls_failures_total") > 0
                && cluster
                    .log(id)
                    .contains("peer connection refused: TLS handshake failed")
        });
    }
    assert!(
        !stranger.stderr().contains("connected to peer"),
        "the stranger never got through"
    );
    drop(stranger);

    // The cluster is healthy: every node still has both peers, and a write is acknowledged by
    // all three replicas.
    for id in 1..=3 {
        let http_addr = cluster.config_value(id, "http_listen");
        assert_eq!(metric(&http_addr, "ringkv_peers_connected"), 2, "node {id}");
    }
    let mut client = cluster.tls_client(0);
    let put = client
        .command(&["KV.PUT", "after", "stranger", "LEVEL", "all"])
        .expect("put");
    assert!(
        !matches!(put, Reply::Error(_)),
        "the write at level all failed: {put:?}"
    );
    assert_eq!(
        cluster
            .tls_client(1)
            .command(&["GET", "after"])
            .expect("get"),
        Reply::Bulk(bytes::Bytes::from_static(b"stranger"))
    );
}

#[test]
fn a_tls_client_may_write_a_whole_pipeline_before_reading_a_reply() {
    // The connection code reads ahead while its replies wait to be written; over TLS the
    // replies also wait in the TLS layer until flushed. A client that writes 4,000 commands
    // (about 5 MiB of replies) before reading one must not wait on a node waiting on it.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ringkv_node::tls::write_throwaway_pki(&dir.path().join("tls"), &["n1".to_string()])
        .expect("certificates");
    let (cert, key) = &pki.nodes[0];
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        format!(
            "node_id = 1\nclient_listen = \"127.0.0.1:0\"\nhttp_listen = \"off\"\n\
             data_dir = \"data\"\n[replication]\nn = 1\nr = 1\nw = 1\n\
             [tls]\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("write");
    let node = NodeProcess::start(
        dir.path(),
        &args(&["--config", path.to_str().expect("utf8")]),
        "pipeline",
    );
    let config = ringkv_node::tls::client_config(&pki.ca_file, None).expect("config");
    let mut client =
        RespClient::connect_tls(&node.client_addr, LINE_WAIT, Arc::new(config)).expect("TLS");
    let value = "v".repeat(1300);
    assert_eq!(
        client
            .command(&["SET", "big", value.as_str()])
            .expect("set"),
        Reply::Simple("OK".into())
    );
    let commands = 4000;
    let mut pipeline = Vec::new();
    for _ in 0..commands {
        pipeline.extend_from_slice(&RespClient::encode(&["GET", "big"]));
    }
    client
        .send_raw(&pipeline)
        .expect("the whole pipeline is written");
    for i in 0..commands {
        let reply = client.read_reply().expect("reply");
        assert_eq!(
            reply,
            Reply::Bulk(bytes::Bytes::from(value.clone())),
            "reply {i}"
        );
    }
    assert!(node.terminate().success());
}

/// Runs `ringkv-node --config CONFIG`; its exit status and stderr. It must exit on its own
/// (a node that starts instead is killed and reported).
fn start_expecting_exit(dir: &Path, config: &str) -> (std::process::ExitStatus, String) {
    let path = dir.join("node.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(common::node_binary())
        .arg("--config")
        .arg(&path)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv-node");
    let start = Clock::stopwatch();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > LINE_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started instead of refusing its configuration");
        }
        std::thread::sleep(Duration::from_millis(20)); // polling pace only
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    (status, stderr)
}

#[test]
fn bad_certificate_files_stop_the_start_with_an_error_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ringkv_node::tls::write_throwaway_pki(
        &dir.path().join("tls"),
        &["n1".to_string(), "n2".to_string()],
    )
    .expect("certificates");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let (cert, key) = &pki.nodes[0];
    let (_, other_key) = &pki.nodes[1];
    let config = |cert: &Path, key: &Path| {
        format!(
            "node_id = 1\nclient_listen = \"127.0.0.1:0\"\nhttp_listen = \"off\"\n\
             data_dir = \"data\"\n[tls]\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    for (cert, key, field, what) in [
        (
            missing.as_path(),
            key.as_path(),
            "tls.client_cert_file",
            "is missing",
        ),
        (
            garbage.as_path(),
            key.as_path(),
            "tls.client_cert_file",
            "no PEM certificate",
        ),
        (
            cert.as_path(),
            garbage.as_path(),
            "tls.client_key_file",
            "no PEM private key",
        ),
        (
            cert.as_path(),
            other_key.as_path(),
            "tls.client_key_file",
            "does not match",
        ),
    ] {
        let (status, stderr) = start_expecting_exit(dir.path(), &config(cert, key));
        assert!(!status.success(), "{field}: {status}");
        assert!(
            stderr.contains(field) && stderr.contains(what),
            "{field} {what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The right pair starts the node (the refusals above were about the files), with TLS on
    // its client port.
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config(cert, key)).expect("write");
    let node = NodeProcess::start(
        dir.path(),
        &args(&["--config", path.to_str().expect("utf8")]),
        "good",
    );
    let client_config = ringkv_node::tls::client_config(&pki.ca_file, None).expect("config");
    let mut client = RespClient::connect_tls(&node.client_addr, LINE_WAIT, Arc::new(client_config))
        .expect("TLS connect");
    assert_eq!(
        client.command(&["PING"]).expect("ping"),
        Reply::Simple("PONG".into())
    );
    assert!(node.terminate().success());
}
