# shellcheck shell=bash
# Environment of one node of carehare's local 3-node test cluster (node.sh's nodes c1-c3).
#
# Source it with CLUSTER_NODE=1, 2 or 3 (default 1) to use the CLI tools on that node:
#     CLUSTER_NODE=2 source test-server/cluster-env.sh
#     rabbitmqctl cluster_status
# Like env.sh it only exports RABBITMQ_* / CAREHARE_* variables and CLUSTER_NODE, and
# defines the shell functions rabbitmqctl, rabbitmq-diagnostics, rabbitmq-plugins and
# rabbitmq-queues, which run /usr/lib/rabbitmq/bin/* with HOME pointing at the node's own
# home (where the cluster's shared Erlang cookie is), plus the helpers of node-env.sh.
# Your own HOME and shell options are left alone.
#
# Node N: name carehare-cN@localhost, AMQP 127.0.0.1:578N, Erlang distribution 2578N,
# state under $CAREHARE_CLUSTER_DIR/nodeN (default /tmp/carehare-cluster/nodeN).

# shellcheck source-path=SCRIPTDIR source=node-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-env.sh"

CAREHARE_CLUSTER_DIR="${CAREHARE_CLUSTER_DIR:-/tmp/carehare-cluster}"
CLUSTER_NODE="${CLUSTER_NODE:-1}"
case "$CLUSTER_NODE" in
1 | 2 | 3) ;;
*)
    echo "cluster-env.sh: CLUSTER_NODE must be 1, 2 or 3 (got '$CLUSTER_NODE')" >&2
    # shellcheck disable=SC2317 # reached when run rather than sourced
    return 1 2>/dev/null || exit 1
    ;;
esac
CAREHARE_CLUSTER_NODE_DIR="$CAREHARE_CLUSTER_DIR/node$CLUSTER_NODE"
CAREHARE_CLUSTER_HOME="$CAREHARE_CLUSTER_NODE_DIR/home"
CAREHARE_CLUSTER_AMQP_PORT="578$CLUSTER_NODE"
CAREHARE_CLUSTER_COOKIE_FILE="$CAREHARE_CLUSTER_DIR/cookie"
export CAREHARE_CLUSTER_DIR CLUSTER_NODE
export CAREHARE_CLUSTER_NODE_DIR CAREHARE_CLUSTER_HOME CAREHARE_CLUSTER_AMQP_PORT CAREHARE_CLUSTER_COOKIE_FILE

carehare_node_env "$CAREHARE_CLUSTER_NODE_DIR" "carehare-c$CLUSTER_NODE@localhost" node.pid "2578$CLUSTER_NODE"
export CAREHARE_CLUSTER_STDOUT_LOG="$CAREHARE_CLUSTER_NODE_DIR/log/rabbitmq-server.out"

carehare_cluster_cli() { carehare_node_cli "$CAREHARE_CLUSTER_HOME" "$@"; }
rabbitmqctl() { carehare_cluster_cli rabbitmqctl "$@"; }
rabbitmq-diagnostics() { carehare_cluster_cli rabbitmq-diagnostics "$@"; }
rabbitmq-plugins() { carehare_cluster_cli rabbitmq-plugins "$@"; }
rabbitmq-queues() { carehare_cluster_cli rabbitmq-queues "$@"; }
