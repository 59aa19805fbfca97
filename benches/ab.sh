#!/usr/bin/env bash
# ab.sh — A/B of two pgtenant binaries, interleaved against one throw-away
# PostgreSQL: pgbench -S through each, round after round, reporting the median
# tps and pooler CPU per transaction of each and their ratio. For the "A/B
# against the previous commit" every relay change reports (a ratio from one
# run, never a timed test).
#
#   cargo build --release
#   git worktree add /tmp/old HEAD~1 && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release)
#   benches/ab.sh /tmp/old-target/release/pgtenant target/release/pgtenant
#
# Columns: tps (median), pooler CPU ns per transaction (from /proc), and
# instructions the pooler retires per transaction (perf stat, if installed:
# the least noisy figure on a shared machine).
# Env: MODES ("simple extended prepared"), CLIENTS (8), DURATION (10 s),
# ROUNDS (3), POOL_SIZE (20); EXTRA_A / EXTRA_B: TOML appended to A's / B's
# config (one binary with and without a setting, e.g.
# EXTRA_B=$'[metrics]\nlisten = "127.0.0.1:0"'); PROXY_A / PROXY_B: lines for A's /
# B's [proxy] table (e.g. PROXY_B='query_timeout = "30s"'); SERVER_A / SERVER_B: "tcp" (default)
# or "unix", how each reaches PostgreSQL (one binary over both: A/B of the
# socket kind); ISOLATION: "role" (default: a database tenant) or "context"
# (a schema tenant on pgbench's tables whose context, search_path and signed
# id, is set on every checkout). Needs initdb/pg_ctl, pgbench, psql.
set -euo pipefail
A=${1:?binary A}; B=${2:?binary B}
MODES=${MODES:-"simple extended prepared"}
CLIENTS=${CLIENTS:-8}; DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; POOL_SIZE=${POOL_SIZE:-20}
PG_PORT=${PG_PORT:-25431}; PORT_A=28441; PORT_B=28442
CLUSTER_NAME=pgtenant-ab; . "$(dirname "$0")/cluster.sh"
cluster_start "$PG_PORT" 200
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE bench"
pgbench -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1
config() { # port server-kind [proxy]-lines
  local host=127.0.0.1
  [ "$2" = unix ] && host=$WORK
  cat <<EOC
[proxy]
listen = "127.0.0.1:$1"
${3:-}
[auth]
method = "trust"
users = [{ name = "postgres" }]
[servers.main]
host = "$host"
port = $PG_PORT
user = "postgres"
max_connections = 150
[tiers.bench]
pool_size = $POOL_SIZE
isolation = "${ISOLATION:-role}"
[[tenants]]
key = "bench"
server = "main"
database = "bench"
tier = "bench"
EOC
  if [ "${ISOLATION:-role}" = context ]; then printf 'mode = "schema"\nschema = "public"\n'
  else printf 'mode = "database"\n'; fi
}
{ config $PORT_A "${SERVER_A:-tcp}" "${PROXY_A:-}"; printf '%s\n' "${EXTRA_A:-}"; } >"$WORK/a.toml"
{ config $PORT_B "${SERVER_B:-tcp}" "${PROXY_B:-}"; printf '%s\n' "${EXTRA_B:-}"; } >"$WORK/b.toml"
RUST_LOG=warn "$A" serve --config "$WORK/a.toml" >"$WORK/a.log" 2>&1 & PID_A=$!; pids+=($PID_A)
RUST_LOG=warn "$B" serve --config "$WORK/b.toml" >"$WORK/b.log" 2>&1 & PID_B=$!; pids+=($PID_B)
for p in $PORT_A $PORT_B; do
  for _ in $(seq 1 50); do psql -X -q -h 127.0.0.1 -p $p -U postgres -d bench -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Instructions the pooler retires per transaction (perf, when present): far
# less noisy than time on a shared machine.
instr() { # pid seconds -> instructions
  if command -v perf >/dev/null; then
    # Virtual machines often have no hardware counters: 0 then.
    perf stat -x, -e instructions -p "$1" -- sleep "$2" 2>&1 >/dev/null \
      | awk -F, '/instructions/ {print ($1 ~ /^[0-9]+$/) ? $1 : 0}'
  else echo 0; fi
}
run() { # port pid mode -> "tps cpu_ns_per_txn instructions_per_txn"
  local before after tps ins
  before=$(cpu "$2")
  instr "$2" "$((DURATION - 2))" >"$WORK/instr" &
  local ip=$!
  tps=$(pgbench -n -S -M "$3" -c "$CLIENTS" -j 2 -T "$DURATION" -h 127.0.0.1 -p "$1" -U postgres bench 2>/dev/null \
        | awk '/^tps/ {print int($3)}')
  wait $ip; ins=$(cat "$WORK/instr"); ins=${ins:-0}
  after=$(cpu "$2")
  echo "$tps $(( (after - before) * 10000 * 1000 / (tps * DURATION + 1) )) $(( ins / (tps * (DURATION - 2) + 1) ))"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-10s %10s %10s %8s %12s %12s %10s %10s\n' mode tps_A tps_B B/A cpu_ns_A cpu_ns_B instr_A instr_B
for mode in $MODES; do
  : >"$WORK/ra"; : >"$WORK/rb"
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then run $PORT_A $PID_A "$mode" >>"$WORK/ra"; run $PORT_B $PID_B "$mode" >>"$WORK/rb"
    else run $PORT_B $PID_B "$mode" >>"$WORK/rb"; run $PORT_A $PID_A "$mode" >>"$WORK/ra"; fi
  done
  ta=$(cut -d' ' -f1 "$WORK/ra" | median); tb=$(cut -d' ' -f1 "$WORK/rb" | median)
  ca=$(cut -d' ' -f2 "$WORK/ra" | median); cb=$(cut -d' ' -f2 "$WORK/rb" | median)
  ia=$(cut -d' ' -f3 "$WORK/ra" | median); ib=$(cut -d' ' -f3 "$WORK/rb" | median)
  printf '%-10s %10s %10s %8s %12s %12s %10s %10s\n' "$mode" "$ta" "$tb" \
    "$(awk -v a="$ta" -v b="$tb" 'BEGIN{printf "%.3f", b/a}')" "$ca" "$cb" "$ia" "$ib"
done
