//! Faults pgtenant must survive (issue 15, SPEC §4, §5, §10): clients that
//! vanish mid-query or mid-transaction, a server stalled mid-result, the
//! catalog database lost, floods. Each checks what clients were told, that
//! no server connection leaks, and that new clients are served afterwards.
//! PostgreSQL restarts are in `fault_restart.rs` (they would disturb the
//! other tests here).

mod common;

use common::raw::{message, RawConn};
use common::*;
use std::time::{Duration, Instant};

const DB: &str = "flt_app";

fn tenant_config(key: &str, pool_size: usize, extra_proxy: &str) -> String {
    format!(
        r#"
[proxy]
{extra_proxy}
[auth]
method = "trust"
users = [{{ name = "app" }}]
[servers.main]
port = {{PG_PORT}}
database = "{DB}"
user = "postgres"
[migrations]
on_startup = false
[tiers.default]
pool_size = {pool_size}
max_client_conn = 5000
[[tenants]]
key = "{key}"
mode = "schema"
server = "main"
schema = "t_{key}"
"#
    )
}

async fn fixture(key: &str) {
    tenant_fixture_with(
        DB,
        &[(&format!("t_{key}"), key)],
        &format!("SET search_path = t_{key}; {}", common::ledger::LEDGER_DDL),
    )
    .await;
}

/// Queries of `tenant`'s server links that are running now.
async fn running(admin: &tokio_postgres::Client, tenant: &str, like: &str) -> i64 {
    scalar(
        admin,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgtenant/{tenant}' \
             AND state = 'active' AND query LIKE '{like}%'"
        ),
    )
    .await
    .parse()
    .expect("count")
}

/// Waits until PostgreSQL sees exactly the links pgtenant counts for the
/// tenant (none leaked, none counted twice); returns (seen, counted).
async fn links_settle(proxy: &pgtenant::app::Running, tenant: &str) -> (i64, i64) {
    let admin = direct("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = server_links(&admin, tenant).await;
        let counted = proxy.proxy.pools.server_links("main") as i64;
        if seen == counted || Instant::now() > deadline {
            return (seen, counted);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_query_has_its_query_cancelled_on_the_server() {
    fixture("gone").await;
    let proxy = start_proxy(&tenant_config("gone", 5, "")).await;
    let admin = direct("postgres").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = RawConn::connect(proxy.addr, &[("user", "app.gone"), ("database", DB)], "")
            .await
            .expect("login");
        c.send(&query("SELECT pg_sleep(60)")).await;
        clients.push(c);
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            running(&admin, "gone", "SELECT pg_sleep").await == 3
        })
        .await,
        "the three queries run"
    );
    // Gone without Terminate: sockets closed (one reset, two plain closes).
    let first = clients.remove(0);
    #[allow(deprecated)] // a zero linger never blocks: it resets at once
    first
        .stream
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(first);
    drop(clients);
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            running(&admin, "gone", "SELECT pg_sleep").await == 0
        })
        .await,
        "the queries were cancelled, not left running for nobody"
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "cancelled after {took:?}");
    let (seen, counted) = links_settle(&proxy, "gone").await;
    assert_eq!((seen, counted), (0, 0), "the links were closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_clients_killed_mid_transaction_leak_nothing_and_commit_nothing() {
    const CLIENTS: i64 = 400;
    fixture("killed").await;
    let proxy = start_proxy(&tenant_config("killed", 10, "")).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = RawConn::connect(proxy.addr, &[("user", "app.killed"), ("database", DB)], "")
            .await
            .expect("login");
        // A transaction that never commits: a few hold the tenant's 10
        // links, the rest wait for one.
        c.send(&query(&format!(
            "BEGIN; INSERT INTO t_killed.ledger (id, writer) VALUES ({i}, 0); SELECT pg_sleep(0.05)"
        )))
        .await;
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (i, c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            #[allow(deprecated)]
            c.stream.set_linger(Some(Duration::ZERO)).expect("linger");
        }
        drop(c);
    }
    let killed = Instant::now();
    // A new client is served at once: the dead ones left the queue.
    let fresh = connect(&proxy, &format!("user=app.killed dbname={DB}"))
        .await
        .expect("new client");
    assert_eq!(scalar(&fresh, "SELECT 41 + 1").await, "42");
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a new client waited {took:?}"
    );
    drop(fresh);
    // Every killed transaction rolled back, no link leaked, no client left.
    let (seen, counted) = links_settle(&proxy, "killed").await;
    assert_eq!(seen, counted, "links on the server vs pgtenant's count");
    assert!(seen <= 10, "within the quota: {seen}");
    let rows = scalar(&direct(DB).await, "SELECT count(*) FROM t_killed.ledger").await;
    assert_eq!(rows, "0", "nothing of a killed transaction was committed");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            proxy.proxy.pools.roster.clients().is_empty()
        })
        .await,
        "every killed client's session ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stalled_mid_result_fails_the_query_after_query_timeout() {
    use common::fault::{Dir, Fault, FaultRelay};
    fixture("stall").await;
    let relay = FaultRelay::start(([127, 0, 0, 1], pg_port()).into()).await;
    let config = tenant_config("stall", 5, "query_timeout = \"1s\"")
        .replace("{PG_PORT}", &relay.port().to_string());
    let proxy = start_proxy(&config).await;
    // Stalled before the answer: the client gets 57014, then the close.
    let mut client = RawConn::connect(proxy.addr, &[("user", "app.stall"), ("database", DB)], "")
        .await
        .expect("login");
    relay.set(Dir::Down, Fault::Stall);
    let stalled = Instant::now();
    client.send(&query("SELECT 'never seen'")).await;
    let (tag, body) = tokio::time::timeout(
        Duration::from_secs(10),
        common::raw::read_msg(&mut client.stream),
    )
    .await
    .expect("the client still hangs 10 s after the stall")
    .expect("an error before the close");
    let took = stalled.elapsed();
    assert_eq!(tag, b'E');
    let (code, message) = common::raw::error_fields(&body);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("query_timeout"), "{message}");
    assert!(
        common::raw::read_msg(&mut client.stream).await.is_err(),
        "then closed"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "failed after {took:?}"
    );
    relay.set(Dir::Down, Fault::Pass);

    // Stalled mid-result: the rows already on their way arrive whole, then
    // the error or (mid-row) the close; never a half row followed by bytes.
    let mut client = RawConn::connect(proxy.addr, &[("user", "app.stall"), ("database", DB)], "")
        .await
        .expect("login");
    client
        .send(&query(
            "SELECT g, repeat('x', 100) FROM generate_series(1, 2000000) g",
        ))
        .await;
    let first = common::raw::read_msg(&mut client.stream)
        .await
        .expect("first reply");
    assert_eq!(first.0, b'T', "RowDescription first");
    relay.set(Dir::Down, Fault::Stall);
    let stalled = Instant::now();
    // Everything up to the close, then walked message by message.
    let mut bytes = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut client.stream, &mut bytes),
    )
    .await
    .expect("the client still hangs 10 s after the stall")
    .expect("read to the close");
    let (mut at, mut rows, mut ended) = (0, 0, None);
    while at + 5 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        let end = at + 1 + len as usize;
        if end > bytes.len() {
            break; // a row cut off by the close
        }
        let body = &bytes[at + 5..end];
        match bytes[at] {
            b'D' => {
                assert!(well_formed_row(body, 2), "row {rows} is garbled");
                rows += 1;
            }
            b'E' => ended = Some(common::raw::error_fields(body)),
            tag => panic!("unexpected message {:?}", tag as char),
        }
        at = end;
    }
    // Nothing follows a row cut off mid-way: an error there would be read
    // as the rest of the row.
    let tail = &bytes[at..];
    assert!(
        !tail.windows(5).any(|w| w == b"57014"),
        "an error message was sent inside a half-sent row"
    );
    let took = stalled.elapsed();
    if let Some((code, message)) = ended {
        assert_eq!(code, "57014", "{message}");
    }
    assert!(rows > 0, "rows already sent arrived");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "failed after {took:?}"
    );
    // The network comes back: the stalled link is gone, new clients are served.
    relay.set(Dir::Down, Fault::Pass);
    let again = connect(&proxy, &format!("user=app.stall dbname={DB}"))
        .await
        .expect("new client");
    assert_eq!(scalar(&again, "SELECT 'after'").await, "after");
    drop(again);
    let (seen, counted) = links_settle(&proxy, "stall").await;
    assert_eq!(seen, counted, "links on the server vs pgtenant's count");
    assert_eq!(counted, 1, "only the new client's link is left");
    let errors = proxy.proxy.pools.pools()[0]
        .counters
        .errors(pgtenant::pool::ErrorKind::Timeout);
    assert_eq!(errors, 2, "both counted as timeout errors");
}

/// A DataRow body of `fields` columns whose lengths add up exactly.
fn well_formed_row(body: &[u8], fields: u16) -> bool {
    if body.len() < 2 || u16::from_be_bytes([body[0], body[1]]) != fields {
        return false;
    }
    let mut at = 2;
    for _ in 0..fields {
        let Some(len) = body.get(at..at + 4) else {
            return false;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4 + len.max(0) as usize;
    }
    at == body.len()
}
