//! Idle clients cost little (issue 14): a client idle for a second or two
//! parks (its session waits in the parking lot without a task, buffers or
//! runtime registration) or, when something of it lives in its task (a
//! LISTEN), gives its relay buffers back; its next request works as before,
//! with its prepared statements and settings, large requests and results
//! included; a KILL, a shutdown and its own close still reach it.

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

/// A client that ran one query and then parked, with its roster entry.
async fn a_parked_client(
    proxy: &pgtenant::app::Running,
) -> (tokio_postgres::Client, Arc<ClientEntry>) {
    let client = connect(proxy, "user=app.acme dbname=ic_app")
        .await
        .expect("connect");
    assert_eq!(scalar(&client, "SELECT 1::text").await, "1");
    let me = only_client(proxy).await;
    assert!(wait_until(Duration::from_secs(10), || async { me.is_parked() }).await);
    (client, me)
}

/// Whether every client's roster entry went within 5 s.
async fn roster_empties(proxy: &pgtenant::app::Running) -> bool {
    wait_until(Duration::from_secs(5), || async {
        proxy.proxy.pools.roster.clients().is_empty()
    })
    .await
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
    // It parks after a sweep or two, never used or not.
    let me = only_client(&proxy).await;
    assert!(wait_until(Duration::from_secs(10), || async { me.is_parked() }).await);
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
    // KILL_CLIENT of an idle client that parked.
    let (client, me) = a_parked_client(&proxy).await;
    assert!(!me.holds_buffers());
    me.signals.raise(pgtenant::pool::signals::Signal::KILL);
    let closed = wait_until(Duration::from_secs(5), || async { client.is_closed() }).await;
    assert!(closed, "a killed idle client is disconnected");
    assert!(
        roster_empties(&proxy).await,
        "its roster entry goes with it"
    );
    assert_eq!(proxy.proxy.parked_clients(), 0);
    // Shutdown of a parked client: told 57P01.
    let (client, _) = a_parked_client(&proxy).await;
    proxy.proxy.begin_shutdown();
    let closed = wait_until(Duration::from_secs(5), || async { client.is_closed() }).await;
    assert!(closed, "shutdown disconnects a parked client");
    drop(client);
    proxy.shutdown().await;
    let proxy = start_proxy(CONFIG).await;
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

/// A parked session comes back as it was: its named prepared statements
/// (protocol and SQL level), its settings, the tenant's search_path; and
/// it parks again after each idle spell.
#[tokio::test]
async fn a_parked_session_resumes_with_its_statements_and_settings() {
    fixture().await;
    let proxy = start_proxy(CONFIG).await;
    let client = connect(&proxy, "user=app.acme dbname=ic_app")
        .await
        .expect("connect");
    let stmt = client
        .prepare("SELECT name || $1::text FROM customers")
        .await
        .expect("prepare");
    client
        .batch_execute("SET work_mem = '7MB'; PREPARE doubled(int) AS SELECT $1 * 2")
        .await
        .expect("set and prepare");
    let me = only_client(&proxy).await;
    for round in 0..2 {
        let parked = wait_until(Duration::from_secs(10), || async { me.is_parked() }).await;
        assert!(parked, "parked, round {round}");
        assert_eq!(proxy.proxy.parked_clients(), 1);
        let gauge = |n: usize| format!("\npgtenant_clients_parked {n}\n");
        assert!(pgtenant::observe::scrape(&proxy.proxy).contains(&gauge(1)));
        assert!(!me.holds_buffers());
        let row = client
            .query_one(&stmt, &[&"!"])
            .await
            .expect("prepared statement");
        assert_eq!(row.get::<_, String>(0), "Acme!");
        assert!(!me.is_parked(), "a request takes it out of the lot");
        assert_eq!(proxy.proxy.parked_clients(), 0);
        assert!(pgtenant::observe::scrape(&proxy.proxy).contains(&gauge(0)));
        assert_eq!(scalar(&client, "SHOW work_mem").await, "7MB");
        assert_eq!(scalar(&client, "EXECUTE doubled(21)").await, "42");
        assert_eq!(
            scalar(&client, "SELECT current_schema()::text").await,
            "t_acme"
        );
    }
    drop(client);
    proxy.shutdown().await;
}

/// A parked client that goes away is noticed at once (its socket turns
/// readable): its roster entry and its place in max_client_conn go.
#[tokio::test]
async fn a_parked_client_that_leaves_is_gone() {
    fixture().await;
    let proxy = start_proxy(CONFIG).await;
    let (client, _) = a_parked_client(&proxy).await;
    assert_eq!(proxy.proxy.client_count(), 1);
    drop(client);
    assert!(roster_empties(&proxy).await, "its roster entry goes");
    assert_eq!(proxy.proxy.parked_clients(), 0);
    assert_eq!(
        proxy.proxy.client_count(),
        0,
        "its max_client_conn place is free"
    );
    proxy.shutdown().await;
}

/// Many clients park and come back at once, each to its own session.
#[tokio::test]
async fn many_parked_clients_resume_at_once_each_as_itself() {
    fixture().await;
    let proxy = start_proxy(CONFIG).await;
    let mut clients = Vec::new();
    for i in 0..40 {
        let c = connect(
            &proxy,
            &format!("user=app.acme dbname=ic_app application_name=c{i}"),
        )
        .await
        .expect("connect");
        c.batch_execute(&format!("SET statement_timeout = '{}ms'", 10_001 + 2 * i))
            .await
            .expect("set");
        clients.push(c);
    }
    let all_parked = wait_until(Duration::from_secs(10), || async {
        proxy.proxy.parked_clients() == 40
    })
    .await;
    assert!(all_parked, "{} of 40 parked", proxy.proxy.parked_clients());
    let answers = futures_util::future::join_all(clients.iter().map(|c| async move {
        let app = scalar(c, "SHOW application_name").await;
        let timeout = scalar(c, "SHOW statement_timeout").await;
        (app, timeout)
    }))
    .await;
    for (i, (app, timeout)) in answers.into_iter().enumerate() {
        assert_eq!(app, format!("c{i}"));
        assert_eq!(timeout, format!("{}ms", 10_001 + 2 * i));
    }
    assert_eq!(proxy.proxy.parked_clients(), 0);
    drop(clients);
    proxy.shutdown().await;
}

/// A listening client keeps its task (the hub reaches it there): it gives
/// its buffers back instead, is asked once per idle spell, and still hears
/// notifications.
#[tokio::test]
async fn a_listening_client_rests_in_its_task_and_still_hears_notifications() {
    fixture().await;
    let proxy = start_proxy(CONFIG).await;
    let s = format!(
        "host=127.0.0.1 port={} user=app.acme dbname=ic_app",
        proxy.addr.port()
    );
    let (client, mut conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client.batch_execute("LISTEN jobs").await.expect("listen");
    let me = only_client(&proxy).await;
    let rested = wait_until(Duration::from_secs(10), || async { !me.holds_buffers() }).await;
    assert!(rested, "it gives its buffers back");
    assert!(!me.is_parked());
    assert_eq!(proxy.proxy.parked_clients(), 0);
    let other = connect(&proxy, "user=app.acme dbname=ic_app")
        .await
        .expect("connect");
    other
        .batch_execute("NOTIFY jobs, 'one'")
        .await
        .expect("notify");
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("in time");
    assert_eq!(note.as_deref(), Some("one"));
    assert!(!me.is_parked());
    drop((client, other));
    proxy.shutdown().await;
}
