//! Pooling (SPEC §4): quotas, waits, dirty links, session reset, cancel, idle
//! and lifetime limits, and the per-server cap with LRU eviction.

mod common;

use common::raw::RawConn;
use common::*;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// Tenants `<p>busy` and `<p>quiet` (schemas t_busy, t_quiet); each test uses
/// its own prefix so pg_stat_activity counts (by application_name) are its own.
fn config(
    p: &str,
    extra_proxy: &str,
    pool_size: usize,
    pool_mode: &str,
    max_connections: usize,
) -> String {
    format!(
        r#"
[proxy]
pool_mode = "{pool_mode}"
{extra_proxy}

[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {{PG_PORT}}
database = "pl_app"
user = "postgres"
max_connections = {max_connections}

[tiers.t]
pool_size = {pool_size}

[[tenants]]
key = "{p}busy"
mode = "schema"
server = "main"
schema = "t_busy"
tier = "t"

[[tenants]]
key = "{p}quiet"
mode = "schema"
server = "main"
schema = "t_quiet"
tier = "t"
"#
    )
}

async fn fixtures() {
    tenant_fixture_with(
        "pl_app",
        &[("t_busy", "Busy"), ("t_quiet", "Quiet")],
        "CREATE TABLE IF NOT EXISTS t_busy.hits (client int, n int);
         CREATE TABLE IF NOT EXISTS t_busy.dirty (note text);",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_a_quota_of_five() {
    fixtures().await;
    admin_sql("pl_app", "TRUNCATE t_busy.hits").await;
    let proxy = start_proxy(&config("q5", "", 5, "transaction", 50)).await;
    let admin = direct("postgres").await;
    let done = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicI64::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, max_seen, samples) = (done.clone(), max_seen.clone(), samples.clone());
        tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < 200 {
                let n = server_links(&admin, "q5busy").await;
                max_seen.fetch_max(n, Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut clients = Vec::new();
    for i in 0..200 {
        let c = connect(&proxy, "user=app.q5busy dbname=pl_app")
            .await
            .expect("connect");
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            for n in 0..50 {
                c.simple_query("BEGIN").await.expect("begin");
                c.simple_query(&format!("INSERT INTO hits VALUES ({i}, {n})"))
                    .await
                    .expect("insert");
                c.simple_query("COMMIT").await.expect("commit");
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for c in clients {
        c.await.expect("client task");
    }
    sampler.await.expect("sampler");
    let admin = direct("pl_app").await;
    assert_eq!(
        scalar(&admin, "SELECT count(*) FROM t_busy.hits").await,
        "10000"
    );
    let max = max_seen.load(Ordering::Relaxed);
    assert!(samples.load(Ordering::Relaxed) > 10, "sampler ran");
    assert!(
        (1..=5).contains(&max),
        "server links for the tenant peaked at {max}"
    );
    let stats = proxy.proxy.pools.pools()[0].stats();
    assert!(stats.idle <= 5 && stats.active == 0, "{stats:?}");
}

#[tokio::test]
async fn a_waiting_client_times_out_then_succeeds_after_commit() {
    fixtures().await;
    let proxy = start_proxy(&config(
        "wt",
        "query_wait_timeout = \"400ms\"",
        1,
        "transaction",
        50,
    ))
    .await;
    let holder = connect(&proxy, "user=app.wtbusy dbname=pl_app")
        .await
        .expect("holder");
    let waiter = connect(&proxy, "user=app.wtbusy dbname=pl_app")
        .await
        .expect("waiter");
    holder.simple_query("BEGIN").await.expect("begin");
    holder.simple_query("SELECT 1").await.expect("in txn");
    let started = Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("quota is held");
    let waited = started.elapsed();
    let (code, msg) = sqlstate(&err);
    assert_eq!(code, "53300", "{msg}");
    assert!(
        msg.contains("query_wait_timeout") && msg.contains("wtbusy"),
        "{msg}"
    );
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    holder.simple_query("COMMIT").await.expect("commit");
    assert_eq!(scalar(&waiter, "SELECT 'served'").await, "served");
    // Extended protocol is discarded through Sync the same way.
    holder.simple_query("BEGIN").await.expect("begin");
    let err = waiter
        .execute("SELECT 1", &[])
        .await
        .expect_err("quota held");
    assert_eq!(sqlstate(&err).0, "53300");
    holder.simple_query("COMMIT").await.expect("commit");
    assert_eq!(scalar(&waiter, "SELECT 'again'").await, "again");
}

#[tokio::test]
async fn a_client_killed_mid_transaction_leaves_nothing_behind() {
    fixtures().await;
    admin_sql("pl_app", "DELETE FROM t_busy.dirty").await;
    let proxy = start_proxy(&config("kl", "", 1, "transaction", 50)).await;
    for how in ["socket closed", "terminate"] {
        if how == "socket closed" {
            let mut raw = RawConn::connect(
                proxy.addr,
                &[("user", "app.klbusy"), ("database", "pl_app")],
                "",
            )
            .await
            .expect("raw connect");
            raw.simple("BEGIN").await.expect("begin");
            raw.simple("INSERT INTO dirty VALUES ('uncommitted')")
                .await
                .expect("insert");
            drop(raw); // TCP close, no Terminate
        } else {
            let c = connect(&proxy, "user=app.klbusy dbname=pl_app")
                .await
                .expect("connect");
            c.simple_query("BEGIN").await.expect("begin");
            c.simple_query("INSERT INTO dirty VALUES ('uncommitted')")
                .await
                .expect("insert");
            drop(c); // tokio-postgres sends Terminate
        }
        // Quota 1: the next client can only be served once that link is gone or clean.
        let next = connect(&proxy, "user=app.klbusy dbname=pl_app")
            .await
            .expect("next");
        assert_eq!(
            scalar(&next, "SELECT count(*) FROM dirty").await,
            "0",
            "{how}"
        );
        assert_eq!(
            scalar(
                &next,
                "SELECT coalesce(pg_current_xact_id_if_assigned()::text, 'none')"
            )
            .await,
            "none",
            "{how}: next client must not inherit the transaction"
        );
    }
    let admin = direct("pl_app").await;
    assert_eq!(
        scalar(&admin, "SELECT count(*) FROM t_busy.dirty").await,
        "0"
    );
}

#[tokio::test]
async fn session_mode_resets_the_link_between_clients() {
    fixtures().await;
    let proxy = start_proxy(&config("ss", "", 1, "session", 50)).await;
    let first = connect(&proxy, "user=app.ssbusy dbname=pl_app")
        .await
        .expect("first");
    first
        .simple_query("SET statement_timeout = '1234ms'")
        .await
        .expect("set");
    first
        .simple_query("SET search_path = pg_catalog")
        .await
        .expect("set path");
    let pid1 = scalar(&first, "SELECT pg_backend_pid()").await;
    drop(first);
    let second = connect(&proxy, "user=app.ssbusy dbname=pl_app")
        .await
        .expect("second");
    assert_eq!(
        scalar(&second, "SELECT pg_backend_pid()").await,
        pid1,
        "same server link reused"
    );
    assert_eq!(scalar(&second, "SHOW statement_timeout").await, "0");
    assert_eq!(
        scalar(&second, "SHOW search_path").await,
        "\"t_busy\", public"
    );
    assert_eq!(scalar(&second, "SELECT name FROM customers").await, "Busy");
}

#[tokio::test]
async fn cancel_request_reaches_the_running_query() {
    fixtures().await;
    let proxy = start_proxy(&config("cx", "", 2, "transaction", 50)).await;
    let s = format!(
        "host=127.0.0.1 port={} user=app.cxbusy dbname=pl_app",
        proxy.addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&s, NoTls).await.expect("connect");
    tokio::spawn(conn);
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    let admin = direct("postgres").await;
    let running = wait_until(Duration::from_secs(5), || async {
        scalar(&admin, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'").await == "1"
    })
    .await;
    assert!(running, "query never started");
    token.cancel_query(NoTls).await.expect("send cancel");
    let err = sleeper.await.expect("task").expect_err("cancelled");
    assert_eq!(sqlstate(&err).0, "57014");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A forged key cancels nothing: the proxy just closes that connection.
    let mut raw = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("tcp");
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        &pgtenant::protocol::messages::cancel_request(1, 2),
    )
    .await
    .expect("send");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut rest),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "cancel connection closed without a reply"
    );
}

#[tokio::test]
async fn idle_links_close_and_old_links_are_recycled() {
    fixtures().await;
    let proxy = start_proxy(&config(
        "il",
        "server_idle_timeout = \"300ms\"",
        2,
        "transaction",
        50,
    ))
    .await;
    let c = connect(&proxy, "user=app.ilquiet dbname=pl_app")
        .await
        .expect("connect");
    scalar(&c, "SELECT 1").await;
    let admin = direct("postgres").await;
    assert_eq!(server_links(&admin, "ilquiet").await, 1);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            server_links(&admin, "ilquiet").await == 0
        })
        .await
    );

    let proxy = start_proxy(&config(
        "il",
        "server_lifetime = \"300ms\"",
        1,
        "transaction",
        50,
    ))
    .await;
    let c = connect(&proxy, "user=app.ilquiet dbname=pl_app")
        .await
        .expect("connect");
    let pid = scalar(&c, "SELECT pg_backend_pid()").await;
    let recycled = wait_until(Duration::from_secs(5), || async {
        scalar(&c, "SELECT pg_backend_pid()").await != pid
    })
    .await;
    assert!(recycled, "link older than server_lifetime was reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cap_holds_across_tenants_and_evicts_idle_links() {
    fixtures().await;
    let proxy = start_proxy(&config(
        "sc",
        "query_wait_timeout = \"10s\"",
        3,
        "transaction",
        2,
    ))
    .await;
    // busy fills the server's two slots and goes idle.
    let a = connect(&proxy, "user=app.scbusy dbname=pl_app")
        .await
        .expect("a");
    let b = connect(&proxy, "user=app.scbusy dbname=pl_app")
        .await
        .expect("b");
    a.simple_query("BEGIN").await.expect("begin");
    b.simple_query("BEGIN").await.expect("begin");
    a.simple_query("COMMIT").await.expect("commit");
    b.simple_query("COMMIT").await.expect("commit");
    let admin = direct("postgres").await;
    assert_eq!(server_links(&admin, "scbusy").await, 2);
    // quiet needs a link: one of busy's idle links is evicted, not waited for.
    let q = connect(&proxy, "user=app.scquiet dbname=pl_app")
        .await
        .expect("quiet");
    let started = Instant::now();
    assert_eq!(scalar(&q, "SELECT name FROM customers").await, "Quiet");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        wait_until(Duration::from_secs(5), || async {
            server_links(&admin, "scbusy").await == 1
        })
        .await
    );
    // Under load from both tenants the server never sees more than two links.
    let max_seen = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let c = connect(
            &proxy,
            &format!(
                "user=app.{} dbname=pl_app",
                if i % 2 == 0 { "scbusy" } else { "scquiet" }
            ),
        )
        .await
        .expect("connect");
        tasks.push(tokio::spawn(async move {
            for _ in 0..30 {
                c.simple_query("SELECT pg_sleep(0.001)")
                    .await
                    .expect("query");
            }
        }));
    }
    // Sampled two ways: pgtenant's own count (exact), and queries PostgreSQL is
    // running for it (a closed link's backend may linger a moment in
    // pg_stat_activity while it exits, so idle rows are not counted).
    let sampler = {
        let max_seen = max_seen.clone();
        let admin = direct("postgres").await;
        let proxy = proxy.proxy.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let active: i64 = scalar(
                    &admin,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgtenant/sc%' AND state = 'active'",
                )
                .await
                .parse()
                .expect("n");
                max_seen.fetch_max(
                    active.max(proxy.pools.server_links("main") as i64),
                    Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for t in tasks {
        t.await.expect("task");
    }
    sampler.abort();
    let max = max_seen.load(Ordering::Relaxed);
    assert!((1..=2).contains(&max), "server links peaked at {max}");
}

#[tokio::test]
async fn a_link_killed_while_idle_is_replaced_not_lent() {
    fixtures().await;
    let proxy = start_proxy(&config("kd", "", 1, "transaction", 50)).await;
    let c = connect(&proxy, "user=app.kdbusy dbname=pl_app")
        .await
        .expect("connect");
    let pid = scalar(&c, "SELECT pg_backend_pid()").await;
    let admin = direct("postgres").await;
    scalar(&admin, &format!("SELECT pg_terminate_backend({pid})")).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            server_links(&admin, "kdbusy").await == 0
        })
        .await
    );
    // The dead link (with the server's FATAL queued on it) is discarded at checkout.
    let fresh = scalar(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(fresh, pid);
}

#[tokio::test]
async fn tier_statement_timeout_is_a_session_default() {
    fixtures().await;
    let cfg = config("st", "", 1, "session", 50).replace(
        "pool_size = 1",
        "pool_size = 1\nstatement_timeout = \"150ms\"",
    );
    let proxy = start_proxy(&cfg).await;
    let c = connect(&proxy, "user=app.stbusy dbname=pl_app")
        .await
        .expect("connect");
    assert_eq!(scalar(&c, "SHOW statement_timeout").await, "150ms");
    let err = c
        .simple_query("SELECT pg_sleep(2)")
        .await
        .expect_err("times out");
    assert_eq!(sqlstate(&err).0, "57014");
    // RESET restores the tenant's default, not the server's.
    c.simple_query("SET statement_timeout = 0; RESET statement_timeout")
        .await
        .expect("reset");
    assert_eq!(scalar(&c, "SHOW statement_timeout").await, "150ms");
}

#[tokio::test]
async fn graceful_shutdown_lets_open_transactions_finish() {
    fixtures().await;
    admin_sql(
        "pl_app",
        "CREATE TABLE IF NOT EXISTS t_quiet.shutdown_marks (note text)",
    )
    .await;
    let proxy = start_proxy(&config("gs", "", 2, "transaction", 50)).await;
    let busy = connect(&proxy, "user=app.gsquiet dbname=pl_app")
        .await
        .expect("busy");
    let idle = connect(&proxy, "user=app.gsquiet dbname=pl_app")
        .await
        .expect("idle");
    busy.simple_query("BEGIN").await.expect("begin");
    busy.simple_query("INSERT INTO shutdown_marks VALUES ('finished in flight')")
        .await
        .expect("insert");
    let proxy = Arc::new(proxy);
    let stopping = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.shutdown().await })
    };
    // The idle client is told at once and closed.
    assert!(
        wait_until(Duration::from_secs(5), || async { idle.is_closed() }).await,
        "idle client not closed"
    );
    // The open transaction still commits, then that client is closed too.
    busy.simple_query("COMMIT")
        .await
        .expect("commit during shutdown");
    assert!(busy.simple_query("SELECT 1").await.is_err());
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finished")
        .expect("task");
    let admin = direct("pl_app").await;
    assert_eq!(
        scalar(
            &admin,
            "SELECT count(*) FROM t_quiet.shutdown_marks WHERE note = 'finished in flight'"
        )
        .await,
        "1"
    );
    // New connections are refused once shutdown started.
    assert!(connect(&proxy, "user=app.gsquiet dbname=pl_app")
        .await
        .is_err());
}
