//! Tenant lifecycle from the command line (SPEC §9): create, list, status
//! changes, drop. Create is all or nothing: the schema or database, every
//! migration, then the catalog row; a failure undoes what was made.
//! Touches servers through admin connections only, never the client pools.

mod dump;
mod shared;

use crate::catalog::{self, admin_config, connect, CatalogError};
use crate::config::{Config, TenantConfig, TenantMode, TenantStatus};
use crate::migrate::{
    apply_target, migration_files, ApplySettings, MigrationFile, Outcome, Target,
};
use crate::tenant::{quote_ident, roles};
use thiserror::Error;

pub use dump::{dump, read_manifest, restore, Manifest, Progress, TableDump};
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
    let server = cfg
        .servers
        .get(&server_name)
        .ok_or_else(|| ProvisionError::UnknownServer(server_name.clone()))?;
    if req.mode == TenantMode::Shared && roles::role_secret(cfg).is_none() {
        return Err(ProvisionError::SharedNeedsSecret);
    }
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    if catalog::load(&cat).await?.iter().any(|t| t.key == req.key) {
        return Err(ProvisionError::Exists(req.key.clone()));
    }
    let files = migration_files(std::path::Path::new(&cfg.migrations.dir))?;
    let (database, schema) = match req.mode {
        TenantMode::Schema => (server.database.clone(), Some(format!("t_{}", req.key))),
        TenantMode::Shared => (server.database.clone(), Some("public".to_owned())),
        TenantMode::Database => (req.key.clone(), None),
    };
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
    // With a role secret, the tenant gets its own login role owning its schema
    // or database: the boundary PostgreSQL enforces (SPEC §5, role isolation).
    spec.role = roles::role_secret(cfg).map(|_| roles::role_name(&req.key));
    let made = Made {
        role: spec.role.clone(),
        password: spec
            .role
            .as_ref()
            .and_then(|r| roles::derived_password(cfg, r))
            .unwrap_or_default(),
    };
    match req.mode {
        TenantMode::Schema => {
            let schema = schema.unwrap_or_default();
            let db = connect(&admin_config(cfg, &server_name, &database)?).await?;
            // Undo only what this run made: a concurrent create of the same
            // key fails here without touching the other run's schema.
            let made_schema = std::sync::atomic::AtomicBool::new(false);
            let work = async {
                let owner = made.role.as_ref().map_or_else(String::new, |r| {
                    format!(" AUTHORIZATION {}", quote_ident(r))
                });
                let temp = made.role.as_ref().map_or_else(String::new, |r| {
                    format!(
                        "GRANT TEMPORARY ON DATABASE {} TO {};",
                        quote_ident(&database),
                        quote_ident(r)
                    )
                });
                db.batch_execute(&format!(
                    "BEGIN; {PROVISION_LOCK} {} CREATE SCHEMA {}{owner}; {temp} COMMIT;",
                    made.create_role(),
                    quote_ident(&schema),
                ))
                .await
                .map_err(setup_error("(schema setup)"))?;
                made_schema.store(true, std::sync::atomic::Ordering::Relaxed);
                migrate_new(cfg, &db, &spec, &files).await?;
                each_command(cfg, &spec).await?;
                spec.id = Some(catalog::insert(&cat, &spec).await?);
                Ok::<(), ProvisionError>(())
            };
            if let Err(e) = work.await {
                let _ = db.batch_execute("ROLLBACK").await;
                if made_schema.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = db
                        .batch_execute(&format!(
                            "DROP SCHEMA IF EXISTS {} CASCADE; {}",
                            quote_ident(&schema),
                            made.drop_role()
                        ))
                        .await;
                }
                return Err(e);
            }
        }
        TenantMode::Database | TenantMode::Shared => {
            let admin = connect(&admin_config(cfg, &server_name, admin_database(cfg))?).await?;
            // Undo only what this run made (see the schema case).
            let made_role = std::sync::atomic::AtomicBool::new(false);
            let made_db = std::sync::atomic::AtomicBool::new(false);
            let undo = || async {
                if made_db.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = admin
                        .batch_execute(&format!(
                            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                            quote_ident(&database)
                        ))
                        .await;
                }
                if let Some(r) = made
                    .role
                    .as_ref()
                    .filter(|_| made_role.load(std::sync::atomic::Ordering::Relaxed))
                {
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(r)))
                        .await;
                }
            };
            let work = async {
                if made.role.is_some() {
                    admin
                        .batch_execute(&made.create_role())
                        .await
                        .map_err(setup_error("(create role)"))?;
                    made_role.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let owner = made
                    .role
                    .as_ref()
                    .map_or_else(String::new, |r| format!(" OWNER {}", quote_ident(r)));
                let template = server
                    .template
                    .as_ref()
                    .map_or_else(String::new, |t| format!(" TEMPLATE {}", quote_ident(t)));
                admin
                    .batch_execute(&format!(
                        "CREATE DATABASE {}{owner}{template}",
                        quote_ident(&database)
                    ))
                    .await
                    .map_err(setup_error("(create database)"))?;
                made_db.store(true, std::sync::atomic::Ordering::Relaxed);
                if made.role.is_some() {
                    // Only the tenant's role (and superusers) may connect.
                    admin
                        .batch_execute(&format!(
                            "REVOKE CONNECT ON DATABASE {} FROM PUBLIC",
                            quote_ident(&database)
                        ))
                        .await
                        .map_err(setup_error("(revoke connect)"))?;
                }
                let db = connect(&admin_config(cfg, &server_name, &database)?).await?;
                migrate_new(cfg, &db, &spec, &files).await?;
                each_command(cfg, &spec).await?;
                spec.id = Some(catalog::insert(&cat, &spec).await?);
                Ok::<(), ProvisionError>(())
            };
            if let Err(e) = work.await {
                undo().await;
                return Err(e);
            }
        }
    }
    Ok(spec)
}

/// Serialises provisioning steps within one database: they update shared
/// catalog rows (the database's ACL, the shared schema) that concurrent
/// `tenant create` runs would otherwise race on ("tuple concurrently updated").
const PROVISION_LOCK: &str = "SELECT pg_advisory_xact_lock(7305726581);";

/// The tenant role `create` makes (when a role secret is configured).
struct Made {
    role: Option<String>,
    password: String,
}

impl Made {
    /// Creates the role and makes the admin a member of it. On managed
    /// PostgreSQL the admin has only CREATEROLE and, from version 15 on, is
    /// not a member of the roles it creates; it needs membership to create
    /// the schema or database owned by the role, to run migrations as it
    /// (SET ROLE) and to drop what it owns. The tenant role itself is a
    /// member of nothing.
    fn create_role(&self) -> String {
        self.role.as_ref().map_or_else(String::new, |r| {
            format!(
                "CREATE ROLE {q} LOGIN PASSWORD '{}'; GRANT {q} TO CURRENT_USER;",
                self.password,
                q = quote_ident(r),
            )
        })
    }

    fn drop_role(&self) -> String {
        self.role.as_ref().map_or_else(String::new, |r| {
            format!(
                "DROP OWNED BY {q}; DROP ROLE IF EXISTS {q};",
                q = quote_ident(r)
            )
        })
    }
}

/// Where database-level statements (CREATE/DROP DATABASE) run.
fn admin_database(cfg: &Config) -> &str {
    cfg.catalog
        .as_ref()
        .map_or("postgres", |c| c.database.as_str())
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
    let database = spec.database.clone().unwrap_or_default();
    let drop_role = spec.role.as_ref().map_or_else(String::new, |r| {
        format!(
            "DROP OWNED BY {q}; DROP ROLE IF EXISTS {q};",
            q = quote_ident(r)
        )
    });
    let failed = |step: &str, e: tokio_postgres::Error| ProvisionError::Migration {
        file: step.into(),
        message: sql_error(&e),
    };
    match spec.mode {
        TenantMode::Schema => {
            let db = connect(&admin_config(cfg, &spec.server, &database)?).await?;
            let schema = spec.schema.clone().unwrap_or_else(|| format!("t_{key}"));
            db.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE; {drop_role}",
                quote_ident(&schema)
            ))
            .await
            .map_err(|e| failed("(drop schema)", e))?;
        }
        TenantMode::Database => {
            let admin_db = cfg
                .catalog
                .as_ref()
                .map_or("postgres", |c| c.database.as_str());
            let admin = connect(&admin_config(cfg, &spec.server, admin_db)?).await?;
            let drop_role = spec.role.as_ref().map_or_else(String::new, |r| {
                format!("DROP ROLE IF EXISTS {};", quote_ident(r))
            });
            // DROP DATABASE can't share a (implicit) transaction with anything.
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&database)
                ))
                .await
                .map_err(|e| failed("(drop database)", e))?;
            if !drop_role.is_empty() {
                admin
                    .batch_execute(&drop_role)
                    .await
                    .map_err(|e| failed("(drop role)", e))?;
            }
        }
        TenantMode::Shared => {
            let id = spec.id.clone().unwrap_or_default();
            let schema = spec.schema.clone().unwrap_or_else(|| "public".into());
            let db = connect(&admin_config(cfg, &spec.server, &database)?).await?;
            shared::delete_rows(&db, &schema, &id)
                .await
                .map_err(|e| failed("(delete shared rows)", e))?;
        }
    }
    Ok(())
}
