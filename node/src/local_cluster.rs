//! `ringkv local-cluster`: N real `ringkv-node` processes on loopback, each with its own
//! configuration file and data directory, stopped cleanly (SIGTERM, then wait) on Ctrl-C or
//! SIGTERM. With `tls`, every client port and peer link speaks TLS with certificates from a
//! throwaway CA written to `DIR/tls` ([`crate::tls::write_throwaway_pki`]).

use crate::server::{LISTENING_CLIENTS, PEERS_REACHED};
use rand::RngCore;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    /// Number of nodes.
    pub nodes: usize,
    /// Directory holding configs, logs and data.
    pub dir: PathBuf,
    /// First client port (peers at +1000, admin HTTP at +3000); 0 picks free ports.
    pub base_port: u16,
    /// The `ringkv-node` binary.
    pub node_binary: PathBuf,
    /// Replication factor.
    pub n: Option<u8>,
    /// TLS on client ports and peer links (a throwaway CA and node certificates in `dir/tls`).
    pub tls: bool,
}

/// Ports of one node.
#[derive(Clone, Copy, Debug)]
pub struct NodePorts {
    /// Client (RESP) port.
    pub client: u16,
    /// Peer port.
    pub peer: u16,
    /// Admin HTTP port.
    pub http: u16,
}

/// A port the nodes can listen on, below Linux's ephemeral range (32768-60999): a port found by
/// binding port 0 comes from that range, where any outgoing connection's source port can take it
/// before the node binds it ("Address already in use" under load). Ports are tried in turn from
/// a start drawn from the process id, each checked bindable.
fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    loop {
        let turn = NEXT.fetch_add(1, Ordering::Relaxed);
        if turn >= SPAN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "every port from 10000 to 31999 is taken",
            ));
        }
        let port = u16::try_from(LOW + (start + turn) % SPAN).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// The ports of every node.
pub fn plan_ports(nodes: usize, base_port: u16) -> Result<Vec<NodePorts>, String> {
    (0..nodes)
        .map(|i| {
            if base_port == 0 {
                let pick = || free_port().map_err(|e| format!("cannot pick a free port: {e}"));
                Ok(NodePorts {
                    client: pick()?,
                    peer: pick()?,
                    http: pick()?,
                })
            } else {
                let offset = u16::try_from(i).map_err(|_| "too many nodes".to_string())?;
                let port = |delta: u16| {
                    base_port
                        .checked_add(delta)
                        .and_then(|p| p.checked_add(offset))
                        .ok_or_else(|| {
                            format!("--base-port {base_port} leaves no room for {nodes} nodes")
                        })
                };
                Ok(NodePorts {
                    client: port(0)?,
                    peer: port(1000)?,
                    http: port(3000)?,
                })
            }
        })
        .collect()
}

/// Writes the secret and one configuration file per node; returns the config paths.
pub fn write_configs(plan: &ClusterPlan, ports: &[NodePorts]) -> Result<Vec<PathBuf>, String> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        format!("cannot {what} {}: {e}", path.display())
    };
    std::fs::create_dir_all(&plan.dir).map_err(|e| io("create", &plan.dir, e))?;
    let secret_path = plan.dir.join("cluster.secret");
    if !secret_path.exists() {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&secret_path, hex + "\n").map_err(|e| io("write", &secret_path, e))?;
    }
    let pki = if plan.tls {
        let names: Vec<String> = (1..=ports.len()).map(|id| format!("node{id}")).collect();
        Some(crate::tls::write_throwaway_pki(
            &plan.dir.join("tls"),
            &names,
        )?)
    } else {
        None
    };
    let mut paths = Vec::new();
    for (i, own) in ports.iter().enumerate() {
        let id = i + 1;
        let mut text = format!(
            "# Written by `ringkv local-cluster`.\n\
             node_id = {id}\n\
             rack = \"rack{id}\"\n\
             client_listen = \"127.0.0.1:{}\"\n\
             peer_listen = \"127.0.0.1:{}\"\n\
             http_listen = \"127.0.0.1:{}\"\n\
             data_dir = \"{}\"\n\
             cluster_name = \"local\"\n\
             cluster_secret_file = \"{}\"\n\
             peers = [\n",
            own.client,
            own.peer,
            own.http,
            plan.dir.join(format!("node{id}")).display(),
            secret_path.display(),
        );
        for (j, other) in ports.iter().enumerate() {
            if j != i {
                text.push_str(&format!(
                    "  {{ id = {}, addr = \"127.0.0.1:{}\", rack = \"rack{}\" }},\n",
                    j + 1,
                    other.peer,
                    j + 1
                ));
            }
        }
        text.push_str("]\n");
        if let Some(n) = plan.n {
            text.push_str(&format!("[replication]\nn = {n}\n"));
        }
        if let Some(pki) = &pki {
            // One certificate per node serves its client port and its peer links.
            let (cert, key) = &pki.nodes[i];
            text.push_str(&format!(
                "[tls]\n\
                 client_cert_file = \"{cert}\"\n\
                 client_key_file = \"{key}\"\n\
                 peer_cert_file = \"{cert}\"\n\
                 peer_key_file = \"{key}\"\n\
                 ca_file = \"{ca}\"\n",
                cert = cert.display(),
                key = key.display(),
                ca = pki.ca_file.display(),
            ));
        }
        let path = plan.dir.join(format!("node{id}.toml"));
        std::fs::write(&path, text).map_err(|e| io("write", &path, e))?;
        paths.push(path);
    }
    Ok(paths)
}

/// A started cluster.
pub struct Cluster {
    children: Vec<Child>,
}

enum Line {
    Ready(usize, String),
    Reached(usize),
    Exited(usize),
}

impl Cluster {
    /// Starts the nodes and waits until each listens for clients and has reached its peers.
    pub fn start(plan: &ClusterPlan) -> Result<Cluster, String> {
        let ports = plan_ports(plan.nodes, plan.base_port)?;
        let configs = write_configs(plan, &ports)?;
        let mut cluster = Cluster {
            children: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        for (i, config) in configs.iter().enumerate() {
            let log_path = plan.dir.join(format!("node{}.log", i + 1));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let mut child = Command::new(&plan.node_binary)
                .arg("--config")
                .arg(config)
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", plan.node_binary.display()))?;
            let stdout = child.stdout.take();
            cluster.children.push(child);
            let tx = tx.clone();
            std::thread::spawn(move || {
                if let Some(stdout) = stdout {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        println!("[node{}] {line}", i + 1);
                        if let Some(addr) = line.split(LISTENING_CLIENTS).nth(1) {
                            let _ = tx.send(Line::Ready(i, addr.trim().to_string()));
                        }
                        if line.contains(PEERS_REACHED) {
                            let _ = tx.send(Line::Reached(i));
                        }
                    }
                }
                let _ = tx.send(Line::Exited(i));
            });
        }
        drop(tx);
        let mut ready = vec![false; plan.nodes];
        let mut addresses = vec![String::new(); plan.nodes];
        let mut reached = vec![plan.nodes == 1; plan.nodes];
        while !(ready.iter().all(|r| *r) && reached.iter().all(|r| *r)) {
            match rx.recv() {
                Ok(Line::Ready(i, addr)) => {
                    ready[i] = true;
                    addresses[i] = addr;
                }
                Ok(Line::Reached(i)) => reached[i] = true,
                Ok(Line::Exited(i)) => {
                    return Err(format!(
                        "node{} exited during start; see {}",
                        i + 1,
                        plan.dir.join(format!("node{}.log", i + 1)).display()
                    ));
                }
                Err(mpsc::RecvError) => return Err("every node exited during start".to_string()),
            }
        }
        println!(
            "local cluster of {} nodes ready; clients: {}",
            plan.nodes,
            addresses.join(" ")
        );
        if plan.tls {
            let (host, port) = addresses[0]
                .rsplit_once(':')
                .unwrap_or(("127.0.0.1", "6380"));
            println!(
                "TLS on: redis-cli --tls --cacert {} -h {host} -p {port} PING",
                plan.dir.join("tls").join("ca.pem").display()
            );
        }
        let _ = std::io::stdout().flush();
        Ok(cluster)
    }

    /// Sends SIGTERM to every node and waits for each; returns how many exited unsuccessfully.
    pub fn stop(mut self) -> usize {
        self.terminate()
    }

    fn terminate(&mut self) -> usize {
        for child in &self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let mut failed = 0;
        for (i, child) in self.children.iter_mut().enumerate() {
            match child.wait() {
                Ok(status) if status.success() => println!("node{} stopped cleanly", i + 1),
                Ok(status) => {
                    failed += 1;
                    println!("node{} stopped: {status}", i + 1);
                }
                Err(e) => {
                    failed += 1;
                    println!("node{}: {e}", i + 1);
                }
            }
        }
        self.children.clear();
        failed
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.terminate();
        }
    }
}
