//! `tenant dump` / `tenant restore` (SPEC §9, issue 13 acceptance 5): one
//! portable format for every mode; round trips keep row counts, a checksum
//! per table and ids, across modes (shared -> schema, schema -> shared,
//! database -> schema); the next insert gets a fresh id; restoring over a
//! tenant that has rows is refused unless --replace; another tenant of the
//! same shared tables is untouched.

mod common;

use common::*;
use pgtenant::config::TenantMode;
use std::path::{Path, PathBuf};

fn text() -> String {
    catalog_config_text("du_app", "du_platform", "")
}

/// Count and checksum of each table, as the tenant sees them (identical SQL
/// for every mode, tenant_id never part of it).
const FINGERPRINT: &str = "
    SELECT 'customers ' || count(*) || ' ' || md5(coalesce(string_agg(id || '|' || name || '|' || coalesce(email, ''), ',' ORDER BY id), ''))
      FROM customers
    UNION ALL
    SELECT 'orders ' || count(*) || ' ' || md5(coalesce(string_agg(id || '|' || customer_id || '|' || amount_cents || '|' || status, ',' ORDER BY id), ''))
      FROM orders";

async fn fingerprint(proxy: &pgtenant::app::Running, key: &str) -> Vec<String> {
    let c = connect(proxy, &format!("user=app.{key} dbname=du_app"))
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    column(&c, FINGERPRINT).await
}

async fn fill(proxy: &pgtenant::app::Running, key: &str, n: i32) {
    let c = connect(proxy, &format!("user=app.{key} dbname=du_app"))
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    c.batch_execute(&format!(
        "INSERT INTO customers(name, email)
              SELECT '{key} ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'c' || i || E'@x\\ttab' END
                FROM generate_series(1, {n}) i;
         INSERT INTO orders(customer_id, amount_cents, status)
              SELECT id, id * 10, CASE WHEN id % 2 = 0 THEN 'paid' ELSE E'new\\nline' END FROM customers;
         INSERT INTO orders(customer_id, amount_cents)
              SELECT id, 1 FROM customers WHERE id % 5 = 0;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{key} fill: {e}"));
}

fn dir(name: &str) -> PathBuf {
    let d = scratch(&format!("dump-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    pgtenant_cli(config, args, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dumps_restore_into_any_mode_with_ids_and_checksums_kept() {
    let cfg = catalog_config(&text());
    for (key, mode) in [
        ("dsh", TenantMode::Shared),
        ("dother", TenantMode::Shared),
        ("dsc", TenantMode::Schema),
        ("ddb", TenantMode::Database),
        ("rsc", TenantMode::Schema),
        ("rsh", TenantMode::Shared),
        ("rsc2", TenantMode::Schema),
    ] {
        provision_tenant(&cfg, key, mode, "default").await;
    }
    let path = scratch("dump.toml");
    std::fs::write(&path, text().replace("{PG_PORT}", &pg_port().to_string())).expect("config");
    let proxy = start_proxy(&text()).await;
    fill(&proxy, "dother", 7).await;
    fill(&proxy, "dsh", 120).await;
    // Shared tables number rows for all their tenants: a dump restores into
    // them only with ids no other tenant holds (ids are kept).
    admin_sql(
        "du_app",
        "SELECT setval('t_dsc.customers_id_seq', 500000); SELECT setval('t_dsc.orders_id_seq', 500000);",
    )
    .await;
    fill(&proxy, "dsc", 90).await;
    fill(&proxy, "ddb", 60).await;
    let other_before = fingerprint(&proxy, "dother").await;

    // shared -> schema, schema -> shared, database -> schema.
    // (customers, orders): n, then n + n/5 orders.
    for (from, into, rows) in [
        ("dsh", "rsc", (120, 144)),
        ("dsc", "rsh", (90, 108)),
        ("ddb", "rsc2", (60, 72)),
    ] {
        let d = dir(from);
        let (ok, out, err) = cli(&path, &["tenant", "dump", from, d.to_str().expect("path")]).await;
        assert!(ok, "dump {from}: {out}{err}");
        let manifest = pgtenant::provision::read_manifest(&d).expect("manifest");
        assert_eq!(
            manifest
                .tables
                .iter()
                .map(|t| format!("{}:{}", t.name, t.columns.join(",")))
                .collect::<Vec<_>>(),
            vec![
                "customers:id,name,email",
                "orders:id,customer_id,amount_cents,status"
            ],
            "tenant_id is never dumped"
        );
        assert_eq!(manifest.version, Some(3));
        assert_eq!(
            (manifest.tables[0].rows, manifest.tables[1].rows),
            rows,
            "{from}'s rows only"
        );
        let (ok, out, err) = cli(
            &path,
            &["tenant", "restore", into, d.to_str().expect("path")],
        )
        .await;
        assert!(ok, "restore {from} into {into}: {out}{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "one line per table: {err}");
        for (line, t) in lines.iter().zip(&manifest.tables) {
            assert!(
                line.starts_with(&format!("{}: {} rows, ", t.name, t.rows)),
                "{line}"
            );
        }
        assert_eq!(
            fingerprint(&proxy, into).await,
            fingerprint(&proxy, from).await,
            "{from} -> {into}"
        );
        // Ids are kept and the next insert gets a fresh one.
        let c = connect(&proxy, &format!("user=app.{into} dbname=du_app"))
            .await
            .expect("restored tenant");
        let max: i32 = c
            .query_one("SELECT max(id) FROM customers", &[])
            .await
            .expect("max")
            .get(0);
        let next: i32 = c
            .query_one(
                "INSERT INTO customers(name) VALUES ('new') RETURNING id",
                &[],
            )
            .await
            .expect("insert after restore")
            .get(0);
        assert!(next > max, "{into}: next id {next} after {max}");
        c.batch_execute("DELETE FROM customers WHERE name = 'new'")
            .await
            .expect("clean");
    }
    assert_eq!(
        fingerprint(&proxy, "dother").await,
        other_before,
        "another tenant of the same shared tables is untouched"
    );

    // Ids another tenant of the shared tables holds: refused, nothing written.
    let d = dir("ddb-again");
    let (ok, _, err) = cli(&path, &["tenant", "dump", "ddb", d.to_str().expect("path")]).await;
    assert!(ok, "{err}");
    let rsh_before = fingerprint(&proxy, "rsh").await;
    let (ok, _, err) = cli(
        &path,
        &[
            "tenant",
            "restore",
            "rsh",
            d.to_str().expect("path"),
            "--replace",
        ],
    )
    .await;
    assert!(!ok);
    assert_eq!(
        err.lines().last(),
        Some("pgtenant: customers: duplicate key value violates unique constraint \"customers_pkey\" (Key (id)=(1) already exists.): the dump's ids collide with other tenants' rows in the shared tables; restore keeps ids, so restore into a schema or database tenant instead")
    );
    assert_eq!(
        fingerprint(&proxy, "rsh").await,
        rsh_before,
        "all or nothing"
    );

    // Over a tenant with rows: refused, then --replace.
    let d = dir("dsc-again");
    let (ok, _, err) = cli(&path, &["tenant", "dump", "dsc", d.to_str().expect("path")]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        &path,
        &["tenant", "restore", "rsc", d.to_str().expect("path")],
    )
    .await;
    assert!(!ok, "{out}");
    assert_eq!(
        err.lines().last(),
        Some("pgtenant: tenant \"rsc\" has rows in customers, orders: restore with --replace to delete them first")
    );
    let (ok, out, err) = cli(
        &path,
        &[
            "tenant",
            "restore",
            "rsc",
            d.to_str().expect("path"),
            "--replace",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        fingerprint(&proxy, "rsc").await,
        fingerprint(&proxy, "dsc").await
    );
    // A dump folder is never overwritten.
    let (ok, _, err) = cli(&path, &["tenant", "dump", "dsc", d.to_str().expect("path")]).await;
    assert!(!ok);
    assert!(err.contains("exists and is not empty"), "{err}");
    proxy.shutdown().await;
}
