#!/usr/bin/env bash
# A fuzz campaign without cargo-fuzz: builds every target exactly as
# `cargo fuzz build -O --sanitizer none --debug-assertions` does (libFuzzer coverage passes,
# `--cfg fuzzing`, debug assertions and overflow checks on, no sanitizer, for throughput), runs
# each for RUNS executions (default 10^7) one at a time at low priority, then minimises what it
# found together with the stored corpus into fuzz/corpus/<target> (libFuzzer `-merge=1`, what
# `cargo fuzz cmin` runs).
#
#   fuzz/campaign.sh [TARGET ...]        # all targets if none given
#   RUNS=1000000 fuzz/campaign.sh record # a shorter run
#   MAX_SECONDS=600 fuzz/campaign.sh     # at most 10 minutes per target
#   TIMEOUT=300 fuzz/campaign.sh         # per-input hang limit (default 30 s)
#
# Needs RUSTC_BOOTSTRAP=1 on a stable toolchain (set here). Logs: $WORK/<target>.log, with
# libFuzzer's final `stat::number_of_executed_units` and `Done N runs in S second(s)`.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$FUZZ_DIR/../target}
export RUSTC_BOOTSTRAP=1
RUNS=${RUNS:-10000000}
# Optional wall-clock cap per target in seconds (0: none); whichever of RUNS or this comes first.
MAX_SECONDS=${MAX_SECONDS:-0}
# libFuzzer's per-input hang limit in seconds. Raise it on a machine busy with other work: at low
# priority a starved run can exceed 30 s on an input that replays in milliseconds.
TIMEOUT=${TIMEOUT:-30}
WORK=${WORK:-$CARGO_TARGET_DIR/fuzz-work}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
RUSTFLAGS+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
RUSTFLAGS+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export RUSTFLAGS
[ -n "${SKIP_BUILD:-}" ] || nice -n 10 cargo build --release --target "$TRIPLE" --bins --jobs 1
BIN=$CARGO_TARGET_DIR/$TRIPLE/release
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=($(ls fuzz_targets | sed 's/\.rs$//'))
fi
mkdir -p "$WORK"
for t in "${targets[@]}"; do
  mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts" "corpus/$t"
  echo "== $t: $RUNS runs (log $WORK/$t.log)"
  # The stored corpus seeds the run (read-only); new inputs go to the work corpus.
  nice -n 10 "$BIN/$t" "$WORK/$t/corpus" "corpus/$t" -runs="$RUNS" -max_total_time="$MAX_SECONDS" -rss_limit_mb=2048 \
    -max_len=4096 -timeout="$TIMEOUT" -print_final_stats=1 -artifact_prefix="$WORK/$t/artifacts/" \
    >"$WORK/$t.log" 2>&1 || { echo "$t FAILED: see $WORK/$t.log and $WORK/$t/artifacts"; continue; }
  grep -E "^Done|stat::number_of_executed_units|stat::peak_rss" "$WORK/$t.log" || true
  # Minimise the stored corpus plus what this run found into a fresh directory, then swap.
  rm -rf "$WORK/$t/min" && mkdir -p "$WORK/$t/min"
  nice -n 10 "$BIN/$t" -merge=1 -rss_limit_mb=2048 -max_len=4096 "$WORK/$t/min" "corpus/$t" "$WORK/$t/corpus" \
    >"$WORK/$t.merge.log" 2>&1
  rm -rf "corpus/$t" && cp -r "$WORK/$t/min" "corpus/$t"
  echo "$t corpus: $(ls "corpus/$t" | wc -l) files, $(du -sk "corpus/$t" | cut -f1) KiB"
done
