#!/usr/bin/env bash
# Grow a local cluster under load and print what clients saw (the issue-10 figures):
#   cargo build --release -p larder && scripts/elastic-figures.sh
# `larder up --groups 8` (3 nodes), scripts/resp_load.py (4 clients SET/GET) throughout; two
# nodes join; `split 1`, `split 5`; `rebalance` (slot moves, then replica/leader balance).
# Prints the migrations (records/s, cutover ms) and the load's JSON (-TRYAGAIN count, errors,
# keys missing afterwards, latency, cutover pauses as clients saw them).
set -euo pipefail
L=${LARDER:-target/release/larder}
C=101@127.0.0.1:7101,102@127.0.0.1:7102,103@127.0.0.1:7103
W=$(mktemp -d /tmp/larder-elastic.XXXX)
# KEEP_LOGS=DIR keeps the servers' logs (to match long pauses with routing refreshes).
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; [ -n "${KEEP_LOGS:-}" ] && mkdir -p "$KEEP_LOGS" && cp "$W"/*.log "$W"/load.json "$KEEP_LOGS"/; rm -rf "$W"' EXIT
"$L" up --dir "$W/data" --groups 8 > "$W/up.log" 2>&1 &
# `larder up` prints its `try:` line once every group serves (its proxy listens earlier and
# answers -TRYAGAIN until then, which would count as a cutover pause).
for _ in $(seq 1 300); do grep -q '^try:' "$W/up.log" 2>/dev/null && break; sleep 0.2; done
# The nodes and admin commands below prove the secret `larder up` wrote.
export LARDER_CLUSTER_SECRET_FILE="$W/data/cluster.secret"
python3 scripts/resp_load.py --port 6380 --threads 4 --stop "$W/stop" > "$W/load.json" &
LOAD=$!
sleep 3
start=$(date +%s.%N)
"$L" node --id 4 --dir "$W/n4" --center "$C" > "$W/n4.log" 2>&1 &
sleep 3
"$L" node --id 5 --dir "$W/n5" --center "$C" > "$W/n5.log" 2>&1 &
sleep 1
"$L" admin split 1 --wait
"$L" admin split 5 --wait
"$L" admin rebalance --settle 120s
echo "grow, split and rebalance: $(echo "$(date +%s.%N) - $start" | bc) s"
touch "$W/stop"
wait $LOAD
"$L" admin migrations
echo "load: $(cat "$W/load.json")"
