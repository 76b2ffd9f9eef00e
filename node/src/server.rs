//! Wiring: opens storage, builds the node with gossip membership (seeded with the initial
//! ring), binds the listeners, starts the driver,
//! the client, peer and admin servers, and shuts them down in order.
//!
//! Shutdown order: stop accepting; let each client connection finish the command it is running
//! (up to the request timeout); tell the driver to finish what is in flight; final fsync and
//! memtable flush; exit.

use crate::admin::{AddressBook, MembershipView, RepairSchedule};
use crate::clients::{self, ClientShared};
use crate::clock::Clock;
use crate::config::Settings;
use crate::driver::{Driver, Input, PeerInputs, PeerQueues, INPUT_QUEUE_MAX};
use crate::http::{self, AdminState};
use crate::metrics::Metrics;
use crate::peer::{self, handshake::PeerAuth};
use rand::RngCore;
use ringkv_core::membership::{RingChange, RingLog};
use ringkv_core::ring::Member;
use ringkv_core::{Node, NodeConfig, Ring};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The line prefix printed (on stdout) once the client port accepts connections; tests and
/// scripts wait for it.
pub const LISTENING_CLIENTS: &str = "listening for clients (RESP) on";

async fn bind(field: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (`{field}`): {e}"))
}

/// The line printed once the node has connected to every configured peer.
pub const PEERS_REACHED: &str = "connected to all peers";

/// The initial ring as a static ring (for a node without gossip): every initial member added
/// in id order, exactly as [`seed_ring_log`] replays.
pub fn build_ring(settings: &Settings) -> Result<Ring, String> {
    let mut ring = Ring::new(settings.cluster.vnodes_per_node);
    for (id, location) in settings.initial_members() {
        ring.add_node(id, location)
            .map_err(|e| format!("cannot build the ring: {e}"))?;
    }
    Ok(ring)
}

/// The ring log every node of the cluster starts from: a join of each initial member, in id
/// order. Spares are not in it; every node computes the same log (and so the same version), so
/// a later operator change extends a log they all share.
pub fn seed_ring_log(settings: &Settings) -> RingLog {
    RingLog {
        vnodes_per_node: settings.cluster.vnodes_per_node,
        changes: settings
            .initial_members()
            .into_iter()
            .map(|(id, location)| RingChange::Join(Member { id, location }))
            .collect(),
    }
}

/// Runs a node until `stop` resolves, then shuts it down gracefully.
pub async fn run(settings: Settings, stop: impl Future<Output = ()>) -> Result<(), String> {
    let settings = Arc::new(settings);
    let clock = Clock::start();
    let metrics = Arc::new(Metrics::default());

    let meaning = crate::storage::StoredMeaning::of(&settings.cluster);
    let mut storage = crate::storage::open(&settings.data_dir, &settings.storage, &meaning)
        .map_err(|e| format!("cannot open the data directory (`data_dir`): {e}"))?;
    // Read (or created) before anything listens, so a bad token file stops the start.
    let admin_token = crate::admin_auth::load_or_create(&settings)?;
    let lsm = storage.lsm_mut();
    tracing::info!(
        node = %settings.node_id,
        dir = %settings.data_dir.display(),
        last_seq = lsm.last_seq(),
        tables = ?lsm.level_table_counts(),
        vlog_bytes = lsm.vlog_bytes(),
        "storage recovered"
    );
    // Restored from a snapshot: a new data epoch and a replacement's start (crate::snapshot).
    let restored = crate::snapshot::prepare_restored_start(&settings.data_dir, &mut storage)?;
    let mut node = Node::with_membership(
        NodeConfig {
            id: settings.node_id,
            cluster: settings.cluster.clone(),
            rng_seed: rand::rngs::OsRng.next_u64(),
        },
        settings.membership.clone(),
        seed_ring_log(&settings),
        storage,
        clock.now(),
    )
    .map_err(|e| format!("invalid configuration: {e}"))?;
    if restored {
        node.start_as_replacement();
        crate::snapshot::finish_restored_start(&settings.data_dir, node.storage_mut())?;
        tracing::warn!(
            actor = ?node.actor(),
            "started on data restored from a snapshot: new data epoch, ready nowhere until pulled; \
             anti-entropy brings back what was written after the snapshot"
        );
    }
    let replicas_per_key = usize::from(settings.cluster.n);
    let (view_tx, view_rx) = watch::channel(Arc::new(MembershipView::of(&node, replicas_per_key)));
    let ring_view = view_rx.clone();
    if let Some(membership) = node.membership() {
        let version = membership.ring_version();
        tracing::info!(
            members = node.ring().len(),
            changes = version.changes,
            fingerprint = version.fingerprint,
            "ring at start (the newer of the configured one and the one persisted)"
        );
    }

    // Built before anything listens; validation has already read and checked every file.
    let tls = match &settings.tls {
        Some(tls) => tls
            .runtime()
            .map_err(|e| format!("invalid configuration `tls`: {e}"))?,
        None => crate::tls::TlsRuntime {
            clients: None,
            peers: None,
        },
    };
    let client_listener = bind("client_listen", settings.client_listen).await?;
    let client_addr = client_listener
        .local_addr()
        .map_err(|e| format!("client listener: {e}"))?;
    node.set_client_address(advertised_client_address(client_addr, settings.peer_listen));
    let peer_listener = match &settings.cluster_secret {
        Some(_) => Some(bind("peer_listen", settings.peer_listen).await?),
        None => None,
    };
    let http_listener = match settings.http_listen {
        Some(addr) => Some(bind("http_listen", addr).await?),
        None => None,
    };

    let (inputs_tx, inputs_rx) = mpsc::channel(INPUT_QUEUE_MAX);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut queues = PeerQueues::new();
    let mut connected = BTreeMap::new();
    let auth = settings.cluster_secret.as_ref().map(|secret| {
        Arc::new(PeerAuth {
            node_id: settings.node_id,
            cluster_name: settings.cluster_name.clone(),
            secret: secret.clone(),
            members: settings.peers.iter().map(|p| p.id).collect(),
            meaning: meaning.clone(),
        })
    });
    let (reached_tx, mut reached_rx) = mpsc::unbounded_channel();
    let mut wake = peer::WakeSignals::new();
    if let Some(auth) = &auth {
        for peer in &settings.peers {
            let (tx, rx) = mpsc::channel(settings.limits.peer_queue_messages_max);
            let flag = Arc::new(AtomicBool::new(false));
            queues.insert(peer.id, tx);
            connected.insert(peer.id, Arc::clone(&flag));
            let signal = Arc::new(tokio::sync::Notify::new());
            wake.insert(peer.id, Arc::clone(&signal));
            crate::spawn(peer::outbound(
                peer.clone(),
                Arc::clone(auth),
                rx,
                Arc::clone(&metrics),
                flag,
                reached_tx.clone(),
                signal,
                tls.peers.as_ref().map(|p| p.connector.clone()),
            ));
        }
    }

    let request_timeout = settings.cluster.request_timeout();
    let driver = Driver::new(
        node,
        clock,
        inputs_rx,
        queues,
        Arc::clone(&metrics),
        request_timeout,
        settings.storage.clone(),
    )
    .with_membership_view(view_tx, replicas_per_key);
    let inline_inputs = driver.inline_inputs();
    let driver = crate::spawn(driver.run());

    let mut peer_addr = None;
    if let (Some(listener), Some(auth)) = (peer_listener, &auth) {
        peer_addr = listener.local_addr().ok();
        let inputs = PeerInputs {
            queue: inputs_tx.clone(),
            inline: Some(Arc::clone(&inline_inputs)),
        };
        crate::spawn(peer::serve(
            listener,
            Arc::clone(auth),
            inputs,
            Arc::clone(&metrics),
            settings.limits.peer_frame_bytes_max,
            Arc::new(wake),
            shutdown_rx.clone(),
            tls.peers.as_ref().map(|p| p.acceptor.clone()),
        ));
    }
    let mut http_addr = None;
    if let Some(listener) = http_listener {
        http_addr = listener.local_addr().ok();
        let state = Arc::new(AdminState {
            node_id: settings.node_id,
            metrics: Arc::clone(&metrics),
            connected,
            address_book: AddressBook::from_settings(&settings),
            view: view_rx,
            inputs: inputs_tx.clone(),
            repair_schedule: RepairSchedule {
                interval_ms: settings.cluster.anti_entropy_interval_ms,
                ranges_per_round: settings.cluster.anti_entropy_ranges_per_round,
            },
            token: admin_token.clone(),
            replicas: usize::from(settings.cluster.n),
            data_dir: settings.data_dir.clone(),
        });
        crate::spawn(http::serve(listener, state, shutdown_rx.clone()));
    }

    let shared = Arc::new(
        ClientShared::new(
            inputs_tx.clone(),
            Arc::clone(&metrics),
            Arc::clone(&settings),
            client_addr,
            clock,
        )
        .with_membership_view(ring_view)
        .with_inline_inputs(inline_inputs),
    );
    let clients = crate::spawn(clients::serve(
        client_listener,
        shared,
        shutdown_rx.clone(),
        request_timeout + Duration::from_secs(1),
        tls.clients.clone(),
    ));

    let id = settings.node_id;
    if let Some(addr) = peer_addr {
        let over = if tls.peers.is_some() {
            " (mutual TLS)"
        } else {
            ""
        };
        tracing::info!(%addr, tls = tls.peers.is_some(), "listening for peers");
        crate::logging::status_line(&format!(
            "ringkv-node {id} listening for peers on {addr}{over}"
        ));
    }
    if let Some(addr) = http_addr {
        tracing::info!(%addr, "admin HTTP listening (/health, /metrics, /ring, /admin/...)");
        crate::logging::status_line(&format!(
            "ringkv-node {id} admin HTTP (/health, /metrics, /ring, /admin/...) on http://{addr}"
        ));
    }
    tracing::info!(addr = %client_addr, tls = tls.clients.is_some(), "listening for clients (RESP)");
    // The address stays the last word of the line: scripts and tests take it from there.
    let over = if tls.clients.is_some() { "(TLS) " } else { "" };
    crate::logging::status_line(&format!(
        "ringkv-node {id} {over}{LISTENING_CLIENTS} {client_addr}"
    ));
    let c = &settings.cluster;
    tracing::info!(
        initial_members = settings.initial_members().len(),
        known_nodes = settings.peers.len() + 1,
        n = c.n,
        r = c.r,
        w = c.w,
        sloppy_quorum = c.sloppy_quorum,
        read_repair = c.read_repair,
        anti_entropy_interval_ms = c.anti_entropy_interval_ms,
        "node started"
    );
    if usize::from(c.r) + usize::from(c.w) <= usize::from(c.n) {
        tracing::warn!(
            n = c.n,
            r = c.r,
            w = c.w,
            "r + w <= n: a read at the default levels may miss an acknowledged write \
             (INFO replication says ringkv_read_write_overlap:no)"
        );
    }
    drop(reached_tx);
    let peers_total = settings.peers.len();
    if peers_total > 0 {
        // One line once every peer has been reached, for operators and for scripts waiting on a
        // whole cluster (each node prints it once its outbound connections are all up).
        crate::spawn(async move {
            let mut reached = std::collections::BTreeSet::new();
            while let Some(peer) = reached_rx.recv().await {
                reached.insert(peer);
                if reached.len() == peers_total {
                    tracing::info!(peers = peers_total, "connected to all peers");
                    crate::logging::status_line(&format!(
                        "ringkv-node {id} {PEERS_REACHED} ({peers_total})"
                    ));
                    return;
                }
            }
        });
    }

    // The driver and the client server run until shutdown; if either ends first (a panic), the
    // node can no longer serve, so it exits non-zero for its supervisor to restart it rather
    // than stay up answering PING (issue #17 item 1).
    let mut driver = driver;
    let mut clients = clients;
    tokio::select! {
        () = stop => {}
        ended = &mut driver => {
            let why = match ended {
                Ok(_) => "ended".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(node = %id, reason = %why, "the driver task stopped; exiting");
            let _ = shutdown_tx.send(true);
            return Err(format!("the driver task stopped unexpectedly: {why}"));
        }
        ended = &mut clients => {
            let why = match ended {
                Ok(_) => "ended".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(node = %id, reason = %why, "the client server stopped; exiting");
            let _ = shutdown_tx.send(true);
            let _ = inputs_tx.send(Input::Shutdown).await;
            let _ = driver.await;
            return Err(format!("the client server stopped unexpectedly: {why}"));
        }
    }
    tracing::info!(node = %id, "shutting down: no new connections; finishing requests in flight");
    let _ = shutdown_tx.send(true);
    let _ = clients.await;
    let _ = inputs_tx.send(Input::Shutdown).await;
    let mut storage = driver
        .await
        .map_err(|e| format!("the driver task failed: {e}"))?;
    let lsm = storage.lsm_mut();
    match lsm.poisoned() {
        Some(why) => {
            tracing::error!(node = %id, reason = %why, "stopped with poisoned storage");
            Err(format!("storage poisoned: {why}"))
        }
        None => {
            tracing::info!(
                node = %id,
                last_seq = lsm.last_seq(),
                "stopped cleanly; storage synced and flushed"
            );
            Ok(())
        }
    }
}

/// The client address gossiped for `KV.RING`: the one bound, except that a wildcard IP
/// (`0.0.0.0`, `::`) cannot be dialled, so the peer listener's IP stands in when that one is
/// specific (peers already reach this host there). With both wildcards the wildcard is sent, and
/// a client dials the host it reached the cluster by (`ringkv-client` does).
pub fn advertised_client_address(
    bound: SocketAddr,
    peer_listen: SocketAddr,
) -> ringkv_core::membership::ClientAddress {
    let ip = if bound.ip().is_unspecified() && !peer_listen.ip().is_unspecified() {
        peer_listen.ip()
    } else {
        bound.ip()
    };
    ringkv_core::membership::ClientAddress {
        host: ip.to_string(),
        port: bound.port(),
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
