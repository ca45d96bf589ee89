# Helpers the scripts of docs/bench share; sourced, not run.
SECRET=bench-token-secret-0123456789abcdef KEY=bench-api-key-0123456789

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }               # utime+stime of a live process
busy()  { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; } # all cores
cpu_all() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; } # all cores, idle included

# start_node BIN DIR [serve flags…]: BIN serve with its data (and its log,
# node.log) in DIR, on two free loopback ports; returns once /readyz says
# it is ready. Sets NODE (its pid), URL and ADMIN.
start_node() {
  local bin=$1 dir=$2 p q; shift 2
  p=$(free_port); q=$(free_port); mkdir -p "$dir"
  "$bin" serve --data-dir "$dir" --token-secret $SECRET --api-key $KEY \
    --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$q "$@" 2>"$dir/node.log" &
  NODE=$! URL=http://127.0.0.1:$p ADMIN=http://127.0.0.1:$q
  until curl -sf $URL/readyz >/dev/null; do sleep 0.1; done
}

# start_redis DIR [redis-server flags…]: a redis-server on a free loopback
# port with its files in DIR, no RDB snapshots; returns once it answers.
# Sets REDIS (its pid) and RP (its port).
start_redis() {
  local dir=$1; shift
  RP=$(free_port)
  redis-server --bind 127.0.0.1 --port $RP --dir "$dir" --save '' --logfile "$dir/redis.log" "$@" &
  REDIS=$!
  until redis-cli -p $RP ping >/dev/null 2>&1; do sleep 0.1; done
}

# counted SECONDS OUT CMD…: runs CMD, stopped after SECONDS, with its
# output in OUT.json and its errors in OUT.err. Sets RC to its exit status
# and CMD_TICKS to the CPU it and its children used (a bash in between
# reads that from its own /proc stat once CMD has exited).
counted() {
  local limit=$1 out=$2; shift 2
  timeout $limit bash -c '"$@" >"$0.json" 2>"$0.err"; s=$?; awk "{print \$16+\$17}" /proc/$$/stat >"$0.ticks"; exit $s' "$out" "$@"
  RC=$?
  CMD_TICKS=$(cat "$out.ticks" 2>/dev/null || echo 0); rm -f "$out.ticks"
}
