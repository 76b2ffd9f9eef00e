//! Helpers for tests that run real `ringkv-node` processes: temp dirs, free ports, readiness by
//! reading the node's stdout (never by sleeping), clients, and cleanup on drop.
//!
//! Clients speak RESP through the `redis` crate (redis-rs), an implementation of the protocol
//! written independently of ours: a test passing through it shows that a real Redis client
//! understands the node, not only that our encoder agrees with our decoder. Our own
//! `RespClient` is kept for what a well-behaved client cannot do: send malformed bytes.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use redis::Value;
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

/// A port for a node to listen on later, taken from below Linux's ephemeral range
/// (32768-60999). A port found by binding port 0 comes from that range, and so does the source
/// port of every outgoing connection: between the pick and the node's bind, a peer link, proxy
/// or client connection could take it ("Address already in use": seen in the Jepsen harness and
/// the cluster tests under load). Below the range only a listener can hold a port, so ports are
/// handed out in turn from a start drawn from the process id (tests of one binary run as
/// threads of one process and never get the same port), each checked bindable.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    loop {
        let turn = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(turn < SPAN, "every port below the ephemeral range is taken");
        let port = u16::try_from(LOW + (start + turn) % SPAN).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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

    /// A RESP2 connection through the `redis` crate.
    pub fn client(&self) -> redis::Connection {
        connect(&self.client_addr)
    }

    /// A raw connection through our own client, for malformed input only.
    pub fn raw_client(&self) -> RespClient {
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

/// The arguments of a `--dev` node with clients on a free port and HTTP off, then `extra`.
pub fn dev_args(extra: &[&str]) -> Vec<String> {
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

/// The arguments of member `id` (1-based) of a local cluster whose peer ports are
/// `peer_ports` (one per member, in id order): clients on a free port, HTTP on `http` (`off` or
/// an address), the shared `secret` file and `base.toml` in `dir`, every other member as a peer.
pub fn member_args(dir: &Path, id: usize, peer_ports: &[u16], http: &str) -> Vec<String> {
    let mut all = args(&[
        "--node-id",
        &id.to_string(),
        "--client-listen",
        "127.0.0.1:0",
        "--http-listen",
        http,
        "--peer-listen",
        &format!("127.0.0.1:{}", peer_ports[id - 1]),
        "--cluster-secret-file",
        "secret",
        "--data-dir",
        &format!("data{id}"),
        "--config",
        dir.join("base.toml").to_str().expect("utf8 path"),
    ]);
    for (j, port) in peer_ports.iter().enumerate() {
        if j + 1 != id {
            all.push("--peer".into());
            all.push(format!("{}=127.0.0.1:{port}", j + 1));
        }
    }
    all
}

pub fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// A `redis` crate connection to a node's client address (`host:port`), RESP2.
pub fn connect(addr: &str) -> redis::Connection {
    connect_url(&format!("redis://{addr}/"))
}

/// A `redis` crate connection from a URL (for the password and `?protocol=resp3` forms); every
/// read and write waits at most [`LINE_WAIT`] (a hang guard).
pub fn connect_url(url: &str) -> redis::Connection {
    let connection = redis::Client::open(url)
        .and_then(|client| client.get_connection_with_timeout(LINE_WAIT))
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    connection
        .set_read_timeout(Some(LINE_WAIT))
        .and_then(|()| connection.set_write_timeout(Some(LINE_WAIT)))
        .expect("timeouts");
    connection
}

/// A command, the first word its name: `command(&["KV.GET", key, "LEVEL", "all"])`.
pub fn command(parts: &[&str]) -> redis::Cmd {
    let (name, rest) = parts.split_first().expect("a command name");
    let mut cmd = redis::cmd(name);
    for part in rest {
        cmd.arg(*part);
    }
    cmd
}

/// Runs `parts` on `connection`: the reply, or the error the server sent (an I/O or protocol
/// failure on our side panics, since no test expects one here).
pub fn run(connection: &mut redis::Connection, parts: &[&str]) -> Result<Value, redis::RedisError> {
    match command(parts).query::<Value>(connection) {
        Err(e) if e.code().is_none() => panic!("{parts:?}: not a server reply: {e}"),
        other => other,
    }
}

pub fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// The text of an error reply as the server sent it (`CODE detail`), or a panic naming what
/// came instead.
pub fn error_text(reply: Result<Value, redis::RedisError>) -> String {
    match reply {
        Err(e) => match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            (Some(code), None) => code.to_string(),
            _ => panic!("expected an error reply, got {e}"),
        },
        Ok(other) => panic!("expected an error reply, got {other:?}"),
    }
}

/// A map reply's value for `field` (RESP2 flat array or RESP3 map).
pub fn field(reply: &Value, name: &str) -> Value {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Map(pairs) => pairs.clone(),
        Value::Array(items) => items
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

/// The text of an error reply read by the raw client.
pub fn raw_error_text(reply: Reply) -> String {
    match reply {
        Reply::Error(text) => text,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// The admin token the multi-process tests configure (`[admin] token_file`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// One HTTP request without a body to a node's admin port: the status code and the body.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    http_with_token(addr, method, path, None)
}

/// [`http`] with `Authorization: Bearer TOKEN` when a token is given.
pub fn http_with_token(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to admin HTTP");
    stream
        .set_read_timeout(Some(LINE_WAIT))
        .expect("read timeout");
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// Polls `check` every `pace` until it returns `Ok`, or fails naming `what` and the last state
/// seen once `wait` has passed (a hang guard, not a timing assertion).
pub fn poll_until<T>(
    what: &str,
    wait: Duration,
    pace: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let waited = ringkv_node::clock::Clock::stopwatch();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if waited.elapsed() >= wait => panic!("{what}: not reached; last: {last}"),
            Err(_) => std::thread::sleep(pace),
        }
    }
}

/// Starts a one-node cluster (n = r = w = 1) with `limits` (TOML lines of the `[limits]` table) and the admin
/// port on, in `dir`; the node and its admin address.
pub fn start_with_admin(dir: &Path, limits: &str) -> (NodeProcess, String) {
    let http = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "node_id = 1\nclient_listen = \"127.0.0.1:0\"\nhttp_listen = \"{http}\"\n\
             data_dir = \"data\"\n[replication]\nn = 1\nr = 1\nw = 1\n[limits]\n{limits}\n"
        ),
    )
    .expect("config");
    let node = NodeProcess::start(dir, &args(&["--config", "node.toml"]), "node");
    (node, http)
}

/// A counter or gauge of a node's `/metrics` (its first series).
pub fn metric(http_addr: &str, name: &str) -> u64 {
    let (status, body) = http(http_addr, "GET", "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}
