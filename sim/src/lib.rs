//! # sim
//!
//! The deterministic simulator of ringkv. One seed drives everything: a discrete-event loop over a
//! min-heap of (time, sequence), a network that delays, drops, duplicates and partitions, nodes
//! that crash (losing what was not synced), restart and pause, wall clocks with offsets, drift and
//! jumps, and clients that record every operation. The same seed gives the same trace fingerprint
//! on every run and machine.
//!
//! A run has two phases: **safety** (`duration_ms`, faults on, workload running) and **liveness**
//! (`settle_ms`, everything healed and restarted). Then the checkers judge the history and the
//! replicas' durable contents.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checks;
pub mod disk;
pub mod fingerprint;
pub mod history;
pub mod json;
pub mod report;
pub mod run;
pub mod scenario;
pub mod swarm;
pub mod workload;
pub mod world;

pub use run::{run_seed, RunOptions};
pub use scenario::Scenario;
