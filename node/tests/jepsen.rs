//! Jepsen-style test of real `ringkv-node` processes (issue #17): five processes (four ring
//! members and a spare) under concurrent clients writing unique values, while a nemesis kills
//! and restarts nodes (SIGKILL), pauses them (SIGSTOP/SIGCONT), partitions them (a port-level
//! filter, below) or slows every link of one node, fills one node's disk, and joins the spare,
//! decommissions a member and removes a dead one. Every operation is recorded; after healing, the history is judged:
//!
//! - **lost writes**: every acknowledged write of a fresh key reads back (level `all`) with its
//!   value, and no acknowledged write to a shared key was overwritten by one that finished before
//!   it began (last-write-wins on one machine's clock orders those two);
//! - **values never written**: every read, during the run and at the end, returns nil or a value
//!   some client tried to write to that key;
//! - **convergence**: anti-entropy on every final member goes four rounds without finding a range
//!   that differs, and every member answers the same value for every key;
//! - **linearizability**: the operations at `LEVEL linearizable` (their own keys) are written as a
//!   ringkv register log and checked by the project's checker (`sim check-history --model
//!   register FILE` reads the same file).
//!
//! Partitions: every peer connection goes through an in-process TCP proxy per directed link
//! (node A's configuration names B's address as the proxy of link A→B), a port-level filter that
//! needs no root and leaves nothing behind: cutting a link closes its connections and refuses new
//! ones until it heals, as an iptables `REJECT --reject-with tcp-reset` would. A link can be cut
//! one way, or slowed (each forwarded chunk held 20 to 300 ms, as `tc netem delay` would). The full disk is a small tmpfs mounted on one node's data directory (needs root;
//! without it that fault is skipped and the summary says so) filled by a file; the tmpfs is
//! unmounted on drop, after every process is killed.
//!
//! `RINGKV_JEPSEN_SECONDS` sets the length of the fault phase (default 40: the CI run, about two
//! minutes in all), `RINGKV_JEPSEN_SEED` the nemesis and clients' random choices (the processes'
//! timing is not reproducible; the seed only fixes the plan). `scripts/jepsen.sh` runs it.
//! Every run writes its history, nemesis log and summary to a directory it prints; a failure
//! keeps it and names it.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redis::Value;
use ringkv_node::clock::{Clock, Stopwatch};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "9d2c4e6f8a1b3c5d7e9f0a2b4c6d8e0f\n";
/// Processes: ids 1..=4 start as ring members, 5 is the spare that joins.
const NODES: usize = 5;
const SPARE: usize = 5;
/// The member that decommissions (`leave`) during the run; it keeps running afterwards so that
/// it can hand over what it held.
const LEAVER: usize = 4;
/// The member killed for good and then removed by the operator.
const REMOVED: usize = 3;
/// The node whose data directory is a small tmpfs that the nemesis fills.
const DISK_NODE: usize = 2;
/// Size of that tmpfs.
const DISK_BYTES: u64 = 64 << 20;
/// Keys shared by the writers (many writes each, unique values).
const SHARED_KEYS: usize = 16;
/// Keys of the `LEVEL linearizable` clients.
const LIN_KEYS: usize = 4;
const WRITERS: usize = 4;
const LIN_CLIENTS: usize = 3;
/// Longest a client waits for one reply before recording the operation as indeterminate (a
/// paused coordinator never answers); the nodes' own deadline is `request_timeout_ms` = 1000.
const OP_WAIT: Duration = Duration::from_secs(4);
/// Longest any wait for a state (a ring, a quiet anti-entropy, a key's value) may take before
/// the run fails: a hang guard, generous for two loaded cores, not a timing assertion.
const SETTLE_WAIT: Duration = Duration::from_secs(180);
/// Pace of polling; what is waited for is always a state read back.
const POLL_PACE: Duration = Duration::from_millis(50);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// Polls `check` until it returns `Ok`, or fails naming `what` and the last state seen.
fn poll<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    poll_until(what, SETTLE_WAIT, POLL_PACE, check)
}

// ---------------------------------------------------------------------------------------------
// The port-level filter: one TCP proxy per directed peer link.

/// The connections a link carries, and whether it is cut.
#[derive(Default)]
struct LinkInner {
    cut: bool,
    /// Added to every chunk forwarded (a slow link), 0 for none.
    delay_ms: u64,
    next: u64,
    /// Both sockets of each proxied connection (clones), to close them on a cut.
    open: BTreeMap<u64, (TcpStream, TcpStream)>,
}

#[derive(Default)]
struct LinkState {
    inner: Mutex<LinkInner>,
    stopping: AtomicBool,
}

/// The proxy in front of one node's peer port, used only by one other node.
struct Link {
    port: u16,
    state: Arc<LinkState>,
}

impl Link {
    fn start(upstream_port: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a link proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(LinkState::default());
        let upstream: SocketAddr = format!("127.0.0.1:{upstream_port}")
            .parse()
            .expect("address");
        let shared = Arc::clone(&state);
        std::thread::spawn(move || accept_loop(listener, upstream, shared));
        Link { port, state }
    }

    /// Closes every connection and refuses new ones until [`Link::heal`].
    fn cut(&self) {
        let mut inner = self.state.inner.lock().expect("link lock");
        inner.cut = true;
        for (a, b) in std::mem::take(&mut inner.open).into_values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        let mut inner = self.state.inner.lock().expect("link lock");
        inner.cut = false;
        inner.delay_ms = 0;
    }

    /// Holds every chunk this link forwards for `delay_ms` before passing it on (order kept).
    fn slow(&self, delay_ms: u64) {
        self.state.inner.lock().expect("link lock").delay_ms = delay_ms;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so that it sees `stopping` and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<LinkState>) {
    for incoming in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(down) = incoming else { continue };
        if state.inner.lock().expect("link lock").cut {
            let _ = down.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(1)) else {
            let _ = down.shutdown(Shutdown::Both);
            continue;
        };
        let _ = (down.set_nodelay(true), up.set_nodelay(true));
        let (Ok(down2), Ok(up2), Ok(down3), Ok(up3)) = (
            down.try_clone(),
            up.try_clone(),
            down.try_clone(),
            up.try_clone(),
        ) else {
            continue;
        };
        let id = {
            let mut inner = state.inner.lock().expect("link lock");
            // A cut between the accept and here must close this connection too.
            if inner.cut {
                let _ = down.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
                continue;
            }
            inner.next += 1;
            let id = inner.next;
            inner.open.insert(id, (down3, up3));
            id
        };
        let (s1, s2) = (Arc::clone(&state), Arc::clone(&state));
        std::thread::spawn(move || pump(down, up, &s1, id));
        std::thread::spawn(move || pump(up2, down2, &s2, id));
    }
}

/// Copies one direction, holding each chunk for the link's current delay; when either side
/// ends, closes both (a half-open proxied connection would hide the close from the other node).
fn pump(mut from: TcpStream, mut to: TcpStream, state: &LinkState, id: u64) {
    use std::io::Read;
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay_ms = state.inner.lock().expect("link lock").delay_ms;
        if delay_ms > 0 {
            // The fault itself (a slow link), not a synchronisation.
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    state.inner.lock().expect("link lock").open.remove(&id);
}

// ---------------------------------------------------------------------------------------------
// The full disk: a tmpfs on one node's data directory.

struct SmallDisk {
    path: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of [`DISK_BYTES`] at `path`; `None` (with the reason) where that is not
    /// allowed (not root, no mount namespace rights).
    fn mount(path: &Path) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(SmallDisk {
            path: path.to_path_buf(),
            filler: path.join("filler"),
        })
    }

    /// Writes a file until the disk refuses more (1 MiB pieces, then 4 KiB, then single
    /// bytes); returns the bytes written.
    fn fill(&self) -> u64 {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("create the filler file");
        let mut written = 0u64;
        for piece in [1usize << 20, 4096, 1] {
            let chunk = vec![0xA5u8; piece];
            while file.write_all(&chunk).is_ok() {
                written += piece as u64;
            }
        }
        written
    }

    fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Member,
    Spare,
    Left,
    Removed,
}

struct Cluster {
    dir: PathBuf,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    http_ports: Vec<u16>,
    links: BTreeMap<(usize, usize), Link>,
    procs: BTreeMap<usize, NodeProcess>,
    paused: BTreeSet<usize>,
    roles: BTreeMap<usize, Role>,
    disk: Option<SmallDisk>,
    disk_skipped: Option<String>,
    /// Timestamped nemesis actions, for the run directory.
    log: Vec<String>,
    clock: Stopwatch,
}

impl Cluster {
    fn new(dir: &Path, clock: Stopwatch) -> Cluster {
        let ports = |_| free_port();
        let peer_ports: Vec<u16> = (0..NODES).map(ports).collect();
        let mut links = BTreeMap::new();
        for from in 1..=NODES {
            for to in 1..=NODES {
                if from != to {
                    links.insert((from, to), Link::start(peer_ports[to - 1]));
                }
            }
        }
        let (disk, disk_skipped) = match SmallDisk::mount(&dir.join(format!("data{DISK_NODE}"))) {
            Ok(disk) => (Some(disk), None),
            Err(reason) => (None, Some(reason)),
        };
        std::fs::write(dir.join("secret"), SECRET).expect("secret");
        std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).expect("admin token");
        Cluster {
            dir: dir.to_path_buf(),
            client_ports: (0..NODES).map(ports).collect(),
            peer_ports,
            http_ports: (0..NODES).map(ports).collect(),
            links,
            procs: BTreeMap::new(),
            paused: BTreeSet::new(),
            roles: (1..=NODES)
                .map(|id| {
                    (
                        id,
                        if id == SPARE {
                            Role::Spare
                        } else {
                            Role::Member
                        },
                    )
                })
                .collect(),
            disk,
            disk_skipped,
            log: Vec::new(),
            clock,
        }
    }

    fn note(&mut self, what: String) {
        let line = format!("{:>9.3}s {what}", self.clock.elapsed().as_secs_f64());
        self.log.push(line);
    }

    fn client_addr(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[id - 1])
    }

    fn http(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.http_ports[id - 1])
    }

    /// Node `id`'s configuration: every other node is a peer reached through the proxy of the
    /// link `id → peer`; fast gossip and anti-entropy so that changes settle within the run.
    fn write_config(&self, id: usize) {
        let peers: Vec<String> = (1..=NODES)
            .filter(|&j| j != id)
            .map(|j| {
                format!(
                    "{{ id = {j}, addr = \"127.0.0.1:{}\", initial_member = {} }}",
                    self.links[&(id, j)].port,
                    j != SPARE
                )
            })
            .collect();
        let text = format!(
            "node_id = {id}\n\
             initial_member = {}\n\
             client_listen = \"{}\"\n\
             peer_listen = \"127.0.0.1:{}\"\n\
             http_listen = \"{}\"\n\
             data_dir = \"data{id}\"\n\
             cluster_name = \"jepsen\"\n\
             cluster_secret_file = \"secret\"\n\
             peers = [{}]\n\
             [admin]\ntoken_file = \"admin-token\"\n\
             [replication]\nn = 3\nr = 2\nw = 2\nrequest_timeout_ms = 1000\n\
             [repair]\nanti_entropy_interval_ms = 200\n\
             anti_entropy_ranges_per_round = 1000\nanti_entropy_records_per_message_max = 1000\n\
             [membership]\ngossip_interval_ms = 100\nsuspect_after_ms = 500\ndown_after_ms = 1000\n",
            id != SPARE,
            self.client_addr(id),
            self.peer_ports[id - 1],
            self.http(id),
            peers.join(", "),
        );
        std::fs::write(self.dir.join(format!("node{id}.toml")), text).expect("config");
    }

    fn start(&mut self, id: usize) {
        self.write_config(id);
        let process = NodeProcess::start(
            &self.dir,
            &args(&["--config", &format!("node{id}.toml")]),
            &format!("node{id}-{}", self.log.len()),
        );
        self.procs.insert(id, process);
    }

    fn running(&self, id: usize) -> bool {
        self.procs.contains_key(&id) && !self.paused.contains(&id)
    }

    /// Ring members whose process is up and not paused.
    fn live_members(&self) -> Vec<usize> {
        (1..=NODES)
            .filter(|&id| self.roles[&id] == Role::Member && self.running(id))
            .collect()
    }

    fn members(&self) -> Vec<usize> {
        (1..=NODES)
            .filter(|&id| self.roles[&id] == Role::Member)
            .collect()
    }

    fn kill(&mut self, id: usize) {
        if let Some(process) = self.procs.remove(&id) {
            process.kill();
        }
        self.paused.remove(&id);
    }

    fn pause(&mut self, id: usize) {
        self.procs[&id].signal(nix::sys::signal::Signal::SIGSTOP);
        self.paused.insert(id);
    }

    fn resume(&mut self, id: usize) {
        if self.paused.remove(&id) {
            self.procs[&id].signal(nix::sys::signal::Signal::SIGCONT);
        }
    }

    /// Cuts every link between the two sides (one way: only `a → b`).
    fn partition(&self, a: &[usize], b: &[usize], one_way: bool) {
        for &x in a {
            for &y in b {
                self.links[&(x, y)].cut();
                if !one_way {
                    self.links[&(y, x)].cut();
                }
            }
        }
    }

    /// Delays every link into and out of `id`.
    fn slow_node(&self, id: usize, delay_ms: u64) {
        for (&(from, to), link) in &self.links {
            if from == id || to == id {
                link.slow(delay_ms);
            }
        }
    }

    fn heal(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    /// An admin `POST` to the first live member that accepts it; retried (a node may answer
    /// `409` until its failure detector agrees, or be unreachable) until the deadline.
    fn admin(&self, what: &str) -> String {
        poll(&format!("admin {what}"), || {
            let mut last = String::new();
            for id in self.live_members() {
                let (status, body) =
                    http_with_token(&self.http(id), "POST", what, Some(ADMIN_TOKEN));
                if status == 200 {
                    return Ok(body);
                }
                last = format!("node {id}: {status} {body}");
            }
            Err(last)
        })
    }

    /// Waits until every live member's `/ring` lists exactly the members this cluster expects.
    fn wait_for_ring(&self) {
        let expected = self.members();
        poll(&format!("rings converge on {expected:?}"), || {
            let seen: Vec<(usize, Vec<usize>)> = self
                .live_members()
                .into_iter()
                .map(|id| (id, ring_members(&self.http(id))))
                .collect();
            if seen.iter().all(|(_, members)| *members == expected) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes first (SIGKILL reaches a stopped process too), then the mount under them.
        self.procs.clear();
        self.disk.take();
    }
}

/// The ring member ids a node's `/ring` lists.
fn ring_members(addr: &str) -> Vec<usize> {
    let (status, body) = http(addr, "GET", "/ring");
    assert_eq!(status, 200, "{body}");
    let nodes = body
        .split_once("\"nodes\":[")
        .and_then(|(_, rest)| rest.split_once("],\"outside_ring\""))
        .map(|(nodes, _)| nodes)
        .unwrap_or_else(|| panic!("no node list in {body}"));
    nodes
        .split("\"id\":")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        })
        .collect()
}

/// A node's status of `other` in its `/ring` (`alive`, `suspect`, `down`, `left`).
fn status_seen(addr: &str, other: usize) -> Option<String> {
    let (_, body) = http(addr, "GET", "/ring");
    let entry = body.split(&format!("\"id\":{other},")).nth(1)?;
    let status = entry.split("\"status\":").nth(1)?;
    Some(status.split('"').nth(1)?.to_string())
}

/// The value of a metric with only the `node` label.
fn metric(addr: &str, name: &str) -> Option<u64> {
    let (_, body) = http(addr, "GET", "/metrics");
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Clients and the recorded history.

#[derive(Clone, Debug)]
enum Outcome {
    Ok,
    /// Refused: no effect (only reads are recorded so).
    Fail(String),
    /// Unknown: the write may or may not take effect.
    Info(String),
}

impl Outcome {
    /// One word and the reason, for `history.log`.
    fn describe(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_string(),
            Outcome::Fail(why) => format!("fail ({why})"),
            Outcome::Info(why) => format!("info ({why})"),
        }
    }
}

#[derive(Clone, Debug)]
struct Op {
    client: usize,
    node: usize,
    key: String,
    /// `Some(value)` for a write, `None` for a read.
    write: Option<String>,
    /// What a successful read returned (`None`: the key was absent).
    read: Option<String>,
    invoke_us: u64,
    complete_us: u64,
    outcome: Outcome,
}

/// One client's connection, moved to the next node when its node stops answering.
struct Session {
    addrs: Vec<(usize, String)>,
    at: usize,
    connection: Option<redis::Connection>,
}

impl Session {
    fn new(addrs: Vec<(usize, String)>, start: usize) -> Session {
        Session {
            addrs,
            at: start,
            connection: None,
        }
    }

    fn node(&self) -> usize {
        self.addrs[self.at % self.addrs.len()].0
    }

    fn next(&mut self) {
        self.connection = None;
        self.at += 1;
    }

    /// A connection to the current node, or the next one that accepts.
    fn connection(&mut self) -> Option<&mut redis::Connection> {
        if self.connection.is_none() {
            let (_, addr) = &self.addrs[self.at % self.addrs.len()];
            let connected = redis::Client::open(format!("redis://{addr}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|c| {
                    c.set_read_timeout(Some(OP_WAIT))?;
                    c.set_write_timeout(Some(OP_WAIT))?;
                    Ok(c)
                });
            match connected {
                Ok(c) => self.connection = Some(c),
                Err(_) => {
                    self.next();
                    return None;
                }
            }
        }
        self.connection.as_mut()
    }
}

/// The answer to one command: a reply, a server error (`code detail`), or a failure on the way
/// (timeout, reset), after which the connection is dropped.
enum Answer {
    Reply(Value),
    Error(String),
    Lost(String),
}

fn ask(session: &mut Session, parts: &[&str]) -> Option<(usize, Answer)> {
    let node = session.node();
    let connection = session.connection()?;
    let answer = match command(parts).query::<Value>(connection) {
        Ok(value) => Answer::Reply(value),
        Err(e) if e.code().is_some() => Answer::Error(format!(
            "{} {}",
            e.code().unwrap_or_default(),
            e.detail().unwrap_or_default()
        )),
        Err(e) => {
            session.next();
            Answer::Lost(e.to_string())
        }
    };
    Some((node, answer))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The single value of a `KV.GET` reply (`Ok(None)` when absent; `Err` for siblings or an
/// unexpected shape, which the judge reports).
fn kv_value(reply: &Value) -> Result<Option<String>, String> {
    let values = match reply {
        Value::Map(_) | Value::Array(_) => field(reply, "values"),
        other => return Err(format!("not a map: {other:?}")),
    };
    match values {
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Array(items) if items.len() == 1 => text(&items[0])
            .map(Some)
            .ok_or_else(|| format!("value not a string: {items:?}")),
        other => Err(format!("siblings under last-write-wins: {other:?}")),
    }
}

struct ClientContext {
    stop: Arc<AtomicBool>,
    clock: Stopwatch,
    addrs: Vec<(usize, String)>,
    seed: u64,
}

impl ClientContext {
    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A writer: fresh keys written once (`d:c:n`), and shared keys written and read by all
/// writers (`s:i`), every value unique (`client:sequence`).
fn writer(ctx: &ClientContext, client: usize) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ ((client as u64 + 1) * 0x9E37_79B9));
    let mut session = Session::new(ctx.addrs.clone(), client);
    let mut ops = Vec::new();
    let mut sequence = 0u64;
    let mut last_us = 0u64;
    let mut fresh: Vec<(String, String)> = Vec::new();
    while !ctx.stop.load(Ordering::Relaxed) {
        sequence += 1;
        let roll = rng.gen_range(0..100);
        let (key, write) = if roll < 40 {
            let key = format!("d:{client}:{sequence}");
            let value = format!("dv:{client}:{sequence}");
            fresh.push((key.clone(), value.clone()));
            (key, Some(value))
        } else if roll < 55 && !fresh.is_empty() {
            (fresh[rng.gen_range(0..fresh.len())].0.clone(), None)
        } else if roll < 80 {
            let key = format!("s:{}", rng.gen_range(0..SHARED_KEYS));
            (key, Some(format!("sv:{client}:{sequence}")))
        } else {
            (format!("s:{}", rng.gen_range(0..SHARED_KEYS)), None)
        };
        // Strictly after this client's previous completion, so that no two events of one client
        // share a time in the register log.
        let invoke_us = ctx.now_us().max(last_us + 1);
        let parts: Vec<&str> = match &write {
            Some(value) => vec!["SET", &key, value],
            None => vec!["GET", &key],
        };
        let Some((node, answer)) = ask(&mut session, &parts) else {
            // No node accepted a connection: nothing was sent. Pace, then try the next.
            std::thread::sleep(POLL_PACE);
            continue;
        };
        let complete_us = ctx.now_us().max(invoke_us);
        last_us = complete_us;
        let (outcome, read) = match (&write, answer) {
            (Some(_), Answer::Reply(Value::Okay)) => (Outcome::Ok, None),
            (Some(_), Answer::Reply(other)) => (Outcome::Info(format!("{other:?}")), None),
            (Some(_), Answer::Error(e) | Answer::Lost(e)) => (Outcome::Info(e), None),
            (None, Answer::Reply(Value::Nil)) => (Outcome::Ok, None),
            (None, Answer::Reply(value)) => match text(&value) {
                Some(v) => (Outcome::Ok, Some(v)),
                None => (Outcome::Fail(format!("unexpected reply {value:?}")), None),
            },
            (None, Answer::Error(e) | Answer::Lost(e)) => (Outcome::Fail(e), None),
        };
        ops.push(Op {
            client,
            node,
            key,
            write,
            read,
            invoke_us,
            complete_us,
            outcome,
        });
    }
    ops
}

/// A `LEVEL linearizable` client on the keys `l:i`: puts of unique numeric write ids
/// (`client * 10^9 + sequence`, never 0, which the register log reserves for "absent") and gets.
fn linearizable_client(ctx: &ClientContext, client: usize) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ ((client as u64 + 101) * 0x9E37_79B9));
    let mut session = Session::new(ctx.addrs.clone(), client);
    let mut ops = Vec::new();
    let mut sequence = 0u64;
    let mut last_us = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        sequence += 1;
        let key = format!("l:{}", rng.gen_range(0..LIN_KEYS));
        let write = rng
            .gen_bool(0.5)
            .then(|| (client as u64 * 1_000_000_000 + sequence).to_string());
        // Strictly after this client's previous completion, so that no two events of one client
        // share a time in the register log.
        let invoke_us = ctx.now_us().max(last_us + 1);
        let parts: Vec<&str> = match &write {
            Some(value) => vec!["KV.PUT", &key, value, "LEVEL", "linearizable"],
            None => vec!["KV.GET", &key, "LEVEL", "linearizable"],
        };
        let Some((node, answer)) = ask(&mut session, &parts) else {
            std::thread::sleep(POLL_PACE);
            continue;
        };
        let complete_us = ctx.now_us().max(invoke_us);
        last_us = complete_us;
        let (outcome, read) = match (&write, answer) {
            (Some(_), Answer::Reply(_)) => (Outcome::Ok, None),
            (Some(_), Answer::Error(e) | Answer::Lost(e)) => (Outcome::Info(e), None),
            (None, Answer::Reply(reply)) => match kv_value(&reply) {
                Ok(value) => (Outcome::Ok, value),
                // Recorded as a read of an impossible value: the judge reports it.
                Err(e) => (Outcome::Ok, Some(format!("<{e}>"))),
            },
            (None, Answer::Error(e) | Answer::Lost(e)) => (Outcome::Fail(e), None),
        };
        ops.push(Op {
            client: 100 + client,
            node,
            key,
            write,
            read,
            invoke_us,
            complete_us,
            outcome,
        });
    }
    ops
}

/// The linearizable operations as a ringkv register log (`sim check-history --model register`):
/// events in time order, a failed read as `fail`, an unknown write as `info`.
fn register_log(ops: &[Op]) -> String {
    let mut events: Vec<(u64, u8, String)> = Vec::new();
    for op in ops.iter().filter(|op| op.key.starts_with("l:")) {
        let invoke = match &op.write {
            Some(id) => format!("{} {} invoke {} put {id}", op.invoke_us, op.client, op.key),
            None => format!("{} {} invoke {} get", op.invoke_us, op.client, op.key),
        };
        let complete = match (&op.outcome, &op.write, &op.read) {
            (Outcome::Ok, Some(_), _) => format!("{} {} ok", op.complete_us, op.client),
            (Outcome::Ok, None, None) => format!("{} {} ok 0", op.complete_us, op.client),
            // A value that is no write id (siblings, garbage) cannot be said in this format;
            // the never-written judge reports it, and here it counts as no read.
            (Outcome::Ok, None, Some(v)) if v.parse::<u64>().is_err() => {
                format!("{} {} fail", op.complete_us, op.client)
            }
            (Outcome::Ok, None, Some(v)) => format!("{} {} ok {v}", op.complete_us, op.client),
            (Outcome::Fail(_), _, _) => format!("{} {} fail", op.complete_us, op.client),
            (Outcome::Info(_), _, _) => format!("{} {} info", op.complete_us, op.client),
        };
        // Invocations sort before completions at the same microsecond (a completion can never
        // precede its own invocation).
        events.push((op.invoke_us, 0, invoke));
        events.push((op.complete_us, 1, complete));
    }
    events.sort();
    let mut out = String::from("# ringkv jepsen harness: LEVEL linearizable operations\n");
    for (_, _, line) in events {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The nemesis.

#[derive(Default, Debug)]
struct FaultCounts {
    kills: u32,
    pauses: u32,
    partitions: u32,
    one_way_partitions: u32,
    full_disks: u32,
    slow_links: u32,
    joins: u32,
    leaves: u32,
    removes: u32,
}

/// The fault kinds, dealt from a shuffled deck so that even a short run has each: kill and
/// restart, pause, partition, one-way partition, partition with a pause, full disk, slow links.
const FAULT_DECK: [usize; 10] = [0, 0, 1, 2, 2, 3, 4, 5, 6, 6];

/// One fault of `kind` (see [`FAULT_DECK`]) on a random live member, held for a random time
/// while the clients run, then healed.
fn random_fault(
    cluster: &mut Cluster,
    kind: usize,
    rng: &mut ChaCha8Rng,
    counts: &mut FaultCounts,
) {
    let live = cluster.live_members();
    if live.is_empty() {
        return;
    }
    let hold = Duration::from_millis(rng.gen_range(500..3000));
    let victim = live[rng.gen_range(0..live.len())];
    match kind {
        0 => {
            cluster.note(format!("kill -9 node {victim}"));
            cluster.kill(victim);
            counts.kills += 1;
            std::thread::sleep(hold);
            cluster.note(format!("restart node {victim}"));
            cluster.start(victim);
        }
        1 => {
            cluster.note(format!("SIGSTOP node {victim}"));
            cluster.pause(victim);
            counts.pauses += 1;
            std::thread::sleep(hold);
            cluster.note(format!("SIGCONT node {victim}"));
            cluster.resume(victim);
        }
        2..=4 => {
            // Everyone with a process (spare and departed nodes too): a minority against the rest.
            let everyone: Vec<usize> = cluster.procs.keys().copied().collect();
            let size = rng.gen_range(1..=everyone.len().div_ceil(2).max(1));
            let mut shuffled = everyone.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.gen_range(0..=i));
            }
            let (a, b) = shuffled.split_at(size.min(shuffled.len()));
            let one_way = kind == 3;
            cluster.note(format!(
                "partition {a:?} {} {b:?}",
                if one_way { "-/->" } else { "|" }
            ));
            cluster.partition(a, b, one_way);
            if one_way {
                counts.one_way_partitions += 1;
            } else {
                counts.partitions += 1;
            }
            // Sometimes a pause on top of the partition (faults combine).
            let paused = (kind == 4).then_some(victim);
            if let Some(p) = paused {
                cluster.note(format!("SIGSTOP node {p} (during the partition)"));
                cluster.pause(p);
                counts.pauses += 1;
            }
            std::thread::sleep(hold);
            if let Some(p) = paused {
                cluster.note(format!("SIGCONT node {p}"));
                cluster.resume(p);
            }
            cluster.note("heal".to_string());
            cluster.heal();
        }
        6 => {
            // Every link into and out of one node delayed: replies arrive late, replicas lag the
            // coordinator, deadlines expire with the write applied on some replicas.
            let delay_ms = rng.gen_range(20..300);
            cluster.note(format!("links of node {victim} slowed by {delay_ms} ms"));
            cluster.slow_node(victim, delay_ms);
            counts.slow_links += 1;
            std::thread::sleep(hold);
            cluster.note("heal".to_string());
            cluster.heal();
        }
        _ => {
            if !cluster.procs.contains_key(&DISK_NODE) || cluster.roles[&DISK_NODE] != Role::Member
            {
                return;
            }
            let Some(disk) = &cluster.disk else { return };
            let filled = disk.fill();
            cluster.note(format!(
                "disk of node {DISK_NODE} full ({filled} filler bytes)"
            ));
            counts.full_disks += 1;
            std::thread::sleep(hold * 2);
            if let Some(disk) = &cluster.disk {
                disk.free();
            }
            cluster.note(format!("disk of node {DISK_NODE} freed"));
        }
    }
}

/// Membership changes at fixed points of the run: the spare joins, a member decommissions, a
/// member is killed for good and removed once the others judge it down.
fn membership_step(cluster: &mut Cluster, step: usize, counts: &mut FaultCounts) {
    match step {
        0 => {
            cluster.note(format!("admin join {SPARE}"));
            let body = cluster.admin(&format!("/admin/join?node={SPARE}"));
            cluster.note(format!("joined: {}", body.trim()));
            cluster.roles.insert(SPARE, Role::Member);
            counts.joins += 1;
        }
        1 => {
            cluster.note(format!("admin leave {LEAVER}"));
            let body = cluster.admin(&format!("/admin/leave?node={LEAVER}"));
            cluster.note(format!("left: {}", body.trim()));
            cluster.roles.insert(LEAVER, Role::Left);
            counts.leaves += 1;
        }
        _ => {
            cluster.note(format!("kill -9 node {REMOVED} for good"));
            cluster.kill(REMOVED);
            counts.kills += 1;
            cluster.roles.insert(REMOVED, Role::Removed);
            // A remove is refused until the contacted node judges the node down.
            let judge = cluster.live_members();
            poll(&format!("node {REMOVED} judged down"), || {
                let seen: Vec<Option<String>> = judge
                    .iter()
                    .map(|&id| status_seen(&cluster.http(id), REMOVED))
                    .collect();
                if seen.iter().all(|s| s.as_deref() == Some("down")) {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            });
            cluster.note(format!("admin remove {REMOVED}"));
            let body = cluster.admin(&format!("/admin/remove?node={REMOVED}"));
            cluster.note(format!("removed: {}", body.trim()));
            counts.removes += 1;
        }
    }
    cluster.wait_for_ring();
    cluster.note(format!(
        "every live member sees the ring {:?}",
        cluster.members()
    ));
}

// ---------------------------------------------------------------------------------------------
// Judging.

/// Waits until anti-entropy on `nodes` has run four more rounds on each without any range found
/// different (each round compares every range the node holds with one of its other replicas).
fn wait_for_anti_entropy_quiet(cluster: &Cluster, nodes: &[usize]) {
    let sample = || -> Result<Vec<(u64, u64)>, String> {
        nodes
            .iter()
            .map(|&id| {
                let addr = cluster.http(id);
                match (
                    metric(&addr, "ringkv_anti_entropy_rounds_total"),
                    metric(&addr, "ringkv_anti_entropy_ranges_differing_total"),
                ) {
                    (Some(r), Some(d)) => Ok((r, d)),
                    _ => Err(format!("no anti-entropy metrics on node {id}")),
                }
            })
            .collect()
    };
    let mut base = poll("anti-entropy metrics", sample);
    poll("anti-entropy finds every range in sync", || {
        let now = sample()?;
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

/// Reads `key` through node `id` at `level` on a kept connection, retrying refusals (the
/// cluster has healed, but a restarted node may still be reconnecting) until the deadline. A
/// reply that is not one value or none (siblings) comes back as an impossible value, which the
/// judge reports.
fn final_read(
    cluster: &Cluster,
    connections: &mut BTreeMap<usize, redis::Connection>,
    id: usize,
    key: &str,
    level: &str,
) -> Option<String> {
    poll(&format!("final read of {key} through node {id}"), || {
        let connection = connections
            .entry(id)
            .or_insert_with(|| connect(&cluster.client_addr(id)));
        match command(&["KV.GET", key, "LEVEL", level]).query::<Value>(connection) {
            Ok(reply) => Ok(kv_value(&reply).unwrap_or_else(|e| Some(format!("<{e}>")))),
            Err(e) => {
                if e.code().is_none() {
                    connections.remove(&id);
                }
                Err(e.to_string())
            }
        }
    })
}

#[derive(Default)]
struct Verdicts {
    problems: Vec<String>,
}

impl Verdicts {
    fn fail(&mut self, what: String) {
        if self.problems.len() < 200 {
            self.problems.push(what);
        }
    }
}

#[test]
fn real_processes_under_a_nemesis_lose_nothing_and_stay_linearizable() {
    let seconds = env_u64("RINGKV_JEPSEN_SECONDS", 40);
    let seed = env_u64("RINGKV_JEPSEN_SEED", 1);
    // Kept on failure (a panic anywhere leaves it, with every node's stderr); removed after a
    // clean run unless RINGKV_JEPSEN_KEEP=1.
    let dir = tempfile::Builder::new()
        .prefix("jepsen-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("run directory")
        .keep();
    println!(
        "jepsen: run directory {} (seed {seed}, {seconds} s of faults)",
        dir.display()
    );
    let clock = Clock::stopwatch();
    let mut cluster = Cluster::new(&dir, clock);
    if let Some(reason) = &cluster.disk_skipped {
        println!("jepsen: full-disk fault skipped: no tmpfs ({reason})");
    }
    for id in 1..=NODES {
        cluster.start(id);
    }
    for process in cluster.procs.values_mut() {
        process.wait_for_line(ringkv_node::server::PEERS_REACHED);
    }
    cluster.wait_for_ring();
    cluster.note("cluster up: ring [1, 2, 3, 4], spare 5".to_string());

    // Clients.
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<(usize, String)> = (1..=NODES)
        .map(|id| (id, cluster.client_addr(id)))
        .collect();
    let mut handles = Vec::new();
    for client in 0..WRITERS + LIN_CLIENTS {
        let ctx = ClientContext {
            stop: Arc::clone(&stop),
            clock,
            addrs: addrs.clone(),
            seed,
        };
        handles.push(std::thread::spawn(move || {
            if client < WRITERS {
                writer(&ctx, client)
            } else {
                linearizable_client(&ctx, client - WRITERS)
            }
        }));
    }

    // The nemesis: random faults, with the membership changes at 20%, 45% and 70% of the run.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = FaultCounts::default();
    let run = Clock::stopwatch();
    let total = Duration::from_secs(seconds);
    let mut step = 0;
    let mut deck: Vec<usize> = Vec::new();
    while run.elapsed() < total {
        let due = [0.2, 0.45, 0.7]
            .get(step)
            .is_some_and(|&f| run.elapsed() >= total.mul_f64(f));
        if due {
            membership_step(&mut cluster, step, &mut counts);
            step += 1;
        } else {
            if deck.is_empty() {
                deck = FAULT_DECK.to_vec();
                for i in (1..deck.len()).rev() {
                    deck.swap(i, rng.gen_range(0..=i));
                }
            }
            let kind = deck.pop().expect("a dealt fault");
            random_fault(&mut cluster, kind, &mut rng, &mut counts);
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
    }
    while step < 3 {
        membership_step(&mut cluster, step, &mut counts);
        step += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let mut ops: Vec<Op> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("a client thread"))
        .collect();
    ops.sort_by_key(|op| (op.invoke_us, op.client));

    // Heal everything: links, pauses, the disk; every member runs.
    cluster.heal();
    for id in cluster.paused.clone() {
        cluster.resume(id);
    }
    if let Some(disk) = &cluster.disk {
        disk.free();
    }
    for id in cluster.members() {
        if !cluster.procs.contains_key(&id) {
            cluster.start(id);
        }
    }
    cluster.note("healed: clients stopped, every member running".to_string());
    let members = cluster.members();
    cluster.wait_for_ring();
    wait_for_anti_entropy_quiet(&cluster, &members);
    cluster.note("anti-entropy quiet on every member".to_string());

    // The record: every operation and the nemesis log (written before judging, so that a
    // failure below leaves them).
    let mut history = String::new();
    for op in &ops {
        let _ = writeln!(
            history,
            "{} {} client={} node={} {} {} {:?} read={:?} outcome={}",
            op.invoke_us,
            op.complete_us,
            op.client,
            op.node,
            if op.write.is_some() { "write" } else { "read" },
            op.key,
            op.write,
            op.read,
            op.outcome.describe()
        );
    }
    std::fs::write(dir.join("history.log"), history).expect("write the history");
    std::fs::write(dir.join("nemesis.log"), cluster.log.join("\n") + "\n").expect("nemesis log");
    // The record of attempts: every value any client tried to write, per key.
    let mut attempted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in &ops {
        if let Some(value) = &op.write {
            attempted.entry(&op.key).or_default().insert(value);
        }
    }
    let mut verdicts = Verdicts::default();

    // Values never written, during the run.
    for op in &ops {
        if let (Outcome::Ok, Some(value)) = (&op.outcome, &op.read) {
            if !attempted
                .get(op.key.as_str())
                .is_some_and(|s| s.contains(value.as_str()))
            {
                verdicts.fail(format!(
                    "client {} read {}={value} through node {} at {} us: never written",
                    op.client, op.key, op.node, op.invoke_us
                ));
            }
        }
    }

    // Final reads: every key, through every member, at level all; members must agree.
    let keys: Vec<&str> = attempted.keys().copied().collect();
    let mut finals: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut connections = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        // Every member reads the shared and linearizable keys; fresh keys through one member
        // each in turn (thousands of them).
        let readers: Vec<usize> = if key.starts_with("d:") {
            vec![members[i % members.len()]]
        } else {
            members.clone()
        };
        let seen: Vec<(usize, Option<String>)> = readers
            .iter()
            .map(|&id| (id, final_read(&cluster, &mut connections, id, key, "all")))
            .collect();
        if seen.iter().any(|(_, v)| *v != seen[0].1) {
            verdicts.fail(format!(
                "{key}: members disagree after convergence: {seen:?}"
            ));
        }
        let value = seen[0].1.clone();
        if let Some(v) = &value {
            if !attempted[key].contains(v.as_str()) {
                verdicts.fail(format!("{key}: final value {v} never written"));
            }
        }
        finals.insert(key, value);
    }

    // Lost writes: an acknowledged write of a fresh key must be there with its value; an
    // acknowledged write to a shared key must not be beaten by a write that had finished before
    // it was invoked.
    let mut acknowledged = 0u64;
    let acked_at: BTreeMap<(&str, &str), u64> = ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok))
        .filter_map(|op| Some(((op.key.as_str(), op.write.as_deref()?), op.complete_us)))
        .collect();
    for op in ops.iter().filter(|op| op.write.is_some()) {
        let Outcome::Ok = op.outcome else { continue };
        let value = op.write.as_deref().expect("a write");
        if op.key.starts_with("l:") {
            continue;
        }
        acknowledged += 1;
        let last = finals.get(op.key.as_str()).cloned().flatten();
        if op.key.starts_with("d:") {
            if last.as_deref() != Some(value) {
                verdicts.fail(format!(
                    "lost write: {}={value} acknowledged by node {} at {} us, final value {last:?}",
                    op.key, op.node, op.complete_us
                ));
            }
        } else if let Some(final_value) = &last {
            let beaten_by = acked_at.get(&(op.key.as_str(), final_value.as_str()));
            if let Some(&older) = beaten_by.filter(|&&at| at < op.invoke_us) {
                verdicts.fail(format!(
                    "lost write: {}={value} acknowledged at {} us (invoked at {} us) was beaten by \
                     {final_value}, acknowledged at {older} us, before it began",
                    op.key, op.complete_us, op.invoke_us
                ));
            }
        } else {
            verdicts.fail(format!(
                "lost write: {}={value} acknowledged, key absent at the end",
                op.key
            ));
        }
    }

    // Linearizability of the `LEVEL linearizable` history, by the project's checker.
    let log_path = dir.join("linearizable.history");
    std::fs::write(&log_path, register_log(&ops)).expect("write the register log");
    let report_path = dir.join("linearizable-report.html");
    let report = ringkv_checker::check_history_file("register", &log_path, Some(&report_path))
        .unwrap_or_else(|e| panic!("check {}: {e}", log_path.display()));
    match &report.verdict {
        ringkv_checker::Verdict::Linearizable => {}
        ringkv_checker::Verdict::NotLinearizable { .. } => verdicts.fail(format!(
            "not linearizable: {} (report {})\n{report}",
            log_path.display(),
            report_path.display()
        )),
        ringkv_checker::Verdict::Unknown { .. } => {
            println!("jepsen: the checker could not decide within its limits: {report}")
        }
    }

    let count = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count();
    let summary = format!(
        "seed {seed}, {seconds} s of faults\n\
         operations {} (writes {}, reads {}): ok {}, failed {}, indeterminate {}\n\
         linearizable operations {} on {LIN_KEYS} keys; checker: {} ({} ms)\n\
         faults {counts:?}{}\n\
         acknowledged writes judged {acknowledged}; keys read at the end {}\n\
         problems {}\n",
        ops.len(),
        count(&|op| op.write.is_some()),
        count(&|op| op.write.is_none()),
        count(&|op| matches!(op.outcome, Outcome::Ok)),
        count(&|op| matches!(op.outcome, Outcome::Fail(_))),
        count(&|op| matches!(op.outcome, Outcome::Info(_))),
        count(&|op| op.key.starts_with("l:")),
        report.verdict,
        report.elapsed.as_millis(),
        cluster
            .disk_skipped
            .as_ref()
            .map_or(String::new(), |r| format!(" (full disk skipped: {r})")),
        finals.len(),
        verdicts.problems.len(),
    );
    std::fs::write(dir.join("summary.txt"), &summary).expect("summary");
    println!("jepsen: {summary}");

    // Every fault kind was exercised (the disk only where it could be mounted).
    assert!(
        counts.joins == 1 && counts.leaves == 1 && counts.removes == 1,
        "{counts:?}"
    );
    assert!(
        counts.kills >= 2 && counts.pauses >= 1 && counts.partitions >= 1,
        "too few faults for a meaningful run: {counts:?}"
    );
    if cluster.disk.is_some() && seconds >= 30 {
        assert!(
            counts.full_disks >= 1,
            "the disk was never filled: {counts:?}"
        );
    }
    let ok_writes = count(&|op| op.write.is_some() && matches!(op.outcome, Outcome::Ok));
    assert!(
        ok_writes >= 50,
        "only {ok_writes} acknowledged writes: the run proves little"
    );

    std::fs::write(dir.join("nemesis.log"), cluster.log.join("\n") + "\n").expect("nemesis log");
    // Processes stop before the directory (and the mount in it) goes.
    drop(cluster);
    assert!(
        verdicts.problems.is_empty(),
        "jepsen found {} problem(s); run directory kept: {} (history.log, nemesis.log, \
         linearizable.history, node stderr files)\n{}",
        verdicts.problems.len(),
        dir.display(),
        verdicts.problems.join("\n")
    );
    if std::env::var_os("RINGKV_JEPSEN_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
