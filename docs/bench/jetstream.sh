#!/usr/bin/env bash
# tether beside NATS JetStream under the same load (docs/benchmarks.md,
# section "Beside JetStream"). One round runs each workload on tether
# (embedded store) and then on JetStream, on this machine, one system at
# a time; three rounds give the medians.
#
#   go build -o /tmp/tether ./cmd/tether
#   (cd internal/jsbench && go build -o /tmp/jsbench .)
#   go install github.com/nats-io/nats-server/v2@v2.15.3
#   OUT=/tmp/js-bench bash docs/bench/jetstream.sh
#
# Durability is the same on both sides: tether's embedded store fsyncs
# every commit before a publish is answered; nats-server runs with
# sync_interval: always, so a publish ack means the message is on disk.
# JetStream gets one durable consumer per device, explicit acks, at most
# --max-inflight (256, tether's default) unacked, filtering the device's
# subject and its group's (internal/jsbench). Next to each JSON report the
# script writes the CPU-seconds of the server (node or nats-server) and of
# the load generator during the run.
set -u
TETHER=${TETHER:-/tmp/tether}
JSBENCH=${JSBENCH:-/tmp/jsbench}
NATS=${NATS:-$(go env GOPATH)/bin/nats-server}
OUT=${OUT:-/tmp/js-bench}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-60s}
. "$(dirname "$0")/common.sh" # start_node, counted, free_port, ticks, busy
mkdir -p "$OUT"

# measure NAME SERVER_PID CMD…: runs CMD (the load generator) with its
# JSON report to $OUT/NAME.json and adds the CPU-seconds used meanwhile:
# by the server, the load generator and everything else (other_cpu_s: a
# figure measured while it is high was disturbed).
measure() {
  local name=$1 srv=$2; shift 2
  local s0 s1 t0 t1 bc b0 b1 RC CMD_TICKS
  s0=$(ticks $srv); t0=$(date +%s.%N); b0=$(busy)
  counted 900 $OUT/$name "$@"
  s1=$(ticks $srv); t1=$(date +%s.%N); b1=$(busy); bc=$CMD_TICKS
  jq --argjson c "{\"rc\":$RC,\"wall_s\":$(echo "$t1 - $t0" | bc),\"server_cpu_s\":$((s1-s0))e-2,\"bench_cpu_s\":${bc}e-2,\"other_cpu_s\":$(( (b1-b0)-(s1-s0)-bc ))e-2}" \
    '. + {cpu: $c}' $OUT/$name.json > $OUT/$name.tmp && mv $OUT/$name.tmp $OUT/$name.json
}

# tether NAME [bench flags…]
tether() {
  local name=$1; shift
  local D NODE URL ADMIN; D=$(mktemp -d)
  start_node "$TETHER" $D
  measure tether-$name $NODE "$TETHER" bench --url $URL --admin-url $ADMIN \
    --token-secret $SECRET --api-key $KEY --json --duration $DURATION "$@"
  kill -TERM $NODE; wait $NODE
  rm -rf $D
}

# jetstream NAME [jsbench flags…]
jetstream() {
  local name=$1; shift
  local D P; D=$(mktemp -d); P=$(free_port)
  cat >$D/nats.conf <<EOF
listen: 127.0.0.1:$P
jetstream {
  store_dir: "$D/store"
  sync_interval: always
  max_file_store: 100GB
}
EOF
  "$NATS" -c $D/nats.conf >$D/server.log 2>&1 &
  local srv=$!
  until (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null; do sleep 0.1; done
  measure jetstream-$name $srv "$JSBENCH" --url nats://127.0.0.1:$P --duration $DURATION "$@"
  kill -TERM $srv; wait $srv
  rm -rf $D
}

GRP="--conns 1000 --groups 10 --publishers 8"
DIRECT="--conns 10000 --direct --batch 100 --publishers 32"
for i in $(seq $ROUNDS); do
  for sys in tether jetstream; do
    $sys groups-r1000-$i $GRP --rate 1000   # 100,000 deliveries/s asked
    $sys groups-r500-$i  $GRP --rate 500    # half: latency
    $sys direct-$i       $DIRECT --rate 100000 # far past capacity: both take what they can
  done
done

# One line per report: deliveries/s, p50 and p99 ms, lost, CPU-seconds of
# the server and of everything else, wall seconds.
for f in $OUT/*.json; do
  jq -r --arg f "$(basename $f .json)" '[$f,
      (.messages.delivered_per_second // .delivered_per_second | floor),
      (.messages.latency_ms.p50 // .latency_ms.P50), (.messages.latency_ms.p99 // .latency_ms.P99),
      (.messages.lost // .lost), .cpu.server_cpu_s, .cpu.other_cpu_s, .cpu.wall_s] | @tsv' $f
done | sort | column -t
