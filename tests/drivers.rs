//! The driver matrix beyond Rust: psycopg 3 and node-postgres run the same kind
//! of scenario through pgtenant in transaction mode (20 clients, quota 3).
//! scripts/test.sh installs them (.venv, tests/drivers/node_modules); a missing
//! interpreter fails the test with a clear message, it is never skipped.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const CONFIG: &str = r#"
[auth]
method = "trust"
users = [{ name = "app" }]

[servers.main]
port = {PG_PORT}
database = "dm_app"
user = "postgres"

[tiers.small]
pool_size = 3

[[tenants]]
key = "pydrv"
mode = "schema"
server = "main"
schema = "t_drv"
tier = "small"

[[tenants]]
key = "jsdrv"
mode = "schema"
server = "main"
schema = "t_drv"
tier = "small"

[[tenants]]
key = "jsa"
mode = "schema"
server = "main"
tier = "small"

[[tenants]]
key = "jsb"
mode = "schema"
server = "main"
tier = "small"
"#;

async fn fixtures() {
    tenant_fixture_with(
        "dm_app",
        &[("t_drv", "Driver"), ("t_jsa", "Alpha Co"), ("t_jsb", "Beta Co")],
        "CREATE TABLE IF NOT EXISTS t_drv.py_items (id serial PRIMARY KEY, owner int, note text, blob bytea);
         CREATE TABLE IF NOT EXISTS t_drv.py_copied (n int, label text);
         CREATE TABLE IF NOT EXISTS t_drv.js_items (id serial PRIMARY KEY, owner int, note text, blob bytea);
         CREATE TABLE IF NOT EXISTS t_jsa.orders (id serial PRIMARY KEY, customer_id int, amount_cents int);
         CREATE TABLE IF NOT EXISTS t_jsb.orders (id serial PRIMARY KEY, customer_id int, amount_cents int);
         INSERT INTO t_jsa.orders(customer_id, amount_cents) SELECT 1, 100 FROM generate_series(1, 2) WHERE NOT EXISTS (SELECT 1 FROM t_jsa.orders);
         INSERT INTO t_jsb.orders(customer_id, amount_cents) SELECT 1, 200 WHERE NOT EXISTS (SELECT 1 FROM t_jsb.orders);",
    )
    .await;
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} missing at {}: run ./scripts/test.sh, which installs it",
        path.display()
    );
    path
}

async fn run(cmd: &mut tokio::process::Command) {
    let out = cmd.output().await.expect("run driver scenario");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "driver scenario failed:\n{text}");
}

#[tokio::test]
async fn psycopg3_scenario() {
    fixtures().await;
    let python = require(root().join(".venv/bin/python"), "Python venv with psycopg");
    let proxy = start_proxy(CONFIG).await;
    let dsn = format!(
        "host=127.0.0.1 port={} user=app.pydrv dbname=dm_app",
        proxy.addr.port()
    );
    run(tokio::process::Command::new(python)
        .arg(root().join("tests/drivers/psycopg_scenario.py"))
        .env("PGTENANT_DSN", dsn))
    .await;
}

#[tokio::test]
async fn node_postgres_scenario() {
    fixtures().await;
    require(
        root().join("tests/drivers/node_modules/pg"),
        "node-postgres",
    );
    let proxy = start_proxy(CONFIG).await;
    run(tokio::process::Command::new("node")
        .arg(root().join("tests/drivers/node_scenario.js"))
        .env("PGTENANT_PORT", proxy.addr.port().to_string()))
    .await;
}
