//! The bench's tables: one schema per tenant with `bench_accounts`, whose
//! `tenant` column holds the tenant's key so every answer can be checked.

use super::BenchError;
use crate::tenant::{default_schema, quote_ident};

/// The tenant keys of a bench: `<prefix>1` .. `<prefix><n>`.
pub fn tenant_keys(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// Tenants made per round trip (and per progress line).
const BATCH: usize = 100;

/// (Re)creates each tenant's schema and a `bench_accounts` table of `rows`
/// rows on the database `url` names (a superuser or the schemas' owner).
pub async fn init(url: &str, keys: &[String], rows: u32) -> Result<(), BenchError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("SET client_min_messages = warning")
        .await?;
    for (n, chunk) in keys.chunks(BATCH).enumerate() {
        let sql: String = chunk.iter().map(|k| tenant_sql(k, rows)).collect();
        client.batch_execute(&sql).await?;
        eprintln!(
            "bench init: {} of {} tenants",
            (n * BATCH + chunk.len()),
            keys.len()
        );
    }
    client.batch_execute("ANALYZE").await?;
    Ok(())
}

fn tenant_sql(key: &str, rows: u32) -> String {
    let schema = quote_ident(&default_schema(key));
    let literal = key.replace('\'', "''");
    format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.bench_accounts (aid int PRIMARY KEY, tenant text NOT NULL, abalance int NOT NULL DEFAULT 0);
         INSERT INTO {schema}.bench_accounts (aid, tenant) SELECT i, '{literal}' FROM generate_series(1, {rows}) i;\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_numbered_from_one() {
        assert_eq!(tenant_keys("t", 3), vec!["t1", "t2", "t3"]);
    }

    #[test]
    fn each_tenant_gets_its_default_schema_and_its_key_in_every_row() {
        let sql = tenant_sql("acme", 5);
        assert!(sql.contains("CREATE SCHEMA \"t_acme\";"), "{sql}");
        assert!(
            sql.contains("SELECT i, 'acme' FROM generate_series(1, 5)"),
            "{sql}"
        );
    }
}
