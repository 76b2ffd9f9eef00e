//! A real `ringkv-node --dev` process spoken to over RESP: commands, limits, bad input, AUTH,
//! graceful shutdown and recovery after SIGKILL.

mod common;

use common::*;
use ringkv_node::resp::Reply;
use std::io::Write;

fn dev_args(extra: &[&str]) -> Vec<String> {
    let mut all = args(&[
        "--dev",
        "--client-listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
    ]);
    all.extend(args(extra));
    all
}

#[test]
fn redis_commands_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    assert_eq!(
        c.command(&["PING"]).expect("ping"),
        Reply::Simple("PONG".into())
    );
    assert_eq!(c.command(&["ECHO", "hi"]).expect("echo"), bulk("hi"));
    assert_eq!(c.command(&["SELECT", "0"]).expect("select"), ok());
    assert!(error_text(c.command(&["SELECT", "1"]).expect("select")).contains("out of range"));
    assert_eq!(c.command(&["SET", "k", "hello"]).expect("set"), ok());
    assert_eq!(c.command(&["GET", "k"]).expect("get"), bulk("hello"));
    assert_eq!(
        c.command(&["EXISTS", "k", "nope"]).expect("exists"),
        Reply::Integer(1)
    );
    assert_eq!(
        c.command(&["MSET", "a", "1", "b", "2"]).expect("mset"),
        ok()
    );
    assert_eq!(
        c.command(&["MGET", "a", "b", "nope"]).expect("mget"),
        Reply::Array(vec![bulk("1"), bulk("2"), Reply::Null])
    );
    assert_eq!(
        c.command(&["DEL", "k", "a", "nope"]).expect("del"),
        Reply::Integer(2)
    );
    assert_eq!(c.command(&["GET", "k"]).expect("get"), Reply::Null);
    let refused = error_text(c.command(&["SET", "k", "v", "NX"]).expect("set nx"));
    assert!(refused.contains("'NX' is not supported"), "{refused}");
    assert!(error_text(c.command(&["FLUSHALL"]).expect("flushall")).contains("unknown command"));

    let put = c
        .command(&["KV.PUT", "kv", "one", "LEVEL", "all"])
        .expect("kv.put");
    assert_eq!(field(&put, "acks"), Reply::Integer(1));
    let read = c
        .command(&["KV.GET", "kv", "LEVEL", "one"])
        .expect("kv.get");
    assert_eq!(field(&read, "values"), Reply::Array(vec![bulk("one")]));
    let Reply::Bulk(context) = field(&read, "context") else {
        panic!("context is a string")
    };
    let context = String::from_utf8(context.to_vec()).expect("utf8");
    let deleted = c
        .command(&["KV.DEL", "kv", "CONTEXT", &context])
        .expect("kv.del");
    assert_eq!(field(&deleted, "acks"), Reply::Integer(1));
    let read = c.command(&["KV.GET", "kv"]).expect("kv.get");
    assert_eq!(field(&read, "values"), Reply::Array(Vec::new()));
    assert!(
        error_text(c.command(&["KV.GET", "kv", "LEVEL", "5"]).expect("level")).contains("replicas")
    );

    // RESP3 after HELLO 3: maps and nulls change shape.
    let hello = c.command(&["HELLO", "3"]).expect("hello");
    assert!(matches!(&hello, Reply::Map(_)), "{hello:?}");
    assert_eq!(field(&hello, "proto"), Reply::Integer(3));
    assert_eq!(c.command(&["GET", "missing"]).expect("get"), Reply::Null);
    assert!(matches!(
        c.command(&["KV.GET", "b"]).expect("kv.get"),
        Reply::Map(_)
    ));

    assert_eq!(
        c.command(&["CLIENT", "SETNAME", "tester"])
            .expect("setname"),
        ok()
    );
    assert_eq!(
        c.command(&["CLIENT", "GETNAME"]).expect("getname"),
        bulk("tester")
    );
    let config = c.command(&["CONFIG", "GET", "appendonly"]).expect("config");
    assert_eq!(field(&config, "appendonly"), bulk("yes"));
    let Reply::Verbatim(info) = c.command(&["INFO"]).expect("info") else {
        panic!("info is text")
    };
    for section in ["# Server", "# Replication", "# Keyspace", "# ringkv"] {
        assert!(info.contains(section), "INFO lacks {section}");
    }
    assert!(matches!(
        c.command(&["COMMAND"]).expect("command"),
        Reply::Array(_)
    ));
    assert_eq!(c.command(&["QUIT"]).expect("quit"), ok());
    assert!(c.read_reply().is_err(), "the connection closes after QUIT");
}

#[test]
fn pipelined_commands_answer_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    let mut pipeline = Vec::new();
    for i in 0..200 {
        pipeline.extend(ringkv_node::resp_client::RespClient::encode(&[
            "SET".to_string(),
            format!("p{i}"),
            format!("v{i}"),
        ]));
        pipeline.extend(ringkv_node::resp_client::RespClient::encode(&[
            "GET".to_string(),
            format!("p{i}"),
        ]));
    }
    c.send_raw(&pipeline).expect("send");
    for i in 0..200 {
        assert_eq!(c.read_reply().expect("set"), ok());
        assert_eq!(c.read_reply().expect("get"), bulk(&format!("v{i}")));
    }
}

#[test]
fn bad_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut healthy = node.client();
    assert_eq!(
        healthy.command(&["SET", "safe", "kept"]).expect("set"),
        ok()
    );

    // A value over limits.value_bytes_max (1 MiB): a RESP error, and the connection stays usable.
    let mut c = node.client();
    let big = "x".repeat((1 << 20) + 1);
    let refused = error_text(c.command(&["SET", "big", big.as_str()]).expect("set big"));
    assert!(refused.contains("value_bytes_max"), "{refused}");
    assert_eq!(
        c.command(&["PING"]).expect("ping"),
        Reply::Simple("PONG".into())
    );
    // An empty key and an oversized key are refused the same way.
    assert!(error_text(c.command(&["SET", "", "v"]).expect("empty key")).contains("key"));

    // Malformed frames: an error, then that connection closes.
    for garbage in [
        &b"*1\r\n$99999999999\r\n"[..],
        b"*2\r\n:1\r\n",
        b"*abc\r\n",
        b"*1\r\n$3\r\nabcdef\r\n",
    ] {
        let mut bad = node.client();
        bad.send_raw(garbage).expect("send");
        let reply = bad.read_reply().expect("an error before the close");
        assert!(error_text(reply).contains("Protocol error"));
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
        healthy.command(&["GET", "safe"]).expect("get"),
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
    assert!(error_text(c.command(&["GET", "k"]).expect("get")).starts_with("NOAUTH"));
    assert!(error_text(c.command(&["AUTH", "wrong"]).expect("auth")).starts_with("WRONGPASS"));
    assert_eq!(c.command(&["AUTH", "s3cret"]).expect("auth"), ok());
    assert_eq!(c.command(&["SET", "k", "v"]).expect("set"), ok());
    let mut c3 = node.client();
    let hello = c3
        .command(&["HELLO", "3", "AUTH", "default", "s3cret"])
        .expect("hello");
    assert_eq!(field(&hello, "proto"), Reply::Integer(3));
    assert_eq!(c3.command(&["GET", "k"]).expect("get"), bulk("v"));
}

#[test]
fn shutdown_is_clean_and_sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev");
    let mut c = node.client();
    for i in 0..100 {
        assert_eq!(
            c.command(&["SET", &format!("k{i}"), &format!("a{i}")])
                .expect("set"),
            ok()
        );
    }
    let status = node.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev2");
    let mut c = node.client();
    for i in 0..100 {
        assert_eq!(
            c.command(&["GET", &format!("k{i}")]).expect("get"),
            bulk(&format!("a{i}"))
        );
    }
    // Acknowledged writes, then SIGKILL with no chance to flush anything.
    for i in 0..100 {
        assert_eq!(
            c.command(&["SET", &format!("k{i}"), &format!("b{i}")])
                .expect("set"),
            ok()
        );
    }
    node.kill();
    let node = NodeProcess::start(dir.path(), &dev_args(&[]), "dev3");
    let mut c = node.client();
    for i in 0..100 {
        assert_eq!(
            c.command(&["GET", &format!("k{i}")]).expect("get"),
            bulk(&format!("b{i}"))
        );
    }
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
