#!/usr/bin/env bash
# Start, stop, kill or check one node of carehare's test RabbitMQ. The test broker is a
# node of its own, the cluster three nodes; all are started, waited for and stopped here.
#
#     test-server/node.sh start NODE   # start NODE and wait until it is up (reuses a running one)
#     test-server/node.sh stop NODE    # clean stop (rabbitmqctl stop); exit 0 if not running
#     test-server/node.sh kill NODE    # SIGKILL the node's Erlang VM (a crash)
#     test-server/node.sh status NODE  # exit 0 if the node answers a ping
#     test-server/node.sh users NODE   # (re)import the users, vhosts and permissions
#
# NODE is one of
#   broker    carehare@localhost (env.sh): AMQP 5672, AMQPS 5671, management 15672, dist 25672.
#             Reused only while its config and certs are unchanged, else restarted.
#             `start` also imports its users.
#   c1 c2 c3  carehare-cN@localhost (cluster-env.sh): AMQP 578N, dist 2578N; no TLS, no
#             management; one Erlang cookie for the three. A running one is always reused.
#             `start` neither joins the cluster nor imports users: cluster-start.sh does.
# Nothing here installs RabbitMQ or makes certificates: start.sh and cluster-start.sh do.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
action="${1:-}"
node="${2:-}"
case "$action:$node" in
start:broker | stop:broker | kill:broker | status:broker | users:broker) ;;
start:c[123] | stop:c[123] | kill:c[123] | status:c[123] | users:c[123]) ;;
*)
    echo "usage: $0 start|stop|kill|status|users broker|c1|c2|c3" >&2
    exit 2
    ;;
esac

# ---- the node: where it lives and what it serves ----
case "$node" in
broker)
    # shellcheck source-path=SCRIPTDIR source=env.sh
    source "$here/env.sh"
    dir="$CAREHARE_BROKER_DIR"
    home="$CAREHARE_BROKER_HOME"
    stdout_log="$CAREHARE_BROKER_STDOUT_LOG"
    amqp_port=5672
    amqps_port=5671 # TLS, with the certificates of prepare-certs.sh
    management_port=15672
    dist_port=25672
    plugins=rabbitmq_management,rabbitmq_auth_mechanism_ssl
    cluster=0
    # It must serve the checkout's current certs (a fresh clone makes a new CA).
    reuse_only_if_unchanged=1
    # The script people run to start it, named in the files written for it.
    entry="start.sh"
    ;;
c*)
    CLUSTER_NODE="${node#c}"
    # shellcheck source-path=SCRIPTDIR source=cluster-env.sh
    source "$here/cluster-env.sh"
    dir="$CAREHARE_CLUSTER_NODE_DIR"
    home="$CAREHARE_CLUSTER_HOME"
    stdout_log="$CAREHARE_CLUSTER_STDOUT_LOG"
    amqp_port="$CAREHARE_CLUSTER_AMQP_PORT"
    amqps_port=""
    management_port=""
    dist_port="$RABBITMQ_DIST_PORT"
    plugins=""
    cluster=1
    # Restarting one would fail its queues over under whoever uses the cluster.
    reuse_only_if_unchanged=0
    entry="cluster-node.sh"
    ;;
esac

log() { printf 'node.sh[%s]: %s\n' "$node" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

STARTUP_TIMEOUT="${CAREHARE_BROKER_STARTUP_TIMEOUT:-120}"
launcher_pid_file="$dir/launcher.pid"
fingerprint_file="$dir/running-config.sha256"
node_log="$RABBITMQ_LOG_BASE/$RABBITMQ_NODENAME.log"

[[ "$dir" == /* ]] || die "the node directory must be an absolute path (got '$dir')"
[[ "$dir" =~ ^[A-Za-z0-9_./-]+$ ]] || die "the node directory may only contain [A-Za-z0-9_./-] (it goes into rabbitmq.conf): '$dir'"

cli() { # seconds tool args...
    local secs="$1"
    shift
    # 9>&-: don't leak the lock fd into an epmd daemon the CLI may spawn.
    CAREHARE_CLI_TIMEOUT="$secs" carehare_node_cli "$home" "$@" 9>&-
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
if [[ "$action" == stop || "$action" == kill ]] && [[ ! -d "$dir" ]]; then
    log "$RABBITMQ_NODENAME is not running (no $dir)"
    exit 0
fi

mkdir -p "$dir" "$home" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
chmod 0700 "$home"
exec 9>"$dir/.lock"
flock -w 300 9 || die "timed out waiting for another start or stop of this node (lock $dir/.lock)"

stop_node() { # stop|kill
    local node_pid launcher_pid stopped=0 pid
    node_pid="$(read_pid "$RABBITMQ_PID_FILE")"
    launcher_pid="$(read_pid "$launcher_pid_file")"
    if [[ "$1" == stop ]] && node_up; then
        log "stopping $RABBITMQ_NODENAME ..."
        if [[ -n "$node_pid" ]] && ours "$node_pid"; then
            # waits until the OS process has exited
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
    rm -f "$RABBITMQ_PID_FILE" "$launcher_pid_file" "$fingerprint_file"
    if ((stopped)); then log "$RABBITMQ_NODENAME stopped"; else log "$RABBITMQ_NODENAME is not running"; fi
}

pw_hash() { # rabbit_password_hashing_sha256: base64(salt || sha256(salt || password))
    local d
    d="$(mktemp -d)"
    openssl rand -out "$d/salt" 4
    { cat "$d/salt"; printf '%s' "$1"; } | openssl dgst -sha256 -binary >"$d/digest"
    cat "$d/salt" "$d/digest" | openssl base64 -A
    rm -rf "$d"
}

# Users, vhosts and permissions in one idempotent import_definitions call (on a cluster
# node, for the whole cluster). carehare-client (EXTERNAL) only where there is TLS.
import_users() {
    local defs="$dir/definitions.json" users=() perms=() user name password tag vhost out
    local accounts=(guest:guest:administrator carehare:carehare-pw:administrator)
    if [[ -n "$amqps_port" ]]; then accounts+=(carehare-client:carehare-client-pw:); fi
    for user in "${accounts[@]}"; do
        IFS=: read -r name password tag <<<"$user"
        users+=("{\"name\": \"$name\", \"password_hash\": \"$(pw_hash "$password")\", \"hashing_algorithm\": \"rabbit_password_hashing_sha256\", \"tags\": [${tag:+\"$tag\"}]}")
        for vhost in / carehare-test; do
            perms+=("{\"user\":\"$name\",\"vhost\":\"$vhost\",\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}")
        done
    done
    (
        IFS=,
        cat >"$defs" <<JSON
{
  "users": [${users[*]}],
  "vhosts": [{"name": "/"}, {"name": "carehare-test"}],
  "permissions": [${perms[*]}]
}
JSON
    )
    if ! out="$(cli 120 rabbitmqctl -q import_definitions "$defs" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "could not import users/vhosts/permissions from $defs"
    fi
}

case "$action" in
stop | kill)
    stop_node "$action"
    exit 0
    ;;
users)
    import_users
    exit 0
    ;;
esac

# ---- start: the node's files, staged so they can be compared with the running ones ----
stage="$dir/.staging"
rm -rf "$stage"
mkdir -p "$stage"
{
    echo "# Generated by carehare test-server/$entry -- edits are overwritten."
    echo "listeners.tcp.1 = 127.0.0.1:$amqp_port"
    if [[ -n "$amqps_port" ]]; then
        cat <<CONF
listeners.ssl.1 = 127.0.0.1:$amqps_port

ssl_options.cacertfile = $dir/certs/ca.pem
ssl_options.certfile = $dir/certs/server.pem
ssl_options.keyfile = $dir/certs/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false

auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
CONF
    else
        echo "listeners.ssl = none"
    fi
    printf '\nloopback_users = none\n'
    if [[ -n "$management_port" ]]; then
        printf '\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$management_port"
    fi
    printf '\ndisk_free_limit.absolute = 50MB\nvm_memory_high_watermark.relative = 0.8\n'
    if ((cluster)); then
        cat <<CONF

# Nodes are stopped on purpose in tests: a restarted node must not wait long for peers.
mnesia_table_loading_retry_timeout = 10000
mnesia_table_loading_retry_limit = 30
CONF
    fi
} >"$stage/rabbitmq.conf"
echo "[$plugins]." >"$stage/enabled_plugins"
echo '[].' >"$stage/advanced.config"
echo "# Generated by carehare test-server/$entry: keeps /etc/rabbitmq/rabbitmq-env.conf out." >"$stage/rabbitmq-env.conf"
staged_files=(rabbitmq.conf enabled_plugins advanced.config rabbitmq-env.conf)
if [[ -n "$amqps_port" ]]; then
    mkdir -p "$stage/certs"
    cp "$CAREHARE_CERT_DIR"/{ca.pem,server.pem,server.key,client.pem,client.key} "$stage/certs/"
    chmod 0644 "$stage"/certs/*
    staged_files+=(certs/ca.pem certs/server.pem certs/server.key certs/client.pem certs/client.key)
fi
want_fp="$(cd "$stage" && sha256sum "${staged_files[@]}" | sha256sum | cut -d' ' -f1)"

# ---- open files: every AMQP connection is one ----
# RabbitMQ 3.10 takes about 0.9 x its open-file limit as its socket limit, so a node
# started from a shell with the common soft limit of 1024 takes only ~900 connections.
# The broker gets the hard limit (at most 65536, Erlang's default port limit) as its soft
# one: the scale benchmarks (benches/src/bin/scale) hold 10,000 idle connections.
nofile_wanted() {
    local hard want=65536
    hard="$(ulimit -Hn)"
    if [[ "$hard" != unlimited ]] && ((hard < want)); then want="$hard"; fi
    echo "$want"
}
nofile_of() { # pid: the soft open-file limit of a running process
    awk '/^Max open files/ { print $4 }' "/proc/$1/limits" 2>/dev/null
}
raise_nofile() {
    local soft want
    soft="$(ulimit -Sn)"
    want="$(nofile_wanted)"
    if [[ "$soft" != unlimited ]] && ((soft < want)); then
        ulimit -Sn "$want" 2>/dev/null || log "could not raise the open-file limit to $want; it stays $soft"
    fi
}
# A broker started with fewer (by a shell with a lower limit, or before this rule) is
# restarted once; the limit only goes up, so callers never take turns restarting it.
nofile_short() {
    local pid have
    ((!cluster)) || return 1
    pid="$(read_pid "$RABBITMQ_PID_FILE")"
    [[ -n "$pid" ]] && ours "$pid" || return 1
    have="$(nofile_of "$pid")"
    [[ "$have" =~ ^[0-9]+$ ]] && ((have < $(nofile_wanted)))
}

# ---- reuse a running node ----
if node_up; then
    if nofile_short; then
        log "$RABBITMQ_NODENAME runs with $(nofile_of "$(read_pid "$RABBITMQ_PID_FILE")") open files, fewer than $(nofile_wanted): restarting it"
        stop_node stop
    elif ((!reuse_only_if_unchanged)) ||
        [[ -f "$fingerprint_file" && "$(cat "$fingerprint_file")" == "$want_fp" ]]; then
        log "$RABBITMQ_NODENAME already running (pid $(cat "$RABBITMQ_PID_FILE" 2>/dev/null || echo '?')), reusing it"
        rm -rf "$stage"
        if ((!cluster)); then import_users; fi
        exit 0
    else
        log "$RABBITMQ_NODENAME is running with a different config or certs: restarting it"
        stop_node stop
    fi
elif [[ -s "$RABBITMQ_PID_FILE" || -s "$launcher_pid_file" ]]; then
    # Leftovers of a crashed/killed node, or a node that does not answer: clean up.
    stop_node stop
fi

# ---- start a fresh node process ----
if command -v ss >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # an empty port is no port
    for port in "$amqp_port" $amqps_port $management_port "$dist_port"; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            ss -Hltnp "sport = :$port" >&2 || true
            die "port $port is already in use (another broker?); stop whatever holds it first"
        fi
    done
fi

for f in "${staged_files[@]}"; do
    mkdir -p "$(dirname "$dir/$f")"
    cp -f "$stage/$f" "$dir/$f"
done
rm -rf "$stage"
rm -f "$RABBITMQ_PID_FILE" "$fingerprint_file"

# A cluster's nodes share one Erlang cookie (node <-> node and CLI <-> node); a node of
# its own gets one from Erlang in its home.
if ((cluster)); then
    if [[ ! -s "$CAREHARE_CLUSTER_COOKIE_FILE" ]]; then
        # The first writer wins (mv -n), so nodes started in parallel agree.
        (umask 077 && openssl rand -hex 20 | tr 'a-f' 'A-F' >"$CAREHARE_CLUSTER_COOKIE_FILE.tmp.$$")
        mv -n "$CAREHARE_CLUSTER_COOKIE_FILE.tmp.$$" "$CAREHARE_CLUSTER_COOKIE_FILE" 2>/dev/null || true
        rm -f "$CAREHARE_CLUSTER_COOKIE_FILE.tmp.$$"
    fi
    if ! cmp -s "$CAREHARE_CLUSTER_COOKIE_FILE" "$home/.erlang.cookie" 2>/dev/null; then
        rm -f "$home/.erlang.cookie"
        tr -d '\n' <"$CAREHARE_CLUSTER_COOKIE_FILE" >"$home/.erlang.cookie"
        chmod 0400 "$home/.erlang.cookie"
    fi
fi

# Remember where the logs end now, so a failure shows only this attempt's lines.
log_size() { if [[ -f "$1" ]]; then stat -c %s "$1"; else echo 0; fi; }
node_log_offset="$(log_size "$node_log")"
started_at=$SECONDS
log "starting $RABBITMQ_NODENAME (amqp 127.0.0.1:$amqp_port, dir $dir, log $node_log) ..."
cd "$dir" # erl_crash.dump etc. land here
echo "==== $(date -u '+%Y-%m-%dT%H:%M:%SZ') node.sh: starting $RABBITMQ_NODENAME" >>"$stdout_log"
stdout_log_offset="$(log_size "$stdout_log")"
# The node outlives this script: it must not inherit any descriptor beyond stdio. A
# caller's lock (`flock /tmp/carehare-cluster.lock cargo test`, or the broker_restart
# test's) or a test harness's capture pipe would otherwise stay held for the node's life.
(
    for fd in "/proc/$BASHPID/fd/"*; do
        fd="${fd##*/}"
        if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    if ((!cluster)); then raise_nofile; fi
    HOME="$home" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 \
        exec setsid nohup "$CAREHARE_RABBITMQ_BIN/rabbitmq-server" >>"$stdout_log" 2>&1 </dev/null
) &
launcher=$!
echo "$launcher" >"$launcher_pid_file"

fail_startup() {
    log "ERROR: $*"
    log "---- last lines of $stdout_log (this attempt) ----"
    tail -c +$((stdout_log_offset + 1)) "$stdout_log" 2>/dev/null | tail -n 40 >&2 || true
    if [[ -f "$node_log" ]]; then
        log "---- last lines of $node_log (this attempt) ----"
        tail -c +$((node_log_offset + 1)) "$node_log" 2>/dev/null | tail -n 40 >&2 || true
    fi
    log "stopping the half-started node"
    stop_node stop || true
    exit 1
}

# `rabbitmqctl wait` returns once the pid file exists and the rabbit app is running;
# watch the launcher meanwhile so an early crash fails fast instead of timing out.
cli $((STARTUP_TIMEOUT + 10)) rabbitmqctl -q wait --timeout "$STARTUP_TIMEOUT" "$RABBITMQ_PID_FILE" >/dev/null 2>"$dir/wait.err" &
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
    cat "$dir/wait.err" >&2 || true
    fail_startup "rabbitmqctl wait failed (or timed out after ${STARTUP_TIMEOUT}s)"
fi
remaining=$((STARTUP_TIMEOUT - (SECONDS - started_at)))
((remaining > 10)) || remaining=10
cli $((remaining + 10)) rabbitmqctl -q await_startup --timeout "$remaining" >/dev/null 2>>"$dir/wait.err" ||
    fail_startup "rabbitmqctl await_startup failed: $(cat "$dir/wait.err")"
rm -f "$dir/wait.err"

if ((reuse_only_if_unchanged)); then echo "$want_fp" >"$fingerprint_file"; fi
log "$RABBITMQ_NODENAME started in $((SECONDS - started_at))s (pid $(cat "$RABBITMQ_PID_FILE"))"
if ((!cluster)); then import_users; fi
