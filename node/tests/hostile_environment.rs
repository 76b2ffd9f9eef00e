//! A real `ringkv-node` in an environment that breaks under it (issue #17): the node must keep
//! serving what it can, and say truthfully what it cannot.

mod common;

use common::*;
use redis::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The text after `prefix` on the first stdout line that has it.
fn address_after(lines: &mut impl Iterator<Item = String>, prefix: &str) -> String {
    for line in lines.by_ref() {
        if let Some((_, rest)) = line.split_once(prefix) {
            return rest.trim().to_string();
        }
    }
    panic!("the node exited before printing {prefix:?}");
}

/// Issue #17 item 1: a log sink whose reader is gone (`ringkv-node 2>&1 | logger`, then the
/// logger restarts) made the first failed log write panic inside the task that logged, leaving
/// a process that answered PING while every GET and SET said "the node is shutting down". The
/// node must keep serving, count the lost lines, and still shut down cleanly.
#[test]
fn a_node_whose_log_reader_is_gone_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A pipe whose read end is closed before the node starts: every log write fails (EPIPE).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(node_binary())
        .args(args(&[
            "--dev",
            "--client-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--log",
            "debug",
        ]))
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(writer)
        .spawn()
        .expect("spawn ringkv-node");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let http_addr = address_after(&mut lines, "on http://");
    let client_addr = address_after(&mut lines, ringkv_node::server::LISTENING_CLIENTS);

    let mut c = connect(&client_addr);
    for i in 0..200 {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        assert_eq!(
            run(&mut c, &["SET", &key, &value]).expect("set"),
            Value::Okay
        );
        assert_eq!(run(&mut c, &["GET", &key]).expect("get"), bulk(&value));
    }
    let (status, metrics) = http(&http_addr, "GET", "/metrics");
    assert_eq!(status, 200);
    let lost: u64 = metrics
        .lines()
        .find(|l| l.starts_with("ringkv_log_write_errors_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("ringkv_log_write_errors_total in /metrics");
    assert!(lost > 0, "the log sink failed, so lines were lost: {lost}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "clean shutdown despite the log sink: {status}"
    );
}
