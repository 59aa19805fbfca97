#!/usr/bin/env bash
# ab_tenants.sh — A/B of two pgtenant binaries on many context-isolation
# tenants sharing few server connections (issue 14, goal 4), interleaved
# against one throw-away PostgreSQL: `pgtenant bench run` through each,
# round after round. Reports the median tps, the pooler's CPU and the
# server's (every postgres process: a tenant switch is mostly server work)
# per transaction, and B/A. A ratio from one run, never a timed test.
#
#   benches/ab_tenants.sh /tmp/old-target/release/pgtenant target/release/pgtenant
#
# Scenarios: one-tenant (CLIENTS clients on as many connections of one
# tenant) and many-tenants (CLIENTS clients over TENANTS connections, one
# per tenant, so every tenant takes turns on POOL server connections);
# login (a trust login per transaction, 8 clients: logins per second).
# Env: TENANTS (1000), CLIENTS (200), POOL (20), DURATION (8 s), ROUNDS (3),
# PROTOCOL (simple), SCENARIOS ("one-tenant many-tenants").
# Needs initdb/pg_ctl and psql.
set -euo pipefail
A=${1:?binary A}; B=${2:?binary B}
TENANTS=${TENANTS:-1000}; CLIENTS=${CLIENTS:-200}; POOL=${POOL:-20}
DURATION=${DURATION:-8}; ROUNDS=${ROUNDS:-3}; PROTOCOL=${PROTOCOL:-simple}
SCENARIOS=${SCENARIOS:-"one-tenant many-tenants"}
PG_PORT=25461; PORT_A=28461; PORT_B=28462
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
CLUSTER_NAME=pgtenant-ab-tenants; . "$(dirname "$0")/cluster.sh"
cluster_start "$PG_PORT" $((POOL * 2 + 20)) $'shared_buffers = 256MB\nlog_min_messages = warning\nautovacuum = off'
psql -X -q -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -c "CREATE DATABASE bench"
"$B" bench init --url "postgres://postgres@127.0.0.1:$PG_PORT/bench" --tenants "$TENANTS" >/dev/null 2>&1
# Statistics once, so no ANALYZE runs (and invalidates caches) mid-run.
psql -X -q -h 127.0.0.1 -p $PG_PORT -U postgres -d bench -c "ANALYZE"
. "$(dirname "$0")/tenants_config.sh"
config() { tenants_config "$1" trust '[{ name = "postgres" }]'; }
config $PORT_A >"$WORK/a.toml"; config $PORT_B >"$WORK/b.toml"
RUST_LOG=warn "$A" serve --config "$WORK/a.toml" >"$WORK/a.log" 2>&1 & PID_A=$!; pids+=($PID_A)
RUST_LOG=warn "$B" serve --config "$WORK/b.toml" >"$WORK/b.log" 2>&1 & PID_B=$!; pids+=($PID_B)
for p in $PORT_A $PORT_B; do
  for _ in $(seq 1 100); do
    psql -X -q -h 127.0.0.1 -p $p -U postgres.tenant1 -d bench -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2
  done
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Every postgres process's CPU (backends live as long as pgtenant's links).
server_ticks() {
  local t=0 p
  for p in $(pgrep -x postgres); do t=$((t + $(ticks "$p" 2>/dev/null || echo 0))); done
  echo $t
}
run() { # scenario port pid -> "tps pooler_us server_us"
  local args
  case "$1" in
    one-tenant) args=(--tenants 1 --connections "$CLIENTS" --clients "$CLIENTS") ;;
    many-tenants) args=(--tenants "$TENANTS" --connections "$TENANTS" --clients "$CLIENTS") ;;
    login) args=(--tenants 1 --clients 8 --connect) ;;
  esac
  local p0 s0 p1 s1 out tps
  p0=$(ticks "$3"); s0=$(server_ticks)
  out=$("$B" bench run --url "postgres://postgres.{tenant}@127.0.0.1:$2/bench" "${args[@]}" \
          --protocol "$PROTOCOL" --duration "${DURATION}s" --warmup 0s 2>/dev/null | grep '^summary')
  p1=$(ticks "$3"); s1=$(server_ticks)
  [[ $out == *"errors=0 wrong_tenant=0"* ]] || echo "WARNING: $1 on $2: $out" >&2
  tps=$(sed -E 's/.*tps=([0-9.]+).*/\1/' <<<"$out")
  awk -v tps="$tps" -v d="$DURATION" -v p=$((p1 - p0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { n = tps * d + 1; printf "%d %.1f %.1f\n", tps, p / hz * 1e6 / n, s / hz * 1e6 / n }'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-13s %9s %9s %7s %11s %11s %11s %11s\n' scenario tps_A tps_B B/A pool_us_A pool_us_B server_us_A server_us_B
for s in $SCENARIOS; do
  : >"$WORK/ra"; : >"$WORK/rb"
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then run "$s" $PORT_A $PID_A >>"$WORK/ra"; run "$s" $PORT_B $PID_B >>"$WORK/rb"
    else run "$s" $PORT_B $PID_B >>"$WORK/rb"; run "$s" $PORT_A $PID_A >>"$WORK/ra"; fi
  done
  col() { cut -d' ' -f"$1" "$2" | median; }
  ta=$(col 1 "$WORK/ra"); tb=$(col 1 "$WORK/rb")
  printf '%-13s %9s %9s %7s %11s %11s %11s %11s\n' "$s" "$ta" "$tb" \
    "$(awk -v a="$ta" -v b="$tb" 'BEGIN{printf "%.3f", b/a}')" \
    "$(col 2 "$WORK/ra")" "$(col 2 "$WORK/rb")" "$(col 3 "$WORK/ra")" "$(col 3 "$WORK/rb")"
done
