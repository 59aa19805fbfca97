//! Real-driver behaviour under transaction pooling (SPEC §4): tokio-postgres with
//! named prepared statements, pipelining, COPY, large values, errors; session
//! settings that follow the client; refusals of what can't be pooled.

mod common;

use common::*;
use futures_util::{SinkExt, TryStreamExt};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// Server connections log in as `<prefix>_svc`, so a test counts its own links.
fn config(prefix: &str, pool_size: usize, max_prepared: usize, mode: &str) -> String {
    format!(
        r#"
[proxy]
pool_mode = "{mode}"
max_prepared_statements = {max_prepared}

[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {{PG_PORT}}
database = "tm_app"
user = "{prefix}_svc"

[tiers.t]
pool_size = {pool_size}

[[tenants]]
key = "{prefix}drv"
mode = "schema"
server = "main"
schema = "t_drv"
tier = "t"
"#
    )
}

async fn fixtures(prefix: &str) {
    service_role(&format!("{prefix}_svc")).await;
    tenant_fixture_with(
        "tm_app",
        &[("t_drv", "Driver")],
        "CREATE TABLE IF NOT EXISTS t_drv.items (id serial PRIMARY KEY, owner int, note text, blob bytea);
         CREATE TABLE IF NOT EXISTS t_drv.copied (n int, label text);",
    )
    .await;
}

async fn client(proxy: &pgtenant::app::Running, prefix: &str) -> Client {
    connect(
        proxy,
        &format!("user=app.{prefix}drv dbname=tm_app application_name=driver-test"),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_changing_server_connections() {
    fixtures("ps").await;
    let proxy = start_proxy(&config("ps", 3, 100, "transaction")).await;
    let admin = direct("postgres").await;
    let max_links = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for i in 0..20i32 {
        let mut c = client(&proxy, "ps").await;
        let max_links = max_links.clone();
        tasks.push(tokio::spawn(async move {
            let select = c
                .prepare("SELECT name FROM customers WHERE id = $1")
                .await
                .expect("prepare");
            let insert = c
                .prepare("INSERT INTO items(owner, note) VALUES ($1, $2) RETURNING id")
                .await
                .expect("prepare");
            for n in 0..30 {
                let tx = c.transaction().await.expect("begin");
                let row = tx
                    .query_one(&insert, &[&i, &format!("n{n}")])
                    .await
                    .expect("insert");
                let _: i32 = row.get(0);
                let name: String = tx
                    .query_one(&select, &[&1i32])
                    .await
                    .expect("select")
                    .get(0);
                assert_eq!(name, "Driver");
                if n % 5 == 0 {
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                }
                // Outside a transaction too, and pipelined: three queries in flight at once.
                let one = 1i32;
                type P<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync); 1];
                let (p1, p2, p3): (P, P, P) = ([&one], [&one], [&n]);
                let (a, b, d) = futures_util::join!(
                    c.query(&select, &p1),
                    c.query(&select, &p2),
                    c.query_one("SELECT $1::int + 1", &p3)
                );
                assert_eq!(a.expect("a").len(), 1);
                assert_eq!(b.expect("b").len(), 1);
                assert_eq!(d.expect("d").get::<_, i32>(0), n + 1);
            }
            drop(max_links);
            i
        }));
    }
    let sampler = {
        let max_links = max_links.clone();
        tokio::spawn(async move {
            loop {
                let n = links_of_role(&admin, "ps_svc").await;
                max_links.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    for t in tasks {
        t.await.expect("client task");
    }
    sampler.abort();
    let db = direct("tm_app").await;
    // 20 clients x 30 transactions, every fifth rolled back.
    let kept = scalar(&db, "SELECT count(*) FROM t_drv.items WHERE note LIKE 'n%'").await;
    assert_eq!(kept, "480");
    let max = max_links.load(Ordering::Relaxed);
    assert!((1..=3).contains(&max), "links peaked at {max}");
}

#[tokio::test]
async fn copy_large_values_and_errors() {
    fixtures("cp").await;
    let proxy = start_proxy(&config("cp", 2, 100, "transaction")).await;
    let c = client(&proxy, "cp").await;
    c.simple_query("DELETE FROM copied").await.expect("clean");
    // COPY FROM STDIN through the driver.
    let sink = c
        .copy_in("COPY copied (n, label) FROM STDIN")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    for chunk in 0..10 {
        let mut data = String::new();
        for n in 0..1000 {
            data.push_str(&format!("{}\tlabel {}\n", chunk * 1000 + n, n));
        }
        sink.send(bytes::Bytes::from(data)).await.expect("send");
    }
    assert_eq!(sink.finish().await.expect("finish"), 10_000);
    // The COPY ended its transaction: the link went back to the pool.
    let released = wait_until(Duration::from_secs(2), || async {
        proxy
            .proxy
            .pools
            .pools()
            .iter()
            .all(|p| p.stats().active == 0)
    })
    .await;
    let stats: Vec<_> = proxy
        .proxy
        .pools
        .pools()
        .iter()
        .map(|p| (p.key.clone(), p.stats()))
        .collect();
    assert!(
        released,
        "link still lent after COPY FROM STDIN (extended protocol): {stats:?}"
    );
    // COPY TO STDOUT streams back the same rows.
    let out = c
        .copy_out("COPY (SELECT n FROM copied ORDER BY n) TO STDOUT")
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.expect("read");
    let text: String = chunks
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(text.lines().count(), 10_000);
    assert_eq!(text.lines().last(), Some("9999"));
    // A 10 MB text value and a bytea survive the round trip.
    let big = "x".repeat(10 * 1024 * 1024);
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let row = c
        .query_one(
            "INSERT INTO items(owner, note, blob) VALUES (-1, $1, $2) RETURNING length(note), blob",
            &[&big, &blob],
        )
        .await
        .expect("large insert");
    assert_eq!(row.get::<_, i32>(0) as usize, big.len());
    assert_eq!(row.get::<_, Vec<u8>>(1), blob);
    let back: String = c
        .query_one("SELECT note FROM items WHERE owner = -1", &[])
        .await
        .expect("read big")
        .get(0);
    assert_eq!(back.len(), big.len());
    // An error mid-transaction, then recovery.
    c.simple_query("BEGIN").await.expect("begin");
    let err = c
        .simple_query("SELECT * FROM no_such_table")
        .await
        .expect_err("error");
    assert_eq!(sqlstate(&err).0, "42P01");
    let err = c.query("SELECT 1", &[]).await.expect_err("aborted");
    assert_eq!(sqlstate(&err).0, "25P02");
    c.simple_query("ROLLBACK").await.expect("rollback");
    assert_eq!(scalar(&c, "SELECT 'recovered'").await, "recovered");
}

#[tokio::test]
async fn session_settings_follow_the_client_and_pool_unsafe_ones_are_refused() {
    fixtures("st").await;
    let proxy = start_proxy(&config("st", 1, 100, "transaction")).await;
    let a = client(&proxy, "st").await;
    let b = client(&proxy, "st").await;
    // Reported settings follow their client across the single shared link.
    a.simple_query("SET application_name = 'alpha'")
        .await
        .expect("set");
    a.simple_query("SET TimeZone = 'Asia/Tokyo'")
        .await
        .expect("set tz");
    for _ in 0..3 {
        assert_eq!(scalar(&b, "SHOW application_name").await, "driver-test");
        assert_eq!(
            scalar(&b, "SHOW TimeZone").await,
            scalar(&direct("postgres").await, "SHOW TimeZone").await
        );
        assert_eq!(scalar(&a, "SHOW application_name").await, "alpha");
        assert_eq!(scalar(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    }
    // SET LOCAL ends with the transaction.
    a.simple_query("BEGIN; SET LOCAL statement_timeout = 1234")
        .await
        .expect("local");
    assert_eq!(scalar(&a, "SHOW statement_timeout").await, "1234ms");
    a.simple_query("COMMIT").await.expect("commit");
    assert_eq!(scalar(&a, "SHOW statement_timeout").await, "0");
    assert_eq!(scalar(&b, "SHOW statement_timeout").await, "0");
}

#[tokio::test]
async fn deallocate_and_discard_keep_statement_bookkeeping_straight() {
    fixtures("dd").await;
    let proxy = start_proxy(&config("dd", 1, 100, "transaction")).await;
    let a = client(&proxy, "dd").await;
    let b = client(&proxy, "dd").await;
    let sa = a.prepare("SELECT 'a'::text").await.expect("prepare a");
    let sb = b.prepare("SELECT 'b'::text").await.expect("prepare b");
    // DISCARD ALL on the shared link drops everything there; b's statement is
    // replayed on demand, a's own statements are gone as PostgreSQL would say.
    a.simple_query("DISCARD ALL").await.expect("discard");
    assert_eq!(
        b.query_one(&sb, &[])
            .await
            .expect("b still works")
            .get::<_, String>(0),
        "b"
    );
    let err = a
        .query_one(&sa, &[])
        .await
        .expect_err("a's statement is gone");
    assert_eq!(sqlstate(&err).0, "26000");
    let sa = a.prepare("SELECT 'a2'::text").await.expect("prepare again");
    assert_eq!(
        a.query_one(&sa, &[]).await.expect("a2").get::<_, String>(0),
        "a2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_statements_stay_within_the_limit() {
    fixtures("lr").await;
    let proxy = start_proxy(&config("lr", 3, 10, "transaction")).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = client(&proxy, "lr").await;
        tasks.push(tokio::spawn(async move {
            let mut worst = 0i64;
            for n in 0..20 {
                let stmt = c
                    .prepare(&format!("SELECT {i} + {n} + $1::int"))
                    .await
                    .expect("prepare");
                let v: i32 = c.query_one(&stmt, &[&1i32]).await.expect("run").get(0);
                assert_eq!(v, i + n + 1);
                let held: i64 = c
                    .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
                    .await
                    .expect("count")
                    .get(0);
                worst = worst.max(held);
            }
            worst
        }));
    }
    let mut worst = 0;
    for t in tasks {
        worst = worst.max(t.await.expect("task"));
    }
    assert!(
        worst <= 10,
        "a server connection held {worst} prepared statements (limit 10)"
    );
    assert!(worst >= 5, "the check saw statements at all ({worst})");
}

/// psql's LISTEN then NOTIFY: the client's own notification arrives with
/// the NOTIFY's reply, as directly (in both pool modes).
#[tokio::test]
async fn psql_hears_its_own_notify_in_both_modes() {
    fixtures("ls").await;
    for mode in ["session", "transaction"] {
        psql_hears_its_own_notify(mode).await;
    }
}

async fn psql_hears_its_own_notify(mode: &str) {
    let proxy = start_proxy(&config("ls", 2, 100, mode)).await;
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app.lsdrv dbname=tm_app",
            proxy.addr.port()
        ))
        .args([
            "-X",
            "-c",
            "LISTEN jobs",
            "-c",
            "SELECT pg_notify('jobs', 'hello')",
        ])
        .output()
        .await
        .expect("psql");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Asynchronous notification \"jobs\" with payload \"hello\""),
        "{mode}: {text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn startup_settings_are_applied_and_bad_ones_refused() {
    fixtures("su").await;
    let proxy = start_proxy(&config("su", 1, 100, "transaction")).await;
    let mut raw = common::raw::RawConn::connect(
        proxy.addr,
        &[
            ("user", "app.sudrv"),
            ("database", "tm_app"),
            ("DateStyle", "German"),
            ("client_encoding", "utf8"),
        ],
        "",
    )
    .await
    .expect("login with settings");
    assert_eq!(
        raw.simple("SHOW DateStyle").await.expect("show"),
        vec!["German, DMY"]
    );
    let err = common::raw::RawConn::connect(
        proxy.addr,
        &[
            ("user", "app.sudrv"),
            ("database", "tm_app"),
            ("DateStyle", "Klingon"),
        ],
        "",
    )
    .await
    .err()
    .expect("invalid setting refused");
    assert_eq!(err.0, "22023", "{err:?}");
}
