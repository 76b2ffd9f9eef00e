#!/bin/sh
# Writes the three secrets a cluster shares into DIR (default deploy/secrets): the cluster
# secret (peer handshake), the client password (AUTH) and the admin token (POST /admin/*), each
# 32 random hex digits. Existing files are kept, so running it twice is harmless.
#
# The directory is 0700 and is what keeps other local users out. The files themselves are 0644
# because Compose bind-mounts file secrets with their host owner and mode, and the container's
# unprivileged user (uid 10001) must be able to read them. Copy them to every machine of a
# cluster (the same three values everywhere) over a channel you trust.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
chmod 0700 "$dir"
for name in cluster-secret password admin-token; do
  if [ ! -s "$dir/$name" ]; then
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$dir/$name.tmp"
    echo >> "$dir/$name.tmp"
    chmod 0644 "$dir/$name.tmp"
    mv "$dir/$name.tmp" "$dir/$name"
    echo "wrote $dir/$name"
  fi
done
