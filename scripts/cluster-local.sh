#!/bin/sh
# Starts a Keel cluster of N nodes (default 3) on this machine, as Ayder's
# scripts configure one: node i (1..N) listens for Raft on port
# BASE+10*(i-1) and for HTTP on the next port. Data goes to
# ./cluster-data/node<i>, logs beside it. With TLS_DIR set, nodes talk over
# mutual TLS with TLS_DIR/ca.pem, node<i>.pem and node<i>.key (README,
# "Running a cluster"). Ctrl-C stops every node (SIGTERM: each finishes its
# writes and exits cleanly).
#
#   make build && scripts/cluster-local.sh 3
#   curl -s localhost:7001/metrics_ha        # node1's role (0 = leader)
#   curl -s --location-trusted -X POST -H 'Authorization: Bearer dev' \
#        localhost:7011/broker/topics/events/produce -d hello   # follows the 307 to the leader, keeping the token
set -eu
N=${1:-3}
BASE=${BASE:-7000}
BIN=${BIN:-./bin/keel}
DATA=${DATA:-./cluster-data}
NODES=""
i=1
while [ "$i" -le "$N" ]; do
  NODES="${NODES:+$NODES,}node$i:127.0.0.1:$((BASE + 10 * (i - 1))):$((100 - i))"
  i=$((i + 1))
done
PIDS=""
trap 'kill $PIDS 2>/dev/null; wait' INT TERM EXIT
i=1
while [ "$i" -le "$N" ]; do
  mkdir -p "$DATA/node$i"
  BOOT=0
  [ "$i" -eq 1 ] && BOOT=1
  if [ -n "${TLS_DIR:-}" ]; then
    export RF_HA_TLS=1 RF_HA_TLS_CA="$TLS_DIR/ca.pem" RF_HA_TLS_CERT="$TLS_DIR/node$i.pem" RF_HA_TLS_KEY="$TLS_DIR/node$i.key"
  fi
  RF_HA_ENABLED=1 RF_HA_NODE_ID="node$i" RF_HA_NODES="$NODES" RF_HA_BOOTSTRAP_LEADER=$BOOT \
    "$BIN" serve --data "$DATA/node$i" 2>"$DATA/node$i.log" &
  PIDS="$PIDS $!"
  echo "node$i: raft 127.0.0.1:$((BASE + 10 * (i - 1))), http http://127.0.0.1:$((BASE + 10 * (i - 1) + 1)), log $DATA/node$i.log"
  i=$((i + 1))
done
echo "RF_HA_NODES=$NODES"
echo "Ctrl-C stops the cluster."
wait
