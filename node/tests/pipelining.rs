//! A pipelined connection batches (issue #15): the data commands of a pipeline on distinct keys
//! are in flight together, so their writes share fsyncs, while what the client sees is what
//! running the commands one by one would show.

mod common;

use common::*;
use redis::Value;

#[test]
fn a_pipeline_of_writes_on_distinct_keys_shares_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, http) = start_with_admin(dir.path(), "");
    let mut c = node.client();
    const SETS: usize = 64;
    let before = metric(&http, "ringkv_storage_syncs_total");
    let mut pipeline = redis::pipe();
    for i in 0..SETS {
        pipeline
            .cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"));
    }
    let replies: Vec<Value> = pipeline.query(&mut c).expect("pipeline");
    assert_eq!(replies, vec![Value::Okay; SETS]);
    let syncs = metric(&http, "ringkv_storage_syncs_total") - before;
    // One command at a time, each SET waits for its own fsync: 64 of them.
    assert!(
        syncs >= 1,
        "the writes were acknowledged, so at least one fsync ran"
    );
    assert!(
        syncs <= SETS as u64 / 4,
        "{syncs} fsyncs for {SETS} pipelined SETs"
    );
    for i in 0..SETS {
        assert_eq!(
            run(&mut c, &["GET", &format!("k{i}")]).expect("get"),
            bulk(&format!("v{i}"))
        );
    }
}

#[test]
fn a_pipeline_sees_its_own_writes_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("SET")
        .arg("a")
        .arg("1")
        .cmd("SET")
        .arg("b")
        .arg("1")
        .cmd("SET")
        .arg("a")
        .arg("2") // the same key: waits for the first SET of "a"
        .cmd("GET")
        .arg("a")
        .cmd("MSET")
        .arg("c")
        .arg("1")
        .arg("b")
        .arg("2")
        .cmd("MGET")
        .arg("a")
        .arg("b")
        .arg("c")
        .cmd("CLIENT")
        .arg("SETNAME")
        .arg("p") // a session command in between
        .cmd("CLIENT")
        .arg("GETNAME")
        .cmd("INCR")
        .arg("n") // not pipelined with others: runs alone
        .cmd("INCR")
        .arg("n")
        .cmd("DEL")
        .arg("a")
        .arg("c")
        .cmd("EXISTS")
        .arg("a")
        .arg("b")
        .arg("c")
        .cmd("GET")
        .arg("a")
        .cmd("SET")
        .arg("a")
        .arg("3")
        .cmd("GET")
        .arg("a");
    let replies: Vec<Value> = pipeline.query(&mut c).expect("pipeline");
    let expected = vec![
        Value::Okay,
        Value::Okay,
        Value::Okay,
        bulk("2"),
        Value::Okay,
        Value::Array(vec![bulk("2"), bulk("2"), bulk("1")]),
        Value::Okay,
        bulk("p"),
        Value::Int(1),
        Value::Int(2),
        Value::Int(2),
        Value::Int(1),
        Value::Nil,
        Value::Okay,
        bulk("3"),
    ];
    assert_eq!(replies, expected);
}

/// What holds the request path is visible (issue #15): every batch of inputs and every storage
/// maintenance step is timed in a histogram, and a write that fills the memtable (its flush runs
/// inside the batch) is among the batches counted.
#[test]
fn driver_batches_and_maintenance_steps_are_timed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A 64 KiB memtable and a 1 ms maintenance tick: a few hundred writes flush and get steps.
    let storage = "\n[storage]\nmemtable_bytes_max = 65536\nmaintenance_interval_ms = 1\n";
    let (node, http) = start_with_admin(dir.path(), storage);
    let mut c = node.client();
    let batches_before = metric(&http, "ringkv_driver_batch_duration_seconds_count");
    let value = "v".repeat(1024);
    const SETS: usize = 256;
    for i in 0..SETS {
        assert_eq!(
            run(&mut c, &["SET", &format!("k{i}"), &value]).expect("set"),
            Value::Okay
        );
    }
    let batches = metric(&http, "ringkv_driver_batch_duration_seconds_count") - batches_before;
    assert!(
        batches >= SETS as u64,
        "{batches} batches timed for {SETS} SETs sent one at a time"
    );
    // Storage counters are published at most every 100 ms: polled, not read once.
    published(
        &http,
        "ringkv_storage_flushes_total",
        "a flush (256 KiB through a 64 KiB memtable)",
    );
    let steps = published(
        &http,
        "ringkv_storage_maintenance_duration_seconds_count",
        "a timed maintenance step",
    );
    assert!(steps >= 1);
}

/// The first non-zero value of metric `name`, polled until the node publishes one.
fn published(http: &str, name: &str, what: &str) -> u64 {
    poll_until(
        what,
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(10),
        || match metric(http, name) {
            0 => Err(format!("{name} still 0")),
            value => Ok(value),
        },
    )
}
