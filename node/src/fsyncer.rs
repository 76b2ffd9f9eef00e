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
use ringkv_lsm::SyncTicket;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use tokio::sync::mpsc;

/// The fsync thread and the two channels to it.
pub struct Fsyncer {
    tickets: Option<std_mpsc::Sender<SyncTicket>>,
    results: mpsc::UnboundedReceiver<Result<(), FsError>>,
    thread: Option<JoinHandle<()>>,
}

impl Fsyncer {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Fsyncer> {
        let (tickets, inbox) = std_mpsc::channel::<SyncTicket>();
        let (outbox, results) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("ringkv-fsync".to_string())
            .spawn(move || {
                for mut ticket in inbox {
                    if outbox.send(ticket.fsync()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Fsyncer {
            tickets: Some(tickets),
            results,
            thread: Some(thread),
        })
    }

    /// Hands `ticket` to the thread; gives it back if the thread is gone (the caller then runs
    /// the fsync itself).
    pub fn submit(&self, ticket: SyncTicket) -> Result<(), SyncTicket> {
        match &self.tickets {
            Some(tickets) => tickets.send(ticket).map_err(|e| e.0),
            None => Err(ticket),
        }
    }

    /// The result of the oldest fsync submitted and not yet reported; `None` if the thread is
    /// gone.
    pub async fn completed(&mut self) -> Option<Result<(), FsError>> {
        self.results.recv().await
    }
}

impl Drop for Fsyncer {
    fn drop(&mut self) {
        // Closing the ticket channel ends the thread once its fsync in flight (if any) is done.
        self.tickets = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
