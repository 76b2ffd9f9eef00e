//! `SCAN`, `KEYS`, `DBSIZE`, `TYPE` and `TIME` against real `ringkv-node` processes, spoken to
//! through the `redis` crate as redis-py speaks (cursor as a decimal integer, `scan_iter`-style
//! loop until the cursor is 0): on `--dev` (before and after a SIGKILL) and on three nodes.

mod common;

use common::*;
use redis::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Every key a full `SCAN cursor MATCH pattern COUNT count` loop returns, and the pages it took.
fn scan_all(c: &mut redis::Connection, pattern: &str, count: usize) -> (BTreeSet<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = BTreeSet::new();
    let mut pages = 0;
    loop {
        let reply = run(
            c,
            &[
                "SCAN",
                &cursor,
                "MATCH",
                pattern,
                "COUNT",
                &count.to_string(),
            ],
        )
        .expect("scan");
        pages += 1;
        let Value::Array(parts) = reply else {
            panic!("SCAN replies with an array: {reply:?}")
        };
        let [Value::BulkString(next), Value::Array(page)] = parts.as_slice() else {
            panic!("SCAN replies [cursor, keys]: {parts:?}")
        };
        for key in page {
            let Value::BulkString(key) = key else {
                panic!("keys are bulk strings")
            };
            keys.insert(String::from_utf8(key.clone()).expect("utf8"));
        }
        cursor = String::from_utf8(next.clone()).expect("utf8");
        // redis-py parses the cursor as an integer.
        cursor
            .parse::<u128>()
            .expect("the cursor is a decimal integer");
        if cursor == "0" {
            return (keys, pages);
        }
        assert!(pages < 10_000, "the scan ends");
    }
}

/// Writes `scan:0..300`, deletes `scan:0..100` (and writes one key outside the pattern).
fn write_and_delete(c: &mut redis::Connection) -> BTreeSet<String> {
    for i in 0..300 {
        assert_eq!(
            run(c, &["SET", &format!("scan:{i}"), "x"]).expect("set"),
            Value::Okay
        );
    }
    for i in 0..100 {
        assert_eq!(
            run(c, &["DEL", &format!("scan:{i}")]).expect("del"),
            Value::Int(1)
        );
    }
    assert_eq!(run(c, &["SET", "other", "x"]).expect("set"), Value::Okay);
    (100..300).map(|i| format!("scan:{i}")).collect()
}

fn dbsize(c: &mut redis::Connection) -> i64 {
    match run(c, &["DBSIZE"]).expect("dbsize") {
        Value::Int(n) => n,
        other => panic!("DBSIZE is an integer: {other:?}"),
    }
}

#[test]
fn dev_node_scans_live_keys_and_counts_no_tombstones_even_after_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = args(&[
        "--dev",
        "--client-listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
        "--data-dir",
        "data",
    ]);
    let node = NodeProcess::start(dir.path(), &dev, "dev");
    let mut c = node.client();
    let live = write_and_delete(&mut c);
    let (seen, pages) = scan_all(&mut c, "scan:*", 50);
    assert_eq!(seen, live, "exactly the live keys, no deleted one");
    assert!(pages > 1, "COUNT 50 over 200 keys takes several pages");
    assert_eq!(dbsize(&mut c), 201, "exact on one node: 200 + `other`");
    let keys = run(&mut c, &["KEYS", "scan:1?"]).expect("keys");
    let Value::Array(keys) = keys else {
        panic!("KEYS is an array")
    };
    assert_eq!(keys.len(), 0, "scan:10..19 were deleted");
    let Value::Array(keys) = run(&mut c, &["KEYS", "scan:2?"]).expect("keys") else {
        panic!("KEYS is an array")
    };
    assert_eq!(keys.len(), 0, "two-digit keys 20..29 were deleted too");
    let Value::Array(keys) = run(&mut c, &["KEYS", "scan:2??"]).expect("keys") else {
        panic!("KEYS is an array")
    };
    assert_eq!(keys.len(), 100);
    assert_eq!(
        run(&mut c, &["TYPE", "scan:150"]).expect("type"),
        Value::SimpleString("string".into())
    );
    assert_eq!(
        run(&mut c, &["TYPE", "scan:50"]).expect("type"),
        Value::SimpleString("none".into())
    );
    let Value::Array(time) = run(&mut c, &["TIME"]).expect("time") else {
        panic!("TIME is an array")
    };
    let [Value::BulkString(seconds), Value::BulkString(micros)] = time.as_slice() else {
        panic!("TIME is [seconds, microseconds]: {time:?}")
    };
    let seconds: u64 = String::from_utf8_lossy(seconds).parse().expect("seconds");
    let micros: u64 = String::from_utf8_lossy(micros).parse().expect("micros");
    assert!(seconds > 1_600_000_000 && micros < 1_000_000);
    assert!(error_text(run(&mut c, &["SCAN", "x"])).contains("invalid cursor"));
    // Issue 13: after a SIGKILL restart DBSIZE counted 5 for ~200 live keys.
    drop(c);
    node.kill();
    let node = NodeProcess::start(dir.path(), &dev, "dev-restarted");
    let mut c = node.client();
    assert_eq!(
        dbsize(&mut c),
        201,
        "recovered records are counted, tombstones not"
    );
    assert_eq!(scan_all(&mut c, "scan:*", 1000).0, live);
    assert_eq!(node.terminate().code(), Some(0));
}

const SECRET: &str = "4f1c2b9a7e6d5c4b3a2918f7e6d5c4b3\n";

fn node_args(dir: &Path, id: usize, peer_ports: &[u16]) -> Vec<String> {
    member_args(dir, id, peer_ports, "off")
}

#[test]
fn three_nodes_scan_every_live_key_once_and_estimate_the_size() {
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
            let args = node_args(dir.path(), id, &peer_ports);
            NodeProcess::start(dir.path(), &args, &format!("node{id}"))
        })
        .collect();
    for node in nodes.iter_mut() {
        node.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    let mut first = nodes[0].client();
    let live = write_and_delete(&mut first);
    // Through another coordinator than the writer: W = 2 and R = 2 of n = 3 overlap.
    let mut second = nodes[1].client();
    let (seen, _) = scan_all(&mut second, "scan:*", 50);
    assert_eq!(seen, live, "exactly the live keys, no deleted one");
    let size = dbsize(&mut second);
    assert!(
        (201..=215).contains(&size),
        "DBSIZE {size} for 201 live keys"
    );
    for node in nodes {
        assert_eq!(node.terminate().code(), Some(0));
    }
}
