//! The tenant catalog: table `pgtenant.tenants` in the control database named
//! by `[catalog]`, shared by every pgtenant replica. Versioned DDL, created on
//! first use; a trigger NOTIFYs `pgtenant_catalog` on every change.

use crate::config::{secret, Config, PoolMode, TenantConfig, TenantMode, TenantStatus};
use thiserror::Error;
use tokio_postgres::Client;

pub const CHANNEL: &str = "pgtenant_catalog";

/// Catalog DDL, in order; `pgtenant.catalog_version` records what ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE pgtenant.tenants (
    key             text PRIMARY KEY CHECK (key ~ '^[a-z0-9_-]{1,63}$'),
    id              uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    mode            text NOT NULL CHECK (mode IN ('schema', 'database', 'shared')),
    server          text NOT NULL,
    database        text NOT NULL,
    schema          text,
    role            text,
    tier            text NOT NULL,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('trial', 'active', 'suspended', 'cancelled')),
    pool_size       int CHECK (pool_size > 0),
    max_client_conn int CHECK (max_client_conn > 0),
    pool_mode       text CHECK (pool_mode IN ('transaction', 'session')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION pgtenant.tenants_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgtenant_catalog', coalesce(NEW.key, OLD.key));
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON pgtenant.tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant.tenants_changed();
"#,
    r#"
CREATE TABLE pgtenant.tenant_users (
    tenant     text NOT NULL REFERENCES pgtenant.tenants(key) ON DELETE CASCADE,
    name       text NOT NULL CHECK (name <> ''),
    verifier   text NOT NULL CHECK (verifier LIKE 'SCRAM-SHA-256$%'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);
REVOKE ALL ON pgtenant.tenant_users FROM PUBLIC;
CREATE FUNCTION pgtenant.tenant_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgtenant_catalog', coalesce(NEW.tenant, OLD.tenant));
    RETURN NULL;
END $$;
CREATE TRIGGER tenant_users_changed AFTER INSERT OR UPDATE OR DELETE ON pgtenant.tenant_users
    FOR EACH ROW EXECUTE FUNCTION pgtenant.tenant_users_changed();
"#,
    r#"
CREATE TABLE pgtenant.holds (
    tenant  text PRIMARY KEY REFERENCES pgtenant.tenants(key) ON DELETE CASCADE,
    id      bigint GENERATED ALWAYS AS IDENTITY,
    purpose text NOT NULL,
    since   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE pgtenant.replicas (
    id    text PRIMARY KEY,
    seen  timestamptz NOT NULL DEFAULT now(),
    quiet text[] NOT NULL DEFAULT '{}'
);
CREATE FUNCTION pgtenant.holds_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgtenant_catalog', coalesce(NEW.tenant, OLD.tenant));
    RETURN NULL;
END $$;
CREATE TRIGGER holds_changed AFTER INSERT OR UPDATE OR DELETE ON pgtenant.holds
    FOR EACH ROW EXECUTE FUNCTION pgtenant.holds_changed();
"#,
];

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("no [catalog] section in the config")]
    NotConfigured,
    #[error("[catalog] names server {0:?}, which is not defined")]
    UnknownServer(String),
    #[error("catalog database: {}", .0.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| .0.to_string()))]
    Sql(#[from] tokio_postgres::Error),
    #[error("tenant {0:?} left the catalog or changed its route meanwhile")]
    Gone(String),
    #[error("the hold on tenant {0:?} was lost or is too old to flip under")]
    HoldLost(String),
    #[error("catalog credentials: {0}")]
    Secret(String),
    #[error("TLS to the server: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("catalog database: no answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl From<crate::tls::PgConnectError> for CatalogError {
    fn from(e: crate::tls::PgConnectError) -> Self {
        match e {
            crate::tls::PgConnectError::Tls(e) => CatalogError::Tls(e),
            crate::tls::PgConnectError::Postgres(e) => CatalogError::Sql(e),
        }
    }
}

/// How to log in to a server database for pgtenant's own work: settings
/// and the server's TLS (read like a `tokio_postgres::Config`).
#[derive(Debug, Clone)]
pub struct PgLogin {
    pub pg: tokio_postgres::Config,
    pub tls: crate::config::ServerTlsSettings,
}

impl std::ops::Deref for PgLogin {
    type Target = tokio_postgres::Config;
    fn deref(&self) -> &tokio_postgres::Config {
        &self.pg
    }
}

impl PgLogin {
    /// Opens the connection; the caller drives its task.
    pub async fn connect_raw(
        &self,
    ) -> Result<(Client, crate::tls::PgConnection), crate::tls::PgConnectError> {
        crate::tls::pg_connect(&self.pg, &self.tls).await
    }
}

/// Connection settings for the control database (as the server's admin user).
#[derive(Debug, Clone)]
pub struct Catalog {
    pg: PgLogin,
}

/// A server's admin connection settings for `database`.
pub fn admin_config(cfg: &Config, server: &str, database: &str) -> Result<PgLogin, CatalogError> {
    let s = cfg
        .servers
        .get(server)
        .ok_or_else(|| CatalogError::UnknownServer(server.to_owned()))?;
    let (user, password) = match &s.admin_user {
        Some(u) => (u.clone(), secret(&s.admin_password, &s.admin_password_env)),
        None => (s.user.clone(), secret(&s.password, &s.password_env)),
    };
    let mut pg = tokio_postgres::Config::new();
    pg.host(&s.host)
        .port(s.port)
        .user(&user)
        .dbname(database)
        .application_name("pgtenant-admin");
    if let Some(p) = password.map_err(CatalogError::Secret)? {
        pg.password(p);
    }
    Ok(PgLogin {
        pg,
        tls: s.tls_settings(),
    })
}

/// Connects with `pg`; the connection task runs until the client is dropped.
pub async fn connect(pg: &PgLogin) -> Result<Client, CatalogError> {
    let (client, conn) = pg.connect_raw().await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "admin connection ended");
        }
    });
    Ok(client)
}

pub fn mode_text(mode: TenantMode) -> &'static str {
    match mode {
        TenantMode::Schema => "schema",
        TenantMode::Database => "database",
        TenantMode::Shared => "shared",
    }
}

pub fn status_text(status: TenantStatus) -> &'static str {
    match status {
        TenantStatus::Trial => "trial",
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
        TenantStatus::Cancelled => "cancelled",
    }
}

fn parse_status(s: &str) -> Option<TenantStatus> {
    Some(match s {
        "trial" => TenantStatus::Trial,
        "active" => TenantStatus::Active,
        "suspended" => TenantStatus::Suspended,
        "cancelled" => TenantStatus::Cancelled,
        _ => return None,
    })
}

impl Catalog {
    pub fn from_config(cfg: &Config) -> Result<Catalog, CatalogError> {
        let c = cfg.catalog.as_ref().ok_or(CatalogError::NotConfigured)?;
        Ok(Catalog {
            pg: admin_config(cfg, &c.server, &c.database)?,
        })
    }

    pub fn pg_config(&self) -> &PgLogin {
        &self.pg
    }

    /// Connects and brings the catalog schema up to date.
    pub async fn open(&self) -> Result<Client, CatalogError> {
        let client = connect(&self.pg).await?;
        ensure_schema(&client).await?;
        Ok(client)
    }
}

/// Creates or upgrades the catalog tables, in one transaction serialised by
/// an advisory lock, so replicas (and tests) starting together don't race.
pub async fn ensure_schema(client: &Client) -> Result<(), CatalogError> {
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(7305726580);
             CREATE SCHEMA IF NOT EXISTS pgtenant;
             CREATE TABLE IF NOT EXISTS pgtenant.catalog_version (
                 version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .await?;
    let applied = async {
        for (i, ddl) in MIGRATIONS.iter().enumerate() {
            let version = i as i32 + 1;
            let done = client
                .query_opt(
                    "SELECT 1 FROM pgtenant.catalog_version WHERE version = $1",
                    &[&version],
                )
                .await?
                .is_some();
            if !done {
                client.batch_execute(ddl).await?;
                client
                    .execute(
                        "INSERT INTO pgtenant.catalog_version(version) VALUES ($1)",
                        &[&version],
                    )
                    .await?;
            }
        }
        client.batch_execute("COMMIT").await
    };
    if let Err(e) = applied.await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(())
}

/// Every catalog row as a tenant spec; rows that can't be understood are
/// skipped with a warning rather than taking the others down.
pub async fn load(client: &Client) -> Result<Vec<TenantConfig>, CatalogError> {
    let rows = client
        .query(
            "SELECT key, mode, server, database, schema, role, tier, status, pool_size, max_client_conn, pool_mode, id::text
               FROM pgtenant.tenants ORDER BY key",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let key: String = r.get(0);
        let mode = match r.get::<_, &str>(1) {
            "schema" => TenantMode::Schema,
            "database" => TenantMode::Database,
            "shared" => TenantMode::Shared,
            other => {
                tracing::warn!(tenant = %key, mode = other, "catalog row skipped: unknown mode");
                continue;
            }
        };
        let Some(status) = parse_status(r.get(7)) else {
            tracing::warn!(tenant = %key, "catalog row skipped: unknown status");
            continue;
        };
        let pool_mode = match r.get::<_, Option<&str>>(10) {
            Some("session") => Some(PoolMode::Session),
            Some("transaction") => Some(PoolMode::Transaction),
            _ => None,
        };
        out.push(TenantConfig {
            key,
            id: r.get(11),
            mode,
            server: r.get(2),
            database: Some(r.get(3)),
            schema: r.get(4),
            role: r.get(5),
            role_password: None,
            role_password_env: None,
            tier: Some(r.get(6)),
            status,
            pool_size: r.get::<_, Option<i32>>(8).map(|v| v as usize),
            pool_mode,
            max_client_conn: r.get::<_, Option<i32>>(9).map(|v| v as usize),
        });
    }
    Ok(out)
}

/// Adds a tenant row (with `t.id`, or a new uuid) and returns its id.
pub async fn insert(client: &Client, t: &TenantConfig) -> Result<String, CatalogError> {
    let row = client
        .query_one(
            "INSERT INTO pgtenant.tenants(key, mode, server, database, schema, role, tier, status, id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9::text::uuid, gen_random_uuid()))
             RETURNING id::text",
            &[
                &t.key,
                &mode_text(t.mode),
                &t.server,
                &t.database,
                &t.schema,
                &t.role,
                &t.tier,
                &status_text(t.status),
                &t.id,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Sets a tenant's status; false if there is no such tenant.
pub async fn set_status(
    client: &Client,
    key: &str,
    status: TenantStatus,
) -> Result<bool, CatalogError> {
    let n = client
        .execute(
            "UPDATE pgtenant.tenants SET status = $2, updated_at = now() WHERE key = $1",
            &[&key, &status_text(status)],
        )
        .await?;
    Ok(n == 1)
}

/// Removes a tenant row; false if there was none.
pub async fn delete(client: &Client, key: &str) -> Result<bool, CatalogError> {
    Ok(client
        .execute("DELETE FROM pgtenant.tenants WHERE key = $1", &[&key])
        .await?
        == 1)
}
