#!/usr/bin/env bash
# ringkv-node vs redis-server, side by side on loopback in the same run: see benches/README.md.
#
#   benches/node-compare.sh [--requests N] [--keys K] [--rounds R] [--dir DIR] [--node-bin PATH]
#
# Each round starts, in an order rotated from round to round, `redis-server --appendonly yes
# --appendfsync always`, a single `ringkv-node --dev` and a 3-node ringkv cluster (n = 3, r = 2,
# w = 2, every write fsynced before it is acknowledged; driven through node 1, which coordinates
# every request), each fresh, and runs the same `redis-benchmark` against each: 50 clients, -r K
# random keys (default 1,000,000: data well past the memtable), N requests per test (default
# 100,000), SET then GET with 1 KiB and 10 KiB values, and SET then GET with 1 KiB values
# pipelined 16 deep (-P 16). Prints each server's median ops/s, p50 and p99 (ms) over the rounds
# (default 3) and the ratios to redis-server against the targets of issue #15. Installs Debian's
# redis-server and redis-tools if missing. Everything it starts is stopped by PID on exit. Data
# goes to DIR (default: target/node-compare under the repository), the same disk for every server.
# --node-bin runs a ringkv-node built elsewhere (an older commit, for a before/after in one session)
# instead of building this tree's.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
requests=100000
keys=1000000
rounds=3
work=""
node_bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --dir) work=$2; shift 2 ;;
        --node-bin) node_bin=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
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

if [ -z "$node_bin" ]; then
    cargo build --release --manifest-path "$root/Cargo.toml" -p node --bin ringkv-node >&2
    node_bin=$target/release/ringkv-node
fi

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

# Runs redis-benchmark against PORT with SIZE-byte values pipelined PIPE deep; prints
# "test rps p50 p99" lines.
bench() {
    local port=$1 size=$2 pipe=$3
    redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -n "$requests" -r "$keys" -d "$size" \
        -P "$pipe" -t set,get --csv 2>/dev/null \
        | tr -d '"' | awk -F, 'NR > 1 { print $1, $2, $5, $7 }'
}

results=$work/results.txt
: > "$results"
# Runs every shape against NAME on PORT in round ROUND, appending to the results.
run_all() {
    local name=$1 port=$2 round=$3 shape size pipe
    for shape in 1024:1 10240:1 1024:16; do
        size=${shape%:*}
        pipe=${shape#*:}
        bench "$port" "$size" "$pipe" | while read -r test rps p50 p99; do
            echo "$name $size $pipe $test $round $rps $p50 $p99" >> "$results"
        done
    done
}

run_redis() {
    local round=$1 port
    port=$(free_port)
    mkdir -p "$work/redis$round"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis$round" --appendonly yes \
        --appendfsync always --save "" --daemonize no > "$work/redis$round.log" 2>&1 &
    pids+=($!)
    wait_for "$work/redis$round.log" "Ready to accept connections"
    echo "node-compare: round $round: redis-server on $port" >&2
    run_all redis "$port" "$round"
    stop_all
}

run_cluster() {
    local round=$1 id j peers
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/secret"
    local peer_ports=($(free_port) $(free_port) $(free_port))
    local client_ports=($(free_port) $(free_port) $(free_port))
    for id in 1 2 3; do
        peers=""
        for j in 1 2 3; do
            if [ "$j" != "$id" ]; then peers="$peers\"$j=127.0.0.1:${peer_ports[$((j - 1))]}\", "; fi
        done
        cat > "$work/node$id.toml" <<TOML
node_id = $id
client_listen = "127.0.0.1:${client_ports[$((id - 1))]}"
peer_listen = "127.0.0.1:${peer_ports[$((id - 1))]}"
http_listen = "off"
data_dir = "$work/cluster$round/data$id"
cluster_name = "bench"
cluster_secret_file = "$work/secret"
peers = [ ${peers%, } ]
[replication]
n = 3
r = 2
w = 2
TOML
        "$node_bin" --config "$work/node$id.toml" --log warn > "$work/node$id.out" 2> "$work/node$id.err" &
        pids+=($!)
    done
    for id in 1 2 3; do wait_for "$work/node$id.out" "connected to all peers"; done
    echo "node-compare: round $round: ringkv cluster on ${client_ports[*]}" >&2
    run_all cluster "${client_ports[0]}" "$round"
    stop_all
}

run_dev() {
    local round=$1 port
    port=$(free_port)
    "$node_bin" --dev --client-listen "127.0.0.1:$port" --http-listen off \
        --data-dir "$work/dev$round" --log warn > "$work/dev.out" 2> "$work/dev.err" &
    pids+=($!)
    wait_for "$work/dev.out" "listening for clients"
    echo "node-compare: round $round: ringkv --dev on $port" >&2
    run_all dev "$port" "$round"
    stop_all
}

servers=(redis dev cluster)
for round in $(seq 1 "$rounds"); do
    for k in 0 1 2; do
        "run_${servers[$(((round - 1 + k) % 3))]}" "$round"
    done
    rm -rf "$work/redis$round" "$work/dev$round" "$work/cluster$round"
done

# The table: each ringkv row's medians beside the redis-server medians of the same shape.
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), redis-benchmark -c 50 -n $requests -r $keys, $rounds rounds (order rotated), medians; p50/p99 in ms"
echo
python3 - "$results" <<'PY'
import statistics
import sys

rows = [line.split() for line in open(sys.argv[1]) if len(line.split()) == 8]
runs = {}
for who, size, pipe, test, _round, rps, p50, p99 in rows:
    runs.setdefault((who, size, pipe, test), []).append((float(rps), float(p50), float(p99)))


def median(key, column):
    return statistics.median(run[column] for run in runs[key])


print("| ringkv | value | pipeline | test | redis ops/s | redis p50 | redis p99 "
      "| ringkv ops/s | ringkv p50 | ringkv p99 | ratio | target |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for who in ("dev", "cluster"):
    for size, pipe in (("1024", "1"), ("10240", "1"), ("1024", "16")):
        for test in ("SET", "GET"):
            mine, peer = (who, size, pipe, test), ("redis", size, pipe, test)
            if mine not in runs or peer not in runs:
                continue
            ratio = median(mine, 0) / median(peer, 0) if median(peer, 0) > 0 else 0.0
            want = (1.0 if size == "1024" else 0.9) if who == "dev" else 0.5
            verdict = "met" if ratio >= want and median(mine, 2) < 10 else "missed"
            print(f"| {'--dev' if who == 'dev' else '3 nodes'} | {int(size) // 1024} KiB "
                  f"| -P {pipe} | {test} | {median(peer, 0):,.0f} | {median(peer, 1):.2f} "
                  f"| {median(peer, 2):.2f} | {median(mine, 0):,.0f} | {median(mine, 1):.2f} "
                  f"| {median(mine, 2):.2f} | {ratio:.2f}x "
                  f"| {verdict} (>= {want:.1f}x, p99 < 10 ms) |")
PY
