//! `ringkv`: the client and admin CLI.
//!
//! ```sh
//! ringkv set greeting hello          # against 127.0.0.1:6380 (or --addr)
//! ringkv get greeting
//! ringkv kv-get greeting --level all # siblings, causal context, acks
//! ringkv local-cluster --nodes 3     # three ringkv-node processes on loopback; Ctrl-C stops them
//! ringkv local-cluster --tls         # ... with TLS (throwaway CA in ringkv-local/tls/ca.pem)
//! ringkv --tls --cacert ringkv-local/tls/ca.pem set greeting hello
//! ringkv admin status                # the ring, requests, hints, repair as a table (--json: raw)
//! ringkv admin join 4 --node-http 127.0.0.1:9380   # spare 4 joins the ring; gossip spreads it
//! ringkv admin leave 2               # node 2 decommissions (streams its data out)
//! ringkv admin remove 3              # dead node 3 leaves the ring (refused unless it is down)
//! ringkv admin repair                # start a full anti-entropy sweep now; schedule and progress
//! ringkv admin snapshot --name nightly # checkpoint into <data_dir>/snapshots/nightly; prints it
//! ```

use clap::{Parser, Subcommand};
use ringkv_node::local_cluster::{Cluster, ClusterPlan};
use ringkv_node::resp::Reply;
use ringkv_node::resp_client::{render, RespClient};
use ringkv_node::status::StatusSnapshot;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The ringkv client and admin tool.
#[derive(Parser, Debug)]
#[command(name = "ringkv", version)]
struct Args {
    /// A node's client (RESP) address.
    #[arg(long, global = true, default_value = "127.0.0.1:6380")]
    addr: String,
    /// Client password, if the node requires one.
    #[arg(long, global = true, env = "RINGKV_PASSWORD")]
    password: Option<String>,
    /// Talk TLS to the client port (the node's `[tls] client_cert_file`); needs --cacert.
    /// With local-cluster: TLS on every client port and peer link, with a throwaway CA and
    /// node certificates written to DIR/tls (`redis-cli --tls --cacert DIR/tls/ca.pem`).
    #[arg(long, global = true)]
    tls: bool,
    /// CA certificate (PEM) the node's certificate must be signed by.
    #[arg(long, global = true, value_name = "FILE", requires = "tls")]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM) to present, for nodes with `client_certificates_required`.
    #[arg(
        long = "cert",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(
        long = "key",
        global = true,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete keys.
    Del {
        /// The keys.
        keys: Vec<String>,
    },
    /// Read a key with every sibling, its causal context and the replicas that answered.
    KvGet {
        /// The key.
        key: String,
        /// one, quorum, all, linearizable or a count.
        #[arg(long)]
        level: Option<String>,
    },
    /// Write a key at a level, optionally following a read's context.
    KvPut {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// one, quorum, all, linearizable or a count.
        #[arg(long)]
        level: Option<String>,
        /// A context from kv-get.
        #[arg(long)]
        context: Option<String>,
    },
    /// Any command, as redis-cli would send it.
    Raw {
        /// The command and its arguments.
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Start N ringkv-node processes on loopback; Ctrl-C or SIGTERM stops them cleanly.
    LocalCluster {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Directory for configs, logs and data.
        #[arg(long, default_value = "ringkv-local")]
        dir: PathBuf,
        /// First client port (6380, 6381, ...; peers at +1000, admin HTTP at +3000); 0 picks
        /// free ports.
        #[arg(long, default_value_t = 6380)]
        base_port: u16,
        /// Replicas per key (default min(3, nodes)).
        #[arg(long)]
        n: Option<u8>,
        /// The ringkv-node binary (default: next to this one).
        #[arg(long)]
        node_binary: Option<PathBuf>,
    },
    /// Administer a running node through its admin HTTP port.
    Admin {
        /// The node's admin HTTP address.
        #[arg(
            long,
            visible_alias = "node-http",
            default_value = "127.0.0.1:9380",
            global = true
        )]
        http: String,
        /// File holding the node's admin token, sent with every command that changes something
        /// (the node's `[admin] token_file`, or `<data_dir>/admin.token` that it creates).
        #[arg(
            long,
            value_name = "FILE",
            env = "RINGKV_ADMIN_TOKEN_FILE",
            global = true
        )]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        action: AdminCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// The node's view at a glance: the ring (status, location, ownership), requests, hint
    /// queues, anti-entropy and storage, as a table (the status page at http://ADDR/ live).
    Status {
        /// Print the raw `/status.json` document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The ring as JSON.
    Ring,
    /// The Prometheus metrics.
    Metrics,
    /// Join a node to the ring (its address and location come from the contacted node's
    /// configured peers, e.g. a spare with `initial_member = false`). Gossip spreads the new
    /// ring; anti-entropy moves the data.
    Join {
        /// The node to join.
        node: u32,
    },
    /// Decommission a node: it leaves the ring and streams its ranges to their new owners.
    Leave {
        /// The node that leaves.
        node: u32,
        /// Even if the ring would keep fewer members than n.
        #[arg(long)]
        force: bool,
    },
    /// Remove a dead node from the ring; survivors re-replicate its ranges. Refused unless the
    /// contacted node's failure detector judges it down.
    Remove {
        /// The dead node.
        node: u32,
        /// Even if the ring would keep fewer members than n.
        #[arg(long)]
        force: bool,
    },
    /// Anti-entropy: start a full sweep of every range now, and show the schedule and progress.
    Repair,
    /// Take a snapshot of the node's storage engine into `<data_dir>/snapshots/NAME` (hard
    /// links: cheap, on the node's disk; copy it elsewhere to keep it) and print its directory.
    /// Restore with `ringkv-node --restore-from DIR` on an empty data directory (node README,
    /// "Snapshots and restore").
    Snapshot {
        /// The snapshot's name (letters, digits, `.`, `_`, `-`); default `snapshot-<unix ms>`.
        #[arg(long)]
        name: Option<String>,
    },
}

fn http_get(addr: &str, path: &str) -> Result<String, String> {
    http_request(addr, "GET", path, None)
}

/// One request without a body; the body of a 200 answer, else the status line and body.
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<String, String> {
    let mut stream =
        std::net::TcpStream::connect(addr).map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        Some((head, body)) => Err(format!("{}: {body}", head.lines().next().unwrap_or(""))),
        None => Err("malformed HTTP response".to_string()),
    }
}

/// The admin token from `--token-file`, if given.
fn read_token(file: Option<&PathBuf>) -> Result<Option<String>, String> {
    let Some(path) = file else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ringkv_node::config::admin_token_of(bytes.trim_ascii())
        .map(Some)
        .map_err(|why| format!("{}: {why}", path.display()))
}

/// A membership command: prints the node's JSON answer; a refusal is an error with the reason.
fn admin_post(addr: &str, path: &str, token_file: Option<&PathBuf>) -> Result<bool, String> {
    let token = read_token(token_file)?;
    http_request(addr, "POST", path, token.as_deref()).map(|body| {
        print!("{body}");
        true
    })
}

/// `POST /admin/snapshot`, printing the snapshot's directory alone (for scripts: `DIR=$(ringkv
/// admin snapshot)`).
fn admin_snapshot(
    addr: &str,
    name: Option<&str>,
    token_file: Option<&PathBuf>,
) -> Result<bool, String> {
    if let Some(name) = name {
        ringkv_node::snapshot::validate_snapshot_name(name)?;
    }
    let token = read_token(token_file)?;
    let path = match name {
        Some(name) => format!("/admin/snapshot?name={name}"),
        None => "/admin/snapshot".to_string(),
    };
    let body = http_request(addr, "POST", &path, token.as_deref())?;
    let dir = body
        .split_once("\"dir\":\"")
        .and_then(|(_, rest)| json_string_prefix(rest))
        .ok_or_else(|| format!("unexpected answer: {body}"))?;
    println!("{dir}");
    Ok(true)
}

/// The JSON string whose text (after the opening quote) starts `rest`, unescaped.
fn json_string_prefix(rest: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn force_query(force: bool) -> &'static str {
    if force {
        "&force=true"
    } else {
        ""
    }
}

/// Connects to `--addr`, over TLS with `--tls`.
fn connect(args: &Args) -> Result<RespClient, String> {
    let timeout = Duration::from_secs(30);
    let connected = if args.tls {
        let ca = args
            .cacert
            .as_deref()
            .ok_or("--tls needs --cacert FILE (the CA that signed the node's certificate)")?;
        let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
        let config = ringkv_node::tls::client_config(ca, identity)?;
        RespClient::connect_tls(&args.addr, timeout, std::sync::Arc::new(config))
    } else {
        RespClient::connect(&args.addr, timeout)
    };
    connected.map_err(|e| format!("cannot connect to {}: {e}", args.addr))
}

fn run_command(args: &Args, command: Vec<String>) -> Result<bool, String> {
    let mut client = connect(args)?;
    if let Some(password) = &args.password {
        let reply = client
            .command(&["AUTH", password.as_str()])
            .map_err(|e| e.to_string())?;
        if let Reply::Error(e) = reply {
            return Err(e);
        }
    }
    // RESP3 where the node offers it, so maps (KV.GET, KV.PUT) print as key => value.
    // A TLS-only port answers a plaintext client with an error and closes: report that rather
    // than the broken pipe the next command would meet.
    if let Ok(Reply::Error(e)) = client.command(&["HELLO", "3"]) {
        if e.contains("requires TLS") {
            return Err(e);
        }
    }
    let reply = client.command(&command).map_err(|e| e.to_string())?;
    let mut out = String::new();
    render(&reply, 0, &mut out);
    println!("{out}");
    Ok(!matches!(reply, Reply::Error(_)))
}

fn local_cluster(plan: ClusterPlan) -> Result<bool, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let cluster = Cluster::start(&plan)?;
    println!("press Ctrl-C (or send SIGTERM) to stop the cluster");
    runtime.block_on(ringkv_node::server::termination_signal());
    println!("stopping the cluster");
    Ok(cluster.stop() == 0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.command {
        Cmd::Get { key } => run_command(&args, vec!["GET".into(), key.clone()]),
        Cmd::Set { key, value } => {
            run_command(&args, vec!["SET".into(), key.clone(), value.clone()])
        }
        Cmd::Del { keys } => {
            let mut command = vec!["DEL".to_string()];
            command.extend(keys.iter().cloned());
            run_command(&args, command)
        }
        Cmd::KvGet { key, level } => {
            let mut command = vec!["KV.GET".to_string(), key.clone()];
            if let Some(level) = level {
                command.extend(["LEVEL".to_string(), level.clone()]);
            }
            run_command(&args, command)
        }
        Cmd::KvPut {
            key,
            value,
            level,
            context,
        } => {
            let mut command = vec!["KV.PUT".to_string(), key.clone(), value.clone()];
            if let Some(level) = level {
                command.extend(["LEVEL".to_string(), level.clone()]);
            }
            if let Some(context) = context {
                command.extend(["CONTEXT".to_string(), context.clone()]);
            }
            run_command(&args, command)
        }
        Cmd::Raw { args: raw } => run_command(&args, raw.clone()),
        Cmd::LocalCluster {
            nodes,
            dir,
            base_port,
            n,
            node_binary,
        } => {
            let node_binary = node_binary.clone().unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("ringkv-node")))
                    .unwrap_or_else(|| PathBuf::from("ringkv-node"))
            });
            if !(1..=16).contains(nodes) {
                Err("--nodes must be between 1 and 16".to_string())
            } else {
                local_cluster(ClusterPlan {
                    nodes: *nodes,
                    dir: std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
                    base_port: *base_port,
                    node_binary,
                    n: *n,
                    tls: args.tls,
                })
            }
        }
        Cmd::Admin {
            http,
            token_file,
            action,
        } => match action {
            AdminCmd::Status { json } => http_get(http, "/status.json").and_then(|body| {
                if *json {
                    print!("{body}");
                } else {
                    let status: StatusSnapshot = serde_json::from_str(&body)
                        .map_err(|e| format!("{http} sent an unreadable /status.json: {e}"))?;
                    print!("{}", status.to_table());
                }
                Ok(true)
            }),
            AdminCmd::Ring => http_get(http, "/ring").map(|body| {
                print!("{body}");
                true
            }),
            AdminCmd::Metrics => http_get(http, "/metrics").map(|body| {
                print!("{body}");
                true
            }),
            AdminCmd::Join { node } => admin_post(
                http,
                &format!("/admin/join?node={node}"),
                token_file.as_ref(),
            ),
            AdminCmd::Leave { node, force } => admin_post(
                http,
                &format!("/admin/leave?node={node}{}", force_query(*force)),
                token_file.as_ref(),
            ),
            AdminCmd::Remove { node, force } => admin_post(
                http,
                &format!("/admin/remove?node={node}{}", force_query(*force)),
                token_file.as_ref(),
            ),
            AdminCmd::Repair => admin_post(http, "/admin/repair", token_file.as_ref()),
            AdminCmd::Snapshot { name } => {
                admin_snapshot(http, name.as_deref(), token_file.as_ref())
            }
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ringkv: {e}");
            ExitCode::FAILURE
        }
    }
}
