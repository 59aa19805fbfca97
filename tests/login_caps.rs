//! Connections still logging in are capped per address and in all
//! (`max_logins_per_address`, `max_logins`): beyond, a connection is refused
//! at once (53300); places come back as logins end, and a normal client then
//! logs in.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const CONFIG: &str = r#"
[proxy]
max_logins = 5
max_logins_per_address = 3

[auth]
method = "trust"
users = [{ name = "app" }]

[servers.main]
port = {PG_PORT}
database = "lc_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
"#;

/// A connection from `from` that sends nothing.
async fn idle_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    s.connect(to).await.expect("connect")
}

/// What the server says first on a fresh connection from `from`, if it
/// speaks before the client: the SQLSTATE of its FATAL.
async fn refused_at_once(from: [u8; 4], to: SocketAddr) -> Option<String> {
    let mut s = idle_from(from, to).await;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 5 && buf[0] == b'E').then(|| common::raw::error_fields(&buf[5..n]).0)
}

#[tokio::test]
async fn logins_are_capped_per_address_and_in_all() {
    tenant_fixture("lc_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(CONFIG).await;
    let to = proxy.addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(idle_from([127, 0, 0, 1], to).await);
    }
    // One accept loop takes connections in order: the next one is checked
    // after these entered the gate.
    assert_eq!(
        refused_at_once([127, 0, 0, 1], to).await.as_deref(),
        Some("53300"),
        "a fourth from one address"
    );
    for _ in 0..2 {
        held.push(idle_from([127, 0, 0, 2], to).await);
    }
    assert_eq!(
        refused_at_once([127, 0, 0, 3], to).await.as_deref(),
        Some("53300"),
        "a sixth in all"
    );
    drop(held);
    let ok = wait_until(Duration::from_secs(5), || async {
        match connect(&proxy, "user=app.acme dbname=lc_app").await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(ok, "places came back when the idle connections left");
    proxy.shutdown().await;
}
