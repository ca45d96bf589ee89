#!/usr/bin/env bash
# The CPU one delivery costs (docs/benchmarks.md, "The CPU one delivery
# costs"): per acked delivery, the CPU of the whole machine (user, kernel,
# idle), of the node and of the load generator (the bench and its worker
# process), over a steady window of each run (WINDOW_START s to
# WINDOW_END s into it), on a fresh embedded node. With PERF=1 it also
# counts the node's system calls over that window (perf stat); its
# tracepoints on every call then inflate the system time, so take the CPU
# figures from runs without it. A window whose rate is far from the rate
# asked was disturbed (the publishers catch up after a slow spell).
#
#   go build -o /tmp/tether ./cmd/tether
#   OUT=/tmp/budget bash docs/bench/budget.sh
#
# Prints one block per run.
set -u
TETHER=${TETHER:-/tmp/tether}
OUT=${OUT:-/tmp/budget}
ROUNDS=${ROUNDS:-2}
WINDOW_START=${WINDOW_START:-10}
WINDOW_END=${WINDOW_END:-25}
. "$(dirname "$0")/common.sh" # start_node, SECRET, KEY
mkdir -p "$OUT"

# snap: machine user, system, softirq, idle; node user, system; bench
# user, system (all in ticks); acked deliveries so far.
snap() {
  local pids; pids=$(pgrep -f "$TETHER bench --url $URL")
  pids="$pids $(for p in $pids; do pgrep -P $p; done)"
  echo "$(awk '/^cpu /{print $2+$3, $4, $8, $5}' /proc/stat)" \
    "$(awk '{print $14, $15}' /proc/$NODE/stat)" \
    "$(for p in $pids; do cat /proc/$p/stat 2>/dev/null; done | awk '{u+=$14; s+=$15} END{print u+0, s+0}')" \
    "$(curl -s $ADMIN/metrics | awk '/^tether_acks_total /{print $2}')"
}

# run NAME [bench flags…]
run() {
  local name=$1; shift
  local D NODE URL ADMIN; D=$(mktemp -d); rm -f $OUT/$name.perf
  start_node "$TETHER" $D
  "$TETHER" bench --url $URL --admin-url $ADMIN --token-secret $SECRET --api-key $KEY --json \
    --duration 30s "$@" >$OUT/$name.json 2>$OUT/$name.err &
  local bench=$! a b
  sleep $WINDOW_START
  if [ "${PERF:-0}" = 1 ]; then
    # The window runs as perf's workload, so that it counts exactly the
    # window's calls (attaching to the node's threads takes a while).
    export -f snap; export TETHER URL ADMIN NODE
    perf stat -e 'syscalls:sys_enter_*' -p $NODE -o $OUT/$name.perf -- \
      bash -c "snap >$OUT/$name.a; sleep $((WINDOW_END-WINDOW_START)); snap >$OUT/$name.b"
    a=$(cat $OUT/$name.a) b=$(cat $OUT/$name.b)
  else
    a=$(snap); sleep $((WINDOW_END-WINDOW_START)); b=$(snap)
  fi
  wait $bench
  kill -TERM $NODE; wait $NODE; rm -rf $D
  SPAN=$((WINDOW_END-WINDOW_START)) python3 - "$name" "$a" "$b" "$OUT/$name.perf" <<'PY'
import os, sys
name, a, b, perf = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
d = [float(y) - float(x) for x, y in zip(a, b)]
n = d[8]
us = lambda ticks: round(ticks * 1e4 / n, 1)  # 10 ms ticks -> µs per delivery
print(f"{name}: {int(n)} acked deliveries in the window, {int(n / (float(os.environ['SPAN'])))}/s")
print(f"  machine user {us(d[0])}, kernel {us(d[1] + d[2])} (system {us(d[1])}, softirq {us(d[2])}), idle {us(d[3])} µs")
print(f"  node user {us(d[4])}, system {us(d[5])} µs; load generator user {us(d[6])}, system {us(d[7])} µs")
if os.path.exists(perf):
    for line in open(perf):
        f = line.split()
        if len(f) >= 2 and f[1].startswith("syscalls:") and f[0].replace(",", "").isdigit() and int(f[0].replace(",", "")) > n / 100:
            print(f"  {f[1][len('syscalls:sys_enter_'):]}: {int(f[0].replace(',', '')) / n:.2f} per delivery")
PY
}

for i in $(seq $ROUNDS); do
  run direct-$i --conns 10000 --direct --batch 100 --publishers 32 --rate 30000
  run groups-r500-$i --conns 1000 --groups 10 --publishers 8 --rate 500
done
