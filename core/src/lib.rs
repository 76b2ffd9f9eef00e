//! # ringkv-core
//!
//! The protocol logic of ringkv as sans-IO state machines: no sockets, files, threads or clocks.
//! The same code runs in the deterministic simulator (`sim`) and in the tokio node (`node`).
//!
//! ## The one grammar every machine follows
//! * **In:** `handle_client(now, request, body)`, `handle_message(now, from, message)`,
//!   `handle_timeout(now)`, `handle_persisted(now, token)` (and `handle_persist_failed`), and
//!   `handle_send_failed(now, to, message)` when the driver could not queue a send: drivers only
//!   report it, the node decides what it means (back-pressure, `node::SendFailureClass`).
//! * **Out:** `poll_output() -> Option<Output>` (`Send`, `Persist`, `Reply`, `Event`) and
//!   `poll_timeout() -> Option<Instant>`.
//! * **Rule:** every input is followed by a full drain of `poll_output` before the next input.
//!   [`drive::drive`] is that rule, written once; every driver uses it.
//!   A driver is a loop: feed one input, drain the outputs, sleep until `poll_timeout` or the next
//!   input, whichever comes first.
//! * **Time and randomness are inputs.** `Now` carries monotonic time (deadlines) and the node's
//!   wall clock (version timestamps) separately; each machine owns a ChaCha RNG seeded from its
//!   configuration.
//! * **Persist before ack.** A replica stages writes in [`storage::Storage`] and emits
//!   `Output::Persist { token }`; it acknowledges only after the driver has synced storage and
//!   called `handle_persisted(token)`. A failed sync poisons the node's storage for good.
//!
//! ## Map
//! * [`ring`]: consistent hashing, vnodes, rack/datacenter-aware placement.
//! * [`version`]: last-write-wins versions, dotted version vectors, merges.
//! * [`node`]: the coordinator + replica state machine.
//! * [`quorum`]: where a round trip's answers stand (`Pending`, `Met`, `Failed`), as a value.
//! * [`storage`]: the storage trait and the in-memory engine.
//! * [`message`], [`codec`]: what nodes say to each other and its one wire encoding.
//! * [`client`]: requests, consistency levels and the three kinds of outcome.
//! * [`command`]: client commands (`SET`, `DEL`, `KV.PUT`, ...) mapped to requests, for every driver.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
// A function longer than 70 lines (`clippy.toml`) is split along a seam the reader can see; a
// longer one is a table and says so (issue #16).
#![warn(clippy::too_many_lines)]

pub mod antientropy;
pub mod buggify;
pub mod client;
pub mod codec;
pub mod command;
pub mod config;
pub mod drive;
pub mod hash;
pub mod id;
pub mod membership;
pub mod message;
pub mod node;
pub mod quorum;
pub mod ring;
pub mod storage;
pub mod time;
pub mod version;

pub use client::{
    CausalContext, ClientReply, ClientRequest, Consistency, RequestError, WriteCondition,
};
pub use config::{ClusterConfig, ConfigError, NodeConfig};
pub use id::{NodeId, OperationId, RequestId};
pub use message::Message;
pub use node::{Node, NodeEvent, Output, PersistToken};
pub use ring::{NodeLocation, Ring};
pub use storage::{MemStorage, Storage, StorageError};
pub use time::{Instant, Now, WallMicros};
pub use version::{ConflictMode, Record, WriteVersion};
