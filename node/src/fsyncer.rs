//! The WAL's fsync on a thread of its own, so that the driver goes on serving and staging writes
//! while the disk works (issue #15).
//!
//! The driver begins a sync with the engine's split sync (`Lsm::sync_begin`: the WAL's batch is
//! written and sealed, and the fsync is detached on a second descriptor of the file), hands the
//! ticket here, and finishes it (`Lsm::sync_finish`) when the result comes back. Writes staged
//! meanwhile are not covered: core's `GroupCommit` acknowledges only the tokens requested before
//! the sync began, and asks for the next sync once this one completes, which the simulator
//! drives the same way (its syncs complete after a drawn disk latency while inputs go on).
//!
//! Why a dedicated thread and not `spawn_blocking`: one fsync is in flight at a time and the
//! thread stays parked between them, so a hand-off is one channel send and one wake-up, and no
//! blocking-pool bookkeeping runs per sync.

use ringkv_lsm::fs::FsError;
use ringkv_lsm::{FlushFsync, SyncTicket};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use tokio::sync::mpsc;

/// An fsync detached from the engine, as the thread runs it.
pub trait FsyncWork: Send + 'static {
    /// What the driver gets back with the result: the flush job for a flush's fsync (results come
    /// back in submission order, and a job finished in place meanwhile makes a later one stale).
    fn tag(&self) -> u64;
    /// Runs the fsync.
    fn run(&mut self) -> Result<(), FsError>;
}

impl FsyncWork for SyncTicket {
    fn tag(&self) -> u64 {
        self.covers_seq()
    }

    fn run(&mut self) -> Result<(), FsError> {
        self.fsync()
    }
}

impl FsyncWork for FlushFsync {
    fn tag(&self) -> u64 {
        self.job()
    }

    fn run(&mut self) -> Result<(), FsError> {
        self.fsync()
    }
}

/// The fsync thread and the two channels to it. One runs the WAL's group commits; a second one
/// runs flush jobs' fsyncs, which take tens of milliseconds and must not delay a commit.
pub struct Fsyncer<W: FsyncWork = SyncTicket> {
    tickets: Option<std_mpsc::Sender<W>>,
    thread: Option<JoinHandle<()>>,
}

impl<W: FsyncWork> Fsyncer<W> {
    /// Starts the thread, named `name`; its results come back on the [`FsyncResults`], which
    /// the driver's run loop awaits while the submitting side sits with the engine it serves.
    pub fn start(name: &str) -> std::io::Result<(Fsyncer<W>, FsyncResults)> {
        let (tickets, inbox) = std_mpsc::channel::<W>();
        let (outbox, results) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // A blocking receive. The thread used to yield its core up to 200 times before
                // sleeping, to spare the driver a wake-up (about 20 µs in a virtual machine).
                // Measured again (issue #15): under the acceptance benchmark the next fsync came
                // ~130 yields after the last, 600,000 `sched_yield`s per 100,000 SETs, each one
                // taking the core from the benchmark's client or the driver when the machine is
                // loaded; sleeping cost the node 1.6 µs less CPU per SET and won 5 of 5
                // interleaved rounds of SET throughput.
                while let Ok(mut work) = inbox.recv() {
                    if outbox.send((work.tag(), work.run())).is_err() {
                        return;
                    }
                }
            })?;
        let fsyncer = Fsyncer {
            tickets: Some(tickets),
            thread: Some(thread),
        };
        Ok((fsyncer, FsyncResults(results)))
    }

    /// Hands `ticket` to the thread; gives it back if the thread is gone (the caller then runs
    /// the fsync itself).
    pub fn submit(&self, ticket: W) -> Result<(), W> {
        match &self.tickets {
            Some(tickets) => tickets.send(ticket).map_err(|e| e.0),
            None => Err(ticket),
        }
    }
}

/// The results of an [`Fsyncer`]'s fsyncs, in submission order.
pub struct FsyncResults(mpsc::UnboundedReceiver<(u64, Result<(), FsError>)>);

impl FsyncResults {
    /// The result of the oldest fsync submitted and not yet reported, with its tag; `None` if
    /// the thread is gone.
    pub async fn completed(&mut self) -> Option<(u64, Result<(), FsError>)> {
        self.0.recv().await
    }
}

impl<W: FsyncWork> Drop for Fsyncer<W> {
    fn drop(&mut self) {
        // Closing the ticket channel ends the thread once its fsync in flight (if any) is done.
        self.tickets = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
