#!/usr/bin/env bash
# Stop carehare's private RabbitMQ test node cleanly. Exit 0 if it is not running.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$here/env.sh"

log() { printf 'stop.sh: %s\n' "$*" >&2; }

base="$CAREHARE_BROKER_DIR"
launcher_pid_file="$base/launcher.pid"
[[ -d "$base" ]] || { log "node $RABBITMQ_NODENAME is not running (no $base)"; exit 0; }

if [[ "${CAREHARE_BROKER_LOCK_HELD:-}" != 1 ]]; then
    exec 9>"$base/.lock"
    flock -w 300 9 || { log "ERROR: timed out waiting for another start.sh/stop.sh (lock $base/.lock)"; exit 1; }
fi

cli() { # seconds tool args...
    local secs="$1" tool="$2"
    shift 2
    # 9>&-: don't leak the lock fd into an epmd daemon the CLI may spawn.
    HOME="$CAREHARE_BROKER_HOME" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 \
        timeout "$secs" "$CAREHARE_RABBITMQ_BIN/$tool" "$@" 9>&-
}
# Is $1 a live process of this node (guards against recycled pids)?
ours() {
    [[ "$1" =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -Eq 'rabbitmq-server|beam'
}
read_pid() { if [[ -s "$1" ]]; then tr -dc '0-9' <"$1"; fi; }

node_pid="$(read_pid "$RABBITMQ_PID_FILE")"
launcher_pid="$(read_pid "$launcher_pid_file")"
stopped=0

if cli 30 rabbitmq-diagnostics -q ping --timeout 10 >/dev/null 2>&1; then
    log "stopping node $RABBITMQ_NODENAME ..."
    if [[ -n "$node_pid" ]] && ours "$node_pid"; then
        # waits until the OS process has exited
        cli 120 rabbitmqctl -q stop "$RABBITMQ_PID_FILE" >/dev/null && stopped=1
    else
        cli 120 rabbitmqctl -q shutdown >/dev/null && stopped=1
    fi
    ((stopped)) || log "rabbitmqctl stop failed; falling back to signals"
fi

# After a clean stop the rabbitmq-server launcher script exits right behind the node.
if ((stopped)) && [[ -n "$launcher_pid" ]]; then
    for _ in $(seq 1 20); do ours "$launcher_pid" || break; sleep 0.25; done
fi

# Whatever is left (node not answering, crashed half-way, rabbitmqctl failed): signals.
for pid in "$node_pid" "$launcher_pid"; do
    if [[ -z "$pid" ]] || ! ours "$pid"; then continue; fi
    log "sending SIGTERM to pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do ours "$pid" || break; sleep 0.5; done
    if ours "$pid"; then
        log "pid $pid still alive after 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    stopped=1
done

rm -f "$RABBITMQ_PID_FILE" "$launcher_pid_file" "$base/running-config.sha256"
if ((stopped)); then
    log "node $RABBITMQ_NODENAME stopped"
else
    log "node $RABBITMQ_NODENAME is not running"
fi
