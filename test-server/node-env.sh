# shellcheck shell=bash
# What every node of carehare's test RabbitMQ shares, sourced by env.sh (the test broker)
# and cluster-env.sh (a node of the 3-node cluster), which say where each node lives.
#
# Exports CAREHARE_TEST_SERVER_DIR and CAREHARE_RABBITMQ_BIN and defines two functions:
#   carehare_node_env DIR NODENAME PID_FILE [DIST_PORT]
#       exports the RABBITMQ_* variables of the node whose state is under DIR;
#   carehare_node_cli HOME TOOL ARGS...
#       runs /usr/lib/rabbitmq/bin/TOOL with HOME at the node's own home, where its
#       Erlang cookie is (with CAREHARE_CLI_TIMEOUT=SECONDS set, under `timeout`).

CAREHARE_TEST_SERVER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAREHARE_RABBITMQ_BIN="/usr/lib/rabbitmq/bin"
export CAREHARE_TEST_SERVER_DIR CAREHARE_RABBITMQ_BIN

carehare_node_env() {
    local dir="$1"
    export RABBITMQ_NODENAME="$2"
    export RABBITMQ_USE_LONGNAME=false
    # Without it, RabbitMQ uses the AMQP port + 20000.
    if [[ -n "${4:-}" ]]; then export RABBITMQ_DIST_PORT="$4"; fi
    export RABBITMQ_MNESIA_BASE="$dir/mnesia"
    export RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
    export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    export RABBITMQ_PID_FILE="$dir/$3"
    # Keep Erlang distribution (node <-> node, node <-> CLI tools) on loopback (node.sh
    # also keeps epmd there).
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

carehare_node_cli() {
    local home="$1" tool="$2" timeout=()
    shift 2
    # The CLI needs an existing HOME for the Erlang cookie (it creates one if missing).
    if [[ ! -d "$home" ]]; then
        mkdir -p "$home" && chmod 0700 "$home" || return
    fi
    if [[ -n "${CAREHARE_CLI_TIMEOUT:-}" ]]; then timeout=(timeout "$CAREHARE_CLI_TIMEOUT"); fi
    # ERL_EPMD_ADDRESS: an epmd daemon started by this call listens on loopback only.
    # ERL_CRASH_DUMP: a crashing CLI VM writes its dump there, not into the caller's
    # directory (often a checkout).
    HOME="$home" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 ERL_CRASH_DUMP="$home/erl_crash.dump" \
        "${timeout[@]}" "$CAREHARE_RABBITMQ_BIN/$tool" "$@"
}
