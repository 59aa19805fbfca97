//! Client TLS (SPEC §5, issue 12 acceptance 2 and 3): verify-full with a CA
//! made in the test, SCRAM-SHA-256-PLUS (channel binding), PostgreSQL 17's
//! direct TLS, `[tls] mode = "require"` refusing plaintext, the tenant from
//! the TLS server name (SNI), and certificates reloaded with the config.

mod common;

use common::tls::{client_config, connect_tls, test_ca, TestCa};
use common::*;
use std::path::Path;

/// An error with its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

fn config(ca: &TestCa, mode: &str) -> String {
    format!(
        r#"
[auth]
method = "scram-sha-256"
users = [{{ name = "app", password = "s3cret" }}]

[tls]
mode = "{mode}"
cert_file = "{cert}"
key_file = "{key}"
sni_domain = "db.test"

[servers.main]
port = {{PG_PORT}}
database = "tl_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
schema = "t_acme"

[[tenants]]
key = "globex"
mode = "schema"
server = "main"
schema = "t_globex"
"#,
        cert = ca.cert.display(),
        key = ca.key.display(),
    )
}

async fn fixture() {
    tenant_fixture("tl_app", &[("t_acme", "Acme"), ("t_globex", "Globex")]).await;
}

/// libpq-style settings reaching the proxy by `host` (checked against the
/// certificate, sent as SNI) at 127.0.0.1.
fn at(proxy: &pgtenant::app::Running, host: &str, user: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user={user} password=s3cret dbname=tl_app",
        proxy.addr.port()
    )
}

#[tokio::test]
async fn tokio_postgres_verifies_the_certificate_and_binds_the_channel() {
    fixture().await;
    let ca = test_ca("verify");
    let proxy = start_proxy(&config(&ca, "require")).await;
    let c = connect_tls(
        &format!(
            "{} channel_binding=require",
            at(&proxy, "localhost", "app.acme")
        ),
        &ca.ca,
    )
    .await
    .expect("verify-full with SCRAM-SHA-256-PLUS");
    assert_eq!(column(&c, "SELECT name FROM customers").await, vec!["Acme"]);
    // A name the certificate doesn't carry fails verification.
    let e = connect_tls(&at(&proxy, "wrong.example", "app.acme"), &ca.ca)
        .await
        .expect_err("name mismatch");
    assert!(
        chain(&e).contains("certificate not valid for name \"wrong.example\""),
        "verify-full refuses another name: {}",
        chain(&e)
    );
    // Another CA's client doesn't trust this server.
    let other = test_ca("verify-other");
    let e = connect_tls(&at(&proxy, "localhost", "app.acme"), &other.ca)
        .await
        .expect_err("unknown issuer");
    assert!(chain(&e).contains("UnknownIssuer"), "{}", chain(&e));
    // Plaintext is refused before any password is asked for.
    let e = connect(&proxy, "user=app.acme password=s3cret dbname=tl_app")
        .await
        .expect_err("plaintext refused");
    assert_eq!(
        sqlstate(&e),
        (
            "28000".into(),
            "pgtenant accepts only TLS connections".into()
        )
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn direct_tls_needs_alpn_postgresql() {
    fixture().await;
    let ca = test_ca("direct");
    let proxy = start_proxy(&config(&ca, "require")).await;
    let direct = |alpn: bool| {
        let mut tls = client_config(&ca.ca);
        if alpn {
            tls.alpn_protocols = vec![b"postgresql".to_vec()];
        }
        let conn = format!(
            "{} sslmode=require sslnegotiation=direct",
            at(&proxy, "localhost", "app.globex")
        );
        async move {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let (client, connection) = tokio_postgres::connect(&conn, tls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let c = direct(true).await.expect("direct TLS with ALPN");
    assert_eq!(
        column(&c, "SELECT name FROM customers").await,
        vec!["Globex"]
    );
    // PostgreSQL refuses direct TLS without ALPN, and so does pgtenant: the
    // handshake fails and the connection closes.
    let e = direct(false).await.expect_err("no ALPN");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), None, "{e}");
    assert_eq!(e.to_string(), "error communicating with the server");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_tls_server_name_names_the_tenant() {
    fixture().await;
    let ca = test_ca("sni");
    let proxy = start_proxy(&config(&ca, "require")).await;
    for (host, want) in [("acme.db.test", "Acme"), ("GLOBEX.db.test", "Globex")] {
        let c = connect_tls(&at(&proxy, host, "app"), &ca.ca)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(column(&c, "SELECT name FROM customers").await, vec![want]);
    }
    // Agreeing methods are fine; disagreeing ones are refused naming both.
    connect_tls(&at(&proxy, "acme.db.test", "app.acme"), &ca.ca)
        .await
        .expect("SNI and user name agree");
    let e = connect_tls(&at(&proxy, "acme.db.test", "app.globex"), &ca.ca)
        .await
        .expect_err("conflict");
    assert_eq!(
        sqlstate(&e),
        (
            "28000".into(),
            "the connection names two tenants: \"globex\" (username suffix) and \"acme\" (TLS server name)".into()
        )
    );
    proxy.shutdown().await;
}

/// Runs psql with `conn`; (exit code, stdout, stderr).
async fn psql(conn: &str, sql: &str) -> (i32, String, String) {
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-At", "-c", sql, conn])
        .env("PGPASSWORD", "s3cret")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("run psql");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn libpq(proxy: &pgtenant::app::Running, host: &str, user: &str, extra: &str, ca: &Path) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user={user} dbname=tl_app sslrootcert={} {extra}",
        proxy.addr.port(),
        ca.display()
    )
}

#[tokio::test]
async fn psql_logs_in_with_scram_sha_256_plus_and_sni() {
    fixture().await;
    let ca = test_ca("psql");
    let proxy = start_proxy(&config(&ca, "require")).await;
    let run = |host: &str, user: &str, extra: &str| {
        let conn = libpq(&proxy, host, user, extra, &ca.ca);
        async move { psql(&conn, "SELECT name FROM customers").await }
    };
    assert_eq!(
        run(
            "localhost",
            "app.acme",
            "sslmode=verify-full channel_binding=require"
        )
        .await,
        (0, "Acme\n".into(), String::new())
    );
    assert_eq!(
        run("globex.db.test", "app", "sslmode=verify-full sslsni=1").await,
        (0, "Globex\n".into(), String::new())
    );
    let (code, _, err) = run("localhost", "app.acme", "sslmode=disable").await;
    assert_eq!(code, 2);
    assert!(
        err.contains("FATAL:  pgtenant accepts only TLS connections"),
        "{err}"
    );
    // allow: plaintext logs in, and psql's default (prefer) gets TLS.
    let allow = start_proxy(&config(&ca, "allow")).await;
    let (code, out, err) = psql(
        &libpq(&allow, "localhost", "app.acme", "sslmode=disable", &ca.ca),
        "SELECT name FROM customers",
    )
    .await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Acme\n", ""));
    let (code, out, err) = psql(
        &libpq(&allow, "localhost", "app.acme", "", &ca.ca),
        "SELECT name FROM customers",
    )
    .await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Acme\n", ""));
    proxy.shutdown().await;
    allow.shutdown().await;
}

#[tokio::test]
async fn certificates_reload_with_the_config_and_a_bad_one_keeps_the_old() {
    fixture().await;
    let first = test_ca("reload-1");
    let second = test_ca("reload-2");
    let dir = scratch("tls-reload");
    std::fs::create_dir_all(&dir).expect("dir");
    // The config names one pair of files; an operator replaces them.
    let live = TestCa {
        ca: first.ca.clone(),
        cert: dir.join("live.crt"),
        key: dir.join("live.key"),
        client_cert: first.client_cert.clone(),
        client_key: first.client_key.clone(),
    };
    let install = |from: &TestCa| {
        std::fs::copy(&from.cert, &live.cert).expect("cert");
        std::fs::copy(&from.key, &live.key).expect("key");
    };
    install(&first);
    let proxy = start_proxy_from_file(&config(&live, "require"), &dir.join("pgtenant.toml")).await;
    let login = |ca: &Path| {
        let conn = at(&proxy, "localhost", "app.acme");
        let ca = ca.to_owned();
        async move { connect_tls(&conn, &ca).await.map(|_| ()) }
    };
    login(&first.ca).await.expect("first certificate");
    install(&second);
    pgtenant::app::reload(&proxy.proxy).expect("reload");
    login(&second.ca)
        .await
        .expect("second certificate after reload");
    login(&first.ca)
        .await
        .expect_err("first CA no longer matches");
    // A broken key file fails the reload and the second certificate stays.
    std::fs::write(&live.key, "not a key").expect("break key");
    let e = pgtenant::app::reload(&proxy.proxy).expect_err("bad key");
    assert!(e.starts_with("[tls]: "), "{e}");
    assert!(e.contains("no usable private key"), "{e}");
    login(&second.ca).await.expect("old certificate kept");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_cross_tls_whole_to_a_slow_reader() {
    fixture().await;
    let ca = test_ca("large");
    let proxy = start_proxy(&config(&ca, "require")).await;
    let c = connect_tls(&at(&proxy, "localhost", "app.acme"), &ca.ca)
        .await
        .expect("client");
    // Far more than the socket buffers hold, read only after a pause: TLS
    // writes block and must be flushed, or the last records stay behind.
    for round in 0..3 {
        let rows = c
            .query_raw(
                "SELECT repeat('x', 1000) FROM generate_series(1, 20000)",
                std::iter::empty::<i32>(),
            )
            .await
            .expect("query");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        use futures_util::TryStreamExt;
        let got: Vec<tokio_postgres::Row> =
            tokio::time::timeout(std::time::Duration::from_secs(20), rows.try_collect())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the result never finished"))
                .expect("rows");
        assert_eq!(got.len(), 20000, "round {round}");
    }
    proxy.shutdown().await;
}
