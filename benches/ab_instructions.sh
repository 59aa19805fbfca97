#!/usr/bin/env bash
# ab_instructions.sh — A/B of two pgtenant binaries by the instructions they
# retire per transaction, counted by valgrind's callgrind: nearly the same count
# for the same binary and load whatever else the machine does, where time
# (ab.sh) swings ±10% on a shared 2-vCPU machine (an A/A run of ab.sh gave
# 0.92-1.15). Only the client sessions' code is counted (serve_client and
# what it calls: login, checkout, relay), not background tasks, whose work
# grows with wall time under valgrind. An A/A run still spreads 3-4% (read
# sizes follow timing). Each binary runs under callgrind while pgbench sends a fixed
# number of transactions, twice (N and 2N per client): the difference is N
# transactions' worth, start-up and shutdown cancelled out.
#
#   benches/ab_instructions.sh OLD_BINARY NEW_BINARY
#
# Env: MODES ("simple extended prepared"), TXNS per client (400), CLIENTS (4),
# CONNECT=1: a new connection per transaction (pgbench -C), counting every
# task's polls (the login starts in the listener's), so logins are compared.
# Needs valgrind, initdb/pg_ctl, pgbench, psql.
set -euo pipefail
A=${1:?binary A}; B=${2:?binary B}
MODES=${MODES:-"simple extended prepared"}
TXNS=${TXNS:-400}; CLIENTS=${CLIENTS:-4}
PG_PORT=${PG_PORT:-25433}; PORT=28451
CLUSTER_NAME=pgtenant-abi; . "$(dirname "$0")/cluster.sh"
cluster_start "$PG_PORT" 100
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE bench"
pgbench -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1
cat >"$WORK/p.toml" <<EOC
[proxy]
listen = "127.0.0.1:$PORT"
worker_threads = 1
[auth]
method = "trust"
users = [{ name = "postgres" }]
[servers.main]
port = $PG_PORT
user = "postgres"
[tiers.bench]
pool_size = $CLIENTS
[[tenants]]
key = "bench"
server = "main"
database = "bench"
tier = "bench"
mode = "database"
EOC
COLLECT='*serve_client*'
[ -n "${CONNECT:-}" ] && COLLECT='*tokio*runtime*task*raw*poll*'
count() { # binary mode transactions-per-client -> instructions
  local out="$WORK/cg.$$.$RANDOM"
  RUST_LOG=warn valgrind --tool=callgrind --toggle-collect="$COLLECT" --callgrind-out-file="$out" "$1" serve --config "$WORK/p.toml" \
    >"$WORK/v.log" 2>&1 & local pid=$!
  # Under valgrind a start takes seconds (debug info is read first).
  for _ in $(seq 1 600); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.1; done
  local done
  done=$(pgbench -n -S ${CONNECT:+-C} -M "$2" -c "$CLIENTS" -j 1 -t "$3" -h 127.0.0.1 -p "$PORT" -U postgres bench 2>&1 \
    | awk '/number of transactions actually processed/ {split($NF, a, "/"); print a[1]}')
  [ "${done:-0}" = $(( $3 * CLIENTS )) ] || { echo "pgbench through $1 processed ${done:-0} transactions" >&2; exit 1; }
  kill -TERM "$pid"; wait "$pid" || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
printf '%-10s %14s %14s %8s  (instructions per transaction)\n' mode A B B/A
for mode in $MODES; do
  a=$(( $(count "$A" "$mode" $((2 * TXNS))) - $(count "$A" "$mode" "$TXNS") ))
  b=$(( $(count "$B" "$mode" $((2 * TXNS))) - $(count "$B" "$mode" "$TXNS") ))
  n=$((TXNS * CLIENTS))
  printf '%-10s %14s %14s %8s\n' "$mode" "$((a / n))" "$((b / n))" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.4f", b/a}')"
done
