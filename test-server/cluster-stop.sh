#!/usr/bin/env bash
# Stop all three nodes of carehare's local test cluster (exit 0 if they are not running).
# `rm -rf ${CAREHARE_CLUSTER_DIR:-/tmp/carehare-cluster}` afterwards gives a clean slate.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="${CAREHARE_CLUSTER_DIR:-/tmp/carehare-cluster}"
[[ -d "$base" ]] || { echo "cluster-stop.sh: no cluster in $base" >&2; exit 0; }
exec 9>"$base/.lock"
flock -w 600 9 || { echo "cluster-stop.sh: timed out waiting for the lock $base/.lock" >&2; exit 1; }
# One after the other, c3 first: c1 goes last, so it is the node with the newest view
# of the cluster and the natural one to start first.
for n in 3 2 1; do
    "$here/cluster-node.sh" stop "$n" 9>&-
done
