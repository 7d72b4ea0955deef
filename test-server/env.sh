# shellcheck shell=bash
# Shared environment of carehare's private test RabbitMQ node.
#
# Sourced by start.sh / stop.sh; source it yourself to use the CLI tools by hand:
#     source test-server/env.sh
#     rabbitmqctl list_users
# It only exports RABBITMQ_* / CAREHARE_* variables and defines the shell functions
# rabbitmqctl, rabbitmq-diagnostics, rabbitmq-plugins and rabbitmq-queues, which run the
# tools from /usr/lib/rabbitmq/bin with HOME pointing at the node's own home (where its
# Erlang cookie lives). Your own HOME and shell options are left alone.

CAREHARE_TEST_SERVER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAREHARE_BROKER_DIR="${CAREHARE_BROKER_DIR:-/tmp/carehare-broker}"
CAREHARE_BROKER_HOME="$CAREHARE_BROKER_DIR/home"
CAREHARE_CERT_DIR="$CAREHARE_TEST_SERVER_DIR/certs"
CAREHARE_RABBITMQ_BIN="/usr/lib/rabbitmq/bin"
export CAREHARE_TEST_SERVER_DIR CAREHARE_BROKER_DIR CAREHARE_BROKER_HOME CAREHARE_CERT_DIR CAREHARE_RABBITMQ_BIN

export RABBITMQ_NODENAME="carehare@localhost"
export RABBITMQ_USE_LONGNAME=false
export RABBITMQ_MNESIA_BASE="$CAREHARE_BROKER_DIR/mnesia"
export RABBITMQ_LOG_BASE="$CAREHARE_BROKER_DIR/log"
export RABBITMQ_CONFIG_FILE="$CAREHARE_BROKER_DIR/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$CAREHARE_BROKER_DIR/advanced.config"
export RABBITMQ_CONF_ENV_FILE="$CAREHARE_BROKER_DIR/rabbitmq-env.conf"
export RABBITMQ_ENABLED_PLUGINS_FILE="$CAREHARE_BROKER_DIR/enabled_plugins"
export RABBITMQ_PID_FILE="$CAREHARE_BROKER_DIR/carehare.pid"
# Keep Erlang distribution (node <-> CLI tools) on loopback (start.sh also keeps epmd there).
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
# stdout of the rabbitmq-server process (the node's own log is in RABBITMQ_LOG_BASE).
export CAREHARE_BROKER_STDOUT_LOG="$CAREHARE_BROKER_DIR/log/rabbitmq-server.out"

carehare_broker_cli() {
    local tool="$1"
    shift
    # The CLI needs an existing HOME for the Erlang cookie (it creates one if missing).
    if [[ ! -d "$CAREHARE_BROKER_HOME" ]]; then
        mkdir -p "$CAREHARE_BROKER_HOME" && chmod 0700 "$CAREHARE_BROKER_HOME" || return
    fi
    # ERL_EPMD_ADDRESS: an epmd daemon started by this call listens on loopback only.
    HOME="$CAREHARE_BROKER_HOME" LC_ALL=C.UTF-8 ERL_EPMD_ADDRESS=127.0.0.1 "$CAREHARE_RABBITMQ_BIN/$tool" "$@"
}
rabbitmqctl() { carehare_broker_cli rabbitmqctl "$@"; }
rabbitmq-diagnostics() { carehare_broker_cli rabbitmq-diagnostics "$@"; }
rabbitmq-plugins() { carehare_broker_cli rabbitmq-plugins "$@"; }
rabbitmq-queues() { carehare_broker_cli rabbitmq-queues "$@"; }
