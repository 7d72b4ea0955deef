#!/usr/bin/env bash
# Install (if needed) and start carehare's local 3-node RabbitMQ test cluster on 127.0.0.1:
#   carehare-c1@localhost  amqp 127.0.0.1:5781  dist 25781
#   carehare-c2@localhost  amqp 127.0.0.1:5782  dist 25782
#   carehare-c3@localhost  amqp 127.0.0.1:5783  dist 25783
# Each node is node.sh's node cN (started through cluster-node.sh); c2 and c3 are joined
# to c1. Idempotent: running nodes are reused, stopped ones started (in parallel), and a
# node not yet in the cluster is joined. Users, vhosts and permissions (the same as the
# test broker's, without its EXTERNAL user) are (re)applied every time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER_NODE=1
# shellcheck source-path=SCRIPTDIR source=cluster-env.sh
source "$here/cluster-env.sh"

log() { printf 'cluster-start.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

base="$CAREHARE_CLUSTER_DIR"
[[ "$base" == /* ]] || die "CAREHARE_CLUSTER_DIR must be an absolute path (got '$base')"
[[ "$base" =~ ^[A-Za-z0-9_./-]+$ ]] || die "CAREHARE_CLUSTER_DIR may only contain [A-Za-z0-9_./-]: '$base'"

"$here/install.sh"
mkdir -p "$base"
exec 9>"$base/.lock"
flock -w 600 9 || die "timed out waiting for another cluster-start.sh/cluster-stop.sh (lock $base/.lock)"

started_at=$SECONDS
ctl() { # node seconds tool args...
    local n="$1" secs="$2"
    shift 2
    (
        CLUSTER_NODE="$n"
        # shellcheck source-path=SCRIPTDIR source=cluster-env.sh
        source "$here/cluster-env.sh"
        CAREHARE_CLI_TIMEOUT="$secs" carehare_cluster_cli "$@" 9>&-
    )
}

# ---- start the three nodes in parallel ----
pids=()
for n in 1 2 3; do
    "$here/cluster-node.sh" start "$n" 9>&- &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
((failed == 0)) || die "a node did not start (see above); 'test-server/cluster-stop.sh && rm -rf $base' gives a clean slate"

# ---- join c2 and c3 to c1 ----
in_cluster() { # node: does node N's view of the cluster include c1?
    ctl "$1" 30 rabbitmqctl -q eval 'rabbit_nodes:all().' 2>/dev/null | grep -q "'carehare-c1@localhost'"
}
for n in 2 3; do
    if in_cluster "$n"; then continue; fi
    log "joining carehare-c$n@localhost to carehare-c1@localhost"
    ctl "$n" 60 rabbitmqctl -q stop_app >/dev/null
    if ! ctl "$n" 120 rabbitmqctl -q join_cluster carehare-c1@localhost >/dev/null; then
        # e.g. it was clustered with an older c1 whose data was wiped: start it afresh.
        log "join failed; resetting carehare-c$n@localhost and joining again"
        ctl "$n" 60 rabbitmqctl -q reset >/dev/null
        ctl "$n" 120 rabbitmqctl -q join_cluster carehare-c1@localhost >/dev/null ||
            die "carehare-c$n@localhost could not join carehare-c1@localhost"
    fi
    ctl "$n" 120 rabbitmqctl -q start_app >/dev/null
done
running="$(ctl 1 30 rabbitmqctl -q eval 'length(rabbit_nodes:all_running()).' 2>/dev/null | tr -dc '0-9')"
[[ "$running" == 3 ]] || die "the cluster has ${running:-?} running nodes, expected 3"

# ---- users, vhosts, permissions (cluster-wide: import on c1) ----
"$here/node.sh" users c1 9>&-

log "cluster up in $((SECONDS - started_at))s: amqp://127.0.0.1:5781 :5782 :5783 (carehare-c1/c2/c3@localhost)"
log "  users carehare/carehare-pw, guest/guest; vhosts / and carehare-test"
