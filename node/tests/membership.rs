//! Gossip membership across real `ringkv-node` processes: three nodes and a spare; the spare
//! joins through `ringkv admin join`, an original node leaves, another is SIGKILLed and removed
//! once the survivors judge it down. After each change every node's `/ring` converges on the
//! same ring version, anti-entropy moves the data, and every acknowledged key still reads back.
//! Gossip and anti-entropy run on short timers here so the test stays quick.

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
/// The spare: configured on every node, not in the initial ring.
const SPARE: usize = 4;

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

    /// Node `id`'s configuration: every other node is a peer (the spare with
    /// `initial_member = false`), short gossip and anti-entropy timers, no read repair (so only
    /// anti-entropy can have moved the data the test reads back).
    fn write_config(&self, dir: &Path, id: usize) {
        let peers: Vec<String> = (1..=self.peer_ports.len())
            .filter(|&j| j != id)
            .map(|j| {
                format!(
                    "{{ id = {j}, addr = \"127.0.0.1:{}\", initial_member = {} }}",
                    self.peer_ports[j - 1],
                    j != SPARE
                )
            })
            .collect();
        let text = format!(
            "node_id = {id}\n\
             initial_member = {}\n\
             client_listen = \"127.0.0.1:0\"\n\
             peer_listen = \"127.0.0.1:{}\"\n\
             http_listen = \"{}\"\n\
             data_dir = \"data{id}\"\n\
             cluster_name = \"test\"\n\
             cluster_secret_file = \"secret\"\n\
             peers = [{}]\n\
             [admin]\ntoken_file = \"admin-token\"\n\
             [replication]\nn = 3\nr = 2\nw = 2\n\
             [repair]\nread_repair = false\nanti_entropy_interval_ms = 100\n\
             anti_entropy_ranges_per_round = 1000\nanti_entropy_records_per_message_max = 1000\n\
             [membership]\ngossip_interval_ms = 100\nsuspect_after_ms = 500\ndown_after_ms = 1000\n",
            id != SPARE,
            self.peer_ports[id - 1],
            self.http(id),
            peers.join(", "),
        );
        std::fs::write(dir.join(format!("node{id}.toml")), text).expect("config");
    }

    fn start(&self, dir: &Path, id: usize) -> NodeProcess {
        self.write_config(dir, id);
        NodeProcess::start(
            dir,
            &args(&["--config", &format!("node{id}.toml")]),
            &format!("node{id}"),
        )
    }
}

/// What a node's `/ring` says: the ring version, the ring members in id order, and every node's
/// status as this node judges it.
#[derive(Debug, PartialEq, Eq)]
struct RingSeen {
    version: String,
    members: Vec<usize>,
    statuses: BTreeMap<usize, String>,
}

/// Reads the fields the test needs out of the `/ring` document (flat objects, no nesting inside
/// a node's entry, so splitting on the object boundaries is enough).
fn ring_seen(addr: &str) -> RingSeen {
    let (status, body) = http(addr, "GET", "/ring");
    assert_eq!(status, 200, "{body}");
    let after = |text: &'static str| -> &str {
        body.split_once(text)
            .unwrap_or_else(|| panic!("no {text} in {body}"))
            .1
    };
    let version = after("\"ring_version\":")
        .split_once('}')
        .expect("a version object")
        .0
        .to_string();
    let (nodes, outside) = after("\"nodes\":[")
        .split_once("],\"outside_ring\":[")
        .expect("both lists");
    let entries = |list: &str| -> Vec<(usize, String)> {
        list.split("},{")
            .filter(|entry| entry.contains("\"id\":"))
            .map(|entry| {
                let field = |name: &str| {
                    entry
                        .split_once(&format!("\"{name}\":"))
                        .expect("field")
                        .1
                        .split([',', '}'])
                        .next()
                        .expect("value")
                        .trim_matches('"')
                        .to_string()
                };
                (field("id").parse().expect("an id"), field("status"))
            })
            .collect()
    };
    let members = entries(nodes);
    let others = entries(outside.split_once(']').expect("end of list").0);
    RingSeen {
        version,
        members: members.iter().map(|(id, _)| *id).collect(),
        statuses: members.into_iter().chain(others).collect(),
    }
}

/// Polls `check` until it returns `Some`, or fails naming `what` and the last state seen.
fn poll<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    poll_until(what, CONVERGE_WAIT, POLL_PACE, check)
}

/// Waits until every node in `nodes` shows the ring members `expected` with one ring version;
/// returns that version.
fn wait_for_ring(layout: &Layout, nodes: &[usize], expected: &[usize]) -> String {
    poll(
        &format!("rings of {nodes:?} converge on {expected:?}"),
        || {
            let seen: Vec<RingSeen> = nodes
                .iter()
                .map(|&id| ring_seen(&layout.http(id)))
                .collect();
            let same = seen.iter().all(|s| s.version == seen[0].version);
            if same && seen.iter().all(|s| s.members == expected) {
                Ok(seen[0].version.clone())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
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

/// `ringkv admin <words> --node-http addr`: success, stdout and stderr.
/// `ringkv admin WORDS --node-http ADDR`, with the test's admin token from `dir`.
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

/// Every key reads back with its value at `level` through the given nodes in turn, and with
/// `acks` replicas answering. A read may come back short while a node settles on a new ring,
/// so each is retried until the deadline.
fn check_keys(
    nodes: &[&NodeProcess],
    acknowledged: &BTreeMap<String, String>,
    level: &str,
    acks: i64,
) {
    let mut clients: Vec<redis::Connection> = nodes.iter().map(|n| n.client()).collect();
    for (i, (key, value)) in acknowledged.iter().enumerate() {
        let client = &mut clients[i % nodes.len()];
        poll(&format!("{key} at level {level}"), || {
            let reply = run(client, &["KV.GET", key, "LEVEL", level]).map_err(|e| e.to_string())?;
            let values = field(&reply, "values");
            let answered = field(&reply, "acks");
            if values == Value::Array(vec![bulk(value)]) && answered == Value::Int(acks) {
                Ok(())
            } else {
                Err(format!("{values:?} with {answered:?} acks"))
            }
        });
    }
}

#[test]
fn a_spare_joins_a_node_leaves_and_a_dead_node_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).expect("admin token");
    let layout = Layout::new(4);
    let mut nodes: BTreeMap<usize, NodeProcess> = (1..=4)
        .map(|id| (id, layout.start(dir.path(), id)))
        .collect();
    for node in nodes.values_mut() {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    let initial = wait_for_ring(&layout, &[1, 2, 3, 4], &[1, 2, 3]);
    assert!(initial.contains("\"changes\":3"), "{initial}");
    assert_eq!(
        ring_seen(&layout.http(1))
            .statuses
            .get(&SPARE)
            .map(String::as_str),
        Some("alive"),
        "the spare is known and gossiping, outside the ring"
    );

    // 1,000 keys at W = 2 on the initial ring.
    let mut acknowledged = BTreeMap::new();
    let mut writer = nodes[&1].client();
    for i in 0..1000 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        assert_eq!(
            run(&mut writer, &["SET", &key, &value]).expect("set"),
            Value::Okay,
            "{key}"
        );
        acknowledged.insert(key, value);
    }

    // The spare joins through the CLI; every node adopts the same four-member ring, and
    // anti-entropy hands the new owner its ranges (read repair is off: only anti-entropy can).
    let (ok, out, err) = ringkv_admin(dir.path(), &layout.http(1), &["join", "4"]);
    assert!(ok, "join: {out} {err}");
    assert!(
        out.contains("\"ok\":true") && out.contains("\"changes\":4"),
        "{out}"
    );
    let joined = wait_for_ring(&layout, &[1, 2, 3, 4], &[1, 2, 3, 4]);
    assert_ne!(joined, initial);
    wait_for_anti_entropy_quiet(&layout, &[1, 2, 3, 4]);
    assert!(
        metric(
            &layout.http(SPARE),
            "ringkv_anti_entropy_records_repaired_total"
        ) > 0,
        "the joined node received its ranges"
    );
    let all: Vec<&NodeProcess> = nodes.values().collect();
    check_keys(&all, &acknowledged, "all", 3);

    // Joining a member again, and removing a live node, are refused with the reason.
    let token = Some(ADMIN_TOKEN);
    let (status, body) = http_with_token(&layout.http(2), "POST", "/admin/join?node=4", token);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already a ring member"), "{body}");
    let (status, body) = http_with_token(&layout.http(1), "POST", "/admin/remove?node=2", token);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("node 2 is alive here") && body.contains("judges down"),
        "{body}"
    );
    let (ok, _, err) = ringkv_admin(dir.path(), &layout.http(1), &["remove", "3"]);
    assert!(!ok, "the CLI fails on a refusal");
    assert!(
        err.contains("409") && err.contains("node 3 is alive here"),
        "{err}"
    );

    // Node 3 decommissions: the others converge on a ring without it, and its data reaches the
    // remaining replicas (it streams the ranges it no longer owns).
    // Without the admin token, or with a wrong one, nothing changes (issue #14 item 2).
    let (status, body) = http(&layout.http(2), "POST", "/admin/leave?node=3");
    assert_eq!(status, 401, "{body}");
    let wrong = Some("not-the-admin-token-0123456789abcdef");
    let (status, body) = http_with_token(&layout.http(2), "POST", "/admin/leave?node=3", wrong);
    assert_eq!(status, 403, "{body}");
    let (status, body) = http_with_token(&layout.http(2), "POST", "/admin/leave?node=3", token);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"changes\":5"), "{body}");
    wait_for_ring(&layout, &[1, 2, 3, 4], &[1, 2, 4]);
    assert_eq!(
        ring_seen(&layout.http(1))
            .statuses
            .get(&3)
            .map(String::as_str),
        Some("left")
    );
    wait_for_anti_entropy_quiet(&layout, &[1, 2, 3, 4]);
    let remaining: Vec<&NodeProcess> = [1, 2, 4].iter().map(|id| &nodes[id]).collect();
    check_keys(&remaining, &acknowledged, "all", 3);
    let left = nodes.remove(&3).expect("node 3");
    assert_eq!(left.terminate().code(), Some(0));

    // Node 2 dies (SIGKILL). Once the survivors judge it down, it is removed; the ring
    // converges without it and every key still reads at quorum.
    nodes.remove(&2).expect("node 2").kill();
    poll("the survivors judge node 2 down", || {
        let seen: Vec<RingSeen> = [1, 4]
            .iter()
            .map(|&id| ring_seen(&layout.http(id)))
            .collect();
        if seen
            .iter()
            .all(|s| s.statuses.get(&2).map(String::as_str) == Some("down"))
        {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    // Removing node 2 leaves two members, fewer than n = 3: refused unless forced.
    let (ok, _, err) = ringkv_admin(dir.path(), &layout.http(SPARE), &["remove", "2"]);
    assert!(!ok && err.contains("fewer than n = 3"), "{err}");
    let (ok, out, err) = ringkv_admin(dir.path(), &layout.http(SPARE), &["remove", "2", "--force"]);
    assert!(ok, "remove: {out} {err}");
    assert!(out.contains("\"changes\":6"), "{out}");
    wait_for_ring(&layout, &[1, 4], &[1, 4]);
    let survivors: Vec<&NodeProcess> = nodes.values().collect();
    check_keys(&survivors, &acknowledged, "quorum", 2);
    let members: BTreeMap<String, u64> = ["alive", "down", "left"]
        .iter()
        .map(|status| {
            let (_, body) = http(&layout.http(1), "GET", "/metrics");
            let line = body
                .lines()
                .find(|l| l.starts_with("ringkv_members{") && l.contains(&format!("\"{status}\"")))
                .unwrap_or_else(|| panic!("no ringkv_members for {status}"))
                .to_string();
            let count = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a count");
            (status.to_string(), count)
        })
        .collect();
    assert_eq!(members["alive"], 2, "{members:?}");
    assert_eq!(members["left"], 2, "nodes 2 and 3 departed: {members:?}");
    assert_eq!(metric(&layout.http(1), "ringkv_ring_version_changes"), 6);

    // The joined spare alone holds every key: stop node 1 and read through node 4 at level one
    // (its own replica answers).
    let first = nodes.remove(&1).expect("node 1");
    assert_eq!(first.terminate().code(), Some(0));
    let spare = nodes.remove(&SPARE).expect("node 4");
    let mut alone = spare.client();
    for (key, value) in &acknowledged {
        let reply = run(&mut alone, &["KV.GET", key, "LEVEL", "one"]).expect("kv.get");
        assert_eq!(
            field(&reply, "values"),
            Value::Array(vec![bulk(value)]),
            "{key} on the joined node alone"
        );
    }
    let (status, body) = http(&layout.http(SPARE), "GET", "/admin/repair");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"started\":false") && body.contains("repair runs continuously"),
        "{body}"
    );
    let (status, body) = http_with_token(&layout.http(SPARE), "POST", "/admin/repair", token);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"started\":true") && body.contains("repair started"),
        "{body}"
    );
    let scheduled: u64 = body
        .split("\"rounds_scheduled\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0);
    assert!(scheduled >= 1, "{body}");
    assert_eq!(spare.terminate().code(), Some(0));
}
