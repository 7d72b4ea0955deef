# shellcheck shell=bash
# Environment of one node of carehare's local 3-node test cluster.
#
# Source it with CLUSTER_NODE=1, 2 or 3 (default 1) to use the CLI tools on that node:
#     CLUSTER_NODE=2 source test-server/cluster-env.sh
#     rabbitmqctl cluster_status
# Like env.sh it only exports RABBITMQ_* / CAREHARE_CLUSTER_* variables and defines the
# shell functions rabbitmqctl, rabbitmq-diagnostics, rabbitmq-plugins and rabbitmq-queues,
# which run /usr/lib/rabbitmq/bin/* with HOME pointing at the node's own home (where the
# cluster's shared Erlang cookie is). Your own HOME and shell options are left alone.
#
# Node N: name carehare-cN@localhost, AMQP 127.0.0.1:578N, Erlang distribution 2578N,
# state under $CAREHARE_CLUSTER_DIR/nodeN (default /tmp/carehare-cluster/nodeN).

CAREHARE_TEST_SERVER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAREHARE_CLUSTER_DIR="${CAREHARE_CLUSTER_DIR:-/tmp/carehare-cluster}"
CAREHARE_RABBITMQ_BIN="/usr/lib/rabbitmq/bin"
CLUSTER_NODE="${CLUSTER_NODE:-1}"
case "$CLUSTER_NODE" in
1 | 2 | 3) ;;
*)
    echo "cluster-env.sh: CLUSTER_NODE must be 1, 2 or 3 (got '$CLUSTER_NODE')" >&2
    return 1 2>/dev/null || exit 1
    ;;
esac
CAREHARE_CLUSTER_NODE_DIR="$CAREHARE_CLUSTER_DIR/node$CLUSTER_NODE"
CAREHARE_CLUSTER_HOME="$CAREHARE_CLUSTER_NODE_DIR/home"
CAREHARE_CLUSTER_AMQP_PORT="578$CLUSTER_NODE"
CAREHARE_CLUSTER_COOKIE_FILE="$CAREHARE_CLUSTER_DIR/cookie"
export CAREHARE_TEST_SERVER_DIR CAREHARE_CLUSTER_DIR CAREHARE_RABBITMQ_BIN CLUSTER_NODE
export CAREHARE_CLUSTER_NODE_DIR CAREHARE_CLUSTER_HOME CAREHARE_CLUSTER_AMQP_PORT CAREHARE_CLUSTER_COOKIE_FILE

export RABBITMQ_NODENAME="carehare-c$CLUSTER_NODE@localhost"
export RABBITMQ_USE_LONGNAME=false
export RABBITMQ_DIST_PORT="2578$CLUSTER_NODE"
export RABBITMQ_MNESIA_BASE="$CAREHARE_CLUSTER_NODE_DIR/mnesia"
export RABBITMQ_LOG_BASE="$CAREHARE_CLUSTER_NODE_DIR/log"
export RABBITMQ_CONFIG_FILE="$CAREHARE_CLUSTER_NODE_DIR/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$CAREHARE_CLUSTER_NODE_DIR/advanced.config"
export RABBITMQ_CONF_ENV_FILE="$CAREHARE_CLUSTER_NODE_DIR/rabbitmq-env.conf"
export RABBITMQ_ENABLED_PLUGINS_FILE="$CAREHARE_CLUSTER_NODE_DIR/enabled_plugins"
export RABBITMQ_PID_FILE="$CAREHARE_CLUSTER_NODE_DIR/node.pid"
# Keep Erlang distribution (node <-> node, node <-> CLI) on loopback.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export CAREHARE_CLUSTER_STDOUT_LOG="$CAREHARE_CLUSTER_NODE_DIR/log/rabbitmq-server.out"

carehare_cluster_cli() {
    local tool="$1"
    shift
    if [[ ! -d "$CAREHARE_CLUSTER_HOME" ]]; then
        mkdir -p "$CAREHARE_CLUSTER_HOME" && chmod 0700 "$CAREHARE_CLUSTER_HOME" || return
    fi
    HOME="$CAREHARE_CLUSTER_HOME" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 "$CAREHARE_RABBITMQ_BIN/$tool" "$@"
}
rabbitmqctl() { carehare_cluster_cli rabbitmqctl "$@"; }
rabbitmq-diagnostics() { carehare_cluster_cli rabbitmq-diagnostics "$@"; }
rabbitmq-plugins() { carehare_cluster_cli rabbitmq-plugins "$@"; }
rabbitmq-queues() { carehare_cluster_cli rabbitmq-queues "$@"; }
