//! Real `ringkv-node` processes for the "one code path" issue: the datacenter levels across a
//! datacenter outage, a data directory refusing a start that would change what its bytes mean, a
//! peer with another conflict mode refused, and no fault points or unsafe knobs live in the
//! binary the workspace builds.

mod common;

use common::*;
use redis::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

const SECRET: &str = "4f1c2b9a7e6d5c4b3a2918f7e6d5c4b3\n";

/// Polls of a refused start's exit before giving up (20 ms apart, about a minute): a hang
/// guard, not a timing assertion.
const EXIT_POLLS_MAX: u32 = 3_000;

/// Runs `ringkv-node` with `args` in `cwd` to completion (a start that is expected to be
/// refused); returns its status and stderr.
fn run_to_exit(cwd: &Path, args: &[String]) -> (ExitStatus, String) {
    let stderr_path = cwd.join("refused.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(node_binary())
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn ringkv-node");
    let mut polls = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        polls += 1;
        if polls > EXIT_POLLS_MAX {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the node kept running: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20)); // polling pace only
    };
    (
        status,
        std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    )
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn dev_args(data_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut all = args(&[
        "--dev",
        "--client-listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
        "--data-dir",
        data_dir.to_str().expect("utf8 path"),
    ]);
    all.extend(extra.iter().map(|s| s.to_string()));
    all
}

#[test]
fn a_restart_with_another_conflict_mode_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = NodeProcess::start(dir.path(), &dev_args(&data, &[]), "lww");
    let mut c = node.client();
    assert_eq!(run(&mut c, &["SET", "k", "v1"]).expect("set"), Value::Okay);
    // The datacenter levels are served (one datacenter of one node: both are that node).
    for level in ["local_quorum", "each_quorum"] {
        let reply = run(&mut c, &["KV.GET", "k", "LEVEL", level]).expect(level);
        assert_eq!(field(&reply, "values"), Value::Array(vec![bulk("v1")]));
    }
    drop(c);
    assert_eq!(node.terminate().code(), Some(0));
    let before = snapshot(&data);

    let (status, stderr) = run_to_exit(
        dir.path(),
        &dev_args(&data, &["--conflict", "vector-clock"]),
    );
    assert!(!status.success(), "a vector-clock start on lww data ran");
    assert!(
        stderr.contains("`replication.conflict`")
            && stderr.contains("\"lww\"")
            && stderr.contains("\"vector-clock\""),
        "the refusal names the setting and both values: {stderr}"
    );
    assert_eq!(
        snapshot(&data),
        before,
        "the refused start changed the disk"
    );

    // The same settings start again and still hold the write.
    let node = NodeProcess::start(dir.path(), &dev_args(&data, &[]), "lww-again");
    let mut c = node.client();
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), bulk("v1"));
    drop(c);
    assert_eq!(node.terminate().code(), Some(0));
}

/// A cluster whose nodes each get their own TOML file (the datacenter of each peer needs the
/// table form of `peers`).
struct Layout {
    peer_ports: Vec<u16>,
    http_ports: Vec<u16>,
    datacenters: Vec<&'static str>,
}

impl Layout {
    fn new(datacenters: &[&'static str]) -> Layout {
        Layout {
            peer_ports: datacenters.iter().map(|_| free_port()).collect(),
            http_ports: datacenters.iter().map(|_| free_port()).collect(),
            datacenters: datacenters.to_vec(),
        }
    }

    /// Writes node `id`'s file (ids from 1) with `replication` as its `[replication]` table.
    fn write_config(&self, dir: &Path, id: usize, replication: &str) -> PathBuf {
        let mut peers = String::new();
        for (j, port) in self.peer_ports.iter().enumerate() {
            if j + 1 != id {
                peers.push_str(&format!(
                    "  {{ id = {}, addr = \"127.0.0.1:{port}\", datacenter = \"{}\" }},\n",
                    j + 1,
                    self.datacenters[j]
                ));
            }
        }
        let text = format!(
            "node_id = {id}\ndatacenter = \"{dc}\"\ncluster_name = \"two-dc\"\n\
             client_listen = \"127.0.0.1:0\"\npeer_listen = \"127.0.0.1:{peer}\"\n\
             http_listen = \"127.0.0.1:{http}\"\ndata_dir = \"data{id}\"\n\
             cluster_secret_file = \"secret\"\npeers = [\n{peers}]\n[replication]\n{replication}\n",
            dc = self.datacenters[id - 1],
            peer = self.peer_ports[id - 1],
            http = self.http_ports[id - 1],
        );
        let path = dir.join(format!("node{id}.toml"));
        std::fs::write(&path, text).expect("config");
        path
    }

    fn start(&self, dir: &Path, id: usize, replication: &str) -> NodeProcess {
        let config = self.write_config(dir, id, replication);
        NodeProcess::start(
            dir,
            &args(&["--config", config.to_str().expect("utf8 path")]),
            &format!("node{id}"),
        )
    }

    fn metrics(&self, id: usize) -> String {
        http(
            &format!("127.0.0.1:{}", self.http_ports[id - 1]),
            "GET",
            "/metrics",
        )
        .1
    }
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Two replicas in each of two datacenters (4 nodes, n = 4). With dc2's processes stopped,
/// `local_quorum` (2 of dc1's 2) still reads and writes through dc1, while `each_quorum` (2 in
/// every datacenter) is refused with the typed failures: `UNAVAILABLE` for a read (nothing
/// changed), `INDETERMINATE` for a write (it may yet surface).
#[test]
fn local_quorum_survives_a_datacenter_outage_and_each_quorum_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    let replication =
        "n = 4\nrequest_timeout_ms = 1000\nreplicas_per_datacenter = { dc1 = 2, dc2 = 2 }";
    let layout = Layout::new(&["dc1", "dc1", "dc2", "dc2"]);
    let mut nodes: Vec<NodeProcess> = (1..=4)
        .map(|id| layout.start(dir.path(), id, replication))
        .collect();
    for node in nodes.iter_mut() {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    let mut c = nodes[0].client();
    for level in ["local_quorum", "each_quorum"] {
        let key = format!("before-{level}");
        let reply = run(&mut c, &["KV.PUT", &key, "v", "LEVEL", level]).expect(level);
        let acks = match field(&reply, "acks") {
            Value::Int(acks) => acks,
            other => panic!("acks is {other:?}"),
        };
        // local_quorum waits for dc1's two replicas, each_quorum for two in each datacenter.
        let needed = if level == "each_quorum" { 4 } else { 2 };
        assert!(acks >= needed, "{level} acknowledged by {acks}");
        let reply = run(&mut c, &["KV.GET", &key, "LEVEL", level]).expect(level);
        assert_eq!(
            field(&reply, "values"),
            Value::Array(vec![bulk("v")]),
            "{level}"
        );
    }

    // Stop datacenter dc2.
    for node in nodes.split_off(2) {
        node.kill();
    }
    for i in 0..20 {
        let key = format!("during-{i}");
        let reply = run(&mut c, &["KV.PUT", &key, "x", "LEVEL", "local_quorum"])
            .unwrap_or_else(|e| panic!("local_quorum write {i} with dc2 down: {e}"));
        assert_eq!(field(&reply, "acks"), Value::Int(2), "write {i}");
        let reply = run(&mut c, &["KV.GET", &key, "LEVEL", "local_quorum"])
            .unwrap_or_else(|e| panic!("local_quorum read {i} with dc2 down: {e}"));
        assert_eq!(
            field(&reply, "values"),
            Value::Array(vec![bulk("x")]),
            "{i}"
        );
    }
    // The other dc1 node coordinates local_quorum too.
    let mut c2 = nodes[1].client();
    let reply = run(&mut c2, &["KV.GET", "during-3", "LEVEL", "local_quorum"]).expect("read");
    assert_eq!(field(&reply, "values"), Value::Array(vec![bulk("x")]));

    let read = error_text(run(&mut c, &["KV.GET", "during-0", "LEVEL", "each_quorum"]));
    assert!(read.starts_with("UNAVAILABLE"), "each_quorum read: {read}");
    let write = error_text(run(&mut c, &["KV.PUT", "k", "y", "LEVEL", "each_quorum"]));
    // INDETERMINATE while dc2 is not yet judged down; once the failure detector judges it
    // `Down`, the write is refused at once with no effect (fail fast).
    assert!(
        write.starts_with("INDETERMINATE") || write.starts_with("UNAVAILABLE the failure detector"),
        "each_quorum write: {write}"
    );

    for node in nodes {
        assert_eq!(node.terminate().code(), Some(0));
    }
}

/// Two nodes, one in vector-clock mode: each refuses the other at the handshake, says why in
/// its log and counts it, and neither replicates to the other.
#[test]
fn a_peer_with_another_conflict_mode_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    let layout = Layout::new(&["dc1", "dc1"]);
    let lww = layout.start(dir.path(), 1, "n = 1\nconflict = \"lww\"");
    let vector_clock = layout.start(dir.path(), 2, "n = 1\nconflict = \"vector-clock\"");
    let mut refused = [false, false];
    for _ in 0..3_000 {
        for (id, seen) in refused.iter_mut().enumerate() {
            *seen = metric(
                &layout.metrics(id + 1),
                "ringkv_peer_stored_meaning_mismatches_total",
            ) > 0;
        }
        if refused.iter().all(|seen| *seen) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling pace only
    }
    assert_eq!(refused, [true, true], "both nodes counted the refusal");
    for (id, node) in [(1, &lww), (2, &vector_clock)] {
        let stderr = node.stderr();
        assert!(
            stderr.contains("`replication.conflict`") && stderr.contains("vector-clock"),
            "node {id} logs the refusal with the setting: {stderr}"
        );
        assert_eq!(
            metric(&layout.metrics(id), "ringkv_peers_connected"),
            0,
            "node {id} established no connection"
        );
    }
    assert_eq!(lww.terminate().code(), Some(0));
    assert_eq!(vector_clock.terminate().code(), Some(0));
}

/// The binary under test is the one `cargo test --workspace` builds, with every feature the
/// workspace unifies: it must report no fault points and no unsafe test knobs, whatever its
/// configuration file says.
#[test]
fn the_node_binary_has_no_fault_points_or_unsafe_knobs_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&dir.path().join("data"), &[]), "dev");
    let mut c = node.client();
    let info = match run(&mut c, &["INFO", "replication"]).expect("info") {
        Value::BulkString(bytes) => String::from_utf8(bytes).expect("utf8"),
        Value::VerbatimString { text, .. } => text,
        other => panic!("INFO answered {other:?}"),
    };
    assert!(info.contains("ringkv_fault_points:off"), "{info}");
    assert!(info.contains("ringkv_unsafe_test_knobs:off"), "{info}");
    drop(c);
    assert_eq!(node.terminate().code(), Some(0));

    // No file key reaches them: each is refused as unknown, by name.
    for (table, key) in [
        ("replication", "simulation"),
        ("replication", "unsafe_ack_before_persist"),
        ("replication", "unsafe_skip_write_back"),
        ("repair", "unsafe_drop_every_nth_write"),
    ] {
        let config = dir.path().join("unsafe.toml");
        std::fs::write(
            &config,
            format!(
                "node_id = 1\nclient_listen = \"127.0.0.1:0\"\nhttp_listen = \"off\"\n\
                 data_dir = \"data-unsafe\"\n[{table}]\n{key} = true\n"
            ),
        )
        .expect("config");
        let (status, stderr) = run_to_exit(
            dir.path(),
            &args(&["--config", config.to_str().expect("utf8 path")]),
        );
        assert!(!status.success(), "`{key}` was accepted: {stderr}");
        assert!(stderr.contains(key), "the refusal names `{key}`: {stderr}");
    }
}
