#!/bin/sh
# First start of the compose stack: wait for PostgreSQL, create the app and
# catalog databases and three example tenants (schema, database, shared)
# unless they exist, then serve. Later starts only serve.
set -eu
export PGHOST=postgres PGUSER=postgres PGPASSWORD="$POSTGRES_PASSWORD"
until psql -d postgres -qAtc 'select 1' >/dev/null 2>&1; do sleep 1; done
for db in app platform; do
  psql -d postgres -qAtc "select 1 from pg_database where datname = '$db'" | grep -q 1 \
    || psql -d postgres -qc "create database $db"
done
for t in "acme schema premium" "globex database premium" "beta shared free"; do
  set -- $t
  pgtenant tenant list | grep -q "^$1 " || pgtenant tenant create "$1" --mode "$2" --tier "$3"
done
exec pgtenant serve
