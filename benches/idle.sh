#!/usr/bin/env bash
# idle.sh — resident memory per idle client, pgtenant against PgBouncer, on
# one throw-away PostgreSQL (issue 14, goal 3). Each pooler gets N clients
# that log in, run one `SELECT 1` and go idle (benches/idle_clients.py); the
# pooler's RSS growth per client is printed after they settled (pgtenant gives
# an idle client's relay buffers back after 1-2 s).
#
#   cargo build --release && benches/idle.sh target/release/pgtenant
#
# Env: N (5000 clients; each side needs N file descriptors, and `ulimit -n`
# caps it), SETTLE (4 s), PARAMS (more startup parameters, as a driver sends
# them; PARAMS=jdbc is pgjdbc's set: client_encoding, DateStyle, TimeZone,
# extra_float_digits, application_name). PgBouncer runs when installed
# (apt-get install -y pgbouncer). Needs initdb/pg_ctl, psql, python3.
set -euo pipefail
BIN=${1:?pgtenant binary}
N=${N:-5000}; SETTLE=${SETTLE:-4}; PARAMS=${PARAMS:-}
[ "$PARAMS" = jdbc ] && PARAMS="client_encoding=UTF8 DateStyle=ISO TimeZone=UTC extra_float_digits=2 application_name=pgjdbc"
PARAM_ARGS=(); for p in $PARAMS; do PARAM_ARGS+=(--param "$p"); done
HERE=$(cd "$(dirname "$0")" && pwd)
PG_PORT=${PG_PORT:-25491}; PT_PORT=26491; PB_PORT=26492
PGBOUNCER=${PGBOUNCER:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((N + 100)) ] || { echo "ulimit -n $(ulimit -n) is too low for N=$N" >&2; exit 2; }
CLUSTER_NAME=pgtenant-idle; . "$HERE/cluster.sh"
cluster_start "$PG_PORT" 100
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE bench"
cat >"$WORK/pt.toml" <<EOF
[proxy]
listen = "127.0.0.1:$PT_PORT"
max_client_conn = $((N + 100))
[auth]
method = "trust"
users = [{ name = "postgres" }]
[servers.main]
host = "127.0.0.1"
port = $PG_PORT
user = "postgres"
[tiers.bench]
pool_size = 20
max_client_conn = $((N + 100))
[[tenants]]
key = "bench"
mode = "database"
server = "main"
database = "bench"
tier = "bench"
EOF
RUST_LOG=warn "$BIN" serve --config "$WORK/pt.toml" >"$WORK/pt.log" 2>&1 & PT=$!; pids+=($PT)
wait_port $PT_PORT
echo "pgtenant:  $(python3 "$HERE/idle_clients.py" --port $PT_PORT --pid $PT --user postgres --db bench -n "$N" --settle "$SETTLE" "${PARAM_ARGS[@]}")"
kill $PT
if [ -x "$PGBOUNCER" ]; then
  printf '"postgres" ""\n' >"$WORK/userlist.txt"
  cat >"$WORK/pb.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
ignore_startup_parameters = extra_float_digits
default_pool_size = 20
max_client_conn = $((N + 100))
logfile = $WORK/pb.log
EOF
  [ "$(id -u)" = 0 ] && chown postgres "$WORK/pb.ini" "$WORK/userlist.txt"
  # setpriv and bash -c both exec: "$!" is PgBouncer's own PID.
  "${AS_PG[@]}" bash -c "ulimit -n $(ulimit -n); exec $PGBOUNCER $WORK/pb.ini" >"$WORK/pb.stdout" 2>&1 &
  PB=$!; pids+=("$PB")
  wait_port $PB_PORT
  echo "PgBouncer: $(python3 "$HERE/idle_clients.py" --port $PB_PORT --pid "$PB" --user postgres --db bench -n "$N" --settle "$SETTLE" "${PARAM_ARGS[@]}")"
fi
