//! Change capture for a tenant being moved: triggers on the tenant's source
//! tables record the key of every row it inserts, updates or deletes in a
//! log table, so the mover copies the bulk online and then only what changed
//! since (SPEC §9, "catches up what was written meanwhile").
//!
//! Why triggers and not logical decoding: decoding needs the REPLICATION
//! attribute and `wal_level = logical`, which managed services rarely give a
//! CREATEROLE admin; triggers need only the tables' owner (or membership in
//! it). They cost other tenants of shared tables one WHEN test per written
//! row while the move runs, and nothing after: they are dropped at the end.
//!
//! The log and the trigger function belong to the admin, in schema
//! `pgtenant_relocate` that tenants can't use; the function is SECURITY
//! DEFINER so the tenant's role (or the shared role) can log through it
//! without any grant, and it does nothing once the log is gone.

use super::super::{setup_error, ProvisionError, PROVISION_LOCK};
use crate::tenant::quote_ident;
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Client;

const SCHEMA: &str = "pgtenant_relocate";

/// Installed once per database (replaced when it changes).
const FUNCTION: &str = r#"
CREATE SCHEMA IF NOT EXISTS pgtenant_relocate;
DO $own$
BEGIN
    -- A tenant owning its database could have made the schema first, to
    -- put its own objects where the admin's SECURITY DEFINER code writes.
    IF (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'pgtenant_relocate')
       <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'schema pgtenant_relocate in database % does not belong to %: drop it (it is pgtenant''s)',
            current_database(), current_user;
    END IF;
END $own$;
REVOKE ALL ON SCHEMA pgtenant_relocate FROM PUBLIC;
CREATE OR REPLACE FUNCTION pgtenant_relocate.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $capture$
DECLARE
    log regclass := to_regclass('pgtenant_relocate.' || quote_ident(TG_ARGV[0]));
    r jsonb;
    k jsonb;
    i int;
BEGIN
    -- TG_ARGV: the log table, the table's name as the mover knows it (a
    -- partition's trigger reports its parent), then the key columns.
    IF log IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        -- TRUNCATE: the whole table is to be copied again.
        EXECUTE format('INSERT INTO %s (tbl, key) VALUES ($1, $2)', log)
            USING TG_ARGV[1], '{}'::jsonb;
        RETURN NULL;
    END IF;
    FOR pass IN 1..2 LOOP
        IF pass = 1 AND TG_OP <> 'INSERT' THEN
            r := to_jsonb(OLD);
        ELSIF pass = 2 AND TG_OP <> 'DELETE' THEN
            r := to_jsonb(NEW);
        ELSE
            CONTINUE;
        END IF;
        k := '{}';
        FOR i IN 2 .. TG_NARGS - 1 LOOP
            k := k || jsonb_build_object(TG_ARGV[i], r -> TG_ARGV[i]);
        END LOOP;
        EXECUTE format('INSERT INTO %s (tbl, key) VALUES ($1, $2)', log)
            USING TG_ARGV[1], k;
    END LOOP;
    RETURN NULL;
END
$capture$;
"#;

/// The capture of one tenant's changes in one database.
pub(super) struct Capture {
    log: String,
    trigger: String,
    schema: String,
    tables: Vec<String>,
}

/// Rows changed since the last drain, by table: their keys as JSON objects,
/// or the whole table (a table without a key, or a TRUNCATE).
#[derive(Debug, Default)]
pub(super) struct Dirty {
    pub whole: bool,
    pub keys: BTreeSet<String>,
}

/// Installs capture for `tables` (name and key columns) of `schema`. With
/// `tenant_id`, only rows whose `tenant_id` is it are recorded (the shared
/// tables). DDL waits at most `lock_timeout` for each table: a long
/// transaction elsewhere makes the move fail rather than queue every writer
/// of the table behind it.
pub(super) async fn install(
    db: &Client,
    key: &str,
    schema: &str,
    tables: &[(String, Option<Vec<String>>)],
    tenant_id: Option<&str>,
) -> Result<Capture, ProvisionError> {
    // Names from a hash of the key: PostgreSQL cuts names at 63 bytes, and
    // long keys sharing a prefix must not share triggers.
    let tag = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(key.as_bytes());
        h.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let capture = Capture {
        log: format!("changes_{tag}"),
        trigger: format!("pgtenant_relocate_{tag}"),
        schema: schema.to_owned(),
        tables: tables.iter().map(|(t, _)| t.clone()).collect(),
    };
    db.batch_execute(&format!(
        "BEGIN; {PROVISION_LOCK} {FUNCTION}
         DROP TABLE IF EXISTS {SCHEMA}.{log};
         CREATE TABLE {SCHEMA}.{log} (seq bigserial PRIMARY KEY, tbl text NOT NULL, key jsonb NOT NULL);
         COMMIT;",
        log = quote_ident(&capture.log)
    ))
    .await
    .map_err(setup_error("(change capture)"))?;
    // One table at a time, each in its own transaction: a DDL lock is never
    // held while waiting for the next table's, so no writer can deadlock with
    // it. Every trigger is in place before the bulk copy's snapshot.
    for (table, cols) in tables {
        let mut args = vec![
            crate::sql::literal(&capture.log),
            crate::sql::literal(table),
        ];
        args.extend(cols.iter().flatten().map(|c| crate::sql::literal(c)));
        let args = args.join(", ");
        let on = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let name = |suffix: &str| quote_ident(&format!("{}{suffix}", capture.trigger));
        let sql = match tenant_id {
            Some(id) => {
                let id = crate::sql::literal(id);
                format!(
                    "CREATE TRIGGER {i} AFTER INSERT ON {on} FOR EACH ROW
                         WHEN (NEW.tenant_id = {id}::uuid)
                         EXECUTE FUNCTION {SCHEMA}.capture({args});
                     CREATE TRIGGER {u} AFTER UPDATE ON {on} FOR EACH ROW
                         WHEN (OLD.tenant_id = {id}::uuid OR NEW.tenant_id = {id}::uuid)
                         EXECUTE FUNCTION {SCHEMA}.capture({args});
                     CREATE TRIGGER {d} AFTER DELETE ON {on} FOR EACH ROW
                         WHEN (OLD.tenant_id = {id}::uuid)
                         EXECUTE FUNCTION {SCHEMA}.capture({args});",
                    i = name("_i"),
                    u = name("_u"),
                    d = name("_d"),
                )
            }
            None => format!(
                "CREATE TRIGGER {r} AFTER INSERT OR UPDATE OR DELETE ON {on} FOR EACH ROW
                     EXECUTE FUNCTION {SCHEMA}.capture({args});
                 CREATE TRIGGER {t} AFTER TRUNCATE ON {on} FOR EACH STATEMENT
                     EXECUTE FUNCTION {SCHEMA}.capture({args});",
                r = name("_r"),
                t = name("_t"),
            ),
        };
        if let Err(e) = db
            .batch_execute(&format!(
                "SET lock_timeout = '3s'; BEGIN; {sql} COMMIT; RESET lock_timeout;"
            ))
            .await
        {
            let _ = db.batch_execute("ROLLBACK; RESET lock_timeout").await;
            let _ = capture.remove(db).await;
            return Err(setup_error(&format!("(change capture on {table})"))(e));
        }
    }
    Ok(capture)
}

impl Capture {
    /// Takes the changes recorded so far out of the log. Call inside a
    /// transaction the caller commits once they are applied: a failure
    /// leaves them in the log.
    pub(super) async fn drain(
        &self,
        db: &Client,
    ) -> Result<BTreeMap<String, Dirty>, ProvisionError> {
        let rows = db
            .query(
                &format!(
                    "DELETE FROM {SCHEMA}.{} RETURNING tbl, key::text",
                    quote_ident(&self.log)
                ),
                &[],
            )
            .await
            .map_err(setup_error("(read changes)"))?;
        let mut out: BTreeMap<String, Dirty> = BTreeMap::new();
        for r in rows {
            let d = out.entry(r.get(0)).or_default();
            let key: String = r.get(1);
            if key == "{}" {
                d.whole = true;
            } else {
                d.keys.insert(key);
            }
        }
        Ok(out)
    }

    /// Changes recorded and not drained.
    pub(super) async fn pending(&self, db: &Client) -> Result<i64, ProvisionError> {
        Ok(db
            .query_one(
                &format!("SELECT count(*) FROM {SCHEMA}.{}", quote_ident(&self.log)),
                &[],
            )
            .await
            .map_err(setup_error("(count changes)"))?
            .get(0))
    }

    /// Drops the triggers, then the log. A trigger that can't be dropped
    /// (a lock not granted in time) is retried a few times, and reported with
    /// the SQL to run; the log stays while any trigger does.
    pub(super) async fn remove(&self, db: &Client) -> Result<(), ProvisionError> {
        // DROP TRIGGER locks its table exclusively: one table per
        // transaction, children first, never holding one table's lock while
        // waiting for another's (a writer holding the second and reading the
        // first would deadlock with it).
        let mut left = Vec::new();
        let mut last = None;
        for table in self.tables.iter().rev() {
            let sql = self.drop_sql(table);
            if let Err(e) = ddl(db, &sql).await {
                left.push(sql);
                last = Some(e);
            }
        }
        if left.is_empty() {
            self.drop_log(db).await;
            return Ok(());
        }
        let e = last
            .map(|e| super::super::sql_error(&e))
            .unwrap_or_default();
        Err(ProvisionError::Dump(format!(
            "the change-capture triggers could not be dropped ({e}); run: {}",
            left.join(" ")
        )))
    }

    fn drop_sql(&self, table: &str) -> String {
        ["_i", "_u", "_d", "_r", "_t"]
            .iter()
            .map(|suffix| {
                format!(
                    "DROP TRIGGER IF EXISTS {} ON {}.{};",
                    quote_ident(&format!("{}{suffix}", self.trigger)),
                    quote_ident(&self.schema),
                    quote_ident(table)
                )
            })
            .collect()
    }

    async fn drop_log(&self, db: &Client) {
        let _ = db
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {SCHEMA}.{}",
                quote_ident(&self.log)
            ))
            .await;
    }
}

/// Runs trigger DDL in its own transaction, waiting at most 100 ms for the
/// table's lock each try (a DDL lock waiting in the queue stalls every
/// writer behind it: other tenants' too, on shared tables), up to 40 tries
/// a few dozen milliseconds apart.
async fn ddl(db: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match db
            .batch_execute(&format!(
                "SET lock_timeout = '100ms'; BEGIN; {sql} COMMIT; RESET lock_timeout;"
            ))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = db.batch_execute("ROLLBACK; RESET lock_timeout").await;
                let busy = e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
                if !busy || tries >= 40 {
                    return Err(e);
                }
                let pause = 20 + u64::from(rand::random::<u8>() % 60);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
        }
    }
}
