//! The one maintenance scheduler (issue #12, item 5): when to run a bounded step of compaction
//! and value-log collection, and how big, for every driver of the engine.
//!
//! Before it there were two: the storage adapter compacted a little after every write, and the
//! node ran a timer on top; the simulator only ever exercised the first. Now the adapter does no
//! maintenance of its own, and both drivers (the node's driver on real time, the simulator on
//! simulated time) ask [`MaintenanceScheduler::poll_step`] after each batch of inputs and when
//! [`MaintenanceScheduler::poll_timeout`] is reached, and run the step it returns with
//! [`LsmStorage::maintain`]. A step is due:
//!
//! * every `interval_ms` (a tick): finishes compaction debt once writes stop and, every
//!   `vlog_gc_interval_ticks` ticks, may start a value-log collection, which then goes on by
//!   one bounded part at every step until its segment is gone;
//! * sooner, once the bytes written since the last step owe a full step of merging
//!   ([`WRITE_DEBT_FACTOR`] merged bytes per byte written), so a heavy write load is met by
//!   compaction in step with it (what the adapter's per-write step used to do) instead of by
//!   write stalls.
//!
//! Every step is bounded by `budget_bytes` of merged entries, its bound on the driver's time.
//! The only compaction outside the scheduler is back-pressure: a write the engine refuses as
//! stalled (level 0 full) runs compaction until it is accepted (`LsmStorage`), which the
//! scheduler's write-driven steps make rare.
//!
//! It lives in the engine's crate, not in `core`, because what it schedules (compaction budgets,
//! value-log collection) exists only here; both drivers already depend on this crate. The
//! scheduler itself is sans-IO: time ([`Instant`], monotonic) and the engine's state
//! ([`MaintenanceState`]) are arguments, and it decides without touching the engine.

use crate::error::LsmError;
use crate::fs::FileSystem;
use crate::outcome::{CompactionProgress, FlushProgress, GcOutcome};
use crate::storage::LsmStorage;
use ringkv_core::Instant;
use std::time::Duration;

/// Bytes of merging owed per byte written: a leveled tree rewrites each byte about once per
/// level it moves through, and four is what the adapter's per-write step used to run.
pub const WRITE_DEBT_FACTOR: u64 = 4;

/// The scheduler's limits (the node's `[storage]` table; fixed small values in the simulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaintenanceSettings {
    /// Time between ticks.
    pub interval_ms: u64,
    /// Bytes of entries one step may merge.
    pub budget_bytes: u64,
    /// A value-log collection is attempted every this many ticks.
    pub vlog_gc_interval_ticks: u64,
}

impl MaintenanceSettings {
    /// Checks every limit; a scheduler is only built from valid settings.
    pub fn validate(&self) -> Result<(), LsmError> {
        let fail = |why: &str| Err(LsmError::InvalidConfig(why.to_string()));
        if self.interval_ms == 0 {
            return fail("maintenance interval_ms must be at least 1");
        }
        if self.budget_bytes == 0 {
            return fail("maintenance budget_bytes must be at least 1");
        }
        if self.vlog_gc_interval_ticks == 0 {
            return fail("maintenance vlog_gc_interval_ticks must be at least 1");
        }
        Ok(())
    }
}

/// What the scheduler needs to know of the engine ([`LsmStorage::maintenance_state`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceState {
    /// Key and value bytes written since the engine was opened (a counter that only grows).
    pub written_bytes: u64,
    /// The engine is poisoned (read-only until restarted): no step runs.
    pub poisoned: bool,
}

/// One bounded step to run ([`LsmStorage::maintain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaintenanceStep {
    /// Bytes of entries the compaction step may merge.
    pub compaction_budget_bytes: u64,
    /// Attempt one value-log collection if no compaction is pending.
    pub collect_value_log: bool,
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceOutcome {
    /// A flush job wrote part of the frozen memtable or installed its table.
    pub flushed: bool,
    /// A compaction step merged entries or installed a result.
    pub compacted: bool,
    /// A value-log segment was collected.
    pub collected: bool,
}

/// Decides when the next maintenance step runs and what it may do. One per running engine
/// (a restart builds a new one).
#[derive(Clone, Debug)]
pub struct MaintenanceScheduler {
    settings: MaintenanceSettings,
    /// When the next tick is due.
    tick_at: Instant,
    /// Ticks so far (the value-log collection cadence counts them).
    ticks: u64,
    /// `written_bytes` when the last step ran: writes since then are the compaction debt.
    written_bytes_stepped: u64,
}

impl MaintenanceScheduler {
    /// A scheduler started at `now` over an engine in `state`; the first tick is one interval
    /// away.
    pub fn new(
        settings: MaintenanceSettings,
        now: Instant,
        state: MaintenanceState,
    ) -> Result<MaintenanceScheduler, LsmError> {
        settings.validate()?;
        Ok(MaintenanceScheduler {
            settings,
            tick_at: now.saturating_add(Duration::from_millis(settings.interval_ms)),
            ticks: 0,
            written_bytes_stepped: state.written_bytes,
        })
    }

    /// When the next tick is due; a driver wakes up then and calls
    /// [`MaintenanceScheduler::poll_step`]. Write-driven steps need no wake-up: the driver polls
    /// after each batch of inputs anyway.
    pub fn poll_timeout(&self) -> Instant {
        self.tick_at
    }

    /// The step to run now, if one is due. A due tick is consumed even when the engine is
    /// poisoned (then nothing runs), so a driver waiting on [`MaintenanceScheduler::poll_timeout`]
    /// never spins. A spurious call is a no-op.
    pub fn poll_step(&mut self, now: Instant, state: MaintenanceState) -> Option<MaintenanceStep> {
        let written = state
            .written_bytes
            .saturating_sub(self.written_bytes_stepped);
        let debt_bytes = written.saturating_mul(WRITE_DEBT_FACTOR);
        let step = if now >= self.tick_at {
            self.ticks += 1;
            // Delay, not burst: a driver that was held up owes one tick, not every one it missed.
            self.tick_at = now.saturating_add(Duration::from_millis(self.settings.interval_ms));
            Some(MaintenanceStep {
                compaction_budget_bytes: self.settings.budget_bytes,
                collect_value_log: self
                    .ticks
                    .is_multiple_of(self.settings.vlog_gc_interval_ticks),
            })
        } else if debt_bytes >= self.settings.budget_bytes {
            Some(MaintenanceStep {
                compaction_budget_bytes: self.settings.budget_bytes,
                collect_value_log: false,
            })
        } else {
            None
        };
        if step.is_some() {
            self.written_bytes_stepped = state.written_bytes;
        }
        self.check_invariants(now);
        step.filter(|_| !state.poisoned)
    }

    /// Panics if the state is inconsistent (a bug); `now` is the time of the last poll.
    pub fn check_invariants(&self, now: Instant) {
        assert!(
            self.settings.validate().is_ok(),
            "validated at construction"
        );
        assert!(
            self.tick_at > now,
            "after a poll the next tick is in the future (a due tick is consumed)"
        );
    }
}

impl<F: FileSystem> LsmStorage<F> {
    /// The engine's state as [`MaintenanceScheduler::poll_step`] reads it.
    pub fn maintenance_state(&self) -> MaintenanceState {
        MaintenanceState {
            written_bytes: self.lsm().stats().user_bytes,
            poisoned: self.lsm().poisoned().is_some(),
        }
    }

    /// Runs one bounded step: a step of the flush under way if there is one (about
    /// `compaction_budget_bytes` of frozen entries; where fsyncs can be detached, the job's fsync
    /// is then left to the driver, `Lsm::take_flush_fsync`), else a compaction step of at most
    /// `compaction_budget_bytes` merged entries and, when no compaction is pending, a step of value-log collection looking at as
    /// many bytes of frames (one is started when the step says so; one under way always goes
    /// on). `wall_ms` ages the engine's own tombstones
    /// (and stamps later deletes). A poisoned engine does nothing (it is read-only until
    /// restarted). A failure on the write path poisons the engine; the next write or sync then
    /// fails and the node reports it. A full disk poisons nothing: the step undid itself.
    pub fn maintain(
        &mut self,
        step: MaintenanceStep,
        wall_ms: u64,
    ) -> Result<MaintenanceOutcome, LsmError> {
        self.set_now_ms(wall_ms);
        let lsm = self.lsm_mut();
        if lsm.poisoned().is_some() {
            return Ok(MaintenanceOutcome::default());
        }
        let mut done = MaintenanceOutcome::default();
        // A flush job goes first: until its table is installed the frozen memtable holds memory,
        // and a second full memtable would have to wait for it. A part written takes the whole
        // step; an install leaves room for compaction, which the new table may owe.
        match lsm.flush_step(step.compaction_budget_bytes)? {
            FlushProgress::Idle | FlushProgress::AwaitingFsync => {}
            FlushProgress::InProgress => {
                done.flushed = true;
                return Ok(done);
            }
            FlushProgress::Installed => done.flushed = true,
        }
        match lsm.compact_step(wall_ms, step.compaction_budget_bytes)? {
            CompactionProgress::Idle => {
                // A collection under way goes on at every step, not only at the ticks that may
                // start one: each step looks at `compaction_budget_bytes` of its frames.
                if step.collect_value_log || lsm.collecting_value_log() {
                    let outcome = lsm.collect_value_log_step(step.compaction_budget_bytes)?;
                    done.collected = matches!(outcome, GcOutcome::Collected { .. });
                }
            }
            _ => done.compacted = true,
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: MaintenanceSettings = MaintenanceSettings {
        interval_ms: 100,
        budget_bytes: 4000,
        vlog_gc_interval_ticks: 3,
    };

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    fn written(bytes: u64) -> MaintenanceState {
        MaintenanceState {
            written_bytes: bytes,
            poisoned: false,
        }
    }

    #[test]
    fn ticks_come_every_interval_and_collect_every_few_ticks() {
        let mut s = MaintenanceScheduler::new(SETTINGS, ms(0), written(0)).expect("valid");
        assert_eq!(s.poll_timeout(), ms(100));
        assert_eq!(s.poll_step(ms(99), written(0)), None, "not due yet");
        let mut collected = Vec::new();
        for tick in 1..=6 {
            let step = s
                .poll_step(ms(100 * tick), written(0))
                .expect("a tick is due");
            assert_eq!(step.compaction_budget_bytes, 4000);
            collected.push(step.collect_value_log);
            assert_eq!(s.poll_timeout(), ms(100 * (tick + 1)));
            assert_eq!(
                s.poll_step(ms(100 * tick), written(0)),
                None,
                "a spurious poll is a no-op"
            );
        }
        assert_eq!(collected, [false, false, true, false, false, true]);
    }

    #[test]
    fn a_late_driver_gets_one_tick_and_the_next_is_an_interval_later() {
        let mut s = MaintenanceScheduler::new(SETTINGS, ms(0), written(0)).expect("valid");
        assert!(s.poll_step(ms(1000), written(0)).is_some());
        assert_eq!(s.poll_step(ms(1000), written(0)), None);
        assert_eq!(s.poll_timeout(), ms(1100));
    }

    #[test]
    fn writes_owing_a_full_step_of_merging_bring_a_step_forward() {
        let mut s = MaintenanceScheduler::new(SETTINGS, ms(0), written(500)).expect("valid");
        // 999 bytes since the start owe 3996 bytes of merging: not yet a step.
        assert_eq!(s.poll_step(ms(10), written(1499)), None);
        let step = s
            .poll_step(ms(11), written(1500))
            .expect("a full step owed");
        assert_eq!(
            step,
            MaintenanceStep {
                compaction_budget_bytes: 4000,
                collect_value_log: false
            },
            "bounded by the budget; collection only on ticks"
        );
        assert_eq!(
            s.poll_step(ms(12), written(1500)),
            None,
            "the debt was paid"
        );
        assert_eq!(
            s.poll_timeout(),
            ms(100),
            "write-driven steps leave the tick alone"
        );
        assert!(s.poll_step(ms(100), written(1500)).is_some());
    }

    #[test]
    fn a_poisoned_engine_gets_no_step_and_its_ticks_still_move_on() {
        let mut s = MaintenanceScheduler::new(SETTINGS, ms(0), written(0)).expect("valid");
        let poisoned = MaintenanceState {
            written_bytes: 1 << 20,
            poisoned: true,
        };
        assert_eq!(s.poll_step(ms(100), poisoned), None);
        assert_eq!(s.poll_timeout(), ms(200), "no spinning on a due tick");
        assert_eq!(s.poll_step(ms(101), poisoned), None);
    }

    #[test]
    fn invalid_settings_are_refused() {
        for bad in [
            MaintenanceSettings {
                interval_ms: 0,
                ..SETTINGS
            },
            MaintenanceSettings {
                budget_bytes: 0,
                ..SETTINGS
            },
            MaintenanceSettings {
                vlog_gc_interval_ticks: 0,
                ..SETTINGS
            },
        ] {
            assert!(MaintenanceScheduler::new(bad, ms(0), written(0)).is_err());
        }
    }
}
