//! `ringkv-node`: the ringkv server.
//!
//! ```sh
//! ringkv-node --dev                      # one node on 127.0.0.1:6380, data in ./ringkv-data
//! ringkv-node --config node.toml         # a cluster member; flags override the file
//! ringkv-node --config node.toml --restore-from backup/nightly   # restore an empty data_dir
//! ```

use clap::Parser;
use ringkv_node::config::{parse_peer_short, FileConfig, PeerSpec, PeerTable};
use std::path::PathBuf;
use std::process::ExitCode;

/// Why not the system allocator: a GET frees ~29 allocations (request, record, reply buffers) and
/// glibc's `free` with chunk consolidation was 20% of a GET's instructions under callgrind;
/// mimalloc's thread-local free lists cost a fraction of that (benches/README.md, issue #15).
/// Its v2 line, not v3 (the crate's default): v3 sends every allocation above 1 KiB through its
/// generic aligned path (the mimalloc crate always asks for an alignment), 1,555 instructions
/// per 1 KiB SET against v2's ~700 under callgrind; SET 24,879 -> 24,201 instructions in all,
/// GET and the simulator unchanged (gossip-100: 1.4324G instructions either way).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ringkv server: a Dynamo-style replicated key-value store speaking the Redis protocol.
#[derive(Parser, Debug)]
#[command(name = "ringkv-node", version)]
struct Args {
    /// Start a single node with defaults on 127.0.0.1 (client port 6380) and data in
    /// ./ringkv-data; other flags still override.
    #[arg(long)]
    dev: bool,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id (unique and stable).
    #[arg(long)]
    node_id: Option<u32>,
    /// Datacenter.
    #[arg(long)]
    datacenter: Option<String>,
    /// Rack.
    #[arg(long)]
    rack: Option<String>,
    /// Client (RESP) listen address, host:port (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    client_listen: Option<String>,
    /// Peer listen address.
    #[arg(long, value_name = "ADDR")]
    peer_listen: Option<String>,
    /// Admin HTTP listen address, or "off".
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A peer as id=host:port (repeatable; with --spare-peer, replaces the file's list).
    #[arg(long = "peer", value_name = "ID=ADDR")]
    peers: Vec<String>,
    /// A spare peer as id=host:port: its address is known but it is not in the initial ring
    /// (repeatable; with --peer, replaces the file's list).
    #[arg(long = "spare-peer", value_name = "ID=ADDR")]
    spare_peers: Vec<String>,
    /// Whether this node is in the initial ring (false: a spare to join later).
    #[arg(long)]
    initial_member: Option<bool>,
    /// Cluster name.
    #[arg(long)]
    cluster_name: Option<String>,
    /// File holding the cluster secret.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// File holding the client password (AUTH).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Redis's protected mode: refuse a non-loopback client listener without a password
    /// (default true).
    #[arg(long)]
    protected_mode: Option<bool>,
    /// Threads running the driver, client connections and peer links (default 1: the whole
    /// request path on one thread, as redis-server runs).
    #[arg(long, value_name = "N")]
    worker_threads: Option<usize>,
    /// File holding the admin token (default: <data-dir>/admin.token, created on first start).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Replicas per key.
    #[arg(long)]
    n: Option<u8>,
    /// Default read quorum.
    #[arg(long)]
    r: Option<u8>,
    /// Default write quorum.
    #[arg(long)]
    w: Option<u8>,
    /// Default level: one, quorum, all or a count.
    #[arg(long)]
    consistency: Option<String>,
    /// Conflict mode: lww or vector-clock.
    #[arg(long)]
    conflict: Option<String>,
    /// Allow fallback replicas (true/false).
    #[arg(long)]
    sloppy_quorum: Option<bool>,
    /// Coordinator deadline per request, in milliseconds.
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// Before starting, restore the data directory (which must be empty) from this snapshot
    /// of this node (`ringkv admin snapshot`); the node then starts as a replacement with a new
    /// data epoch and anti-entropy brings back what was written after the snapshot. Give it for
    /// one start only: later starts on the restored data are refused with it.
    #[arg(long, value_name = "DIR")]
    restore_from: Option<PathBuf>,
    /// Log filter (tracing syntax), default "info"; RUST_LOG also works.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Validate the configuration (reading the secret, password and token files), print what
    /// the node would run with, and exit: 0 if valid, 2 if not. Binds nothing and leaves the
    /// data directory untouched, so a deployment can check a generated file before starting.
    #[arg(long)]
    check_config: bool,
}

impl Args {
    fn file_config(&self) -> Result<FileConfig, String> {
        let mut file = match (&self.config, self.dev) {
            (Some(path), false) => FileConfig::load(path).map_err(|e| e.to_string())?,
            (Some(_), true) => return Err("--dev and --config are exclusive".to_string()),
            (None, true) => FileConfig::dev(),
            (None, false) => {
                return Err(
                    "nothing to run: pass --dev for a single local node, or --config FILE"
                        .to_string(),
                )
            }
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field { file.$field = Some(v.clone()); }
            )*};
        }
        set!(
            node_id,
            datacenter,
            rack,
            client_listen,
            peer_listen,
            http_listen,
            data_dir,
            cluster_name,
            cluster_secret_file,
            password_file,
            initial_member,
            protected_mode,
            worker_threads
        );
        if let Some(path) = &self.admin_token_file {
            file.admin.token_file = Some(path.clone());
        }
        macro_rules! set_replication {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    let value = toml::Value::try_from(v)
                        .map_err(|e| format!("--{}: {e}", stringify!($field)))?;
                    file.set_cluster_setting(stringify!($field), value);
                }
            )*};
        }
        set_replication!(
            n,
            r,
            w,
            consistency,
            conflict,
            sloppy_quorum,
            request_timeout_ms
        );
        if !self.peers.is_empty() || !self.spare_peers.is_empty() {
            let initial = self.peers.iter().map(|text| ("--peer", text, true));
            let spares = self
                .spare_peers
                .iter()
                .map(|text| ("--spare-peer", text, false));
            file.peers = initial
                .chain(spares)
                .map(|(flag, text, initial_member)| {
                    let (id, addr) = parse_peer_short(text).map_err(|e| format!("{flag}: {e}"))?;
                    Ok(PeerSpec::Full(PeerTable {
                        id,
                        addr,
                        datacenter: None,
                        rack: None,
                        weight: None,
                        initial_member: Some(initial_member),
                    }))
                })
                .collect::<Result<_, String>>()?;
        }
        Ok(file)
    }
}

/// What `--check-config` prints: one `key = value` line per setting a deployment derives (the
/// identity, the addresses, the files, the peers and the quorums), so a script or test can read
/// back what the node understood rather than what was written.
fn config_summary(settings: &ringkv_node::config::Settings) -> String {
    let http = settings
        .http_listen
        .map_or("off".to_string(), |addr| addr.to_string());
    let peers: Vec<String> = settings
        .peers
        .iter()
        .map(|p| {
            format!(
                "{}={} ({}/{}{})",
                p.id.0,
                p.addr,
                p.location.datacenter,
                p.location.rack,
                if p.initial_member { "" } else { ", spare" }
            )
        })
        .collect();
    let c = &settings.cluster;
    format!(
        "configuration ok\n\
         node_id = {}\n\
         datacenter = {}\n\
         rack = {}\n\
         initial_member = {}\n\
         client_listen = {}\n\
         peer_listen = {}\n\
         http_listen = {http}\n\
         data_dir = {}\n\
         cluster_name = {}\n\
         cluster_secret = {}\n\
         password = {}\n\
         admin_token_file = {}\n\
         peers = {}\n\
         replication = n {} r {} w {}\n",
        settings.node_id.0,
        settings.location.datacenter,
        settings.location.rack,
        settings.initial_member,
        settings.client_listen,
        settings.peer_listen,
        settings.data_dir.display(),
        settings.cluster_name,
        if settings.cluster_secret.is_some() {
            "set"
        } else {
            "none"
        },
        if settings.password.is_some() {
            "set"
        } else {
            "none"
        },
        ringkv_node::admin_auth::token_path(settings).display(),
        peers.join(", "),
        c.n,
        c.r,
        c.w,
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(ringkv_node::logging::stderr)
        .with_ansi(false)
        // A failed log write must not become an `eprintln!` panic in whichever task logged.
        .log_internal_errors(false)
        .init();
    let settings = match args
        .file_config()
        .and_then(|f| f.validate().map_err(|e| e.to_string()))
    {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("ringkv-node: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", config_summary(&settings));
        return ExitCode::SUCCESS;
    }
    if let Some(snapshot) = &args.restore_from {
        match ringkv_node::snapshot::restore_snapshot(
            snapshot,
            &settings.data_dir,
            settings.node_id,
        ) {
            Ok(info) => println!(
                "restored {} from {} (last_seq {}, {} tables, {} value-log segments)",
                settings.data_dir.display(),
                snapshot.display(),
                info.last_seq,
                info.tables,
                info.segments
            ),
            Err(e) => {
                eprintln!("ringkv-node: --restore-from: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut builder = if settings.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(settings.worker_threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ringkv-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The handlers are installed before the node starts, not when `run` first polls its stop
    // future: a SIGTERM sent as soon as the listening line appears must shut down gracefully,
    // not kill the process by the default action.
    let stop = {
        use tokio::signal::unix::{signal, SignalKind};
        let _runtime = runtime.enter();
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut interrupt)) => {
                async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ringkv-node: cannot install the signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    // Every line the node logs, from every task, carries this span: `node{id=3}: ...`.
    let span = tracing::info_span!("node", id = settings.node_id.0);
    let run = ringkv_node::server::run(settings, stop);
    match runtime.block_on(tracing::Instrument::instrument(run, span.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            span.in_scope(|| tracing::error!(error = %e, "stopped with an error"));
            eprintln!("ringkv-node: {e}");
            ExitCode::FAILURE
        }
    }
}
