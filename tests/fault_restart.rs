//! PostgreSQL restarted under load (issue 15): clients in a transaction get a
//! clear error, idle clients stay connected, dead server connections are
//! dropped (never handed out), new transactions succeed within a second of
//! the server accepting again, and no acknowledged commit is lost. Its own
//! binary: restarting the cluster would disturb other tests.

mod common;

use common::ledger::{Ledger, LEDGER_DDL};
use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const DB: &str = "fr_app";
const TENANTS: [&str; 2] = ["acme", "beta"];

fn config() -> String {
    let mut c = String::from(
        r#"
[proxy]
query_wait_timeout = "3s"
server_connect_timeout = "2s"
[auth]
method = "trust"
users = [{ name = "app" }]
[servers.main]
port = {PG_PORT}
database = "fr_app"
user = "postgres"
[migrations]
on_startup = false
[tiers.default]
pool_size = 4
"#,
    );
    for t in TENANTS {
        c += &format!("[[tenants]]\nkey = \"{t}\"\nmode = \"schema\"\nserver = \"main\"\nschema = \"t_{t}\"\n");
    }
    c
}

async fn ledger_ids(table: &str) -> Vec<i64> {
    column(&direct(DB).await, &format!("SELECT id FROM {table}"))
        .await
        .iter()
        .map(|s| s.parse().expect("id"))
        .collect()
}

/// Runs `SELECT 1` on `client` until it succeeds; how long that took.
async fn until_served(client: &tokio_postgres::Client) -> Duration {
    let t0 = Instant::now();
    while client.simple_query("SELECT 1").await.is_err() {
        assert!(!client.is_closed(), "an idle client was disconnected");
        assert!(t0.elapsed() < Duration::from_secs(10), "never served again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

async fn restart_under_load(proxy: &pgtenant::app::Running, mode: &str) {
    for t in TENANTS {
        admin_sql(DB, &format!("TRUNCATE t_{t}.ledger")).await;
    }
    let ledger = Ledger::new();
    let mut writers = Vec::new();
    for (i, t) in TENANTS.iter().cycle().take(8).enumerate() {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=app.{t} dbname={DB}",
            proxy.addr.port()
        );
        writers.push(tokio::spawn(ledger.clone().write(
            conninfo,
            format!("t_{t}.ledger"),
            i as i32,
        )));
    }
    // Idle clients: logged in and used once, then quiet through the restart.
    let mut idle = Vec::new();
    for t in TENANTS {
        let c = connect(proxy, &format!("user=app.{t} dbname={DB}"))
            .await
            .expect("idle client");
        c.simple_query("SELECT 1").await.expect("first query");
        idle.push(c);
    }
    let acked_before = |l: &Ledger| l.reconnects.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reconnects_before = acked_before(&ledger);
    let cluster = cluster();
    tokio::task::block_in_place(|| cluster.stop_server(mode)).expect("stop server");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| cluster.start_server()).expect("start server");
    // The server accepts again: every idle client is served within a second
    // (the dead links of before the restart are never handed out).
    for c in &idle {
        let took = until_served(c).await;
        assert!(
            took < Duration::from_secs(1),
            "{mode}: served again only after {took:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    ledger.stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.expect("writer");
    }
    assert!(written > 50, "{mode}: the load ran ({written} commits)");
    for t in TENANTS {
        let table = format!("t_{t}.ledger");
        let tally = ledger.check(&table, &ledger_ids(&table).await);
        assert!(tally.clean(), "{mode}: {table}: {tally:?}");
    }
    // Clients in flight were told why, with the server's SQLSTATE or
    // pgtenant's connection failure; nothing else.
    let codes = ledger.error_codes();
    let allowed = ["08006", "57P01", "08001", "io"];
    assert!(
        codes.iter().all(|c| allowed.contains(&c.as_str())),
        "{mode}: clients were told {:?}",
        ledger.errors.lock().expect("ledger lock")
    );
    assert!(
        !codes.is_empty(),
        "{mode}: the restart hit transactions in flight"
    );
    assert!(
        acked_before(&ledger) > reconnects_before,
        "{mode}: writers in a transaction lost their connection"
    );
    for c in &idle {
        assert!(!c.is_closed(), "{mode}: an idle client was disconnected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_immediate_restarts_lose_no_commit_and_recover_within_a_second() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .try_init();
    tenant_fixture(DB, &[("t_acme", "Acme"), ("t_beta", "Beta")]).await;
    for t in TENANTS {
        admin_sql(DB, &format!("SET search_path = t_{t}; {LEDGER_DDL}")).await;
    }
    let proxy = start_proxy(&config()).await;
    for mode in ["fast", "immediate"] {
        tokio::time::timeout(Duration::from_secs(60), restart_under_load(&proxy, mode))
            .await
            .unwrap_or_else(|_| panic!("{mode}: restart under load hung"));
        // No server connection leaked: PostgreSQL sees exactly the links
        // pgtenant counts, within the tenants' quotas.
        let admin = direct("postgres").await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let (settled, seen) = loop {
            let mut on_server = 0;
            for t in TENANTS {
                on_server += server_links(&admin, t).await;
            }
            let counted = proxy.proxy.pools.server_links("main") as i64;
            if on_server == counted || Instant::now() > deadline {
                break (on_server == counted, (on_server, counted));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            settled,
            "{mode}: links on the server vs pgtenant's count: {seen:?}"
        );
        assert!(seen.0 <= 8, "{mode}: at most the quotas: {seen:?}");
    }
}
