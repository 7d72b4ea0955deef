# shellcheck shell=bash
# Environment of carehare's private RabbitMQ test broker (node.sh's node "broker").
#
# Sourced by node.sh; source it yourself to use the CLI tools by hand:
#     source test-server/env.sh
#     rabbitmqctl list_users
# It only exports RABBITMQ_* / CAREHARE_* variables and defines the shell functions
# rabbitmqctl, rabbitmq-diagnostics, rabbitmq-plugins and rabbitmq-queues, which run the
# tools from /usr/lib/rabbitmq/bin with HOME pointing at the node's own home (where its
# Erlang cookie lives), plus the helpers of node-env.sh. Your own HOME and shell options
# are left alone.

# shellcheck source-path=SCRIPTDIR source=node-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-env.sh"

CAREHARE_BROKER_DIR="${CAREHARE_BROKER_DIR:-/tmp/carehare-broker}"
CAREHARE_BROKER_HOME="$CAREHARE_BROKER_DIR/home"
CAREHARE_CERT_DIR="$CAREHARE_TEST_SERVER_DIR/certs"
export CAREHARE_BROKER_DIR CAREHARE_BROKER_HOME CAREHARE_CERT_DIR

carehare_node_env "$CAREHARE_BROKER_DIR" carehare@localhost carehare.pid
# stdout of the rabbitmq-server process (the node's own log is in RABBITMQ_LOG_BASE).
export CAREHARE_BROKER_STDOUT_LOG="$CAREHARE_BROKER_DIR/log/rabbitmq-server.out"

carehare_broker_cli() { carehare_node_cli "$CAREHARE_BROKER_HOME" "$@"; }
rabbitmqctl() { carehare_broker_cli rabbitmqctl "$@"; }
rabbitmq-diagnostics() { carehare_broker_cli rabbitmq-diagnostics "$@"; }
rabbitmq-plugins() { carehare_broker_cli rabbitmq-plugins "$@"; }
rabbitmq-queues() { carehare_broker_cli rabbitmq-queues "$@"; }
