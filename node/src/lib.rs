//! # ringkv node
//!
//! The production server: a thin tokio driver around the sans-IO [`ringkv_core::Node`]. The
//! driver task owns the node and follows the core's one rule: feed one input, drain
//! `poll_output` completely, sleep until `poll_timeout` or the next input. Everything else here
//! is IO at the edges: the Redis-protocol client interface, the authenticated peer transport,
//! the LSM storage engine on real files, configuration and admin.

#![deny(missing_docs)]

pub mod admin;
pub mod admin_auth;
pub mod clients;
pub mod clock;
pub mod commands;
pub mod commands_ring;
pub mod commands_scan;
pub mod commands_ttl;
pub mod conditional;
pub mod config;
pub mod driver;
pub mod fsyncer;
pub mod http;
pub mod local_cluster;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod resp;
pub mod resp_client;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod storage;
pub mod tls;
pub mod transaction;

/// Spawns `task` on the runtime inside the caller's tracing span, so every log line of the node
/// (all its tasks) carries the `node` span and with it the node id.
pub fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(task))
}
