//! Each migration target's ledger, `<schema>.schema_migrations` (SPEC §8):
//! one row per applied version with the file's checksum. Always named
//! schema-qualified, never through search_path.

use crate::tenant::quote_ident;
use std::collections::HashMap;
use tokio_postgres::Client;

/// One ledger row: version and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u32,
    pub checksum: String,
}

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

/// The ledger of one schema (empty when it has none).
pub async fn read(db: &Client, schema: &str) -> Result<Vec<Applied>, tokio_postgres::Error> {
    Ok(read_many(db, &[schema.to_owned()])
        .await?
        .remove(schema)
        .unwrap_or_default())
}

/// Schemas read per statement when reading many ledgers.
const CHUNK: usize = 500;

/// The ledgers of many schemas of one database in a few statements (one to
/// find which have a ledger, one per 500 of those): a no-op run needs no
/// connection per tenant.
pub async fn read_many(
    db: &Client,
    schemas: &[String],
) -> Result<HashMap<String, Vec<Applied>>, tokio_postgres::Error> {
    let with_ledger: Vec<String> = db
        .query(
            "SELECT n.nspname FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relname = 'schema_migrations' AND c.relkind IN ('r', 'p')
                AND n.nspname = ANY($1)",
            &[&schemas],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out: HashMap<String, Vec<Applied>> = HashMap::new();
    for chunk in with_ledger.chunks(CHUNK) {
        let sql = chunk
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "SELECT {i}, version, checksum FROM {}.schema_migrations",
                    quote_ident(s)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for row in db.query(&sql, &[]).await? {
            let i: i32 = row.get(0);
            let version: i32 = row.get(1);
            out.entry(chunk[i as usize].clone())
                .or_default()
                .push(Applied {
                    version: version as u32,
                    checksum: row.get(2),
                });
        }
    }
    Ok(out)
}

/// Records an applied migration.
pub async fn record(
    db: &Client,
    schema: &str,
    version: u32,
    name: &str,
    checksum: &str,
    duration_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        &format!(
            "INSERT INTO {}.schema_migrations(version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            quote_ident(schema)
        ),
        &[&(version as i32), &name, &checksum, &duration_ms],
    )
    .await?;
    Ok(())
}
