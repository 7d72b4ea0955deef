#!/usr/bin/env bash
# Start, stop or kill one node of carehare's local test cluster (see cluster-start.sh):
# node.sh's node cN.
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

case "${1:-}:${2:-}" in
start:[123] | stop:[123] | kill:[123] | status:[123]) ;;
*)
    echo "usage: $0 start|stop|kill|status 1|2|3" >&2
    exit 2
    ;;
esac
exec "$(dirname "${BASH_SOURCE[0]}")/node.sh" "$1" "c$2"
