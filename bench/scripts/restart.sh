#!/usr/bin/env bash
# Restart-after-kill-9 timing: load N 64-byte messages with NDJSON (1000 per
# request, one partition), kill -9 the server, start it again and time
# until /ready answers and the last offset is readable. Prints peak RSS.
#   bench/scripts/restart.sh 1000000
set -euo pipefail
N=${1:-1000000}
PORT=${PORT:-18109}
BIN=${BIN:-bin/keel}
DATA=$(mktemp -d /tmp/keel-restart.XXXXXX)
URL=http://127.0.0.1:$PORT
AUTH="Authorization: Bearer dev"
trap 'kill -TERM $PID 2>/dev/null && wait $PID 2>/dev/null; rm -rf "$DATA" "$DATA.log"' EXIT

wait_ready() { for _ in $(seq 1 6000); do curl -sf "$URL/ready" >/dev/null && return 0; sleep 0.005; done; echo "not ready" >&2; exit 1; }

$BIN --port "$PORT" --data "$DATA" 2>"$DATA.log" & PID=$!
wait_ready
curl -sf -H "$AUTH" -X POST "$URL/broker/topics" -d '{"name":"bench","partitions":1}' >/dev/null
BATCH=$(mktemp); for i in $(seq 1 1000); do printf '%064d\n' "$i"; done > "$BATCH"
start=$(date +%s.%N)
for i in $(seq 1 $((N / 1000))); do
  curl -sf -H "$AUTH" -X POST "$URL/broker/topics/bench/produce-ndjson?partition=0" --data-binary @"$BATCH" >/dev/null
done
load=$(echo "$(date +%s.%N) - $start" | bc)
rss_load=$(grep VmHWM /proc/$PID/status | awk '{print $2}')
kill -9 $PID; wait $PID 2>/dev/null || true
du -sh "$DATA" | awk '{print "data on disk: " $1}'

start=$(date +%s.%N)
$BIN --port "$PORT" --data "$DATA" 2>>"$DATA.log" & PID=$!
wait_ready
ready=$(echo "$(date +%s.%N) - $start" | bc)
last=$((N - 1))
curl -sf -H "$AUTH" "$URL/broker/consume/bench/g/0?offset=$last&limit=1" | grep -q "\"offset\":$last," 
readable=$(echo "$(date +%s.%N) - $start" | bc)
rss_restart=$(grep VmHWM /proc/$PID/status | awk '{print $2}')
echo "messages=$N load_s=$load restart_to_ready_s=$ready last_offset_readable_s=$readable peak_rss_load_kb=$rss_load peak_rss_after_restart_kb=$rss_restart"
rm -f "$BATCH"
