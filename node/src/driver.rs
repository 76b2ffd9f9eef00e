//! The driver: the one task that owns the [`Node`] and follows the core's rule — feed one input,
//! drain `poll_output` completely, sleep until `poll_timeout` or the next input.
//!
//! Persistence is group commit: a `Persist` output only records the highest token requested;
//! when no fsync is running, the driver writes the staged entries and starts one fsync on a
//! blocking thread covering every token requested so far, and keeps serving inputs meanwhile.
//! When it completes the node gets `handle_persisted` (or `handle_persist_failed`, which poisons
//! the storage; a failed fsync is never retried).

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::storage::LogStorage;
use ringkv_core::{
    ClientReply, ClientRequest, Message, Node, NodeEvent, NodeId, Output, PersistToken, RequestId,
    Storage,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Inputs the driver accepts from the rest of the node.
pub enum Input {
    /// A client request; the reply goes back on `reply`.
    Client {
        /// The request.
        body: ClientRequest,
        /// Where the reply goes.
        reply: oneshot::Sender<ClientReply>,
    },
    /// A message from an authenticated peer.
    Peer {
        /// The sender, as proven by the handshake.
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// Finish what is in flight, sync, and stop.
    Shutdown,
}

/// Inputs queued towards the driver before senders wait (back-pressure on connections).
pub const INPUT_QUEUE_MAX: usize = 8192;
/// Inputs handled per wake-up before the driver checks timers and starts a sync.
const INPUT_BATCH_MAX: usize = 256;

/// Routes `Output::Send` to per-peer queues.
pub type PeerQueues = BTreeMap<NodeId, mpsc::Sender<Message>>;

/// How an fsync ended, and how long it took.
type SyncDone = (Result<(), String>, Duration);

/// The driver task's state.
pub struct Driver {
    node: Node<LogStorage>,
    clock: Clock,
    inputs: mpsc::Receiver<Input>,
    peers: PeerQueues,
    metrics: Arc<Metrics>,
    waiting: HashMap<u64, oneshot::Sender<ClientReply>>,
    next_request: u64,
    /// Highest persist token requested and not yet covered by a started fsync.
    persist_requested: Option<PersistToken>,
    /// The running fsync: the token it covers and its completion.
    syncing: Option<(PersistToken, oneshot::Receiver<SyncDone>)>,
    shutting_down: Option<tokio::time::Instant>,
    shutdown_grace: Duration,
}

impl Driver {
    /// A driver for `node`, fed by `inputs`, sending to `peers`.
    pub fn new(
        node: Node<LogStorage>,
        clock: Clock,
        inputs: mpsc::Receiver<Input>,
        peers: PeerQueues,
        metrics: Arc<Metrics>,
        request_timeout: Duration,
    ) -> Driver {
        Driver {
            node,
            clock,
            inputs,
            peers,
            metrics,
            waiting: HashMap::new(),
            next_request: 1,
            persist_requested: None,
            syncing: None,
            shutting_down: None,
            shutdown_grace: request_timeout + Duration::from_secs(1),
        }
    }

    /// Runs until shutdown (or until every input sender is gone); returns the storage after a
    /// final sync.
    pub async fn run(mut self) -> LogStorage {
        loop {
            let deadline = self.node.poll_timeout().map(|t| self.clock.to_tokio(t));
            let sync_done = async {
                match self.syncing.as_mut() {
                    Some((_, done)) => done.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                done = sync_done => {
                    let token = self.syncing.take().map(|(t, _)| t);
                    if let Some(token) = token {
                        let result = done.unwrap_or_else(|_| (Err("fsync thread vanished".to_string()), Duration::ZERO));
                        self.finish_sync(token, result);
                    }
                }
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    for _ in 1..INPUT_BATCH_MAX {
                        match self.inputs.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep_until(deadline) => {
                    self.node.handle_timeout(self.clock.now());
                    self.drain();
                }
            }
            self.start_sync();
            self.publish_gauges();
            if let Some(until) = self.shutting_down {
                let idle = self.node.operations_in_flight() == 0
                    && self.syncing.is_none()
                    && self.persist_requested.is_none();
                if idle || Clock::tokio_now() >= until {
                    break;
                }
            }
        }
        self.finish().await
    }

    async fn finish(mut self) -> LogStorage {
        if let Some((token, done)) = self.syncing.take() {
            let result = done
                .await
                .unwrap_or_else(|_| (Err("fsync thread vanished".to_string()), Duration::ZERO));
            self.finish_sync(token, result);
        }
        let mut storage = self.node.into_storage();
        if storage.poisoned().is_none() {
            if let Err(e) = storage.sync() {
                tracing::error!(error = %e, "final sync failed");
            }
        }
        storage
    }

    fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Client { body, reply } => {
                let id = self.next_request;
                self.next_request += 1;
                self.waiting.insert(id, reply);
                self.node.handle_client(now, RequestId(id), body);
            }
            Input::Peer { from, message } => {
                self.metrics.peer_messages_received.inc();
                self.node.handle_message(now, from, message);
            }
            Input::Shutdown => {
                // The core answers every request by its deadline, so this bounds the wait.
                self.shutting_down = Some(Clock::tokio_now() + self.shutdown_grace);
            }
        }
        self.drain();
    }

    /// Carries out every pending output.
    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Send { to, message } => self.send(to, message),
                Output::Persist { token } => {
                    self.persist_requested = Some(match self.persist_requested {
                        Some(t) => t.max(token),
                        None => token,
                    });
                }
                Output::Reply { request, reply } => {
                    if let Some(waiter) = self.waiting.remove(&request.0) {
                        // The client may have gone; its reply is then simply dropped.
                        let _ = waiter.send(reply);
                    }
                }
                Output::Event(event) => match event {
                    NodeEvent::StoragePoisoned { reason } => {
                        tracing::error!(%reason, "storage poisoned: writes are refused until restart")
                    }
                    NodeEvent::StorageError { reason } => {
                        tracing::warn!(%reason, "storage error")
                    }
                    NodeEvent::ForwardRetried { next } => {
                        tracing::debug!(%next, "forwarded put retried")
                    }
                },
            }
        }
    }

    fn send(&mut self, to: NodeId, message: Message) {
        if to == self.node.id() {
            // The core answers itself directly today; deliver anyway rather than lose it.
            let now = self.clock.now();
            let from = self.node.id();
            self.node.handle_message(now, from, message);
            return;
        }
        match self.peers.get(&to) {
            Some(queue) => match queue.try_send(message) {
                Ok(()) => self.metrics.peer_messages_sent.inc(),
                // A full queue drops the message (counted); the coordinator's deadline turns the
                // loss into a typed outcome, as for any lost message.
                Err(_) => self.metrics.peer_messages_dropped.inc(),
            },
            None => {
                tracing::warn!(%to, kind = message.kind(), "message to an unknown node dropped");
                self.metrics.peer_messages_dropped.inc();
            }
        }
    }

    /// Starts one fsync covering every token requested so far, if none is running.
    fn start_sync(&mut self) {
        if self.syncing.is_some() {
            return;
        }
        let Some(token) = self.persist_requested.take() else {
            return;
        };
        match self.node.storage_mut().prepare_sync() {
            Ok(job) => {
                let (done_tx, done_rx) = oneshot::channel();
                tokio::task::spawn_blocking(move || {
                    let started = Clock::stopwatch();
                    let result = job.run();
                    let _ = done_tx.send((result, started.elapsed()));
                });
                self.syncing = Some((token, done_rx));
            }
            Err(e) => {
                self.metrics.storage_sync_failures.inc();
                let now = self.clock.now();
                self.node.handle_persist_failed(now, token, e.to_string());
                self.drain();
            }
        }
    }

    fn finish_sync(&mut self, token: PersistToken, (result, elapsed): SyncDone) {
        let now = self.clock.now();
        self.metrics.storage_syncs.inc();
        self.metrics.storage_sync_latency.record(elapsed);
        match result {
            Ok(()) => self.node.handle_persisted(now, token),
            Err(why) => {
                self.metrics.storage_sync_failures.inc();
                tracing::error!(reason = %why, "fsync failed; the node's storage is poisoned");
                self.node.storage_mut().sync_failed(why.clone());
                self.node.handle_persist_failed(now, token, why);
            }
        }
        self.drain();
    }

    fn publish_gauges(&self) {
        let m = &self.metrics;
        m.operations_in_flight
            .set(self.node.operations_in_flight() as u64);
        m.storage_keys.set(self.node.storage().keys() as u64);
        m.storage_log_bytes.set(self.node.storage().log_bytes());
        m.stale_replies.set(self.node.stats().stale_replies);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
