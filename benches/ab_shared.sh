#!/usr/bin/env bash
# ab_shared.sh — A/B of two pgtenant binaries on shared-table tenants whose
# transactions keep switching one server connection between tenants: every
# transaction is a tenant switch (wipe, owner marker, signed context). The
# cost of context isolation's switch, side by side (see ab.sh for the rest).
#
#   benches/ab_shared.sh OLD_BIN NEW_BIN
#
# Env: TENANTS (2: clients of this many tenants share POOL_SIZE links),
# POOL_SIZE (1), DURATION (10 s), ROUNDS (3). Needs initdb/pg_ctl, pgbench, psql.
set -euo pipefail
A=${1:?binary A}; B=${2:?binary B}
TENANTS=${TENANTS:-2}; POOL_SIZE=${POOL_SIZE:-1}; DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}
PG_PORT=${PG_PORT:-25432}; PORT_A=28461; PORT_B=28462
HERE=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_NAME=pgtenant-abs; . "$(dirname "$0")/cluster.sh"
cluster_start "$PG_PORT" 100
for db in app platform; do psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE $db"; done
config() {
  cat <<EOC
[proxy]
listen = "127.0.0.1:$1"
[auth]
method = "trust"
users = [{ name = "app" }]
[servers.main]
port = $PG_PORT
user = "postgres"
database = "app"
[catalog]
server = "main"
database = "platform"
role_secret = "bench-only-secret"
[migrations]
dir = "$HERE/migrations"
[tiers.free]
pool_size = $POOL_SIZE
EOC
}
config $PORT_A >"$WORK/a.toml"; config $PORT_B >"$WORK/b.toml"
for t in $(seq 1 "$TENANTS"); do
  RUST_LOG=warn "$B" tenant create "s$t" --mode shared --tier free --config "$WORK/b.toml" >/dev/null
done
RUST_LOG=warn "$A" serve --config "$WORK/a.toml" >"$WORK/a.log" 2>&1 & PID_A=$!; pids+=($PID_A)
RUST_LOG=warn "$B" serve --config "$WORK/b.toml" >"$WORK/b.log" 2>&1 & PID_B=$!; pids+=($PID_B)
for p in $PORT_A $PORT_B; do
  for _ in $(seq 1 50); do psql -X -q -h 127.0.0.1 -p $p -U app.s1 -d app -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
done
echo 'SELECT count(*) FROM customers;' >"$WORK/q.sql"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # port pid -> "tps cpu_ns_per_txn" (tps summed over the tenants)
  local before after t tps=0
  local jobs=()
  before=$(cpu "$2")
  for t in $(seq 1 "$TENANTS"); do
    pgbench -n -f "$WORK/q.sql" -c 2 -T "$DURATION" -h 127.0.0.1 -p "$1" -U "app.s$t" app 2>/dev/null \
      | awk '/^tps/ {print int($3)}' >"$WORK/tps.$t" &
    jobs+=($!)
  done
  wait "${jobs[@]}"
  for t in $(seq 1 "$TENANTS"); do tps=$((tps + $(cat "$WORK/tps.$t"))); done
  after=$(cpu "$2")
  echo "$tps $(( (after - before) * 10000 * 1000 / (tps * DURATION + 1) ))"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$WORK/ra"; : >"$WORK/rb"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run $PORT_A $PID_A >>"$WORK/ra"; run $PORT_B $PID_B >>"$WORK/rb"
  else run $PORT_B $PID_B >>"$WORK/rb"; run $PORT_A $PID_A >>"$WORK/ra"; fi
done
ta=$(cut -d' ' -f1 "$WORK/ra" | median); tb=$(cut -d' ' -f1 "$WORK/rb" | median)
ca=$(cut -d' ' -f2 "$WORK/ra" | median); cb=$(cut -d' ' -f2 "$WORK/rb" | median)
printf '%-14s %10s %10s %8s %12s %12s\n' workload tps_A tps_B B/A cpu_ns_A cpu_ns_B
printf '%-14s %10s %10s %8s %12s %12s\n' "switching" "$ta" "$tb" \
  "$(awk -v a="$ta" -v b="$tb" 'BEGIN{printf "%.3f", b/a}')" "$ca" "$cb"
