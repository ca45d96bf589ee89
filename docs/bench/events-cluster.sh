#!/usr/bin/env bash
# The cost of the event log on a Redis Cluster (docs/benchmarks.md, "The
# event log on a Redis Cluster"): the groups run (1,000 devices in 10
# groups of 100, 30,000 deliveries/s asked) on a node built before the
# event log worked on a cluster and on one with it, alternating, ROUNDS
# rounds each, each on a fresh three-master cluster (appendonly yes,
# appendfsync everysec; AOF=no to turn the AOF off).
#
#   git worktree add /tmp/before f6ec7f1 && (cd /tmp/before && go build -o /tmp/tether-before ./cmd/tether)
#   go build -o /tmp/tether ./cmd/tether
#   OUT=/tmp/events-cluster bash docs/bench/events-cluster.sh
#
# Prints one line per run: name, deliveries/s, publish→receive p50 and
# p99 (ms), publish p50 and p99 (ms), lost, node CPU-seconds, Redis CPU
# (main threads of the three servers) in µs per delivery; then the share
# of the machine's CPU that was busy during the run.
set -u
TETHER=${TETHER:-/tmp/tether}
BEFORE=${BEFORE:-/tmp/tether-before}
OUT=${OUT:-/tmp/events-cluster}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-30s}
. "$(dirname "$0")/common.sh" # start_node, ticks, busy, cpu_all
mkdir -p "$OUT"

# redis_cpu PORT...: seconds of CPU of the servers' main threads.
redis_cpu() {
  for p in "$@"; do redis-cli -p $p info cpu; done |
    awk -F: '/used_cpu_(user|sys)_main_thread/{s+=$2} END{printf "%.3f", s}'
}

# cluster_port: a free port whose cluster bus port (+10000) is free too.
cluster_port() {
  python3 -c '
import random, socket
while True:
    p = random.randint(20000, 45000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'
}

# cluster DIR: start three masters in DIR and join them; prints their ports.
cluster() {
  local dir=$1 ports=() p
  for i in 0 1 2; do
    p=$(cluster_port); ports+=($p); mkdir -p $dir/r$i
    redis-server --port $p --bind 127.0.0.1 --dir $dir/r$i --cluster-enabled yes --cluster-config-file nodes.conf \
      --appendonly ${AOF:-yes} --appendfsync everysec --save '' >$dir/r$i/log 2>&1 &
  done
  for p in "${ports[@]}"; do until redis-cli -p $p ping >/dev/null 2>&1; do sleep 0.1; done; done
  yes yes | redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") >/dev/null 2>&1
  until redis-cli -p ${ports[0]} cluster info | grep -q cluster_state:ok; do sleep 0.2; done
  echo "${ports[@]}"
}

# run BIN NAME: one groups run on a node of BIN on a fresh cluster, driven
# by $TETHER bench.
run() {
  local bin=$1 name=$2 D NODE URL ADMIN ports; D=$(mktemp -d)
  ports=($(cluster $D))
  sleep 1
  start_node "$bin" $D --store redis --redis-cluster --redis-url redis://127.0.0.1:${ports[0]}
  local n0 r0 b0 t0; n0=$(ticks $NODE); r0=$(redis_cpu "${ports[@]}"); b0=$(busy); t0=$(cpu_all)
  "$TETHER" bench --url $URL --admin-url $ADMIN --token-secret $SECRET --api-key $KEY --json \
    --conns 1000 --groups 10 --publishers 8 --rate 300 --duration $DURATION >$OUT/$name.json 2>$OUT/$name.err
  local n1 r1 b1 t1; n1=$(ticks $NODE); r1=$(redis_cpu "${ports[@]}"); b1=$(busy); t1=$(cpu_all)
  for p in "${ports[@]}"; do redis-cli -p $p info commandstats; done >$OUT/$name.commandstats
  kill -TERM $NODE; wait $NODE
  for p in "${ports[@]}"; do redis-cli -p $p shutdown nosave >/dev/null 2>&1; done
  sleep 0.3; rm -rf $D
  jq -c --arg n $name --arg cpu $((n1-n0)) --arg r "$(echo "$r1 - $r0" | bc)" --arg busy $(((b1-b0)*100/(t1-t0))) \
    '[$n, (.messages.delivered_per_second|floor), .messages.latency_ms.p50, .messages.latency_ms.p99,
      .messages.publish_latency_ms.p50, .messages.publish_latency_ms.p99, .messages.lost, ($cpu|tonumber/100),
      (($r|tonumber)*1e6/.messages.delivered|floor), ($busy+"% busy")]' $OUT/$name.json
}

for i in $(seq 1 $ROUNDS); do
  run "$BEFORE" without-events-$i
  run "$TETHER" with-events-$i
done
