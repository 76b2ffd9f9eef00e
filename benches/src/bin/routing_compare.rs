//! Token-aware routing against coordinator-hop routing on a 3-node local cluster, in one run.
//!
//! Starts `ringkv-node` × 3 on loopback (`ringkv_node::local_cluster`, fsync before ack, the
//! cluster defaults), preloads the keys, then runs interleaved rounds of the same closed-loop
//! workload through `ringkv-client` twice: once routed to the first replica of each key
//! (`Routing::TokenAware`, seeds = every node) and once always to node 1, which coordinates
//! every request (`Routing::Coordinator`: what a plain Redis client dialling one node does).
//! Same client code, same connection pooling; only the routing differs. Prints each round and
//! the medians, and the ratios token-aware ÷ coordinator (throughput: higher is better for
//! token-aware above 1; latency: lower is better for token-aware below 1). A report, never a
//! pass/fail.
//!
//! Run: `cargo build --release -p node -p ringkv-benches && target/release/routing-compare`
//! (see benches/README.md for the flags).

#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark aborts on any error")]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_client::{Client, ClientConfig, Routing};
use ringkv_node::local_cluster::{Cluster, ClusterPlan};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Options {
    rounds: usize,
    seconds: u64,
    clients: usize,
    keys: usize,
    value_bytes: usize,
    n: u8,
    base_port: u16,
    dir: PathBuf,
    node_binary: PathBuf,
}

fn options() -> Options {
    let exe = std::env::current_exe().unwrap();
    let mut o = Options {
        rounds: 3,
        seconds: 5,
        clients: 32,
        keys: 10_000,
        value_bytes: 100,
        n: 3,
        base_port: 17_400,
        dir: std::env::temp_dir().join("ringkv-routing-compare"),
        node_binary: exe.with_file_name("ringkv-node"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rounds" => o.rounds = value.parse().unwrap(),
            "--seconds" => o.seconds = value.parse().unwrap(),
            "--clients" => o.clients = value.parse().unwrap(),
            "--keys" => o.keys = value.parse().unwrap(),
            "--value-bytes" => o.value_bytes = value.parse().unwrap(),
            "--n" => o.n = value.parse().unwrap(),
            "--base-port" => o.base_port = value.parse().unwrap(),
            "--dir" => o.dir = PathBuf::from(value),
            "--node-binary" => o.node_binary = PathBuf::from(value),
            other => {
                eprintln!(
                    "routing-compare: unknown argument {other}; flags: --rounds --seconds \
                     --clients --keys --value-bytes --n --base-port --dir --node-binary"
                );
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

/// One phase's measurements.
#[derive(Clone, Debug)]
struct Phase {
    ops_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn percentile(sorted_micros: &[u32], q: f64) -> f64 {
    if sorted_micros.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_micros.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted_micros[index]) / 1000.0
}

fn key(i: usize) -> Vec<u8> {
    format!("routing:{i:08}").into_bytes()
}

/// `clients` closed loops for `seconds`: half GETs, half SETs of random keys.
async fn phase(client: &Client, o: &Options, seed: u64) -> Phase {
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let mut tasks = Vec::new();
    for task in 0..o.clients {
        let client = client.clone();
        let keys = o.keys;
        let value = vec![b'v'; o.value_bytes];
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((task as u64) << 16));
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let k = key(rng.gen_range(0..keys));
                let started = Instant::now();
                let ok = if rng.gen_bool(0.5) {
                    client.get(&k).await.is_ok()
                } else {
                    client.set(&k, &value).await.is_ok()
                };
                let micros = started.elapsed().as_micros();
                latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                errors += u64::from(!ok);
            }
            (latencies, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64().max(o.seconds as f64);
    all.sort_unstable();
    Phase {
        ops_per_second: all.len() as f64 / seconds,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        errors,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn connect(seeds: Vec<String>, routing: Routing) -> Client {
    let mut config = ClientConfig::new(seeds);
    config.routing = routing;
    Client::connect(config).await.unwrap()
}

fn main() {
    let o = options();
    let _ = std::fs::remove_dir_all(&o.dir);
    let plan = ClusterPlan {
        nodes: 3,
        dir: o.dir.clone(),
        base_port: o.base_port,
        node_binary: o.node_binary.clone(),
        n: Some(o.n),
        tls: false,
    };
    let cluster = Cluster::start(&plan).unwrap();
    let addresses: Vec<String> = (0..3u16)
        .map(|i| format!("127.0.0.1:{}", o.base_port + i))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        // Wait (bounded) until gossip has brought every node's client address to node 1.
        let mut waited = 0;
        let token_aware = loop {
            let client = connect(addresses.clone(), Routing::TokenAware).await;
            if client.ring().addresses().len() == 3 {
                break client;
            }
            waited += 1;
            assert!(waited < 200, "KV.RING never named all three nodes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let coordinator = connect(vec![addresses[0].clone()], Routing::Coordinator).await;
        let value = vec![b'v'; o.value_bytes];
        for i in 0..o.keys {
            token_aware.set(&key(i), &value).await.unwrap();
        }
        let mut rows: Vec<(Phase, Phase)> = Vec::new();
        for round in 0..o.rounds {
            let seed = round as u64 + 1;
            // Alternate which routing goes first, so neither always meets a warmer cluster.
            let (aware, hop) = if round % 2 == 0 {
                let a = phase(&token_aware, &o, seed).await;
                let h = phase(&coordinator, &o, seed).await;
                (a, h)
            } else {
                let h = phase(&coordinator, &o, seed).await;
                let a = phase(&token_aware, &o, seed).await;
                (a, h)
            };
            println!(
                "round {}: token-aware {:.0} ops/s p50 {:.2} p99 {:.2} ({} errors); \
                 coordinator {:.0} ops/s p50 {:.2} p99 {:.2} ({} errors)",
                round + 1,
                aware.ops_per_second,
                aware.p50_ms,
                aware.p99_ms,
                aware.errors,
                hop.ops_per_second,
                hop.p50_ms,
                hop.p99_ms,
                hop.errors
            );
            rows.push((aware, hop));
        }
        println!(
            "token-aware client stats: {:?}; coordinator client stats: {:?}",
            token_aware.stats(),
            coordinator.stats()
        );
        rows
    });
    drop(runtime);
    let failed = cluster.stop();
    let pick = |f: &dyn Fn(&(Phase, Phase)) -> f64| median(results.iter().map(f).collect());
    let aware_ops = pick(&|r| r.0.ops_per_second);
    let hop_ops = pick(&|r| r.1.ops_per_second);
    let aware_p50 = pick(&|r| r.0.p50_ms);
    let hop_p50 = pick(&|r| r.1.p50_ms);
    let aware_p99 = pick(&|r| r.0.p99_ms);
    let hop_p99 = pick(&|r| r.1.p99_ms);
    let ratios: Vec<String> = results
        .iter()
        .map(|r| format!("{:.2}", r.0.ops_per_second / r.1.ops_per_second))
        .collect();
    println!();
    println!(
        "3 nodes, n = {}, {} clients, {} keys, {}-byte values, 50% GET / 50% SET, {} rounds of {} s",
        o.n, o.clients, o.keys, o.value_bytes, o.rounds, o.seconds
    );
    println!("| routing | ops/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    println!("| token-aware | {aware_ops:.0} | {aware_p50:.2} | {aware_p99:.2} |");
    println!("| coordinator (node 1) | {hop_ops:.0} | {hop_p50:.2} | {hop_p99:.2} |");
    println!(
        "| token-aware ÷ coordinator | {:.2}x | {:.2}x | {:.2}x |",
        aware_ops / hop_ops,
        aware_p50 / hop_p50,
        aware_p99 / hop_p99
    );
    println!("throughput ratio per round: {}", ratios.join(", "));
    if failed > 0 {
        println!("warning: {failed} node(s) did not stop cleanly");
    }
}
