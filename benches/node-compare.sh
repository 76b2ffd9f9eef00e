#!/usr/bin/env bash
# ringkv-node vs redis-server, side by side on loopback in the same run: see benches/README.md.
#
#   benches/node-compare.sh [--requests N] [--dir DIR]
#
# Starts `redis-server --appendonly yes --appendfsync always`, a 3-node ringkv cluster
# (n = 3, r = 2, w = 2, every write fsynced before it is acknowledged) and, last, a single
# `ringkv-node --dev`; runs the same `redis-benchmark` against each (50 clients, -r 100000
# random keys, 1 KiB and 10 KiB values, SET then GET, N requests per test, default 30000; the
# cluster is driven through node 1, which coordinates every request); prints ops/s, p50 and p99
# (ms) and the ratios to redis-server. Installs Debian's redis-server and redis-tools if
# missing. Everything it starts is stopped by PID on exit. Data goes to DIR (default:
# target/node-compare under the repository), the same disk for every server.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
requests=30000
work=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests=$2; shift 2 ;;
        --dir) work=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "node-compare: unknown argument $1" >&2; exit 2 ;;
    esac
done
target=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target
work=${work:-$target/node-compare}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "node-compare: installing redis-server and redis-tools" >&2
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server redis-tools >&2
fi

cargo build --release --manifest-path "$root/Cargo.toml" -p node --bin ringkv-node >&2
node_bin=$target/release/ringkv-node

rm -rf "$work"
mkdir -p "$work"
pids=()
stop_all() {
    # SIGTERM each process this script started (by PID), then wait for it.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (bounded) until FILE holds a line with TEXT.
wait_for() {
    local file=$1 text=$2
    for _ in $(seq 1 600); do
        if grep -q "$text" "$file" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "node-compare: no '$text' in $file" >&2
    cat "$file" >&2
    exit 1
}

# Runs redis-benchmark against PORT with SIZE-byte values; prints "test rps p50 p99" lines.
bench() {
    local port=$1 size=$2
    redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$requests" -r 100000 -d "$size" \
        -t set,get --csv 2>/dev/null \
        | tr -d '"' | awk -F, 'NR > 1 { print $1, $2, $5, $7 }'
}

results=$work/results.txt
: > "$results"
run_all() {
    local name=$1 port=$2
    for size in 1024 10240; do
        bench "$port" "$size" | while read -r test rps p50 p99; do
            echo "$name $size $test $rps $p50 $p99" >> "$results"
        done
    done
}

# 1. redis-server, every write fsynced.
redis_port=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --appendonly yes \
    --appendfsync always --save "" --daemonize no > "$work/redis.log" 2>&1 &
pids+=($!)
wait_for "$work/redis.log" "Ready to accept connections"
echo "node-compare: redis-server on $redis_port" >&2
run_all redis "$redis_port"
stop_all

# 2. Three ringkv nodes (n = 3, r = 2, w = 2), driven through node 1.
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/secret"
peer_ports=($(free_port) $(free_port) $(free_port))
client_ports=($(free_port) $(free_port) $(free_port))
for id in 1 2 3; do
    peers=""
    for j in 1 2 3; do
        if [ "$j" != "$id" ]; then peers="$peers\"$j=127.0.0.1:${peer_ports[$((j - 1))]}\", "; fi
    done
    cat > "$work/node$id.toml" <<EOF
node_id = $id
client_listen = "127.0.0.1:${client_ports[$((id - 1))]}"
peer_listen = "127.0.0.1:${peer_ports[$((id - 1))]}"
http_listen = "off"
data_dir = "$work/data$id"
cluster_name = "bench"
cluster_secret_file = "$work/secret"
peers = [ ${peers%, } ]
[replication]
n = 3
r = 2
w = 2
EOF
    "$node_bin" --config "$work/node$id.toml" --log warn > "$work/node$id.out" 2> "$work/node$id.err" &
    pids+=($!)
done
for id in 1 2 3; do wait_for "$work/node$id.out" "connected to all peers"; done
echo "node-compare: ringkv cluster on ${client_ports[*]}" >&2
run_all cluster "${client_ports[0]}"
stop_all

# 3. One ringkv-node --dev (n = r = w = 1, fsync before ack).
dev_port=$(free_port)
"$node_bin" --dev --client-listen "127.0.0.1:$dev_port" --http-listen off \
    --data-dir "$work/dev" --log warn > "$work/dev.out" 2> "$work/dev.err" &
pids+=($!)
wait_for "$work/dev.out" "listening for clients"
echo "node-compare: ringkv --dev on $dev_port" >&2
run_all dev "$dev_port"
stop_all

# The table: each ringkv row with the redis-server row of the same size and test.
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), redis-benchmark -c 50 -n $requests -r 100000, p50/p99 in ms"
echo
echo "| ringkv | value | test | redis ops/s | redis p50 | redis p99 | ringkv ops/s | ringkv p50 | ringkv p99 | ratio | target |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
awk '
    $1 == "redis" { rps[$2 " " $3] = $4; p50[$2 " " $3] = $5; p99[$2 " " $3] = $6; next }
    { rows[++n] = $0 }
    END {
        for (i = 1; i <= n; i++) {
            split(rows[i], f, " ")
            key = f[2] " " f[3]
            ratio = rps[key] > 0 ? f[4] / rps[key] : 0
            want = f[1] == "dev" ? 0.8 : 0.5
            verdict = (ratio >= want && f[6] < 10) ? "met" : "missed"
            printf "| %s | %s KiB | %s | %\047.0f | %.2f | %.2f | %\047.0f | %.2f | %.2f | %.2fx | %s (>= %.1fx, p99 < 10 ms) |\n",
                f[1] == "dev" ? "--dev" : "3 nodes", f[2] / 1024, f[3], rps[key], p50[key], p99[key],
                f[4], f[5], f[6], ratio, verdict, want
        }
    }' "$results"
