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
. "$(dirname "$0")/common.sh" # start_node, start_redis, counted, ticks, busy
mkdir -p "$OUT"

# run STORE NAME [bench flags…]: STORE is embedded or redis (appendfsync
# everysec, no RDB snapshots).
run() {
  local store=$1 name=$2; shift 2
  local D NODE URL ADMIN REDIS=0 RP RC CMD_TICKS flags=(); D=$(mktemp -d)
  if [ $store = redis ]; then
    start_redis $D --appendonly yes --appendfsync everysec
    flags=(--store redis --redis-url redis://127.0.0.1:$RP/0)
  fi
  start_node "$TETHER" $D "${flags[@]}"
  local n0 r0=0 b0 t0
  n0=$(ticks $NODE); [ $REDIS != 0 ] && r0=$(ticks $REDIS); b0=$(busy); t0=$(date +%s.%N)
  counted 600 $OUT/$name "$TETHER" bench --url $URL --admin-url $ADMIN --token-secret $SECRET --api-key $KEY --json "$@"
  local n1 r1=0 b1 t1 bc=$CMD_TICKS
  n1=$(ticks $NODE); [ $REDIS != 0 ] && r1=$(ticks $REDIS); b1=$(busy); t1=$(date +%s.%N)
  local cmds='{}'
  if [ $REDIS != 0 ]; then # Redis's own account of its work, per command
    cmds=$(redis-cli -p $RP info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/{printf "%s\"%s\":{\"calls\":%s,\"usec\":%s}", (n++?",":""), substr($1,9), $3, $5} BEGIN{printf "{"} END{printf "}"}')
  fi
  kill -TERM $NODE; wait $NODE
  if [ $REDIS != 0 ]; then redis-cli -p $RP shutdown nosave >/dev/null 2>&1; wait $REDIS; fi
  jq --argjson c "{\"rc\":$RC,\"wall_s\":$(echo "$t1 - $t0" | bc),\"node_cpu_s\":$((n1-n0))e-2,\"redis_cpu_s\":$((r1-r0))e-2,\"bench_cpu_s\":${bc}e-2,\"other_cpu_s\":$(( (b1-b0)-(n1-n0)-(r1-r0)-bc ))e-2}" \
    --argjson cmds "$cmds" '. + {cpu: $c, redis_commandstats: $cmds}' $OUT/$name.json > $D/tmp && mv $D/tmp $OUT/$name.json
  rm -rf $D
}

# frozen: Redis stopped with SIGSTOP under a node; once /readyz says so,
# how long a publish takes to be refused (SPEC section 3: at once).
frozen() {
  local name=$1
  local D NODE URL ADMIN REDIS RP; D=$(mktemp -d)
  start_redis $D
  start_node "$TETHER" $D --store redis --redis-url redis://127.0.0.1:$RP/0
  kill -STOP $REDIS
  local t0; t0=$(date +%s.%N)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' $URL/readyz)" = 503 ]; do sleep 0.05; done
  echo "{\"readyz_503_after_s\": $(echo "$(date +%s.%N) - $t0" | bc), \"publishes\": [" > $OUT/$name.json
  for i in $(seq 20); do
    curl -s -o /dev/null -w '{"code":%{http_code},"seconds":%{time_total}}' -H "Authorization: Bearer $KEY" \
      -d '{"target":"device:d1","data":{"n":1}}' $URL/v1/messages >> $OUT/$name.json
    [ $i -lt 20 ] && echo "," >> $OUT/$name.json
  done
  echo "]}" >> $OUT/$name.json
  kill -CONT $REDIS
  kill -TERM $NODE; wait $NODE
  redis-cli -p $RP shutdown nosave >/dev/null 2>&1; wait $REDIS
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
