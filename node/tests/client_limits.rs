//! Client memory and time are bounded for the node as a whole (issue #17 item 4): a global
//! budget for buffered input, a deadline for a command being received, an optional idle
//! timeout, and loopback slots kept for an operator past the connection limit.

mod common;

use common::*;
use redis::Value;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Everything the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(LINE_WAIT)).expect("timeout");
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    String::from_utf8_lossy(&text).to_string()
}

#[test]
fn half_sent_large_commands_cannot_take_more_than_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget: u64 = 24 << 20;
    let (node, http_addr) = start_with_admin(
        dir.path(),
        &format!("client_buffer_bytes_total_max = {budget}"),
    );
    // Ten clients each send 5 MiB of a 7 MiB SET and then wait: 50 MiB against a 24 MiB budget.
    let body = 7 << 20;
    let mut clients: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(&node.client_addr).expect("connect");
            stream
                .write_all(format!("*3\r\n$3\r\nSET\r\n$2\r\nbk\r\n${body}\r\n").as_bytes())
                .expect("header");
            // The server may close this connection while we write: that is the point.
            let _ = stream.write_all(&vec![b'x'; 5 << 20]);
            stream
        })
        .collect();
    // The node closes large offenders with an error (written before it is counted) ...
    let waited = ringkv_node::clock::Clock::stopwatch();
    while metric(&http_addr, "ringkv_client_closed_over_budget_total") == 0 {
        assert!(waited.elapsed() < LINE_WAIT, "no connection was closed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut messages = Vec::new();
    for stream in &mut clients {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut reply = [0u8; 256];
        if let Ok(n) = stream.read(&mut reply) {
            messages.push(String::from_utf8_lossy(&reply[..n]).to_string());
        }
    }
    assert!(
        messages.iter().any(|m| m.contains("client memory budget")),
        "{messages:?}"
    );
    // ... and what the others hold stays near the budget (each may be one read past it).
    let buffered = metric(&http_addr, "ringkv_client_buffered_bytes");
    assert!(
        buffered <= budget + 10 * (1 << 20),
        "{buffered} bytes buffered against a budget of {budget}"
    );
    // Everyone else is served meanwhile.
    let mut c = node.client();
    assert_eq!(run(&mut c, &["SET", "k", "v"]).expect("set"), Value::Okay);
    assert_eq!(run(&mut c, &["GET", "k"]).expect("get"), bulk("v"));
    drop(clients);
}

#[test]
fn a_command_must_arrive_within_its_deadline_and_idle_connections_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, http_addr) = start_with_admin(
        dir.path(),
        "command_receive_timeout_ms = 300\nclient_idle_timeout_ms = 300",
    );
    // Slowloris: the start of a command, then nothing.
    let mut slow = TcpStream::connect(&node.client_addr).expect("connect");
    slow.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel")
        .expect("write");
    let said = read_to_close(&mut slow);
    assert!(said.contains("did not arrive whole"), "{said:?}");
    // An idle connection is closed without a word.
    let mut idle = TcpStream::connect(&node.client_addr).expect("connect");
    assert_eq!(read_to_close(&mut idle), "");
    assert_eq!(
        metric(&http_addr, "ringkv_client_closed_slow_command_total"),
        1
    );
    assert_eq!(metric(&http_addr, "ringkv_client_closed_idle_total"), 1);
    // A client that keeps talking is served throughout.
    let mut c = node.client();
    for i in 0..20 {
        let key = format!("k{i}");
        assert_eq!(run(&mut c, &["SET", &key, "v"]).expect("set"), Value::Okay);
    }
}

#[test]
fn loopback_keeps_a_way_in_past_the_connection_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = start_with_admin(
        dir.path(),
        "connections_max = 2\nconnections_reserved_loopback = 1",
    );
    let mut held: Vec<redis::Connection> = (0..3).map(|_| node.client()).collect();
    for c in &mut held {
        assert_eq!(
            run(c, &["PING"]).expect("ping"),
            Value::SimpleString("PONG".into())
        );
    }
    let mut refused = TcpStream::connect(&node.client_addr).expect("connect");
    assert!(
        read_to_close(&mut refused).contains("max number of clients"),
        "the fourth connection is refused"
    );
}
