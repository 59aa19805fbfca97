#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine with Rust:
# installs what the tests need (PostgreSQL server binaries, psql, pgbench) when
# missing, then runs formatting, lints and every test against real PostgreSQL
# clusters that the tests start and stop themselves. Needs nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

have_server() {
  [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ] && return 0
  command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
  command -v initdb >/dev/null
}

need_install=()
have_server || need_install+=(postgresql)
command -v psql >/dev/null || need_install+=(postgresql-client)
command -v pgbench >/dev/null || need_install+=(postgresql-client)
command -v runuser >/dev/null || need_install+=(util-linux)
# jemalloc (the binary's allocator) is built from source by its crate: make and a C compiler.
command -v make >/dev/null || need_install+=(make)
command -v cc >/dev/null || need_install+=(gcc)
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then need_install+=(postgresql); fi
# The driver and framework matrix (tests/drivers.rs, tests/frameworks.rs): psycopg 3,
# asyncpg, Django, SQLAlchemy and Alembic in a venv; node-postgres and TypeORM via npm;
# sqlx as a dev-dependency (examples/sqlx_migrate.rs).
command -v python3 >/dev/null || need_install+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_install+=(python3-venv)
command -v node >/dev/null || need_install+=(nodejs)
command -v npm >/dev/null || need_install+=(npm)
# Rails' ActiveRecord and its pg driver, from Debian.
ruby -e 'require "active_record"; require "pg"' 2>/dev/null || need_install+=(ruby-activerecord ruby-pg)
# pgjdbc and HikariCP (with slf4j-nop so it logs nothing), run by a JDK's
# single-file source launcher; Go with pgx v4, built offline in GOPATH mode.
command -v java >/dev/null || need_install+=(default-jdk-headless)
for jar in postgresql:libpostgresql-jdbc-java HikariCP:libhikaricp-java slf4j-nop:libslf4j-java; do
  [ -e "/usr/share/java/${jar%%:*}.jar" ] || need_install+=("${jar#*:}")
done
command -v go >/dev/null || need_install+=(golang-go)
# promtool and prometheus for the metrics tests (tests/metrics.rs); Debian's
# PgBouncer exporter reads the admin console in tests/console.rs.
command -v promtool >/dev/null && command -v prometheus >/dev/null || need_install+=(prometheus)
[ -x /usr/bin/prometheus-pgbouncer-exporter ] || need_install+=(prometheus-pgbouncer-exporter)
# docker-compose validates docker/compose.yml (tests/docker.rs; no image is pulled).
command -v docker-compose >/dev/null || need_install+=(docker-compose)
[ -d /usr/share/gocode/src/github.com/jackc/pgx/v4 ] || need_install+=(golang-github-jackc-pgx-v4-dev)
if [ ${#need_install[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_install[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # The tests start their own throw-away clusters; the package's own is unused.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_install[@]}" >/dev/null
fi
have_server || { echo "test.sh: PostgreSQL server binaries still missing" >&2; exit 1; }
if ! command -v pgbench >/dev/null; then
  # Debian ships pgbench beside the server binaries.
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pgbench" ] && export PATH="$PATH:$d"; done
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r tests/drivers/requirements.txt
npm install --prefix tests/drivers --no-audit --no-fund --silent

# 1,000-client tests need file descriptors.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A run from a clean checkout reuses nothing: incremental caches would only
# add 1.5 GB to target/ (CI's disk is small). Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# Tests mostly wait on sockets; more threads than cores keeps the run short.
RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" cargo test --locked
# Two minutes of the soak (scripts/soak.sh): faults under load, then a ledger check.
./scripts/soak.sh 2m
