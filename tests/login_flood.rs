//! Slow and stuck logins can't starve others (issue 12 acceptance 6): 500
//! connections that open TCP and send nothing and 200 that stop in the
//! middle of SCRAM are each closed, by `client_login_timeout` or by the cap
//! on connections still logging in from one address; meanwhile a client from
//! another address logs in (SCRAM) and queries, 50 times, each in well under
//! 100 ms.

mod common;

use common::raw::{error_fields, message, read_msg, startup_packet};
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CONFIG: &str = r#"
[proxy]
client_login_timeout = "4s"
max_logins = 2000
max_logins_per_address = 600

[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "s3cret" }]

[servers.main]
port = {PG_PORT}
database = "lf_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
schema = "t_acme"
"#;

async fn tcp_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from((from, 0))).expect("bind");
    s.connect(to).await.expect("connect")
}

/// Starts SCRAM and stops after the server's challenge; None if the
/// connection was refused at once (its SQLSTATE then).
async fn stuck_in_scram(to: SocketAddr) -> Result<TcpStream, String> {
    let mut s = tcp_from([127, 0, 0, 1], to).await;
    s.write_all(&startup_packet(&[
        ("user", "app.acme"),
        ("database", "lf_app"),
    ]))
    .await
    .expect("startup");
    let (tag, body) = read_msg(&mut s).await.expect("first reply");
    if tag == b'E' {
        return Err(error_fields(&body).0);
    }
    assert_eq!((tag, &body[..4]), (b'R', &10i32.to_be_bytes()[..]));
    let first = b"n,,n=,r=abcdefghijklmnopqrstuvwx";
    let mut p = b"SCRAM-SHA-256\0".to_vec();
    p.extend_from_slice(&(first.len() as i32).to_be_bytes());
    p.extend_from_slice(first);
    s.write_all(&message(b'p', &p))
        .await
        .expect("SASLInitialResponse");
    let (tag, body) = read_msg(&mut s).await.expect("challenge");
    assert_eq!((tag, &body[..4]), (b'R', &11i32.to_be_bytes()[..]));
    Ok(s)
}

/// How a connection that stopped talking ended: the SQLSTATE of the FATAL
/// it was sent, then EOF.
async fn ending(mut s: TcpStream) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "closed in time");
    assert_eq!(all.first(), Some(&b'E'), "a FATAL before the close");
    error_fields(&all[5..]).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_logins_are_cut_off_and_a_normal_client_is_served_meanwhile() {
    tenant_fixture("lf_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(CONFIG).await;
    let to = proxy.addr;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tcp_from([127, 0, 0, 1], to).await);
    }
    let mut scram = Vec::new();
    let mut capped = 0;
    for _ in 0..200 {
        match stuck_in_scram(to).await {
            Ok(s) => scram.push(s),
            Err(code) => {
                assert_eq!(code, "53300");
                capped += 1;
            }
        }
    }
    // 500 idle and the first 100 in SCRAM fill 127.0.0.1's 600 places.
    assert_eq!((scram.len(), capped), (100, 100));

    // A client from another address, while all of that hangs.
    let mut took = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        let tcp = tcp_from([127, 0, 0, 2], to).await;
        let (client, conn) = tokio_postgres::Config::new()
            .user("app.acme")
            .password("s3cret")
            .dbname("lf_app")
            .connect_raw(tcp, tokio_postgres::NoTls)
            .await
            .expect("normal login");
        let task = tokio::spawn(conn);
        assert_eq!(scalar(&client, "SELECT name FROM customers").await, "Acme");
        took.push(start.elapsed());
        drop(client);
        let _ = task.await;
    }
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "the normal logins ran while the stuck ones were still open"
    );
    took.sort();
    let p99 = took[(took.len() * 99).div_ceil(100) - 1];
    println!(
        "normal login + query: p50 {:?}, p99 {:?}",
        took[took.len() / 2],
        p99
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}: {took:?}");

    // Every stuck connection is told and closed by its login timeout.
    let endings = futures_util::future::join_all(idle.into_iter().chain(scram).map(ending)).await;
    assert_eq!(endings.len(), 600);
    assert!(endings.iter().all(|c| c == "08P01"), "{endings:?}");
    proxy.shutdown().await;
}
