#!/usr/bin/env bash
# ringkv-lsm vs fjall vs RocksDB (db_bench), side by side on one disk: see benches/README.md.
#
#   benches/engine-compare.sh [--rounds N] [--scale F | --size-gb F] [--sets 1k,node,10k] [--dir DIR]
#                             [--engines ours,fjall,rocksdb]
#
# Installs Debian's rocksdb-tools (db_bench) if missing, builds `engine-compare` in release mode
# and runs it. Data goes to DIR (default: target/engine-compare under the repository), the same
# disk for every engine. Until `benches` is listed in the root workspace members, the package is
# built from a scratch workspace that points at this tree (nothing in the tree is changed).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target

if ! command -v db_bench >/dev/null 2>&1; then
    echo "engine-compare: installing rocksdb-tools (db_bench)" >&2
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq rocksdb-tools >&2
fi

if cargo metadata --no-deps --format-version 1 --manifest-path "$root/Cargo.toml" 2>/dev/null \
    | grep -q '"name":"ringkv-benches"'; then
    cargo build --release --manifest-path "$root/Cargo.toml" -p ringkv-benches --bin engine-compare >&2
else
    # Not yet a workspace member: a scratch workspace holding a copy of the manifest, the
    # sources linked, the lock file copied (same dependency versions as the tree).
    scratch=$target/engine-compare-workspace
    mkdir -p "$scratch/benches"
    sed -e "s#path = \"../lsm\"#path = \"$root/lsm\"#" \
        -e '/^\[lints\]/,$d' "$root/benches/Cargo.toml" > "$scratch/benches/Cargo.toml"
    ln -sfn "$root/benches/src" "$scratch/benches/src"
    cat > "$scratch/Cargo.toml" <<EOF
[workspace]
resolver = "2"
members = ["benches"]

[profile.release]
debug = 1
codegen-units = 4
EOF
    cp "$root/Cargo.lock" "$scratch/Cargo.lock"
    cargo build --release --manifest-path "$scratch/Cargo.toml" -p ringkv-benches --bin engine-compare >&2
fi

cd "$root"
exec "$target/release/engine-compare" --dir "$root/target/engine-compare" "$@"
