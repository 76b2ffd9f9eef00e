#!/usr/bin/env bash
# The Jepsen-style harness over real ringkv-node processes (node/tests/jepsen.rs), in one command.
#
#   scripts/jepsen.sh              # the CI length: 40 s of faults, about 1-2 minutes in all
#   scripts/jepsen.sh 600          # the long run: 10 minutes of faults
#   scripts/jepsen.sh 600 7        # ... with nemesis/client seed 7
#
# Run as root for the full-disk fault (a tmpfs is mounted on node 2's data directory and
# unmounted afterwards); without root that fault is skipped and the summary says so. The run
# directory (history.log, linearizable.history, nemesis.log, summary.txt, every node's stderr) is
# printed first and kept (RINGKV_JEPSEN_KEEP=1); `sim check-history --model register
# DIR/linearizable.history` re-checks the linearizable history.
set -euo pipefail
cd "$(dirname "$0")/.."
export RINGKV_JEPSEN_SECONDS=${1:-${RINGKV_JEPSEN_SECONDS:-40}}
export RINGKV_JEPSEN_SEED=${2:-${RINGKV_JEPSEN_SEED:-1}}
export RINGKV_JEPSEN_KEEP=1
exec cargo test --release -p node --test jepsen -- --nocapture
