//! Protocol corners real drivers rarely hit but must work through the proxy:
//! Describe/DEALLOCATE of statements prepared on another server connection,
//! CopyFail, FunctionCall, and non-UTF-8 client encodings (bytes relayed as is).

mod common;

use common::raw::{cstr, error_fields, message, RawConn};
use common::*;
use std::time::Duration;

const CONFIG: &str = r#"
[auth]
method = "trust"
users = [{ name = "app" }]

[servers.main]
port = {PG_PORT}
database = "pe_app"
user = "pe_svc"

[tiers.one]
pool_size = 1

[[tenants]]
key = "edge"
mode = "schema"
server = "main"
schema = "t_edge"
tier = "one"
"#;

/// `role` logs the server connections in: a test that kills its links gets a
/// role of its own so it never kills another test's.
async fn setup(role: &str) -> (pgtenant::app::Running, RawConn) {
    service_role(role).await;
    tenant_fixture_with(
        "pe_app",
        &[("t_edge", "Edge")],
        "CREATE TABLE IF NOT EXISTS t_edge.sink (t text)",
    )
    .await;
    let proxy = start_proxy(&CONFIG.replace("pe_svc", role)).await;
    let raw = RawConn::connect(
        proxy.addr,
        &[("user", "app.edge"), ("database", "pe_app")],
        "",
    )
    .await
    .expect("login");
    (proxy, raw)
}

fn tags(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|m| m.0 as char).collect()
}

async fn kill_links(role: &str) {
    let admin = direct("postgres").await;
    scalar(&admin, &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'")).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            links_of_role(&admin, role).await == 0
        })
        .await
    );
}

#[tokio::test]
async fn statements_follow_the_client_to_a_new_server_connection() {
    let (_proxy, mut c) = setup("pe_kill_svc").await;
    let mut parse = cstr(b"mystmt");
    parse.extend(cstr(b"SELECT $1::int * 3"));
    parse.extend([0, 0]);
    c.send(&[message(b'P', &parse), message(b'S', b"")].concat())
        .await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    // The link it was prepared on dies; the next one gets it replayed.
    kill_links("pe_kill_svc").await;
    let mut describe = vec![b'S'];
    describe.extend(cstr(b"mystmt"));
    c.send(&[message(b'D', &describe), message(b'S', b"")].concat())
        .await;
    assert_eq!(
        tags(&c.until_ready().await),
        "tTZ",
        "ParameterDescription, RowDescription; the replay's ParseComplete is swallowed"
    );
    let mut bind = cstr(b"");
    bind.extend(cstr(b"mystmt"));
    bind.extend([0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
    let mut exec = cstr(b"");
    exec.extend([0, 0, 0, 0]);
    c.send(
        &[
            message(b'B', &bind),
            message(b'E', &exec),
            message(b'S', b""),
        ]
        .concat(),
    )
    .await;
    let reply = c.until_ready().await;
    assert_eq!(tags(&reply), "2DCZ");
    assert!(reply[1].1.ends_with(b"21"));
    // DEALLOCATE by the client's name works, after which the name is gone.
    kill_links("pe_kill_svc").await;
    assert_eq!(c.simple("DEALLOCATE mystmt").await, Ok(vec![]));
    c.send(
        &[
            message(b'B', &bind),
            message(b'E', &exec),
            message(b'S', b""),
        ]
        .concat(),
    )
    .await;
    let reply = c.until_ready().await;
    assert_eq!(reply[0].0, b'E');
    assert_eq!(error_fields(&reply[0].1).0, "26000");
}

#[tokio::test]
async fn copy_fail_and_function_call() {
    let (_proxy, mut c) = setup("pe_svc").await;
    // CopyFail aborts the COPY with the client's message; the link is reusable.
    c.send(&message(b'Q', &cstr(b"COPY sink FROM STDIN"))).await;
    let (tag, _) = common::raw::read_msg(&mut c.stream)
        .await
        .expect("copy in response");
    assert_eq!(tag, b'G');
    c.send(
        &[
            message(b'd', b"half a row"),
            message(b'f', &cstr(b"client changed its mind")),
        ]
        .concat(),
    )
    .await;
    let reply = c.until_ready().await;
    assert_eq!(reply[0].0, b'E');
    assert!(error_fields(&reply[0].1)
        .1
        .contains("client changed its mind"));
    assert_eq!(
        c.simple("SELECT count(*) FROM sink").await,
        Ok(vec!["0".into()])
    );

    // FunctionCall: int4abs(-5) in text format.
    let oid: u32 = c
        .simple("SELECT 'int4abs'::regproc::oid")
        .await
        .expect("oid")[0]
        .parse()
        .expect("oid");
    let mut call = oid.to_be_bytes().to_vec();
    call.extend([0, 1, 0, 0]); // one format code: text
    call.extend([0, 1, 0, 0, 0, 2, b'-', b'5']); // one argument
    call.extend([0, 0]); // result in text
    c.send(&message(b'F', &call)).await;
    let reply = c.until_ready().await;
    assert_eq!(reply[0].0, b'V');
    assert!(reply[0].1.ends_with(b"5"));
}

#[tokio::test]
async fn latin1_bytes_are_relayed_untouched() {
    service_role("pe_svc").await;
    tenant_fixture_with(
        "pe_app",
        &[("t_edge", "Edge")],
        "CREATE TABLE IF NOT EXISTS t_edge.sink (t text)",
    )
    .await;
    let proxy = start_proxy(CONFIG).await;
    let mut c = RawConn::connect(
        proxy.addr,
        &[
            ("user", "app.edge"),
            ("database", "pe_app"),
            ("client_encoding", "LATIN1"),
        ],
        "",
    )
    .await
    .expect("login");
    // 'café' in Latin-1: a lone 0xE9 byte, invalid UTF-8.
    c.send(&message(
        b'Q',
        &cstr(b"SELECT 'caf\xe9' AS word, octet_length('caf\xe9')"),
    ))
    .await;
    let reply = c.until_ready().await;
    let row = reply.iter().find(|m| m.0 == b'D').expect("row");
    assert!(row.1.windows(4).any(|w| w == b"caf\xe9"), "{:?}", row.1);
    // The server stored it as UTF-8 (two bytes for é).
    assert!(row.1.ends_with(b"5"));
}
