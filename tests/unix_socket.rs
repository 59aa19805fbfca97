//! Server connections over a Unix-domain socket (SPEC §10, `host =
//! "/var/run/postgresql"` style): queries, link reuse between transactions
//! (the idle check on a Unix socket), cancel requests, and /readyz-style
//! reachability all go through the socket file, never TCP.

mod common;

use common::*;
use std::time::Duration;

fn config() -> String {
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
host = "{}"
port = {{PG_PORT}}
database = "ux_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
pool_size = 1
"#,
        cluster().dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_cancels_over_a_unix_socket() {
    tenant_fixture("ux_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(&config()).await;
    let c = connect(&proxy, "user=app.acme dbname=ux_app")
        .await
        .expect("acme");
    assert_eq!(scalar(&c, "SELECT name FROM customers").await, "Acme");
    // The server sees a Unix-socket client (no address), on one link reused
    // across transactions.
    let first = scalar(
        &c,
        "SELECT pg_backend_pid()::text || ' ' || coalesce(inet_client_addr()::text, 'local')",
    )
    .await;
    assert!(first.ends_with(" local"), "{first}");
    for _ in 0..5 {
        let again = scalar(
            &c,
            "SELECT pg_backend_pid()::text || ' ' || coalesce(inet_client_addr()::text, 'local')",
        )
        .await;
        assert_eq!(again, first, "the idle link is reused");
    }
    // A cancel request reaches the backend through the socket too.
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
    let direct = direct("ux_app").await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            scalar(&direct, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'").await == "1"
        })
        .await,
        "the sleep runs"
    );
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled in time")
        .expect("joined")
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).0, "57014");
    proxy.shutdown().await;
}
