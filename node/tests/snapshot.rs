//! Snapshots and restore across real `ringkv-node` processes (issue #14, item 4): three nodes,
//! N = 3, writes at quorum; node 3 is snapshotted through `ringkv admin snapshot`, more is
//! written (overwrites, new keys, deletes), node 3 is killed, its data directory wiped and
//! restored from a copy of the snapshot (`ringkv-node --restore-from`), more is written while it
//! is away, and once anti-entropy has found every range in sync, node 3 alone (the two others
//! stopped, reads at level `one`) holds every acknowledged write and none of the deleted keys.
//! Read repair is off, so only anti-entropy (and hint replay) can have brought back what was
//! written after the snapshot.

mod common;

use common::*;
use redis::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "4f1c2b9a7e6d5c4b3a2918f7e6d5c4b3\n";
/// Longest any convergence may take before the test fails (a hang guard, not a timing
/// assertion).
const CONVERGE_WAIT: Duration = Duration::from_secs(90);
/// Pace of polling; what the test waits for is always a state it reads back.
const POLL_PACE: Duration = Duration::from_millis(20);
/// The node that is snapshotted, wiped and restored.
const RESTORED: usize = 3;

struct Layout {
    peer_ports: Vec<u16>,
    http_ports: Vec<u16>,
}

impl Layout {
    fn new(nodes: usize) -> Layout {
        Layout {
            peer_ports: (0..nodes).map(|_| free_port()).collect(),
            http_ports: (0..nodes).map(|_| free_port()).collect(),
        }
    }

    fn http(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.http_ports[id - 1])
    }

    /// Node `id`'s configuration: the others as peers, vector clocks (so the restored node's
    /// new data epoch is in play), short gossip and anti-entropy timers, no read repair.
    fn write_config(&self, dir: &Path, id: usize) {
        let peers: Vec<String> = (1..=self.peer_ports.len())
            .filter(|&j| j != id)
            .map(|j| {
                format!(
                    "{{ id = {j}, addr = \"127.0.0.1:{}\" }}",
                    self.peer_ports[j - 1]
                )
            })
            .collect();
        let text = format!(
            "node_id = {id}\n\
             client_listen = \"127.0.0.1:0\"\n\
             peer_listen = \"127.0.0.1:{}\"\n\
             http_listen = \"{}\"\n\
             data_dir = \"data{id}\"\n\
             cluster_name = \"test\"\n\
             cluster_secret_file = \"secret\"\n\
             peers = [{}]\n\
             [admin]\ntoken_file = \"admin-token\"\n\
             [replication]\nn = 3\nr = 2\nw = 2\nconflict = \"vector-clock\"\n\
             [repair]\nread_repair = false\nanti_entropy_interval_ms = 100\n\
             anti_entropy_ranges_per_round = 1000\nanti_entropy_records_per_message_max = 1000\n\
             [membership]\ngossip_interval_ms = 100\nsuspect_after_ms = 500\ndown_after_ms = 1000\n",
            self.peer_ports[id - 1],
            self.http(id),
            peers.join(", "),
        );
        std::fs::write(dir.join(format!("node{id}.toml")), text).expect("config");
    }

    fn start(&self, dir: &Path, id: usize, extra: &[&str]) -> NodeProcess {
        self.write_config(dir, id);
        let mut words = vec!["--config".to_string(), format!("node{id}.toml")];
        words.extend(extra.iter().map(|s| s.to_string()));
        NodeProcess::start(dir, &words, &format!("node{id}"))
    }
}

/// Polls `check` until it returns `Ok`, or fails naming `what` and the last state seen.
fn poll<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    poll_until(what, CONVERGE_WAIT, POLL_PACE, check)
}

/// The value of a metric with only the `node` label.
fn metric(addr: &str, name: &str) -> u64 {
    let (_, body) = http(addr, "GET", "/metrics");
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Waits until anti-entropy on `nodes` has run four more rounds on each without any range found
/// different (each round compares every range the node holds with one of its other replicas).
fn wait_for_anti_entropy_quiet(layout: &Layout, nodes: &[usize]) {
    let sample = || -> Vec<(u64, u64)> {
        nodes
            .iter()
            .map(|&id| {
                let addr = layout.http(id);
                (
                    metric(&addr, "ringkv_anti_entropy_rounds_total"),
                    metric(&addr, "ringkv_anti_entropy_ranges_differing_total"),
                )
            })
            .collect()
    };
    let mut base = sample();
    poll("anti-entropy finds every range in sync", || {
        let now = sample();
        let differing = |s: &[(u64, u64)]| s.iter().map(|t| t.1).sum::<u64>();
        if differing(&now) != differing(&base) {
            base = now;
            return Err("ranges still differ".to_string());
        }
        if now.iter().zip(&base).all(|(n, b)| n.0 >= b.0 + 4) {
            Ok(())
        } else {
            Err(format!("rounds {now:?} since {base:?}"))
        }
    });
}

/// `ringkv admin WORDS --node-http ADDR`, with the test's admin token from `dir`: success,
/// stdout and stderr.
fn ringkv_admin(dir: &Path, addr: &str, words: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("admin")
        .args(words)
        .args(["--node-http", addr])
        .arg("--token-file")
        .arg(dir.join("admin-token"))
        .output()
        .expect("run ringkv");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// What every node should hold: the last acknowledged value of each key (`None`: deleted).
type Acknowledged = BTreeMap<String, Option<String>>;

/// Writes (or, for `None`, deletes) each pair at level quorum through `client`, superseding
/// what a quorum read saw (vector clocks: a write without that context would be a sibling of the
/// value it replaces); every one must be acknowledged, and is recorded.
fn write(
    client: &mut redis::Connection,
    acknowledged: &mut Acknowledged,
    pairs: &[(String, Option<String>)],
) {
    for (key, value) in pairs {
        let read = run(client, &["KV.GET", key, "LEVEL", "quorum"]).expect("kv.get");
        let context = match field(&read, "context") {
            Value::BulkString(bytes) => String::from_utf8(bytes).expect("hex"),
            other => panic!("{key}: context {other:?}"),
        };
        let mut words = match value {
            Some(value) => vec!["KV.PUT", key.as_str(), value.as_str()],
            None => vec!["KV.DEL", key.as_str()],
        };
        words.extend(["LEVEL", "quorum"]);
        if !context.is_empty() {
            words.extend(["CONTEXT", context.as_str()]);
        }
        let reply = run(client, &words);
        assert!(reply.is_ok(), "{key}: {reply:?}");
        acknowledged.insert(key.clone(), value.clone());
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn a_node_restored_from_a_snapshot_gets_back_everything_acknowledged_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).expect("admin token");
    let layout = Layout::new(3);
    let mut nodes: BTreeMap<usize, NodeProcess> = (1..=3)
        .map(|id| (id, layout.start(dir.path(), id, &[])))
        .collect();
    for node in nodes.values_mut() {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    // Every write goes through node 1 and names the context a quorum read saw, so each
    // overwrite or delete supersedes the value before it (no siblings to reason about).
    let mut writer = nodes[&1].client();
    let mut acknowledged = Acknowledged::new();
    let pairs = |range: std::ops::Range<usize>, tag: &str| -> Vec<(String, Option<String>)> {
        range
            .map(|i| {
                (
                    format!("k{i:03}"),
                    Some(format!("{tag}{i}-{}", "x".repeat(i % 7 * 40))),
                )
            })
            .collect()
    };
    write(&mut writer, &mut acknowledged, &pairs(0..300, "before"));
    // Every write reached node 3's disk before the snapshot (W = 2 of 3 would not promise it,
    // and the test is about what the snapshot holds plus what repair brings).
    wait_for_anti_entropy_quiet(&layout, &[1, 2, 3]);

    // The snapshot, through the CLI, which prints its directory.
    let x = layout.http(RESTORED);
    let (ok, out, err) = ringkv_admin(dir.path(), &x, &["snapshot", "--name", "nightly"]);
    assert!(ok, "snapshot: {out} {err}");
    let snapshot = std::path::PathBuf::from(out.trim());
    let expected = dir.path().join(format!("data{RESTORED}/snapshots/nightly"));
    assert_eq!(
        snapshot,
        std::fs::canonicalize(&expected).expect("the snapshot exists")
    );
    assert!(snapshot.join("lsm/MANIFEST").is_file() && snapshot.join("SNAPSHOT").is_file());
    // The endpoint's refusals: a taken name, a name leaving the directory, no token.
    let token = Some(ADMIN_TOKEN);
    let (status, body) = http_with_token(&x, "POST", "/admin/snapshot?name=nightly", token);
    assert_eq!(status, 409, "{body}");
    let (status, body) = http_with_token(&x, "POST", "/admin/snapshot?name=../up", token);
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(&x, "POST", "/admin/snapshot?name=other");
    assert_eq!(status, 401, "{body}");
    // Without a name: one made of the time.
    let (status, body) = http_with_token(&x, "POST", "/admin/snapshot", token);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"ok\":true") && body.contains("/snapshots/snapshot-"),
        "{body}"
    );
    assert!(!dir
        .path()
        .join(format!("data{RESTORED}/snapshots/other"))
        .exists());

    // After the snapshot, node 3 still up: overwrites, new keys and deletes.
    write(&mut writer, &mut acknowledged, &pairs(100..200, "after"));
    write(&mut writer, &mut acknowledged, &pairs(300..400, "after"));
    let deletes: Vec<(String, Option<String>)> =
        (0..50).map(|i| (format!("k{i:03}"), None)).collect();
    write(&mut writer, &mut acknowledged, &deletes);

    // The operator keeps the snapshot off the node's disk; then the disk is lost.
    let backup = dir.path().join("backup-nightly");
    copy_tree(&snapshot, &backup);
    nodes.remove(&RESTORED).expect("node 3").kill();
    std::fs::remove_dir_all(dir.path().join(format!("data{RESTORED}"))).expect("wipe");

    // Writes while node 3 is away (W = 2 of the two others).
    write(&mut writer, &mut acknowledged, &pairs(200..250, "away"));
    write(&mut writer, &mut acknowledged, &pairs(400..450, "away"));

    let backup_arg = backup.to_string_lossy().to_string();
    let mut restored = layout.start(dir.path(), RESTORED, &["--restore-from", &backup_arg]);
    restored.wait_for_line(ringkv_node::server::PEERS_REACHED);
    // The restored engine is the snapshot's: it recovers at the snapshot's last write, before
    // anything came over the network.
    let info = std::fs::read_to_string(backup.join("SNAPSHOT")).expect("SNAPSHOT");
    let last_seq = info
        .lines()
        .find_map(|l| l.strip_prefix("last_seq = "))
        .expect("last_seq");
    let stderr = restored.stderr();
    let recovered = stderr
        .lines()
        .find(|l| l.contains("storage recovered"))
        .unwrap_or_else(|| panic!("no recovery line: {stderr}"));
    assert!(
        recovered.contains(&format!("last_seq={last_seq} ")),
        "recovered at the snapshot's last_seq {last_seq}: {recovered}"
    );
    assert!(
        stderr.contains("restored from a snapshot"),
        "the start says it: {stderr}"
    );
    assert!(
        !dir.path().join(format!("data{RESTORED}/RESTORED")).exists(),
        "the restore marker is gone once the restored start is durable"
    );
    nodes.insert(RESTORED, restored);
    wait_for_anti_entropy_quiet(&layout, &[1, 2, 3]);

    // Node 3 alone: the two others stopped, every key read at level one (its own replica).
    drop(writer);
    for id in [1, 2] {
        assert_eq!(nodes.remove(&id).expect("node").terminate().code(), Some(0));
    }
    let mut alone = nodes[&RESTORED].client();
    let mut wrong = Vec::new();
    for (key, value) in &acknowledged {
        let reply = run(&mut alone, &["KV.GET", key, "LEVEL", "one"]).expect("kv.get");
        let expected = Value::Array(value.iter().map(|v| bulk(v)).collect());
        if field(&reply, "values") != expected {
            wrong.push(format!(
                "{key}: {:?} not {value:?}",
                field(&reply, "values")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} keys wrong on the restored node: {wrong:?}",
        wrong.len(),
        acknowledged.len()
    );
    let restored = nodes.remove(&RESTORED).expect("node 3");
    assert_eq!(restored.terminate().code(), Some(0));
}
