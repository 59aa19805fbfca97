//! Django with its defaults through pgtenant in transaction mode (issue 10's
//! framework matrix): `manage.py migrate` through the tenant's own route
//! (schema and database tenants own their schema), ORM CRUD,
//! `transaction.atomic`, `.iterator()` (a WITH HOLD cursor fetched across
//! transactions) while 20 threads run, over a quota of 3.
//! scripts/test.sh installs Django in .venv; a missing venv fails the test.

mod common;

use common::*;
use pgtenant::config::TenantMode;
use std::path::Path;

fn config_text() -> String {
    catalog_config_text("dj_app", "dj_platform", "[tiers.t]\npool_size = 3")
}

async fn run_django(port: u16, tenant: &str, database: &str) -> String {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "Python venv with Django missing at {}: run ./scripts/test.sh, which installs it",
        python.display()
    );
    let out = tokio::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/drivers/django_app.py"
        ))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", format!("app.{tenant}"))
        .env("PGDATABASE", database)
        .output()
        .await
        .expect("run Django");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "Django on {tenant} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().expect("a JSON line").to_owned()
}

#[tokio::test]
async fn django_with_defaults_on_schema_and_database_tenants() {
    let text = config_text();
    let cfg = catalog_config(&text);
    provision_tenant(&cfg, "djschema", TenantMode::Schema, "t").await;
    provision_tenant(&cfg, "djdb", TenantMode::Database, "t").await;
    let proxy = start_proxy(&text).await;
    let want = format!(
        r#"{{"iterated": 3000, "sum": {}, "errors": []}}"#,
        (0..3000).sum::<i64>()
    );
    for (tenant, database) in [("djschema", "dj_app"), ("djdb", "dj_app")] {
        assert_eq!(
            run_django(proxy.addr.port(), tenant, database).await,
            want,
            "{tenant}"
        );
        // Twice: a second `migrate` finds everything applied.
        assert_eq!(
            run_django(proxy.addr.port(), tenant, database).await,
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
