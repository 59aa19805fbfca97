//! `pgtenant demo`: a throw-away PostgreSQL with example tenants of each mode,
//! served until Ctrl-C, so a newcomer sees routing work with one command.

use crate::cluster::{ClusterError, TempCluster};
use crate::config::parse_str;
use thiserror::Error;
use tokio_postgres::NoTls;

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("setting up the demo data failed: {}", .0.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| .0.to_string()))]
    Sql(#[from] tokio_postgres::Error),
    #[error("demo config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
}

pub const DEMO_PASSWORD: &str = "demo";

const TENANT_SQL: &str = "
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id),
                     amount_cents int NOT NULL, status text NOT NULL DEFAULT 'new');
";

async fn sql(conn_str: &str, script: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conn_str, NoTls).await?;
    let task = tokio::spawn(conn);
    client.batch_execute(script).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// Creates the demo's databases, schemas and rows on `cluster`.
pub async fn seed(cluster: &TempCluster) -> Result<(), tokio_postgres::Error> {
    for db in ["app", "globex"] {
        sql(
            &cluster.conn_string("postgres"),
            &format!("CREATE DATABASE {db}"),
        )
        .await?;
    }
    let mut app = String::new();
    for (schema, who) in [("t_acme", "Acme"), ("t_initech", "Initech")] {
        app.push_str(&format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}; {TENANT_SQL}
             INSERT INTO customers(name, email) VALUES ('{who} Corp', 'ops@{schema}.example');
             INSERT INTO orders(customer_id, amount_cents) VALUES (1, 4200);"
        ));
    }
    sql(&cluster.conn_string("app"), &app).await?;
    sql(
        &cluster.conn_string("globex"),
        &format!("{TENANT_SQL} INSERT INTO customers(name, email) VALUES ('Globex Corporation', 'hank@globex.example');"),
    )
    .await
}

pub fn demo_config(pg_port: u16, listen_port: u16) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:{listen_port}"

[auth]
method = "scram-sha-256"
users = [{{ name = "app", password = "{DEMO_PASSWORD}" }}]

[servers.main]
host = "127.0.0.1"
port = {pg_port}
database = "app"
user = "postgres"

[tiers.premium]
pool_size = 10
[tiers.enterprise]
pool_size = 20

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
tier = "premium"

[[tenants]]
key = "initech"
mode = "schema"
server = "main"
tier = "premium"

[[tenants]]
key = "globex"
mode = "database"
server = "main"
tier = "enterprise"
"#
    )
}

/// Runs the demo until Ctrl-C.
pub async fn run(listen_port: u16) -> Result<(), DemoError> {
    let cluster = tokio::task::spawn_blocking(TempCluster::start)
        .await
        .map_err(|e| ClusterError::Step {
            step: "starting PostgreSQL",
            detail: e.to_string(),
        })??;
    seed(&cluster).await?;
    let cfg = parse_str(&demo_config(cluster.port, listen_port), "demo")?;
    let running = crate::app::Running::start(cfg).await?;
    let port = running.addr.port();
    println!(
        "pgtenant demo: PostgreSQL {} on port {}, pgtenant on port {port}",
        cluster.bindir().display(),
        cluster.port
    );
    println!("Each tenant sees only its own customers. Try:\n");
    for (user, db) in [
        ("app.acme", "app"),
        ("app.initech", "app"),
        ("app", "globex"),
    ] {
        println!(
            "  psql \"postgresql://{user}:{DEMO_PASSWORD}@127.0.0.1:{port}/{db}\" -c 'SELECT * FROM customers'"
        );
    }
    println!("  psql \"host=127.0.0.1 port={port} user=app password={DEMO_PASSWORD} dbname=app options=-ctenant=acme\" -c 'SELECT * FROM customers'");
    println!("\nCtrl-C stops pgtenant and removes the throw-away cluster.");
    let _ = tokio::signal::ctrl_c().await;
    running.shutdown().await;
    drop(cluster);
    Ok(())
}
