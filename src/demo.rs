//! `pgtenant demo`: a throw-away PostgreSQL with example tenants provisioned
//! through the catalog (schema and database modes, each with its own role, and
//! a shared-table free tenant isolated by row-level security), served until
//! Ctrl-C, so a newcomer sees routing work with one command.

use crate::cluster::{ClusterError, TempCluster};
use crate::config::{parse_str, Config, TenantMode};
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
    #[error("provisioning the demo tenants failed: {0}")]
    Provision(#[from] crate::provision::ProvisionError),
    #[error("writing the demo migrations: {0}")]
    Io(std::io::Error),
}

pub const DEMO_PASSWORD: &str = "demo";

/// The shipped example migrations, embedded so the demo runs from anywhere.
const MIGRATIONS: [(&str, &str); 3] = [
    (
        "001_customers.sql",
        include_str!("../migrations/001_customers.sql"),
    ),
    (
        "002_orders.sql",
        include_str!("../migrations/002_orders.sql"),
    ),
    (
        "003_shared_rls.sql",
        include_str!("../migrations/003_shared_rls.sql"),
    ),
];

async fn sql(conn_str: &str, script: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conn_str, NoTls).await?;
    let task = tokio::spawn(conn);
    client.batch_execute(script).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// The tenants the demo provisions: (key, mode, tier, customer).
const TENANTS: [(&str, TenantMode, &str, &str); 5] = [
    ("acme", TenantMode::Schema, "premium", "Acme Corp"),
    ("initech", TenantMode::Schema, "premium", "Initech Corp"),
    (
        "globex",
        TenantMode::Database,
        "enterprise",
        "Globex Corporation",
    ),
    ("beta", TenantMode::Shared, "free", "Beta Startup"),
    ("gamma", TenantMode::Shared, "free", "Gamma Labs"),
];

/// Provisions the demo tenants the way an operator would (`tenant create`:
/// catalog row, own role, migrations), then adds a customer and an order each.
pub async fn seed(cluster: &TempCluster, cfg: &Config) -> Result<(), DemoError> {
    for db in ["app", "platform"] {
        sql(
            &cluster.conn_string("postgres"),
            &format!("CREATE DATABASE {db}"),
        )
        .await?;
    }
    for (key, mode, tier, who) in TENANTS {
        let spec = crate::provision::create(
            cfg,
            &crate::provision::CreateRequest {
                key: key.into(),
                mode,
                tier: tier.into(),
                server: None,
            },
        )
        .await?;
        let db = spec.database.clone().unwrap_or_default();
        let path = spec
            .schema
            .as_deref()
            .map_or_else(String::new, |s| format!("SET search_path = {s};"));
        // Shared tables: the admin (a superuser, so not subject to RLS) names
        // the tenant's id; through pgtenant the column default fills it in.
        let (col, val) = match (&spec.id, mode) {
            (Some(id), TenantMode::Shared) => (", tenant_id", format!(", '{id}'")),
            _ => ("", String::new()),
        };
        sql(
            &cluster.conn_string(&db),
            &format!(
                "{path} WITH c AS (INSERT INTO customers(name, email{col}) VALUES ('{who}', 'ops@{key}.example'{val}) RETURNING id)
                 INSERT INTO orders(customer_id, amount_cents{col}) SELECT id, 4200{val} FROM c;"
            ),
        )
        .await?;
    }
    Ok(())
}

pub fn demo_config(pg_port: u16, listen_port: u16, migrations: &std::path::Path) -> String {
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

[catalog]
server = "main"
database = "platform"
role_secret = "demo-only-role-secret"

[migrations]
dir = "{}"

[tiers.premium]
pool_size = 10
reserve = 2
[tiers.enterprise]
pool_size = 20
[tiers.free]
pool_size = 2
max_client_conn = 50
"#,
        migrations.display()
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
    let migrations = cluster.dir.join("migrations");
    std::fs::create_dir_all(&migrations).map_err(DemoError::Io)?;
    for (name, body) in MIGRATIONS {
        std::fs::write(migrations.join(name), body).map_err(DemoError::Io)?;
    }
    let cfg = parse_str(&demo_config(cluster.port, listen_port, &migrations), "demo")?;
    seed(&cluster, &cfg).await?;
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
        ("app.beta", "app"),
    ] {
        println!(
            "  psql \"postgresql://{user}:{DEMO_PASSWORD}@127.0.0.1:{port}/{db}\" -c 'SELECT * FROM customers'"
        );
    }
    println!("  psql \"host=127.0.0.1 port={port} user=app password={DEMO_PASSWORD} dbname=app options=-ctenant=acme\" -c 'SELECT * FROM customers'");
    println!("\nCtrl-C stops pgtenant and removes the throw-away cluster.");
    // SIGTERM too (a supervisor, `timeout`, `docker stop`): its default
    // action would leave the throw-away PostgreSQL running.
    crate::app::wait_for_signal().await;
    running.shutdown().await;
    drop(cluster);
    Ok(())
}
