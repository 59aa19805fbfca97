//! Frameworks with their default settings through pgtenant in transaction
//! mode (issue 10's matrix), each against a schema and a database tenant
//! over a quota of 3, their migrations run through the tenant's own route
//! (such tenants own their schema):
//! - Django 5.2 (psycopg 3): `migrate`, ORM CRUD, `transaction.atomic`,
//!   `.iterator()` (a WITH HOLD cursor fetched across transactions) while 20
//!   threads run;
//! - SQLAlchemy 2 on psycopg 3 and on asyncpg, Alembic upgrade / downgrade /
//!   upgrade, ORM CRUD, 20 threads and 20 tasks over the default pools;
//! - TypeORM (pg): runMigrations / undoLastMigration / runMigrations, entity
//!   CRUD, a rolled-back transaction, 20 concurrent workers;
//! - sqlx: its Migrator on a folder, query / query_as, a transaction, 20 tasks;
//! - Rails ActiveRecord: migrations with its advisory lock, model CRUD,
//!   `transaction do`, 20 threads.
//!
//! scripts/test.sh installs them in .venv; a missing venv fails the test.

mod common;

use common::*;
use pgtenant::config::TenantMode;
use std::path::Path;

fn config_text() -> String {
    catalog_config_text("dj_app", "dj_platform", "[tiers.t]\npool_size = 3")
}

/// Provisions `<prefix>schema` (a schema tenant) and `<prefix>db` (a
/// database tenant), then starts pgtenant.
async fn schema_and_database_tenants(prefix: &str) -> pgtenant::app::Running {
    let text = config_text();
    let cfg = catalog_config(&text);
    provision_tenant(&cfg, &format!("{prefix}schema"), TenantMode::Schema, "t").await;
    provision_tenant(&cfg, &format!("{prefix}db"), TenantMode::Database, "t").await;
    start_proxy(&text).await
}

/// Runs `tests/drivers/<script>` against the tenant's route; its last line.
async fn run_python(script: &str, port: u16, tenant: &str, database: &str) -> String {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "Python venv with the frameworks missing at {}: run ./scripts/test.sh, which installs it",
        python.display()
    );
    run_script(python.as_os_str(), script, port, tenant, database).await
}

/// Runs `tests/drivers/<script>` with node (TypeORM from tests/drivers/node_modules).
async fn run_node(script: &str, port: u16, tenant: &str, database: &str) -> String {
    let typeorm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/node_modules/typeorm");
    assert!(
        typeorm.exists(),
        "TypeORM missing at {}: run ./scripts/test.sh, which installs it",
        typeorm.display()
    );
    run_script("node".as_ref(), script, port, tenant, database).await
}

async fn run_script(
    program: &std::ffi::OsStr,
    script: &str,
    port: u16,
    tenant: &str,
    database: &str,
) -> String {
    let out = tokio::process::Command::new(program)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/drivers")
                .join(script),
        )
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", format!("app.{tenant}"))
        .env("PGDATABASE", database)
        .output()
        .await
        .expect("run the framework's script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} on {tenant} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().expect("a JSON line").to_owned()
}

#[tokio::test]
async fn django_with_defaults_on_schema_and_database_tenants() {
    let proxy = schema_and_database_tenants("dj").await;
    let want = format!(
        r#"{{"iterated": 3000, "sum": {}, "errors": []}}"#,
        (0..3000).sum::<i64>()
    );
    for (tenant, database) in [("djschema", "dj_app"), ("djdb", "dj_app")] {
        assert_eq!(
            run_python("django_app.py", proxy.addr.port(), tenant, database).await,
            want,
            "{tenant}"
        );
        // Twice: a second `migrate` finds everything applied.
        assert_eq!(
            run_python("django_app.py", proxy.addr.port(), tenant, database).await,
            want,
            "{tenant} again"
        );
    }
    // Django's tables went to the schema tenant's own schema.
    let db = direct("dj_app").await;
    assert_eq!(
        column(
            &db,
            "SELECT schemaname FROM pg_tables WHERE tablename = 'django_shop_item' ORDER BY 1"
        )
        .await,
        vec!["t_djschema"]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn sqlalchemy_and_alembic_with_defaults_on_schema_and_database_tenants() {
    let proxy = schema_and_database_tenants("sa").await;
    let want = format!(
        r#"{{"psycopg": {}, "asyncpg": {}, "errors": []}}"#,
        (0..100).sum::<i64>(),
        (0..100).sum::<i64>()
    );
    for tenant in ["saschema", "sadb"] {
        assert_eq!(
            run_python("sqlalchemy_app.py", proxy.addr.port(), tenant, "dj_app").await,
            want,
            "{tenant}"
        );
    }
    let db = direct("dj_app").await;
    assert_eq!(
        column(
            &db,
            "SELECT schemaname || ':' || version_num FROM pg_tables t
               JOIN t_saschema.alembic_version v ON true
              WHERE tablename = 'alembic_version' ORDER BY 1"
        )
        .await,
        vec!["t_saschema:0002"]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn typeorm_with_defaults_on_schema_and_database_tenants() {
    let proxy = schema_and_database_tenants("to").await;
    let want = format!(
        r#"{{"sum":{},"migrations":["CreateItems1700000000000","IndexItems1700000000001"],"errors":[]}}"#,
        (0..100).sum::<i64>()
    );
    for tenant in ["toschema", "todb"] {
        assert_eq!(
            run_node("typeorm_app.js", proxy.addr.port(), tenant, "dj_app").await,
            want,
            "{tenant}"
        );
    }
    proxy.shutdown().await;
}

/// sqlx with its defaults (named prepared statements cached per connection,
/// a pool of 10): `sqlx::migrate::Migrator` on a folder, `query` /
/// `query_as`, a rolled-back transaction, 20 tasks.
async fn sqlx_scenario(port: u16, tenant: &str) -> (i64, Vec<i64>) {
    use sqlx::postgres::PgPoolOptions;
    let url = format!("postgres://app.{tenant}@127.0.0.1:{port}/dj_app");
    let pool = PgPoolOptions::new()
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{tenant}: connect: {e}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/sqlx_migrations");
    let migrator = sqlx::migrate::Migrator::new(dir).await.expect("migrations");
    migrator.run(&pool).await.expect("migrate");
    migrator
        .run(&pool)
        .await
        .expect("migrate again: nothing to do");
    sqlx::query("DELETE FROM sx_items")
        .execute(&pool)
        .await
        .expect("clear");
    for i in 0..100i32 {
        sqlx::query("INSERT INTO sx_items (name, qty) VALUES ($1, $2)")
            .bind(format!("row-{i}"))
            .bind(i)
            .execute(&pool)
            .await
            .expect("insert");
    }
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO sx_items (name) VALUES ('rolled back')")
        .execute(&mut *tx)
        .await
        .expect("insert in tx");
    tx.rollback().await.expect("rollback");
    let tasks: Vec<_> = (0..20i32)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let mut tx = pool.begin().await.expect("begin");
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO sx_items (name, qty) VALUES ($1, $2) RETURNING id",
                    )
                    .bind(format!("w{n}"))
                    .bind(n)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("insert");
                    sqlx::query("DELETE FROM sx_items WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .expect("delete");
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let (sum,): (i64,) = sqlx::query_as("SELECT sum(qty)::bigint FROM sx_items")
        .fetch_one(&pool)
        .await
        .expect("sum");
    let versions: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("sqlx ledger");
    pool.close().await;
    (sum, versions.into_iter().map(|v| v.0).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_with_defaults_on_schema_and_database_tenants() {
    let proxy = schema_and_database_tenants("sx").await;
    for tenant in ["sxschema", "sxdb"] {
        assert_eq!(
            sqlx_scenario(proxy.addr.port(), tenant).await,
            ((0..100).sum::<i64>(), vec![1, 2]),
            "{tenant}"
        );
    }
    proxy.shutdown().await;
}

/// Runs `tests/drivers/<script>` with ruby (ActiveRecord from Debian).
async fn run_ruby(script: &str, port: u16, tenant: &str, database: &str) -> String {
    run_script("ruby".as_ref(), script, port, tenant, database).await
}

#[tokio::test]
async fn rails_activerecord_with_defaults_on_schema_and_database_tenants() {
    let proxy = schema_and_database_tenants("ar").await;
    let want = format!(
        r#"{{"sum":{},"versions":["20240101000000","20240102000000"],"errors":[]}}"#,
        (0..100).sum::<i64>()
    );
    for tenant in ["arschema", "ardb"] {
        assert_eq!(
            run_ruby("rails_app.rb", proxy.addr.port(), tenant, "dj_app").await,
            want,
            "{tenant}"
        );
    }
    // Rails' schema_migrations and pgtenant's ledger side by side.
    let db = direct("dj_app").await;
    assert_eq!(
        column(
            &db,
            "SELECT tablename FROM pg_tables WHERE schemaname = 't_arschema'
                AND tablename IN ('schema_migrations', 'pgtenant_migrations') ORDER BY 1"
        )
        .await,
        vec!["pgtenant_migrations", "schema_migrations"]
    );
    proxy.shutdown().await;
}
