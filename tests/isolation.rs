//! Context isolation (SPEC §4, §5): tenants on the same server, database and
//! user share server connections; pgtenant re-establishes the tenant context on
//! every checkout and refuses statements that would change it (42501), so
//! nothing one tenant does carries into another tenant's transaction.

mod common;

use common::*;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn config(prefix: &str, tenants: &[&str], pool_size: usize, max_connections: usize) -> String {
    context_tenants_config(
        "iso_app",
        &format!("{prefix}_svc"),
        pool_size,
        max_connections,
        tenants,
    )
}

#[tokio::test]
async fn hostile_statements_cannot_move_a_tenant_out_of_its_context() {
    service_role("ga_svc").await;
    tenant_fixture("iso_app", &[("t_ia", "A-row"), ("t_ib", "B-row")]).await;
    // One server connection for both tenants: every statement below runs on it.
    let proxy = start_proxy(&config("ga", &["ia", "ib"], 1, 1)).await;
    let a = connect(&proxy, "user=app.ia dbname=iso_app")
        .await
        .expect("a");
    let b = connect(&proxy, "user=app.ib dbname=iso_app")
        .await
        .expect("b");
    let pid = scalar(&a, "SELECT pg_backend_pid()").await;
    assert_eq!(
        scalar(&b, "SELECT pg_backend_pid()").await,
        pid,
        "tenants share the link"
    );
    let attacks = [
        "SET search_path = t_ib",
        "SET LOCAL search_path = t_ib",
        "BEGIN; SET LOCAL search_path = t_ib; SELECT name FROM customers; COMMIT",
        "SET SCHEMA 't_ib'",
        "SET \"search_path\" = t_ib",
        "RESET search_path",
        "RESET ALL",
        "DISCARD ALL",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SET pgtenant.tenant_id = 'x'",
        "SELECT set_config('search_path', 't_ib', false)",
        "SELECT set_config('search_path', 't_ib', true)",
        "SELECT set_config(lower('SEARCH_PATH'), 't_ib', false)",
        "/* hidden */ SELECT 1; SET search_path = t_ib",
        "SELECT 1 -- ;\n; sEt search_path = t_ib",
        "PREPARE p AS SELECT set_config('search_path', 't_ib', false)",
        "EXECUTE p",
        "DO $$BEGIN PERFORM set_config('search_path', 't_ib', false); END$$",
        "DO $f$BEGIN EXECUTE 'SET search_path = t_ib'; END$f$",
        // Assembled at run time: invisible to any parser. It runs, and the
        // next checkout puts the context back anyway.
        "DO $$BEGIN EXECUTE 'SET search' || '_path = t_ib'; END$$",
        "DO $$BEGIN EXECUTE format('SET %s = t_ib', 'search_path'); END$$",
        // Channel tricks (delivery is checked in tests/notify.rs).
        "DO $$BEGIN EXECUTE 'LISTEN jobs'; END$$",
        "SELECT pg_notify('pgtenant_owner', pg_backend_pid() || ':1:x:ib')",
        "LISTEN pgtenant_owner",
    ];
    for sql in attacks {
        match a.simple_query(sql).await {
            Ok(_) => {}
            Err(e) => {
                let (code, msg) = sqlstate(&e);
                // 26000: `EXECUTE p` of the PREPARE refused just before;
                // 42939: pgtenant's reserved channel.
                assert!(
                    ["42501", "0A000", "26000", "42939"].contains(&code.as_str()),
                    "{sql}: {code} {msg}"
                );
            }
        }
        let _ = a.simple_query("ROLLBACK").await;
        assert_eq!(
            column(&a, "SELECT name FROM customers").await,
            vec!["A-row"],
            "after {sql:?}"
        );
        assert_eq!(
            column(&b, "SELECT name FROM customers").await,
            vec!["B-row"],
            "B after {sql:?}"
        );
        assert_eq!(scalar(&b, "SELECT pg_backend_pid()").await, pid);
    }
    // Extended protocol is guarded the same way.
    let err = a
        .execute("SET search_path = t_ib", &[])
        .await
        .expect_err("extended SET");
    assert_eq!(sqlstate(&err).0, "42501");
    let (code, msg) = sqlstate(
        &a.simple_query("SET search_path = t_ib")
            .await
            .expect_err("refused"),
    );
    assert_eq!(code, "42501");
    assert!(
        msg.contains("search_path") && msg.contains("pgtenant"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenants_share_twenty_server_connections() {
    const TENANTS: usize = 1000;
    service_role("mt_svc").await;
    let keys: Vec<String> = (0..TENANTS).map(|i| format!("m{i:04}")).collect();
    let mut ddl = String::from("BEGIN;");
    for k in &keys {
        let _ = write!(ddl, "CREATE SCHEMA IF NOT EXISTS t_{k}; CREATE TABLE IF NOT EXISTS t_{k}.marker (owner text); INSERT INTO t_{k}.marker SELECT '{k}' WHERE NOT EXISTS (SELECT 1 FROM t_{k}.marker);");
    }
    ddl.push_str("COMMIT;");
    tenant_fixture_with("iso_app", &[], &ddl).await;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let proxy = start_proxy(&config("mt", &key_refs, 2, 20)).await;
    let admin = direct("postgres").await;
    let max_links = Arc::new(AtomicI64::new(0));
    let sampler = {
        let max_links = max_links.clone();
        tokio::spawn(async move {
            loop {
                max_links.fetch_max(links_of_role(&admin, "mt_svc").await, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut clients = Vec::new();
    for k in &keys {
        let c = connect(&proxy, &format!("user=app.{k} dbname=iso_app"))
            .await
            .expect("connect");
        let k = k.clone();
        clients.push(tokio::spawn(async move {
            for _ in 0..20 {
                let seen = column(&c, "SELECT owner FROM marker").await;
                assert_eq!(
                    seen,
                    vec![k.clone()],
                    "tenant {k} saw another tenant's rows"
                );
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    sampler.abort();
    let max = max_links.load(Ordering::Relaxed);
    assert!(
        (1..=20).contains(&max),
        "server connections peaked at {max}"
    );
}
