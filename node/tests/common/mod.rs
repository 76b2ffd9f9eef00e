//! Helpers for tests that run real `ringkv-node` processes: temp dirs, free ports, readiness by
//! reading the node's stdout (never by sleeping), a blocking RESP client, and cleanup on drop.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use ringkv_node::resp::Reply;
use ringkv_node::resp_client::RespClient;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest a test waits for a node to print a line before failing (a hang guard, not a timing
/// assertion).
pub const LINE_WAIT: Duration = Duration::from_secs(60);

pub fn node_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringkv-node")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `ringkv-node`; killed (SIGKILL) on drop if still running.
pub struct NodeProcess {
    pub child: Child,
    pub client_addr: String,
    lines: mpsc::Receiver<String>,
    pub stderr_path: PathBuf,
}

impl NodeProcess {
    /// Starts `ringkv-node` with `args` in `cwd` and waits for its client address.
    pub fn start(cwd: &Path, args: &[String], name: &str) -> NodeProcess {
        let stderr_path = cwd.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(node_binary())
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn ringkv-node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = NodeProcess {
            child,
            client_addr: String::new(),
            lines,
            stderr_path,
        };
        let line = node.wait_for_line(ringkv_node::server::LISTENING_CLIENTS);
        node.client_addr = line
            .split(ringkv_node::server::LISTENING_CLIENTS)
            .nth(1)
            .expect("address")
            .trim()
            .to_string();
        node
    }

    /// Waits for a stdout line containing `needle`; panics with the node's stderr if the node
    /// exits first.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(LINE_WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => {
                    let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
                    panic!("no line with {needle:?} ({e:?}); node stderr:\n{stderr}");
                }
            }
        }
    }

    pub fn client(&self) -> RespClient {
        RespClient::connect(&self.client_addr, Duration::from_secs(30)).expect("connect")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait")
    }

    /// SIGKILL, then reaps.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn bulk(text: &str) -> Reply {
    Reply::Bulk(bytes::Bytes::copy_from_slice(text.as_bytes()))
}

pub fn ok() -> Reply {
    Reply::Simple("OK".to_string())
}

/// The text of an error reply, or a panic naming what came instead.
pub fn error_text(reply: Reply) -> String {
    match reply {
        Reply::Error(text) => text,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// A map reply's value for `field` (RESP2 flat array or RESP3 map).
pub fn field(reply: &Reply, name: &str) -> Reply {
    let pairs: Vec<(Reply, Reply)> = match reply {
        Reply::Map(pairs) => pairs.clone(),
        Reply::Array(items) => items
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect(),
        other => panic!("not a map: {other:?}"),
    };
    pairs
        .into_iter()
        .find(|(k, _)| *k == bulk(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name} in {reply:?}"))
}
