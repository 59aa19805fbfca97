//! A dedicated tenant's home: its role, its schema or database, every
//! migration and the app's `each_command`, made all or nothing (`tenant
//! create`, and the new home of `promote`, `demote`'s reverse and `move`);
//! and removed again (`tenant drop`, the old home after a move).

use super::{admin_database, each_command, migrate_new, setup_error, shared, ProvisionError};
use super::{MigrationFile, PROVISION_LOCK};
use crate::catalog::{admin_config, connect};
use crate::config::{Config, TenantConfig, TenantMode};
use crate::tenant::{quote_ident, roles};

/// Where a tenant of `mode` lives on `server`: its database and schema.
pub(super) fn route(
    cfg: &Config,
    key: &str,
    mode: TenantMode,
    server: &str,
) -> Result<(String, Option<String>), ProvisionError> {
    let s = cfg
        .servers
        .get(server)
        .ok_or_else(|| ProvisionError::UnknownServer(server.to_owned()))?;
    let database = match mode {
        TenantMode::Database => key.to_owned(),
        TenantMode::Schema | TenantMode::Shared => s.database.clone(),
    };
    Ok((database, crate::tenant::home_schema(mode, key, None)))
}

/// What `make` created, to be undone if a later step fails.
pub(super) struct Home {
    spec: TenantConfig,
    made_role: bool,
    made_place: bool,
}

/// Makes the home `spec` describes (a schema or database tenant; `spec.role`
/// is filled in): with a role secret the tenant gets its own login role
/// owning its schema or database, the boundary PostgreSQL enforces (SPEC §5).
/// A role of that name that exists already on the server (another server
/// entry for the same cluster) is used as it is. On failure, whatever this
/// call made is removed again.
pub(super) async fn make(
    cfg: &Config,
    spec: &mut TenantConfig,
    files: &[MigrationFile],
) -> Result<Home, ProvisionError> {
    spec.role = roles::role_secret(cfg).map(|_| roles::role_name(&spec.key));
    let mut home = Home {
        spec: spec.clone(),
        made_role: false,
        made_place: false,
    };
    let work = build(cfg, &mut home, files).await;
    match work {
        Ok(()) => Ok(home),
        Err(e) => {
            home.undo(cfg).await;
            Err(e)
        }
    }
}

async fn build(
    cfg: &Config,
    home: &mut Home,
    files: &[MigrationFile],
) -> Result<(), ProvisionError> {
    let spec = home.spec.clone();
    let database = spec.database.clone().unwrap_or_default();
    let admin = connect(&admin_config(
        cfg,
        &spec.server,
        admin_database(cfg, &spec.server),
    )?)
    .await?;
    if let Some(r) = &spec.role {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[r])
            .await
            .map_err(setup_error("(find role)"))?
            .is_some();
        if !exists {
            let password = roles::derived_password(cfg, r).unwrap_or_default();
            admin
                .batch_execute(&create_role(r, &password))
                .await
                .map_err(setup_error("(create role)"))?;
            home.made_role = true;
        }
    }
    match spec.mode {
        TenantMode::Schema => {
            let schema = spec.schema.clone().unwrap_or_default();
            let db = connect(&admin_config(cfg, &spec.server, &database)?).await?;
            let owner = spec.role.as_ref().map_or_else(String::new, |r| {
                format!(" AUTHORIZATION {}", quote_ident(r))
            });
            let temp = spec.role.as_ref().map_or_else(String::new, |r| {
                format!(
                    "GRANT TEMPORARY ON DATABASE {} TO {};",
                    quote_ident(&database),
                    quote_ident(r)
                )
            });
            db.batch_execute(&format!(
                "BEGIN; {PROVISION_LOCK} CREATE SCHEMA {}{owner}; {temp} COMMIT;",
                quote_ident(&schema),
            ))
            .await
            .map_err(setup_error("(schema setup)"))?;
            home.made_place = true;
            migrate_new(cfg, &db, &spec, files).await?;
        }
        TenantMode::Database => {
            let owner = spec
                .role
                .as_ref()
                .map_or_else(String::new, |r| format!(" OWNER {}", quote_ident(r)));
            let template = cfg
                .servers
                .get(&spec.server)
                .and_then(|s| s.template.as_ref())
                .map_or_else(String::new, |t| format!(" TEMPLATE {}", quote_ident(t)));
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {}{owner}{template}",
                    quote_ident(&database)
                ))
                .await
                .map_err(setup_error("(create database)"))?;
            home.made_place = true;
            if spec.role.is_some() {
                // Only the tenant's role (and superusers) may connect.
                admin
                    .batch_execute(&format!(
                        "REVOKE CONNECT ON DATABASE {} FROM PUBLIC",
                        quote_ident(&database)
                    ))
                    .await
                    .map_err(setup_error("(revoke connect)"))?;
            }
            let db = connect(&admin_config(cfg, &spec.server, &database)?).await?;
            migrate_new(cfg, &db, &spec, files).await?;
        }
        TenantMode::Shared => unreachable!("the shared schema is prepared, not made per tenant"),
    }
    each_command(cfg, &spec).await
}

impl Home {
    /// Removes what `make` created (errors are logged: this runs after a
    /// failure, which is what gets reported).
    pub(super) async fn undo(&self, cfg: &Config) {
        let spec = &self.spec;
        let database = spec.database.clone().unwrap_or_default();
        let step = async {
            if self.made_place {
                drop_place(cfg, spec).await?;
            }
            if let Some(r) = spec.role.as_ref().filter(|_| self.made_role) {
                drop_role(cfg, &spec.server, &database, spec.mode, r).await?;
            }
            Ok::<(), ProvisionError>(())
        };
        if let Err(e) = step.await {
            tracing::error!(tenant = %spec.key, error = %e, "could not remove the half-made home");
        }
    }
}

/// Creates the role and makes the admin a member of it. On managed
/// PostgreSQL the admin has only CREATEROLE and, from version 15 on, is not a
/// member of the roles it creates; it needs membership to create the schema
/// or database owned by the role, to run migrations as it (SET ROLE) and to
/// drop what it owns. The tenant role itself is a member of nothing.
fn create_role(role: &str, password: &str) -> String {
    format!(
        "CREATE ROLE {q} LOGIN PASSWORD {p}; GRANT {q} TO CURRENT_USER;",
        q = quote_ident(role),
        p = crate::sql::literal(password),
    )
}

/// Drops a tenant role and what it still owns or may do in `database`.
async fn drop_role(
    cfg: &Config,
    server: &str,
    database: &str,
    mode: TenantMode,
    role: &str,
) -> Result<(), ProvisionError> {
    let q = quote_ident(role);
    if mode == TenantMode::Schema {
        // Its grants in the database (TEMPORARY) go with DROP OWNED there.
        let db = connect(&admin_config(cfg, server, database)?).await?;
        db.batch_execute(&format!("DROP OWNED BY {q}; DROP ROLE IF EXISTS {q};"))
            .await
            .map_err(setup_error("(drop role)"))?;
    } else {
        let admin = connect(&admin_config(cfg, server, admin_database(cfg, server))?).await?;
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {q}"))
            .await
            .map_err(setup_error("(drop role)"))?;
    }
    Ok(())
}

/// Removes a tenant's home: its schema or database and role, or its rows of
/// the shared tables. `keep_role` keeps the role (it serves the tenant's
/// new home on the same cluster).
pub(super) async fn remove_home(
    cfg: &Config,
    spec: &TenantConfig,
    keep_role: bool,
) -> Result<(), ProvisionError> {
    let database = spec.database.clone().unwrap_or_default();
    if spec.mode == TenantMode::Shared {
        let id = spec.id.clone().unwrap_or_default();
        let schema = spec.schema.clone().unwrap_or_else(|| "public".into());
        let db = connect(&admin_config(cfg, &spec.server, &database)?).await?;
        return shared::delete_rows(&db, &schema, &id)
            .await
            .map_err(setup_error("(delete shared rows)"));
    }
    drop_place(cfg, spec).await?;
    match spec.role.as_ref().filter(|_| !keep_role) {
        Some(r) => drop_role(cfg, &spec.server, &database, spec.mode, r).await,
        None => Ok(()),
    }
}

/// Drops a schema or database tenant's schema or database.
async fn drop_place(cfg: &Config, spec: &TenantConfig) -> Result<(), ProvisionError> {
    let database = spec.database.clone().unwrap_or_default();
    if spec.mode == TenantMode::Schema {
        let db = connect(&admin_config(cfg, &spec.server, &database)?).await?;
        let schema = spec
            .schema
            .clone()
            .unwrap_or_else(|| crate::tenant::default_schema(&spec.key));
        db.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&schema)
        ))
        .await
        .map_err(setup_error("(drop schema)"))?;
    } else {
        let admin = connect(&admin_config(
            cfg,
            &spec.server,
            admin_database(cfg, &spec.server),
        )?)
        .await?;
        // DROP DATABASE can't share a (implicit) transaction with anything.
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&database)
            ))
            .await
            .map_err(setup_error("(drop database)"))?;
    }
    Ok(())
}

/// `tenant drop`: the tenant's home, role included.
pub(super) async fn remove(cfg: &Config, spec: &TenantConfig) -> Result<(), ProvisionError> {
    remove_home(cfg, spec, false).await
}
