# tenants_config.sh — sourced by scripts/bench-tenants.sh and
# benches/ab_tenants.sh: the pgtenant config of their many-tenant runs.
#
#   tenants_config PORT AUTH_METHOD USERS_TOML
#
# TENANTS static schema tenants (tenant1..N, schemas t_tenant1..N as
# `pgtenant bench init` makes them) with context isolation, so they share
# server connections: pool_size POOL on a server (127.0.0.1:PG_PORT,
# database bench, user postgres) with max_connections POOL.
tenants_config() { # port auth-method users-toml
  cat <<EOC
[proxy]
listen = "127.0.0.1:$1"
max_client_conn = 100000
[auth]
method = "$2"
users = $3
[servers.main]
host = "127.0.0.1"
port = $PG_PORT
database = "bench"
user = "postgres"
max_connections = $POOL
[tiers.many]
pool_size = $POOL
isolation = "context"
max_client_conn = 100000
EOC
  for i in $(seq 1 "$TENANTS"); do
    printf '[[tenants]]\nkey = "tenant%d"\nmode = "schema"\nserver = "main"\ntier = "many"\n' "$i"
  done
}
