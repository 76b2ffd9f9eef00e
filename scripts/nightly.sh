#!/usr/bin/env bash
# Nightly swarm sweep: runs many seeds of scenarios/swarm.toml (each seed draws its own cluster and
# fault mix), shows progress (the simulator's own bar on a terminal), and prints every failing
# seed with what it drew, which checks failed and the command that replays it. Exits 1 if any
# seed failed, 2 if the simulator itself failed on a chunk of seeds.
#
#   scripts/nightly.sh                 # 100,000 seeds from 0, one job per core
#   scripts/nightly.sh 5000            # 5,000 seeds
#   scripts/nightly.sh 5000 200000     # 5,000 seeds from seed 200,000
#
# Environment: JOBS (default: the number of cores), CHUNK (seeds per simulator call, default
# 2000), SCENARIO (default scenarios/swarm.toml), OUT (where the JSON lines go, default
# target/nightly-swarm.jsonl under the cargo target directory).
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS="${1:-100000}"
START="${2:-0}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 1)}"
CHUNK="${CHUNK:-2000}"
SCENARIO="${SCENARIO:-scenarios/swarm.toml}"
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$TARGET/nightly-swarm.jsonl}"
for value in "$SEEDS" "$START" "$JOBS" "$CHUNK"; do
  if ! [[ "$value" =~ ^[0-9]+$ ]]; then
    echo "nightly: '$value' is not a number" >&2
    exit 2
  fi
done
if [ "$SEEDS" -eq 0 ] || [ "$JOBS" -eq 0 ] || [ "$CHUNK" -eq 0 ]; then
  echo "nightly: seeds, JOBS and CHUNK must be at least 1" >&2
  exit 2
fi

cargo build --release -p sim --quiet
SIM="$TARGET/release/sim"
mkdir -p "$(dirname "$OUT")"
: >"$OUT"

END=$((START + SEEDS))
BROKEN=()
started=$(date +%s)
# Progress: on a terminal the simulator draws its own progress bar (indicatif) for the chunk it
# runs, and the failing seeds' replay lines above it; after each chunk, and in a log, one line
# says how far the sweep is.
if [ -t 2 ]; then exec 3>&2; else exec 3>/dev/null; fi

progress() {
  local done=$1 failed=$2
  local elapsed=$(($(date +%s) - started))
  local eta="?"
  if [ "$done" -gt 0 ]; then eta=$(((SEEDS - done) * elapsed / done)); fi
  printf '%d/%d seeds, %d failed, %ds elapsed, eta %ss\n' \
    "$done" "$SEEDS" "$failed" "$elapsed" "$eta" >&2
}

failed_count() {
  grep -c '"as_expected": false' "$OUT" || true
}

for ((lo = START; lo < END; lo += CHUNK)); do
  hi=$((lo + CHUNK < END ? lo + CHUNK : END))
  set +e
  "$SIM" "$SCENARIO" --seeds "$lo..$hi" --jobs "$JOBS" --json >>"$OUT" 2>&3
  status=$?
  set -e
  # 0: all as expected; 1: some seed was not (its line says so); anything else: the simulator
  # did not report every seed of the chunk.
  if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
    BROKEN+=("$lo..$hi")
  fi
  progress $((hi - START)) "$(failed_count)"
done

field() { # field NAME: a top-level string or number of each JSON line on stdin
  sed -E "s/.*\"$1\": \"?([^\",}]*)\"?.*/\1/"
}

failures=$(failed_count)
total=$(wc -l <"$OUT")
elapsed=$(($(date +%s) - started))
echo "nightly swarm: $total of $SEEDS seeds reported ($START..$END, $JOBS jobs, ${elapsed}s), $failures failed"
if [ "$failures" -gt 0 ]; then
  echo
  echo "failing seeds:"
  grep '"as_expected": false' "$OUT" | while IFS= read -r line; do
    seed=$(field seed <<<"$line")
    checks=$(sed -E 's/.*"checks": \{([^}]*)\}.*/\1/' <<<"$line" | tr -d '"' | tr ',' '\n' |
      grep ': fail' | sed -E 's/^ *//; s/: fail//' | paste -sd, -)
    drawn=$(sed -E 's/.*"drawn": \{(.*)\}\}$/\1/' <<<"$line" | tr -d '"' | sed -E 's/: /=/g; s/, / /g')
    echo "seed $seed: failed ${checks:-?}"
    echo "    drawn  $drawn"
    echo "    replay cargo run --release -p sim -- $SCENARIO --seed $seed"
  done
fi
if [ "${#BROKEN[@]}" -gt 0 ]; then
  echo
  echo "the simulator did not report every seed of: ${BROKEN[*]} (a panicking seed?); find it with"
  for range in "${BROKEN[@]}"; do
    echo "    cargo run --release -p sim -- $SCENARIO --seeds $range --jobs 1"
  done
  exit 2
fi
echo "all JSON lines: $OUT"
[ "$failures" -eq 0 ]
