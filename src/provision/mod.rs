//! Tenant lifecycle from the command line (SPEC §9): create, list, status
//! changes, drop. Create is all or nothing: the schema or database, every
//! migration, then the catalog row; a failure undoes what was made.
//! Touches servers through admin connections only, never the client pools.

mod dump;
mod home;
mod relocate;
mod shared;

use crate::catalog::{self, CatalogError};
use crate::config::{Config, TenantConfig, TenantMode, TenantStatus};
use crate::migrate::{
    apply_target, migration_files, ApplySettings, MigrationFile, Outcome, Target,
};
use crate::tenant::roles;
use thiserror::Error;

pub use dump::{dump, read_manifest, restore, Manifest, Progress, TableDump};
pub use relocate::{relocate, RelocateOptions, RelocateProgress, RelocateReport, Relocation};
pub use shared::{repair_shared_login, HARDENING_SQL, SHARED_ROLE};

#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("tenant key {0:?} is invalid: use [a-z0-9_-]{{1,63}}")]
    BadKey(String),
    #[error("tenant {0:?} already exists")]
    Exists(String),
    #[error("no tenant {0:?} in the catalog")]
    Missing(String),
    #[error("server {0:?} is not defined in the config")]
    UnknownServer(String),
    #[error("tier {0:?} is not defined in the config")]
    UnknownTier(String),
    #[error("mode \"shared\" needs [catalog] role_secret_env: it derives the shared role's password and signs the tenant context")]
    SharedNeedsSecret,
    #[error("migration {file}: {message}")]
    Migration { file: String, message: String },
    #[error("reading migrations: {0}")]
    Io(#[from] std::io::Error),
    #[error("[migrations] each_command failed for tenant {key:?} (the tenant was not created): {message}")]
    EachCommand { key: String, message: String },
    #[error("refusing to drop tenant {0:?} without --yes")]
    NotConfirmed(String),
    #[error("password: {0}")]
    Password(String),
    #[error("{0}")]
    Dump(String),
    #[error("tenant {tenant:?} has no user {name:?}")]
    NoUser { tenant: String, name: String },
}

fn sql_error(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// What `tenant create` makes.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub key: String,
    pub mode: TenantMode,
    pub tier: String,
    pub server: Option<String>,
}

/// Creates a tenant atomically and returns its catalog spec (with its id).
pub async fn create(cfg: &Config, req: &CreateRequest) -> Result<TenantConfig, ProvisionError> {
    if !crate::config::valid_tenant_key(&req.key) {
        return Err(ProvisionError::BadKey(req.key.clone()));
    }
    if req.tier != "default" && !cfg.tiers.contains_key(&req.tier) {
        return Err(ProvisionError::UnknownTier(req.tier.clone()));
    }
    let server_name = match &req.server {
        Some(s) => s.clone(),
        None => cfg
            .catalog
            .as_ref()
            .map(|c| c.server.clone())
            .or_else(|| cfg.servers.keys().next().cloned())
            .ok_or_else(|| ProvisionError::UnknownServer("(none)".into()))?,
    };
    if req.mode == TenantMode::Shared && roles::role_secret(cfg).is_none() {
        return Err(ProvisionError::SharedNeedsSecret);
    }
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    if catalog::load(&cat).await?.iter().any(|t| t.key == req.key) {
        return Err(ProvisionError::Exists(req.key.clone()));
    }
    let files = migration_files(std::path::Path::new(&cfg.migrations.dir))?;
    let (database, schema) = home::route(cfg, &req.key, req.mode, &server_name)?;
    let mut spec = TenantConfig {
        key: req.key.clone(),
        id: None,
        mode: req.mode,
        server: server_name.clone(),
        database: Some(database.clone()),
        schema: schema.clone(),
        role: None,
        role_password: None,
        role_password_env: None,
        tier: Some(req.tier.clone()),
        status: TenantStatus::Active,
        pool_size: None,
        pool_mode: None,
        max_client_conn: None,
    };
    if req.mode == TenantMode::Shared {
        // The shared schema is common infrastructure: made ready (once) and
        // kept, whatever happens to this tenant's row.
        let schema = schema.unwrap_or_default();
        spec.role = Some(shared::prepare(cfg, &server_name, &database, &schema, &files).await?);
        each_command(cfg, &spec).await?;
        spec.id = Some(catalog::insert(&cat, &spec).await?);
        return Ok(spec);
    }
    let home = home::make(cfg, &mut spec, &files).await?;
    match catalog::insert(&cat, &spec).await {
        Ok(id) => spec.id = Some(id),
        Err(e) => {
            home.undo(cfg).await;
            return Err(e.into());
        }
    }
    Ok(spec)
}

/// Serialises provisioning steps within one database: they update shared
/// catalog rows (the database's ACL, the shared schema) that concurrent
/// `tenant create` runs would otherwise race on ("tuple concurrently updated").
pub(super) const PROVISION_LOCK: &str = "SELECT pg_advisory_xact_lock(7305726581);";

/// Where database-level statements (CREATE/DROP DATABASE) run on `server`:
/// the catalog's database on the catalog's server, the server's own
/// database elsewhere (the catalog's need not exist there).
fn admin_database<'a>(cfg: &'a Config, server: &str) -> &'a str {
    match &cfg.catalog {
        Some(c) if c.server == server => c.database.as_str(),
        _ => cfg
            .servers
            .get(server)
            .map_or("postgres", |s| s.database.as_str()),
    }
}

pub(super) fn setup_error(step: &str) -> impl FnOnce(tokio_postgres::Error) -> ProvisionError {
    let step = step.to_owned();
    move |e| ProvisionError::Migration {
        file: step,
        message: sql_error(&e),
    }
}

/// Applies every migration to a new tenant's target, as the sidecar would
/// (ledger, lock_timeout, files outside a transaction), before the tenant's
/// catalog row exists: it accepts connections only once all are in.
async fn migrate_new(
    cfg: &Config,
    db: &tokio_postgres::Client,
    spec: &TenantConfig,
    files: &[MigrationFile],
) -> Result<(), ProvisionError> {
    let target =
        Target::of(cfg, spec).ok_or_else(|| ProvisionError::UnknownServer(spec.server.clone()))?;
    migrate_target(cfg, db, &target, files).await
}

/// The app's own migrations (`[migrations] each_command`) for the new
/// tenant, after pgtenant's and before its catalog row: it accepts
/// connections only once they succeeded.
async fn each_command(cfg: &Config, spec: &TenantConfig) -> Result<(), ProvisionError> {
    crate::migrate::each_for_new_tenant(cfg, spec)
        .await
        .map_err(|message| ProvisionError::EachCommand {
            key: spec.key.clone(),
            message,
        })
}

pub(crate) async fn migrate_target(
    cfg: &Config,
    db: &tokio_postgres::Client,
    target: &Target,
    files: &[MigrationFile],
) -> Result<(), ProvisionError> {
    let gate = crate::migrate::database_gate(&target.server, &target.database);
    match apply_target(db, target, files, &ApplySettings::from_config(cfg), &gate).await {
        Outcome::Done { .. } => Ok(()),
        Outcome::Failed { failure, .. } => Err(ProvisionError::Migration {
            file: failure.file,
            message: format!("{} (SQLSTATE {})", failure.message, failure.sqlstate),
        }),
        Outcome::Drift { versions, .. } => Err(ProvisionError::Migration {
            file: "(ledger)".into(),
            message: format!("applied migrations changed since: {versions:?}"),
        }),
        Outcome::Busy { .. } => Err(ProvisionError::Migration {
            file: "(advisory lock)".into(),
            message: "another runner is migrating this target".into(),
        }),
    }
}

/// Sets a tenant user's password (`tenant user add`): stored as a SCRAM
/// verifier, computed here.
pub async fn set_tenant_user(
    cfg: &Config,
    key: &str,
    name: &str,
    password: &str,
) -> Result<(), ProvisionError> {
    if name.is_empty() || name.contains(cfg.proxy.username_separator.as_str()) {
        return Err(ProvisionError::Password(format!(
            "user name {name:?} must be non-empty and without {:?}",
            cfg.proxy.username_separator
        )));
    }
    if password.is_empty() {
        return Err(ProvisionError::Password("empty".into()));
    }
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    if catalog::set_user(&cat, key, name, &verifier).await? {
        Ok(())
    } else {
        Err(ProvisionError::Missing(key.to_owned()))
    }
}

pub async fn remove_tenant_user(cfg: &Config, key: &str, name: &str) -> Result<(), ProvisionError> {
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    if catalog::remove_user(&cat, key, name).await? {
        Ok(())
    } else {
        Err(ProvisionError::NoUser {
            tenant: key.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// A tenant's user names.
pub async fn tenant_users(cfg: &Config, key: &str) -> Result<Vec<String>, ProvisionError> {
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    Ok(catalog::load_users(&cat)
        .await?
        .into_iter()
        .filter(|(t, _, _)| t == key)
        .map(|(_, name, _)| name)
        .collect())
}

/// Catalog rows, for `tenant list`.
pub async fn list(cfg: &Config) -> Result<Vec<TenantConfig>, ProvisionError> {
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    Ok(catalog::load(&cat).await?)
}

pub async fn set_status(
    cfg: &Config,
    key: &str,
    status: TenantStatus,
) -> Result<(), ProvisionError> {
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    if catalog::set_status(&cat, key, status).await? {
        Ok(())
    } else {
        Err(ProvisionError::Missing(key.to_owned()))
    }
}

/// Removes the catalog row first (clients are refused from then on), then the
/// tenant's schema or database.
pub async fn drop_tenant(cfg: &Config, key: &str, confirmed: bool) -> Result<(), ProvisionError> {
    if !confirmed {
        return Err(ProvisionError::NotConfirmed(key.to_owned()));
    }
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    let spec = catalog::load(&cat)
        .await?
        .into_iter()
        .find(|t| t.key == key)
        .ok_or_else(|| ProvisionError::Missing(key.to_owned()))?;
    catalog::delete(&cat, key).await?;
    home::remove(cfg, &spec).await
}
