//! # ringkv-client
//!
//! An async (tokio) client for ringkv that routes each request to a replica of its key.
//!
//! Any ringkv node coordinates any request, so a plain Redis client works; but the node it
//! dialled then forwards the request to the key's replicas, which costs a hop and puts every
//! client's load on that one node. This client asks the cluster for its ring (`KV.RING`:
//! ranges, replicas in preference order, their client addresses), computes each key's token
//! with the node's own hash ([`ring::token_of`]) and sends the request to the first replica
//! it can reach, over a per-node pool of connections.
//!
//! ## What is retried, and what never is
//! * **Before the request is sent** (connection refused, reset, or a pooled connection the node
//!   has closed): the next replica is tried, for every command. Nothing reached a node.
//! * **Refusals known to have had no effect** (`BUSY`, `UNAVAILABLE`, `CLUSTERDOWN`): the next
//!   replica is tried, for every command; the last refusal is returned typed.
//! * **Reads** (`GET`, `KV.GET`) whose connection fails or times out after they were sent are
//!   tried on the next replica: a read has no effect.
//! * **Writes** (`SET`, `DEL`, `KV.PUT`, `KV.DEL`) whose connection fails or times out after they
//!   were sent, and writes the node answers `INDETERMINATE`, are **never** retried: the caller
//!   gets [`Error::Indeterminate`] (the write may or may not take effect; retrying could apply it
//!   after a later write).
//!
//! ## Keeping the ring fresh
//! The ring is fetched at [`Client::connect`], then every `refresh_interval_ms` by a background
//! task, and at once (in the background) whenever a node could not be reached or answered
//! `CLUSTERDOWN`: ringkv nodes never refuse a request for a key they do not own (there is no
//! Redis-Cluster `MOVED`), so a failed connection is the hint that the ring moved. A ring with a
//! lower version than the one held (from a node that has not heard of a change yet) is ignored.
//! A stale ring costs only latency, never correctness: whichever node gets a request
//! coordinates it.
//!
//! Plaintext RESP2 only (no TLS, no AUTH yet).

#![deny(missing_docs)]

mod error;
pub mod resp;
pub mod ring;

pub use error::Error;
pub use resp::Value;
pub use ring::{token_of, Replica, RingMap};

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How requests are routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// To the first reachable replica of the key (the point of this crate).
    TokenAware,
    /// Always to the first reachable seed, which coordinates (what a plain Redis client does);
    /// kept for comparison (`benches/`, routing-compare).
    Coordinator,
}

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` client addresses of some nodes; the ring is fetched from the first that
    /// answers, and they are the last resort for any request.
    pub seeds: Vec<String>,
    /// How requests are routed.
    pub routing: Routing,
    /// Period of the background ring refresh (0: only on connect and on failures).
    pub refresh_interval_ms: u64,
    /// Longest wait for a TCP connection.
    pub connect_timeout_ms: u64,
    /// Longest wait for a reply once a request is sent (above the node's own request timeout,
    /// so the node's typed answer normally arrives first).
    pub request_timeout_ms: u64,
    /// Idle connections kept per node.
    pub idle_connections_per_node_max: usize,
}

impl ClientConfig {
    /// Token-aware routing to a cluster reached through `seeds`, with the defaults.
    pub fn new(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
            routing: Routing::TokenAware,
            refresh_interval_ms: 10_000,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 10_000,
            idle_connections_per_node_max: 64,
        }
    }
}

/// Counters of one client, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests that went to another candidate after a failure before sending.
    pub failovers: u64,
    /// Requests retried after a no-effect refusal or a failed read.
    pub retries: u64,
    /// Rings fetched and adopted.
    pub ring_refreshes: u64,
}

/// A token-aware ringkv client. Cheap to clone (shared state); usable from many tasks at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    ring: Mutex<Arc<RingMap>>,
    /// Idle connections per address.
    pool: Mutex<HashMap<String, Vec<Connection>>>,
    /// A refresh is running (at most one at a time).
    refreshing: AtomicBool,
    failovers: AtomicU64,
    retries: AtomicU64,
    ring_refreshes: AtomicU64,
}

/// Whether a request may be sent again after it may have reached a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// One attempt's outcome on one node.
enum Attempt {
    Reply(Value),
    /// Nothing was sent.
    NotSent(String),
    /// Sent, but no reply understood: the outcome is unknown.
    Lost(String),
}

impl Client {
    /// Connects to the cluster: fetches the ring from the first seed that answers, and starts
    /// the background refresh. Fails only if no seed answers `KV.RING`.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let inner = Arc::new(Inner {
            config,
            ring: Mutex::new(Arc::new(RingMap::default())),
            pool: Mutex::new(HashMap::new()),
            refreshing: AtomicBool::new(false),
            failovers: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            ring_refreshes: AtomicU64::new(0),
        });
        let client = Client { inner };
        client.refresh_ring().await?;
        if client.inner.config.refresh_interval_ms > 0 {
            tokio::spawn(refresh_periodically(Arc::downgrade(&client.inner)));
        }
        Ok(client)
    }

    /// `GET key`: the value, or `None` if absent.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.execute(Kind::Read, key, &[b"GET", key]).await? {
            Value::Bulk(value) => Ok(Some(value)),
            Value::Nil => Ok(None),
            other => Err(Error::Protocol(format!("GET answered {other:?}"))),
        }
    }

    /// `SET key value`.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        match self
            .execute(Kind::Write, key, &[b"SET", key, value])
            .await?
        {
            Value::Simple(_) => Ok(()),
            other => Err(Error::Protocol(format!("SET answered {other:?}"))),
        }
    }

    /// `DEL key`: how many keys were deleted (0 or 1).
    pub async fn del(&self, key: &[u8]) -> Result<i64, Error> {
        match self.execute(Kind::Write, key, &[b"DEL", key]).await? {
            Value::Integer(count) => Ok(count),
            other => Err(Error::Protocol(format!("DEL answered {other:?}"))),
        }
    }

    /// `KV.GET key [LEVEL level]`: the node's reply (values, context, acks).
    pub async fn kv_get(&self, key: &[u8], level: Option<&str>) -> Result<Value, Error> {
        let mut args: Vec<&[u8]> = vec![b"KV.GET", key];
        if let Some(level) = level {
            args.extend([b"LEVEL".as_slice(), level.as_bytes()]);
        }
        self.execute(Kind::Read, key, &args).await
    }

    /// `KV.PUT key value [LEVEL level] [CONTEXT context]`: the node's reply (version, acks).
    pub async fn kv_put(
        &self,
        key: &[u8],
        value: &[u8],
        level: Option<&str>,
        context: Option<&[u8]>,
    ) -> Result<Value, Error> {
        let mut args: Vec<&[u8]> = vec![b"KV.PUT", key, value];
        if let Some(level) = level {
            args.extend([b"LEVEL".as_slice(), level.as_bytes()]);
        }
        if let Some(context) = context {
            args.extend([b"CONTEXT".as_slice(), context]);
        }
        self.execute(Kind::Write, key, &args).await
    }

    /// `KV.DEL key [LEVEL level] [CONTEXT context]`.
    pub async fn kv_del(
        &self,
        key: &[u8],
        level: Option<&str>,
        context: Option<&[u8]>,
    ) -> Result<Value, Error> {
        let mut args: Vec<&[u8]> = vec![b"KV.DEL", key];
        if let Some(level) = level {
            args.extend([b"LEVEL".as_slice(), level.as_bytes()]);
        }
        if let Some(context) = context {
            args.extend([b"CONTEXT".as_slice(), context]);
        }
        self.execute(Kind::Write, key, &args).await
    }

    /// The ring held now.
    pub fn ring(&self) -> Arc<RingMap> {
        self.inner.ring()
    }

    /// The addresses a request for `key` would try, in order.
    pub fn candidates(&self, key: &[u8]) -> Vec<String> {
        self.inner.candidates(key)
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            failovers: self.inner.failovers.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
            ring_refreshes: self.inner.ring_refreshes.load(Ordering::Relaxed),
        }
    }

    /// Fetches the ring now (from the known nodes, then the seeds); returns the version held
    /// afterwards.
    pub async fn refresh_ring(&self) -> Result<i64, Error> {
        self.inner.refresh().await
    }

    async fn execute(&self, kind: Kind, key: &[u8], args: &[&[u8]]) -> Result<Value, Error> {
        let mut request = Vec::with_capacity(32 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        resp::encode_command(args, &mut request);
        let inner = &self.inner;
        let mut tried = Vec::new();
        let mut last: Option<Error> = None;
        for address in inner.candidates(key) {
            if !tried.is_empty() {
                match &last {
                    Some(Error::Unreachable { .. }) | None => {
                        inner.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {
                        inner.retries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            tried.push(address.clone());
            match inner.attempt(&address, &request).await {
                Attempt::Reply(Value::Error(text)) => {
                    let error = Error::from_reply(&text);
                    if matches!(error, Error::ClusterDown(_)) {
                        inner.want_refresh();
                    }
                    if !error.worth_another_replica() {
                        return Err(error);
                    }
                    last = Some(error);
                }
                Attempt::Reply(value) => return Ok(value),
                Attempt::NotSent(why) => {
                    inner.want_refresh();
                    last = Some(Error::Unreachable {
                        tried: tried.clone(),
                        last: why,
                    });
                }
                Attempt::Lost(why) => {
                    inner.want_refresh();
                    if kind == Kind::Write {
                        return Err(Error::Indeterminate(format!(
                            "{address}: {why} after the write was sent"
                        )));
                    }
                    last = Some(Error::Unreachable {
                        tried: tried.clone(),
                        last: why,
                    });
                }
            }
        }
        Err(match last {
            Some(Error::Unreachable { last, .. }) => Error::Unreachable { tried, last },
            Some(error) => error,
            None => Error::Unreachable {
                tried,
                last: "no node address known".into(),
            },
        })
    }
}

impl Inner {
    fn ring(&self) -> Arc<RingMap> {
        Arc::clone(&self.ring.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Where a request for `key` goes, in order: the key's replicas (token-aware) or the first
    /// seed (coordinator), then every other known node, each once. Any node coordinates, so the
    /// tail keeps a request alive when every replica is unreachable from here.
    fn candidates(&self, key: &[u8]) -> Vec<String> {
        let ring = self.ring();
        let mut out: Vec<String> = Vec::new();
        let mut add = |address: &str| {
            if !out.iter().any(|a| a == address) {
                out.push(address.to_string());
            }
        };
        if self.config.routing == Routing::TokenAware {
            for replica in ring.replicas(key) {
                if let Some(address) = &replica.address {
                    add(address);
                }
            }
        }
        for seed in &self.config.seeds {
            add(seed);
        }
        for address in ring.addresses().values() {
            add(address);
        }
        out
    }

    /// Sends `request` to `address` over a pooled (or new) connection and reads the reply.
    async fn attempt(&self, address: &str, request: &[u8]) -> Attempt {
        let mut connection = match self.connection(address).await {
            Ok(connection) => connection,
            Err(e) => return Attempt::NotSent(format!("{address}: {e}")),
        };
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        match connection.send(request).await {
            Ok(()) => {}
            Err((false, e)) => return Attempt::NotSent(format!("{address}: {e}")),
            Err((true, e)) => return Attempt::Lost(format!("{address}: {e}")),
        }
        match tokio::time::timeout(timeout, connection.receive()).await {
            Ok(Ok(value)) => {
                self.put_back(address, connection);
                Attempt::Reply(value)
            }
            Ok(Err(e)) => Attempt::Lost(format!("{address}: {e}")),
            Err(_) => Attempt::Lost(format!(
                "{address}: no reply within {} ms",
                self.config.request_timeout_ms
            )),
        }
    }

    /// An idle pooled connection that still looks open, or a new one.
    async fn connection(&self, address: &str) -> io::Result<Connection> {
        loop {
            let idle = self
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(address)
                .and_then(Vec::pop);
            match idle {
                Some(connection) if connection.looks_open() => return Ok(connection),
                Some(_closed) => continue,
                None => break,
            }
        }
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                Ok(Connection {
                    stream,
                    buffer: Vec::with_capacity(4096),
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {} ms", self.config.connect_timeout_ms),
            )),
        }
    }

    fn put_back(&self, address: &str, connection: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(address.to_string()).or_default();
        if idle.len() < self.config.idle_connections_per_node_max {
            idle.push(connection);
        }
    }

    /// Starts a background refresh unless one is running.
    fn want_refresh(self: &Arc<Self>) {
        if !self.refreshing.load(Ordering::Relaxed) {
            let inner = Arc::clone(self);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = inner.refresh().await;
                });
            }
        }
    }

    async fn refresh(self: &Arc<Self>) -> Result<i64, Error> {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            // Another refresh is under way; its result will be the ring held.
            return Ok(self.ring().version);
        }
        let result = self.fetch_ring().await;
        self.refreshing.store(false, Ordering::Release);
        result
    }

    async fn fetch_ring(&self) -> Result<i64, Error> {
        let held = self.ring();
        let mut sources: Vec<String> = held.addresses().into_values().collect();
        for seed in &self.config.seeds {
            if !sources.contains(seed) {
                sources.push(seed.clone());
            }
        }
        let mut request = Vec::new();
        resp::encode_command(&[b"KV.RING"], &mut request);
        let mut last = String::from("no seed configured");
        for address in &sources {
            let reply = match self.attempt(address, &request).await {
                Attempt::Reply(reply) => reply,
                Attempt::NotSent(why) | Attempt::Lost(why) => {
                    last = why;
                    continue;
                }
            };
            if let Value::Error(text) = &reply {
                last = format!("{address}: {text}");
                continue;
            }
            let host = address
                .rsplit_once(':')
                .map_or(address.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            match RingMap::parse(&reply, host) {
                Ok(map) => {
                    let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
                    if ring.is_empty() || map.version >= ring.version {
                        *ring = Arc::new(map);
                        self.ring_refreshes.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(ring.version);
                }
                Err(why) => last = format!("{address}: {why}"),
            }
        }
        Err(Error::Unreachable {
            tried: sources,
            last,
        })
    }
}

async fn refresh_periodically(inner: Weak<Inner>) {
    let Some(period) = inner
        .upgrade()
        .map(|i| Duration::from_millis(i.config.refresh_interval_ms))
    else {
        return;
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let _ = inner.refresh().await;
    }
}

/// One connection to a node: the stream and the bytes read but not yet decoded.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// False if the node has closed the connection (or sent bytes nobody asked for) while it
    /// sat in the pool: sending on it would fail after the fact, so it is dropped first.
    fn looks_open(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // The socket is non-blocking (tokio's), so this asks the kernel now and never waits.
        match socket2::SockRef::from(&self.stream).peek(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// Writes `request`. On failure, whether any byte may have reached the node.
    async fn send(&mut self, request: &[u8]) -> Result<(), (bool, io::Error)> {
        let mut written = 0;
        while written < request.len() {
            match self.stream.write(&request[written..]).await {
                Ok(0) => return Err((written > 0, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) => return Err((written > 0, e)),
            }
        }
        Ok(())
    }

    /// Reads one reply.
    async fn receive(&mut self) -> io::Result<Value> {
        loop {
            match resp::decode(&self.buffer) {
                Ok(Some((value, used))) => {
                    self.buffer.drain(..used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.0)),
            }
            let mut chunk = [0u8; 16 << 10];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}
