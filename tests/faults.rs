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
max_client_conn = 20000
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
    // Each link closes once its cancel is done: wait for the last, as a
    // count that agrees with the server may still be on its way to zero.
    wait_until(Duration::from_secs(10), || async {
        links_settle(&proxy, "gone").await == (0, 0)
    })
    .await;
    let (seen, counted) = links_settle(&proxy, "gone").await;
    assert_eq!((seen, counted), (0, 0), "the links were closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_clients_killed_mid_transaction_leak_nothing_and_commit_nothing() {
    // 400 in the suite; PGTENANT_KILLED_CLIENTS=8000 for a big run (the
    // test process holds both ends of each connection: mind `ulimit -n`).
    let clients_n: i64 = std::env::var("PGTENANT_KILLED_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    fixture("killed").await;
    let proxy = start_proxy(&tenant_config("killed", 10, "")).await;
    let mut clients = Vec::new();
    for i in 0..clients_n {
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
    println!("{clients_n} clients killed: a new client was served after {took:?}");
    // A big run may allow more (PGTENANT_KILLED_WAIT_MS): 8,000 sessions
    // unwinding on two cores take about a second.
    let allowed = std::env::var("PGTENANT_KILLED_WAIT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);
    assert!(took < allowed, "a new client waited {took:?}");
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
    let waiting = proxy.proxy.pools.pools()[0]
        .waiting
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        waiting, 0,
        "clients that left the queue are not counted waiting"
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
    // Stalled before the answer: the client gets 08006, then the close.
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
    assert_eq!(code, "08006", "{message}");
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
        !tail.windows(5).any(|w| w == b"08006"),
        "an error message was sent inside a half-sent row"
    );
    let took = stalled.elapsed();
    if let Some((code, message)) = ended {
        assert_eq!(code, "08006", "{message}");
    }
    assert!(rows > 0, "rows already sent arrived");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "failed after {took:?}"
    );
    // The network comes back: the stalled link is gone, new clients are served.
    relay.set(Dir::Down, Fault::Pass);
    // A server waiting on its client is not silent: a COPY FROM STDIN whose
    // client pauses longer than query_timeout goes through.
    let copier = connect(&proxy, &format!("user=app.stall dbname={DB}"))
        .await
        .expect("copy client");
    let sink = copier
        .copy_in::<_, bytes::Bytes>("COPY ledger (id, writer) FROM STDIN")
        .await
        .expect("copy starts");
    let mut sink = std::pin::pin!(sink);
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"1\t7\n"))
        .await
        .expect("first row");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"2\t7\n"))
        .await
        .expect("second row");
    assert_eq!(sink.finish().await.expect("copy done after a pause"), 2);
    drop(copier);
    // The copier's link goes back to the pool just after its client has the
    // answer: wait for it there, or the next client may open a second link.
    let pool = &proxy.proxy.pools.pools()[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().active != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        pool.stats().active,
        0,
        "the copier's link is back in the pool"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lost_serving_goes_on_from_its_snapshot_and_readyz_says_degraded() {
    use common::fault::{Accept, FaultRelay};
    managed_roles().await;
    // The catalog is reached through the relay; tenants' data directly.
    let relay = FaultRelay::start(([127, 0, 0, 1], pg_port()).into()).await;
    let text = catalog_config_text("flt_cat_app", "flt_cat_platform", "[tiers.default]\npool_size = 4")
        .replace(
            "[catalog]\nserver = \"main\"",
            "[catalog]\nserver = \"cat\"",
        )
        + &format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n[servers.cat]\nport = {}\ndatabase = \"flt_cat_app\"\nuser = \"{SERVICE_ROLE}\"\nadmin_user = \"{ADMIN_ROLE}\"\n",
            relay.port()
        );
    let cfg = catalog_config(&text);
    managed_database("flt_cat_app").await;
    managed_database("flt_cat_platform").await;
    pgtenant::provision::create(
        &cfg,
        &pgtenant::provision::CreateRequest {
            key: "alpha".into(),
            mode: pgtenant::config::TenantMode::Schema,
            tier: "default".into(),
            server: Some("main".into()),
        },
    )
    .await
    .expect("create alpha on main");
    let proxy = start_proxy(&text).await;
    let alpha = "user=app.alpha dbname=flt_cat_app";
    let before = connect(&proxy, alpha).await.expect("alpha client");
    assert_eq!(scalar(&before, "SELECT current_schema()").await, "t_alpha");
    assert_eq!(
        metrics_get(&proxy, "/readyz").await,
        (200, "ready\n".into())
    );
    let up = r#"pgtenant_catalog_up 1"#;
    assert!(metrics_get(&proxy, "/metrics").await.1.contains(up));

    // The network to the catalog drops everything silently: noticed by the
    // watcher's own deadline (5 s), not only when a connection resets.
    relay.set_both(common::fault::Fault::Stall);
    let degraded = wait_until(Duration::from_secs(10), || async {
        metrics_get(&proxy, "/readyz")
            .await
            .1
            .starts_with("degraded:")
    })
    .await;
    assert!(
        degraded,
        "a silent catalog is reported: {:?}",
        metrics_get(&proxy, "/readyz").await
    );
    relay.set_both(common::fault::Fault::Pass);
    let back = wait_until(Duration::from_secs(5), || async {
        metrics_get(&proxy, "/readyz").await == (200, "ready\n".into())
    })
    .await;
    assert!(back, "readyz: {:?}", metrics_get(&proxy, "/readyz").await);

    // The catalog's server goes away (open connections reset, new ones refused).
    relay.accept(Accept::Close);
    relay.reset_all();
    let degraded = wait_until(Duration::from_secs(5), || async {
        let (status, body) = metrics_get(&proxy, "/readyz").await;
        status == 200 && body.starts_with("degraded: the tenant catalog has been unreachable")
    })
    .await;
    assert!(
        degraded,
        "readyz: {:?}",
        metrics_get(&proxy, "/readyz").await
    );
    assert!(metrics_get(&proxy, "/metrics")
        .await
        .1
        .contains("pgtenant_catalog_up 0"));
    // Serving goes on from the snapshot: the open client, and a new one.
    assert_eq!(scalar(&before, "SELECT 'still'").await, "still");
    let during = connect(&proxy, alpha)
        .await
        .expect("a new client while the catalog is down");
    assert_eq!(scalar(&during, "SELECT 'served'").await, "served");
    // A change made meanwhile (straight in the catalog's database) waits...
    admin_sql(
        "flt_cat_platform",
        "UPDATE pgtenant.tenants SET status = 'suspended' WHERE key = 'alpha'",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        connect(&proxy, alpha).await.is_ok(),
        "the snapshot still serves alpha"
    );

    // ...and takes effect once the catalog is back.
    relay.accept(Accept::Forward);
    let back = wait_until(Duration::from_secs(5), || async {
        metrics_get(&proxy, "/readyz").await == (200, "ready\n".into())
    })
    .await;
    assert!(back, "readyz: {:?}", metrics_get(&proxy, "/readyz").await);
    assert!(metrics_get(&proxy, "/metrics").await.1.contains(up));
    let refused = wait_until(Duration::from_secs(2), || async {
        matches!(connect(&proxy, alpha).await, Err(e) if sqlstate(&e).0 == "08004")
    })
    .await;
    assert!(
        refused,
        "the suspension made while the catalog was down applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_runner_killed_mid_run_is_resumed_cleanly_by_the_next() {
    use common::migrate_fx::Fx;
    let fx = Fx::new("flt_mk", "concurrency = 2").await;
    let keys = ["mk_a", "mk_b", "mk_c", "mk_d"];
    for k in keys {
        fx.create(k, pgtenant::config::TenantMode::Schema).await;
    }
    fx.write("001_first.sql", "CREATE TABLE first (id int);");
    fx.write(
        "002_slow.sql",
        "CREATE TABLE second (id int);\nSELECT pg_sleep(2);",
    );
    fx.write("003_third.sql", "CREATE TABLE third (id int);");
    let mut runner = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .arg("migrate")
        .arg("--config")
        .arg(&fx.path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("pgtenant migrate");
    let admin = direct("postgres").await;
    let mid_run = wait_until(Duration::from_secs(20), || async {
        scalar(
            &admin,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'flt_mk_app' \
             AND state = 'active' AND query LIKE '%pg_sleep(2)%'",
        )
        .await
            != "0"
    })
    .await;
    assert!(mid_run, "the runner reached the slow migration");
    runner.start_kill().expect("kill -9");
    runner.wait().await.expect("reaped");
    // The next run waits out the dead runner's locks and finishes the job.
    let (code, out) = fx.cli(&[]).await;
    assert_eq!(code, 0, "{out}");
    let db = direct("flt_mk_app").await;
    for k in keys {
        let versions = column(
            &db,
            &format!(
                "SELECT version || ':' || count(*) FROM t_{k}.pgtenant_migrations \
                 GROUP BY version ORDER BY version"
            ),
        )
        .await;
        assert_eq!(
            versions,
            ["1:1", "2:1", "3:1"],
            "{k}: each version exactly once"
        );
        let tables = column(
            &db,
            &format!(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 't_{k}' AND table_name IN ('first', 'second', 'third') \
                 ORDER BY 1"
            ),
        )
        .await;
        assert_eq!(tables, ["first", "second", "third"], "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_max_client_conn_is_refused_while_connected_clients_keep_their_latency() {
    const CAP: usize = 200;
    fixture("flood").await;
    let proxy = start_proxy(&tenant_config(
        "flood",
        4,
        &format!("max_client_conn = {CAP}"),
    ))
    .await;
    let normal = connect(&proxy, &format!("user=app.flood dbname={DB}"))
        .await
        .expect("normal client");
    let mut held = Vec::new();
    for _ in 1..CAP {
        held.push(
            RawConn::connect(proxy.addr, &[("user", "app.flood"), ("database", DB)], "")
                .await
                .expect("a client under the cap"),
        );
    }
    // 500 more, all at once: each is told why, at once, and closed.
    let flood: Vec<_> = (0..500)
        .map(|_| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
                let startup =
                    common::raw::startup_packet(&[("user", "app.flood"), ("database", DB)]);
                tokio::io::AsyncWriteExt::write_all(&mut s, &startup)
                    .await
                    .ok()?;
                let (tag, body) =
                    tokio::time::timeout(Duration::from_secs(5), common::raw::read_msg(&mut s))
                        .await
                        .ok()?
                        .ok()?;
                (tag == b'E').then(|| common::raw::error_fields(&body).0)
            })
        })
        .collect();
    // Meanwhile the connected client's queries stay quick.
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let t0 = Instant::now();
        assert_eq!(scalar(&normal, "SELECT 'ok'").await, "ok");
        slowest = slowest.max(t0.elapsed());
    }
    let mut refused = 0;
    for f in flood {
        assert_eq!(f.await.expect("flood task"), Some("53300".to_owned()));
        refused += 1;
    }
    assert_eq!(refused, 500);
    assert!(
        slowest < Duration::from_millis(250),
        "slowest query {slowest:?} during the flood"
    );
    // Places come back as clients leave.
    drop(held.pop());
    let admitted = wait_until(Duration::from_secs(2), || async {
        connect(&proxy, &format!("user=app.flood dbname={DB}"))
            .await
            .is_ok()
    })
    .await;
    assert!(admitted, "a place freed by a client leaving is taken again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_landing_on_the_other_replica_still_cancels_the_query() {
    fixture("peer").await;
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    };
    let ports = [free(), free()];
    let replica = |me: usize| {
        let other = 1 - me;
        let text = tenant_config("peer", 4, &format!("listen = \"127.0.0.1:{}\"", ports[me]))
            .replace("{PG_PORT}", &pg_port().to_string())
            + &format!(
                "[peering]\nid = {}\npeers = [{{ id = {}, host = \"127.0.0.1\", port = {} }}]\n",
                me + 1,
                other + 1,
                ports[other]
            );
        let cfg = pgtenant::config::parse_str(&text, "replica").expect("valid config");
        pgtenant::app::Running::start(cfg)
    };
    let a = replica(0).await.expect("replica 1");
    let b = replica(1).await.expect("replica 2");
    let admin = direct("postgres").await;
    let mut client = RawConn::connect(a.addr, &[("user", "app.peer"), ("database", DB)], "")
        .await
        .expect("login on replica 1");
    let (pid, secret) = client.key;
    assert_eq!((pid >> 19) & 1023, 1, "the key names replica 1");
    client.send(&query("SELECT pg_sleep(30)")).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            running(&admin, "peer", "SELECT pg_sleep").await == 1
        })
        .await,
        "the query runs"
    );
    // The load balancer sends the client's CancelRequest to replica 2.
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("replica 2");
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        &pgtenant::protocol::messages::cancel_request(pid, secret),
    )
    .await
    .expect("cancel request");
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), client.until_ready())
        .await
        .expect("the query was cancelled, not left for 30 s");
    let tags: Vec<u8> = answer.iter().map(|m| m.0).collect();
    assert_eq!(
        tags,
        [b'T', b'E', b'Z'],
        "RowDescription, the error, ReadyForQuery"
    );
    let (code, message) = common::raw::error_fields(&answer[1].1);
    assert_eq!(code, "57014", "{message}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    // The client goes on: its connection is in a normal state.
    assert_eq!(
        client.simple("SELECT 'after'").await.expect("next query"),
        ["after"]
    );
}
