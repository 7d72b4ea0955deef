#!/usr/bin/env bash
# Start, stop or kill one node of carehare's local test cluster (see cluster-start.sh).
#
#     test-server/cluster-node.sh start N   # start node N (1-3) and wait until it is up
#     test-server/cluster-node.sh stop N    # clean stop (rabbitmqctl stop); exit 0 if not running
#     test-server/cluster-node.sh kill N    # SIGKILL the node's Erlang VM (a crash)
#     test-server/cluster-node.sh status N  # exit 0 if the node answers a ping
#
# A node that was stopped rejoins the cluster by itself when started again: its cluster
# membership is in its own data directory. `start` does not join a fresh node to the
# cluster: cluster-start.sh does that.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
action="${1:-}"
CLUSTER_NODE="${2:-}"
case "$action:$CLUSTER_NODE" in
start:[123] | stop:[123] | kill:[123] | status:[123]) ;;
*)
    echo "usage: $0 start|stop|kill|status 1|2|3" >&2
    exit 2
    ;;
esac
export CLUSTER_NODE
# shellcheck source-path=SCRIPTDIR source=cluster-env.sh
source "$here/cluster-env.sh"

log() { printf 'cluster-node.sh[c%s]: %s\n' "$CLUSTER_NODE" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

STARTUP_TIMEOUT="${CAREHARE_BROKER_STARTUP_TIMEOUT:-120}"
base="$CAREHARE_CLUSTER_NODE_DIR"
launcher_pid_file="$base/launcher.pid"
node_log="$RABBITMQ_LOG_BASE/$RABBITMQ_NODENAME.log"

cli() { # seconds tool args...
    local secs="$1" tool="$2"
    shift 2
    # 9>&-: don't leak the lock fd into an epmd daemon the CLI may spawn.
    HOME="$CAREHARE_CLUSTER_HOME" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 \
        timeout "$secs" "$CAREHARE_RABBITMQ_BIN/$tool" "$@" 9>&-
}
node_up() { cli 30 rabbitmq-diagnostics -q ping --timeout 10 >/dev/null 2>&1; }
# Is $1 a live process of this node (guards against recycled pids)?
ours() {
    [[ "$1" =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -Eq 'rabbitmq-server|beam'
}
read_pid() { if [[ -s "$1" ]]; then tr -dc '0-9' <"$1"; fi; }

if [[ "$action" == status ]]; then
    node_up
    exit
fi

mkdir -p "$base" "$CAREHARE_CLUSTER_HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
chmod 0700 "$CAREHARE_CLUSTER_HOME"
exec 9>"$base/.lock"
flock -w 300 9 || die "timed out waiting for another cluster-node.sh on this node (lock $base/.lock)"

stop_node() { # $1: stop|kill
    local node_pid launcher_pid stopped=0 pid
    node_pid="$(read_pid "$RABBITMQ_PID_FILE")"
    launcher_pid="$(read_pid "$launcher_pid_file")"
    if [[ "$1" == stop ]] && node_up; then
        log "stopping $RABBITMQ_NODENAME ..."
        if [[ -n "$node_pid" ]] && ours "$node_pid"; then
            cli 120 rabbitmqctl -q stop "$RABBITMQ_PID_FILE" >/dev/null && stopped=1
        else
            cli 120 rabbitmqctl -q shutdown >/dev/null && stopped=1
        fi
        ((stopped)) || log "rabbitmqctl stop failed; falling back to signals"
    fi
    if [[ "$1" == kill ]] && [[ -n "$node_pid" ]] && ours "$node_pid"; then
        log "killing $RABBITMQ_NODENAME (pid $node_pid) with SIGKILL"
        kill -KILL "$node_pid" 2>/dev/null || true
        for _ in $(seq 1 40); do ours "$node_pid" || break; sleep 0.25; done
        stopped=1
    fi
    # The launcher script exits right behind the node.
    if ((stopped)) && [[ -n "$launcher_pid" ]]; then
        for _ in $(seq 1 20); do ours "$launcher_pid" || break; sleep 0.25; done
    fi
    for pid in "$node_pid" "$launcher_pid"; do
        if [[ -z "$pid" ]] || ! ours "$pid"; then continue; fi
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do ours "$pid" || break; sleep 0.5; done
        if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        stopped=1
    done
    rm -f "$RABBITMQ_PID_FILE" "$launcher_pid_file"
    if ((stopped)); then log "$RABBITMQ_NODENAME stopped"; else log "$RABBITMQ_NODENAME is not running"; fi
}

if [[ "$action" == stop || "$action" == kill ]]; then
    stop_node "$action"
    exit 0
fi

# ---- start ----
if node_up; then
    log "$RABBITMQ_NODENAME already running"
    exit 0
fi
if [[ -s "$RABBITMQ_PID_FILE" || -s "$launcher_pid_file" ]]; then
    stop_node stop # leftovers of a crashed node
fi
if command -v ss >/dev/null 2>&1; then
    for port in "$CAREHARE_CLUSTER_AMQP_PORT" "$RABBITMQ_DIST_PORT"; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            ss -Hltnp "sport = :$port" >&2 || true
            die "port $port is already in use; stop whatever holds it first"
        fi
    done
fi

# The cluster's shared Erlang cookie (node <-> node and CLI <-> node).
if [[ ! -s "$CAREHARE_CLUSTER_COOKIE_FILE" ]]; then
    # The first writer wins (mv -n), so nodes started in parallel agree.
    (umask 077 && openssl rand -hex 20 | tr 'a-f' 'A-F' >"$CAREHARE_CLUSTER_COOKIE_FILE.tmp.$$")
    mv -n "$CAREHARE_CLUSTER_COOKIE_FILE.tmp.$$" "$CAREHARE_CLUSTER_COOKIE_FILE" 2>/dev/null || true
    rm -f "$CAREHARE_CLUSTER_COOKIE_FILE.tmp.$$"
fi
if ! cmp -s "$CAREHARE_CLUSTER_COOKIE_FILE" "$CAREHARE_CLUSTER_HOME/.erlang.cookie" 2>/dev/null; then
    rm -f "$CAREHARE_CLUSTER_HOME/.erlang.cookie"
    tr -d '\n' <"$CAREHARE_CLUSTER_COOKIE_FILE" >"$CAREHARE_CLUSTER_HOME/.erlang.cookie"
    chmod 0400 "$CAREHARE_CLUSTER_HOME/.erlang.cookie"
fi

cat >"$RABBITMQ_CONFIG_FILE" <<CONF
# Generated by carehare test-server/cluster-node.sh -- edits are overwritten.
listeners.tcp.1 = 127.0.0.1:$CAREHARE_CLUSTER_AMQP_PORT
listeners.ssl = none
loopback_users = none
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.8
# Nodes are stopped on purpose in tests: a restarted node must not wait long for peers.
mnesia_table_loading_retry_timeout = 10000
mnesia_table_loading_retry_limit = 30
CONF
echo '[].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
echo '[].' >"$RABBITMQ_ADVANCED_CONFIG_FILE"
echo '# Generated by carehare test-server/cluster-node.sh: keeps /etc/rabbitmq/rabbitmq-env.conf out.' >"$RABBITMQ_CONF_ENV_FILE"

log_size() { if [[ -f "$1" ]]; then stat -c %s "$1"; else echo 0; fi; }
node_log_offset="$(log_size "$node_log")"
started_at=$SECONDS
log "starting $RABBITMQ_NODENAME (amqp 127.0.0.1:$CAREHARE_CLUSTER_AMQP_PORT, dir $base) ..."
cd "$base"
echo "==== $(date -u '+%Y-%m-%dT%H:%M:%SZ') cluster-node.sh: starting $RABBITMQ_NODENAME" >>"$CAREHARE_CLUSTER_STDOUT_LOG"
stdout_log_offset="$(log_size "$CAREHARE_CLUSTER_STDOUT_LOG")"
# The node outlives this script: it must not inherit any descriptor beyond
# stdio. A caller's lock (`flock /tmp/carehare-cluster.lock cargo test`) or a
# test harness's capture pipe would otherwise stay held for the node's life.
(
    for fd in /proc/$BASHPID/fd/*; do
        fd="${fd##*/}"
        if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    HOME="$CAREHARE_CLUSTER_HOME" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 \
        exec setsid nohup "$CAREHARE_RABBITMQ_BIN/rabbitmq-server" >>"$CAREHARE_CLUSTER_STDOUT_LOG" 2>&1 </dev/null
) &
launcher=$!
echo "$launcher" >"$launcher_pid_file"

fail_startup() {
    log "ERROR: $*"
    log "---- last lines of $CAREHARE_CLUSTER_STDOUT_LOG (this attempt) ----"
    tail -c +$((stdout_log_offset + 1)) "$CAREHARE_CLUSTER_STDOUT_LOG" 2>/dev/null | tail -n 40 >&2 || true
    if [[ -f "$node_log" ]]; then
        log "---- last lines of $node_log (this attempt) ----"
        tail -c +$((node_log_offset + 1)) "$node_log" 2>/dev/null | tail -n 40 >&2 || true
    fi
    log "stopping the half-started node"
    stop_node stop || true
    exit 1
}

HOME="$CAREHARE_CLUSTER_HOME" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 timeout $((STARTUP_TIMEOUT + 10)) \
    "$CAREHARE_RABBITMQ_BIN/rabbitmqctl" -q wait --timeout "$STARTUP_TIMEOUT" "$RABBITMQ_PID_FILE" >/dev/null 2>"$base/wait.err" 9>&- &
waiter=$!
while kill -0 "$waiter" 2>/dev/null; do
    if ! kill -0 "$launcher" 2>/dev/null; then
        kill "$waiter" 2>/dev/null || true
        wait "$waiter" 2>/dev/null || true
        fail_startup "rabbitmq-server exited during startup"
    fi
    if ((SECONDS - started_at > STARTUP_TIMEOUT)); then
        kill "$waiter" 2>/dev/null || true
        wait "$waiter" 2>/dev/null || true
        fail_startup "node did not start within ${STARTUP_TIMEOUT}s"
    fi
    sleep 0.5
done
if ! wait "$waiter"; then
    cat "$base/wait.err" >&2 || true
    fail_startup "rabbitmqctl wait failed (or timed out after ${STARTUP_TIMEOUT}s)"
fi
remaining=$((STARTUP_TIMEOUT - (SECONDS - started_at)))
((remaining > 10)) || remaining=10
cli $((remaining + 10)) rabbitmqctl -q await_startup --timeout "$remaining" >/dev/null 2>>"$base/wait.err" ||
    fail_startup "rabbitmqctl await_startup failed: $(cat "$base/wait.err")"
rm -f "$base/wait.err"
log "$RABBITMQ_NODENAME started in $((SECONDS - started_at))s (pid $(cat "$RABBITMQ_PID_FILE"))"
