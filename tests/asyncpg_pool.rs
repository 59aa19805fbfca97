//! asyncpg's Pool with its defaults (named prepared statements, its reset
//! query `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
//! on every release) in transaction mode, 20 workers over a quota of 3, on a
//! shared (row-level) tenant and a schema tenant with its own role (SPEC §4).
//! scripts/test.sh installs asyncpg in .venv; a missing venv fails the test.

mod common;

use common::*;
use pgtenant::config::TenantMode;
use std::path::Path;

fn config_text() -> String {
    catalog_config_text(
        "ap_app",
        "ap_platform",
        "[tiers.free]\npool_size = 3\n[tiers.premium]\npool_size = 3",
    )
}

#[derive(Debug)]
struct Outcome {
    pids: Vec<i64>,
    transactions: usize,
}

async fn run_pool(port: u16, tenant: &str, expect: &str) -> Outcome {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "Python venv with asyncpg missing at {}: run ./scripts/test.sh, which installs it",
        python.display()
    );
    let out = tokio::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/drivers/asyncpg_pool.py"
        ))
        .env(
            "PGTENANT_DSN",
            format!("postgresql://app.{tenant}@127.0.0.1:{port}/ap_app"),
        )
        .env("PGTENANT_EXPECT", expect)
        .output()
        .await
        .expect("run asyncpg");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "asyncpg pool on {tenant} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    let pids = line
        .split("\"pids\": [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("pids")
        .split(',')
        .map(|p| p.trim().parse::<i64>().expect("pid"))
        .collect();
    let transactions = line
        .split("\"transactions\": ")
        .nth(1)
        .and_then(|r| r.trim_end_matches('}').trim().parse().ok())
        .expect("transactions");
    Outcome { pids, transactions }
}

#[tokio::test]
async fn asyncpg_pool_with_defaults_on_shared_and_schema_tenants() {
    let text = config_text();
    let cfg = catalog_config(&text);
    provision_tenant(&cfg, "apshared", TenantMode::Shared, "free").await;
    provision_tenant(&cfg, "apother", TenantMode::Shared, "free").await;
    provision_tenant(&cfg, "apschema", TenantMode::Schema, "premium").await;
    let proxy = start_proxy(&text).await;
    for (key, name) in [
        ("apshared", "Shared Co"),
        ("apother", "Other Co"),
        ("apschema", "Schema Co"),
    ] {
        let c = connect(&proxy, &format!("user=app.{key} dbname=ap_app"))
            .await
            .expect("connect");
        c.batch_execute(&format!("INSERT INTO customers(name) VALUES ('{name}')"))
            .await
            .expect("row");
    }
    let port = proxy.addr.port();
    // The two shared tenants share server connections while both pools run.
    let (shared, other, schema) = tokio::join!(
        run_pool(port, "apshared", "Shared Co"),
        run_pool(port, "apother", "Other Co"),
        run_pool(port, "apschema", "Schema Co"),
    );
    for (name, o) in [("shared", &shared), ("other", &other), ("schema", &schema)] {
        assert_eq!(o.transactions, 200, "{name}: {o:?}");
    }
    // The schema tenant's links are its own: at most its quota, reused.
    assert!(
        !schema.pids.is_empty() && schema.pids.len() <= 3,
        "schema: {schema:?}"
    );
    // The shared tenants draw from one group of links: at most both quotas
    // together, reused.
    let mut group: Vec<i64> = shared.pids.iter().chain(&other.pids).copied().collect();
    group.sort_unstable();
    group.dedup();
    assert!(
        !shared.pids.is_empty() && !other.pids.is_empty() && group.len() <= 6,
        "shared group: {group:?}"
    );
    proxy.shutdown().await;
}
