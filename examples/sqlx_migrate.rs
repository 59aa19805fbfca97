//! The sqlx leg of the framework matrix, as `pgtenant migrate --each` runs it:
//! sqlx's `Migrator` on `tests/drivers/sqlx_migrations` against
//! `DATABASE_URL` (the one-time route), twice (the second finds nothing to
//! do); prints the applied versions as one JSON line.
//!
//! `cargo test` builds it; `tests/frameworks.rs` runs it from
//! `target/<profile>/examples/`.

use sqlx::postgres::PgPoolOptions;
use std::path::Path;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let pool = PgPoolOptions::new().connect(&url).await?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/sqlx_migrations");
    let migrator = sqlx::migrate::Migrator::new(dir).await?;
    migrator.run(&pool).await?;
    migrator.run(&pool).await?;
    let versions: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    let list: Vec<String> = versions.iter().map(|v| v.0.to_string()).collect();
    println!("{{\"migrated\":[{}]}}", list.join(","));
    Ok(())
}
