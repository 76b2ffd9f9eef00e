//! A real `ringkv-node --dev` process spoken to over RESP through the `redis` crate (and our raw
//! client for malformed input): commands, limits, bad input, AUTH, graceful shutdown and
//! recovery after SIGKILL.

mod common;

use common::*;
use redis::{Commands, Value};
use std::io::Write;

#[test]
fn redis_commands_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    assert_eq!(
        run(&mut c, &["PING"]).expect("ping"),
        Value::SimpleString("PONG".into())
    );
    assert_eq!(run(&mut c, &["ECHO", "hi"]).expect("echo"), bulk("hi"));
    assert_eq!(run(&mut c, &["SELECT", "0"]).expect("select"), Value::Okay);
    assert!(error_text(run(&mut c, &["SELECT", "1"])).contains("out of range"));
    assert_eq!(
        run(&mut c, &["SET", "k", "hello"]).expect("set"),
        Value::Okay
    );
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), bulk("hello"));
    assert_eq!(
        run(&mut c, &["EXISTS", "k", "nope"]).expect("exists"),
        Value::Int(1)
    );
    assert_eq!(
        run(&mut c, &["MSET", "a", "1", "b", "2"]).expect("mset"),
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["MGET", "a", "b", "nope"]).expect("mget"),
        Value::Array(vec![bulk("1"), bulk("2"), Value::Nil])
    );
    assert_eq!(
        run(&mut c, &["DEL", "k", "a", "nope"]).expect("del"),
        Value::Int(2)
    );
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), Value::Nil);
    // The crate's typed commands decode the same replies.
    let () = c.set("typed", "yes").expect("typed set");
    let typed: Option<String> = c.get("typed").expect("typed get");
    assert_eq!(typed.as_deref(), Some("yes"));
    let missing: Option<String> = c.get("nope").expect("typed get");
    assert_eq!(missing, None);
    // Conditional writes (issue #13 item 2), on the Paxos path whatever the level.
    assert_eq!(
        run(&mut c, &["SET", "nx", "a", "NX"]).expect("nx"),
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["SET", "nx", "b", "NX"]).expect("nx"),
        Value::Nil
    );
    assert_eq!(run(&mut c, &["GET", "nx"]).expect("get"), bulk("a"));
    assert_eq!(
        run(&mut c, &["SET", "xx", "a", "XX"]).expect("xx"),
        Value::Nil
    );
    assert_eq!(run(&mut c, &["GET", "xx"]).expect("get"), Value::Nil);
    assert_eq!(
        run(&mut c, &["SET", "nx", "c", "XX", "GET"]).expect("xx get"),
        bulk("a")
    );
    assert_eq!(
        run(&mut c, &["SET", "nx", "d", "GET"]).expect("get"),
        bulk("c")
    );
    assert_eq!(
        run(&mut c, &["KV.CAS", "nx", "VALUE", "c", "e"]).expect("cas"),
        Value::Int(0),
        "the key holds d, not c"
    );
    assert_eq!(
        run(&mut c, &["KV.CAS", "nx", "VALUE", "d", "e"]).expect("cas"),
        Value::Int(1)
    );
    assert_eq!(run(&mut c, &["GET", "nx"]).expect("get"), bulk("e"));
    assert_eq!(
        run(&mut c, &["KV.CAS", "empty", "VALUE", "", "x"]).expect("cas"),
        Value::Int(0),
        "an absent key does not hold the empty value"
    );
    assert_eq!(
        run(&mut c, &["KV.CAS", "empty", "ABSENT", ""]).expect("cas"),
        Value::Int(1)
    );
    assert_eq!(
        run(&mut c, &["KV.CAS", "empty", "ABSENT", "y"]).expect("cas"),
        Value::Int(0),
        "an empty value is present"
    );
    assert_eq!(
        run(&mut c, &["KV.CAS", "empty", "VALUE", "", "z"]).expect("cas"),
        Value::Int(1)
    );
    assert_eq!(run(&mut c, &["GET", "empty"]).expect("get"), bulk("z"));
    assert!(error_text(run(&mut c, &["FLUSHALL"])).contains("unknown command"));

    let put = run(&mut c, &["KV.PUT", "kv", "one", "LEVEL", "all"]).expect("kv.put");
    assert_eq!(field(&put, "acks"), Value::Int(1));
    let read = redis::cmd("KV.GET")
        .arg("kv")
        .arg("LEVEL")
        .arg("one")
        .query::<Value>(&mut c)
        .expect("kv.get");
    assert_eq!(field(&read, "values"), Value::Array(vec![bulk("one")]));
    let Value::BulkString(context) = field(&read, "context") else {
        panic!("context is a string")
    };
    let context = String::from_utf8(context).expect("utf8");
    let deleted = run(&mut c, &["KV.DEL", "kv", "CONTEXT", &context]).expect("kv.del");
    assert_eq!(field(&deleted, "acks"), Value::Int(1));
    let read = run(&mut c, &["KV.GET", "kv"]).expect("kv.get");
    assert_eq!(field(&read, "values"), Value::Array(Vec::new()));
    assert!(error_text(run(&mut c, &["KV.GET", "kv", "LEVEL", "5"])).contains("replicas"));

    // RESP3 after HELLO 3: maps and nulls change shape.
    let hello = run(&mut c, &["HELLO", "3"]).expect("hello");
    assert!(matches!(&hello, Value::Map(_)), "{hello:?}");
    assert_eq!(field(&hello, "proto"), Value::Int(3));
    assert_eq!(run(&mut c, &["GET", "missing"]).expect("get"), Value::Nil);
    assert!(matches!(
        run(&mut c, &["KV.GET", "b"]).expect("kv.get"),
        Value::Map(_)
    ));

    assert_eq!(
        run(&mut c, &["CLIENT", "SETNAME", "tester"]).expect("setname"),
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["CLIENT", "GETNAME"]).expect("getname"),
        bulk("tester")
    );
    let config = run(&mut c, &["CONFIG", "GET", "appendonly"]).expect("config");
    assert_eq!(field(&config, "appendonly"), bulk("yes"));
    let Value::VerbatimString { text: info, .. } = run(&mut c, &["INFO"]).expect("info") else {
        panic!("info is text")
    };
    for section in ["# Server", "# Replication", "# Keyspace", "# ringkv"] {
        assert!(info.contains(section), "INFO lacks {section}");
    }
    // n = r = w = 1: a read quorum always meets the write quorum (issue #17 item 8).
    assert!(info.contains("ringkv_read_write_overlap:yes"), "{info}");
    assert!(matches!(
        run(&mut c, &["COMMAND"]).expect("command"),
        Value::Array(_)
    ));
    assert_eq!(run(&mut c, &["QUIT"]).expect("quit"), Value::Okay);
    let after = redis::cmd("PING").query::<Value>(&mut c);
    assert!(
        after.as_ref().is_err_and(|e| e.code().is_none()),
        "the connection closes after QUIT: {after:?}"
    );

    // The crate's own RESP3 handshake (it sends HELLO 3 and reads the reply as a map).
    let mut resp3 = connect_url(&format!("redis://{}/?protocol=resp3", node.client_addr));
    assert_eq!(run(&mut resp3, &["GET", "b"]).expect("get"), bulk("2"));
    let read = run(&mut resp3, &["KV.GET", "b", "LEVEL", "one"]).expect("kv.get");
    assert!(matches!(&read, Value::Map(_)), "{read:?}");
    assert_eq!(field(&read, "values"), Value::Array(vec![bulk("2")]));
}

#[test]
fn pipelined_commands_answer_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    // The crate writes the whole pipeline before reading any reply.
    let mut pipeline = redis::pipe();
    for i in 0..200 {
        pipeline
            .cmd("SET")
            .arg(format!("p{i}"))
            .arg(format!("v{i}"))
            .cmd("GET")
            .arg(format!("p{i}"));
    }
    let replies: Vec<Value> = pipeline.query(&mut c).expect("pipeline");
    assert_eq!(replies.len(), 400);
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(pair[0], Value::Okay, "set {i}");
        assert_eq!(pair[1], bulk(&format!("v{i}")), "get {i}");
    }
}

/// redis-rs writes a whole blocking pipeline before reading any reply. One larger than the
/// sockets' buffers in both directions (about 22 MB of commands, 30 MB of replies) used to
/// deadlock: the node stopped reading while blocked writing replies the client was not yet
/// reading. Redis answers it; so must we.
#[test]
fn a_pipeline_larger_than_the_socket_buffers_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    let key = "k".repeat(200);
    let value = "v".repeat(256);
    assert_eq!(
        run(&mut c, &["SET", &key, &value]).expect("set"),
        Value::Okay
    );
    const GETS: usize = 100_000;
    let mut pipeline = redis::pipe();
    for _ in 0..GETS {
        pipeline.cmd("GET").arg(&key);
    }
    let replies: Vec<Value> = pipeline.query(&mut c).expect("pipeline");
    assert_eq!(replies.len(), GETS);
    assert!(replies.iter().all(|reply| *reply == bulk(&value)));
    assert_eq!(
        run(&mut c, &["PING"]).expect("ping"),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn bad_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut healthy = node.client();
    assert_eq!(
        run(&mut healthy, &["SET", "safe", "kept"]).expect("set"),
        Value::Okay
    );

    // A value over limits.value_bytes_max (1 MiB): a RESP error, and the connection stays usable.
    let mut c = node.client();
    let big = "x".repeat((1 << 20) + 1);
    let refused = error_text(run(&mut c, &["SET", "big", big.as_str()]));
    assert!(refused.contains("value_bytes_max"), "{refused}");
    assert_eq!(
        run(&mut c, &["PING"]).expect("ping"),
        Value::SimpleString("PONG".into())
    );
    // An empty key and an oversized key are refused the same way.
    assert!(error_text(run(&mut c, &["SET", "", "v"])).contains("key"));

    // Malformed frames (only our raw client sends these): an error, then that connection closes.
    for garbage in [
        &b"*1\r\n$99999999999\r\n"[..],
        b"*2\r\n:1\r\n",
        b"*abc\r\n",
        b"*1\r\n$3\r\nabcdef\r\n",
    ] {
        let mut bad = node.raw_client();
        bad.send_raw(garbage).expect("send");
        let reply = bad.read_reply().expect("an error before the close");
        assert!(raw_error_text(reply).contains("Protocol error"));
        assert!(
            bad.read_reply().is_err(),
            "connection closed after a protocol error"
        );
    }
    // Random bytes and truncated frames, then the peer vanishes.
    for seed in 0..20u8 {
        let mut raw = std::net::TcpStream::connect(&node.client_addr).expect("connect");
        let bytes: Vec<u8> = (0..200u32)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect();
        let _ = raw.write_all(&bytes);
        let _ = raw.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk");
    }
    assert_eq!(
        run(&mut healthy, &["GET", "safe"]).expect("get"),
        bulk("kept")
    );
    assert_eq!(node.terminate().code(), Some(0));
}

#[test]
fn a_password_is_required_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("password"), "s3cret\n").expect("write");
    let node = NodeProcess::start(
        dir.path(),
        &dev_args(&["--password-file", "password"]),
        "dev",
    );
    let mut c = node.client();
    assert!(error_text(run(&mut c, &["GET", "k"])).starts_with("NOAUTH"));
    assert!(error_text(run(&mut c, &["AUTH", "wrong"])).starts_with("WRONGPASS"));
    assert_eq!(run(&mut c, &["AUTH", "s3cret"]).expect("auth"), Value::Okay);
    assert_eq!(run(&mut c, &["SET", "k", "v"]).expect("set"), Value::Okay);
    let mut c3 = node.client();
    let hello = run(&mut c3, &["HELLO", "3", "AUTH", "default", "s3cret"]).expect("hello");
    assert_eq!(field(&hello, "proto"), Value::Int(3));
    assert_eq!(run(&mut c3, &["GET", "k"]).expect("get"), bulk("v"));

    // The crate's own handshakes with a password in the URL: AUTH user password on RESP2,
    // HELLO 3 AUTH on RESP3; a wrong password fails the connection.
    let addr = &node.client_addr;
    let mut url2 = connect_url(&format!("redis://default:s3cret@{addr}/"));
    assert_eq!(run(&mut url2, &["GET", "k"]).expect("get"), bulk("v"));
    let mut url3 = connect_url(&format!("redis://default:s3cret@{addr}/?protocol=resp3"));
    assert_eq!(run(&mut url3, &["GET", "k"]).expect("get"), bulk("v"));
    for url in [
        format!("redis://default:wrong@{addr}/"),
        format!("redis://default:wrong@{addr}/?protocol=resp3"),
    ] {
        let refused = redis::Client::open(url.as_str())
            .and_then(|client| client.get_connection_with_timeout(LINE_WAIT));
        assert!(refused.is_err(), "{url} connected with a wrong password");
    }
}

#[test]
fn shutdown_is_clean_and_sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    for i in 0..100 {
        assert_eq!(
            run(&mut c, &["SET", &format!("k{i}"), &format!("a{i}")]).expect("set"),
            Value::Okay
        );
    }
    let status = node.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev2");
    let mut c = node.client();
    for i in 0..100 {
        assert_eq!(
            run(&mut c, &["GET", &format!("k{i}")]).expect("get"),
            bulk(&format!("a{i}"))
        );
    }
    // Acknowledged writes, then SIGKILL with no chance to flush anything.
    for i in 0..100 {
        assert_eq!(
            run(&mut c, &["SET", &format!("k{i}"), &format!("b{i}")]).expect("set"),
            Value::Okay
        );
    }
    node.kill();
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev3");
    let mut c = node.client();
    for i in 0..100 {
        assert_eq!(
            run(&mut c, &["GET", &format!("k{i}")]).expect("get"),
            bulk(&format!("b{i}"))
        );
    }
}

/// What one writer knows of its keys: the last value each was acknowledged with, and values
/// whose write got no acknowledgement (in flight when the node died, or answered with an
/// error), which may or may not have taken effect.
#[derive(Default)]
struct WriterLog {
    acked: std::collections::BTreeMap<String, String>,
    maybe: std::collections::BTreeMap<String, Vec<String>>,
}

impl WriterLog {
    /// Checks every acknowledged key against the node, then takes what it read as the state
    /// from here on (a write that was in flight may have survived). Returns the keys that read
    /// neither their acknowledged value nor one that may have taken effect.
    fn check(&mut self, c: &mut redis::Connection) -> Vec<String> {
        let mut wrong = Vec::new();
        for (key, acked) in &mut self.acked {
            let got: Option<String> = c.get(key.as_str()).expect("get");
            let may = self.maybe.get(key);
            match got {
                Some(got) if got == *acked || may.is_some_and(|m| m.contains(&got)) => {
                    *acked = got;
                }
                other => wrong.push(format!("{key}: {:?}", other.map(|v| v[..16].to_string()))),
            }
        }
        self.maybe.clear();
        wrong
    }
}

/// SIGKILL while eight clients write 1 KiB values (group commits and a flush job in flight, the
/// WAL preallocated): after each restart every key reads its last acknowledged value, or a
/// later one whose write was never acknowledged. The kill comes once the writers have had
/// `ACKS_PER_CYCLE` writes acknowledged, more than a 16 MiB memtable holds.
#[test]
fn sigkill_under_concurrent_writes_loses_no_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    const WRITERS: usize = 8;
    const KEYS_PER_WRITER: u64 = 400;
    const ACKS_PER_CYCLE: u64 = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs: Vec<Arc<Mutex<WriterLog>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let mut checked = 0;
    for cycle in 0..3u64 {
        let node = NodeProcess::start(dir.path(), &dev_args(&[]), &format!("kill{cycle}"));
        let mut c = node.client();
        for log in &logs {
            let mut log = log.lock().expect("log");
            let wrong = log.check(&mut c);
            assert!(
                wrong.is_empty(),
                "cycle {cycle}: acknowledged writes lost: {wrong:?}"
            );
            checked += log.acked.len();
        }
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (enough_tx, enough) = mpsc::channel();
        let writers: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(w, log)| {
                let (log, acks, stop) = (Arc::clone(log), Arc::clone(&acks), Arc::clone(&stop));
                let (mut c, enough_tx) = (node.client(), enough_tx.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        // Keys in a writer's own range: its writes to a key are ordered.
                        let key = format!("w{w}-k{}", (n * 7919 + cycle * 31) % KEYS_PER_WRITER);
                        let value = format!("{:<1024}", format!("c{cycle}-w{w}-n{n}"));
                        // Not `run`: an I/O error is expected here, once the node is killed.
                        let reply = command(&["SET", &key, &value]).query::<Value>(&mut c);
                        let mut log = log.lock().expect("log");
                        if let Ok(Value::Okay) = reply {
                            log.acked.insert(key, value);
                            if acks.fetch_add(1, Ordering::Relaxed) + 1 == ACKS_PER_CYCLE {
                                let _ = enough_tx.send(());
                            }
                        } else {
                            log.maybe.entry(key).or_default().push(value);
                            if reply.is_err_and(|e| e.is_io_error() || e.is_connection_dropped()) {
                                return; // the node is gone
                            }
                        }
                    }
                })
            })
            .collect();
        drop(enough_tx);
        enough.recv().expect("enough acknowledged writes");
        node.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().expect("writer");
        }
    }
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "kill-final");
    let mut c = node.client();
    for log in &logs {
        let wrong = log.lock().expect("log").check(&mut c);
        assert!(wrong.is_empty(), "after the last kill: {wrong:?}");
    }
    assert!(checked > 0, "keys were checked after the kills");
}

#[test]
fn invalid_configuration_fails_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "node_id = 1\n[replication]\nn = 1\nw = 2\n").expect("write");
    let output = std::process::Command::new(node_binary())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("replication.w"), "{stderr}");

    std::fs::write(&config, "node_id = 1\nclient_port = 5\n").expect("write");
    let output = std::process::Command::new(node_binary())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("client_port"));
}

/// In vector-clock mode the node runs core's command machines: `SET` replaces what its read saw
/// (no sibling of its own making), `DEL` deletes what its read saw and counts it, a blind
/// `KV.PUT` beside a value becomes a sibling that plain `GET` reports as a conflict, and a
/// `KV.PUT` with the `KV.GET` context resolves it.
#[test]
fn vector_clock_set_and_del_replace_what_their_read_saw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(
        dir.path(),
        &dev_args(&["--conflict", "vector-clock"]),
        "dev-vc",
    );
    let mut c = node.client();
    assert_eq!(run(&mut c, &["SET", "k", "one"]).expect("set"), Value::Okay);
    assert_eq!(run(&mut c, &["SET", "k", "two"]).expect("set"), Value::Okay);
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), bulk("two"));
    // A write without a context is concurrent with what is there: two siblings.
    run(&mut c, &["KV.PUT", "k", "blind"]).expect("kv.put");
    let conflict = error_text(run(&mut c, &["GET", "k"]));
    assert!(conflict.starts_with("CONFLICT the key has 2"), "{conflict}");
    let read = run(&mut c, &["KV.GET", "k"]).expect("kv.get");
    let Value::Array(values) = field(&read, "values") else {
        panic!("values is an array")
    };
    assert_eq!(values.len(), 2, "{values:?}");
    // SET overwrites both siblings, since its read saw both.
    assert_eq!(
        run(&mut c, &["SET", "k", "three"]).expect("set"),
        Value::Okay
    );
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), bulk("three"));
    assert_eq!(
        run(&mut c, &["MSET", "a", "1", "k", "four"]).expect("mset"),
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["MGET", "a", "k"]).expect("mget"),
        Value::Array(vec![bulk("1"), bulk("four")])
    );
    assert_eq!(
        run(&mut c, &["DEL", "k", "a", "nope"]).expect("del"),
        Value::Int(2)
    );
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), Value::Nil);
    assert_eq!(run(&mut c, &["DEL", "k"]).expect("del"), Value::Int(0));
}
