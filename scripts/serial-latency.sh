#!/usr/bin/env bash
# One client, one command at a time: Larder against redis-server side by side (issue 12's hash
# fuzz target, issue 13's latency), with the CPU each server spends per command.
#   cargo build --release -p larder && scripts/serial-latency.sh
# Prints, for `larder up`, for redis-server (no persistence, and appendfsync always) and for the
# latter behind `larder relay` (a zero-work TCP relay: the cheapest proxy hop there can be, so
# its row is what any proxy in front of the server costs a serial client on this machine):
# - the times of Redis's own "Hash fuzzing" tests (../shared/redis-tests, unit/type/hash);
# - `redis-benchmark -c 1` SET, GET, HSET, HGET: requests/s, p50/p99 ms, and the server's CPU
#   microseconds per request (user + system time of its process over the run, less what it
#   spends idle in as long, measured first; for Larder that is the proxy, the center and all
#   three replicas, behind the relay redis-server and the relay; two cores can give up to 2 s
#   of it a second).
# Serial latency is what a client that waits for each reply sees (the hash fuzz test is one).
# Env: LARDER (binary), GROUPS_N (slot groups, default `larder up`'s: one per node), N (requests per
# benchmark, default 10000), SUITE (default ../shared/redis-tests). Needs redis-server,
# redis-benchmark, redis-cli and tclsh.
set -euo pipefail
L=${LARDER:-target/release/larder}
N=${N:-10000}
SUITE=${SUITE:-../shared/redis-tests}
W=$(mktemp -d /tmp/larder-serial.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; for p in 6391 6392; do redis-cli -p $p shutdown nosave >/dev/null 2>&1 || true; done; sleep 1; rm -rf "$W"' EXIT
TCK=$(getconf CLK_TCK)

# Ports of their own, so a `larder up` with the default ports may run beside this one.
"$L" up --dir "$W/data" ${GROUPS_N:+--groups "$GROUPS_N"} --listen 127.0.0.1:6390 --center-port 0 \
  --no-metrics > "$W/up.log" 2>&1 &
LARDER_PID=$!
for _ in $(seq 1 300); do grep -q '^try:' "$W/up.log" 2>/dev/null && break; sleep 0.2; done
grep -q '^try:' "$W/up.log" || { echo "larder up did not come up:"; cat "$W/up.log"; exit 1; }
redis-server --port 6391 --save "" --appendonly no --dir "$W" --daemonize yes \
  --pidfile "$W/r1.pid" >/dev/null
redis-server --port 6392 --save "" --appendonly yes --appendfsync always --dir "$W" \
  --appenddirname aof2 --daemonize yes --pidfile "$W/r2.pid" >/dev/null
"$L" relay --listen 127.0.0.1:6393 --to 127.0.0.1:6392 > "$W/relay.log" 2>&1 &
RELAY_PID=$!
sleep 1

# The suite in a scratch copy (it writes under tests/tmp), as run-against does.
cp -r "$SUITE/runtest" "$SUITE/tests" "$W/" && chmod -R u+w "$W/tests" && mkdir -p "$W/src"
for b in redis-cli redis-benchmark redis-server; do ln -s "$(command -v $b)" "$W/src/$b"; done

cpu_ticks() { # PIDS (comma-separated) -> their CPU ticks together
  local total=0 pid
  for pid in ${1//,/ }; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$total"
}

hash_fuzz() { # PORT -> "t1 t2" (ms of the two 512-field tests)
  (cd "$W" && tclsh tests/test_helper.tcl --host 127.0.0.1 --port "$1" --singledb \
    --ignore-encoding --ignore-digest --clients 1 --durable --timeout 120 \
    --tags "-needs:debug -needs:repl" --single unit/type/hash --only "/Hash fuzzing") 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g' | grep -E '^\[(ok|err)\].*512 fields' |
    sed -E 's/.*\(([0-9]+) ms\).*/\1/' | paste -sd' '
}

idle_rate() { # PID -> CPU ticks per second the server spends with no client (heartbeats)
  local before after
  before=$(cpu_ticks "$1"); sleep 5; after=$(cpu_ticks "$1")
  awk -v t=$((after - before)) 'BEGIN{printf "%.2f", t / 5}'
}

bench() { # PORT PID IDLE ARGS... -> "rps p50 p99 cpu_us_per_request_above_idle"
  local port=$1 pid=$2 idle=$3; shift 3
  local before after start end line
  before=$(cpu_ticks "$pid"); start=$(date +%s.%N)
  line=$(redis-benchmark -p "$port" -c 1 -n "$N" -r 100000 --csv "$@" 2>/dev/null | tail -1)
  after=$(cpu_ticks "$pid"); end=$(date +%s.%N)
  echo "$line" | awk -v t=$((after - before)) -v tck="$TCK" -v n="$N" -v idle="$idle" \
    -v secs="$(awk -v a="$start" -v b="$end" 'BEGIN{print b - a}')" \
    '{gsub(/"/, "", $0); split($0, f, ","); busy = t - idle * secs; if (busy < 0) busy = 0;
      printf "%s %s %s %.0f", f[2], f[5], f[7], busy * 1e6 / tck / n}'
}

declare -A PID=([larder]=$LARDER_PID [redis]=$(cat "$W/r1.pid") [redis-always]=$(cat "$W/r2.pid")
  [always+relay]="$(cat "$W/r2.pid"),$RELAY_PID")
declare -A PORT=([larder]=6390 [redis]=6391 [redis-always]=6392 [always+relay]=6393)
SERVERS=(larder redis redis-always always+relay)
declare -A FUZZ ROW
declare -A IDLE
for s in "${SERVERS[@]}"; do
  FUZZ[$s]=$(hash_fuzz "${PORT[$s]}")
  IDLE[$s]=$(idle_rate "${PID[$s]}")
  ROW[$s,SET]=$(bench "${PORT[$s]}" "${PID[$s]}" "${IDLE[$s]}" -t set)
  ROW[$s,GET]=$(bench "${PORT[$s]}" "${PID[$s]}" "${IDLE[$s]}" -t get)
  ROW[$s,HSET]=$(bench "${PORT[$s]}" "${PID[$s]}" "${IDLE[$s]}" hset 'h:{serial}' __rand_int__ vvvvvvvv)
  ROW[$s,HGET]=$(bench "${PORT[$s]}" "${PID[$s]}" "${IDLE[$s]}" hget 'h:{serial}' __rand_int__)
done

echo "Hash fuzzing, 512 fields, #1 and #2 (ms; ratio = Larder / peer):"
for s in "${SERVERS[@]}"; do
  read -r a b <<< "${FUZZ[$s]}"
  read -r la lb <<< "${FUZZ[larder]}"
  printf '  %-13s %6s %6s   ratio %s %s\n' "$s" "$a" "$b" \
    "$(awk -v x="$la" -v y="$a" 'BEGIN{printf "%.1f", x/y}')" \
    "$(awk -v x="$lb" -v y="$b" 'BEGIN{printf "%.1f", x/y}')"
done
echo
echo "redis-benchmark -c 1 -n $N (requests/s, p50 ms, p99 ms, server CPU µs per request above"
echo "its idle use; idle CPU ms/s: $(for s in "${SERVERS[@]}"; do printf '%s %.0f  ' "$s" \
  "$(awk -v i="${IDLE[$s]}" -v tck="$TCK" 'BEGIN{print i * 1000 / tck}')"; done)):"
printf '  %-6s' cmd; for s in "${SERVERS[@]}"; do printf ' | %-30s' "$s"; done; echo
for c in SET GET HSET HGET; do
  printf '  %-6s' "$c"
  for s in "${SERVERS[@]}"; do
    read -r rps p50 p99 cpu <<< "${ROW[$s,$c]}"
    printf ' | %9s/s %6s %6s %5s µs' "$rps" "$p50" "$p99" "$cpu"
  done
  echo
done
