#!/usr/bin/env bash
# The cost of the event log (docs/benchmarks.md, "The cost of the event
# log"): the groups run (1,000 devices in 10 groups of 100, 100,000
# deliveries/s asked) on a node built before the event log and on one
# with it, alternating, ROUNDS rounds each, on a fresh embedded store.
#
#   git worktree add /tmp/before 63f7004 && (cd /tmp/before && go build -o /tmp/tether-before ./cmd/tether)
#   go build -o /tmp/tether ./cmd/tether
#   OUT=/tmp/events-bench bash docs/bench/events.sh
#
# Prints one line per run: name, deliveries/s, publish→receive p50 and
# p99 (ms), publish p50 and p99 (ms), lost, node CPU-seconds.
set -u
TETHER=${TETHER:-/tmp/tether}
BEFORE=${BEFORE:-/tmp/tether-before}
OUT=${OUT:-/tmp/events-bench}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-30s}
. "$(dirname "$0")/common.sh" # start_node, ticks
mkdir -p "$OUT"

# run BIN NAME: one groups run on a fresh node of BIN, driven by $TETHER bench.
run() {
  local bin=$1 name=$2 D NODE URL ADMIN; D=$(mktemp -d)
  start_node "$bin" $D
  local n0; n0=$(ticks $NODE)
  "$TETHER" bench --url $URL --admin-url $ADMIN --token-secret $SECRET --api-key $KEY --json \
    --conns 1000 --groups 10 --publishers 8 --rate 1000 --duration $DURATION >$OUT/$name.json 2>$OUT/$name.err
  local n1; n1=$(ticks $NODE)
  kill -TERM $NODE; wait $NODE; rm -rf $D
  jq -c --arg n $name --arg cpu $((n1-n0)) '[$n, (.messages.delivered_per_second|floor), .messages.latency_ms.p50,
    .messages.latency_ms.p99, .messages.publish_latency_ms.p50, .messages.publish_latency_ms.p99, .messages.lost,
    ($cpu|tonumber/100)]' $OUT/$name.json
}

for i in $(seq 1 $ROUNDS); do
  run "$BEFORE" without-events-$i
  run "$TETHER" with-events-$i
done
