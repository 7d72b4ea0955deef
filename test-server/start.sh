#!/usr/bin/env bash
# Install (if needed) and start carehare's private RabbitMQ test broker on 127.0.0.1: the
# node "broker" of node.sh (carehare@localhost).
# Idempotent: a node that is already up with the same config and certs is reused; one
# whose config or certs changed (e.g. a fresh clone generated new certs) is restarted.
# Users, vhosts and permissions are (re)applied every time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

"$here/install.sh"
"$here/prepare-certs.sh"
"$here/node.sh" start broker

# shellcheck source-path=SCRIPTDIR source=env.sh
source "$here/env.sh"
log() { printf 'start.sh: %s\n' "$*" >&2; }
log "node $RABBITMQ_NODENAME is up: amqp://127.0.0.1:5672  amqps://127.0.0.1:5671  http://127.0.0.1:15672"
log "  users carehare/carehare-pw, guest/guest, carehare-client (EXTERNAL); vhosts / and carehare-test; certs in $CAREHARE_CERT_DIR"
