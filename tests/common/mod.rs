//! Test harness: one throw-away PostgreSQL cluster per test binary (torn down by
//! a watchdog when the binary exits), and pgtenant started in-process on an
//! ephemeral port with a config written as TOML, the way users write it.
#![allow(dead_code)]

use pgtenant::app::Running;
use pgtenant::cluster::TempCluster;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

static CLUSTER: OnceLock<TempCluster> = OnceLock::new();

/// Tests of one binary run in parallel; shared fixtures are created under this.
static FIXTURE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The binary's cluster, started on first use.
pub fn cluster() -> &'static TempCluster {
    CLUSTER.get_or_init(|| {
        let mut c = TempCluster::start().expect("start throw-away PostgreSQL");
        c.stop_when_process_exits();
        c
    })
}

/// A path for a test's files (configs, certificates, builds) inside the
/// binary's cluster directory, which the cluster's watchdog removes when the
/// binary exits: nothing is left behind in the system's temporary directory.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = cluster().dir.join("scratch");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir.join(name)
}

pub fn pg_port() -> u16 {
    cluster().port
}

/// A superuser connection straight to PostgreSQL (bypassing pgtenant).
pub async fn direct(db: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(&cluster().conn_string(db), NoTls)
        .await
        .expect("direct connection");
    tokio::spawn(conn);
    client
}

/// Runs SQL directly on the cluster.
pub async fn admin_sql(db: &str, sql: &str) {
    direct(db).await.batch_execute(sql).await.expect(sql);
}

/// Starts pgtenant with `config`; `{PG_PORT}` is replaced by the cluster's port
/// and the listener is forced to an ephemeral port.
pub async fn start_proxy(config: &str) -> Running {
    let text = config.replace("{PG_PORT}", &pg_port().to_string());
    let mut cfg = pgtenant::config::parse_str(&text, "test config").expect("valid test config");
    cfg.proxy.listen = "127.0.0.1:0".into();
    Running::start(cfg).await.expect("start pgtenant")
}

/// [`start_proxy`] with `config` written to `path` first, as `serve` starts
/// from a file: RELOAD and SIGHUP then read that file again.
pub async fn start_proxy_from_file(config: &str, path: &std::path::Path) -> Running {
    let text = config.replace("{PG_PORT}", &pg_port().to_string());
    std::fs::write(path, &text).expect("write config");
    let proxy = start_proxy(&text).await;
    proxy
        .proxy
        .config_path
        .set(path.to_owned())
        .expect("config path set once");
    proxy
}

/// Connects through pgtenant. `extra` is appended to the libpq-style string.
pub async fn connect(proxy: &Running, extra: &str) -> Result<Client, tokio_postgres::Error> {
    let s = format!("host=127.0.0.1 port={} {extra}", proxy.addr.port());
    let (client, conn) = tokio_postgres::connect(&s, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// First column of every row of a simple query, as strings.
pub async fn column(client: &Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .expect(sql)
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// Single value of a simple query.
pub async fn scalar(client: &Client, sql: &str) -> String {
    column(client, sql)
        .await
        .into_iter()
        .next()
        .expect("one row")
}

/// Server connections pgtenant holds for a tenant, as PostgreSQL sees them.
pub async fn server_links(admin: &Client, tenant: &str) -> i64 {
    let n = scalar(
        admin,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgtenant/{tenant}'"
        ),
    )
    .await;
    n.parse().expect("count")
}

/// Server connections open as `role` (tests give a server its own login role
/// when they count links: a client's application_name follows it onto links).
pub async fn links_of_role(admin: &Client, role: &str) -> i64 {
    scalar(
        admin,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'"),
    )
    .await
    .parse()
    .expect("count")
}

/// Creates a superuser login role for a test's server connections.
pub async fn service_role(role: &str) {
    let _guard = FIXTURE_LOCK.lock().await;
    let admin = direct("postgres").await;
    let exists = column(
        &admin,
        &format!("SELECT 1 FROM pg_roles WHERE rolname = '{role}'"),
    )
    .await;
    if exists.is_empty() {
        admin
            .batch_execute(&format!("CREATE ROLE {role} LOGIN SUPERUSER"))
            .await
            .expect("create role");
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` on pgtenant's metrics listener: (status, body).
pub async fn metrics_get(proxy: &Running, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = proxy.metrics_addr.expect("metrics listener");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (status, body.to_owned())
}

/// SQLSTATE and message of a failed call.
pub fn sqlstate(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
        None => (String::new(), e.to_string()),
    }
}

async fn database_exists(admin: &Client, database: &str) -> bool {
    !column(
        admin,
        &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
    )
    .await
    .is_empty()
}

/// Creates `database` (if missing) with the given schemas, each holding a
/// `customers` table with one row naming its owner.
pub async fn tenant_fixture(database: &str, schemas: &[(&str, &str)]) {
    tenant_fixture_with(database, schemas, "").await
}

/// [`tenant_fixture`] plus `extra` SQL run in `database`, under the same lock.
pub async fn tenant_fixture_with(database: &str, schemas: &[(&str, &str)], extra: &str) {
    let _guard = FIXTURE_LOCK.lock().await;
    let admin = direct("postgres").await;
    if !database_exists(&admin, database).await {
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create db");
    }
    let db = direct(database).await;
    for (schema, owner) in schemas {
        db.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.customers (id serial PRIMARY KEY, name text NOT NULL);
             INSERT INTO {schema}.customers(name) SELECT '{owner}' WHERE NOT EXISTS (SELECT 1 FROM {schema}.customers);"
        ))
        .await
        .expect("fixture");
    }
    if !extra.is_empty() {
        db.batch_execute(extra).await.expect(extra);
    }
}

/// The managed-PostgreSQL shape (SPEC §5): the admin that provisions and
/// migrates has only CREATEROLE and CREATEDB, and owns the databases it
/// works in; the server `user` that serves clients is a plain login role.
pub const ADMIN_ROLE: &str = "pgtenant_admin";
pub const SERVICE_ROLE: &str = "app_service";

/// Creates [`ADMIN_ROLE`] and [`SERVICE_ROLE`] (fixture set-up, as a
/// superuser; pgtenant itself never uses one in these tests).
pub async fn managed_roles() {
    let _guard = FIXTURE_LOCK.lock().await;
    let admin = direct("postgres").await;
    admin
        .batch_execute(&format!(
            "DO $$BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ADMIN_ROLE}') THEN
                     CREATE ROLE {ADMIN_ROLE} LOGIN CREATEROLE CREATEDB;
                 END IF;
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
                     CREATE ROLE {SERVICE_ROLE} LOGIN;
                 END IF;
             END$$;"
        ))
        .await
        .expect("managed roles");
}

/// Creates `database` (if missing) as the managed admin does: owned by it.
pub async fn managed_database(database: &str) {
    managed_roles().await;
    let _guard = FIXTURE_LOCK.lock().await;
    let admin = direct("postgres").await;
    if !database_exists(&admin, database).await {
        let (c, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={ADMIN_ROLE} dbname=postgres",
                pg_port()
            ),
            NoTls,
        )
        .await
        .expect("connect as the managed admin");
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create database as the managed admin");
    }
}

/// A config whose tenants live in a catalog and are provisioned as
/// `tenant create` does through the managed admin ([`ADMIN_ROLE`]): trust
/// auth for user `app`, server `main` (served as [`SERVICE_ROLE`]) with its
/// app database `app_db`, the catalog in `platform_db`, the shipped
/// migrations, and `tiers` (TOML) appended. `{PG_PORT}` is left for
/// [`start_proxy`] and [`catalog_config`].
pub fn catalog_config_text(app_db: &str, platform_db: &str, tiers: &str) -> String {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {{PG_PORT}}
database = "{app_db}"
user = "{SERVICE_ROLE}"
admin_user = "{ADMIN_ROLE}"

[catalog]
server = "main"
database = "{platform_db}"
role_secret = "test-only-secret"

[migrations]
dir = "{migrations}"
{tiers}
"#
    )
}

/// [`catalog_config_text`] parsed, with the cluster's port filled in.
pub fn catalog_config(text: &str) -> pgtenant::config::Config {
    let text = text.replace("{PG_PORT}", &pg_port().to_string());
    pgtenant::config::parse_str(&text, "test config").expect("valid test config")
}

/// Provisions a tenant as `tenant create` does (creating the app and
/// catalog databases first if needed); returns its catalog id.
pub async fn provision_tenant(
    cfg: &pgtenant::config::Config,
    key: &str,
    mode: pgtenant::config::TenantMode,
    tier: &str,
) -> String {
    let app_db = cfg.servers["main"].database.clone();
    let platform_db = cfg.catalog.as_ref().expect("a catalog").database.clone();
    managed_database(&app_db).await;
    managed_database(&platform_db).await;
    let spec = pgtenant::provision::create(
        cfg,
        &pgtenant::provision::CreateRequest {
            key: key.into(),
            mode,
            tier: tier.into(),
            server: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("create {key}: {e}"));
    spec.id.expect("catalog id")
}

/// Trust logins for `app`; one server whose `database` is served as `user`,
/// capped at `max_connections`; `tenants` as schema tenants of a tier with
/// context isolation (they share server connections) and `pool_size`.
pub fn context_tenants_config(
    database: &str,
    user: &str,
    pool_size: usize,
    max_connections: usize,
    tenants: &[&str],
) -> String {
    use std::fmt::Write as _;
    let mut cfg = format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {{PG_PORT}}
database = "{database}"
user = "{user}"
max_connections = {max_connections}

[tiers.shared]
pool_size = {pool_size}
isolation = "context"
"#
    );
    for t in tenants {
        let _ = write!(cfg, "\n[[tenants]]\nkey = \"{t}\"\nmode = \"schema\"\nserver = \"main\"\ntier = \"shared\"\n");
    }
    cfg
}

/// Runs `pgtenant --config FILE ARGS...` (RUST_LOG=warn) with `stdin`;
/// (success, stdout, stderr).
pub async fn pgtenant_cli(
    config: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run pgtenant");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("wait for pgtenant");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod fault;
pub mod ledger;
pub mod migrate_fx;
pub mod raw;
pub mod tls;
