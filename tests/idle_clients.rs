//! Idle clients cost little (issue 14): a client idle for a second or two
//! gives its relay buffers back and takes them again with its next request,
//! which then works as before, large requests and results included; a KILL
//! and a shutdown still reach idle clients (their signals share one waker).

mod common;

use common::*;
use pgtenant::pool::roster::ClientEntry;
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"
[proxy]
listen = "127.0.0.1:0"
[auth]
method = "trust"
users = [{ name = "app" }]
[servers.main]
port = {PG_PORT}
database = "ic_app"
user = "postgres"
[[tenants]]
key = "acme"
mode = "schema"
server = "main"
"#;

async fn fixture() {
    tenant_fixture("ic_app", &[("t_acme", "Acme")]).await;
}

/// The one client in the roster, once listed (a client is listed just
/// after its login's ReadyForQuery went out).
async fn only_client(proxy: &pgtenant::app::Running) -> Arc<ClientEntry> {
    let roster = &proxy.proxy.pools.roster;
    let listed = wait_until(Duration::from_secs(5), || async {
        !roster.clients().is_empty()
    })
    .await;
    assert!(listed, "the client is listed");
    let clients = roster.clients();
    assert_eq!(clients.len(), 1, "one client connected");
    clients[0].clone()
}

#[tokio::test]
async fn an_idle_client_gives_its_buffers_back_and_takes_them_with_its_next_request() {
    fixture().await;
    let proxy = start_proxy(CONFIG).await;
    let client = connect(&proxy, "user=app.acme dbname=ic_app")
        .await
        .expect("connect");
    // Logged in, never used: no buffers yet.
    assert!(!only_client(&proxy).await.holds_buffers());
    assert_eq!(scalar(&client, "SELECT name FROM customers").await, "Acme");
    let me = only_client(&proxy).await;
    assert!(
        me.holds_buffers(),
        "a client that just ran a request keeps its buffers"
    );
    let gave_back = wait_until(Duration::from_secs(10), || async { !me.holds_buffers() }).await;
    assert!(
        gave_back,
        "an idle client gives its buffers back within a few seconds"
    );
    // A request and a result far larger than the buffers' usual size, on
    // buffers taken again.
    let long = "x".repeat(100_000);
    let row = client
        .query_one(
            "SELECT length($1::text), length(repeat('y', 3000000)), $1::text = repeat('x', 100000)",
            &[&long],
        )
        .await
        .expect("large request and result");
    assert_eq!(row.get::<_, i32>(0), 100_000);
    assert_eq!(row.get::<_, i32>(1), 3_000_000);
    assert!(row.get::<_, bool>(2));
    assert!(me.holds_buffers());
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test]
async fn kill_and_shutdown_reach_clients_idle_with_or_without_buffers() {
    fixture().await;
    let proxy = start_proxy(CONFIG).await;
    // KILL_CLIENT of an idle client that gave its buffers back.
    let client = connect(&proxy, "user=app.acme dbname=ic_app")
        .await
        .expect("connect");
    assert_eq!(scalar(&client, "SELECT 1::text").await, "1");
    let me = only_client(&proxy).await;
    assert!(wait_until(Duration::from_secs(10), || async { !me.holds_buffers() }).await);
    me.signals.raise(pgtenant::pool::signals::Signal::KILL);
    let closed = wait_until(Duration::from_secs(5), || async { client.is_closed() }).await;
    assert!(closed, "a killed idle client is disconnected");
    let gone = wait_until(Duration::from_secs(5), || async {
        proxy.proxy.pools.roster.clients().is_empty()
    })
    .await;
    assert!(gone, "its roster entry goes with it");
    // Shutdown of a client idle with its buffers: told 57P01.
    let client = connect(&proxy, "user=app.acme dbname=ic_app")
        .await
        .expect("connect");
    assert_eq!(scalar(&client, "SELECT 2::text").await, "2");
    proxy.proxy.begin_shutdown();
    let closed = wait_until(Duration::from_secs(5), || async { client.is_closed() }).await;
    assert!(closed, "shutdown disconnects an idle client");
    let e = client.simple_query("SELECT 1").await.expect_err("closed");
    assert!(e.is_closed(), "the connection is closed: {e}");
    proxy.shutdown().await;
}
