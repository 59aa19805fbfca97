//! Readying a database's shared schema for shared-table (free-tier) tenants
//! (SPEC §3, §5): the signed-context function `pgtenant.current_tenant()` and
//! its key, the role shared tenants log in as, the shared tables (migrations),
//! and privileges that keep tenants from reaching each other through the
//! backend they share. Idempotent, and serialised by an advisory lock so
//! concurrent `tenant create` runs don't race; a later create also picks up
//! migrations added since.

use super::ProvisionError;
use crate::catalog::{admin_config, connect};
use crate::config::Config;
use crate::config::TenantMode;
use crate::migrate::{MigrationFile, Target};
use crate::tenant::signing::{ContextKey, INSTALL_SQL};
use crate::tenant::{quote_ident, roles};

/// The login role of every shared tenant: not a superuser and not the tables'
/// owner, so row-level security applies to it.
pub const SHARED_ROLE: &str = "pgtenant_shared";

/// What a shared tenant must not reach through the role every shared tenant
/// shares: other backends' query text, cancelling or terminating them, and
/// large objects (which have no row-level security). Revoking these from
/// PUBLIC needs the owner of `pg_catalog`, a superuser: `tenant create` runs
/// it when its admin is one; on managed PostgreSQL it warns, and a superuser
/// (where the provider gives one) runs it in each database with shared
/// tenants: `pgtenant shared-hardening-sql` prints it.
pub const HARDENING_SQL: &str = "REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC;
GRANT SELECT ON pg_catalog.pg_stat_activity TO pg_read_all_stats;
DO $harden$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pg_catalog'::regnamespace
                AND p.proname IN ('pg_stat_get_activity', 'pg_stat_get_backend_activity',
                                  'pg_cancel_backend', 'pg_terminate_backend',
                                  'lo_creat', 'lo_create', 'lo_from_bytea', 'lo_open',
                                  'lo_get', 'lo_put', 'lo_unlink', 'lo_import', 'lo_export',
                                  'loread', 'lowrite', 'lo_truncate', 'lo_truncate64',
                                  'lo_lseek', 'lo_lseek64', 'lo_tell', 'lo_tell64', 'lo_close')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        IF f::text LIKE 'pg_stat_%' THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pg_read_all_stats', f);
        ELSIF f::text LIKE 'pg_cancel_backend%' OR f::text LIKE 'pg_terminate_backend%' THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pg_signal_backend', f);
        END IF;
    END LOOP;
END$harden$;
";

/// True when the shared role can still reach what [`HARDENING_SQL`] revokes.
const UNHARDENED_SQL: &str =
    "SELECT has_table_privilege($1, 'pg_catalog.pg_stat_activity', 'SELECT')
    OR has_function_privilege($1, 'pg_catalog.pg_cancel_backend(integer)', 'EXECUTE')
    OR has_function_privilege($1, 'pg_catalog.lo_open(oid, integer)', 'EXECUTE')";

/// Installs everything shared tenants of `database` need; returns the role
/// they log in as. The shared role is one cluster-wide row that the
/// provisioning lock (per database) does not cover: two databases readied at
/// once may collide on it ("tuple concurrently updated"); the step is
/// idempotent, so it is run again.
pub async fn prepare(
    cfg: &Config,
    server: &str,
    database: &str,
    schema: &str,
    files: &[MigrationFile],
) -> Result<String, ProvisionError> {
    let mut attempt = 0;
    loop {
        match prepare_once(cfg, server, database, schema, files).await {
            Err(e) if attempt < 5 && collided(&e) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Two databases readied at once collided on a cluster-wide catalog row:
/// the shared role's (a concurrent CREATE ROLE or ALTER ROLE).
fn collided(e: &ProvisionError) -> bool {
    let m = e.to_string();
    m.contains("tuple concurrently updated")
        || m.contains("pg_authid_rolname_index")
        || m.contains(&format!("role \"{SHARED_ROLE}\" already exists"))
}

async fn prepare_once(
    cfg: &Config,
    server: &str,
    database: &str,
    schema: &str,
    files: &[MigrationFile],
) -> Result<String, ProvisionError> {
    let secret = roles::role_secret(cfg).ok_or(ProvisionError::SharedNeedsSecret)?;
    let password = roles::derived_password(cfg, SHARED_ROLE).unwrap_or_default();
    let (ipad, opad) = ContextKey::derive(&secret, database).pads();
    let service_user = cfg
        .servers
        .get(server)
        .map(|s| s.user.clone())
        .unwrap_or_default();
    // The migration runner reads ledgers through a pg_temp function.
    let admin_user = cfg
        .servers
        .get(server)
        .and_then(|s| s.admin_user.clone())
        .unwrap_or_else(|| service_user.clone());
    let db = connect(&admin_config(cfg, server, database)?).await?;
    let failed = super::setup_error;
    let (r, s, d) = (
        quote_ident(SHARED_ROLE),
        quote_ident(schema),
        quote_ident(database),
    );
    let work = async {
        db.batch_execute("BEGIN").await.map_err(failed("(begin)"))?;
        db.batch_execute(super::PROVISION_LOCK)
            .await
            .map_err(failed("(lock)"))?;
        db.batch_execute(INSTALL_SQL)
            .await
            .map_err(failed("(pgtenant.current_tenant)"))?;
        db.execute(
            "INSERT INTO pgtenant.context_key(ipad, opad) VALUES ($1, $2)
             ON CONFLICT (one) DO UPDATE SET ipad = EXCLUDED.ipad, opad = EXCLUDED.opad",
            &[&ipad.as_slice(), &opad.as_slice()],
        )
        .await
        .map_err(failed("(context key)"))?;
        // Privileges a shared backend must not carry between tenants: objects
        // in the shared schema, other sessions' query text. Temporary tables
        // are allowed (the staging pattern for bulk loads, as COPY FROM is
        // refused on RLS tables): one pins its link to its client until
        // dropped, and a link is wiped (DISCARD ALL) before it serves another
        // tenant, so none ever shadows a shared table for another client.
        db.batch_execute(&format!(
            "DO $do$BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SHARED_ROLE}') THEN
                     CREATE ROLE {r} LOGIN;
                 END IF;
             END$do$;
             ALTER ROLE {r} LOGIN NOCREATEDB NOCREATEROLE PASSWORD '{password}';
             GRANT CONNECT ON DATABASE {d} TO {r};
             REVOKE TEMPORARY ON DATABASE {d} FROM PUBLIC;
             GRANT TEMPORARY ON DATABASE {d} TO {svc}, {admin}, {r};
             REVOKE CREATE ON SCHEMA {s} FROM PUBLIC;
             GRANT USAGE ON SCHEMA {s} TO {r};
             ALTER ROLE {r} RESET ALL;",
            svc = quote_ident(&service_user),
            admin = quote_ident(&admin_user),
        ))
        .await
        .map_err(failed("(shared role)"))?;
        // A CREATEROLE admin can neither set nor clear SUPERUSER and
        // BYPASSRLS: check that nobody gave the role a way around RLS.
        let bypass: bool = db
            .query_one(
                "SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&SHARED_ROLE],
            )
            .await
            .map_err(failed("(shared role attributes)"))?
            .get(0);
        let superuser: bool = db
            .query_one(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(failed("(admin attributes)"))?
            .get(0);
        if superuser {
            db.batch_execute(HARDENING_SQL)
                .await
                .map_err(failed("(hardening)"))?;
        }
        if bypass {
            return Err(ProvisionError::Migration {
                file: "(shared role)".into(),
                message: format!(
                    "role {SHARED_ROLE:?} is a superuser or has BYPASSRLS: row-level security would not apply to it; a superuser must run ALTER ROLE {SHARED_ROLE} NOSUPERUSER NOBYPASSRLS"
                ),
            });
        }
        db.batch_execute("COMMIT")
            .await
            .map_err(failed("(commit)"))?;
        let target = Target {
            server: server.to_owned(),
            database: database.to_owned(),
            schema: schema.to_owned(),
            mode: TenantMode::Shared,
            role: None,
            tenants: Vec::new(),
            servable: true,
        };
        super::migrate_target(cfg, &db, &target, files).await?;
        db.batch_execute(&format!(
            "BEGIN; {lock}
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r};
             REVOKE ALL ON {s}.{ledger} FROM {r};
             ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r};
             ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r};
             COMMIT;",
            lock = super::PROVISION_LOCK,
            ledger = quote_ident(&cfg.migrations.ledger_table),
        ))
        .await
        .map_err(failed("(shared grants)"))?;
        let open: Vec<String> = db
            .query(
                "SELECT c.relname FROM pg_class c
                  WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.relkind IN ('r', 'p')
                    AND NOT c.relrowsecurity AND c.relname <> $2
                  ORDER BY 1",
                &[&schema, &cfg.migrations.ledger_table],
            )
            .await
            .map_err(failed("(row-level security check)"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let unhardened: bool = db
            .query_one(UNHARDENED_SQL, &[&SHARED_ROLE])
            .await
            .map_err(failed("(hardening check)"))?
            .get(0);
        if unhardened {
            tracing::warn!(
                %database,
                "shared tenants can see each other's query text in pg_stat_activity, cancel each other's queries and open each other's large objects: revoking that needs a superuser (managed PostgreSQL gives none). Where one is available, run the output of `pgtenant shared-hardening-sql` in this database as a superuser"
            );
        }
        for table in open {
            tracing::warn!(
                %database, %schema, %table,
                "shared table without row-level security: every shared tenant can read all of its rows"
            );
        }
        Ok(())
    };
    if let Err(e) = work.await {
        let _ = db.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    Ok(SHARED_ROLE.to_owned())
}

/// Deletes a shared tenant's rows from every table of `schema` with a
/// `tenant_id` column, in one transaction. Tables that others reference are
/// retried after those (a foreign key fails until its referrers are gone).
pub async fn delete_rows(
    db: &tokio_postgres::Client,
    schema: &str,
    id: &str,
) -> Result<(), tokio_postgres::Error> {
    let mut tables: Vec<String> = db
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
              WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
                AND c.relkind IN ('r', 'p') AND a.attname = 'tenant_id' AND NOT a.attisdropped
              ORDER BY 1",
            &[&schema],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.batch_execute("BEGIN").await?;
    let work = async {
        while !tables.is_empty() {
            let mut left = Vec::new();
            for t in &tables {
                db.batch_execute("SAVEPOINT pgtenant_drop").await?;
                let deleted = db
                    .execute(
                        &format!(
                            "DELETE FROM {}.{} WHERE tenant_id::text = $1",
                            quote_ident(schema),
                            quote_ident(t)
                        ),
                        &[&id],
                    )
                    .await;
                match deleted {
                    Ok(_) => db.batch_execute("RELEASE SAVEPOINT pgtenant_drop").await?,
                    Err(e)
                        if e.code()
                            == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
                    {
                        db.batch_execute("ROLLBACK TO SAVEPOINT pgtenant_drop")
                            .await?;
                        left.push(t.clone());
                    }
                    Err(e) => return Err(e),
                }
            }
            if left.len() == tables.len() {
                // A cycle of references: the last error says which.
                let t = &left[0];
                db.execute(
                    &format!(
                        "DELETE FROM {}.{} WHERE tenant_id::text = $1",
                        quote_ident(schema),
                        quote_ident(t)
                    ),
                    &[&id],
                )
                .await?;
            }
            tables = left;
        }
        db.batch_execute("COMMIT").await
    };
    let result = work.await;
    if result.is_err() {
        let _ = db.batch_execute("ROLLBACK").await;
    }
    result
}

/// Sets the shared role's password back to the one derived from the role
/// secret. Every shared tenant logs in as this one role, and a role may change
/// its own password (`ALTER ROLE CURRENT_USER PASSWORD` through dynamic SQL):
/// the pool calls this when a shared login is refused, then retries once.
pub async fn repair_shared_login(
    cfg: &Config,
    server: &str,
    database: &str,
) -> Result<(), ProvisionError> {
    let password =
        roles::derived_password(cfg, SHARED_ROLE).ok_or(ProvisionError::SharedNeedsSecret)?;
    let db = connect(&admin_config(cfg, server, database)?).await?;
    // Under the provisioning lock: two ALTER ROLEs of the same role at once
    // fail with "tuple concurrently updated" (a create readying the database,
    // another replica repairing).
    db.batch_execute(&format!(
        "BEGIN; {lock} ALTER ROLE {r} PASSWORD '{password}'; ALTER ROLE {r} RESET ALL; COMMIT;",
        lock = super::PROVISION_LOCK,
        r = quote_ident(SHARED_ROLE),
    ))
    .await
    .map_err(super::setup_error("(repair shared login)"))
}
