//! Node configuration: a TOML file, overridden by flags, validated once into [`Settings`].
//!
//! Every error names the field as it is spelled in the file (`replication.w`, `peers[1].addr`),
//! so an operator can find it. Unknown keys are refused rather than silently ignored.

use crate::storage::StorageSettings;
use ringkv_core::config::setting_names;
use ringkv_core::membership::MembershipConfig;
use ringkv_core::{ClusterConfig, NodeId, NodeLocation};
use ringkv_lsm::LsmConfig;
use serde::Deserialize;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Largest value the node accepts: a replication message must stay below the codec's limit.
pub const VALUE_BYTES_LIMIT: usize = 8 << 20;

/// The client port `--dev` and an unconfigured node listen on.
pub const DEFAULT_CLIENT_LISTEN: &str = "127.0.0.1:6380";
/// The peer port of an unconfigured node.
pub const DEFAULT_PEER_LISTEN: &str = "127.0.0.1:7380";
/// The admin HTTP port of an unconfigured node.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9380";
/// The data directory of an unconfigured node, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "ringkv-data";
/// Default `worker_threads`: the request path on one thread ([`Settings::worker_threads`]).
pub const WORKER_THREADS_DEFAULT: usize = 1;
/// Largest `worker_threads`: the driver is one task, so more threads only help connections.
pub const WORKER_THREADS_MAX: usize = 64;

/// A configuration problem, naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    /// The field, as spelled in the TOML file.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for SettingsError {}

fn invalid<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError {
        field: field.into(),
        reason: reason.into(),
    })
}

/// One peer as written in the file: `"2=127.0.0.1:7381"` or a table.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PeerSpec {
    /// `id=host:port` (datacenter and rack default to this node's defaults).
    Short(String),
    /// `{ id = 2, addr = "...", datacenter = "...", rack = "..." }`.
    Full(PeerTable),
}

/// A peer in table form.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerTable {
    /// Its node id.
    pub id: u32,
    /// Its peer address.
    pub addr: String,
    /// Its datacenter (default `dc1`).
    pub datacenter: Option<String>,
    /// Its rack (default `rack1`).
    pub rack: Option<String>,
    /// Its ring weight (default 1).
    pub weight: Option<u32>,
    /// Whether it is in the initial ring (default true); `false` makes it a spare: its address
    /// is known, and an operator can later join it (`ringkv admin join ID`).
    pub initial_member: Option<bool>,
}

/// `[admin]`: the admin HTTP endpoint.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// File holding the token every `POST /admin/*` must present (`Authorization: Bearer`).
    /// Unset: the node creates `<data_dir>/admin.token` (mode 0600) on first start and uses it.
    pub token_file: Option<PathBuf>,
}

/// Where the node's file keeps each of core's cluster settings ([`ClusterConfig`], declared
/// there once with its default and limits): `[replication]` for placement, quorums and
/// timeouts, `[repair]` for read repair, hinted handoff and anti-entropy, and `[limits]` for
/// every other one (sizes and counts), beside the node's own limits. The grouping is the
/// file's only contribution; names, types and defaults are core's.
const REPLICATION_SETTINGS: &[&str] = &[
    "n",
    "r",
    "w",
    "consistency",
    "conflict",
    "vnodes_per_node",
    "request_timeout_ms",
    "sloppy_quorum",
    "sloppy_after_ms",
    "replicas_per_datacenter",
];

/// The core settings the node's file keeps in `[repair]` (see `REPLICATION_SETTINGS`).
const REPAIR_SETTINGS: &[&str] = &[
    "read_repair",
    "hints_per_target_max",
    "hint_bytes_per_target_max",
    "hint_age_max_ms",
    "hint_replay_interval_ms",
    "hint_replays_per_round",
    "anti_entropy_interval_ms",
    "anti_entropy_ranges_per_round",
    "anti_entropy_records_per_message_max",
    "tree_rebuild_interval_ms",
    "tree_rebuild_keys_per_step",
];

/// The table of the node's file that holds core's cluster setting `name`: `replication`,
/// `repair` or `limits`: placement, quorums and timeouts in the first, read repair, hinted
/// handoff and anti-entropy in the second, every other core setting (sizes and counts) beside
/// the node's own limits.
pub fn cluster_setting_table(name: &str) -> &'static str {
    if REPLICATION_SETTINGS.contains(&name) {
        "replication"
    } else if REPAIR_SETTINGS.contains(&name) {
        "repair"
    } else {
        "limits"
    }
}

/// The node's own part of `[limits]` (client connections and peer links); the table also holds
/// core's size limits (`key_bytes_max`, `value_bytes_max`, `siblings_max`, ...).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest client command, all arguments included.
    pub request_bytes_max: Option<usize>,
    /// Most pipelined input read ahead per connection while its replies wait to be written.
    pub pipeline_bytes_max: Option<usize>,
    /// Most arguments in one client command.
    pub arguments_max: Option<usize>,
    /// Most client connections at once.
    pub connections_max: Option<usize>,
    /// Connections from loopback addresses accepted past `connections_max` (an operator's way
    /// in when remote clients hold every slot).
    pub connections_reserved_loopback: Option<usize>,
    /// Client input buffered by all connections together; past it, connections holding large
    /// partial commands are closed with an error.
    pub client_buffer_bytes_total_max: Option<usize>,
    /// A command must arrive whole within this long of its first byte, or the connection is
    /// closed (slowloris).
    pub command_receive_timeout_ms: Option<u64>,
    /// Connections silent this long between commands are closed; 0 (the default) never.
    pub client_idle_timeout_ms: Option<u64>,
    /// Largest peer frame.
    pub peer_frame_bytes_max: Option<usize>,
    /// Messages queued per peer before further ones are dropped and counted.
    pub peer_queue_messages_max: Option<usize>,
}

/// `[storage]`: the LSM engine's limits and the maintenance budget. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    /// The memtable is flushed to a table once it holds this many bytes (also the memory the
    /// memtable takes, twice that while a flush runs, and the WAL replayed at start after a
    /// crash, twice that after a crash during a flush).
    pub memtable_bytes_max: Option<usize>,
    /// WAL records buffered in memory before they are written (every sync writes them anyway).
    pub wal_buffer_bytes: Option<usize>,
    /// Zeros appended ahead of the WAL's records, so that most group-commit fsyncs leave the
    /// file's size alone (0 turns it off).
    pub wal_preallocate_bytes: Option<u64>,
    /// Stored records longer than this go to the value log; the tree keeps a pointer.
    pub value_separation_threshold_bytes: Option<usize>,
    /// A value-log segment is sealed past this size; one collection rewrites at most one
    /// segment, so this also bounds a collection step.
    pub vlog_segment_bytes_max: Option<u64>,
    /// A sealed segment is collected once this percentage of it is garbage.
    pub vlog_gc_garbage_percent_min: Option<u64>,
    /// Bound of the data-block cache.
    pub block_cache_bytes: Option<usize>,
    /// The share of table indexes and bloom filters; past it they borrow the block cache's.
    pub index_cache_bytes: Option<usize>,
    /// Bound of the row cache (whole records by key, written through; 0 turns it off).
    pub row_cache_bytes: Option<usize>,
    /// Target uncompressed size of a data block.
    pub block_bytes: Option<usize>,
    /// Bloom filter bits per key.
    pub bloom_bits_per_key: Option<usize>,
    /// LZ4 compression of data blocks.
    pub compression: Option<bool>,
    /// Target size of a table written by compaction.
    pub table_bytes_target: Option<u64>,
    /// Level 0 is compacted into level 1 at this many tables.
    pub level0_compaction_tables: Option<usize>,
    /// Writes stall (and run compaction inline) at this many level-0 tables.
    pub level0_stall_tables: Option<usize>,
    /// Size target of level 1.
    pub level1_bytes_max: Option<u64>,
    /// Growth factor between levels.
    pub level_size_multiplier: Option<u64>,
    /// Number of levels, level 0 included.
    pub levels: Option<usize>,
    /// How often the node runs a maintenance step.
    pub maintenance_interval_ms: Option<u64>,
    /// Entry bytes one maintenance step may merge.
    pub maintenance_budget_bytes: Option<u64>,
    /// A value-log collection is attempted every this many maintenance steps.
    pub vlog_gc_interval_ticks: Option<u64>,
}

/// The TOML file, every field optional (flags and defaults fill the gaps).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This node's id (unique in the cluster, stable for its lifetime).
    pub node_id: Option<u32>,
    /// This node's datacenter.
    pub datacenter: Option<String>,
    /// This node's rack.
    pub rack: Option<String>,
    /// This node's ring weight.
    pub weight: Option<u32>,
    /// Whether this node is in the initial ring (default true); `false` starts it as a spare
    /// that an operator joins later.
    pub initial_member: Option<bool>,
    /// Client (RESP) listen address.
    pub client_listen: Option<String>,
    /// Peer listen address.
    pub peer_listen: Option<String>,
    /// Admin HTTP listen address; `"off"` disables it.
    pub http_listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Cluster name; peers of another cluster are refused.
    pub cluster_name: Option<String>,
    /// File holding the shared cluster secret (required when there are peers).
    pub cluster_secret_file: Option<PathBuf>,
    /// File holding the client password (`AUTH`); none means no password.
    pub password_file: Option<PathBuf>,
    /// Redis's protected mode (default true): refuse to start with a client listener on a
    /// non-loopback address and no password.
    pub protected_mode: Option<bool>,
    /// Threads that run the request path: the driver, client connections and peer links
    /// (default 1; at most 64). See [`Settings::worker_threads`].
    pub worker_threads: Option<usize>,
    /// The admin HTTP endpoint.
    #[serde(default)]
    pub admin: AdminFile,
    /// The other nodes of the cluster: the address book, and (unless `initial_member = false`)
    /// the initial ring.
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    /// Core's cluster settings for placement, quorums and timeouts (see
    /// [`cluster_setting_table`]); read as [`ClusterConfig`] by [`FileConfig::validate`].
    #[serde(default)]
    pub replication: toml::Table,
    /// Core's cluster settings for read repair, hinted handoff and anti-entropy.
    #[serde(default)]
    pub repair: toml::Table,
    /// Core's size limits and the node's own ([`LimitsFile`]).
    #[serde(default)]
    pub limits: toml::Table,
    /// Storage engine.
    #[serde(default)]
    pub storage: StorageFile,
    /// Gossip membership and failure detection: core's section, embedded whole (its seeds
    /// are the peers, its vnode setting is `replication.vnodes_per_node`).
    #[serde(default)]
    pub membership: MembershipConfig,
    /// TLS for the client port and peer links ([`crate::tls`]).
    #[serde(default)]
    pub tls: crate::tls::TlsFile,
}

impl FileConfig {
    /// Reads and parses a TOML file; errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<FileConfig, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError {
            field: "--config".to_string(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text).map_err(|e| SettingsError {
            field: e.field,
            reason: format!("{}: {}", path.display(), e.reason),
        })
    }

    /// Parses TOML text. Core's settings are read here too, so a wrong name or type in
    /// `[replication]`, `[repair]` or `[limits]` is reported with its line like any other.
    pub fn parse(text: &str) -> Result<FileConfig, SettingsError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| SettingsError {
            field: field_of_toml_error(&e, text),
            reason: reason_of_toml_error(&e, text),
        })?;
        file.cluster_file().map_err(|e| {
            let (table, key) = e.field.split_once('.').unwrap_or(("", &e.field));
            match key_position(text, table, key) {
                Some((line, column)) => SettingsError {
                    reason: format!("line {line}, column {column}: {}", e.reason),
                    ..e
                },
                None => e,
            }
        })?;
        Ok(file)
    }

    /// The defaults of `ringkv-node --dev`: one node, n = r = w = 1, on loopback.
    pub fn dev() -> FileConfig {
        let mut file = FileConfig {
            node_id: Some(1),
            ..FileConfig::default()
        };
        for name in ["n", "r", "w"] {
            file.set_cluster_setting(name, toml::Value::Integer(1));
        }
        file
    }

    /// Sets core's cluster setting `name` in the table the file keeps it in (a flag overriding
    /// the file); an unknown name or a bad value is reported by [`FileConfig::validate`].
    pub fn set_cluster_setting(&mut self, name: &str, value: toml::Value) {
        let table = match cluster_setting_table(name) {
            "replication" => &mut self.replication,
            "repair" => &mut self.repair,
            _ => &mut self.limits,
        };
        table.insert(name.to_string(), value);
    }

    /// Core's settings gathered from the three tables that hold them, and the node's own
    /// limits. Errors name the key as `table.key`: an unknown key, a core setting in another
    /// table than its own, or a value of the wrong type.
    fn cluster_file(&self) -> Result<ClusterFile, SettingsError> {
        let names = setting_names::<ClusterConfig>();
        let node_limit_names = setting_names::<LimitsFile>();
        let mut core = toml::Table::new();
        let mut node_limits = toml::Table::new();
        for (table_name, table) in [
            ("replication", &self.replication),
            ("repair", &self.repair),
            ("limits", &self.limits),
        ] {
            for (key, value) in table {
                let field = format!("{table_name}.{key}");
                if table_name == "limits" && node_limit_names.contains(&key.as_str()) {
                    node_limits.insert(key.clone(), value.clone());
                    continue;
                }
                if !names.contains(&key.as_str()) {
                    return invalid(field, format!("unknown setting `{key}` in [{table_name}]"));
                }
                let home = cluster_setting_table(key);
                if home != table_name {
                    return invalid(field, format!("belongs in [{home}]"));
                }
                core.insert(key.clone(), value.clone());
            }
        }
        let config = read_table::<ClusterConfig>(&core, cluster_setting_table)?;
        let limits = read_table::<LimitsFile>(&node_limits, |_| "limits")?;
        Ok(ClusterFile {
            config,
            set: core.keys().cloned().collect(),
            limits,
        })
    }
}

/// Reads a section from `table`, naming the key at fault as `{table_of(key)}.{key}`: a whole
/// table either reads or some key in it is wrong on its own (no section has a rule across its
/// keys at this stage), and a value deserializer reports the type, not the key.
fn read_table<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
    table_of: impl Fn(&str) -> &'static str,
) -> Result<T, SettingsError> {
    toml::Value::Table(table.clone()).try_into().map_err(|e| {
        let culprit = table.iter().find(|(key, value)| {
            let alone = toml::Table::from_iter([((*key).clone(), (*value).clone())]);
            toml::Value::Table(alone).try_into::<T>().is_err()
        });
        let key = culprit.map_or("(file)", |(key, _)| key.as_str());
        SettingsError {
            field: format!("{}.{key}", table_of(key)),
            reason: e.to_string().trim().to_string(),
        }
    })
}

/// What the file says about core's cluster settings and the node's limits, before the node's
/// derived defaults and validation.
struct ClusterFile {
    /// Core's settings: the file's values, core's defaults for the rest.
    config: ClusterConfig,
    /// The settings the file (or a flag) gave a value.
    set: std::collections::BTreeSet<String>,
    /// The node's own limits.
    limits: LimitsFile,
}

/// Best effort: the line and column (1-based) of `key = ...` under the `[table]` header, so an
/// error found after parsing can still point into the file.
fn key_position(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = "";
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            current = trimmed.trim_matches(|c| c == '[' || c == ']').trim();
            continue;
        }
        let written = trimmed.split_once('=').map(|(k, _)| k.trim());
        if current == table && written == Some(key) {
            return Some((index + 1, line.len() - line.trim_start().len() + 1));
        }
    }
    None
}

/// Best effort: the dotted key path a toml error points at (`repair.read_repair`), from the
/// name the message quotes or else from the key on the line its span points at, under the last
/// `[section]` header above that line (so an unknown key inside a table is named with its table).
fn field_of_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message();
    // "unknown field `x`, expected ..." and "missing field `x`" name the key themselves.
    let quoted = (message.starts_with("unknown field") || message.starts_with("missing field"))
        .then(|| {
            let start = message.find('`')? + 1;
            let len = message[start..].find('`')?;
            Some(message[start..start + len].to_string())
        })
        .flatten();
    let Some(span) = e.span() else {
        return quoted.unwrap_or_else(|| "(file)".to_string());
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let section = before[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && !l.starts_with("[[") && l.ends_with(']'))
            .then(|| l[1..l.len() - 1].trim().to_string())
    });
    let key = match quoted {
        Some(key) => key,
        None => {
            let line = text[line_start..].lines().next().unwrap_or("");
            match line.split_once('=') {
                Some((key, _)) => key.trim().to_string(),
                None => return "(file)".to_string(),
            }
        }
    };
    match section {
        // A `missing field` error points at the table that lacks it.
        Some(section) if !section.ends_with(&format!(".{key}")) && section != key => {
            format!("{section}.{key}")
        }
        _ => key,
    }
}

/// The error's text with the line and column it points at (1-based), so a syntax error in a
/// long file can be found.
fn reason_of_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: {message}")
}

/// A peer, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub id: NodeId,
    /// Its peer address (resolved at each connection attempt).
    pub addr: String,
    /// Its ring location.
    pub location: NodeLocation,
    /// Whether it is in the initial ring (else a spare, known by address only).
    pub initial_member: bool,
}

/// Node-level limits (cluster-level ones live in [`ClusterConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest client command.
    pub request_bytes_max: usize,
    /// Most pipelined input read ahead per connection while its replies wait to be written
    /// (at least `request_bytes_max`).
    pub pipeline_bytes_max: usize,
    /// Most arguments in one client command.
    pub arguments_max: usize,
    /// Most client connections.
    pub connections_max: usize,
    /// Extra connections accepted from loopback addresses past `connections_max`.
    pub connections_reserved_loopback: usize,
    /// Client input buffered by all connections together.
    pub client_buffer_bytes_total_max: usize,
    /// Time for one command to arrive whole.
    pub command_receive_timeout_ms: u64,
    /// Idle connections are closed after this long; 0 never.
    pub client_idle_timeout_ms: u64,
    /// Largest peer frame.
    pub peer_frame_bytes_max: usize,
    /// Messages queued per peer.
    pub peer_queue_messages_max: usize,
}

/// A validated node configuration: everything the server needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This node.
    pub node_id: NodeId,
    /// Where the admin token is read from (see [`AdminFile::token_file`]); `None`: the data
    /// directory's `admin.token`, created on first start.
    pub admin_token_file: Option<PathBuf>,
    /// Its location.
    pub location: NodeLocation,
    /// Whether this node is in the initial ring.
    pub initial_member: bool,
    /// Client listen address.
    pub client_listen: SocketAddr,
    /// Peer listen address.
    pub peer_listen: SocketAddr,
    /// Admin HTTP address, if enabled.
    pub http_listen: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Cluster name.
    pub cluster_name: String,
    /// Shared secret for the peer handshake, if any peers.
    pub cluster_secret: Option<Vec<u8>>,
    /// Client password.
    pub password: Option<String>,
    /// The address book: every other node, in id order (members of the initial ring and
    /// spares).
    pub peers: Vec<Peer>,
    /// Cluster-wide settings.
    pub cluster: ClusterConfig,
    /// Node-level limits.
    pub limits: Limits,
    /// The storage engine's configuration.
    pub storage: StorageSettings,
    /// Gossip membership (seeds: every configured peer).
    pub membership: MembershipConfig,
    /// TLS, if `[tls]` sets any certificate.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Threads of the runtime that runs the driver, client connections and peer links. The
    /// default, 1, keeps the whole request path on one thread, as redis-server does: every
    /// request otherwise crosses threads twice (connection task to driver and back), and on
    /// the 2-core benchmark machine those wake-ups cost more than the parallel parsing and
    /// encoding gained (issue #15, benches/README.md). More threads pay off when connections
    /// do heavy work of their own, such as TLS.
    pub worker_threads: usize,
}

impl Settings {
    /// The members of the initial ring (this node too, unless it is a spare), in id order.
    pub fn initial_members(&self) -> Vec<(NodeId, NodeLocation)> {
        let mut members: Vec<(NodeId, NodeLocation)> = self
            .peers
            .iter()
            .filter(|p| p.initial_member)
            .map(|p| (p.id, p.location.clone()))
            .collect();
        if self.initial_member {
            members.push((self.node_id, self.location.clone()));
        }
        members.sort_by_key(|(id, _)| *id);
        members
    }

    /// The location of `node` in the address book (this node included).
    pub fn location_of(&self, node: NodeId) -> Option<&NodeLocation> {
        if node == self.node_id {
            return Some(&self.location);
        }
        self.peers
            .iter()
            .find(|p| p.id == node)
            .map(|p| &p.location)
    }
}

/// Parses `id=host:port`.
pub fn parse_peer_short(text: &str) -> Result<(u32, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not id=host:port"))?;
    let id = id
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("`{id}` is not a node id"))?;
    Ok((id, addr.trim().to_string()))
}

fn resolve(field: &str, addr: &str) -> Result<SocketAddr, SettingsError> {
    match addr.to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => Ok(a),
            None => invalid(field, format!("`{addr}` resolves to no address")),
        },
        Err(e) => invalid(field, format!("`{addr}` is not host:port ({e})")),
    }
}

fn check_addr_syntax(field: &str, addr: &str) -> Result<(), SettingsError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => invalid(field, format!("`{addr}` is not host:port")),
    }
}

/// True if two `host:port` texts name the same address: equal ignoring ASCII case, or equal
/// as socket addresses (`[::1]:7001` and `[0:0:0:0:0:0:0:1]:7001`). No name is resolved, so the
/// check stays offline.
fn same_address(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Shortest admin token accepted.
pub const ADMIN_TOKEN_BYTES_MIN: usize = 16;

/// The token in a token file's (trimmed) bytes, or why it is unusable.
pub fn admin_token_of(bytes: &[u8]) -> Result<String, String> {
    match std::str::from_utf8(bytes) {
        Ok(token)
            if token.len() >= ADMIN_TOKEN_BYTES_MIN
                && token.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(token.to_string())
        }
        _ => Err(format!(
            "the token must be at least {ADMIN_TOKEN_BYTES_MIN} printable ASCII characters \
             without spaces (for example 32 random hex digits)"
        )),
    }
}

fn read_secret(field: &str, path: &Path) -> Result<Vec<u8>, SettingsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes.trim_ascii().to_vec()),
        Err(e) => invalid(field, format!("cannot read {}: {e}", path.display())),
    }
}

/// The core's membership settings from `[membership]`; its seeds are every configured peer,
/// and its vnode setting is the ring's (`replication.vnodes_per_node`).
fn membership_config(
    file: &MembershipConfig,
    cluster: &ClusterConfig,
    peers: &[Peer],
) -> Result<MembershipConfig, SettingsError> {
    let config = MembershipConfig {
        vnodes_per_node: cluster.vnodes_per_node,
        seeds: peers.iter().map(|p| p.id).collect(),
        ..file.clone()
    };
    config.validate().map_err(|e| SettingsError {
        field: match e.field {
            "vnodes_per_node" => "replication.vnodes_per_node".to_string(),
            "seeds" => "membership.members_max".to_string(),
            other => format!("membership.{other}"),
        },
        reason: e.reason,
    })?;
    // The member table holds every node of the address book, this one included.
    if peers.len() + 1 > config.members_max {
        return invalid(
            "membership.members_max",
            format!(
                "must be at least the number of configured nodes ({})",
                peers.len() + 1
            ),
        );
    }
    Ok(config)
}

impl FileConfig {
    /// Validates everything and builds [`Settings`]. Reads the secret and password files.
    pub fn validate(&self) -> Result<Settings, SettingsError> {
        let node_id = match self.node_id {
            Some(id) => NodeId(id),
            None => return invalid("node_id", "is required (or run with --dev)"),
        };
        let text_field = |field: &str, value: &Option<String>, default: &str| {
            let value = value.clone().unwrap_or_else(|| default.to_string());
            if value.is_empty()
                || value.len() > 64
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return invalid(field, "must be 1 to 64 letters, digits, '-', '_' or '.'");
            }
            Ok(value)
        };
        let datacenter = text_field("datacenter", &self.datacenter, "dc1")?;
        let rack = text_field("rack", &self.rack, "rack1")?;
        let cluster_name = text_field("cluster_name", &self.cluster_name, "ringkv")?;
        let weight = self.weight.unwrap_or(1);
        if !(1..=16).contains(&weight) {
            return invalid("weight", "must be between 1 and 16");
        }
        let location = NodeLocation {
            datacenter: datacenter.clone(),
            rack: rack.clone(),
            weight,
        };
        let client_listen = resolve(
            "client_listen",
            self.client_listen
                .as_deref()
                .unwrap_or(DEFAULT_CLIENT_LISTEN),
        )?;
        let peer_listen = resolve(
            "peer_listen",
            self.peer_listen.as_deref().unwrap_or(DEFAULT_PEER_LISTEN),
        )?;
        let http_listen = match self.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN) {
            "off" | "" => None,
            addr => Some(resolve("http_listen", addr)?),
        };
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }

        let mut peers: Vec<Peer> = Vec::new();
        for (i, spec) in self.peers.iter().enumerate() {
            let field = format!("peers[{i}]");
            let (id, addr, dc, rack, weight, initial_member) = match spec {
                PeerSpec::Short(text) => {
                    let (id, addr) = parse_peer_short(text).map_err(|reason| SettingsError {
                        field: field.clone(),
                        reason,
                    })?;
                    (id, addr, None, None, None, None)
                }
                PeerSpec::Full(t) => (
                    t.id,
                    t.addr.clone(),
                    t.datacenter.clone(),
                    t.rack.clone(),
                    t.weight,
                    t.initial_member,
                ),
            };
            check_addr_syntax(&format!("{field}.addr"), &addr)?;
            // Two members at one address would each reach the other's process; a peer at this
            // node's own peer address would be this node talking to itself (issue #17 item 8).
            if let Some(other) = peers.iter().find(|p| same_address(&p.addr, &addr)) {
                return invalid(
                    format!("{field}.addr"),
                    format!("`{addr}` is also node {}'s address", other.id),
                );
            }
            if same_address(&addr, &peer_listen.to_string())
                || self
                    .peer_listen
                    .as_deref()
                    .is_some_and(|own| same_address(own, &addr))
            {
                return invalid(
                    format!("{field}.addr"),
                    format!("`{addr}` is this node's own peer_listen address"),
                );
            }
            if NodeId(id) == node_id {
                return invalid(format!("{field}.id"), format!("{id} is this node's own id"));
            }
            if peers.iter().any(|p| p.id == NodeId(id)) {
                return invalid(format!("{field}.id"), format!("node {id} is listed twice"));
            }
            let weight = weight.unwrap_or(1);
            if !(1..=16).contains(&weight) {
                return invalid(format!("{field}.weight"), "must be between 1 and 16");
            }
            peers.push(Peer {
                id: NodeId(id),
                addr,
                location: NodeLocation {
                    datacenter: text_field(&format!("{field}.datacenter"), &dc, "dc1")?,
                    rack: text_field(&format!("{field}.rack"), &rack, "rack1")?,
                    weight,
                },
                initial_member: initial_member.unwrap_or(true),
            });
        }
        peers.sort_by_key(|p| p.id);

        let cluster_secret = match (&self.cluster_secret_file, peers.is_empty()) {
            (Some(path), _) => {
                let secret = read_secret("cluster_secret_file", path)?;
                if secret.len() < 16 {
                    return invalid(
                        "cluster_secret_file",
                        "the secret must be at least 16 bytes (for example 32 random hex digits)",
                    );
                }
                Some(secret)
            }
            (None, true) => None,
            (None, false) => {
                return invalid(
                    "cluster_secret_file",
                    "is required when peers are configured",
                )
            }
        };
        let password = match &self.password_file {
            Some(path) => {
                let bytes = read_secret("password_file", path)?;
                match String::from_utf8(bytes) {
                    Ok(p) if !p.is_empty() => Some(p),
                    _ => return invalid("password_file", "must hold a non-empty UTF-8 password"),
                }
            }
            None => None,
        };

        // Redis's protected mode: a client port reachable from other machines with no password
        // would let anyone read and overwrite every key.
        if self.protected_mode.unwrap_or(true)
            && !client_listen.ip().is_loopback()
            && password.is_none()
        {
            return invalid(
                "protected_mode",
                format!(
                    "client_listen {client_listen} is not a loopback address and no \
                     password_file is set: set password_file, or protected_mode = false to serve \
                     every client without a password"
                ),
            );
        }
        if let Some(path) = &self.admin.token_file {
            admin_token_of(&read_secret("admin.token_file", path)?).map_err(|reason| {
                SettingsError {
                    field: "admin.token_file".to_string(),
                    reason,
                }
            })?;
        }

        let initial_member = self.initial_member.unwrap_or(true);
        let initial_members =
            peers.iter().filter(|p| p.initial_member).count() + usize::from(initial_member);
        if initial_members == 0 {
            return invalid(
                "initial_member",
                "no node is in the initial ring: this node and every peer are spares",
            );
        }
        let file = self.cluster_file()?;
        let cluster = cluster_config(&file, initial_members)?;
        let limits = limits(&file.limits, &cluster)?;
        let storage = self.storage.validate(&cluster)?;
        let membership = membership_config(&self.membership, &cluster, &peers)?;
        let tls = self.tls.validate()?;
        let worker_threads = self.worker_threads.unwrap_or(WORKER_THREADS_DEFAULT);
        if !(1..=WORKER_THREADS_MAX).contains(&worker_threads) {
            return invalid(
                "worker_threads",
                format!("must be between 1 and {WORKER_THREADS_MAX}, not {worker_threads}"),
            );
        }
        Ok(Settings {
            node_id,
            admin_token_file: self.admin.token_file.clone(),
            location,
            client_listen,
            peer_listen,
            http_listen,
            data_dir,
            cluster_name,
            cluster_secret,
            password,
            peers,
            cluster,
            limits,
            storage,
            membership,
            initial_member,
            tls,
            worker_threads,
        })
    }
}

/// Core's cluster settings as the file gives them, with the node's own defaults where it gives
/// none: `n` is the initial ring's size up to 3 (a dev node runs alone), `r` and `w` a majority
/// of `n`, and `sloppy_after_ms` no later than `request_timeout_ms`. Every error names the key
/// the file would hold it under (`replication.w`).
fn cluster_config(file: &ClusterFile, members: usize) -> Result<ClusterConfig, SettingsError> {
    let defaults = ClusterConfig::default();
    let set = |name: &str| file.set.contains(name);
    let mut config = file.config.clone();
    if !set("n") {
        let members_u8 = u8::try_from(members.min(16)).unwrap_or(16);
        config.n = defaults.n.min(members_u8);
    }
    if usize::from(config.n) > members {
        return invalid(
            "replication.n",
            format!(
                "n = {} but the cluster has only {members} member(s)",
                config.n
            ),
        );
    }
    let quorum = config.n / 2 + 1;
    if !set("r") {
        config.r = quorum;
    }
    if !set("w") {
        config.w = quorum;
    }
    if !set("sloppy_after_ms") {
        // The default hand-off point must not outlast a shorter configured deadline.
        config.sloppy_after_ms = config.sloppy_after_ms.min(config.request_timeout_ms);
    }
    config.validate().map_err(|e| SettingsError {
        field: format!("{}.{}", cluster_setting_table(e.field), e.field),
        reason: e.reason,
    })?;
    if config.value_bytes_max > VALUE_BYTES_LIMIT {
        return invalid(
            "limits.value_bytes_max",
            format!("must be at most {VALUE_BYTES_LIMIT} (the peer message limit)"),
        );
    }
    Ok(config)
}

/// The node's own limits, checked against core's value and key limits.
fn limits(file: &LimitsFile, cluster: &ClusterConfig) -> Result<Limits, SettingsError> {
    let floor = cluster.value_bytes_max + cluster.key_bytes_max + 1024;
    let request_bytes_max = file.request_bytes_max.unwrap_or((floor * 2).max(8 << 20));
    if !(floor..=1 << 30).contains(&request_bytes_max) {
        return invalid(
            "limits.request_bytes_max",
            format!("must be between {floor} (a largest key and value) and 1 GiB"),
        );
    }
    let pipeline_bytes_max = file
        .pipeline_bytes_max
        .unwrap_or(request_bytes_max.max(64 << 20));
    if !(request_bytes_max..=1 << 30).contains(&pipeline_bytes_max) {
        return invalid(
            "limits.pipeline_bytes_max",
            format!("must be between {request_bytes_max} (limits.request_bytes_max) and 1 GiB"),
        );
    }
    let arguments_max = file.arguments_max.unwrap_or(1 << 16);
    if !(3..=1 << 20).contains(&arguments_max) {
        return invalid("limits.arguments_max", "must be between 3 and 1048576");
    }
    let connections_max = file.connections_max.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&connections_max) {
        return invalid("limits.connections_max", "must be between 1 and 1000000");
    }
    let connections_reserved_loopback = file.connections_reserved_loopback.unwrap_or(8);
    if connections_reserved_loopback > 1000 {
        return invalid(
            "limits.connections_reserved_loopback",
            "must be at most 1000",
        );
    }
    let client_buffer_bytes_total_max = file
        .client_buffer_bytes_total_max
        .unwrap_or((128 << 20).max(request_bytes_max));
    if !(request_bytes_max..=1 << 40).contains(&client_buffer_bytes_total_max) {
        return invalid(
            "limits.client_buffer_bytes_total_max",
            format!("must be between {request_bytes_max} (limits.request_bytes_max) and 1 TiB"),
        );
    }
    let command_receive_timeout_ms = file.command_receive_timeout_ms.unwrap_or(30_000);
    if !(1..=3_600_000).contains(&command_receive_timeout_ms) {
        return invalid(
            "limits.command_receive_timeout_ms",
            "must be between 1 and 3600000",
        );
    }
    let client_idle_timeout_ms = file.client_idle_timeout_ms.unwrap_or(0);
    if client_idle_timeout_ms > 31_536_000_000 {
        return invalid(
            "limits.client_idle_timeout_ms",
            "must be at most a year (0 turns it off)",
        );
    }
    let peer_floor = cluster.value_bytes_max * 2 + 4096;
    let peer_frame_bytes_max = file
        .peer_frame_bytes_max
        .unwrap_or(ringkv_core::codec::MESSAGE_BYTES_MAX);
    if !(peer_floor..=ringkv_core::codec::MESSAGE_BYTES_MAX).contains(&peer_frame_bytes_max) {
        return invalid(
            "limits.peer_frame_bytes_max",
            format!(
                "must be between {peer_floor} and {}",
                ringkv_core::codec::MESSAGE_BYTES_MAX
            ),
        );
    }
    let peer_queue_messages_max = file.peer_queue_messages_max.unwrap_or(16_384);
    if !(1..=1 << 20).contains(&peer_queue_messages_max) {
        return invalid(
            "limits.peer_queue_messages_max",
            "must be between 1 and 1048576",
        );
    }
    Ok(Limits {
        request_bytes_max,
        pipeline_bytes_max,
        arguments_max,
        connections_max,
        connections_reserved_loopback,
        client_buffer_bytes_total_max,
        command_receive_timeout_ms,
        client_idle_timeout_ms,
        peer_frame_bytes_max,
        peer_queue_messages_max,
    })
}

/// Room the engine's key limit leaves above `limits.key_bytes_max` for the prefixes of the
/// core's own records (a hint's key is a 2-byte prefix, the owner's id and the client key).
pub const STORAGE_KEY_PREFIX_BYTES_MAX: usize = 64;

/// Default size of a value-log segment for the node: smaller than the engine's own default
/// because a collection rewrites a whole segment's live values on the driver in one step.
pub const VLOG_SEGMENT_BYTES_DEFAULT: u64 = 32 << 20;

/// Default `[storage] wal_preallocate_bytes`: a node's synced writes are bound by its fsync's
/// latency, which an fsync that also writes the file's size lengthens (ext4: 220-320 µs against
/// 150 µs for a 20 KB batch; the engine's own default is off, since it doubles WAL bytes written,
/// which only synced writes gain from; `lsm/src/wal.rs`, "Preallocation", issue #15). 1 MiB: one
/// fsync in about fifty (20 KB batches) carries the zeros and the size change.
pub const WAL_PREALLOCATE_BYTES_DEFAULT: u64 = 1 << 20;

/// Default `[storage] memtable_bytes_max`: RocksDB's default write buffer, four times the
/// engine's own default. Every flush and every compaction of the level-0 tables it makes runs on
/// the driver between requests; at 16 MiB they were an eighth of a 1 KiB SET's instructions over
/// 100,000 SETs into a fresh node (callgrind: 25,915 per SET, 23,641 at 64 MiB; issue #15), and
/// larger level-0 tables compact less often per byte written. The price: the memory (twice this
/// while a flush runs) and the WAL replayed after a crash.
pub const MEMTABLE_BYTES_DEFAULT: usize = 64 << 20;

/// Default `[storage] row_cache_bytes`: the node's reads of its recently written or read records
/// cost one hash lookup, as in Redis (the engine's own default is off: its write-through keeps
/// values alive past their memtable, which costs a bulk loader of a library user, not a node
/// whose writes wait for fsyncs; benches/README.md, issue #15).
pub const ROW_CACHE_BYTES_DEFAULT: usize = 256 << 20;

impl StorageFile {
    /// Validates `[storage]` against the cluster's limits and builds the engine configuration.
    pub fn validate(&self, cluster: &ClusterConfig) -> Result<StorageSettings, SettingsError> {
        fn within<T: PartialOrd + fmt::Display + Copy>(
            field: &str,
            value: Option<T>,
            default: T,
            min: T,
            max: T,
            unit: &str,
        ) -> Result<T, SettingsError> {
            let value = value.unwrap_or(default);
            if value < min || value > max {
                return invalid(
                    format!("storage.{field}"),
                    format!("must be between {min} and {max}{unit} (got {value})"),
                );
            }
            Ok(value)
        }
        const KIB: usize = 1 << 10;
        const GIB: usize = 1 << 30;
        let d = LsmConfig::default();
        let memtable_bytes_max = within(
            "memtable_bytes_max",
            self.memtable_bytes_max,
            MEMTABLE_BYTES_DEFAULT,
            64 * KIB,
            4 * GIB,
            " bytes",
        )?;
        let lsm = LsmConfig {
            // The engine stores keys as the core hands them (client keys, and its own records
            // such as hints under a short prefix) and a value as the encoded record (versions
            // and siblings included), which the peer codec bounds.
            key_bytes_max: cluster.key_bytes_max + STORAGE_KEY_PREFIX_BYTES_MAX,
            value_bytes_max: ringkv_core::codec::MESSAGE_BYTES_MAX,
            memtable_bytes_max,
            wal_buffer_bytes: within(
                "wal_buffer_bytes",
                self.wal_buffer_bytes,
                d.wal_buffer_bytes,
                0,
                64 << 20,
                " bytes",
            )?,
            wal_preallocate_bytes: within(
                "wal_preallocate_bytes",
                self.wal_preallocate_bytes,
                WAL_PREALLOCATE_BYTES_DEFAULT,
                0,
                256 << 20,
                " bytes",
            )?,
            value_separation_threshold_bytes: within(
                "value_separation_threshold_bytes",
                self.value_separation_threshold_bytes,
                d.value_separation_threshold_bytes,
                16,
                ringkv_core::codec::MESSAGE_BYTES_MAX,
                " bytes",
            )?,
            vlog_segment_bytes_max: within(
                "vlog_segment_bytes_max",
                self.vlog_segment_bytes_max,
                VLOG_SEGMENT_BYTES_DEFAULT,
                1 << 20,
                4 << 30,
                " bytes",
            )?,
            vlog_gc_garbage_percent_min: within(
                "vlog_gc_garbage_percent_min",
                self.vlog_gc_garbage_percent_min,
                d.vlog_gc_garbage_percent_min,
                1,
                100,
                "",
            )?,
            block_cache_bytes: within(
                "block_cache_bytes",
                self.block_cache_bytes,
                d.block_cache_bytes,
                0,
                64 * GIB,
                " bytes",
            )?,
            index_cache_bytes: within(
                "index_cache_bytes",
                self.index_cache_bytes,
                d.index_cache_bytes,
                0,
                64 * GIB,
                " bytes",
            )?,
            row_cache_bytes: within(
                "row_cache_bytes",
                self.row_cache_bytes,
                ROW_CACHE_BYTES_DEFAULT,
                0,
                64 * GIB,
                " bytes",
            )?,
            block_bytes: within(
                "block_bytes",
                self.block_bytes,
                d.block_bytes,
                512,
                4 << 20,
                " bytes",
            )?,
            bloom_bits_per_key: within(
                "bloom_bits_per_key",
                self.bloom_bits_per_key,
                d.bloom_bits_per_key,
                1,
                40,
                "",
            )?,
            compression: self.compression.unwrap_or(d.compression),
            table_bytes_target: within(
                "table_bytes_target",
                self.table_bytes_target,
                d.table_bytes_target,
                64 << 10,
                1 << 30,
                " bytes",
            )?,
            level0_compaction_tables: within(
                "level0_compaction_tables",
                self.level0_compaction_tables,
                d.level0_compaction_tables,
                2,
                64,
                "",
            )?,
            level0_stall_tables: within(
                "level0_stall_tables",
                self.level0_stall_tables,
                d.level0_stall_tables,
                3,
                256,
                "",
            )?,
            level1_bytes_max: within(
                "level1_bytes_max",
                self.level1_bytes_max,
                d.level1_bytes_max,
                64 << 10,
                1 << 40,
                " bytes",
            )?,
            level_size_multiplier: within(
                "level_size_multiplier",
                self.level_size_multiplier,
                d.level_size_multiplier,
                2,
                100,
                "",
            )?,
            levels: within("levels", self.levels, d.levels, 2, 16, "")?,
            ..d
        };
        if lsm.level0_stall_tables <= lsm.level0_compaction_tables {
            return invalid(
                "storage.level0_stall_tables",
                format!(
                    "must be more than storage.level0_compaction_tables ({})",
                    lsm.level0_compaction_tables
                ),
            );
        }
        if lsm.level1_bytes_max < lsm.table_bytes_target {
            return invalid(
                "storage.level1_bytes_max",
                format!(
                    "must be at least storage.table_bytes_target ({})",
                    lsm.table_bytes_target
                ),
            );
        }
        if cluster.key_bytes_max > (1 << 20) - STORAGE_KEY_PREFIX_BYTES_MAX {
            return invalid(
                "limits.key_bytes_max",
                "must be at most 1048576 (the storage engine's limit)",
            );
        }
        // Backstop: anything the engine still refuses is reported against the table.
        if let Err(e) = lsm.validate() {
            return invalid("storage", e.to_string());
        }
        Ok(StorageSettings {
            lsm,
            maintenance_interval_ms: within(
                "maintenance_interval_ms",
                self.maintenance_interval_ms,
                100,
                1,
                60_000,
                "",
            )?,
            maintenance_budget_bytes: within(
                "maintenance_budget_bytes",
                self.maintenance_budget_bytes,
                4 << 20,
                4 << 10,
                1 << 30,
                " bytes",
            )?,
            vlog_gc_interval_ticks: within(
                "vlog_gc_interval_ticks",
                self.vlog_gc_interval_ticks,
                10,
                1,
                1_000_000,
                "",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{ConflictMode, Consistency};

    fn field_of(text: &str) -> String {
        match FileConfig::parse(text).and_then(|f| f.validate()) {
            Ok(_) => "(valid)".to_string(),
            Err(e) => e.field,
        }
    }

    #[test]
    fn toml_errors_name_the_table_and_the_position() {
        let unknown = FileConfig::parse("node_id = 1\n[replication]\nn = 1\nbogus = 2\n")
            .expect_err("unknown key");
        assert_eq!(unknown.field, "replication.bogus");
        assert!(
            unknown.reason.starts_with("line 4, column 1:"),
            "{}",
            unknown.reason
        );
        let syntax =
            FileConfig::parse("node_id = 1\n[replication]\nn = = 3\n").expect_err("syntax");
        assert!(
            syntax.reason.starts_with("line 3, column "),
            "{}",
            syntax.reason
        );
    }

    #[test]
    fn peers_at_one_address_or_at_our_own_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write");
        let file = |peers: &str| {
            format!(
                "node_id = 1\npeer_listen = \"127.0.0.1:7001\"\ncluster_secret_file = \"{}\"\n\
                 peers = {peers}\n",
                secret.display()
            )
        };
        let twice = FileConfig::parse(&file(r#"["2=127.0.0.1:7002", "3=127.0.0.1:7002"]"#))
            .and_then(|f| f.validate())
            .expect_err("one address twice");
        assert_eq!(twice.field, "peers[1].addr");
        assert!(twice.reason.contains("n2"), "{}", twice.reason);
        let own = FileConfig::parse(&file(r#"["2=127.0.0.1:7001"]"#))
            .and_then(|f| f.validate())
            .expect_err("our own address");
        assert_eq!(own.field, "peers[0].addr");
        let fine = FileConfig::parse(&file(r#"["2=127.0.0.1:7002", "3=127.0.0.1:7003"]"#))
            .and_then(|f| f.validate());
        assert!(fine.is_ok(), "{fine:?}");
    }

    #[test]
    fn worker_threads_default_to_one_and_are_bounded() {
        let parsed = |text: &str| FileConfig::parse(text).and_then(|f| f.validate());
        let default = parsed("node_id = 1\n").expect("valid");
        assert_eq!(default.worker_threads, WORKER_THREADS_DEFAULT);
        assert_eq!(default.worker_threads, 1, "the request path on one thread");
        let four = parsed("node_id = 1\nworker_threads = 4\n").expect("valid");
        assert_eq!(four.worker_threads, 4);
        assert_eq!(
            field_of("node_id = 1\nworker_threads = 0\n"),
            "worker_threads"
        );
        assert_eq!(
            field_of(&format!(
                "node_id = 1\nworker_threads = {}\n",
                WORKER_THREADS_MAX + 1
            )),
            "worker_threads"
        );
    }

    #[test]
    fn protected_mode_refuses_an_open_client_port_without_a_password() {
        let open = "node_id = 1\nclient_listen = \"0.0.0.0:6380\"\n";
        assert_eq!(field_of(open), "protected_mode");
        assert_eq!(
            field_of(&format!("{open}protected_mode = false\n")),
            "(valid)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let password = dir.path().join("password");
        std::fs::write(&password, "a client password\n").expect("write");
        let with_password = format!("{open}password_file = \"{}\"\n", password.display());
        assert_eq!(field_of(&with_password), "(valid)");
        assert_eq!(field_of("node_id = 1\n"), "(valid)", "loopback by default");
    }

    #[test]
    fn an_admin_token_file_must_hold_a_usable_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        let config = format!(
            "node_id = 1\n[admin]\ntoken_file = \"{}\"\n",
            token.display()
        );
        std::fs::write(&token, "short\n").expect("write");
        assert_eq!(field_of(&config), "admin.token_file");
        std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").expect("write");
        assert_eq!(field_of(&config), "(valid)");
    }

    #[test]
    fn dev_defaults_are_valid() {
        let settings = FileConfig::dev().validate().expect("valid");
        assert_eq!(settings.cluster.n, 1);
        assert_eq!(
            settings.storage.lsm.row_cache_bytes,
            ROW_CACHE_BYTES_DEFAULT
        );
        assert_eq!(
            settings.storage.lsm.wal_preallocate_bytes,
            WAL_PREALLOCATE_BYTES_DEFAULT
        );
        assert_eq!(settings.client_listen.to_string(), DEFAULT_CLIENT_LISTEN);
        assert!(settings.cluster_secret.is_none());
    }

    #[test]
    fn a_full_file_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write");
        let text = format!(
            r#"
            node_id = 1
            datacenter = "eu"
            client_listen = "127.0.0.1:0"
            cluster_secret_file = "{}"
            peers = ["2=127.0.0.1:7002", {{ id = 3, addr = "localhost:7003", rack = "r2" }}]
            [replication]
            w = 3
            conflict = "vector-clock"
            consistency = "quorum"
            [limits]
            value_bytes_max = 4096
            "#,
            secret.display()
        );
        let settings = FileConfig::parse(&text)
            .expect("parse")
            .validate()
            .expect("valid");
        assert_eq!(settings.peers.len(), 2);
        assert_eq!(settings.cluster.n, 3);
        assert_eq!(settings.cluster.r, 2);
        assert_eq!(settings.cluster.w, 3);
        assert_eq!(settings.peers[1].location.rack, "r2");
        assert_eq!(settings.cluster.conflict, ConflictMode::VectorClock);
        assert_eq!(
            settings.cluster_secret.as_deref().map(<[u8]>::len),
            Some(32)
        );
    }

    #[test]
    fn replicas_per_datacenter_parse_and_must_add_up_to_n() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write");
        let file = |per_dc: &str| {
            format!(
                r#"
                node_id = 1
                datacenter = "eu"
                cluster_secret_file = "{}"
                peers = [{{ id = 2, addr = "127.0.0.1:7002", datacenter = "eu" }},
                         {{ id = 3, addr = "127.0.0.1:7003", datacenter = "us" }}]
                [replication]
                n = 3
                replicas_per_datacenter = {per_dc}
                "#,
                secret.display()
            )
        };
        let settings = FileConfig::parse(&file("{ eu = 2, us = 1 }"))
            .and_then(|f| f.validate())
            .expect("valid");
        assert_eq!(
            settings.cluster.replicas_per_datacenter,
            vec![("eu".to_string(), 2), ("us".to_string(), 1)]
        );
        assert_eq!(
            field_of(&file("{ eu = 2, us = 2 }")),
            "replication.replicas_per_datacenter"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("node_id = 1\nbogus = 2"), "bogus");
        assert_eq!(field_of("datacenter = \"x\""), "node_id");
        assert_eq!(
            field_of("node_id = 1\n[replication]\nr = 3"),
            "replication.r"
        );
        assert_eq!(
            field_of("node_id = 1\n[replication]\nn = 1\nw = 2"),
            "replication.w"
        );
        assert_eq!(
            field_of("node_id = 1\n[replication]\nconsistency = \"local_quorom\""),
            "replication.consistency"
        );
        assert_eq!(
            field_of("node_id = 1\nclient_listen = \"nowhere\""),
            "client_listen"
        );
        assert_eq!(
            field_of("node_id = 1\npeers = [\"2=127.0.0.1:7002\"]"),
            "cluster_secret_file"
        );
        assert_eq!(field_of("node_id = 1\npeers = [\"1=h:1\"]"), "peers[0].id");
        assert_eq!(field_of("node_id = 1\npeers = [\"x\"]"), "peers[0]");
        assert_eq!(
            field_of("node_id = 1\n[limits]\nvalue_bytes_max = 0"),
            "limits.value_bytes_max"
        );
        assert_eq!(
            field_of("node_id = 1\n[limits]\npipeline_bytes_max = 1048576"),
            "limits.pipeline_bytes_max"
        );
        assert_eq!(
            field_of("node_id = 1\n[limits]\nvalue_bytes_max = 33554432"),
            "limits.value_bytes_max"
        );
        assert_eq!(
            field_of("node_id = 1\n[replication]\nunknown = 1"),
            "replication.unknown"
        );
    }

    #[test]
    fn storage_table_parses_and_errors_name_the_field() {
        let settings = FileConfig::parse(
            "node_id = 1\n[storage]\nmemtable_bytes_max = 1048576\n\
             value_separation_threshold_bytes = 4096\nblock_cache_bytes = 0\n\
             maintenance_interval_ms = 50\n",
        )
        .expect("parse")
        .validate()
        .expect("valid");
        assert_eq!(settings.storage.lsm.memtable_bytes_max, 1 << 20);
        assert_eq!(settings.storage.lsm.value_separation_threshold_bytes, 4096);
        assert_eq!(settings.storage.lsm.block_cache_bytes, 0);
        assert_eq!(settings.storage.maintenance_interval_ms, 50);
        assert_eq!(
            settings.storage.lsm.key_bytes_max,
            settings.cluster.key_bytes_max + STORAGE_KEY_PREFIX_BYTES_MAX
        );
        let defaults = FileConfig::dev().validate().expect("valid");
        assert_eq!(
            defaults.storage.lsm.vlog_segment_bytes_max,
            VLOG_SEGMENT_BYTES_DEFAULT
        );
        assert_eq!(defaults.storage.lsm.validate(), Ok(()));

        for (text, field) in [
            ("memtable_bytes_max = 10", "storage.memtable_bytes_max"),
            ("block_bytes = 1", "storage.block_bytes"),
            ("bloom_bits_per_key = 0", "storage.bloom_bits_per_key"),
            (
                "vlog_gc_garbage_percent_min = 101",
                "storage.vlog_gc_garbage_percent_min",
            ),
            (
                "level0_compaction_tables = 8\nlevel0_stall_tables = 8",
                "storage.level0_stall_tables",
            ),
            (
                "table_bytes_target = 1048576\nlevel1_bytes_max = 65536",
                "storage.level1_bytes_max",
            ),
            (
                "maintenance_interval_ms = 0",
                "storage.maintenance_interval_ms",
            ),
            (
                "maintenance_budget_bytes = 1",
                "storage.maintenance_budget_bytes",
            ),
            ("memtable = 1", "storage.memtable"),
        ] {
            assert_eq!(
                field_of(&format!("node_id = 1\n[storage]\n{text}")),
                field,
                "{text}"
            );
        }
    }

    #[test]
    fn repair_settings_parse_and_errors_name_the_field() {
        let settings = FileConfig::parse(
            "node_id = 1\n[replication]\nsloppy_quorum = true\nsloppy_after_ms = 50\n\
             [repair]\nread_repair = false\nhints_per_target_max = 10\n\
             hint_bytes_per_target_max = 4096\nhint_age_max_ms = 60000\n\
             hint_replay_interval_ms = 100\nhint_replays_per_round = 8\n\
             anti_entropy_interval_ms = 0\nanti_entropy_ranges_per_round = 7\n\
             anti_entropy_records_per_message_max = 9\n",
        )
        .expect("parse")
        .validate()
        .expect("valid");
        let c = &settings.cluster;
        assert!(c.sloppy_quorum);
        assert_eq!(c.sloppy_after_ms, 50);
        assert!(!c.read_repair);
        assert_eq!(c.hints_per_target_max, 10);
        assert_eq!(c.hint_bytes_per_target_max, 4096);
        assert_eq!(c.hint_age_max_ms, 60_000);
        assert_eq!(c.hint_replay_interval_ms, 100);
        assert_eq!(c.hint_replays_per_round, 8);
        assert_eq!(c.anti_entropy_interval_ms, 0);
        assert_eq!(c.anti_entropy_ranges_per_round, 7);
        assert_eq!(c.anti_entropy_records_per_message_max, 9);
        // A short deadline pulls the default hand-off point below it.
        let short = FileConfig::parse("node_id = 1\n[replication]\nrequest_timeout_ms = 100\n")
            .expect("parse")
            .validate()
            .expect("valid");
        assert_eq!(short.cluster.sloppy_after_ms, 100);

        for (text, field) in [
            (
                "[replication]\nsloppy_after_ms = 0",
                "replication.sloppy_after_ms",
            ),
            (
                "[replication]\nrequest_timeout_ms = 100\nsloppy_after_ms = 500",
                "replication.sloppy_after_ms",
            ),
            (
                "[repair]\nhints_per_target_max = 0",
                "repair.hints_per_target_max",
            ),
            (
                "[repair]\nhint_bytes_per_target_max = 0",
                "repair.hint_bytes_per_target_max",
            ),
            ("[repair]\nhint_age_max_ms = 0", "repair.hint_age_max_ms"),
            (
                "[repair]\nhint_replay_interval_ms = 0",
                "repair.hint_replay_interval_ms",
            ),
            (
                "[repair]\nhint_replays_per_round = 0",
                "repair.hint_replays_per_round",
            ),
            (
                "[repair]\nanti_entropy_interval_ms = 3600001",
                "repair.anti_entropy_interval_ms",
            ),
            (
                "[repair]\nanti_entropy_ranges_per_round = 0",
                "repair.anti_entropy_ranges_per_round",
            ),
            (
                "[repair]\nanti_entropy_records_per_message_max = 0",
                "repair.anti_entropy_records_per_message_max",
            ),
            ("[repair]\nread_repair = 1", "repair.read_repair"),
            (
                "[replication]\nsloppy_quorum = \"yes\"",
                "replication.sloppy_quorum",
            ),
            ("[repair]\nhints = 1", "repair.hints"),
        ] {
            assert_eq!(field_of(&format!("node_id = 1\n{text}")), field, "{text}");
        }
    }

    #[test]
    fn membership_table_parses_and_errors_name_the_field() {
        let defaults = FileConfig::dev().validate().expect("valid");
        let core = MembershipConfig::default();
        assert_eq!(
            defaults.membership.gossip_interval_ms,
            core.gossip_interval_ms
        );
        assert_eq!(defaults.membership.suspect_after_ms, core.suspect_after_ms);
        assert_eq!(defaults.membership.down_after_ms, core.down_after_ms);
        assert_eq!(
            defaults.membership.vnodes_per_node,
            defaults.cluster.vnodes_per_node
        );
        let settings = FileConfig::parse(
            "node_id = 1\n[membership]\ngossip_interval_ms = 50\nfanout = 2\n\
             suspect_after_ms = 300\ndown_after_ms = 700\nmembers_max = 16\n\
             ring_changes_max = 64\n",
        )
        .expect("parse")
        .validate()
        .expect("valid");
        let m = &settings.membership;
        assert_eq!(
            (
                m.gossip_interval_ms,
                m.fanout,
                m.suspect_after_ms,
                m.down_after_ms,
                m.members_max,
                m.ring_changes_max
            ),
            (50, 2, 300, 700, 16, 64)
        );
        for (text, field) in [
            ("gossip_interval_ms = 0", "membership.gossip_interval_ms"),
            ("fanout = 0", "membership.fanout"),
            (
                "gossip_interval_ms = 100\nsuspect_after_ms = 200",
                "membership.suspect_after_ms",
            ),
            ("down_after_ms = 1", "membership.down_after_ms"),
            ("members_max = 0", "membership.members_max"),
            ("ring_changes_max = 0", "membership.ring_changes_max"),
            ("gossip = 1", "membership.gossip"),
        ] {
            assert_eq!(
                field_of(&format!("node_id = 1\n[membership]\n{text}")),
                field,
                "{text}"
            );
        }
    }

    #[test]
    fn spares_are_in_the_address_book_but_not_the_initial_ring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write");
        let text = |own: &str, extra: &str| {
            format!(
                "node_id = 1\ncluster_secret_file = \"{}\"\n{own}\n\
                 peers = [\"2=127.0.0.1:7002\", \
                 {{ id = 3, addr = \"127.0.0.1:7003\", initial_member = false }}]\n{extra}",
                secret.display()
            )
        };
        let settings = FileConfig::parse(&text("", ""))
            .expect("parse")
            .validate()
            .expect("valid");
        assert_eq!(
            settings.peers.len(),
            3 - 1,
            "both peers are in the address book"
        );
        assert_eq!(settings.membership.seeds, vec![NodeId(2), NodeId(3)]);
        let initial: Vec<NodeId> = settings.initial_members().iter().map(|m| m.0).collect();
        assert_eq!(initial, vec![NodeId(1), NodeId(2)]);
        assert_eq!(
            settings.cluster.n, 2,
            "n defaults to the initial ring's size"
        );
        assert!(settings.location_of(NodeId(3)).is_some());

        let spare = FileConfig::parse(&text("initial_member = false", ""))
            .expect("parse")
            .validate()
            .expect("valid");
        let initial: Vec<NodeId> = spare.initial_members().iter().map(|m| m.0).collect();
        assert_eq!(initial, vec![NodeId(2)]);

        assert_eq!(
            field_of(&text("", "[replication]\nn = 3")),
            "replication.n",
            "n counts the initial ring only"
        );
        assert_eq!(
            field_of(&text("", "[membership]\nmembers_max = 2")),
            "membership.members_max"
        );
        assert_eq!(
            field_of(&text("initial_member = false", "").replace(
                "\"2=127.0.0.1:7002\"",
                "{ id = 2, addr = \"127.0.0.1:7002\", initial_member = false }"
            )),
            "initial_member"
        );
    }

    #[test]
    fn the_readme_example_loads() {
        let readme = include_str!("../README.md");
        let section = &readme[readme
            .find("## Configuration")
            .expect("a configuration section")..];
        let start = section.find("```toml\n").expect("an example") + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").expect("closed")];
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("cluster.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write");
        let text = example.replace(
            "cluster_secret_file = \"cluster.secret\"",
            &format!("cluster_secret_file = {:?}", secret.display().to_string()),
        );
        let settings = FileConfig::parse(&text)
            .and_then(|f| f.validate())
            .unwrap_or_else(|e| panic!("{e}"));
        // The example shows the defaults: what it sets is what core would have chosen.
        let defaults = ClusterConfig::default();
        assert_eq!(settings.cluster.hint_age_max_ms, defaults.hint_age_max_ms);
        assert_eq!(settings.cluster.record_bytes_max, defaults.record_bytes_max);
        assert_eq!(
            settings.membership.fanout,
            MembershipConfig::default().fanout
        );
    }

    #[test]
    fn core_settings_live_in_one_table_each_and_the_node_adds_no_second_name() {
        let core = setting_names::<ClusterConfig>();
        for name in REPLICATION_SETTINGS.iter().chain(REPAIR_SETTINGS) {
            assert!(core.contains(name), "{name} is no core setting");
        }
        for name in setting_names::<LimitsFile>() {
            assert!(
                !core.contains(name),
                "[limits] {name} shadows core's setting"
            );
        }
        assert_eq!(
            field_of("node_id = 1\n[repair]\nn = 1"),
            "repair.n",
            "n belongs in [replication]"
        );
        let error = FileConfig::parse("node_id = 1\n[limits]\nread_repair = false")
            .expect_err("wrong table");
        assert!(error.reason.contains("[repair]"), "{}", error.reason);
        assert!(
            error.reason.starts_with("line 3, column 1:"),
            "{}",
            error.reason
        );
        // Settings the node did not restate before are settable too.
        let settings = FileConfig::parse(
            "node_id = 1\n[repair]\ntree_rebuild_interval_ms = 0\n\
             [limits]\nclock_entries_max = 8\nrecord_bytes_max = 2097152\n\
             [membership]\nlocation_name_bytes_max = 32\n",
        )
        .and_then(|f| f.validate())
        .expect("valid");
        assert_eq!(settings.cluster.tree_rebuild_interval_ms, 0);
        assert_eq!(settings.cluster.clock_entries_max, 8);
        assert_eq!(settings.cluster.record_bytes_max, 2 << 20);
        assert_eq!(settings.membership.location_name_bytes_max, 32);
        // A flag lands in the table its setting lives in.
        let mut file = FileConfig::dev();
        file.set_cluster_setting("request_timeout_ms", toml::Value::Integer(100));
        assert!(file.replication.contains_key("request_timeout_ms"));
        let settings = file.validate().expect("valid");
        assert_eq!(settings.cluster.request_timeout_ms, 100);
        assert_eq!(
            settings.cluster.sloppy_after_ms, 100,
            "pulled below the deadline"
        );
    }

    #[test]
    fn the_datacenter_levels_are_accepted_as_defaults() {
        for (text, level) in [
            ("local_quorum", Consistency::LocalQuorum),
            ("each_quorum", Consistency::EachQuorum),
            ("QUORUM", Consistency::Quorum),
        ] {
            let settings = FileConfig::parse(&format!(
                "node_id = 1\n[replication]\nconsistency = \"{text}\""
            ))
            .expect("parse")
            .validate()
            .expect("valid");
            assert_eq!(settings.cluster.consistency, Some(level), "{text}");
        }
    }
}
