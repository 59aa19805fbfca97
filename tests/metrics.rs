//! Prometheus metrics (SPEC §7) against real PostgreSQL: exact per-tenant
//! counters, logins refused by reason, guard refusals, `/healthz` and
//! `/readyz`, Debian's `promtool check metrics` on a scrape taken under load,
//! and a real `prometheus` scraping pgtenant. scripts/test.sh installs the
//! `prometheus` package.

mod common;

use common::*;
use std::time::Duration;

const CONFIG: &str = r#"
[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "s3cret" }]

[metrics]
listen = "127.0.0.1:0"

[servers.main]
port = {PG_PORT}
database = "mx_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"

[[tenants]]
key = "globex"
mode = "schema"
server = "main"

[[tenants]]
key = "sleepy"
mode = "schema"
server = "main"
status = "suspended"
"#;

async fn start() -> pgtenant::app::Running {
    tenant_fixture("mx_app", &[("t_acme", "Acme"), ("t_globex", "Globex")]).await;
    start_proxy(CONFIG).await
}

/// The value of the series `name{labels}` (labels as rendered), 0 if absent.
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn scrape(proxy: &pgtenant::app::Running) -> String {
    let (status, body) = metrics_get(proxy, "/metrics").await;
    assert_eq!(status, 200);
    body
}

const ACME_XACTS: &str = r#"pgtenant_transactions_total{tenant="acme",tier="default"}"#;
const ACME_QUERIES: &str = r#"pgtenant_queries_total{tenant="acme",tier="default"}"#;

#[tokio::test]
async fn counters_are_exact_and_refusals_are_counted_by_reason() {
    let proxy = start().await;
    assert_eq!(metrics_get(&proxy, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        metrics_get(&proxy, "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(metrics_get(&proxy, "/nope").await.0, 404);
    let before = scrape(&proxy).await;
    let acme = connect(&proxy, "user=app.acme password=s3cret dbname=mx_app")
        .await
        .expect("acme");
    // 30 autocommit statements, 7 explicit transactions of 3 statements.
    for i in 0..30 {
        acme.simple_query(&format!("SELECT {i}"))
            .await
            .expect("select");
    }
    for _ in 0..7 {
        acme.batch_execute("BEGIN").await.expect("begin");
        acme.simple_query("SELECT 1").await.expect("select");
        acme.batch_execute("COMMIT").await.expect("commit");
    }
    // The guard's refusal counts as an isolation error.
    let e = acme
        .simple_query("SET ROLE postgres")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&e).0, "42501");
    // globex's work never lands on acme.
    let globex = connect(&proxy, "user=app.globex password=s3cret dbname=mx_app")
        .await
        .expect("globex");
    for _ in 0..5 {
        globex.simple_query("SELECT 1").await.expect("select");
    }
    // A suspended tenant and a wrong password are refused at login.
    for conninfo in [
        "user=app.sleepy password=s3cret dbname=mx_app",
        "user=app.acme password=wrong dbname=mx_app",
    ] {
        connect(&proxy, conninfo)
            .await
            .err()
            .unwrap_or_else(|| panic!("{conninfo} is refused"));
    }
    let after = scrape(&proxy).await;
    let grew = |series: &str| value(&after, series) - value(&before, series);
    // The refused SET ROLE is a request answered too: 30 + 21 + 1 queries,
    // 30 + 7 + 1 transactions (its error ends idle).
    assert_eq!(grew(ACME_XACTS), 38.0, "{after}");
    assert_eq!(grew(ACME_QUERIES), 52.0);
    assert_eq!(
        grew(r#"pgtenant_transactions_total{tenant="globex",tier="default"}"#),
        5.0
    );
    assert_eq!(
        grew(r#"pgtenant_errors_total{tenant="acme",tier="default",kind="isolation"}"#),
        1.0
    );
    assert_eq!(
        grew(r#"pgtenant_logins_failed_total{reason="refused_tenant"}"#),
        1.0
    );
    assert_eq!(grew(r#"pgtenant_logins_failed_total{reason="auth"}"#), 1.0);
    assert_eq!(
        grew(r#"pgtenant_errors_total{tenant="acme",tier="default",kind="auth"}"#),
        1.0
    );
    // Each simple Query is 'Q', a length and the text with its NUL.
    let sent: usize = (0..30)
        .map(|i| format!("SELECT {i}").len())
        .chain((0..7).flat_map(|_| ["BEGIN", "SELECT 1", "COMMIT"].map(str::len)))
        .chain(["SET ROLE postgres".len()])
        .map(|n| 6 + n)
        .sum();
    assert_eq!(
        grew(r#"pgtenant_client_received_bytes_total{tenant="acme",tier="default"}"#),
        sent as f64
    );
    assert_eq!(
        value(
            &after,
            r#"pgtenant_client_connections{tenant="acme",tier="default",state="idle"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&after, r#"pgtenant_tenants{status="suspended"}"#),
        1.0
    );
    assert_eq!(value(&after, "pgtenant_login_duration_seconds_count"), 2.0);
    // One latency sample per answered request and per transaction (both
    // tenants are in tier default): 52 + 5 and 38 + 5.
    assert_eq!(
        grew(r#"pgtenant_query_duration_seconds_count{tier="default"}"#),
        57.0
    );
    assert_eq!(
        grew(r#"pgtenant_transaction_duration_seconds_count{tier="default"}"#),
        43.0
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn promtool_accepts_a_scrape_under_load_and_prometheus_scrapes_it() {
    let proxy = start().await;
    // Load from 8 clients while scraping.
    let port = proxy.addr.port();
    let load: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let tenant = if i % 2 == 0 { "acme" } else { "globex" };
                let s = format!(
                    "host=127.0.0.1 port={port} user=app.{tenant} password=s3cret dbname=mx_app"
                );
                let (c, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(conn);
                for _ in 0..200 {
                    c.query_one("SELECT $1::int", &[&1i32])
                        .await
                        .expect("query");
                }
            })
        })
        .collect();
    // Scrape while the load runs: once transactions are being counted.
    let busy = wait_until(Duration::from_secs(10), || {
        let scraped = scrape(&proxy);
        async move { value(&scraped.await, ACME_XACTS) > 0.0 }
    })
    .await;
    assert!(busy, "the load never showed in a scrape");
    let text = scrape(&proxy).await;
    for l in load {
        l.await.expect("load");
    }
    let dir = scratch("prom");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("scrape.txt"), &text).expect("write scrape");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(dir.join("scrape.txt")).expect("scrape file"))
        .output()
        .expect("promtool (Debian package prometheus): run ./scripts/test.sh, which installs it");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A real Prometheus scrapes it.
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pgtenant\n    static_configs:\n      - targets: ['{}']\n",
            proxy.metrics_addr.expect("metrics listener")
        ),
    )
    .expect("prometheus config");
    let mut prom = tokio::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let url = "/api/v1/query?query=pgtenant_transactions_total%7Btenant%3D%22acme%22%7D";
    let mut answer = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut found = false;
    while !found && std::time::Instant::now() < deadline {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut s) = tokio::net::TcpStream::connect(web).await else {
            continue;
        };
        let req = format!("GET {url} HTTP/1.0\r\nHost: x\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        answer.clear();
        let _ = s.read_to_string(&mut answer).await;
        found = answer.contains(r#""tenant":"acme""#)
            && answer.contains(r#""__name__":"pgtenant_transactions_total""#);
    }
    let _ = prom.kill().await;
    assert!(
        found,
        "prometheus never returned acme's transactions: {answer}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn statements_prepared_again_and_evicted_are_counted() {
    tenant_fixture("mx_prep", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(
        &CONFIG
            .replace("database = \"mx_app\"", "database = \"mx_prep\"")
            .replace(
                "[metrics]",
                "[proxy]\nmax_prepared_statements = 2\n\n[metrics]",
            ),
    )
    .await;
    let c = connect(&proxy, "user=app.acme password=s3cret dbname=mx_prep")
        .await
        .expect("acme");
    // Three named statements on a link that holds two (LRU): preparing the
    // third evicts the first; then each use finds its statement gone,
    // evicts the least recently used one and prepares it again.
    let statements = [
        c.prepare("SELECT 1").await.expect("a"),
        c.prepare("SELECT 2").await.expect("b"),
        c.prepare("SELECT 3").await.expect("c"),
    ];
    for (i, st) in statements.iter().enumerate() {
        let row = c.query_one(st, &[]).await.expect("run");
        assert_eq!(row.get::<_, i32>(0), i as i32 + 1);
    }
    let text = scrape(&proxy).await;
    assert_eq!(
        value(
            &text,
            r#"pgtenant_prepared_reprepares_total{tenant="acme",tier="default"}"#
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"pgtenant_prepared_evictions_total{tenant="acme",tier="default"}"#
        ),
        4.0
    );
    proxy.shutdown().await;
}
