#!/usr/bin/env bash
# Redis-backed runs of `tether bench` (docs/benchmarks.md, section 3).
#
#   go build -o /tmp/tether ./cmd/tether
#   TETHER=/tmp/tether OUT=/tmp/redis-bench bash docs/bench/redis.sh
#
# Each run starts a fresh redis-server (append-only file, appendfsync
# everysec or always, no RDB snapshots) and one or two fresh nodes on it,
# all on loopback. With two nodes the devices connect to node 2 and the
# messages are published on node 1 (--publish-url), so every delivery
# crosses nodes. Next to each JSON report it writes the CPU-seconds used
# during the run by the nodes, redis-server, the bench and everything else.
set -u
TETHER=${TETHER:-/tmp/tether}
OUT=${OUT:-/tmp/redis-bench}
. "$(dirname "$0")/common.sh" # start_node, start_redis, counted, ticks, busy
mkdir -p "$OUT"

# run FSYNC NODES NAME [bench flags…]
run() {
  local fsync=$1 nodes=$2 name=$3; shift 3
  local D REDIS RP NODE URL ADMIN RC CMD_TICKS; D=$(mktemp -d)
  start_redis $D --appendonly yes --appendfsync $fsync
  local pids=() urls=() admins=() n
  for n in $(seq $nodes); do
    start_node "$TETHER" $D/n$n --store redis --redis-url redis://127.0.0.1:$RP/0 --node-id n$n
    pids+=($NODE); urls+=($URL); admins+=($ADMIN)
  done
  local last=$((nodes-1)) r0 n0=0 b0 t0 p
  r0=$(ticks $REDIS); for p in ${pids[@]}; do n0=$((n0+$(ticks $p))); done; b0=$(busy); t0=$(date +%s.%N)
  counted 120 $OUT/$name "$TETHER" bench --url ${urls[$last]} --admin-url ${admins[$last]} --publish-url ${urls[0]} \
    --token-secret $SECRET --api-key $KEY --json "$@"
  local r1 n1=0 b1 t1 bc=$CMD_TICKS
  r1=$(ticks $REDIS); for p in ${pids[@]}; do n1=$((n1+$(ticks $p))); done; b1=$(busy); t1=$(date +%s.%N)
  for p in ${pids[@]}; do kill -TERM $p; wait $p; done
  redis-cli -p $RP shutdown nosave >/dev/null 2>&1; wait $REDIS
  jq --argjson c "{\"rc\":$RC,\"wall_s\":$(echo "$t1 - $t0" | bc),\"node_cpu_s\":$((n1-n0))e-2,\"redis_cpu_s\":$((r1-r0))e-2,\"bench_cpu_s\":${bc}e-2,\"other_cpu_s\":$(( (b1-b0)-(n1-n0)-(r1-r0)-bc ))e-2,\"fsync\":\"$fsync\",\"nodes\":$nodes}" \
    '. + {cpu: $c}' $OUT/$name.json > $D/tmp && mv $D/tmp $OUT/$name.json
  rm -rf $D
}

B="--conns 1000 --groups 10 --duration 30s"
for i in 1 2 3; do
  for f in everysec always; do
    run $f 2 cross-$f-r25-$i  $B --rate 25   # latency across nodes
    run $f 1 single-$f-r25-$i $B --rate 25   # the same on one node
  done
done
for i in 1 2 3; do
  for r in 100 150 200; do run everysec 1 everysec-r$r-$i $B --rate $r; done
  for r in 50 75 100; do run always 1 always-r$r-$i $B --rate $r; done
  run everysec 2 cross-everysec-r100-$i $B --rate 100
done

# medians of three, e.g.:
#   jq -s 'map(.messages.latency_ms.p99) | sort | .[1]' $OUT/cross-everysec-r25-*.json
