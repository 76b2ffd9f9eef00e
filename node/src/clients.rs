//! The Redis-protocol client interface: one task per connection, commands run in order (a
//! pipeline keeps Redis's per-connection ordering, so a `SET` is visible to the `GET` after it),
//! replies batched into one write per burst of input.
//!
//! Limits: `connections_max` (over it the client gets `-ERR max number of clients reached`),
//! `request_bytes_max` and `arguments_max` per command (a protocol error: answered, then that
//! connection closes), key and value sizes (refused by the core with a RESP error; the connection
//! stays open). Input is read only while no complete command is buffered, so a pipelining
//! client is throttled by TCP rather than by unbounded buffers; the one exception is while
//! replies wait to be written, when input is read ahead up to `pipeline_bytes_max` (see
//! [`write_reading_ahead`]).
//!
//! With `[tls]` client certificates the listener wraps each accepted connection in TLS
//! ([`crate::tls`]) and hands the decrypted halves to the same connection code as plaintext:
//! everything below the handshake is generic over `AsyncRead`/`AsyncWrite`.

use crate::admin::MembershipView;
use crate::clock::Clock;
use crate::commands::{self, encode_context, Command, COMMAND_TABLE};
use crate::commands_scan;
use crate::config::Settings;
use crate::driver::{InlineInputs, Input, SubmitFn, Submitted};
use crate::metrics::{Level, Metrics, Operation, Outcome};
use crate::resp::{CommandParser, Reply, RequestLimits};
use crate::transaction::TransactionRefusal;
use bytes::{Buf, Bytes, BytesMut};
use ringkv_core::command::scan::{ScanCommand, ScanMachine};
use ringkv_core::command::{Command as CoreCommand, CommandMachine, CommandResult, ValueRead};
use ringkv_core::{CausalContext, ClientReply, ClientRequest, RequestError, WriteVersion};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;

/// Largest reply built for one command (MGET of many large values), so one request cannot make
/// the node buffer an unbounded reply.
const REPLY_BYTES_MAX: usize = 64 << 20;

/// The Redis version reported to clients (some libraries gate features on it).
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

/// What every client connection shares.
pub struct ClientShared {
    /// Towards the driver.
    pub inputs: mpsc::Sender<Input>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The node's configuration.
    pub settings: Arc<Settings>,
    /// The address actually bound for clients.
    pub client_addr: SocketAddr,
    /// The node's clock (uptime).
    pub clock: Clock,
    next_connection: AtomicU64,
    /// Membership as the driver last published it, for `KV.RING` (none in tests without one).
    membership_view: Option<watch::Receiver<Arc<MembershipView>>>,
    /// Where requests go to the node on the connection's own task (`None`: through `inputs`).
    inline: Option<Arc<dyn InlineInputs>>,
}

impl ClientShared {
    /// Shared state for the client listener.
    pub fn new(
        inputs: mpsc::Sender<Input>,
        metrics: Arc<Metrics>,
        settings: Arc<Settings>,
        client_addr: SocketAddr,
        clock: Clock,
    ) -> Self {
        ClientShared {
            inputs,
            metrics,
            settings,
            client_addr,
            clock,
            next_connection: AtomicU64::new(1),
            membership_view: None,
            inline: None,
        }
    }

    /// Hands requests to the node on the connection's own task through `inline` (the driver's
    /// [`crate::driver::Driver::inline_inputs`]) instead of the input queue.
    pub fn with_inline_inputs(mut self, inline: Arc<dyn InlineInputs>) -> Self {
        self.inline = Some(inline);
        self
    }

    /// Serves `KV.RING` from the membership snapshots published on `view`.
    pub fn with_membership_view(mut self, view: watch::Receiver<Arc<MembershipView>>) -> Self {
        self.membership_view = Some(view);
        self
    }

    fn limits(&self) -> RequestLimits {
        RequestLimits {
            request_bytes_max: self.settings.limits.request_bytes_max,
            arguments_max: self.settings.limits.arguments_max,
            inline_bytes_max: 64 << 10,
        }
    }
}

/// Accepts client connections until `shutdown` flips, then waits (up to `grace`) for open
/// connections to finish the command they are running. With `tls`, every connection must
/// complete a TLS handshake first.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<ClientShared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(shared.settings.limits.connections_max));
    let reserved = Arc::new(Semaphore::new(
        shared.settings.limits.connections_reserved_loopback,
    ));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly, keep serving.
                        tracing::warn!(error = %e, "accepting a client connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Past the limit, a few slots stay for loopback: the operator's way in when
                // remote clients hold every slot.
                let slot = Arc::clone(&slots).try_acquire_owned().or_else(|_| {
                    if peer.ip().is_loopback() {
                        Arc::clone(&reserved).try_acquire_owned()
                    } else {
                        Err(tokio::sync::TryAcquireError::NoPermits)
                    }
                });
                let Ok(slot) = slot else {
                    shared.metrics.connections_refused.inc();
                    connections.spawn(tracing::Instrument::in_current_span(refuse(stream)));
                    continue;
                };
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                let tls = tls.clone();
                // The connection's task is not instrumented with the node's span: entering and
                // leaving it on every poll cost about 5% of a request's instructions
                // (callgrind, `redis-benchmark -c 50`). Its few log lines enter it themselves.
                let span = tracing::Span::current();
                connections.spawn(async move {
                    shared.metrics.connections_open.inc();
                    shared.metrics.connections_total.inc();
                    let ended = match tls {
                        None => {
                            let (reader, writer) = stream.into_split();
                            connection(reader, writer, &shared, shutdown).await
                        }
                        Some(acceptor) => {
                            let handshake = accept_tls(stream, peer, &acceptor, &shared);
                            match tracing::Instrument::instrument(handshake, span.clone()).await {
                                Some(stream) => {
                                    let (reader, writer) = tokio::io::split(stream);
                                    connection(reader, writer, &shared, shutdown).await
                                }
                                None => Ok(()),
                            }
                        }
                    };
                    if let Err(e) = ended {
                        span.in_scope(|| {
                            tracing::debug!(%peer, error = %e, "client connection ended");
                        });
                    }
                    shared.metrics.connections_open.dec();
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Warnings about failed client TLS handshakes, which scanners and misconfigured clients can
/// make arrive at any rate: one line per second at most, with the count it stands for.
static TLS_WARNINGS: crate::peer::admission::Throttle =
    crate::peer::admission::Throttle::new(Duration::from_secs(1));

/// Input read and discarded from a plaintext client on a TLS port after its refusal.
const PLAINTEXT_DRAIN_BYTES_MAX: usize = 64 << 10;
/// How long that reading may take.
const PLAINTEXT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the TLS handshake of a client connection, within `limits.command_receive_timeout_ms`.
/// A client that speaks plaintext (its first byte is not a TLS handshake record) gets a RESP
/// error it can read instead of a TLS alert it cannot; either failure is counted and the
/// connection closed, the node goes on.
async fn accept_tls(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    shared: &ClientShared,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let deadline = Duration::from_millis(shared.settings.limits.command_receive_timeout_ms);
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err("closed before the handshake".to_string()),
            Ok(_) if first[0] != crate::tls::TLS_HANDSHAKE_RECORD => {
                let _ = stream
                    .write_all(crate::tls::PLAINTEXT_REFUSED.as_bytes())
                    .await;
                let _ = stream.shutdown().await;
                // Closing with the client's command unread would send a reset, which can
                // destroy the error before the client reads it: read what it sent first
                // (bounded in bytes and time).
                let mut sink = [0u8; 4096];
                let drain = async {
                    let mut drained = 0usize;
                    while drained < PLAINTEXT_DRAIN_BYTES_MAX {
                        match stream.read(&mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => drained += n,
                        }
                    }
                };
                let _ = tokio::time::timeout(PLAINTEXT_DRAIN_TIMEOUT, drain).await;
                return Err("a plaintext client on the TLS client port".to_string());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        acceptor.accept(stream).await.map_err(|e| e.to_string())
    };
    let why = match tokio::time::timeout(deadline, handshake).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(why)) => why,
        Err(_) => "the TLS handshake timed out (limits.command_receive_timeout_ms)".to_string(),
    };
    shared.metrics.client_tls_failures.inc();
    if let Some(repeats) = TLS_WARNINGS.allow(tokio::time::Instant::now().into_std()) {
        tracing::warn!(%peer, repeats, error = %why, "client TLS handshake failed; connection closed (at most one such line per second)");
    }
    None
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
}

/// Per-connection state.
struct Session<'a> {
    shared: &'a ClientShared,
    id: u64,
    protocol: u8,
    authenticated: bool,
    name: Option<Bytes>,
    /// Inside a refused `MULTI`: every command is refused until `EXEC` or `DISCARD`.
    transaction: TransactionRefusal,
}

/// Serves one connection, plaintext or TLS alike: `reader` and `writer` are its two halves.
async fn connection<R, W>(
    mut reader: R,
    mut writer: W,
    shared: &ClientShared,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = shared.limits();
    let pipeline_bytes_max = shared.settings.limits.pipeline_bytes_max;
    let mut input_closed = false;
    let mut session = Session {
        shared,
        id: shared.next_connection.fetch_add(1, Ordering::Relaxed),
        protocol: 2,
        authenticated: shared.settings.password.is_none(),
        name: None,
        transaction: TransactionRefusal::default(),
    };
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut budget = BufferBudget::new(shared);
    budget.account(&input);
    let mut output: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut parser = CommandParser::default();
    let mut pipeline = Pipeline::default();
    let receive_timeout = Duration::from_millis(shared.settings.limits.command_receive_timeout_ms);
    let idle_timeout = match shared.settings.limits.client_idle_timeout_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    // When the first byte of the command still arriving came in (none while `input` is empty).
    let mut receiving_since: Option<tokio::time::Instant> = None;
    // One wait for shutdown for the connection's life: a fresh `changed()` per wait for input
    // registered and dropped a waiter each time, 3% of a GET's instructions (issue #15).
    // And polled cheaply: once its waiter is registered for this task, a wait polls it again
    // only if the flag changed (an atomic load on a second receiver). Polling the registered
    // waiter itself locks the watch's waiter list, about 3% of a GET's instructions.
    let shutdown_seen = shutdown.clone();
    let shutdown_changed = shutdown.changed();
    tokio::pin!(shutdown_changed);
    let mut shutdown_waker: Option<std::task::Waker> = None;
    loop {
        loop {
            match parser.parse(&input, &limits) {
                Ok(Some((args, used))) => {
                    input.advance(used);
                    receiving_since = (!input.is_empty()).then(tokio::time::Instant::now);
                    if args.is_empty() {
                        continue;
                    }
                    shared.metrics.commands.inc();
                    let command = match session.prepare(args) {
                        Prepared::Run(command) => match pipeline.try_push(command) {
                            Ok(()) => continue,
                            Err(command) => command,
                        },
                        Prepared::Answered(reply, close) => {
                            pipeline.run(&session, &mut output).await;
                            reply.encode(session.protocol, &mut output);
                            if close {
                                write_flushed(&mut writer, &output).await?;
                                return Ok(());
                            }
                            continue;
                        }
                    };
                    // It cannot join the commands in flight: they answer first.
                    pipeline.run(&session, &mut output).await;
                    if let Err(command) = pipeline.try_push(command) {
                        let reply = session.execute(command).await;
                        reply.encode(session.protocol, &mut output);
                    }
                    if output.len() >= 64 << 10 {
                        write_reading_ahead(
                            &mut writer,
                            &mut reader,
                            &output,
                            &mut input,
                            pipeline_bytes_max,
                            &mut input_closed,
                        )
                        .await?;
                        output.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    shared.metrics.protocol_errors.inc();
                    pipeline.run(&session, &mut output).await;
                    Reply::err(&e).encode(session.protocol, &mut output);
                    write_flushed(&mut writer, &output).await?;
                    return Ok(());
                }
            }
        }
        pipeline.run(&session, &mut output).await;
        if !output.is_empty() {
            write_reading_ahead(
                &mut writer,
                &mut reader,
                &output,
                &mut input,
                pipeline_bytes_max,
                &mut input_closed,
            )
            .await?;
            output.clear();
            // Input read ahead may hold whole commands: run them before reading again.
            continue;
        }
        if input_closed {
            return Ok(());
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 << 10);
        }
        budget.account(&input);
        if receiving_since.is_none() && !input.is_empty() {
            // Bytes read ahead while replies were written start a command too.
            receiving_since = Some(tokio::time::Instant::now());
        }
        let deadline = match (receiving_since, idle_timeout) {
            (Some(since), _) => Some((since + receive_timeout, Closing::SlowCommand)),
            (None, Some(idle)) => Some((tokio::time::Instant::now() + idle, Closing::Idle)),
            (None, None) => None,
        };
        let expired = async {
            match deadline {
                Some((at, why)) => {
                    tokio::time::sleep_until(at).await;
                    why
                }
                None => std::future::pending().await,
            }
        };
        // Biased (polled in this order): input first, which is what the wait is for; no
        // random draw per wait (issue #15).
        tokio::select! {
            biased;
            read = reader.read_buf(&mut input) => {
                if read? == 0 {
                    return Ok(());
                }
                if receiving_since.is_none() {
                    receiving_since = Some(tokio::time::Instant::now());
                }
                budget.account(&input);
                if budget.over() && input.len() >= LARGE_INPUT_BYTES {
                    let said = close_with(&mut writer, &session, Closing::OverBudget).await;
                    shared.metrics.clients_closed_over_budget.inc();
                    return said;
                }
            }
            why = expired => {
                let said = close_with(&mut writer, &session, why).await;
                match why {
                    Closing::Idle => shared.metrics.clients_closed_idle.inc(),
                    _ => shared.metrics.clients_closed_slow_command.inc(),
                }
                return said;
            }
            _ = std::future::poll_fn(|cx| {
                let registered = shutdown_waker
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(cx.waker()));
                if registered && matches!(shutdown_seen.has_changed(), Ok(false)) {
                    return std::task::Poll::Pending;
                }
                let polled = std::future::Future::poll(shutdown_changed.as_mut(), cx);
                if polled.is_pending() {
                    shutdown_waker = Some(cx.waker().clone());
                }
                polled
            }) => return Ok(()),
        }
    }
}

/// A parsed command: answered already (and whether to close the connection after the answer),
/// or to run.
enum Prepared {
    Answered(Reply, bool),
    Run(Command),
}

/// Most commands of one pipeline in flight together.
const PIPELINE_COMMANDS_MAX: usize = 64;
/// Most keys those commands touch together.
const PIPELINE_KEYS_MAX: usize = 256;

/// Commands of a pipeline that are in flight together: consecutive data commands on distinct
/// keys ([`Command::pipelined_keys`]). They are submitted to the driver one after another
/// without waiting, so their writes share one fsync (the driver's run loop begins it after they
/// are all handed over), and their replies are written in command order. A command that
/// touches one of their keys, or that is not a data command, waits until all of them have
/// answered: what a client sees is what running the commands one by one would show.
#[derive(Default)]
struct Pipeline {
    commands: Vec<Command>,
    /// A [`key_hash`] of each key the gathered commands touch, in order: a new command's keys
    /// are compared with the gathered ones only where these match. (Comparing every key with
    /// every gathered key was 7% of a pipelined GET's instructions at `-P 16`; the keys
    /// themselves are read from the commands, a copy of each cost a clone and a drop.)
    key_hashes: Vec<u64>,
}

impl Pipeline {
    /// Gathers `command` if it may join the commands gathered so far; gives it back if not.
    fn try_push(&mut self, command: Command) -> Result<(), Command> {
        let Some(keys) = command.pipelined_keys() else {
            return Err(command);
        };
        let gathered = self.key_hashes.len();
        if self.commands.len() >= PIPELINE_COMMANDS_MAX || gathered + keys.len() > PIPELINE_KEYS_MAX
        {
            return Err(command);
        }
        let mut admitted = true;
        for key in keys.iter() {
            let hash = key_hash(key);
            if self.key_hashes[..gathered].contains(&hash) && self.holds_key(key) {
                admitted = false;
                break;
            }
            self.key_hashes.push(hash);
        }
        if !admitted {
            self.key_hashes.truncate(gathered);
            return Err(command);
        }
        self.commands.push(command);
        Ok(())
    }

    /// A gathered command touches `key`.
    fn holds_key(&self, key: &[u8]) -> bool {
        self.commands
            .iter()
            .filter_map(Command::pipelined_keys)
            .any(|gathered| gathered.iter().any(|k| k == key))
    }

    /// Runs the gathered commands together and encodes their replies in order.
    async fn run(&mut self, session: &Session<'_>, output: &mut Vec<u8>) {
        self.key_hashes.clear();
        match self.commands.len() {
            0 => {}
            // Awaited in place: no boxed future for the unpipelined case.
            1 => {
                if let Some(command) = self.commands.pop() {
                    let progress = session.start_data(command, &mut Via::Alone);
                    let reply = match progress {
                        Progress::Done(reply) => reply,
                        waiting => session.finish_data(waiting).await,
                    };
                    reply.encode(session.protocol, output);
                }
            }
            _ => {
                // Each is handed to the node in command order, in one batch; only those still
                // waiting for a reply become futures, run together.
                let mut started = Vec::with_capacity(self.commands.len());
                session.start_all(self.commands.drain(..), &mut started);
                let mut replies = Vec::with_capacity(started.len());
                let mut waiting = Vec::new();
                for (at, progress) in started.into_iter().enumerate() {
                    match progress {
                        Progress::Done(reply) => replies.push(Some(reply)),
                        progress => {
                            replies.push(None);
                            waiting.push((at, Box::pin(session.finish_data(progress))));
                        }
                    }
                }
                let (at, running): (Vec<usize>, Vec<_>) = waiting.into_iter().unzip();
                for (at, reply) in at.into_iter().zip(join_in_order(running).await) {
                    replies[at] = Some(reply);
                }
                for reply in replies.into_iter().flatten() {
                    reply.encode(session.protocol, output);
                }
            }
        }
    }
}

/// A data command run as far as it goes without waiting ([`Session::start_data`]).
enum Progress {
    /// Its reply.
    Done(Reply),
    /// Waiting for the reply to one of its requests.
    Waiting(Box<Continuation>),
}

/// A data command waiting for the reply to its request.
struct Continuation {
    machine: CommandMachine,
    render: Render,
    /// What it waits on (taken while it is awaited).
    requested: Option<Requested>,
}

/// Where [`Session::advance`] left a command.
enum Advanced {
    /// It is over: its reply.
    Over(Reply),
    /// It waits for the reply to this request.
    Waiting(Requested),
}

/// The answer to a command whose machine neither finished nor asked for a request: unreachable
/// by the machine's contract (a command not over has a request ready after each reply), so
/// answered, never a panic.
fn stalled() -> Reply {
    Reply::err("internal error: the command stalled")
}

/// How a data command's reply is rendered from its machine's result.
#[derive(Clone, Copy)]
enum Render {
    /// As [`command_result`] renders it.
    AsIs,
    /// `TYPE`: its `EXISTS` count as the key's type.
    Type,
}

impl Render {
    fn reply(self, reply: Reply) -> Reply {
        match (self, reply) {
            (Render::Type, Reply::Integer(1)) => Reply::Simple("string".into()),
            (Render::Type, Reply::Integer(_)) => Reply::Simple("none".into()),
            (_, reply) => reply,
        }
    }
}

/// A request handed to the node ([`Session::begin_request`]).
enum Requested {
    /// Answered at once (already counted in the metrics).
    Answered(ClientReply),
    /// Its reply comes on this channel.
    Pending(oneshot::Receiver<ClientReply>, RequestTiming),
    /// Not handed over (no inline path, or the driver stopped): it goes to the input queue.
    Queue(ClientRequest, RequestTiming),
}

/// How [`Session::begin_request`] hands a request to the node.
enum Via<'v, 'f> {
    /// On its own: through the driver's inline path, else its input queue.
    Alone,
    /// Within a batch of a pipeline's requests ([`InlineInputs::submit_all`]): an answered
    /// request is counted in the metrics once the batch's duration is known.
    Batch {
        submit: &'v mut SubmitFn<'f>,
        answered: &'v mut Vec<Counted>,
    },
}

/// A request's reply as the metrics count it.
struct Counted {
    operation: Operation,
    level: Level,
    outcome: Outcome,
    acks: u8,
}

/// How the metrics count `reply` to a request.
fn counted(operation: Operation, level: Level, reply: &ClientReply) -> Counted {
    let (outcome, acks) = match reply {
        ClientReply::Found { acks, .. }
        | ClientReply::Written { acks, .. }
        | ClientReply::ScanPage { acks, .. }
        | ClientReply::Counted { acks, .. }
        | ClientReply::FoundExpiring { acks, .. }
        | ClientReply::Conditional { acks, .. } => (Outcome::Ok, *acks),
        ClientReply::KeyCount { answered, .. } => {
            (Outcome::Ok, u8::try_from(*answered).unwrap_or(u8::MAX))
        }
        ClientReply::NotFound { acks, .. } => (Outcome::NotFound, *acks),
        ClientReply::Unavailable { acks, .. } => (Outcome::Unavailable, *acks),
        ClientReply::Indeterminate { acks, .. } => (Outcome::Indeterminate, *acks),
        ClientReply::Rejected(_) => (Outcome::Rejected, 0),
    };
    Counted {
        operation,
        level,
        outcome,
        acks,
    }
}

/// What a request's metrics need when its reply comes.
struct RequestTiming {
    operation: Operation,
    level: Level,
    /// When it began, as [`Clock::uptime`] reads.
    since: Duration,
}

/// A cheap 64-bit hash of `key` for [`Pipeline`]'s key check (equal keys, equal hashes; a
/// collision only costs a full comparison).
fn key_hash(key: &[u8]) -> u64 {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |hash: u64, word: u64| (hash.rotate_left(23) ^ word).wrapping_mul(MULTIPLIER);
    let mut hash = mix(0, key.len() as u64);
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        hash = mix(hash, u64::from_le_bytes(bytes));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(hash, u64::from_le_bytes(tail))
}

/// Runs `futures` together; their outputs in the order given. Each is polled in turn on every
/// wake-up until it is done (a pipeline holds at most [`PIPELINE_COMMANDS_MAX`]), so the first
/// command reaches the driver first.
async fn join_in_order<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match std::pin::Pin::new(future).poll(cx) {
                    std::task::Poll::Ready(done) => *output = Some(done),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// A connection holding at least this much unparsed input is a "large offender" when the node
/// is over its client buffer budget: it is closed, where smaller ones (bounded in total by the
/// connection limit) go on.
const LARGE_INPUT_BYTES: usize = 1 << 20;

/// Why the server closes a client connection on its own.
#[derive(Clone, Copy)]
enum Closing {
    OverBudget,
    SlowCommand,
    Idle,
}

/// Writes `bytes` and flushes them: a TLS stream holds written bytes in its own buffer until
/// flushed (a TCP stream has nothing to flush).
async fn write_flushed<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Tells the client why, then closes.
async fn close_with<W: AsyncWrite + Unpin>(
    writer: &mut W,
    session: &Session<'_>,
    why: Closing,
) -> std::io::Result<()> {
    let text = match why {
        Closing::OverBudget => {
            "ERR the node's client memory budget is used up \
             (limits.client_buffer_bytes_total_max); connection closed"
        }
        Closing::SlowCommand => {
            "ERR the command did not arrive whole within \
             limits.command_receive_timeout_ms; connection closed"
        }
        // Redis closes an idle connection without a word; so do we.
        Closing::Idle => return Ok(()),
    };
    let mut output = Vec::new();
    Reply::Error(text.to_string()).encode(session.protocol, &mut output);
    write_flushed(writer, &output).await
}

/// One connection's share of the node's client buffer budget: the capacity of its input
/// buffer, kept in the shared gauge, and given back when the connection ends.
struct BufferBudget<'a> {
    shared: &'a ClientShared,
    accounted: usize,
}

impl<'a> BufferBudget<'a> {
    fn new(shared: &'a ClientShared) -> Self {
        BufferBudget {
            shared,
            accounted: 0,
        }
    }

    /// Brings the shared gauge up to date with `input`'s capacity (what it holds in memory).
    fn account(&mut self, input: &BytesMut) {
        let now = input.capacity();
        let gauge = &self.shared.metrics.client_buffered_bytes;
        if now > self.accounted {
            gauge.add((now - self.accounted) as u64);
        } else {
            gauge.sub((self.accounted - now) as u64);
        }
        self.accounted = now;
    }

    /// Whether all connections together hold more than the budget.
    fn over(&self) -> bool {
        self.shared.metrics.client_buffered_bytes.get()
            > self.shared.settings.limits.client_buffer_bytes_total_max as u64
    }
}

impl Drop for BufferBudget<'_> {
    fn drop(&mut self) {
        self.shared
            .metrics
            .client_buffered_bytes
            .sub(self.accounted as u64);
    }
}

/// Writes all of `output` while still reading the client's input into `input`, up to
/// `input_bytes_max` buffered; `input_closed` is set if the client ends its side meanwhile.
///
/// Not reading while blocked on a write would deadlock a client that writes its whole pipeline
/// before reading any reply (redis-rs's blocking pipelines do, and Redis serves them): it
/// waits for us to read while we wait for it to read. Past the bound the connection is
/// throttled by TCP again, so memory per connection stays bounded. The final flush (bytes a TLS
/// stream still holds) is raced against reading too, for the same reason.
async fn write_reading_ahead<R, W>(
    writer: &mut W,
    reader: &mut R,
    output: &[u8],
    input: &mut BytesMut,
    input_bytes_max: usize,
    input_closed: &mut bool,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // First without the race: a reply that fits in the socket's buffer is written and flushed
    // at once (a plain TCP stream's flush always is), the common case; setting up the race
    // for it was 1.4% of a GET's instructions (issue #15).
    let mut written = 0;
    if !output.is_empty() {
        if let Some(sent) = ready_now(|cx| Pin::new(&mut *writer).poll_write(cx, output)).await {
            match sent? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => written = n,
            }
        }
    }
    if written == output.len() {
        if let Some(flushed) = ready_now(|cx| Pin::new(&mut *writer).poll_flush(cx)).await {
            return flushed;
        }
    }
    loop {
        let room = input_bytes_max.saturating_sub(input.len());
        if *input_closed || room == 0 {
            return write_flushed(writer, &output[written..]).await;
        }
        input.reserve(room.min(64 << 10));
        let mut limited = (&mut *reader).take(room as u64);
        // `Some(n)`: n bytes written; `None`: everything written and flushed.
        let progress = async {
            if written < output.len() {
                writer.write(&output[written..]).await.map(Some)
            } else {
                writer.flush().await.map(|()| None)
            }
        };
        // Both branches are cancel-safe: a write or read that loses the race moved no bytes,
        // and a flush that loses keeps what it has not sent for the next one.
        // Biased towards the write: a reply that fits in the socket's buffer is sent without
        // polling the read at all; input is read ahead only while the write waits.
        tokio::select! {
            biased;
            sent = progress => match sent? {
                Some(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Some(n) => written += n,
                None => return Ok(()),
            },
            read = limited.read_buf(input) => {
                if read? == 0 {
                    *input_closed = true;
                }
            }
        }
    }
}

/// Polls `poll` once: what it gave if it was ready, `None` if it would wait (its waker is then
/// registered, which is harmless: the caller polls the same operation again).
async fn ready_now<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Option<T> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match poll(cx) {
            Poll::Ready(value) => Some(value),
            Poll::Pending => None,
        })
    })
    .await
}

/// The RESP error for a reply that is not a success.
fn failure(reply: &ClientReply) -> Reply {
    match reply {
        ClientReply::Unavailable { acks, needed } => Reply::Error(format!(
            "UNAVAILABLE only {acks} of {needed} replicas answered in time; nothing changed"
        )),
        ClientReply::Indeterminate { acks, needed } => Reply::Error(format!(
            "INDETERMINATE only {acks} of {needed} replicas acknowledged durably in time; the \
             write may or may not take effect"
        )),
        ClientReply::Rejected(e) => rejected(e),
        ClientReply::Found { .. }
        | ClientReply::NotFound { .. }
        | ClientReply::Written { .. }
        | ClientReply::ScanPage { .. }
        | ClientReply::KeyCount { .. }
        | ClientReply::Counted { .. }
        | ClientReply::FoundExpiring { .. }
        | ClientReply::Conditional { .. } => Reply::err("unexpected reply kind"),
    }
}

fn rejected(e: &RequestError) -> Reply {
    match e {
        RequestError::KeyTooLarge { bytes, max } => Reply::err(format!(
            "key of {bytes} bytes refused: keys are 1 to {max} bytes (limits.key_bytes_max)"
        )),
        RequestError::ValueTooLarge { bytes, max } => Reply::err(format!(
            "value of {bytes} bytes refused: at most {max} bytes (limits.value_bytes_max)"
        )),
        RequestError::InvalidConsistency => Reply::err(
            "the consistency level asks for more replicas than the key has (replication.n)",
        ),
        RequestError::NoReplicas => Reply::Error("CLUSTERDOWN the ring has no members".into()),
        RequestError::TooManySiblings { max } => Reply::Error(format!(
            "CONFLICT the key would exceed {max} siblings: KV.GET it, resolve, and KV.PUT with \
             its CONTEXT"
        )),
        RequestError::Busy => Reply::Error(
            "BUSY the cluster is overloaded (this node at limits.requests_in_flight_max, or \
             replicas' peer queues full); nothing was written; retry shortly"
                .into(),
        ),
        RequestError::LinearizableNeedsLww => Reply::err(
            "LEVEL linearizable needs replication.conflict = \"lww\"; this cluster uses vector clocks",
        ),
        RequestError::StorageUnavailable => Reply::err(
            "storage unavailable on a replica (a failed fsync poisons a node until restarted)",
        ),
        RequestError::OutOfDiskSpace => Reply::err(
            "out of disk space: refused with no effect (a replica's disk is full); writes are \
             accepted again once space is freed",
        ),
        RequestError::SiblingsTooLarge { bytes, max } => Reply::Error(format!(
            "CONFLICT the key's siblings would hold {bytes} value bytes, over {max}: KV.GET it, \
             resolve, and KV.PUT with its CONTEXT"
        )),
        RequestError::ExpiryNeedsLww => Reply::err(
            "expiries (TTL) need replication.conflict = \"lww\"; this cluster uses vector clocks",
        ),
        RequestError::ReservedKey => {
            Reply::err("keys beginning with bytes 0xFF 0xFF are reserved for the node's own records")
        }
        // Redis's own words for INCR on a non-integer and for an overflowing increment.
        RequestError::NotAnInteger => Reply::err("value is not an integer or out of range"),
        RequestError::IncrementOverflow => Reply::err("increment or decrement would overflow"),
        RequestError::CountersNeedLww => Reply::err(
            "counters need replication.conflict = \"lww\" and a level of one, quorum, all or a \
             replica count",
        ),
        RequestError::ReplicasDown { reachable, needed } => Reply::Error(format!(
            "UNAVAILABLE the failure detector judges the key's replicas down: {reachable} \
             reachable, {needed} needed; refused before anything was sent, nothing changed; \
             retry later or through a node that can reach them"
        )),
    }
}

fn version_text(version: &WriteVersion) -> String {
    match version {
        WriteVersion::Lww(v) => format!("lww:{}:{}:{:016x}", v.timestamp_micros, v.node.0, v.nonce),
        WriteVersion::Dot(d) => format!("dot:{}:{}:{}", d.actor.node.0, d.actor.epoch, d.counter),
        WriteVersion::Counter(d) => format!(
            "counter:{}:{}:{}:{}",
            d.actor.node.0, d.actor.epoch, d.increments, d.decrements
        ),
    }
}

/// `*` and `?` wildcards, case-insensitive; linear backtracking to the last star, so hostile
/// patterns cost O(pattern × text), never exponential time.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

impl Session<'_> {
    /// Screens and parses one command: either answered already (with whether to close the
    /// connection after the answer), or a command to run.
    fn prepare(&mut self, args: Vec<Bytes>) -> Prepared {
        // Before parsing: after a refused MULTI even a malformed command gets the refusal.
        if let Some(reply) = args.first().and_then(|name| self.transaction.screen(name)) {
            return Prepared::Answered(reply, false);
        }
        let command = match commands::parse_owned(args) {
            Ok(command) => command,
            Err(reply) => return Prepared::Answered(reply, false),
        };
        if !self.authenticated && !command.allowed_before_auth() {
            return Prepared::Answered(
                Reply::Error("NOAUTH Authentication required.".to_string()),
                false,
            );
        }
        match command {
            Command::Quit => Prepared::Answered(Reply::ok(), true),
            command => Prepared::Run(command),
        }
    }

    fn check_password(&mut self, user: Option<&Bytes>, password: &[u8]) -> Result<(), Reply> {
        let Some(expected) = &self.shared.settings.password else {
            return Err(Reply::err(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            ));
        };
        let user_ok = user.is_none_or(|u| u.as_ref() == b"default");
        // Compare without an early exit so timing does not reveal a matching prefix.
        let matches = expected.len() == password.len()
            && expected
                .bytes()
                .zip(password)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if user_ok && matches {
            self.authenticated = true;
            Ok(())
        } else {
            Err(Reply::Error(
                "WRONGPASS invalid username-password pair or user is disabled.".to_string(),
            ))
        }
    }

    async fn execute(&mut self, command: Command) -> Reply {
        match command {
            // The data commands (those `Command::pipelined_keys` names), reached here only when a
            // pipeline could not take them (too many keys). Listed, not guarded, so the match
            // stays exhaustive.
            command @ (Command::Get(_)
            | Command::Set(..)
            | Command::Del(_)
            | Command::Exists(_)
            | Command::MGet(_)
            | Command::MSet(_)
            | Command::Type(_)
            | Command::KvGet { .. }
            | Command::KvPut { .. }
            | Command::KvDel { .. }) => self.execute_shared(command).await,
            Command::Ping(None) => Reply::Simple("PONG".to_string()),
            Command::Ping(Some(message)) | Command::Echo(message) => Reply::Bulk(message),
            Command::Hello {
                protocol,
                auth,
                name,
            } => {
                if let Some((user, password)) = auth {
                    if let Err(reply) = self.check_password(Some(&user), &password) {
                        return reply;
                    }
                }
                if !self.authenticated {
                    return Reply::Error(
                        "NOAUTH HELLO must be called with the client already authenticated, \
                         otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                         authenticate the client and select the RESP protocol version at the \
                         same time"
                            .to_string(),
                    );
                }
                if let Some(protocol) = protocol {
                    self.protocol = protocol;
                }
                if name.is_some() {
                    self.name = name;
                }
                self.hello()
            }
            Command::Auth { user, password } => match self.check_password(user.as_ref(), &password)
            {
                Ok(()) => Reply::ok(),
                Err(reply) => reply,
            },
            Command::Reset => {
                self.transaction.reset();
                self.protocol = 2;
                self.name = None;
                self.authenticated = self.shared.settings.password.is_none();
                Reply::Simple("RESET".to_string())
            }
            Command::Select(index) => {
                if index.as_ref() == b"0" {
                    Reply::ok()
                } else {
                    Reply::err("DB index is out of range (ringkv has one database, 0)")
                }
            }
            Command::Ttl(command) => self.run_command(command).await,
            Command::Info(sections) => Reply::Verbatim(self.info(&sections)),
            // Live keys only (tombstones and deleted keys are not counted): an estimate on a
            // cluster, exact on one node (see `ringkv_core::node::scan`).
            Command::DbSize => self.run_scan(ScanCommand::DbSize).await,
            Command::Scan(command) => self.run_scan(command).await,
            Command::Time => commands_scan::time_reply(self.shared.clock.now().wall.0),
            Command::ConfigGet(patterns) => self.config_get(&patterns),
            Command::ConfigResetStat => Reply::ok(),
            Command::Command(sub, args) => command_reply(sub.as_deref(), &args),
            Command::ClientSetName(name) => {
                self.name = Some(name);
                Reply::ok()
            }
            Command::ClientGetName => match &self.name {
                Some(name) => Reply::Bulk(name.clone()),
                None => Reply::Null,
            },
            Command::ClientId => Reply::Integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            Command::ClientSetInfo => Reply::ok(),
            Command::Quit => Reply::ok(),
            Command::Multi => self.transaction.multi(),
            Command::Exec => TransactionRefusal::exec_without_multi(),
            Command::Discard => TransactionRefusal::discard_without_multi(),
            Command::Watch | Command::Unwatch => TransactionRefusal::watch(),
            Command::KvRing => match &self.shared.membership_view {
                Some(view) => {
                    let view = Arc::clone(&view.borrow());
                    let n = usize::from(self.shared.settings.cluster.n);
                    crate::commands_ring::ring_reply(&view, n)
                }
                None => Reply::err("KV.RING: this node publishes no ring"),
            },
            Command::Counter(command) => self.run_command(command).await,
            Command::SetConditional {
                key,
                value,
                options,
            } => {
                let get = options.get;
                let command = CoreCommand::Set {
                    key,
                    value,
                    options,
                };
                match self.run_machine(command).await {
                    Ok(CommandResult::Conditional { applied, previous }) => {
                        crate::conditional::set_reply(applied, previous, get)
                    }
                    Ok(other) => command_result(other),
                    Err(reply) => reply,
                }
            }
            Command::KvCas {
                key,
                expected,
                value,
            } => {
                let command = CoreCommand::KvCas {
                    key,
                    expected,
                    value,
                };
                match self.run_machine(command).await {
                    Ok(CommandResult::Conditional { applied, .. }) => {
                        crate::conditional::cas_reply(applied)
                    }
                    Ok(other) => command_result(other),
                    Err(reply) => reply,
                }
            }
        }
    }

    /// Runs a data command that only reads the session: the commands of a pipeline that touch
    /// different keys run this side by side ([`Command::pipelined_keys`]).
    async fn execute_shared(&self, command: Command) -> Reply {
        let progress = self.start_data(command, &mut Via::Alone);
        self.finish_data(progress).await
    }

    /// [`Session::start_data`] for each of `commands` in order, into `started`: all handed to
    /// the node in one batch while the driver takes inline inputs, each on its own otherwise.
    fn start_all(&self, mut commands: impl Iterator<Item = Command>, started: &mut Vec<Progress>) {
        if let Some(inline) = &self.shared.inline {
            let mut answered = Vec::new();
            let took = inline.submit_all(&mut |submit| {
                let mut via = Via::Batch {
                    submit,
                    answered: &mut answered,
                };
                for command in commands.by_ref() {
                    started.push(self.start_data(command, &mut via));
                }
            });
            if let Some(took) = took {
                for counted in answered {
                    self.count(counted, took);
                }
            }
        }
        // Left if the driver stopped before the batch ran: each goes to the queue.
        for command in commands {
            started.push(self.start_data(command, &mut Via::Alone));
        }
    }

    /// Starts a data command and runs it as far as the node answers at once: a read of local
    /// data ends here, with no future made for it (issue #15: a GET's layers of futures, each
    /// moving the command into the next, were about a tenth of its instructions).
    fn start_data(&self, command: Command, via: &mut Via<'_, '_>) -> Progress {
        let (command, render) = match command {
            Command::Get(key) => (CoreCommand::Get { key }, Render::AsIs),
            Command::Set(key, value) => {
                let options = ringkv_core::command::SetOptions::default();
                let set = CoreCommand::Set {
                    key,
                    value,
                    options,
                };
                (set, Render::AsIs)
            }
            Command::Del(keys) => (CoreCommand::Del { keys }, Render::AsIs),
            Command::Exists(keys) => (CoreCommand::Exists { keys }, Render::AsIs),
            Command::MGet(keys) => (CoreCommand::MGet { keys }, Render::AsIs),
            Command::MSet(pairs) => (CoreCommand::MSet { pairs }, Render::AsIs),
            // Plain values and counters are both Redis strings.
            Command::Type(key) => (CoreCommand::Exists { keys: vec![key] }, Render::Type),
            Command::KvGet { key, level } => (CoreCommand::KvGet { key, level }, Render::AsIs),
            Command::KvPut {
                key,
                value,
                level,
                context,
            } => {
                let put = CoreCommand::KvPut {
                    key,
                    value,
                    level,
                    context,
                };
                (put, Render::AsIs)
            }
            Command::KvDel {
                key,
                level,
                context,
            } => {
                let delete = CoreCommand::KvDel {
                    key,
                    level,
                    context,
                };
                (delete, Render::AsIs)
            }
            // `execute` sends only the commands above here.
            _ => return Progress::Done(Reply::err("internal error: not a data command")),
        };
        let mut machine = CommandMachine::new(command, self.shared.settings.cluster.conflict);
        match self.advance(&mut machine, render, via) {
            Advanced::Over(reply) => Progress::Done(reply),
            Advanced::Waiting(requested) => Progress::Waiting(Box::new(Continuation {
                machine,
                render,
                requested: Some(requested),
            })),
        }
    }

    /// Feeds `machine` its requests while the node answers them at once: the command's reply,
    /// or the request it waits on. (The machine is borrowed, never moved: it is about 380
    /// bytes, and each move is a copy.)
    fn advance(
        &self,
        machine: &mut CommandMachine,
        render: Render,
        via: &mut Via<'_, '_>,
    ) -> Advanced {
        loop {
            if let Some(result) = machine.poll_result() {
                return Advanced::Over(render.reply(command_result(result)));
            }
            let Some(body) = machine.poll_request() else {
                return Advanced::Over(stalled());
            };
            match self.begin_request(body, via) {
                Requested::Answered(reply) => machine.handle_reply(reply),
                requested => return Advanced::Waiting(requested),
            }
        }
    }

    /// Runs a data command [`Session::start_data`] started to its reply.
    async fn finish_data(&self, progress: Progress) -> Reply {
        let mut continuation = match progress {
            Progress::Done(reply) => return reply,
            Progress::Waiting(continuation) => continuation,
        };
        loop {
            let Some(requested) = continuation.requested.take() else {
                return stalled();
            };
            match self.finish_request(requested).await {
                Ok(reply) => continuation.machine.handle_reply(reply),
                Err(reply) => return reply,
            }
            let render = continuation.render;
            match self.advance(&mut continuation.machine, render, &mut Via::Alone) {
                Advanced::Over(reply) => return reply,
                Advanced::Waiting(requested) => continuation.requested = Some(requested),
            }
        }
    }

    /// Runs a data command through the core's command machine (the one place its consistency
    /// semantics live, which the simulator checks on seeds) and renders its result.
    async fn run_command(&self, command: CoreCommand) -> Reply {
        match self.run_machine(command).await {
            Ok(result) => command_result(result),
            Err(reply) => reply,
        }
    }

    /// Runs core's machine for `command` to its result (`Err`: the driver's own failure).
    async fn run_machine(&self, command: CoreCommand) -> Result<CommandResult, Reply> {
        let mut machine = CommandMachine::new(command, self.shared.settings.cluster.conflict);
        loop {
            if let Some(result) = machine.poll_result() {
                return Ok(result);
            }
            let Some(body) = machine.poll_request() else {
                // Unreachable by the machine's contract (a command not over has a request
                // ready after each reply); answered, never a panic.
                return Err(stalled());
            };
            match self.request(body).await {
                Ok(reply) => machine.handle_reply(reply),
                Err(reply) => return Err(reply),
            }
        }
    }

    /// Runs `SCAN`, `KEYS` or `DBSIZE` through core's scan machine and renders its result.
    async fn run_scan(&self, command: ScanCommand) -> Reply {
        let mut machine = ScanMachine::new(command);
        loop {
            if let Some(result) = machine.poll_result() {
                return commands_scan::scan_reply(result, failure);
            }
            let Some(body) = machine.poll_request() else {
                return stalled();
            };
            match self.request(body).await {
                Ok(reply) => machine.handle_reply(reply),
                Err(reply) => return reply,
            }
        }
    }

    /// Sends one request to the driver and waits for its reply.
    async fn request(&self, body: ClientRequest) -> Result<ClientReply, Reply> {
        let requested = self.begin_request(body, &mut Via::Alone);
        match requested {
            Requested::Answered(reply) => Ok(reply),
            waiting => self.finish_request(waiting).await,
        }
    }

    /// Hands one request to the node, without waiting: its reply if the node answered at once
    /// (recorded in the metrics, or in a batch's list to record), else what to wait on.
    fn begin_request(&self, body: ClientRequest, via: &mut Via<'_, '_>) -> Requested {
        let (operation, level) = match &body {
            ClientRequest::Get { consistency, .. }
            | ClientRequest::GetExpiring { consistency, .. } => (Operation::Get, *consistency),
            ClientRequest::Put { consistency, .. }
            | ClientRequest::PutExpiring { consistency, .. } => (Operation::Put, *consistency),
            ClientRequest::Delete { consistency, .. } => (Operation::Delete, *consistency),
            // Scans and key counts read: they are counted with the reads.
            ClientRequest::Scan { consistency, .. } => (Operation::Get, *consistency),
            ClientRequest::CountKeys => (Operation::Get, None),
            // Counted with the writes of values (the metric families stay as they were).
            ClientRequest::Increment { consistency, .. } => (Operation::Put, *consistency),
            ClientRequest::Conditional { .. } => {
                (Operation::Put, Some(ringkv_core::Consistency::Linearizable))
            }
        };
        let level = Level::of(level);
        let submitted = match via {
            Via::Batch { submit, answered } => match submit(body) {
                Submitted::Answered { reply, .. } => {
                    answered.push(counted(operation, level, &reply));
                    return Requested::Answered(reply);
                }
                pending => Ok(pending),
            },
            Via::Alone => match &self.shared.inline {
                Some(inline) => inline.submit(body),
                None => Err(body),
            },
        };
        let (since, queued) = match submitted {
            Ok(Submitted::Answered { reply, took }) => {
                self.record(operation, level, &reply, took);
                return Requested::Answered(reply);
            }
            Ok(Submitted::Pending { reply, since }) => (since, Ok(reply)),
            Err(body) => (self.shared.clock.uptime(), Err(body)),
        };
        let timing = RequestTiming {
            operation,
            level,
            since,
        };
        match queued {
            Ok(reply) => Requested::Pending(reply, timing),
            Err(body) => Requested::Queue(body, timing),
        }
    }

    /// Waits for the reply to a request [`Session::begin_request`] began.
    async fn finish_request(&self, requested: Requested) -> Result<ClientReply, Reply> {
        let gone = || Reply::err("the node is shutting down");
        let (reply, timing) = match requested {
            Requested::Answered(reply) => return Ok(reply),
            Requested::Pending(reply, timing) => (reply.await.map_err(|_| gone())?, timing),
            Requested::Queue(body, timing) => {
                let (reply, replied) = oneshot::channel();
                self.shared
                    .inputs
                    .send(Input::Client { body, reply })
                    .await
                    .map_err(|_| gone())?;
                (replied.await.map_err(|_| gone())?, timing)
            }
        };
        let took = self.shared.clock.uptime().saturating_sub(timing.since);
        self.record(timing.operation, timing.level, &reply, took);
        Ok(reply)
    }

    /// Counts a request's reply, which took `took`, in the metrics.
    fn record(&self, operation: Operation, level: Level, reply: &ClientReply, took: Duration) {
        self.count(counted(operation, level, reply), took);
    }

    /// Counts a reply that took `took` in the metrics.
    fn count(&self, counted: Counted, took: Duration) {
        self.shared.metrics.record_request(
            counted.operation,
            counted.level,
            counted.outcome,
            counted.acks,
            took,
        );
    }

    fn hello(&self) -> Reply {
        Reply::Map(vec![
            (Reply::text("server"), Reply::text("redis")),
            (Reply::text("version"), Reply::text(REDIS_COMPAT_VERSION)),
            (
                Reply::text("proto"),
                Reply::Integer(i64::from(self.protocol)),
            ),
            (
                Reply::text("id"),
                Reply::Integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ),
            (Reply::text("mode"), Reply::text("standalone")),
            (Reply::text("role"), Reply::text("master")),
            (Reply::text("modules"), Reply::Array(Vec::new())),
        ])
    }

    fn info(&self, sections: &[String]) -> String {
        let settings = &self.shared.settings;
        let metrics = &self.shared.metrics;
        let wanted = |name: &str| {
            sections.is_empty()
                || sections
                    .iter()
                    .any(|s| s == name || s == "all" || s == "everything" || s == "default")
        };
        let mut out = String::new();
        if wanted("server") {
            out.push_str(&format!(
                "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nringkv_version:{}\r\n\
                 redis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\n\
                 tcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                self.shared.client_addr.port(),
                self.shared.clock.uptime().as_secs(),
            ));
        }
        if wanted("clients") {
            out.push_str(&format!(
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                metrics.connections_open.get(),
                settings.limits.connections_max
            ));
        }
        if wanted("replication") {
            let c = &settings.cluster;
            out.push_str(&format!(
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nringkv_n:{}\r\n\
                 ringkv_r:{}\r\nringkv_w:{}\r\nringkv_read_write_overlap:{}\r\n\
                 ringkv_conflict:{}\r\nringkv_sloppy_quorum:{}\r\n\
                 ringkv_read_repair:{}\r\nringkv_anti_entropy_interval_ms:{}\r\n\
                 ringkv_fault_points:{}\r\nringkv_unsafe_test_knobs:{}\r\n\r\n",
                c.n,
                c.r,
                c.w,
                // `no`: with R + W <= N a quorum read may miss the latest quorum write.
                if usize::from(c.r) + usize::from(c.w) > usize::from(c.n) {
                    "yes"
                } else {
                    "no"
                },
                c.conflict,
                c.sloppy_quorum,
                c.read_repair,
                c.anti_entropy_interval_ms,
                // What the core machine was built with (its fault points follow
                // `simulation`), so a test can ask the shipped binary itself.
                if c.simulation { "on" } else { "off" },
                if c.simulation
                    || c.unsafe_ack_before_persist
                    || c.unsafe_skip_write_back
                    || c.unsafe_drop_every_nth_write != 0
                    || c.unsafe_counter_merge_adds
                    || c.unsafe_paxos_flaw != ringkv_core::node::PaxosFlaw::None
                {
                    "on"
                } else {
                    "off"
                },
            ));
        }
        if wanted("keyspace") {
            out.push_str(&format!(
                "# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n\r\n",
                metrics.storage_keys.get()
            ));
        }
        if wanted("ringkv") {
            let repair = &metrics.repair;
            out.push_str(&format!(
                "# ringkv\r\nnode_id:{}\r\ndatacenter:{}\r\nrack:{}\r\ncluster_name:{}\r\n\
                 ring_members:{}\r\npeers_connected:{}\r\noperations_in_flight:{}\r\n\
                 gets_ok:{}\r\nputs_ok:{}\r\nwrites_indeterminate:{}\r\nreads_unavailable:{}\r\n\
                 storage_syncs:{}\r\nstorage_table_bytes:{}\r\nstorage_vlog_bytes:{}\r\n\
                 storage_level0_tables:{}\r\nstorage_compactions:{}\r\n\
                 peer_messages_dropped:{}\r\npeer_requests_failed:{}\r\n\
                 peer_replies_deferred:{}\r\npeer_replies_dropped:{}\r\n\
                 hints_handed_off:{}\r\nhints_queued:{}\r\nhints_replayed:{}\r\n\
                 hints_delivered:{}\r\nhints_overflowed:{}\r\nhints_expired:{}\r\n\
                 hints_pending:{}\r\nanti_entropy_rounds:{}\r\n\
                 anti_entropy_ranges_compared:{}\r\nanti_entropy_ranges_differing:{}\r\n\
                 anti_entropy_records_sent:{}\r\nanti_entropy_records_repaired:{}\r\n\
                 read_repairs:{}\r\n\r\n",
                settings.node_id.0,
                settings.location.datacenter,
                settings.location.rack,
                settings.cluster_name,
                settings.peers.len() + 1,
                metrics.peers_connected.get(),
                metrics.operations_in_flight.get(),
                metrics.requests(Operation::Get, Outcome::Ok),
                metrics.requests(Operation::Put, Outcome::Ok),
                metrics.requests(Operation::Put, Outcome::Indeterminate)
                    + metrics.requests(Operation::Delete, Outcome::Indeterminate),
                metrics.requests(Operation::Get, Outcome::Unavailable),
                metrics.storage_syncs.get(),
                metrics.storage_table_bytes.get(),
                metrics.storage_vlog_bytes.get(),
                metrics.storage_level0_tables.get(),
                metrics.storage_compactions.get(),
                metrics.peer_messages_dropped.get(),
                metrics.peer_requests_failed.get(),
                metrics.peer_replies_deferred.get(),
                metrics.peer_replies_dropped.get(),
                repair.hints_handed_off.get(),
                repair.hints_queued.get(),
                repair.hints_replayed.get(),
                repair.hints_delivered.get(),
                repair.hints_overflowed.get(),
                repair.hints_expired.get(),
                repair.hints_pending.get(),
                repair.anti_entropy_rounds.get(),
                repair.anti_entropy_ranges_compared.get(),
                repair.anti_entropy_ranges_differing.get(),
                repair.anti_entropy_records_sent.get(),
                repair.anti_entropy_records_repaired.get(),
                repair.read_repairs.get(),
            ));
        }
        out
    }

    fn config_get(&self, patterns: &[String]) -> Reply {
        let settings = &self.shared.settings;
        let parameters: Vec<(&str, String)> = vec![
            ("appendonly", "yes".into()),
            ("appendfsync", "always".into()),
            ("save", String::new()),
            ("databases", "1".into()),
            ("maxmemory", "0".into()),
            ("maxclients", settings.limits.connections_max.to_string()),
            ("port", self.shared.client_addr.port().to_string()),
            ("bind", self.shared.client_addr.ip().to_string()),
            (
                "proto-max-bulk-len",
                settings.limits.request_bytes_max.to_string(),
            ),
            ("timeout", "0".into()),
            ("cluster-enabled", "no".into()),
        ];
        let mut pairs = Vec::new();
        for (name, value) in parameters {
            if patterns
                .iter()
                .any(|p| glob_match(p.as_bytes(), name.as_bytes()))
            {
                pairs.push((Reply::text(name), Reply::text(value)));
            }
        }
        Reply::Map(pairs)
    }
}

/// The RESP reply for a command's result.
fn command_result(result: CommandResult) -> Reply {
    match result {
        CommandResult::Done => Reply::ok(),
        CommandResult::Value(read) => value_reply(read),
        CommandResult::Count(count) => Reply::Integer(i64::try_from(count).unwrap_or(i64::MAX)),
        CommandResult::Values(reads) => {
            // A conflict fails the whole MGET: an error inside the array is a value most client
            // libraries hand back as if it were data (redis-py returns the exception object in
            // the list), so the caller would never see it fail.
            if let Some((position, siblings)) =
                reads.iter().enumerate().find_map(|(i, read)| match read {
                    ValueRead::Conflict { siblings } => Some((i + 1, *siblings)),
                    _ => None,
                })
            {
                return Reply::Error(format!(
                    "CONFLICT key {position} of the MGET has {siblings} concurrent values: \
                     KV.GET shows them all, and KV.PUT with its CONTEXT resolves them"
                ));
            }
            let bytes: usize = reads
                .iter()
                .map(|read| match read {
                    ValueRead::Value(value) => value.len(),
                    ValueRead::Absent | ValueRead::Conflict { .. } => 0,
                })
                .sum();
            if bytes > REPLY_BYTES_MAX {
                return Reply::err(format!(
                    "MGET reply would exceed {REPLY_BYTES_MAX} bytes; ask for fewer keys"
                ));
            }
            Reply::Array(reads.into_iter().map(value_reply).collect())
        }
        CommandResult::Read {
            values,
            context,
            acks,
        } => kv_read_reply(values, &context, acks),
        CommandResult::Written { version, acks } => Reply::Map(vec![
            (Reply::text("version"), Reply::text(version_text(&version))),
            (Reply::text("acks"), Reply::Integer(i64::from(acks))),
        ]),
        CommandResult::Failed(reply) => failure(&reply),
        CommandResult::Integer(n) => Reply::Integer(n),
        CommandResult::Unsupported(why) => Reply::err(why),
        // Conditional commands render their own result (see `conditional`).
        CommandResult::Conditional { applied, previous } => {
            crate::conditional::set_reply(applied, previous, false)
        }
    }
}

/// A plain read's value as `GET` and `MGET` return it.
fn value_reply(read: ValueRead) -> Reply {
    match read {
        ValueRead::Absent => Reply::Null,
        ValueRead::Value(value) => Reply::Bulk(value),
        ValueRead::Conflict { siblings } => Reply::Error(format!(
            "CONFLICT the key has {siblings} concurrent values: KV.GET shows them all, and \
             KV.PUT with its CONTEXT resolves them"
        )),
    }
}

fn kv_read_reply(values: Vec<Bytes>, context: &CausalContext, acks: u8) -> Reply {
    Reply::Map(vec![
        (
            Reply::text("values"),
            Reply::Array(values.into_iter().map(Reply::Bulk).collect()),
        ),
        (Reply::text("context"), Reply::text(encode_context(context))),
        (Reply::text("acks"), Reply::Integer(i64::from(acks))),
    ])
}

fn command_info(entry: &commands::CommandSpec) -> Reply {
    let (name, arity, flags, first, last, step) = *entry;
    Reply::Array(vec![
        Reply::text(name),
        Reply::Integer(arity),
        Reply::Array(
            flags
                .iter()
                .map(|f| Reply::Simple((*f).to_string()))
                .collect(),
        ),
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Integer(step),
    ])
}

fn command_reply(sub: Option<&str>, args: &[Bytes]) -> Reply {
    match sub {
        None => Reply::Array(COMMAND_TABLE.iter().map(command_info).collect()),
        Some("COUNT") => Reply::Integer(COMMAND_TABLE.len() as i64),
        Some("LIST") => Reply::Array(COMMAND_TABLE.iter().map(|c| Reply::text(c.0)).collect()),
        // Documentation is optional for clients (redis-cli uses it for hints only).
        Some("DOCS") => Reply::Map(Vec::new()),
        Some("INFO") => Reply::Array(
            args.iter()
                .map(|name| {
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    COMMAND_TABLE
                        .iter()
                        .find(|c| c.0 == name)
                        .map_or(Reply::Null, command_info)
                })
                .collect(),
        ),
        Some(other) => Reply::err(format!(
            "unknown subcommand '{other}'. ringkv supports COMMAND, COMMAND COUNT, DOCS, INFO \
             and LIST."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{connection, glob_match, ClientShared, Pipeline, PIPELINE_KEYS_MAX};
    use crate::clock::Clock;
    use crate::commands::Command;
    use crate::config::FileConfig;
    use crate::metrics::Metrics;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, watch};

    /// A connection waiting for input ends when the node shuts down, after its shutdown wait
    /// was polled (and skipped as unchanged) on earlier waits. Time is paused: a connection
    /// that never saw the flag would sit until the hour below runs out on the virtual clock.
    #[tokio::test(start_paused = true)]
    async fn a_connection_waiting_for_input_ends_at_shutdown() {
        let settings = Arc::new(FileConfig::dev().validate().expect("dev settings"));
        let (inputs, _driver_side) = mpsc::channel(8);
        let shared = ClientShared::new(
            inputs,
            Arc::new(Metrics::default()),
            settings,
            "127.0.0.1:6379".parse().expect("address"),
            Clock::start(),
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (client, server) = tokio::io::duplex(4096);
        let (reader, writer) = tokio::io::split(server);
        let (mut client_reader, mut client_writer) = tokio::io::split(client);
        let served = tokio::spawn(async move {
            connection(reader, writer, &shared, shutdown_rx)
                .await
                .is_ok()
        });
        // Three commands, each followed by a wait for input (which polls the shutdown wait).
        for _ in 0..3 {
            client_writer.write_all(b"PING\r\n").await.expect("send");
            let mut reply = [0u8; 7];
            client_reader.read_exact(&mut reply).await.expect("reply");
            assert_eq!(&reply, b"+PONG\r\n");
        }
        shutdown_tx.send(true).expect("connection listens");
        let ended = tokio::time::timeout(Duration::from_secs(3600), served).await;
        assert!(
            matches!(ended, Ok(Ok(true))),
            "the connection did not end at shutdown: {ended:?}"
        );
    }

    /// A pipeline gathers data commands while their keys are distinct from the gathered ones'
    /// (a command that shares one is given back, and leaves nothing behind), up to its bounds.
    #[test]
    fn a_pipeline_gathers_commands_on_distinct_keys_only() {
        let key = |k: &str| Bytes::copy_from_slice(k.as_bytes());
        let mut pipeline = Pipeline::default();
        assert!(pipeline.try_push(Command::Get(key("a"))).is_ok());
        assert!(pipeline
            .try_push(Command::Get(key("key:000000000001")))
            .is_ok());
        let shares = Command::MGet(vec![key("b"), key("key:000000000001")]);
        assert!(pipeline.try_push(shares).is_err(), "shares a gathered key");
        assert_eq!(
            pipeline.key_hashes.len(),
            2,
            "the refused command left no key"
        );
        assert!(
            pipeline.try_push(Command::Get(key("b"))).is_ok(),
            "b is free"
        );
        assert!(pipeline.try_push(Command::Set(key("a"), key("v"))).is_err());
        assert!(
            pipeline.try_push(Command::Ping(None)).is_err(),
            "not a data command"
        );
        // Keys differing in one of their last three bytes, or in length, are all distinct.
        let mut pipeline = Pipeline::default();
        let mut pushed = 0;
        for length in 1..=20 {
            for at in 0..length.min(3) {
                let mut bytes = vec![b'k'; length];
                bytes[length - 1 - at] = b'0';
                let command = Command::Get(Bytes::from(bytes));
                assert!(
                    pipeline.try_push(command).is_ok(),
                    "length {length}, at {at}"
                );
                pushed += 1;
            }
        }
        assert_eq!(pipeline.key_hashes.len(), pushed);
        let many: Vec<Bytes> = (0..=PIPELINE_KEYS_MAX)
            .map(|i| key(&format!("m{i}")))
            .collect();
        assert!(
            Pipeline::default().try_push(Command::MGet(many)).is_err(),
            "more keys than a pipeline holds"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"save"));
        assert!(glob_match(b"append*", b"appendonly"));
        assert!(glob_match(b"SAVE", b"save"));
        assert!(glob_match(b"s?ve", b"save"));
        assert!(!glob_match(b"save", b"saves"));
        assert!(glob_match(b"*fs*c", b"appendfsync"));
        assert!(glob_match(&[b'*'; 5000], b""));
        let mut hostile = vec![b'*'; 5000];
        hostile.push(b'x');
        assert!(!glob_match(&hostile, b"appendfsync"));
    }
}
