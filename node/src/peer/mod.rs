//! The peer transport: authenticated TCP between nodes.
//!
//! Each node dials every other member once and uses that connection only to send (so each pair
//! of nodes has two connections, one per direction, and there is never a question of which of
//! two simultaneous dials wins). Inbound connections only receive. Every connection starts with
//! the mutual handshake ([`handshake`]); after it, each frame ([`frame`]) carries one message
//! encoded by the core's codec. A bad frame or undecodable message closes that connection only.
//!
//! With `[tls]` peer certificates, every connection is mutual TLS first (each side verifies the
//! other's certificate against the CA; the dialer also checks the name in the peer's address)
//! and the handshake and frames then run inside it, unchanged: TLS admits "a certificate our CA
//! signed", the HMAC handshake "a member of this cluster with this id" ([`crate::tls`]).
//!
//! Outbound queues are bounded (`limits.peer_queue_messages_max`); the driver drops and counts a
//! message for a full queue. Reconnects back off exponentially with jitter.

pub mod admission;
pub mod frame;
pub mod handshake;

use crate::config::Peer;
use crate::driver::PeerInputs;
use crate::metrics::Metrics;
use frame::{encode_frame, read_frame, FrameError};
use handshake::PeerAuth;
use rand::{Rng, SeedableRng};
use ringkv_core::{codec, Message, NodeId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

/// A peer connection as the transport uses it: TCP, or TLS over TCP.
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for S {}

/// Per peer, the signal that wakes its outbound task from backoff.
pub type WakeSignals = std::collections::BTreeMap<NodeId, Arc<Notify>>;

/// Time allowed for a connection attempt and for a handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bytes of frames gathered before one write.
const WRITE_BATCH_BYTES: usize = 256 << 10;
/// Authenticated inbound peer connections at once (those still handshaking are admitted
/// separately: [`admission`]).
const INBOUND_CONNECTIONS_MAX: usize = 256;
/// Warnings about refused or failed inbound connections, which a flood can make arrive at any
/// rate: one line per second at most, with the count it stands for.
static INBOUND_WARNINGS: admission::Throttle = admission::Throttle::new(Duration::from_secs(1));

/// Logs an inbound-connection warning through [`INBOUND_WARNINGS`].
fn warn_inbound(addr: std::net::SocketAddr, what: &str) {
    if let Some(repeats) = INBOUND_WARNINGS.allow(tokio::time::Instant::now().into_std()) {
        tracing::warn!(%addr, repeats, "{what} (at most one such line per second)");
    }
}

/// Exponential backoff with "equal jitter": the delay is uniform in [d/2, d].
struct Backoff {
    next: Duration,
    rng: rand_chacha::ChaCha8Rng,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_MIN,
            rng: rand_chacha::ChaCha8Rng::from_entropy(),
        }
    }
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let half = d / 2;
        half + Duration::from_micros(
            self.rng
                .gen_range(0..=u64::try_from(half.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

/// Runs the sending side towards one peer until its queue's senders are gone. Each successful
/// connection is reported on `events` (the server prints when every peer has been reached).
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, each argument distinct"
)]
pub async fn outbound(
    peer: Peer,
    auth: Arc<PeerAuth>,
    mut queue: mpsc::Receiver<Message>,
    metrics: Arc<Metrics>,
    connected: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<NodeId>,
    wake: Arc<Notify>,
    tls: Option<tokio_rustls::TlsConnector>,
) {
    let mut backoff = Backoff::new();
    let mut failures = 0u32;
    loop {
        match connect(&peer, &auth, &metrics, tls.as_ref()).await {
            Ok(stream) => {
                backoff.reset();
                failures = 0;
                metrics.peer_connections.inc();
                metrics.peers_connected.inc();
                connected.store(true, Ordering::Relaxed);
                let _ = events.send(peer.id);
                tracing::info!(peer = %peer.id, addr = %peer.addr, "connected to peer");
                let result = pump(stream, &mut queue, &metrics).await;
                metrics.peers_connected.dec();
                connected.store(false, Ordering::Relaxed);
                match result {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(peer = %peer.id, error = %e, "peer connection lost; reconnecting")
                    }
                }
            }
            Err(e) => {
                failures += 1;
                // The first failures are routine while a cluster starts; keep the log readable.
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(peer = %peer.id, addr = %peer.addr, attempts = failures, error = %e, "cannot reach peer");
                }
                if queue.is_closed() {
                    return;
                }
            }
        }
        // A peer that just connected to us is back: dial it now instead of after the backoff.
        tokio::select! {
            () = tokio::time::sleep(backoff.delay()) => {}
            () = wake.notified() => backoff.reset(),
        }
    }
}

async fn connect(
    peer: &Peer,
    auth: &PeerAuth,
    metrics: &Metrics,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<Box<dyn PeerStream>, String> {
    let attempt = async {
        let stream = TcpStream::connect(&peer.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut stream: Box<dyn PeerStream> = match tls {
            None => Box::new(stream),
            Some(connector) => {
                let name = crate::tls::server_name_of(&peer.addr)?;
                match connector.connect(name, stream).await {
                    Ok(stream) => Box::new(stream),
                    Err(e) => {
                        metrics.peer_tls_failures.inc();
                        return Err(format!("TLS handshake failed: {e}"));
                    }
                }
            }
        };
        handshake::dial(&mut stream, auth, peer.id)
            .await
            .map_err(|e| refused(&e, metrics))?;
        Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Sends queued messages until the queue closes (`Ok`) or the connection fails.
async fn pump(
    mut stream: Box<dyn PeerStream>,
    queue: &mut mpsc::Receiver<Message>,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
    loop {
        let Some(message) = queue.recv().await else {
            let _ = stream.shutdown().await;
            return Ok(());
        };
        frame_into(&message, &mut batch, metrics);
        while batch.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Ok(message) => frame_into(&message, &mut batch, metrics),
                Err(_) => break,
            }
        }
        stream.write_all(&batch).await?;
        // A TLS stream holds the tail of a write until flushed (a no-op for TCP).
        stream.flush().await?;
        batch.clear();
    }
}

/// Appends `message` as one frame, or logs and counts it as a failed send when it cannot be
/// encoded: the message is lost like one on a cut connection, which the protocol already
/// survives (the coordinator's deadline turns a missing reply into a typed outcome).
fn frame_into(message: &Message, batch: &mut Vec<u8>, metrics: &Metrics) {
    match codec::encode(message) {
        Ok(bytes) => encode_frame(&bytes, batch),
        Err(e) => {
            metrics.peer_messages_unencodable.inc();
            tracing::warn!(error = %e, "peer message not sent: it cannot be encoded");
        }
    }
}

/// Why an inbound connection was refused before it was authenticated.
enum Refusal {
    /// The TLS handshake failed (an untrusted certificate, no certificate, plaintext).
    Tls(std::io::Error),
    /// The cluster handshake failed.
    Handshake(handshake::HandshakeError),
}

/// Counts a handshake refusal that is about stored meaning (it needs an operator, unlike a
/// peer that is merely down) and returns the reason for the log line.
fn refused(error: &handshake::HandshakeError, metrics: &Metrics) -> String {
    if matches!(error, handshake::HandshakeError::StoredMeaning(_)) {
        metrics.peer_stored_meaning_mismatches.inc();
    }
    error.to_string()
}

/// Accepts peer connections until `shutdown` flips; with `tls`, each one must complete mutual
/// TLS before the handshake.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, each argument distinct"
)]
pub async fn serve(
    listener: TcpListener,
    auth: Arc<PeerAuth>,
    inputs: PeerInputs,
    metrics: Arc<Metrics>,
    frame_bytes_max: usize,
    wake: Arc<WakeSignals>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(INBOUND_CONNECTIONS_MAX));
    let admission = Arc::new(admission::Admission::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                if let Some(repeats) =
                    INBOUND_WARNINGS.allow(tokio::time::Instant::now().into_std())
                {
                    tracing::warn!(error = %e, repeats, "accepting a peer connection failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = admission.admit(addr.ip());
        if admitted.evicted > 0 {
            metrics.peer_handshake_failures.inc();
            warn_inbound(
                addr,
                "an unauthenticated peer connection was closed to make room for a new one",
            );
        }
        let (auth, inputs, metrics) = (Arc::clone(&auth), inputs.clone(), Arc::clone(&metrics));
        let (wake, slots, tls) = (Arc::clone(&wake), Arc::clone(&slots), tls.clone());
        crate::spawn(async move {
            inbound(
                stream,
                addr,
                admitted.ticket,
                slots,
                &auth,
                inputs,
                &metrics,
                frame_bytes_max,
                &wake,
                tls.as_ref(),
            )
            .await;
        });
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site, each argument distinct"
)]
async fn inbound(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    mut ticket: admission::Ticket,
    slots: Arc<Semaphore>,
    auth: &PeerAuth,
    inputs: PeerInputs,
    metrics: &Metrics,
    frame_bytes_max: usize,
    wake: &WakeSignals,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    let speaker = ticket.speaker();
    let handshake = tokio::time::timeout(admission::HANDSHAKE_DEADLINE, async {
        // A dialer speaks first: until it does, this connection is the first to make room.
        stream.readable().await.map_err(|e| {
            Refusal::Handshake(handshake::HandshakeError::Frame(frame::FrameError::Io(e)))
        })?;
        speaker.mark();
        let mut stream: Box<dyn PeerStream> = match tls {
            None => Box::new(stream),
            Some(acceptor) => Box::new(acceptor.accept(stream).await.map_err(Refusal::Tls)?),
        };
        let from = handshake::accept(&mut stream, auth)
            .await
            .map_err(Refusal::Handshake)?;
        Ok::<_, Refusal>((from, stream))
    });
    let (from, stream): (NodeId, Box<dyn PeerStream>) = tokio::select! {
        result = handshake => match result {
            Ok(Ok(pair)) => pair,
            Ok(Err(Refusal::Tls(e))) => {
                metrics.peer_handshake_failures.inc();
                metrics.peer_tls_failures.inc();
                warn_inbound(addr, &format!("peer connection refused: TLS handshake failed: {e}"));
                return;
            }
            Ok(Err(Refusal::Handshake(e))) => {
                metrics.peer_handshake_failures.inc();
                let e = refused(&e, metrics);
                warn_inbound(addr, &format!("peer connection refused: {e}"));
                return;
            }
            Err(_) => {
                metrics.peer_handshake_failures.inc();
                warn_inbound(addr, "peer connection refused: handshake timed out");
                return;
            }
        },
        // Closed to make room for a newer connection (counted where it was chosen).
        _ = &mut ticket.evicted => return,
    };
    drop(ticket);
    let Ok(_slot) = slots.try_acquire_owned() else {
        warn_inbound(addr, "too many authenticated peer connections; refused");
        return;
    };
    metrics.peer_connections.inc();
    tracing::info!(peer = %from, %addr, "peer connected");
    if let Some(signal) = wake.get(&from) {
        signal.notify_one();
    }
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut messages = Vec::new();
    loop {
        let payload = match read_frame(&mut reader, frame_bytes_max).await {
            Ok(payload) => payload,
            Err(FrameError::Closed) => {
                tracing::info!(peer = %from, "peer disconnected");
                return;
            }
            Err(e) => {
                metrics.peer_frame_errors.inc();
                tracing::warn!(peer = %from, error = %e, "bad frame from peer; connection closed");
                return;
            }
        };
        let mut broken = match codec::decode(&payload) {
            Ok(message) => {
                messages.push(message);
                None
            }
            Err(e) => Some(Broken::Undecodable(e)),
        };
        // Frames already buffered go with it, to the node in one batch (issue #15: each message
        // paid the driver's per-input work, a clock reading and the post-input checks).
        while broken.is_none() && messages.len() < PEER_BATCH_MESSAGES_MAX {
            let used = match frame::decode_frame(reader.buffer(), frame_bytes_max) {
                Ok(None) => break,
                Ok(Some((payload, used))) => match codec::decode(payload) {
                    Ok(message) => {
                        messages.push(message);
                        used
                    }
                    Err(e) => {
                        broken = Some(Broken::Undecodable(e));
                        break;
                    }
                },
                Err(e) => {
                    broken = Some(Broken::Frame(e));
                    break;
                }
            };
            std::pin::Pin::new(&mut reader).consume(used);
        }
        // The messages before a bad frame are delivered, as they were when read one by one.
        if inputs.deliver_all(from, &mut messages).await.is_err() {
            return;
        }
        match broken {
            None => {}
            Some(Broken::Frame(e)) => {
                metrics.peer_frame_errors.inc();
                tracing::warn!(peer = %from, error = %e, "bad frame from peer; connection closed");
                return;
            }
            Some(Broken::Undecodable(e)) => {
                metrics.peer_frame_errors.inc();
                tracing::warn!(peer = %from, error = %e, "undecodable message from peer; connection closed");
                return;
            }
        }
    }
}

/// Most messages of one peer link handed to the node in one batch.
const PEER_BATCH_MESSAGES_MAX: usize = 64;

/// Why a peer link's input stopped short of the next frame.
enum Broken {
    Frame(FrameError),
    Undecodable(codec::CodecError),
}
