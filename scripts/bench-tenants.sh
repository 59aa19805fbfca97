#!/usr/bin/env bash
# bench-tenants.sh — many tenants and logins per second, pgtenant and PgBouncer
# side by side in one run (issue 14, goals 4 and 5). Ratios, never absolute
# figures: the machine is shared and noisy.
#
#   cargo build --release && scripts/bench-tenants.sh
#
# Scenarios, each run against each pooler, interleaved, ROUNDS times (median):
#   one-tenant    200 clients on 200 connections of one tenant (each pooler's
#                 single-tenant throughput: the baseline)
#   one-tenant-wide
#                 200 clients over 1,000 connections of one tenant: what the
#                 number of connections costs, apart from tenant switches
#   many-tenants  200 clients over 1,000 connections, one per tenant, each
#                 transaction on the longest-idle connection, so every tenant
#                 takes turns; 1,000 schema tenants on 20 server connections
#   login-trust / login-scram
#                 a new connection per transaction (`--connect`), 8 clients,
#                 one tenant: logins per second (on many tenants PgBouncer
#                 would also need a server login per client login, to learn
#                 each new pool's server parameters: not a fair comparison)
# pgtenant: static schema tenants with context isolation (they share server
# connections; pgtenant switches search_path on checkout), pool_size 20 on a
# server with max_connections 20. PgBouncer 1.18 as well as it can be set up
# for this: one [databases] entry per tenant whose connect_query sets its
# search_path, default_pool_size 20 and max_user_connections 20 (it closes an
# idle connection of another pool when the user is at its cap).
# The load generator is `pgtenant bench run`, which also checks that every
# answer comes from the connection's own tenant (a wrong answer fails the run).
#
# Env: TENANTS (1000), CLIENTS (200), LOGIN_CLIENTS (8), DURATION (10 s),
# ROUNDS (2), POOL (20), PGTENANT_BIN (target/release/pgtenant), PG_BIN,
# SCENARIOS ("one-tenant one-tenant-wide many-tenants login-trust login-scram").
# Needs initdb/pg_ctl, psql and pgbouncer (apt-get install -y postgresql pgbouncer).
set -euo pipefail
TENANTS=${TENANTS:-1000}; CLIENTS=${CLIENTS:-200}; LOGIN_CLIENTS=${LOGIN_CLIENTS:-8}
DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-2}; POOL=${POOL:-20}
SCENARIOS=${SCENARIOS:-"one-tenant one-tenant-wide many-tenants login-trust login-scram"}
PGTENANT_BIN=${PGTENANT_BIN:-$PWD/target/release/pgtenant}
PGBOUNCER=${PGBOUNCER:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}
[ -x "$PGTENANT_BIN" ] || { echo "no $PGTENANT_BIN: cargo build --release (or set PGTENANT_BIN)" >&2; exit 2; }
[ -x "$PGBOUNCER" ] || { echo "pgbouncer missing: apt-get install -y pgbouncer" >&2; exit 2; }
# Below the ephemeral range (32768-60999): after thousands of logins a
# port there may be taken by a TIME-WAIT connection.
PG_PORT=25441; PT_TRUST=28451; PT_SCRAM=28452; PB_TRUST=26451; PB_SCRAM=26452
PASSWORD=bench-secret
for p in $PG_PORT $PT_TRUST $PT_SCRAM $PB_TRUST $PB_SCRAM; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is in use (a run still going?)" >&2; exit 2; fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

CLUSTER_NAME=bench-tenants; . "$(dirname "$0")/../benches/cluster.sh"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

log "PostgreSQL on $PG_PORT, $TENANTS tenants"
cluster_start "$PG_PORT" 200 $'shared_buffers = 256MB\nlog_min_messages = warning'
psql -X -q -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -c "CREATE DATABASE bench"
# Both poolers keep a SCRAM verifier, not the password (as a careful
# operator does; PgBouncer with a plaintext auth_file runs PBKDF2 per login).
VERIFIER=$(psql -X -qAt -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres \
  -c "SET password_encryption = 'scram-sha-256'" -c "CREATE ROLE bench_verifier PASSWORD '$PASSWORD'" \
  -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench_verifier'")
"$PGTENANT_BIN" bench init --url "postgres://postgres@127.0.0.1:$PG_PORT/bench" \
  --tenants "$TENANTS" 2>&1 | tail -1 >&2

# ---------------------------------------------------------------- poolers
. "$(dirname "$0")/../benches/tenants_config.sh"
pgtenant_config() { # port auth-method
  tenants_config "$1" "$2" "[{ name = \"postgres\", password = \"$VERIFIER\" }]"
}
pgbouncer_config() { # port auth_type
  echo "[databases]"
  for i in $(seq 1 "$TENANTS"); do
    echo "tenant$i = host=127.0.0.1 port=$PG_PORT dbname=bench connect_query='SET search_path TO t_tenant$i'"
  done
  cat <<EOC
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = $2
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_user_connections = $POOL
max_client_conn = 100000
ignore_startup_parameters = extra_float_digits
server_reset_query =
logfile = $WORK/pgbouncer-$1.log
log_connections = 0
log_disconnections = 0
EOC
}
printf '"postgres" "%s"\n' "$VERIFIER" >"$WORK/userlist.txt"
pgtenant_config $PT_TRUST trust >"$WORK/pt-trust.toml"
pgtenant_config $PT_SCRAM scram-sha-256 >"$WORK/pt-scram.toml"
pgbouncer_config $PB_TRUST trust >"$WORK/pb-trust.ini"
pgbouncer_config $PB_SCRAM scram-sha-256 >"$WORK/pb-scram.ini"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"/*.ini "$WORK/userlist.txt"
declare -A PID
for kind in trust scram; do
  RUST_LOG=warn "$PGTENANT_BIN" serve --config "$WORK/pt-$kind.toml" >"$WORK/pt-$kind.log" 2>&1 &
  PID[pgtenant-$kind]=$!; pids+=($!)
  "${AS_PG[@]}" "$PGBOUNCER" "$WORK/pb-$kind.ini" >"$WORK/pb-$kind.stdout" 2>&1 &
  PID[pgbouncer-$kind]=$!; pids+=($!)
done
export PGPASSWORD=$PASSWORD
for port in $PT_TRUST $PT_SCRAM $PB_TRUST $PB_SCRAM; do
  for _ in $(seq 1 100); do
    psql -X -q -h 127.0.0.1 -p $port -U postgres -d tenant1 -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2
  done
done
log "pgtenant and PgBouncer up (trust and SCRAM each)"

# ---------------------------------------------------------------- runs
url() { # pooler kind
  case "$1-$2" in
    pgtenant-trust) echo "postgres://postgres.{tenant}@127.0.0.1:$PT_TRUST/bench" ;;
    pgtenant-scram) echo "postgres://postgres.{tenant}:$PASSWORD@127.0.0.1:$PT_SCRAM/bench" ;;
    pgbouncer-trust) echo "postgres://postgres@127.0.0.1:$PB_TRUST/{tenant}" ;;
    pgbouncer-scram) echo "postgres://postgres:$PASSWORD@127.0.0.1:$PB_SCRAM/{tenant}" ;;
  esac
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RES=$WORK/results.tsv; : >"$RES"
run() { # scenario pooler
  local kind=trust args=()
  case "$1" in
    one-tenant) args=(--tenants 1 --connections "$CLIENTS" --clients "$CLIENTS") ;;
    one-tenant-wide) args=(--tenants 1 --connections "$TENANTS" --clients "$CLIENTS") ;;
    many-tenants) args=(--tenants "$TENANTS" --connections "$TENANTS" --clients "$CLIENTS") ;;
    login-trust) args=(--tenants 1 --clients "$LOGIN_CLIENTS" --connect) ;;
    login-scram) kind=scram; args=(--tenants 1 --clients "$LOGIN_CLIENTS" --connect) ;;
  esac
  local pid=${PID[$2-$kind]} before after out
  before=$(ticks "$pid")
  out=$("$PGTENANT_BIN" bench run --url "$(url "$2" $kind)" "${args[@]}" \
          --duration "${DURATION}s" --warmup 2s 2>"$WORK/bench.err") || {
    log "WARNING: $1 via $2 did not pass:"; echo "$out" | grep -v '^summary' >&2; tail -3 "$WORK/bench.err" >&2; }
  after=$(ticks "$pid")
  local line tps
  line=$(echo "$out" | grep '^summary' || echo "summary tps=0")
  tps=$(sed -E 's/.*tps=([0-9.]+).*/\1/' <<<"$line")
  # pooler CPU µs per transaction (the warm-up's CPU counted too: a slight over-estimate for both)
  local cpu
  cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v tps="$tps" -v d="$DURATION" -v w=2 \
        'BEGIN { printf "%.1f", (tps > 0) ? t / hz * 1e6 / (tps * (d + w)) : 0 }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$tps" "$cpu" "$line" >>"$RES"
  log "$1 via $2: tps=$tps cpu_us_per_txn=$cpu ($line)"
}
for r in $(seq 1 "$ROUNDS"); do
  for s in $SCENARIOS; do
    if [ $((r % 2)) = 1 ]; then run "$s" pgtenant; run "$s" pgbouncer
    else run "$s" pgbouncer; run "$s" pgtenant; fi
  done
done

# ---------------------------------------------------------------- report
echo
echo "$("$PG_BIN/postgres" --version); $("$PGBOUNCER" --version | head -1); $(nproc) CPUs;" \
     "$TENANTS tenants, $CLIENTS clients, pool $POOL, ${DURATION}s x $ROUNDS rounds (median)"
awk -F'\t' '
  function med(k,   i, j, n, a, t) { n = cnt[k]; for (i = 1; i <= n; i++) a[i] = v[k, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { k = $1 SUBSEP $2; cnt[k]++; v[k, cnt[k]] = $3; cpu[k] += $4
    if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
    if ($5 !~ /errors=0 wrong_tenant=0/) bad[k]++ }
  END {
    printf "%-13s %12s %12s %9s %13s %13s\n", "scenario", "pgtenant", "pgbouncer", "ratio", "pgt_cpu_us", "pgb_cpu_us"
    for (i = 1; i <= n; i++) { s = order[i]; a = med(s SUBSEP "pgtenant"); b = med(s SUBSEP "pgbouncer")
      printf "%-13s %12.0f %12.0f %9s %13.1f %13.1f%s\n", s, a, b, (b > 0) ? sprintf("%.2f", a / b) : "-",
        cpu[s SUBSEP "pgtenant"] / cnt[s SUBSEP "pgtenant"], cpu[s SUBSEP "pgbouncer"] / cnt[s SUBSEP "pgbouncer"],
        (bad[s SUBSEP "pgtenant"] || bad[s SUBSEP "pgbouncer"]) ? "  (errors: see log)" : "" }
    one = med("one-tenant" SUBSEP "pgtenant"); many = med("many-tenants" SUBSEP "pgtenant")
    wide = med("one-tenant-wide" SUBSEP "pgtenant")
    if (one > 0 && many > 0) printf "pgtenant many-tenants / one-tenant: %.2f\n", many / one
    if (wide > 0 && many > 0) printf "pgtenant many-tenants / one-tenant-wide: %.2f\n", many / wide
  }' "$RES"
