#!/usr/bin/env bash
# The CPU one delivery costs (docs/benchmarks.md, "The CPU one delivery
# costs"): per acked delivery, the CPU of the whole machine (user, kernel,
# idle), of the node and of the load generator (the bench and its worker
# process), over a steady window of each run (WINDOW_START s to
# WINDOW_END s into it), on a fresh embedded node; with STORE=redis on a
# fresh node on a fresh redis-server (appendfsync everysec), whose CPU
# (main thread and its helpers, not the AOF rewrite children) and INFO
# commandstats over the same window are added. With PERF=1 it also
# counts the node's system calls over that window (perf stat); its
# tracepoints on every call then inflate the system time, so take the CPU
# figures from runs without it. A window whose rate is far from the rate
# asked was disturbed (the publishers catch up after a slow spell).
#
#   go build -o /tmp/tether ./cmd/tether
#   OUT=/tmp/budget bash docs/bench/budget.sh
#   STORE=redis OUT=/tmp/budget-redis bash docs/bench/budget.sh
#
# Prints one block per run.
set -u
TETHER=${TETHER:-/tmp/tether}
OUT=${OUT:-/tmp/budget}
ROUNDS=${ROUNDS:-2}
WINDOW_START=${WINDOW_START:-10}
WINDOW_END=${WINDOW_END:-25}
STORE=${STORE:-embedded}
. "$(dirname "$0")/common.sh" # start_node, start_redis, SECRET, KEY
mkdir -p "$OUT"

# snap: machine user, system, softirq, idle; node user, system; bench
# user, system; redis-server user, system (all in ticks; 0 0 without
# Redis); acked deliveries so far.
snap() {
  local pids; pids=$(pgrep -f "$TETHER bench --url $URL")
  pids="$pids $(for p in $pids; do pgrep -P $p; done)"
  echo "$(awk '/^cpu /{print $2+$3, $4, $8, $5}' /proc/stat)" \
    "$(awk '{print $14, $15}' /proc/$NODE/stat)" \
    "$(for p in $pids; do cat /proc/$p/stat 2>/dev/null; done | awk '{u+=$14; s+=$15} END{print u+0, s+0}')" \
    "$(if [ "$REDIS" != 0 ]; then awk '{print $14, $15}' /proc/$REDIS/stat; else echo 0 0; fi)" \
    "$(curl -s $ADMIN/metrics | awk '/^tether_acks_total /{print $2}')"
}

# commandstats FILE: Redis's calls and µs per command, "name calls usec".
commandstats() {
  [ "$REDIS" != 0 ] || return 0
  redis-cli -p $RP info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/{print substr($1,9), $3, $5}' >"$1"
}

# run NAME [bench flags…]
run() {
  local name=$1; shift
  local D NODE URL ADMIN REDIS=0 RP flags=(); D=$(mktemp -d); rm -f $OUT/$name.perf $OUT/$name.cs.*
  if [ "$STORE" = redis ]; then
    start_redis $D --appendonly yes --appendfsync everysec
    flags=(--store redis --redis-url redis://127.0.0.1:$RP/0)
  fi
  start_node "$TETHER" $D "${flags[@]}"
  "$TETHER" bench --url $URL --admin-url $ADMIN --token-secret $SECRET --api-key $KEY --json \
    --duration 30s "$@" >$OUT/$name.json 2>$OUT/$name.err &
  local bench=$! a b
  sleep $WINDOW_START
  if [ "${PERF:-0}" = 1 ]; then
    # The window runs as perf's workload, so that it counts exactly the
    # window's calls (attaching to the node's threads takes a while).
    export -f snap commandstats; export TETHER URL ADMIN NODE REDIS RP
    perf stat -e 'syscalls:sys_enter_*' -p $NODE -o $OUT/$name.perf -- \
      bash -c "commandstats $OUT/$name.cs.a; snap >$OUT/$name.a; sleep $((WINDOW_END-WINDOW_START)); snap >$OUT/$name.b; commandstats $OUT/$name.cs.b"
    a=$(cat $OUT/$name.a) b=$(cat $OUT/$name.b)
  else
    commandstats $OUT/$name.cs.a; a=$(snap)
    sleep $((WINDOW_END-WINDOW_START))
    b=$(snap); commandstats $OUT/$name.cs.b
  fi
  wait $bench
  kill -TERM $NODE; wait $NODE
  if [ "$REDIS" != 0 ]; then redis-cli -p $RP shutdown nosave >/dev/null 2>&1; wait $REDIS; fi
  rm -rf $D
  SPAN=$((WINDOW_END-WINDOW_START)) python3 - "$name" "$a" "$b" "$OUT/$name.perf" "$OUT/$name.cs" <<'PY'
import os, sys
name, a, b, perf, cs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
d = [float(y) - float(x) for x, y in zip(a, b)]
n = d[10]
us = lambda ticks: round(ticks * 1e4 / n, 1)  # 10 ms ticks -> µs per delivery
print(f"{name}: {int(n)} acked deliveries in the window, {int(n / (float(os.environ['SPAN'])))}/s")
print(f"  machine user {us(d[0])}, kernel {us(d[1] + d[2])} (system {us(d[1])}, softirq {us(d[2])}), idle {us(d[3])} µs")
print(f"  node user {us(d[4])}, system {us(d[5])} µs; load generator user {us(d[6])}, system {us(d[7])} µs")
if os.path.exists(cs + ".b"):
    print(f"  redis-server user {us(d[8])}, system {us(d[9])} µs; its commands (commandstats, a script's own commands also count in its time):")
    read = lambda f: {l.split()[0]: (int(l.split()[1]), int(l.split()[2])) for l in open(f)}
    before, after = read(cs + ".a"), read(cs + ".b")
    rows = [(k, c - before.get(k, (0, 0))[0], u - before.get(k, (0, 0))[1]) for k, (c, u) in after.items()]
    for k, c, u in sorted(rows, key=lambda r: -r[2]):
        if u > n / 100 and k != "info":
            print(f"    {k}: {c / n:.2f} calls, {u / n:.1f} µs per delivery ({u / c:.2f} µs a call)")
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
