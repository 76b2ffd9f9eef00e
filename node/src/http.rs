//! The admin HTTP endpoint, on its own port. A deliberately small HTTP/1.1 server: one request
//! per connection, bounded headers, no request bodies (commands take their argument from the
//! query string).
//!
//! * `GET /health`, `GET /metrics` (OpenMetrics text), `GET /ring` (JSON, [`crate::admin::ring_json`]).
//! * `POST /admin/join?node=ID`, `POST /admin/leave?node=ID`, `POST /admin/remove?node=ID`:
//!   a membership change made on this node and spread by gossip. `200` with the new ring version;
//!   `409` with the reason when the membership refuses it (a remove of a node not judged down,
//!   a join of a member, a leave of a non-member); `404` for a join of a node missing from the
//!   address book (its location comes from there); `400` for a missing or bad `node`.
//!   A `leave` or `remove` that would leave the ring with fewer members than `n` is refused
//!   (`409`) unless the query adds `force=true`.
//! * `GET|POST /admin/repair`: the anti-entropy schedule and progress ([`crate::admin::repair_json`]).
//! * `POST /admin/snapshot?name=NAME`: a snapshot of the node's engine in
//!   `<data_dir>/snapshots/NAME` ([`crate::snapshot`]; `name` optional, default
//!   `snapshot-<unix ms>`). `200` with its directory and contents; `400` for a bad name; `409`
//!   if it exists; `500` if the engine or the disk failed.
//! * `GET /` (or `/status`): the status page, a static HTML page whose script (`/status.js`)
//!   polls `GET /status.json` ([`crate::status::StatusSnapshot`]) and redraws the ring, hint
//!   queues, anti-entropy progress and request rates and latencies. Open like every `GET`: an
//!   operator's browser needs no token to look, and the page can change nothing.
//!
//! Every `POST` needs the admin token ([`crate::admin_auth`]): `401` without one, `403` with a
//! wrong one. `GET`s only read.

use crate::admin::{
    json_string, member_rows, refusal_reason, repair_json, ring_json, to_json, AddressBook,
    AdminCommand, MembershipView, RepairSchedule, VersionDocument,
};
use crate::driver::Input;
use crate::metrics::Metrics;
use crate::snapshot::{validate_snapshot_name, SnapshotError};
use crate::status::{StatusInputs, StatusSnapshot};
use ringkv_core::NodeId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin requests served at once; more connections wait in the listen backlog.
const CONNECTIONS_MAX: usize = 64;

/// What the admin endpoint reports, and the way to the driver for commands.
pub struct AdminState {
    /// This node.
    pub node_id: NodeId,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Whether the outbound connection to each peer is up.
    pub connected: BTreeMap<NodeId, Arc<AtomicBool>>,
    /// Every configured node's address and location (a join takes the location from here).
    pub address_book: AddressBook,
    /// Membership as the driver last published it.
    pub view: watch::Receiver<Arc<MembershipView>>,
    /// The driver's inputs, for membership commands.
    pub inputs: mpsc::Sender<Input>,
    /// The anti-entropy settings `/admin/repair` reports.
    pub repair_schedule: RepairSchedule,
    /// The token every `POST` must carry.
    pub token: String,
    /// Replicas per key (`n`): a leave or remove below it needs `force=true`.
    pub replicas: usize,
    /// The node's data directory (snapshots go under it).
    pub data_dir: std::path::PathBuf,
}

impl AdminState {
    /// The `/ring` document.
    pub fn ring_json(&self) -> String {
        let view = Arc::clone(&self.view.borrow());
        ring_json(self.node_id, &view, &self.address_book, &self.connected)
    }

    /// The `/status.json` document.
    pub fn status(&self) -> StatusSnapshot {
        let view = Arc::clone(&self.view.borrow());
        let inputs = StatusInputs {
            node: self.node_id.0,
            ring_changes: view.ring_version.changes,
            ring_fingerprint: view.ring_version.fingerprint,
            replicas: self.replicas,
            members: member_rows(self.node_id, &view, &self.address_book, &self.connected),
            anti_entropy_interval_ms: self.repair_schedule.interval_ms,
            anti_entropy_ranges_per_round: self.repair_schedule.ranges_per_round,
            ranges_replicated: view.ranges_replicated,
        };
        StatusSnapshot::build(inputs, &self.metrics.render(&self.node_id.0.to_string()))
    }

    /// The `/admin/repair` document; `started` is the rounds a repair just scheduled.
    pub fn repair_json(&self, started: Option<usize>) -> String {
        let view = Arc::clone(&self.view.borrow());
        repair_json(&view, self.repair_schedule, &self.metrics.repair, started)
    }

    /// Asks the driver to sweep every range now; the rounds scheduled, or `None` if the driver
    /// is gone (shutting down).
    pub async fn start_repair(&self) -> Option<usize> {
        let (reply, answer) = oneshot::channel();
        self.inputs.send(Input::Repair { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Runs a membership command: the HTTP status and the JSON body.
    pub async fn command(&self, name: &str, query: &str) -> (&'static str, String) {
        let node = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("node="))
            .map(|value| value.parse::<u32>().map(NodeId));
        let node = match node {
            Some(Ok(node)) => node,
            Some(Err(_)) | None => {
                return failure(
                    "400 Bad Request",
                    name,
                    None,
                    "give the node as ?node=ID (a number)",
                )
            }
        };
        let forced = query.split('&').any(|pair| pair == "force=true");
        if name != "join" && !forced {
            let view = Arc::clone(&self.view.borrow());
            let members = view.ring.members().len();
            let after = members - usize::from(view.ring.contains(node));
            if after < self.replicas {
                return failure(
                    "409 Conflict",
                    name,
                    Some(node),
                    &format!(
                        "the ring would keep {after} member(s), fewer than n = {}: keys would \
                         have fewer replicas than configured (none at all with 0 members); add \
                         force=true (ringkv admin {name} {} --force) to do it anyway",
                        self.replicas, node.0
                    ),
                );
            }
        }
        let command = match name {
            "join" => match self.address_book.member(node) {
                Some(member) => AdminCommand::Join(member),
                None => {
                    return failure(
                        "404 Not Found",
                        name,
                        Some(node),
                        "not in this node's address book: configure it as a peer (with                          initial_member = false for a spare) so its address and location are known",
                    )
                }
            },
            "leave" => AdminCommand::Leave(node),
            _ => AdminCommand::Remove(node),
        };
        let (reply, answer) = oneshot::channel();
        if self
            .inputs
            .send(Input::Admin { command, reply })
            .await
            .is_err()
        {
            return failure(
                "503 Service Unavailable",
                name,
                Some(node),
                "the node is shutting down",
            );
        }
        match answer.await {
            Ok(Ok(version)) => (
                "200 OK",
                to_json(&CommandDone {
                    ok: true,
                    command: name,
                    node: node.0,
                    ring_version: version.into(),
                }) + "\n",
            ),
            Ok(Err(error)) => failure("409 Conflict", name, Some(node), &refusal_reason(&error)),
            Err(_) => failure(
                "503 Service Unavailable",
                name,
                Some(node),
                "the node is shutting down",
            ),
        }
    }
}

impl AdminState {
    /// Takes a snapshot (`query`: `name=NAME`, optional): the HTTP status and the JSON body.
    pub async fn snapshot(&self, query: &str) -> (&'static str, String) {
        let name = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("name="))
            .map(str::to_string);
        let refuse = |status, why: &str| {
            let body = format!(
                "{{\"ok\":false,\"command\":\"snapshot\",\"error\":{}}}\n",
                json_string(why)
            );
            (status, body)
        };
        if let Some(name) = &name {
            if let Err(why) = validate_snapshot_name(name) {
                return refuse("400 Bad Request", &why);
            }
        }
        let (reply, answer) = oneshot::channel();
        let input = Input::Snapshot {
            data_dir: self.data_dir.clone(),
            name,
            reply,
        };
        if self.inputs.send(input).await.is_err() {
            return refuse("503 Service Unavailable", "the node is shutting down");
        }
        match answer.await {
            Ok(Ok((dir, info))) => (
                "200 OK",
                format!(
                    "{{\"ok\":true,\"command\":\"snapshot\",\"dir\":{},\"node\":{},\"last_seq\":{},\
                     \"tables\":{},\"segments\":{},\"bytes\":{}}}\n",
                    json_string(&dir.display().to_string()),
                    info.node_id,
                    info.last_seq,
                    info.tables,
                    info.segments,
                    info.bytes
                ),
            ),
            Ok(Err(e @ SnapshotError::InvalidName(_))) => refuse("400 Bad Request", &e.to_string()),
            Ok(Err(e @ SnapshotError::Exists(_))) => refuse("409 Conflict", &e.to_string()),
            Ok(Err(e @ SnapshotError::Failed(_))) => {
                refuse("500 Internal Server Error", &e.to_string())
            }
            Err(_) => refuse("503 Service Unavailable", "the node is shutting down"),
        }
    }
}

fn failure(
    status: &'static str,
    command: &str,
    node: Option<NodeId>,
    reason: &str,
) -> (&'static str, String) {
    let body = CommandFailed {
        ok: false,
        command,
        node: node.map(|n| n.0),
        error: reason,
    };
    (status, to_json(&body) + "\n")
}

/// The answer to a membership command carried out.
#[derive(Serialize)]
struct CommandDone<'a> {
    ok: bool,
    command: &'a str,
    node: u32,
    ring_version: VersionDocument,
}

/// The answer to a membership command refused (`node` is null when none was given).
#[derive(Serialize)]
struct CommandFailed<'a> {
    ok: bool,
    command: &'a str,
    node: Option<u32>,
    error: &'a str,
}

/// The answer to a request refused before it was looked at (authorization).
#[derive(Serialize)]
struct Refused<'a> {
    ok: bool,
    error: &'a str,
}

/// `GET /health`.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    node: u32,
}

/// Serves admin requests until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = Arc::clone(&state);
        crate::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &state)).await;
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "too large\n",
            )
            .await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    const JSON: &str = "application/json";
    if method == "POST" && path.starts_with("/admin/") {
        let authorization = header(&head, "authorization");
        if !crate::admin_auth::authorizes(authorization.as_deref(), &state.token) {
            let (status, why) = match authorization {
                None => (
                    "401 Unauthorized",
                    "an admin token is required: Authorization: Bearer TOKEN \
                     (ringkv admin --token-file FILE; the node's [admin] token_file, or \
                     <data_dir>/admin.token)",
                ),
                Some(_) => ("403 Forbidden", "wrong admin token"),
            };
            tracing::warn!(%path, status, "admin request refused");
            let body = to_json(&Refused {
                ok: false,
                error: why,
            }) + "\n";
            return respond(&mut stream, status, JSON, &body).await;
        }
    }
    match (method, path) {
        ("GET", "/health") => {
            let body = to_json(&Health {
                status: "ok",
                node: state.node_id.0,
            }) + "\n";
            respond(&mut stream, "200 OK", JSON, &body).await
        }
        ("GET", "/metrics") => {
            let body = state.metrics.render(&state.node_id.0.to_string());
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET", "/ring") => respond(&mut stream, "200 OK", JSON, &state.ring_json()).await,
        ("GET", "/" | "/status") => {
            respond_page(&mut stream, "text/html; charset=utf-8", STATUS_PAGE_HTML).await
        }
        ("GET", "/status.js") => {
            respond_page(
                &mut stream,
                "text/javascript; charset=utf-8",
                STATUS_PAGE_JS,
            )
            .await
        }
        ("GET", "/status.json") => {
            let body = state.status().to_json();
            respond_page(&mut stream, JSON, &body).await
        }
        ("GET", "/admin/repair") => {
            respond(&mut stream, "200 OK", JSON, &state.repair_json(None)).await
        }
        ("POST", "/admin/repair") => match state.start_repair().await {
            Some(rounds) => {
                let body = state.repair_json(Some(rounds));
                respond(&mut stream, "200 OK", JSON, &body).await
            }
            None => {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "the node is shutting down\n",
                )
                .await
            }
        },
        ("POST", "/admin/snapshot") => {
            let (status, body) = state.snapshot(query).await;
            respond(&mut stream, status, JSON, &body).await
        }
        ("POST", "/admin/join" | "/admin/leave" | "/admin/remove") => {
            let name = path.trim_start_matches("/admin/");
            let (status, body) = state.command(name, query).await;
            respond(&mut stream, status, JSON, &body).await
        }
        (_, "/health" | "/metrics" | "/ring" | "/" | "/status" | "/status.js" | "/status.json") => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await
        }
        (_, "/admin/join" | "/admin/leave" | "/admin/remove" | "/admin/snapshot") => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "POST only\n",
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try GET / (the status page), /status.json, /health, /metrics, /ring, \
                 /admin/repair or POST /admin/join|leave|remove?node=ID, \
                 /admin/snapshot?name=NAME\n",
            )
            .await
        }
    }
}

/// The value of the first header called `name` (ASCII case-insensitive) in a request head.
fn header(head: &[u8], name: &str) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// The status page and its script, compiled in: the node serves them with no files to install.
const STATUS_PAGE_HTML: &str = include_str!("status_page.html");
const STATUS_PAGE_JS: &str = include_str!("status_page.js");

/// [`respond`] for what a browser renders: the page may load scripts and data from this origin
/// only (no inline script, nothing from elsewhere; inline style is harmless and allowed), is
/// never cached (it is live) and is never framed by another site.
async fn respond_page(
    stream: &mut TcpStream,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline'; \
         frame-ancestors 'none'\r\n\
         X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
