//! Each migration target's ledger, `<schema>.schema_migrations` (SPEC §8), and
//! applying the versions it lacks inside the caller's open transaction, so a
//! new tenant gets its schema and its ledger rows atomically. Names are always
//! schema-qualified; each migration runs with `SET LOCAL search_path` to the
//! target and `pgtenant.target_mode` set ('schema', 'database' or 'shared') so
//! one set of files can add tenant_id and row-level security to shared tables only.

use super::MigrationFile;
use crate::tenant::quote_ident;
use std::time::Instant;
use tokio_postgres::Client;

/// The ledger table of `schema`.
pub fn ledger_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.schema_migrations (
             version     int PRIMARY KEY,
             name        text NOT NULL,
             checksum    text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now(),
             duration_ms bigint NOT NULL
         )",
        quote_ident(schema)
    )
}

/// A migration that failed, for the caller's error.
#[derive(Debug)]
pub struct Failed {
    pub file: String,
    pub error: tokio_postgres::Error,
}

/// Applies every file the target's ledger lacks, in order, recording each.
/// Must run inside a transaction; returns the versions applied.
pub async fn apply_missing(
    db: &Client,
    schema: &str,
    mode: &str,
    files: &[MigrationFile],
) -> Result<Vec<u32>, Failed> {
    let step = |file: &str| {
        let file = file.to_owned();
        move |error| Failed { file, error }
    };
    db.batch_execute(&ledger_ddl(schema))
        .await
        .map_err(step("(ledger)"))?;
    let q = quote_ident(schema);
    let applied: Vec<i32> = db
        .query(&format!("SELECT version FROM {q}.schema_migrations"), &[])
        .await
        .map_err(step("(ledger)"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut done = Vec::new();
    for f in files {
        if applied.contains(&(f.version as i32)) {
            continue;
        }
        let file = format!("{:03}_{}.sql", f.version, f.name);
        let started = Instant::now();
        db.batch_execute(&format!(
            "SET LOCAL search_path TO {q}; SET LOCAL pgtenant.target_mode = '{mode}';\n{}",
            f.sql
        ))
        .await
        .map_err(step(&file))?;
        db.execute(
            &format!(
                "INSERT INTO {q}.schema_migrations(version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)"
            ),
            &[
                &(f.version as i32),
                &f.name,
                &f.checksum,
                &(started.elapsed().as_millis() as i64),
            ],
        )
        .await
        .map_err(step(&file))?;
        done.push(f.version);
    }
    Ok(done)
}
