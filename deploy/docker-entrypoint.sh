#!/bin/sh
# ringkv container entrypoint: derives this node's id, writes its TOML configuration from
# RINGKV_* environment variables, then execs ringkv-node (which then runs as PID 1 and receives
# the SIGTERM that drains it). Arguments are passed on to ringkv-node, so
# `docker-entrypoint.sh --check-config` validates the generated file and exits.
#
# Every node of a cluster must compute the same initial ring, so every value that describes
# another node (its id, address, datacenter, rack) is derived from settings all nodes share
# (RINGKV_CLUSTER_SIZE, RINGKV_PEER_ADDR_TEMPLATE or RINGKV_PEERS, RINGKV_DATACENTER,
# RINGKV_RACK_TEMPLATE), never from anything only this node knows.
#
# Environment (defaults in brackets):
#   RINGKV_NODE_ID            this node's id; unset: the ordinal after the last '-' of the host
#                             name (StatefulSet pod `ringkv-2`, Compose hostname `ringkv-2` -> 2)
#   RINGKV_HOSTNAME           the host name to take the ordinal from [$HOSTNAME, else uname -n]
#   RINGKV_CLUSTER_SIZE       nodes 0..SIZE-1 of the initial ring, addressed by
#   RINGKV_PEER_ADDR_TEMPLATE a host:port with {id} for the node id,
#                             e.g. ringkv-{id}.ringkv.default.svc.cluster.local:7380
#   RINGKV_SPARE_COUNT        nodes SIZE..SIZE+COUNT-1 are spares: every node knows their
#                             addresses, they start outside the ring, and an operator adds each
#                             with `ringkv admin join ID` [0]
#   RINGKV_PEERS              instead of the three above: id=host:port,... (all initial members;
#                             this node's own entry is skipped)
#   RINGKV_DATACENTER         every node's datacenter [dc1]
#   RINGKV_RACK_TEMPLATE      every node's rack, {id} replaced by its id [rack1]
#   RINGKV_CLIENT_LISTEN      [0.0.0.0:6380]
#   RINGKV_PEER_LISTEN        [0.0.0.0:7380]
#   RINGKV_HTTP_LISTEN        admin HTTP: /health, /metrics, the status page [0.0.0.0:9380]
#   RINGKV_DATA_DIR           [/var/lib/ringkv]
#   RINGKV_CLUSTER_NAME       [ringkv]
#   RINGKV_CLUSTER_SECRET_FILE  required with peers [/run/secrets/ringkv/cluster-secret]
#   RINGKV_PASSWORD_FILE      client password (AUTH); needed on a non-loopback client port
#                             unless RINGKV_PROTECTED_MODE=false [/run/secrets/ringkv/password
#                             if that file exists]
#   RINGKV_PROTECTED_MODE     true|false [unset: the node's default, true]
#   RINGKV_ADMIN_TOKEN_FILE   admin token for POST /admin/* [/run/secrets/ringkv/admin-token if
#                             that file exists, else the node creates <data_dir>/admin.token]
#   RINGKV_N, RINGKV_R, RINGKV_W  replication [the node's defaults: n = min(3, members)]
#   RINGKV_CONFIG             where the TOML is written [${TMPDIR:-/tmp}/ringkv-node.toml]
#   RINGKV_NODE_BINARY        [ringkv-node, from PATH]
set -eu

die() {
  echo "docker-entrypoint: $*" >&2
  exit 64
}

# A TOML basic string holding $1. Control characters cannot be written safely and are refused.
toml_string() {
  case "$1" in
    *[[:cntrl:]]*) die "a value holds a control character: $(printf '%s' "$1" | od -c | head -1)" ;;
  esac
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# $1 if it is a node id the node accepts (a decimal u32), else dies naming $2.
node_id() {
  case "$1" in
    '' | *[!0-9]*) die "$2: '$1' is not a node id (a number from 0 to 4294967295)" ;;
  esac
  [ "${#1}" -le 10 ] || die "$2: '$1' is too large for a node id (at most 4294967295)"
  # Ten digits fit the shell's 64-bit arithmetic; leading zeros would read as octal.
  id=$(printf '%s' "$1" | sed 's/^0*\(.\)/\1/')
  [ "$id" -le 4294967295 ] || die "$2: '$1' is too large for a node id (at most 4294967295)"
  printf '%s' "$id"
}

boolean() {
  case "$1" in
    true | false) printf '%s' "$1" ;;
    *) die "$2 must be true or false, not '$1'" ;;
  esac
}

count() {
  case "$1" in
    '' | *[!0-9]*) die "$2 must be a number, not '$1'" ;;
  esac
  printf '%s' "$1"
}

if [ -n "${RINGKV_NODE_ID:-}" ]; then
  self=$(node_id "$RINGKV_NODE_ID" RINGKV_NODE_ID)
else
  host=${RINGKV_HOSTNAME:-${HOSTNAME:-$(uname -n)}}
  case "$host" in
    *-*) ;;
    *) die "cannot derive a node id from host name '$host' (no '-ORDINAL' suffix): set RINGKV_NODE_ID" ;;
  esac
  self=$(node_id "${host##*-}" "the ordinal of host name '$host'")
fi

datacenter=${RINGKV_DATACENTER:-dc1}
rack_template=${RINGKV_RACK_TEMPLATE:-rack1}
rack_of() {
  printf '%s' "$rack_template" | sed "s/{id}/$1/g"
}

# The other nodes, one "id initial_member host:port" per line.
peers=""
if [ -n "${RINGKV_PEERS:-}" ]; then
  [ -z "${RINGKV_CLUSTER_SIZE:-}" ] || die "set RINGKV_PEERS or RINGKV_CLUSTER_SIZE, not both"
  old_ifs=$IFS
  IFS=','
  for entry in $RINGKV_PEERS; do
    IFS=$old_ifs
    case "$entry" in
      *=*) ;;
      *) die "RINGKV_PEERS: '$entry' is not id=host:port" ;;
    esac
    id=$(node_id "${entry%%=*}" "RINGKV_PEERS")
    [ "$id" != "$self" ] || continue
    peers="$peers$id true ${entry#*=}
"
  done
  IFS=$old_ifs
elif [ -n "${RINGKV_CLUSTER_SIZE:-}" ]; then
  size=$(count "$RINGKV_CLUSTER_SIZE" RINGKV_CLUSTER_SIZE)
  [ "$size" -ge 1 ] && [ "$size" -le 1000 ] || die "RINGKV_CLUSTER_SIZE must be 1 to 1000"
  spares=$(count "${RINGKV_SPARE_COUNT:-0}" RINGKV_SPARE_COUNT)
  [ "$spares" -le 1000 ] || die "RINGKV_SPARE_COUNT must be 0 to 1000"
  nodes=$((size + spares))
  [ "$self" -lt "$nodes" ] 2>/dev/null \
    || die "node id $self is outside the cluster of RINGKV_CLUSTER_SIZE=$size and RINGKV_SPARE_COUNT=$spares (ids 0 to $((nodes - 1)))"
  template=${RINGKV_PEER_ADDR_TEMPLATE:-}
  [ -n "$template" ] || die "RINGKV_CLUSTER_SIZE needs RINGKV_PEER_ADDR_TEMPLATE: host:port with {id}"
  case "$template" in
    *'{id}'*) ;;
    *) die "RINGKV_PEER_ADDR_TEMPLATE '$template' has no {id}" ;;
  esac
  i=0
  while [ "$i" -lt "$nodes" ]; do
    if [ "$i" != "$self" ]; then
      peers="$peers$i $([ "$i" -lt "$size" ] && echo true || echo false) $(printf '%s' "$template" | sed "s/{id}/$i/g")
"
    fi
    i=$((i + 1))
  done
fi

secrets=/run/secrets/ringkv
config=${RINGKV_CONFIG:-${TMPDIR:-/tmp}/ringkv-node.toml}

# Every value is checked and quoted here, in plain assignments, so a bad one stops the script
# (set -e) before anything is written; a failure inside `echo "$(...)"` would not.
toml="# Written by docker-entrypoint.sh from RINGKV_* variables; rewritten at every start.
node_id = $self"
add() {
  toml="$toml
$1"
}
if [ -n "${nodes:-}" ] && [ "$self" -ge "$size" ]; then
  # A spare: known to every node, outside the initial ring until joined.
  add "initial_member = false"
fi
value=$(toml_string "$datacenter")
add "datacenter = $value"
value=$(toml_string "$(rack_of "$self")")
add "rack = $value"
value=$(toml_string "${RINGKV_CLIENT_LISTEN:-0.0.0.0:6380}")
add "client_listen = $value"
value=$(toml_string "${RINGKV_PEER_LISTEN:-0.0.0.0:7380}")
add "peer_listen = $value"
value=$(toml_string "${RINGKV_HTTP_LISTEN:-0.0.0.0:9380}")
add "http_listen = $value"
value=$(toml_string "${RINGKV_DATA_DIR:-/var/lib/ringkv}")
add "data_dir = $value"
value=$(toml_string "${RINGKV_CLUSTER_NAME:-ringkv}")
add "cluster_name = $value"
if [ -n "$peers" ] || [ -n "${RINGKV_CLUSTER_SECRET_FILE:-}" ]; then
  value=$(toml_string "${RINGKV_CLUSTER_SECRET_FILE:-$secrets/cluster-secret}")
  add "cluster_secret_file = $value"
fi
password_file=${RINGKV_PASSWORD_FILE:-}
if [ -z "$password_file" ] && [ -f "$secrets/password" ]; then
  password_file=$secrets/password
fi
if [ -n "$password_file" ]; then
  value=$(toml_string "$password_file")
  add "password_file = $value"
fi
if [ -n "${RINGKV_PROTECTED_MODE:-}" ]; then
  value=$(boolean "$RINGKV_PROTECTED_MODE" RINGKV_PROTECTED_MODE)
  add "protected_mode = $value"
fi
add "peers = ["
while read -r id initial addr; do
  [ -n "$id" ] || continue
  quoted_addr=$(toml_string "$addr")
  quoted_dc=$(toml_string "$datacenter")
  quoted_rack=$(toml_string "$(rack_of "$id")")
  add "  { id = $id, addr = $quoted_addr, datacenter = $quoted_dc, rack = $quoted_rack, initial_member = $initial },"
done <<PEERS
$peers
PEERS
add "]"
token_file=${RINGKV_ADMIN_TOKEN_FILE:-}
if [ -z "$token_file" ] && [ -f "$secrets/admin-token" ]; then
  token_file=$secrets/admin-token
fi
if [ -n "$token_file" ]; then
  value=$(toml_string "$token_file")
  add "[admin]"
  add "token_file = $value"
fi
if [ -n "${RINGKV_N:-}${RINGKV_R:-}${RINGKV_W:-}" ]; then
  add "[replication]"
  if [ -n "${RINGKV_N:-}" ]; then
    value=$(count "$RINGKV_N" RINGKV_N)
    add "n = $value"
  fi
  if [ -n "${RINGKV_R:-}" ]; then
    value=$(count "$RINGKV_R" RINGKV_R)
    add "r = $value"
  fi
  if [ -n "${RINGKV_W:-}" ]; then
    value=$(count "$RINGKV_W" RINGKV_W)
    add "w = $value"
  fi
fi

printf '%s\n' "$toml" > "$config.tmp"
mv "$config.tmp" "$config"

exec "${RINGKV_NODE_BINARY:-ringkv-node}" --config "$config" "$@"
