#!/usr/bin/env bash
# Stop carehare's private RabbitMQ test broker cleanly (node.sh's node "broker"). Exit 0
# if it is not running.
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/node.sh" stop broker
