//! The driver: the one task that owns the [`Node`] and follows the core's rule — feed one input,
//! drain `poll_output` completely, sleep until `poll_timeout` or the next input.
//!
//! Client requests and peer messages usually skip its input queue: a connection or a peer link
//! hands its input to the node on its own task ([`InlineInputs`]), under the lock of the state
//! the run loop shares, and drains the node's outputs there as the loop would; a read of local
//! data is answered before the call returns, with no wake-up of any task. What the loop waits
//! for (the node's next timer, a sync due or in flight, the gauges) it re-arms whenever such an
//! input needs it to wake earlier. Operators and shutdown still come through the queue.
//!
//! Persistence is group commit through core's [`GroupCommit`], the helper the simulator runs too:
//! a `Persist` output only records its token there. After each batch of inputs (up to
//! [`INPUT_BATCH_MAX`], everything that queued up meanwhile) the driver asks it whether a sync is
//! due and, if so, begins one with the engine's split sync: `sync_begin` writes and seals the
//! WAL's batch on this task and detaches its fsync, which runs on the [`Fsyncer`] thread while
//! this task goes on serving reads and staging writes; when the result comes back,
//! `sync_finish` records it and the node gets `handle_persisted` for the token the helper named.
//! The helper never names a token requested after the sync began, so no write is acknowledged
//! that the fsync does not cover; it asks for the next sync once this one completes. A failed
//! sync poisons the engine and the node gets `handle_persist_failed` for every pending token;
//! the helper never asks for another sync (no retry, PITFALLS: fsyncgate).
//!
//! Why off this task (issue #15): an fsync takes 0.4-0.6 ms on the development machine, and
//! inline it stopped the whole request path for that long once per batch; a single
//! redis-server with `appendfsync always` stops the same way, so overlapping the fsync with the
//! next batch is where a node can gain on it. (An earlier attempt through `spawn_blocking`
//! measured slower than inline; a dedicated thread makes each hand-off one channel send.) On a
//! file system that cannot detach an fsync (the simulated disk of the tests), `sync_begin` does
//! it in place and the ticket completes at once.
//!
//! Maintenance (compaction, value-log collection) runs between inputs, one bounded step at a
//! time, when the engine's one scheduler ([`MaintenanceScheduler`], also the simulator's) says
//! so: every `[storage]` `maintenance_interval_ms`, and sooner after heavy writes; the driver
//! asks after each batch and sleeps until its next tick.
//!
//! Per-peer send queues are bounded (`limits.peer_queue_messages_max`). The driver is a thin
//! transport there: a message it cannot queue (the peer's queue is full or closed, or the peer
//! is unknown) is not sent, and the node gets `handle_send_failed` after the drain. What that
//! means (a request counts as the replica's `Busy` refusal, a forwarded put is answered
//! `Rejected(Busy)`, a reply or repeatable message is dropped and counted) is decided in core
//! (`ringkv_core::node::SendFailureClass`), so the simulator's bounded links run the same
//! decisions on seeds. The driver never blocks on a peer: two drivers waiting on each other's
//! full queues could deadlock. The `ringkv_peer_*` counters are published from the core's
//! `SendFailureStats`.
//!
//! Membership: operator commands ([`Input::Admin`]) are carried out on the node between inputs
//! like any other input. Whenever the ring or a member's status changes, the driver publishes a
//! fresh [`MembershipView`] (for `/ring`) and the membership metrics; it does not rebuild them
//! after inputs that changed neither.

use crate::admin::{AdminCommand, AdminResult, MembershipView};
use crate::clock::{Clock, Stopwatch};
use crate::fsyncer::{FsyncResults, Fsyncer};
use crate::metrics::Metrics;
use crate::snapshot::{self, SnapshotError, SnapshotFs, SnapshotInfo};
use crate::storage::{StorageGauges, StorageSettings};
use ringkv_core::hash::IdHashing;
use ringkv_core::storage::GroupCommit;
use ringkv_core::{
    ClientReply, ClientRequest, Message, Node, NodeEvent, NodeId, Output, RequestId, Storage,
};
use ringkv_lsm::fs::{FileSystem, FsError};
use ringkv_lsm::maintenance::MaintenanceScheduler;
use ringkv_lsm::{FlushFsync, LsmStorage};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};

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
    /// An operator's membership change; the new ring version (or the refusal) goes back on
    /// `reply`.
    Admin {
        /// The change.
        command: AdminCommand,
        /// Where the answer goes.
        reply: oneshot::Sender<AdminResult>,
    },
    /// An operator's repair: compare every range with its other replicas now (the number of
    /// anti-entropy rounds scheduled goes back on `reply`).
    Repair {
        /// Where the answer goes.
        reply: oneshot::Sender<usize>,
    },
    /// An operator's snapshot of the engine ([`crate::snapshot`]), taken between two inputs.
    Snapshot {
        /// The node's data directory (the snapshot goes under its `snapshots/`).
        data_dir: std::path::PathBuf,
        /// The snapshot's name (validated), or `None` for one made of the wall-clock time.
        name: Option<String>,
        /// Where its directory and contents (or why it failed) go.
        reply: oneshot::Sender<Result<(std::path::PathBuf, SnapshotInfo), SnapshotError>>,
    },
    /// Finish what is in flight, sync, and stop.
    Shutdown,
}

/// Inputs queued towards the driver before senders wait (back-pressure on connections).
pub const INPUT_QUEUE_MAX: usize = 8192;
/// Inputs handled per wake-up before the driver checks timers and syncs.
pub const INPUT_BATCH_MAX: usize = 256;

/// Routes `Output::Send` to per-peer queues.
pub type PeerQueues = BTreeMap<NodeId, mpsc::Sender<Message>>;

/// The driver task, over storage on file system `F` (real files in production, the simulated
/// disk in tests): its run loop owns what it waits on (the input queue, the fsync threads'
/// results); the node and everything done to it are in a [`DriverState`] shared with client
/// connections and peer links, which hand their inputs to the node on their own task
/// ([`InlineInputs`]).
pub struct Driver<F: FileSystem> {
    shared: Arc<DriverShared<F>>,
    inputs: mpsc::Receiver<Input>,
    /// Results of detached WAL fsyncs (`None` if their thread could not start).
    fsync_results: Option<FsyncResults>,
    /// Results of flush jobs' fsyncs (`None` if their thread could not start).
    flush_fsync_results: Option<FsyncResults>,
}

/// What the run loop shares with the tasks that hand inputs over inline: the state, and the
/// loop's wake-up for an inline input that needs it to wake earlier.
struct DriverShared<F: FileSystem> {
    /// `None` once the run loop has stopped: inputs then go to the (closed) input queue.
    state: Mutex<Option<DriverState<F>>>,
    /// Notified when an inline input needs the loop to wake earlier than it armed
    /// ([`Waits::needs_rearm`]).
    attention: Notify,
}

/// The node and the driver's bookkeeping around it: everything the run loop and inline inputs
/// do to the node goes through here, under [`DriverShared::state`]'s lock.
struct DriverState<F: FileSystem> {
    node: Node<LsmStorage<F>>,
    clock: Clock,
    peers: PeerQueues,
    metrics: Arc<Metrics>,
    /// Each client request's reply channel, by the request id the driver gave it. Hashed by
    /// core's id hasher: std's SipHash, which resists keys chosen to collide (these are a
    /// counter), cost about 2% of a GET's instructions to insert and remove (issue #15).
    waiting: HashMap<u64, Waiter, IdHashing>,
    next_request: u64,
    /// The reply to the inline request being handled, if the node answered it within the call.
    answered_inline: Option<(u64, ClientReply)>,
    /// Persist tokens requested and the sync that answers them.
    group_commit: GroupCommit,
    /// Where detached WAL fsyncs run (`None` if its thread could not start: fsyncs run here).
    fsyncer: Option<Fsyncer>,
    /// The sync whose fsync runs on the fsync thread, since when.
    sync_in_flight: Option<Stopwatch>,
    /// Where flush jobs' fsyncs run (`None` if its thread could not start: they run here).
    flush_fsyncer: Option<Fsyncer<FlushFsync>>,
    /// Flush fsyncs handed to that thread and not yet reported.
    flush_fsyncs_in_flight: usize,
    shutting_down: Option<tokio::time::Instant>,
    shutdown_grace: Duration,
    /// When maintenance steps run and how big they are.
    maintenance: MaintenanceScheduler,
    /// Flush count and last sequence number when a flush was last seen (for the key estimate).
    flushes_seen: u64,
    seq_at_flush: u64,
    /// Messages for the node itself, fed to it after the outputs of the current input are
    /// drained.
    loopback: VecDeque<(NodeId, Message)>,
    /// Messages that could not be queued, reported to the node (`handle_send_failed`) after the
    /// outputs of the current input are drained.
    unsent: VecDeque<(NodeId, Message)>,
    /// The node's outputs of one drain, carried out after it (reused to save allocations).
    drained: Vec<Output>,
    /// Where the membership snapshot for `/ring` goes, if anyone reads it, and the replicas per
    /// key it counts ranges with.
    membership_view: Option<(watch::Sender<Arc<MembershipView>>, usize)>,
    /// The ring or a member's status changed since the view and gauges were last published.
    membership_changed: bool,
    /// The client address table's change count when the view was last published (`KV.RING`).
    addresses_published: u64,
    /// The node's clock as last read for an input ([`Driver::read_clock`]).
    clock_read: ringkv_core::Now,
    /// When the gauges were last published.
    gauges_published_at: tokio::time::Instant,
    /// Inputs were handled since the gauges were last published.
    gauges_stale: bool,
    /// What the run loop waits for as it last armed its wait ([`DriverState::waits`]).
    armed: Waits,
}

impl Waits {
    /// The loop, waiting on `armed`, would wake later than these waits need. A deadline that
    /// moved later or went away needs nothing: the loop wakes at the old one, finds nothing due
    /// and arms the new one then. (Waking it for every change cost two extra turns of the loop
    /// per request that sets a timer, one when the request began and one when it ended: a
    /// 3-node read, every write.)
    fn needs_rearm(&self, armed: &Waits) -> bool {
        let earlier_deadline = match (self.deadline, armed.deadline) {
            (Some(now), Some(armed)) => now < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        earlier_deadline
            || self.maintenance < armed.maintenance
            || (self.gauges_stale && !armed.gauges_stale)
            || (self.sync_due && !armed.sync_due)
            || self.sync_in_flight != armed.sync_in_flight
            || (self.flush_fsyncs_in_flight && !armed.flush_fsyncs_in_flight)
    }
}

/// Where a client request's reply goes.
enum Waiter {
    /// Its channel.
    Channel(oneshot::Sender<ClientReply>),
    /// The inline request being handled: [`DriverState::answered_inline`] while it is handled,
    /// a channel made for it if the node did not answer it at once.
    Inline,
}

/// What an inline request became, with the driver's clock readings for its latency (reading
/// the clock again for it was 2% of a GET's instructions).
pub enum Submitted {
    /// The node answered within the call (a read of local data), which took `took`.
    Answered {
        /// The reply.
        reply: ClientReply,
        /// From the node's reading of the clock for the request to its answer.
        took: Duration,
    },
    /// The reply comes later (a write waiting for its fsync, a read of remote replicas).
    Pending {
        /// Where it comes.
        reply: oneshot::Receiver<ClientReply>,
        /// When the node got the request, as [`Clock::uptime`] reads.
        since: Duration,
    },
}

/// What the run loop's wait depends on: when an inline input makes it need an earlier wake-up
/// ([`Waits::needs_rearm`]), the loop must wake and arm its wait again (a new timer, a sync to
/// begin or await), or that work would wait for an unrelated input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Waits {
    /// The node's next timer.
    deadline: Option<ringkv_core::Instant>,
    /// The maintenance scheduler's next tick.
    maintenance: ringkv_core::Instant,
    /// Gauges are owed a publication.
    gauges_stale: bool,
    /// A WAL sync's fsync is on the fsync thread.
    sync_in_flight: bool,
    /// Writes wait for a sync and none is in flight: the loop begins one.
    sync_due: bool,
    /// Flush fsyncs are on the flush fsync thread.
    flush_fsyncs_in_flight: bool,
}

/// The next fsync result from the fsync thread; never ready without one.
async fn fsync_completed(results: &mut Option<FsyncResults>) -> Option<Result<(), FsError>> {
    match results {
        Some(results) => results.completed().await.map(|(_, result)| result),
        None => std::future::pending().await,
    }
}

/// The next flush fsync result (with its job) from the flush fsync thread; never ready without
/// one.
async fn flush_fsync_completed(
    results: &mut Option<FsyncResults>,
) -> Option<(u64, Result<(), FsError>)> {
    match results {
        Some(results) => results.completed().await,
        None => std::future::pending().await,
    }
}

/// The longest the gauges go unpublished while inputs keep the driver busy.
const GAUGE_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// Inputs handed to the node on the task that received them (issue #15): client requests on
/// their connection's task, peer messages on their link's.
///
/// Why: through the input queue an input cost a queue send, a wake-up and a poll of the driver
/// task, and for a request a wake-up and a poll of the connection again for the reply, about a
/// fifth of a GET's instructions (callgrind, `redis-benchmark -c 50`). Inline, a request the
/// node answers at once (a read of local data) has its reply before the call returns, with no
/// reply channel made for it. Everything else is as through the queue: the same `handle`, the
/// same drain, the same group commit (a write's reply still waits for the fsync that covers
/// it, which the run loop begins and awaits; an inline input wakes the loop whenever it needs
/// it to wake earlier). Each input is timed as a driver batch of one.
pub trait InlineInputs: Send + Sync {
    /// Hands client request `body` to the node now. Gives it back if the driver has stopped:
    /// the caller then uses the input queue, which answers that the node is shutting down.
    fn submit(&self, body: ClientRequest) -> Result<Submitted, ClientRequest>;

    /// Runs `batch` holding the driver's state: each request it hands to the function it is
    /// given goes to the node at one clock reading, as one batch of queued inputs did, and what
    /// is due after an input (a maintenance step, the run loop's wake-up, the batch's timing)
    /// is done once, after it. Why: a pipeline's commands paid all of that once each, 9% of a
    /// pipelined GET's instructions (issue #15). An answer within the batch reports a zero
    /// `took`: the batch's duration, returned, is its latency. `None`, with `batch` not run, if
    /// the driver has stopped. `batch` must not block: the driver waits meanwhile.
    fn submit_all(&self, batch: &mut dyn FnMut(&mut SubmitFn<'_>)) -> Option<Duration>;

    /// Hands `messages` from peer `from` (as its link's handshake proved), in order, to the
    /// node now, as one batch (see [`InlineInputs::submit_all`]), taking them out of the
    /// vector. False, leaving them there, if the driver has stopped.
    fn deliver_all(&self, from: NodeId, messages: &mut Vec<Message>) -> bool;
}

/// Hands one request of an [`InlineInputs::submit_all`] batch to the node.
pub type SubmitFn<'a> = dyn FnMut(ClientRequest) -> Submitted + 'a;

impl<F: FileSystem + SnapshotFs + Send + 'static> InlineInputs for DriverShared<F> {
    fn submit(&self, body: ClientRequest) -> Result<Submitted, ClientRequest> {
        let (submitted, took) = self.run_inline(body, DriverState::submit_inline)?;
        Ok(match submitted {
            Submitted::Answered { reply, .. } => Submitted::Answered { reply, took },
            pending => pending,
        })
    }

    fn submit_all(&self, batch: &mut dyn FnMut(&mut SubmitFn<'_>)) -> Option<Duration> {
        let ((), took) = self
            .run_inline((), |state, (), started| {
                batch(&mut |body| state.submit_inline(body, started));
            })
            .ok()?;
        Some(took)
    }

    fn deliver_all(&self, from: NodeId, messages: &mut Vec<Message>) -> bool {
        self.run_inline(messages, |state, messages, _| {
            for message in messages.drain(..) {
                state.handle_peer_message(from, message);
            }
            // Clients and operators read the ring view to route: published at once.
            state.publish_membership_if_changed();
        })
        .is_ok()
    }
}

impl<F: FileSystem + SnapshotFs + Send + 'static> DriverShared<F> {
    /// Runs `handle` on `input` and the state, on the caller's task, at a fresh clock reading
    /// (which `handle` is given, as [`Clock::uptime`] reads); then what is due after an inline
    /// input, and wakes the run loop if its wait must change. Returns what `handle` returned
    /// and how long it took; gives `input` back if the driver has stopped.
    fn run_inline<T, R>(
        &self,
        input: T,
        handle: impl FnOnce(&mut DriverState<F>, T, Duration) -> R,
    ) -> Result<(R, Duration), T> {
        let Ok(mut guard) = self.state.lock() else {
            // A panic on another task left the node half-changed: nothing more runs on it (the
            // run loop stops on the same poisoned lock).
            return Err(input);
        };
        let Some(state) = guard.as_mut() else {
            return Err(input);
        };
        // Timed as a batch of one from the reading the node gets: one more clock read.
        let started = Duration::from_nanos(state.read_clock().monotonic.as_nanos());
        let handled = handle(state, input, started);
        state.after_inline_input();
        let took = state.clock.uptime().saturating_sub(started);
        state.metrics.driver_batch_duration.record(took);
        let waits = state.waits();
        let rearm = waits.needs_rearm(&state.armed);
        if rearm {
            // What the loop will arm: later inputs compare with it, not with the stale wait.
            state.armed = waits;
        }
        drop(guard);
        if rearm {
            self.attention.notify_one();
        }
        Ok((handled, took))
    }
}

/// Where a peer link's messages go: to the node on the link's own task, or (without an inline
/// path, or once the driver has stopped) the input queue.
#[derive(Clone)]
pub struct PeerInputs {
    /// The driver's input queue.
    pub queue: mpsc::Sender<Input>,
    /// The driver's inline path ([`Driver::inline_inputs`]), if any.
    pub inline: Option<Arc<dyn InlineInputs>>,
}

impl PeerInputs {
    /// Hands `messages` from `from` to the node, in order, taking them out of the vector;
    /// `Err` once the driver is gone.
    pub async fn deliver_all(&self, from: NodeId, messages: &mut Vec<Message>) -> Result<(), ()> {
        if let Some(inline) = &self.inline {
            if inline.deliver_all(from, messages) {
                return Ok(());
            }
        }
        for message in messages.drain(..) {
            let input = Input::Peer { from, message };
            self.queue.send(input).await.map_err(|_| ())?;
        }
        Ok(())
    }
}

impl<F: FileSystem> DriverShared<F> {
    /// The state, locked. A lock poisoned by a panic in an inline input is that panic here too:
    /// the node it left half-changed must not run on.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DriverState<F>>> {
        self.state
            .lock()
            .unwrap_or_else(|_| panic!("an input handled inline panicked inside the node"))
    }
}

impl<F: FileSystem + SnapshotFs + Send + 'static> Driver<F> {
    /// A driver for `node`, fed by `inputs`, sending to `peers`.
    ///
    /// # Panics
    /// If `storage_settings` were not validated (`[storage]` validation bounds the maintenance
    /// settings the scheduler checks again).
    pub fn new(
        node: Node<LsmStorage<F>>,
        clock: Clock,
        inputs: mpsc::Receiver<Input>,
        peers: PeerQueues,
        metrics: Arc<Metrics>,
        request_timeout: Duration,
        storage_settings: StorageSettings,
    ) -> Driver<F> {
        let maintenance = MaintenanceScheduler::new(
            storage_settings.maintenance(),
            clock.now().monotonic,
            node.storage().maintenance_state(),
        )
        .expect("validated [storage] settings");
        let (fsyncer, fsync_results) = match Fsyncer::start("ringkv-fsync") {
            Ok((fsyncer, results)) => (Some(fsyncer), Some(results)),
            Err(e) => {
                tracing::warn!(error = %e, "no fsync thread; WAL fsyncs run on the driver");
                (None, None)
            }
        };
        let (flush_fsyncer, flush_fsync_results) = match Fsyncer::start("ringkv-flush-fsync") {
            Ok((fsyncer, results)) => (Some(fsyncer), Some(results)),
            Err(e) => {
                tracing::warn!(error = %e, "no flush fsync thread; they run on the driver");
                (None, None)
            }
        };
        let mut state = DriverState {
            node,
            clock,
            peers,
            metrics,
            waiting: HashMap::default(),
            next_request: 1,
            answered_inline: None,
            group_commit: GroupCommit::new(),
            fsyncer,
            sync_in_flight: None,
            flush_fsyncer,
            flush_fsyncs_in_flight: 0,
            shutting_down: None,
            shutdown_grace: request_timeout + Duration::from_secs(1),
            maintenance,
            flushes_seen: 0,
            seq_at_flush: 0,
            loopback: VecDeque::new(),
            unsent: VecDeque::new(),
            drained: Vec::new(),
            membership_view: None,
            membership_changed: true,
            addresses_published: 0,
            // Due at once: the first batch publishes them.
            gauges_published_at: Clock::tokio_now()
                .checked_sub(GAUGE_PUBLISH_INTERVAL)
                .unwrap_or_else(Clock::tokio_now),
            gauges_stale: true,
            clock_read: clock.now(),
            armed: Waits {
                deadline: None,
                maintenance: ringkv_core::Instant::ZERO,
                gauges_stale: false,
                sync_in_flight: false,
                sync_due: false,
                flush_fsyncs_in_flight: false,
            },
        };
        state.seq_at_flush = state.node.storage_mut().lsm_mut().last_seq();
        Driver {
            shared: Arc::new(DriverShared {
                state: Mutex::new(Some(state)),
                attention: Notify::new(),
            }),
            inputs,
            fsync_results,
            flush_fsync_results,
        }
    }

    /// Publishes a [`MembershipView`] on `view` whenever membership changes (and once at
    /// start); `replicas_per_key` is the cluster's `n`.
    pub fn with_membership_view(
        self,
        view: watch::Sender<Arc<MembershipView>>,
        replicas_per_key: usize,
    ) -> Driver<F> {
        if let Some(state) = self.lock().as_mut() {
            state.membership_view = Some((view, replicas_per_key));
        }
        self
    }

    /// Where client connections and peer links hand their inputs to the node on their own
    /// task.
    pub fn inline_inputs(&self) -> Arc<dyn InlineInputs> {
        Arc::clone(&self.shared) as Arc<dyn InlineInputs>
    }

    /// The shared state, locked.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DriverState<F>>> {
        self.shared.lock()
    }

    /// Runs until shutdown (or until every input sender is gone); returns the storage after a
    /// final sync and memtable flush.
    pub async fn run(mut self) -> LsmStorage<F> {
        let shared = Arc::clone(&self.shared);
        // The three timers live across iterations and are moved only when their deadline
        // changes: creating, registering and dropping them afresh on every batch (most batches
        // hold one request under `redis-benchmark -c 50`) cost about 5% of a request's
        // instructions. A timer that fired and keeps its deadline fires again at once, as a
        // new one for a past deadline would.
        let (mut timeout, mut maintenance, mut gauges) = (
            MovableTimer::new(),
            MovableTimer::new(),
            MovableTimer::new(),
        );
        loop {
            let waits = {
                let mut guard = self.lock();
                let Some(state) = guard.as_mut() else { break };
                state.armed = state.waits();
                timeout.set(state.armed.deadline.map(|t| state.clock.to_tokio(t)));
                maintenance.set(Some(state.clock.to_tokio(state.armed.maintenance)));
                gauges.set(Some(state.gauges_published_at + GAUGE_PUBLISH_INTERVAL));
                state.armed
            };
            tokio::select! {
                biased;
                // First: a finished fsync acknowledges its batch and lets the next one start.
                // Polled after the inputs, it waited for a moment with no input queued, which
                // under load stretched a 0.2 ms fsync to a 0.5 ms sync (issue #15).
                result = fsync_completed(&mut self.fsync_results), if waits.sync_in_flight => {
                    if let Some(state) = self.lock().as_mut() {
                        state.finish_sync(result);
                    }
                }
                // The step itself runs below, after the sync, like one due to writes.
                () = maintenance.sleep.as_mut() => {}
                () = gauges.sleep.as_mut(), if waits.gauges_stale => {}
                // An inline request changed what this loop waits for: arm the wait again.
                () = self.shared.attention.notified() => {}
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    let mut guard = shared.lock();
                    let Some(state) = guard.as_mut() else { break };
                    let started = Clock::stopwatch();
                    // One reading of the clock for the batch: its inputs were all queued by
                    // now, and reading both clocks per input was 2% of a GET's instructions
                    // (issue #15). A batch is bounded (INPUT_BATCH_MAX), so the reading stays
                    // within a batch's duration of the truth.
                    state.read_clock();
                    state.handle(input);
                    for _ in 1..INPUT_BATCH_MAX {
                        match self.inputs.try_recv() {
                            Ok(input) => state.handle(input),
                            Err(_) => break,
                        }
                    }
                    state.metrics.driver_batch_duration.record(started.elapsed());
                }
                () = timeout.sleep.as_mut(), if waits.deadline.is_some() => {
                    if let Some(state) = self.lock().as_mut() {
                        let started = Clock::stopwatch();
                        let now = state.read_clock();
                        state.node.handle_timeout(now);
                        state.drain();
                        state.metrics.driver_batch_duration.record(started.elapsed());
                    }
                }
                done = flush_fsync_completed(&mut self.flush_fsync_results),
                    if waits.flush_fsyncs_in_flight =>
                {
                    if let Some(state) = self.lock().as_mut() {
                        state.flush_fsyncs_in_flight -= 1;
                        state.finish_flush_fsync(done);
                    }
                }
            }
            let mut guard = self.lock();
            let Some(state) = guard.as_mut() else { break };
            state.after_inputs();
            if let Some(until) = state.shutting_down {
                let idle = state.node.operations_in_flight() == 0 && state.group_commit.is_idle();
                if idle || Clock::tokio_now() >= until {
                    break;
                }
            }
        }
        // From here on inline inputs find no state and go to the input queue, which closes when
        // this returns.
        let taken = self.lock().take();
        let Some(mut state) = taken else {
            unreachable!("only this loop takes the state")
        };
        if state.sync_in_flight.is_some() {
            let result = fsync_completed(&mut self.fsync_results).await;
            state.finish_sync(result);
        }
        while state.flush_fsyncs_in_flight > 0 {
            let done = flush_fsync_completed(&mut self.flush_fsync_results).await;
            state.flush_fsyncs_in_flight -= 1;
            state.finish_flush_fsync(done);
        }
        state.finish()
    }
}

impl<F: FileSystem + SnapshotFs + Send + 'static> DriverState<F> {
    /// What the run loop's wait depends on now.
    fn waits(&self) -> Waits {
        Waits {
            deadline: self.node.poll_timeout(),
            maintenance: self.maintenance.poll_timeout(),
            gauges_stale: self.gauges_stale,
            sync_in_flight: self.sync_in_flight.is_some(),
            sync_due: self.sync_in_flight.is_none() && self.group_commit.is_sync_due(),
            flush_fsyncs_in_flight: self.flush_fsyncs_in_flight > 0,
        }
    }

    /// After each turn of the run loop: begin a sync if one is due, run a maintenance step if
    /// one is due, publish what is due.
    fn after_inputs(&mut self) {
        self.sync();
        // A fresh reading: the turn may have been a timer's, due at this moment and not before.
        self.read_clock();
        self.maintain();
        self.publish_gauges_when_due();
    }

    /// After one inline input: a maintenance step if one is due at the request's clock
    /// reading. The rest of [`DriverState::after_inputs`] is left to the run loop, which the
    /// request wakes if it changed [`Waits`]: a sync due (so the writes of every connection
    /// served before the loop runs, and every command of a pipeline, share one fsync, as one
    /// batch of queued inputs did), and the gauges (published at most every
    /// [`GAUGE_PUBLISH_INTERVAL`] anyway; checking the time for them was one more clock read
    /// per request). Membership is published at once by whoever changed it: a peer message
    /// ([`InlineInputs::deliver`]); a client request changes none.
    fn after_inline_input(&mut self) {
        self.maintain();
        self.gauges_stale = true;
    }
    fn finish(mut self) -> LsmStorage<F> {
        self.sync();
        let mut storage = self.node.into_storage();
        if storage.lsm_mut().poisoned().is_none() {
            // The sync makes every staged write durable in the WAL; the flush then empties the
            // memtable into a table so the next start replays nothing.
            if let Err(e) = storage.sync() {
                tracing::error!(error = %e, "final sync failed");
            } else if let Err(e) = storage.lsm_mut().flush() {
                tracing::error!(error = %e, "final memtable flush failed (the WAL holds the writes)");
            }
        }
        storage
    }

    /// Reads the node's clock for an input and remembers the reading.
    fn read_clock(&mut self) -> ringkv_core::Now {
        self.clock_read = self.clock.now();
        self.clock_read
    }

    /// A peer's message, handled at the latest clock reading, and drained.
    fn handle_peer_message(&mut self, from: NodeId, message: Message) {
        self.metrics.peer_messages_received.inc();
        self.node.handle_message(self.clock_read, from, message);
        self.drain();
    }

    /// [`DriverState::handle_inline`] as a [`Submitted`], for a request the node got at
    /// `started` (an answer's `took` is left zero for the caller to fill).
    fn submit_inline(&mut self, body: ClientRequest, started: Duration) -> Submitted {
        match self.handle_inline(body) {
            Ok(reply) => Submitted::Answered {
                reply,
                took: Duration::ZERO,
            },
            Err(reply) => Submitted::Pending {
                reply,
                since: started,
            },
        }
    }

    /// Feeds a client request handed over inline to the node at the latest clock reading, and
    /// drains: its reply if the node answered at once, else a channel for it.
    fn handle_inline(
        &mut self,
        body: ClientRequest,
    ) -> Result<ClientReply, oneshot::Receiver<ClientReply>> {
        let id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(id, Waiter::Inline);
        self.node
            .handle_client(self.clock_read, RequestId(id), body);
        self.drain();
        match self.answered_inline.take() {
            Some((answered, reply)) if answered == id => Ok(reply),
            other => {
                debug_assert!(
                    other.is_none(),
                    "an answer to an earlier inline request kept"
                );
                let (sender, receiver) = oneshot::channel();
                if let Some(waiter) = self.waiting.get_mut(&id) {
                    *waiter = Waiter::Channel(sender);
                }
                // Else the node forgot the request without an answer (never, by its contract):
                // the dropped sender tells the caller the node is gone, never a hang.
                Err(receiver)
            }
        }
    }

    /// Feeds `input` to the node at the latest clock reading: the batch's, or a later one a
    /// drain between inputs took (the node's time never goes back).
    fn handle(&mut self, input: Input) {
        let now = self.clock_read;
        match input {
            Input::Client { body, reply } => {
                let id = self.next_request;
                self.next_request += 1;
                self.waiting.insert(id, Waiter::Channel(reply));
                self.node.handle_client(now, RequestId(id), body);
            }
            Input::Peer { from, message } => {
                self.metrics.peer_messages_received.inc();
                self.node.handle_message(now, from, message);
            }
            Input::Admin { command, reply } => {
                let (name, node) = (command.name(), command.node());
                let result = match command {
                    AdminCommand::Join(member) => self.node.admin_join(now, member),
                    AdminCommand::Leave(id) => self.node.admin_leave(now, id),
                    AdminCommand::Remove(id) => self.node.admin_remove(now, id),
                };
                match &result {
                    Ok(version) => tracing::info!(
                        command = name,
                        %node,
                        changes = version.changes,
                        fingerprint = version.fingerprint,
                        "operator ring change made; gossip spreads it"
                    ),
                    Err(e) => {
                        tracing::warn!(command = name, %node, error = %e, "operator ring change refused")
                    }
                }
                // The operator may have gone; the change stands either way.
                let _ = reply.send(result);
            }
            Input::Repair { reply } => {
                let rounds = self.node.start_repair(now);
                tracing::info!(rounds, "operator repair: every range compared now");
                let _ = reply.send(rounds);
            }
            Input::Snapshot {
                data_dir,
                name,
                reply,
            } => {
                let name = name.unwrap_or_else(|| format!("snapshot-{}", now.wall.0 / 1000));
                let id = self.node.id();
                let result = snapshot::take_snapshot(self.node.storage_mut(), &data_dir, id, &name);
                match &result {
                    Ok((dir, info)) => tracing::info!(
                        dir = %dir.display(),
                        last_seq = info.last_seq,
                        tables = info.tables,
                        segments = info.segments,
                        "operator snapshot taken"
                    ),
                    Err(e) => tracing::warn!(%name, error = %e, "operator snapshot failed"),
                }
                let _ = reply.send(result);
            }
            Input::Shutdown => {
                // The core answers every request by its deadline, so this bounds the wait.
                self.shutting_down = Some(Clock::tokio_now() + self.shutdown_grace);
            }
        }
        self.drain();
    }

    /// Carries out every pending output, then reports each send that could not be queued and
    /// feeds the node what it sent itself (each such input again followed by a full drain).
    fn drain(&mut self) {
        loop {
            self.drain_outputs();
            // The clock is read only for an input to feed: most drains have none, and a read of
            // both clocks was about 1.5% of a GET's instructions (issue #15).
            if let Some((to, message)) = self.unsent.pop_front() {
                let now = self.read_clock();
                self.node.handle_send_failed(now, to, message);
                continue;
            }
            let Some((from, message)) = self.loopback.pop_front() else {
                return;
            };
            let now = self.read_clock();
            self.node.handle_message(now, from, message);
        }
    }

    fn drain_outputs(&mut self) {
        let mut drained = std::mem::take(&mut self.drained);
        ringkv_core::drive::drain(&mut self.node, &mut drained);
        for output in drained.drain(..) {
            match output {
                Output::Send { to, message } => self.send(to, message),
                Output::Persist { token } => self.group_commit.handle_persist_request(token),
                Output::Reply { request, reply } => {
                    match self.waiting.remove(&request.0) {
                        // The client may have gone; its reply is then simply dropped.
                        Some(Waiter::Channel(waiter)) => {
                            let _ = waiter.send(reply);
                        }
                        Some(Waiter::Inline) => self.answered_inline = Some((request.0, reply)),
                        None => {}
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
                    NodeEvent::MemberStatus { node, from, to } => {
                        self.membership_changed = true;
                        tracing::info!(%node, ?from, ?to, "member status changed")
                    }
                    NodeEvent::MemberDiscovered { node, status } => {
                        self.membership_changed = true;
                        tracing::info!(%node, ?status, "member discovered")
                    }
                    NodeEvent::RingChanged {
                        changes,
                        fingerprint,
                    } => {
                        self.membership_changed = true;
                        tracing::info!(changes, fingerprint, "ring changed")
                    }
                    NodeEvent::RingChangeDiscarded { node } => {
                        tracing::warn!(%node, "ring change lost to a concurrent change; issue it again")
                    }
                    NodeEvent::TreeRebuildMismatch { ranges } => {
                        tracing::warn!(ranges, "hash tree rebuild found data changed on disk")
                    }
                },
            }
        }
        self.drained = drained;
    }

    fn send(&mut self, to: NodeId, message: Message) {
        if to == self.node.id() {
            // The core answers itself directly today; deliver anyway rather than lose it.
            self.loopback.push_back((to, message));
            return;
        }
        let Some(queue) = self.peers.get(&to) else {
            tracing::warn!(%to, kind = message.kind(), "message to an unknown node not sent");
            self.unsent.push_back((to, message));
            return;
        };
        match queue.try_send(message) {
            Ok(()) => self.metrics.peer_messages_sent.inc(),
            // Full, or the peer's sending task is gone (shutdown): the node decides.
            Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => {
                self.unsent.push_back((to, m))
            }
        }
    }

    /// Begins the sync group commit asks for, if one is due and none is in flight: its fsync goes
    /// to the fsync thread, or runs here (no thread, or nothing to detach) and completes at once.
    fn sync(&mut self) {
        while self.sync_in_flight.is_none() && self.group_commit.poll_sync().is_some() {
            let started = Clock::stopwatch();
            match self.node.storage_mut().lsm_mut().sync_begin() {
                Ok(ticket) => {
                    self.sync_in_flight = Some(started);
                    let handed = match &self.fsyncer {
                        Some(fsyncer) if ticket.is_detached() => fsyncer.submit(ticket),
                        _ => Err(ticket),
                    };
                    if let Err(mut ticket) = handed {
                        let result = ticket.fsync();
                        self.finish_sync(Some(result));
                    }
                }
                Err(e) => {
                    // The engine poisoned itself (or already was): it refuses every later sync
                    // without touching the disk, and the helper asks for none.
                    self.sync_failed(&e.to_string());
                }
            }
        }
    }

    /// The fsync of the sync in flight returned `result` (`None`: the fsync thread is gone, which
    /// counts as a failed fsync: whether it ran is unknown).
    fn finish_sync(&mut self, result: Option<Result<(), FsError>>) {
        let Some(started) = self.sync_in_flight.take() else {
            return;
        };
        let result = result.unwrap_or_else(|| {
            Err(FsError {
                kind: ringkv_lsm::fs::FsErrorKind::SyncFailed,
                file: "wal".to_string(),
                detail: "the fsync thread stopped".to_string(),
            })
        });
        match self.node.storage_mut().lsm_mut().sync_finish(result) {
            Ok(()) => {
                let now = self.read_clock();
                self.metrics.storage_syncs.inc();
                self.metrics.storage_sync_latency.record(started.elapsed());
                if let Some(token) = self.group_commit.handle_sync_completed() {
                    self.node.handle_persisted(now, token);
                }
                self.drain();
            }
            Err(e) => self.sync_failed(&e.to_string()),
        }
    }

    /// A sync failed: the engine is poisoned; every pending write fails.
    fn sync_failed(&mut self, why: &str) {
        let now = self.read_clock();
        self.metrics.storage_sync_failures.inc();
        tracing::error!(reason = %why, "fsync failed; the node's storage is poisoned");
        if let Some(token) = self.group_commit.handle_sync_failed() {
            self.node.handle_persist_failed(now, token, why.to_string());
        }
        self.drain();
    }

    /// One bounded maintenance step, if the scheduler says one is due (its tick, or writes that
    /// owe one) at the latest clock reading.
    fn maintain(&mut self) {
        let now = self.clock_read;
        let state = self.node.storage().maintenance_state();
        let Some(step) = self.maintenance.poll_step(now.monotonic, state) else {
            return;
        };
        let wall_ms = now.wall.0 / 1000;
        let started = Clock::stopwatch();
        if let Err(e) = self.node.storage_mut().maintain(step, wall_ms) {
            // Flushes, compaction and collection poison the engine on a write-path failure; the
            // next write or sync then fails and the core reports it.
            tracing::error!(error = %e, "storage maintenance failed");
        }
        // A flush job whose files are written leaves their fsync to a thread of its own: tens of
        // milliseconds for a 16 MiB memtable of large values, during which requests go on.
        if let Some(fsync) = self.node.storage_mut().lsm_mut().take_flush_fsync() {
            let handed = match &self.flush_fsyncer {
                Some(fsyncer) => fsyncer.submit(fsync),
                None => Err(fsync),
            };
            match handed {
                Ok(()) => self.flush_fsyncs_in_flight += 1,
                Err(mut fsync) => {
                    let result = fsync.fsync();
                    self.finish_flush_fsync(Some((fsync.job(), result)));
                }
            }
        }
        self.metrics
            .storage_maintenance_duration
            .record(started.elapsed());
    }

    /// A flush job's fsync returned: the engine installs the job's table, or is poisoned by the
    /// failure (`None`: the thread is gone, which counts as a failed fsync).
    fn finish_flush_fsync(&mut self, done: Option<(u64, Result<(), FsError>)>) {
        let (job, result) = done.unwrap_or_else(|| {
            let failed = FsError {
                kind: ringkv_lsm::fs::FsErrorKind::SyncFailed,
                file: "flush".to_string(),
                detail: "the flush fsync thread stopped".to_string(),
            };
            (0, Err(failed))
        });
        let lsm = self.node.storage_mut().lsm_mut();
        if let Err(e) = lsm.flush_fsynced(job, result) {
            // A failed fsync poisons the engine (the next write or sync reports it); so does a
            // failure to install, and an engine poisoned meanwhile refuses the install.
            tracing::error!(error = %e, "flush not installed");
        }
    }

    /// Publishes the gauges at most every [`GAUGE_PUBLISH_INTERVAL`], and at the latest that
    /// long after a change: reading them walks the engine's levels, the hint queues and the
    /// node's counters, which after every batch of one or two requests cost about 5% of a
    /// request's instructions (callgrind, `redis-benchmark -c 50`), for values a scrape reads a
    /// few times a minute.
    fn publish_gauges_when_due(&mut self) {
        // Membership is published at once: clients and operators read the ring view to route.
        self.publish_membership_if_changed();
        let now = Clock::tokio_now();
        if now >= self.gauges_published_at + GAUGE_PUBLISH_INTERVAL {
            self.gauges_published_at = now;
            self.gauges_stale = false;
            self.publish_gauges();
        } else {
            // The run loop wakes when they are due, so an idle node publishes them too.
            self.gauges_stale = true;
        }
    }

    fn publish_membership_if_changed(&mut self) {
        let addresses = self
            .node
            .membership()
            .map_or(0, |m| m.client_addresses().changes());
        if addresses != self.addresses_published {
            self.addresses_published = addresses;
            self.membership_changed = true;
        }
        if self.membership_changed {
            self.membership_changed = false;
            self.publish_membership();
        }
    }

    fn publish_gauges(&mut self) {
        let m = &self.metrics;
        m.repair.publish(&self.node);
        m.membership.publish_counters(&self.node);
        let unsent = self.node.send_failure_stats();
        m.peer_requests_failed.set(unsent.requests_refused);
        m.peer_replies_dropped.set(unsent.replies_dropped);
        m.peer_messages_dropped.set(unsent.repeatable_dropped);
        m.operations_in_flight
            .set(self.node.operations_in_flight() as u64);
        m.stale_replies.set(self.node.stats().stale_replies);
        let gauges = StorageGauges::read(self.node.storage_mut());
        let last_seq = self.node.storage_mut().lsm_mut().last_seq();
        if gauges.flushes != self.flushes_seen {
            self.flushes_seen = gauges.flushes;
            self.seq_at_flush = last_seq;
        }
        // An estimate (the engine keeps no key count): entries in tables plus writes since the
        // last flush; a key rewritten across levels or in the memtable counts more than once.
        m.storage_keys
            .set(gauges.table_entries + last_seq.saturating_sub(self.seq_at_flush));
        m.publish_storage(&gauges);
    }
}

impl<F: FileSystem + Send + 'static> DriverState<F> {
    fn publish_membership(&mut self) {
        self.metrics.membership.publish_statuses(&self.node);
        self.metrics.ring_members.set(self.node.ring().len() as u64);
        if let Some((view, n)) = &self.membership_view {
            // Nobody listening (no admin port) is not an error.
            let _ = view.send(Arc::new(MembershipView::of(&self.node, *n)));
        }
    }
}

/// One of the run loop's timers (see [`Driver::run`]): a sleep kept across iterations and the
/// deadline it is set to.
struct MovableTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: tokio::time::Instant,
    /// The deadline of "no deadline": never, in practice, and near enough for clock arithmetic.
    never: tokio::time::Instant,
}

impl MovableTimer {
    fn new() -> Self {
        let never = Clock::tokio_now() + Duration::from_secs(100 * 365 * 24 * 3600);
        MovableTimer {
            sleep: Box::pin(tokio::time::sleep_until(never)),
            at: never,
            never,
        }
    }

    /// Moves the timer to `deadline` (`None`: never), unless it is already there.
    fn set(&mut self, deadline: Option<tokio::time::Instant>) {
        let at = deadline.unwrap_or(self.never);
        if self.at != at {
            self.at = at;
            self.sleep.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use bytes::Bytes;
    use ringkv_core::NodeConfig;
    use ringkv_lsm::fs::SimFs;
    use ringkv_lsm::{Lsm, LsmConfig};

    /// A `--dev` node over `storage` as `settings` describe it (its ring built from them).
    fn dev_node<F: FileSystem>(
        settings: &crate::config::Settings,
        storage: LsmStorage<F>,
        rng_seed: u64,
    ) -> Node<LsmStorage<F>> {
        let config = NodeConfig {
            id: settings.node_id,
            cluster: settings.cluster.clone(),
            rng_seed,
        };
        let ring = crate::server::build_ring(settings).expect("ring");
        Node::new(config, ring, storage, boot()).expect("node")
    }

    /// A `--dev` driver on a simulated disk seeded `seed`, its loop not yet running: the driver,
    /// its input queue and its metrics.
    fn inline_dev_driver(seed: u64) -> (Driver<SimFs>, mpsc::Sender<Input>, Arc<Metrics>) {
        let settings = FileConfig::dev().validate().expect("valid");
        let lsm = Lsm::open(SimFs::seeded(seed), LsmConfig::default()).expect("open");
        let node = dev_node(&settings, LsmStorage::new(lsm), 1);
        let (inputs, inputs_rx) = mpsc::channel(16);
        let metrics = Arc::new(Metrics::default());
        let driver = Driver::new(
            node,
            Clock::start(),
            inputs_rx,
            PeerQueues::new(),
            Arc::clone(&metrics),
            Duration::from_secs(1),
            settings.storage.clone(),
        );
        (driver, inputs, metrics)
    }

    /// Whether the run loop was told to wake (an inline input needed it), consuming the call.
    fn loop_told<F: FileSystem>(shared: &DriverShared<F>) -> bool {
        let notified = std::pin::pin!(shared.attention.notified());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(notified, &mut cx).is_ready()
    }

    /// When a test's node starts: before its driver's clock (whose origin is later) reads.
    fn boot() -> ringkv_core::Now {
        ringkv_core::Now {
            monotonic: ringkv_core::Instant::ZERO,
            wall: ringkv_core::WallMicros(0),
        }
    }

    fn put(key: &str) -> ClientRequest {
        ClientRequest::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"value"),
            context: None,
            consistency: None,
        }
    }

    async fn call(inputs: &mpsc::Sender<Input>, body: ClientRequest) -> ClientReply {
        let (reply, answer) = oneshot::channel();
        inputs
            .send(Input::Client { body, reply })
            .await
            .expect("driver running");
        answer.await.expect("a reply")
    }

    /// Three nodes, n = r = 2, and a key this node does not replicate; both replicas' queues
    /// are full (never drained). The driver only reports that the reads could not be queued;
    /// the core counts the first as that replica's `Busy` refusal, which leaves R out of reach,
    /// and rejects the read as `Busy` at once. (Without the refusal the read would wait for its
    /// deadline and end `Unavailable`, never `Rejected(Busy)`.)
    #[test]
    fn an_unqueued_request_is_the_cores_busy_refusal_not_the_drivers() {
        let settings = FileConfig::dev().validate().expect("valid");
        let me = settings.node_id;
        let others = [NodeId(me.0 + 1), NodeId(me.0 + 2)];
        let mut cluster = settings.cluster.clone();
        cluster.n = 2;
        cluster.r = 2;
        cluster.w = 2;
        let mut ring = ringkv_core::Ring::new(cluster.vnodes_per_node);
        for id in [me, others[0], others[1]] {
            let location = ringkv_core::NodeLocation {
                datacenter: "dc".into(),
                rack: format!("r{}", id.0),
                weight: 1,
            };
            ring.add_node(id, location).expect("ring");
        }
        let key = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| !ring.preference_list(k.as_bytes(), 2).contains(&me))
            .expect("some key is replicated elsewhere only");
        let lsm = Lsm::open(SimFs::seeded(5), LsmConfig::default()).expect("open");
        let node = Node::new(
            NodeConfig {
                id: me,
                cluster,
                rng_seed: 1,
            },
            ring,
            LsmStorage::new(lsm),
            boot(),
        )
        .expect("node");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (inputs, inputs_rx) = mpsc::channel(16);
            let mut peers = PeerQueues::new();
            let mut receivers = Vec::new();
            for id in others {
                let (queue, receiver) = mpsc::channel(1);
                queue
                    .try_send(Message::AeRoots { roots: Vec::new() })
                    .expect("room for the filler");
                peers.insert(id, queue);
                receivers.push(receiver); // kept open and never drained: the queue stays full
            }
            let metrics = Arc::new(Metrics::default());
            let driver = crate::spawn(
                Driver::new(
                    node,
                    Clock::start(),
                    inputs_rx,
                    peers,
                    Arc::clone(&metrics),
                    Duration::from_secs(1),
                    settings.storage.clone(),
                )
                .run(),
            );
            let get = ClientRequest::Get {
                key: Bytes::from(key),
                consistency: None,
            };
            let reply = call(&inputs, get).await;
            assert_eq!(
                reply,
                ClientReply::Rejected(ringkv_core::RequestError::Busy)
            );
            inputs.send(Input::Shutdown).await.expect("shutdown");
            let _ = driver.await;
            assert_eq!(metrics.peer_requests_failed.get(), 2, "one per replica");
            assert_eq!(metrics.peer_messages_sent.get(), 0, "nothing was queued");
            drop(receivers);
        });
    }

    /// Runs a `--dev` driver (maintenance budget 4 KiB) over `lsm`, puts `key{i:05} = value(i)`
    /// for `i < count`, each acknowledged, and shuts it down; returns the engine.
    fn drive_puts<F: FileSystem + SnapshotFs + Send + 'static>(
        lsm: Lsm<F>,
        count: u32,
        value: impl Fn(u32) -> Bytes,
    ) -> LsmStorage<F> {
        let mut settings = FileConfig::dev().validate().expect("valid");
        settings.storage.maintenance_budget_bytes = 4096;
        let node = dev_node(&settings, LsmStorage::new(lsm), 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (inputs, inputs_rx) = mpsc::channel(16);
            let driver = crate::spawn(
                Driver::new(
                    node,
                    Clock::start(),
                    inputs_rx,
                    PeerQueues::new(),
                    Arc::new(Metrics::default()),
                    Duration::from_secs(1),
                    settings.storage.clone(),
                )
                .run(),
            );
            for i in 0..count {
                let body = ClientRequest::Put {
                    key: Bytes::from(format!("key{i:05}")),
                    value: value(i),
                    context: None,
                    consistency: None,
                };
                let reply = call(&inputs, body).await;
                assert!(matches!(reply, ClientReply::Written { .. }), "{reply:?}");
            }
            inputs.send(Input::Shutdown).await.expect("shutdown");
            driver.await.expect("driver")
        })
    }

    /// The loop is woken for an earlier need only: a deadline that moved later or went away
    /// waits for the armed one.
    #[test]
    fn the_loop_is_rearmed_only_for_an_earlier_need() {
        let at = |ms: u64| ringkv_core::Instant::from_nanos(ms * 1_000_000);
        let armed = Waits {
            deadline: Some(at(100)),
            maintenance: at(500),
            gauges_stale: false,
            sync_in_flight: false,
            sync_due: false,
            flush_fsyncs_in_flight: false,
        };
        assert!(!armed.needs_rearm(&armed));
        let later = Waits {
            deadline: Some(at(200)),
            maintenance: at(600),
            ..armed
        };
        assert!(
            !later.needs_rearm(&armed),
            "later needs wait for the armed wake-up"
        );
        let gone = Waits {
            deadline: None,
            ..armed
        };
        assert!(!gone.needs_rearm(&armed));
        let earlier = Waits {
            deadline: Some(at(50)),
            ..armed
        };
        assert!(earlier.needs_rearm(&armed));
        let first = Waits {
            deadline: Some(at(900)),
            ..armed
        };
        assert!(first.needs_rearm(&gone), "a deadline where none was armed");
        let sooner_tick = Waits {
            maintenance: at(400),
            ..armed
        };
        assert!(sooner_tick.needs_rearm(&armed));
        for changed in [
            Waits {
                gauges_stale: true,
                ..armed
            },
            Waits {
                sync_due: true,
                ..armed
            },
            Waits {
                sync_in_flight: true,
                ..armed
            },
            Waits {
                flush_fsyncs_in_flight: true,
                ..armed
            },
        ] {
            assert!(changed.needs_rearm(&armed), "{changed:?}");
        }
    }

    /// The inline path (issue #15): a get of local data is answered before `submit` returns,
    /// with no turn of the run loop; a put is staged and tells the loop a sync is due (the loop
    /// begins the sync, so every write handed over before it runs shares that fsync), and is
    /// acknowledged once the loop has run; a peer message is handled in the call; after the
    /// loop stops, requests and messages are handed back.
    #[test]
    fn inline_requests_are_answered_at_once_and_their_writes_synced_by_the_loop() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (driver, inputs, metrics) = inline_dev_driver(7);
            let inline = driver.inline_inputs();
            let attention = Arc::clone(&driver.shared);
            let woken = || loop_told(&attention);

            // The loop has not run yet: the put waits for it, and it has been told.
            let Ok(Submitted::Pending {
                reply: mut written, ..
            }) = inline.submit(put("k"))
            else {
                panic!("a put is acknowledged only after its fsync");
            };
            assert!(written.try_recv().is_err(), "acknowledged before any sync");
            assert!(woken(), "the put told the run loop a sync is due");
            let driver = crate::spawn(driver.run());
            let reply = written.await.expect("a reply once the loop ran");
            assert!(matches!(reply, ClientReply::Written { .. }), "{reply:?}");

            // A read of local data: answered inside the call.
            let get = ClientRequest::Get {
                key: Bytes::from_static(b"k"),
                consistency: None,
            };
            match inline.submit(get) {
                Ok(Submitted::Answered {
                    reply: ClientReply::Found { values, .. },
                    ..
                }) => assert_eq!(values, vec![Bytes::from_static(b"value")]),
                Ok(Submitted::Answered { reply, .. }) => panic!("not the value: {reply:?}"),
                Ok(Submitted::Pending { .. }) => panic!("a local read not answered at once"),
                Err(_) => panic!("the driver runs"),
            }

            // Peers' messages (from a node this one does not know: ignored by the core).
            let roots = || Message::AeRoots { roots: Vec::new() };
            let mut messages = vec![roots(), roots()];
            assert!(
                inline.deliver_all(NodeId(99), &mut messages),
                "the driver runs"
            );
            assert!(messages.is_empty(), "every message was taken");
            assert_eq!(metrics.peer_messages_received.get(), 2);

            inputs.send(Input::Shutdown).await.expect("shutdown");
            let _ = driver.await;
            assert!(
                inline.submit(put("late")).is_err(),
                "a stopped driver hands requests back"
            );
            let mut late = vec![roots()];
            assert!(!inline.deliver_all(NodeId(99), &mut late));
            assert_eq!(late.len(), 1, "a stopped driver leaves the messages");
        });
    }

    /// A batch of inline requests (a pipeline's): each handed to the node in order under one
    /// hold of the state, answers reported with a zero time of their own (the batch's duration
    /// is returned), writes synced by the loop, which the batch tells once; a stopped driver
    /// runs no batch.
    #[test]
    fn a_batch_of_inline_requests_is_handled_in_order_and_timed_once() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (driver, inputs, _) = inline_dev_driver(8);
            let inline = driver.inline_inputs();
            let attention = Arc::clone(&driver.shared);
            let get = |key: &'static str| ClientRequest::Get {
                key: Bytes::from_static(key.as_bytes()),
                consistency: None,
            };

            // Before the loop ever ran: both puts wait for their fsync, and the loop is told.
            let mut written = Vec::new();
            let took = inline.submit_all(&mut |submit| {
                for key in ["a", "b"] {
                    match submit(put(key)) {
                        Submitted::Pending { reply, .. } => written.push(reply),
                        Submitted::Answered { reply, .. } => {
                            panic!("acknowledged early: {reply:?}")
                        }
                    }
                }
            });
            assert!(took.is_some(), "the driver runs");
            assert!(
                loop_told(&attention),
                "the batch told the run loop a sync is due"
            );
            let driver = crate::spawn(driver.run());
            for reply in written {
                let reply = reply.await.expect("a reply once the loop ran");
                assert!(matches!(reply, ClientReply::Written { .. }), "{reply:?}");
            }

            // Reads of local data, answered in order within the batch.
            let mut answered = Vec::new();
            let took = inline.submit_all(&mut |submit| {
                for key in ["b", "missing", "a"] {
                    match submit(get(key)) {
                        Submitted::Answered { reply, took } => answered.push((reply, took)),
                        Submitted::Pending { .. } => panic!("a local read not answered at once"),
                    }
                }
            });
            assert!(took.is_some(), "the driver runs");
            let found = |reply: &ClientReply| match reply {
                ClientReply::Found { values, .. } => values == &vec![Bytes::from_static(b"value")],
                _ => false,
            };
            assert_eq!(answered.len(), 3);
            assert!(found(&answered[0].0), "{:?}", answered[0].0);
            assert!(
                matches!(answered[1].0, ClientReply::NotFound { .. }),
                "{:?}",
                answered[1].0
            );
            assert!(found(&answered[2].0), "{:?}", answered[2].0);
            assert!(
                answered.iter().all(|(_, took)| *took == Duration::ZERO),
                "an answer in a batch has the batch's time, returned once"
            );

            inputs.send(Input::Shutdown).await.expect("shutdown");
            let _ = driver.await;
            let mut ran = false;
            assert!(inline.submit_all(&mut |_| ran = true).is_none());
            assert!(!ran, "a stopped driver runs no batch");
        });
    }

    /// Flush jobs on real files: their fsyncs run on the flush fsync thread and their tables are
    /// installed while writes go on; every acknowledged write is there after a restart.
    #[test]
    fn flush_jobs_on_real_files_install_their_tables_and_keep_every_write() {
        use ringkv_core::storage::Storage;
        use ringkv_core::Record;
        use ringkv_lsm::fs::StdFs;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LsmConfig::tiny_for_tests();
        let open = || Lsm::open(StdFs::open(dir.path()).expect("fs"), config.clone());
        let value = |i: u32| Bytes::from(format!("{i:05}").repeat(40));
        let stats = drive_puts(open().expect("open"), 1500, value).lsm().stats();
        // The tiny memtable (4 KiB) holds about ten of these writes: one freeze every ten.
        assert!(stats.flushes >= 100, "{stats:?}");
        let mut storage = LsmStorage::new(open().expect("reopen"));
        for i in 0..1500 {
            let record = storage.get(format!("key{i:05}").as_bytes()).expect("get");
            let Some(Record::Lww(lww)) = record else {
                panic!("key{i:05}: {record:?}");
            };
            assert_eq!(lww.value, Some(value(i)), "key{i:05}");
        }
    }

    /// The driver runs the one maintenance scheduler: a burst of writes, each its own batch, is
    /// compacted by the steps the writes bring forward, so no write finds level 0 full (writes do
    /// no maintenance themselves: without the driver's steps the same burst stalls).
    #[test]
    fn writes_bring_maintenance_steps_forward_so_no_write_stalls() {
        let lsm = Lsm::open(SimFs::seeded(11), LsmConfig::tiny_for_tests()).expect("open");
        let stats = drive_puts(lsm, 2000, |_| Bytes::from(vec![b'v'; 40]))
            .lsm()
            .stats();
        assert!(stats.flushes >= 10, "a burst worth compacting: {stats:?}");
        assert!(stats.compactions > 0, "{stats:?}");
        assert_eq!(stats.stalls, 0, "maintenance kept up: {stats:?}");
    }

    /// A `--dev` node's driver over a simulated disk whose next fsync fails after `ok_writes`
    /// acknowledged writes: later writes are refused, and the engine never fsyncs again.
    #[test]
    fn a_failed_fsync_refuses_writes_and_is_never_retried() {
        let settings = FileConfig::dev().validate().expect("valid");
        let lsm = Lsm::open(SimFs::seeded(3), LsmConfig::default()).expect("open");
        let node = dev_node(&settings, LsmStorage::new(lsm), 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (inputs, inputs_rx) = mpsc::channel(16);
            let metrics = Arc::new(Metrics::default());
            let driver = crate::spawn(
                Driver::new(
                    node,
                    Clock::start(),
                    inputs_rx,
                    PeerQueues::new(),
                    Arc::clone(&metrics),
                    Duration::from_secs(1),
                    settings.storage.clone(),
                )
                .run(),
            );
            assert!(matches!(
                call(&inputs, put("a")).await,
                ClientReply::Written { .. }
            ));
            // The write's own sync, plus the start-up sync of the node's incarnation unless the
            // driver coalesced the two (group commit).
            let syncs = metrics.storage_syncs.get();
            assert!(
                (1..=2).contains(&syncs),
                "acknowledged after its sync: {syncs} syncs"
            );

            // Stop the driver to get the storage back, arm the fault, and start it again.
            inputs.send(Input::Shutdown).await.expect("shutdown");
            let mut storage = driver.await.expect("driver");
            storage.lsm_mut().fs_mut().fail_next_fsync();
            let lsm_fsyncs = storage.lsm_mut().fs_mut().stats().fsyncs;

            let node = dev_node(&settings, storage, 2);
            let (inputs, inputs_rx) = mpsc::channel(16);
            let metrics = Arc::new(Metrics::default());
            let driver = crate::spawn(
                Driver::new(
                    node,
                    Clock::start(),
                    inputs_rx,
                    PeerQueues::new(),
                    Arc::clone(&metrics),
                    Duration::from_secs(1),
                    settings.storage.clone(),
                )
                .run(),
            );
            let failed = call(&inputs, put("b")).await;
            assert!(
                !matches!(failed, ClientReply::Written { .. }),
                "not acknowledged: {failed:?}"
            );
            assert_eq!(metrics.storage_sync_failures.get(), 1);
            let refused = call(&inputs, put("c")).await;
            assert!(
                !matches!(refused, ClientReply::Written { .. }),
                "refused: {refused:?}"
            );
            inputs.send(Input::Shutdown).await.expect("shutdown");
            let mut storage = driver.await.expect("driver");
            assert!(storage.lsm_mut().poisoned().is_some());
            assert_eq!(
                storage.lsm_mut().fs_mut().stats().fsyncs,
                lsm_fsyncs,
                "the failed fsync is never retried, not even at shutdown"
            );
            assert!(
                storage.get(b"a").expect("reads go on").is_some(),
                "the acknowledged write is still there"
            );
        });
    }
}
