#!/usr/bin/env bash
# `larder sync` side by side with a redis-server replica, on loopback, one run each:
#   cargo build --release -p larder && scripts/sync-figures.sh
# Prints, for Larder (two `larder up` clusters of 3 groups, the source with --retain-log 1h)
# and for redis-server 7 (a master without persistence and a replica given REPLICAOF):
# - the first copy of KEYS keys (Larder: one `larder sync --scratch` round; redis: the full
#   sync);
# - KEYS more written while the sync is stopped, then the sync started again with the same
#   `--scratch` (resumed from its checkpoint); redis: the replica's link cut and back (a
#   partial resync from the backlog);
# - KEYS more, then the sync started again from bases (no scratch directory: everything
#   copied again); redis: the replica restarted (a full sync);
# - the lag while streaming: KEYS SETs (redis-benchmark -c 50 -P 16) with `larder sync
#   --every 100ms` running / the replica linked, from the benchmark's end until the target's
#   DBSIZE equals the source's.
# Env: LARDER (binary), KEYS (default 100000). Needs redis-server, redis-cli, redis-benchmark.
set -euo pipefail
L=${LARDER:-target/release/larder}
KEYS=${KEYS:-100000}
W=$(mktemp -d /tmp/larder-sync.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; for p in 6431 6432; do redis-cli -p $p shutdown nosave >/dev/null 2>&1 || true; done; sleep 1; rm -rf "$W"' EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | xargs printf '%.2f'; }
up() { # NAME PROXY_PORT CENTER_PORT [ARGS...]
  local name=$1 port=$2 cport=$3
  shift 3
  "$L" up --dir "$W/$name" --groups 3 --listen 127.0.0.1:"$port" --center-port "$cport" \
    --no-metrics "$@" > "$W/$name.log" 2>&1 &
  for _ in $(seq 1 300); do grep -q '^try:' "$W/$name.log" 2>/dev/null && break; sleep 0.2; done
  grep -q '^try:' "$W/$name.log" || { echo "larder up $name did not come up"; cat "$W/$name.log"; exit 1; }
}
dbsize() { redis-cli -p "$1" dbsize; }
fill() { # PORT COUNT PREFIX
  redis-benchmark -p "$1" -c 50 -P 16 -n "$2" -r 1000000000 -t set -d 64 -q >/dev/null 2>&1
}
equal() { # SOURCE_PORT TARGET_PORT: waits until the target holds as many keys
  local want
  want=$(dbsize "$1")
  for _ in $(seq 1 6000); do [ "$(dbsize "$2")" = "$want" ] && return 0; sleep 0.01; done
  echo "target never reached $want keys (holds $(dbsize "$2"))"; return 1
}

up source 6410 7410 --retain-log 1h
up target 6420 7420
export LARDER_CLUSTER_SECRET_FILE="$W/source/cluster.secret"
CENTER=101@127.0.0.1:7410
SYNC=("$L" sync --center "$CENTER" --to 127.0.0.1:6420)

redis-server --port 6431 --save "" --appendonly no --dir "$W" --daemonize yes \
  --repl-diskless-sync yes --repl-diskless-sync-delay 0 --repl-backlog-size 256mb \
  --pidfile "$W/m.pid" >/dev/null
redis-server --port 6432 --save "" --appendonly no --dir "$W" --daemonize yes \
  --pidfile "$W/r.pid" >/dev/null
sleep 1

replica_up() { # waits for the replica's link and its offset equal to the master's
  for _ in $(seq 1 6000); do
    local info
    info=$(redis-cli -p 6432 info replication)
    if echo "$info" | grep -q 'master_link_status:up'; then
      local mo ro
      mo=$(redis-cli -p 6431 info replication | sed -n 's/^master_repl_offset:\([0-9]*\).*/\1/p')
      ro=$(echo "$info" | sed -n 's/^slave_repl_offset:\([0-9]*\).*/\1/p')
      [ -n "$ro" ] && [ "$ro" -ge "$mo" ] && return 0
    fi
    sleep 0.01
  done
  echo "the replica never caught up"; return 1
}

echo "keys per step: $KEYS (redis-benchmark -c 50 -P 16 -d 64 SET, random keys)"
fill 6410 "$KEYS"; fill 6431 "$KEYS"
t=$(now); "${SYNC[@]}" --scratch "$W/scratch" > "$W/first.out"; first_larder=$(since "$t")
t=$(now); redis-cli -p 6432 replicaof 127.0.0.1 6431 >/dev/null; replica_up; first_redis=$(since "$t")
printf '%-46s larder %7s s   redis %7s s   (%s / %s keys)\n' "first copy" "$first_larder" \
  "$first_redis" "$(dbsize 6420)" "$(dbsize 6432)"

fill 6410 "$KEYS"
t=$(now); "${SYNC[@]}" --scratch "$W/scratch" > "$W/resume.out"; resumed=$(since "$t")
grep -q 'resumed from the checkpoint' "$W/resume.out" || { echo "no resume:"; cat "$W/resume.out"; exit 1; }
redis-cli -p 6431 client kill type replica >/dev/null
fill 6431 "$KEYS"
t=$(now); replica_up; partial=$(since "$t")
printf '%-46s larder %7s s   redis %7s s   (%s / %s keys; redis partial resyncs: %s)\n' \
  "again, from the checkpoint / partial resync" "$resumed" "$partial" "$(dbsize 6420)" \
  "$(dbsize 6432)" "$(redis-cli -p 6431 info stats | sed -n 's/^sync_partial_ok:\([0-9]*\).*/\1/p')"

fill 6410 "$KEYS"
t=$(now); "${SYNC[@]}" > "$W/bases.out"; bases=$(since "$t")
fill 6431 "$KEYS"
redis-cli -p 6432 shutdown nosave >/dev/null 2>&1 || true
sleep 0.5
redis-server --port 6432 --save "" --appendonly no --dir "$W" --daemonize yes \
  --pidfile "$W/r.pid" >/dev/null
sleep 0.5
t=$(now); redis-cli -p 6432 replicaof 127.0.0.1 6431 >/dev/null; replica_up; full=$(since "$t")
printf '%-46s larder %7s s   redis %7s s   (%s / %s keys)\n' \
  "again, from bases / a restarted replica" "$bases" "$full" "$(dbsize 6420)" "$(dbsize 6432)"

# Streaming: writes while the sync runs every 100 ms / the replica is linked. The sync goes on
# from its checkpoint (NO_CHECKPOINT=1: from bases, in a temporary directory) and is caught up
# (its first round done) before the writes start.
if [ -n "${NO_CHECKPOINT:-}" ]; then SCRATCH=(); else SCRATCH=(--scratch "$W/scratch"); fi
"${SYNC[@]}" --every 100ms "${SCRATCH[@]}" > "$W/stream.out" 2>&1 &
STREAM=$!
for _ in $(seq 1 6000); do grep -q '^synced:' "$W/stream.out" && break; sleep 0.01; done
t=$(now); fill 6410 "$KEYS"; wrote=$(since "$t")
t=$(now); equal 6410 6420; lag_larder=$(since "$t")
kill $STREAM
t=$(now); fill 6431 "$KEYS"; wrote_redis=$(since "$t")
t=$(now); equal 6431 6432; lag_redis=$(since "$t")
printf '%-46s larder %7s s   redis %7s s   (writes took %s s / %s s)\n' \
  "streaming: lag after the last write" "$lag_larder" "$lag_redis" "$wrote" "$wrote_redis"
