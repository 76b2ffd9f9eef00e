//! Linearizability checking of operation histories.
//!
//! A history (what clients invoked, what they were told, and when) is linearizable if every
//! operation can be given one instant between its invocation and its return such that, in that
//! order, the operations are legal for a sequential [`Model`]. This crate decides it one key at a
//! time (P-compositionality), after cheap sound pre-checks ([`precheck`]), with two searches run
//! in turns by the [`scheduler`] with growing step budgets: the Wing–Gong–Lowe depth-first search
//! with a memo of (linearized set, state) ([`search`]), quick to find linearizations, and a
//! breadth-first "just-in-time" frontier search ([`frontier`]), quick to refute long histories.
//! For register-like models a [`value_tracker`] prunes configurations that leave a read with no
//! write to see. A violation is explained with an ASCII timeline ([`timeline`]) or an HTML page
//! ([`html`]) of a small window of operations around the failure.
//!
//! Entry points: [`check`] for a [`History`] built in code, [`check_history_file`] for a file in
//! one of the [`formats`] (what `sim check-history` calls).
//!
//! Determinism: the same history and limits give the same verdict, the same report and the same
//! number of steps. Budgets are counted in search steps, never in time; the only clock read is in
//! [`cli::measure_wall_time`], for reporting.
//!
//! ```
//! use ringkv_checker::{check, CasInput, CasOutput, CasRegister, History, Operation, Outcome, SearchLimits};
//!
//! let mut history = History::new();
//! history.push(Operation { client: 1, key: "x".into(), input: CasInput::Write(1),
//!     outcome: Outcome::Returned { output: CasOutput::Ok, time: 2 }, invoke_time: 1 });
//! history.push(Operation { client: 2, key: "x".into(), input: CasInput::Read,
//!     outcome: Outcome::Returned { output: CasOutput::Read(None), time: 4 }, invoke_time: 3 });
//! let outcome = check(&CasRegister, &history, &SearchLimits::default()).unwrap();
//! assert_eq!(outcome.verdict.label(), "not linearizable"); // a stale read
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod formats;
pub mod frontier;
mod fxhash;
pub mod history;
pub mod html;
pub mod memo;
pub mod model;
pub mod models;
pub mod precheck;
pub mod scheduler;
pub mod search;
pub mod timeline;
pub mod value_tracker;
pub mod verdict;

pub use cli::{
    check_history_file, check_history_file_with_limits, check_history_text, CheckReport,
    CheckerError, ModelName,
};
pub use history::{ClientId, History, HistoryError, Operation, Outcome};
pub use model::{Access, Model, ValueCode};
pub use models::cas_register::{CasInput, CasOutput, CasRegister, CasValue};
pub use models::kv_append::{KvAppend, KvInput, KvOutput, StrId};
pub use models::register::{Register, RegisterInput, RegisterOutput, ABSENT};
pub use scheduler::{check, CheckOutcome, SearchLimits, SearchStats, Strategy};
pub use verdict::{Role, Verdict, Violation, WindowOp};
