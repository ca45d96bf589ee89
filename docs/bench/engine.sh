#!/usr/bin/env bash
# The delivery engine's figures (docs/benchmarks.md, "Delivery engine v2"):
# idle memory, overload past capacity, the Redis store's throughput and
# CPU per delivery, and how fast publishes fail once Redis is frozen. The
# comparison with JetStream (embedded store) is docs/bench/jetstream.sh.
#
#   go build -o /tmp/tether ./cmd/tether
#   OUT=/tmp/engine-bench bash docs/bench/engine.sh
#
# Everything runs on loopback, one fresh node (and redis-server) per run.
# Next to each JSON report it writes the CPU-seconds used during the run by
# the node, redis-server, the bench and everything else (other_cpu_s: a run
# measured while it is high was disturbed).
set -u
TETHER=${TETHER:-/tmp/tether}
OUT=${OUT:-/tmp/engine-bench}
ROUNDS=${ROUNDS:-3}
. "$(dirname "$0")/common.sh" # SECRET, KEY, free_port, ticks, busy
mkdir -p "$OUT"

# run STORE NAME [bench flags…]: STORE is embedded or redis (appendfsync
# everysec, no RDB snapshots).
run() {
  local store=$1 name=$2; shift 2
  local D P Q RP redis=0; D=$(mktemp -d); P=$(free_port); Q=$(free_port)
  local flags=(--data-dir $D --token-secret $SECRET --api-key $KEY --listen 127.0.0.1:$P --admin-listen 127.0.0.1:$Q)
  if [ $store = redis ]; then
    RP=$(free_port)
    redis-server --bind 127.0.0.1 --port $RP --dir $D --appendonly yes --appendfsync everysec --save '' --logfile $D/redis.log &
    redis=$!
    until redis-cli -p $RP ping >/dev/null 2>&1; do sleep 0.1; done
    flags+=(--store redis --redis-url redis://127.0.0.1:$RP/0)
  fi
  "$TETHER" serve "${flags[@]}" 2>$D/node.log &
  local node=$!
  until curl -sf http://127.0.0.1:$P/readyz >/dev/null; do sleep 0.1; done
  local n0 r0=0 b0 t0
  n0=$(ticks $node); [ $redis != 0 ] && r0=$(ticks $redis); b0=$(busy); t0=$(date +%s.%N)
  timeout 600 bash -c '"$@" >'$OUT/$name.json' 2>'$OUT/$name.err'; s=$?; awk "{print \$16+\$17}" /proc/$$/stat >'$D/benchcpu'; exit $s' _ \
    "$TETHER" bench --url http://127.0.0.1:$P --admin-url http://127.0.0.1:$Q \
      --token-secret $SECRET --api-key $KEY --json "$@"
  local rc=$? n1 r1=0 b1 t1 bc
  n1=$(ticks $node); [ $redis != 0 ] && r1=$(ticks $redis); b1=$(busy); t1=$(date +%s.%N)
  bc=$(cat $D/benchcpu 2>/dev/null || echo 0)
  local cmds='{}'
  if [ $redis != 0 ]; then # Redis's own account of its work, per command
    cmds=$(redis-cli -p $RP info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/{printf "%s\"%s\":{\"calls\":%s,\"usec\":%s}", (n++?",":""), substr($1,9), $3, $5} BEGIN{printf "{"} END{printf "}"}')
  fi
  kill -TERM $node; wait $node
  if [ $redis != 0 ]; then redis-cli -p $RP shutdown nosave >/dev/null 2>&1; wait $redis; fi
  jq --argjson c "{\"rc\":$rc,\"wall_s\":$(echo "$t1 - $t0" | bc),\"node_cpu_s\":$((n1-n0))e-2,\"redis_cpu_s\":$((r1-r0))e-2,\"bench_cpu_s\":${bc}e-2,\"other_cpu_s\":$(( (b1-b0)-(n1-n0)-(r1-r0)-bc ))e-2}" \
    --argjson cmds "$cmds" '. + {cpu: $c, redis_commandstats: $cmds}' $OUT/$name.json > $D/tmp && mv $D/tmp $OUT/$name.json
  rm -rf $D
}

# frozen: Redis stopped with SIGSTOP under a node; once /readyz says so,
# how long a publish takes to be refused (SPEC section 3: at once).
frozen() {
  local name=$1
  local D P Q RP; D=$(mktemp -d); P=$(free_port); Q=$(free_port); RP=$(free_port)
  redis-server --bind 127.0.0.1 --port $RP --dir $D --save '' --logfile $D/redis.log &
  local redis=$!
  until redis-cli -p $RP ping >/dev/null 2>&1; do sleep 0.1; done
  "$TETHER" serve --store redis --redis-url redis://127.0.0.1:$RP/0 --data-dir $D --token-secret $SECRET --api-key $KEY \
    --listen 127.0.0.1:$P --admin-listen 127.0.0.1:$Q 2>$D/node.log &
  local node=$!
  until curl -sf http://127.0.0.1:$P/readyz >/dev/null; do sleep 0.1; done
  kill -STOP $redis
  local t0; t0=$(date +%s.%N)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$P/readyz)" = 503 ]; do sleep 0.05; done
  echo "{\"readyz_503_after_s\": $(echo "$(date +%s.%N) - $t0" | bc), \"publishes\": [" > $OUT/$name.json
  for i in $(seq 20); do
    curl -s -o /dev/null -w '{"code":%{http_code},"seconds":%{time_total}}' -H "Authorization: Bearer $KEY" \
      -d '{"target":"device:d1","data":{"n":1}}' http://127.0.0.1:$P/v1/messages >> $OUT/$name.json
    [ $i -lt 20 ] && echo "," >> $OUT/$name.json
  done
  echo "]}" >> $OUT/$name.json
  kill -CONT $redis
  kill -TERM $node; wait $node
  redis-cli -p $RP shutdown nosave >/dev/null 2>&1; wait $redis
  rm -rf $D
}

GRP="--conns 1000 --groups 10 --publishers 8 --duration 60s"
DIRECT="--conns 10000 --direct --batch 100 --publishers 32 --duration 60s"
for i in $(seq $ROUNDS); do
  run embedded idle-$i --idle --conns 15000 --duration 30s
  run embedded overload-groups-$i $GRP --rate 2000          # 200,000 deliveries/s asked
  # Past the direct capacity: 32 publishers keep at most 3,200 messages in
  # flight, too few to push the node past its bound (latency stays ~0.2 s);
  # 256 keep 25,600, more than the node delivers within a quarter of
  # --max-delivery-lag, so it must refuse.
  run embedded overload-direct-$i ${DIRECT/--publishers 32/--publishers 256} --rate 30000
  run redis redis-groups-r500-$i $GRP --rate 500
  run redis redis-groups-r1000-$i $GRP --rate 1000
  run redis redis-direct-$i $DIRECT --rate 100000
  frozen frozen-$i
done

# medians of three, e.g.:
#   jq -s 'map(.messages.delivered_per_second) | sort | .[1]' $OUT/redis-groups-r1000-*.json
#   jq -s 'map(.cpu.redis_cpu_s / .messages.delivered * 1e6) | sort | .[1]' $OUT/redis-groups-r1000-*.json  # µs per delivery
