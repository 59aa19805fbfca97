# cluster.sh — sourced by the benchmark scripts (benches/*.sh,
# scripts/bench-tenants.sh): a throw-away PostgreSQL in a temporary
# directory, stopped and removed on exit, after the processes the script
# started (added to `pids`) are killed.
#
#   . "$(dirname "$0")/cluster.sh"          # CLUSTER_NAME names the directory
#   cluster_start PORT MAX_CONNECTIONS [more postgresql.conf lines]
#
# Sets WORK (the directory; owned by postgres when run as root), PG_BIN,
# AS_PG / as_pg (run as the postgres user when root: setpriv execs, so "$!"
# of a backgrounded "${AS_PG[@]}" command is the command's own PID), pids,
# and wait_port PORT. Ports of these scripts stay below the ephemeral range
# (32768-60999): after thousands of connections a port there may be taken
# by a TIME-WAIT connection, or a closed one self-connect.
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
WORK=$(mktemp -d "/tmp/${CLUSTER_NAME:-pgtenant-bench}.XXXXXX"); chmod 755 "$WORK"
AS_PG=(); [ "$(id -u)" = 0 ] && AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
as_pg() { "${AS_PG[@]}" "$@"; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
pids=()
cluster_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cluster_cleanup EXIT
cluster_start() { # port max_connections [more postgresql.conf lines]
  as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust >/dev/null
  cat >>"$WORK/data/postgresql.conf" <<EOC
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$WORK'
max_connections = $2
fsync = off
${3:-}
EOC
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start >/dev/null
}
wait_port() {
  for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p "$1" && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; return 1
}
