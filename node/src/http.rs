//! The admin HTTP endpoint, on its own port: `/health`, `/metrics` (Prometheus text) and `/ring`
//! (JSON). A deliberately small HTTP/1.1 server: one request per connection, bounded headers.

use crate::metrics::Metrics;
use ringkv_core::{NodeId, Ring};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin requests served at once; more connections wait in the listen backlog.
const CONNECTIONS_MAX: usize = 64;

/// What the admin endpoint reports.
pub struct AdminState {
    /// This node.
    pub node_id: NodeId,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The ring (static membership).
    pub ring: Ring,
    /// Whether the outbound connection to each peer is up.
    pub connected: BTreeMap<NodeId, Arc<AtomicBool>>,
}

impl AdminState {
    /// The `/ring` document.
    pub fn ring_json(&self) -> String {
        let ownership = self.ring.ownership();
        let mut vnodes: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (_, owner) in self.ring.tokens() {
            *vnodes.entry(owner).or_default() += 1;
        }
        let mut out = format!("{{\"node\":{},\"nodes\":[", self.node_id.0);
        for (i, member) in self.ring.members().iter().enumerate() {
            let state = if member.id == self.node_id {
                "up"
            } else {
                match self.connected.get(&member.id) {
                    Some(flag) if flag.load(Ordering::Relaxed) => "up",
                    _ => "unreachable",
                }
            };
            let _ = write!(
                out,
                "{}{{\"id\":{},\"state\":\"{state}\",\"datacenter\":\"{}\",\"rack\":\"{}\",\
                 \"weight\":{},\"vnodes\":{},\"ownership\":{:.4}}}",
                if i == 0 { "" } else { "," },
                member.id.0,
                member.location.datacenter,
                member.location.rack,
                member.location.weight,
                vnodes.get(&member.id).copied().unwrap_or(0),
                ownership.get(&member.id).copied().unwrap_or(0.0),
            );
        }
        out.push_str("]}\n");
        out
    }
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
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    match path {
        "/health" => {
            let body = format!("{{\"status\":\"ok\",\"node\":{}}}\n", state.node_id.0);
            respond(&mut stream, "200 OK", "application/json", &body).await
        }
        "/metrics" => {
            let body = state.metrics.render(&state.node_id.0.to_string());
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        "/ring" => {
            respond(
                &mut stream,
                "200 OK",
                "application/json",
                &state.ring_json(),
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try /health, /metrics or /ring\n",
            )
            .await
        }
    }
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
