//! A hostile or broken PostgreSQL server (a fake one written here) must not
//! crash or hang pgtenant: an ErrorResponse without SQLSTATE, a message with
//! a bad length, a SCRAM challenge asking for 2^31 rounds or carrying an
//! over-long nonce, a server that stops in the middle of a message, one that
//! never answers. Each of its tenants' clients gets a clear error (08006)
//! quickly; a tenant on a real server is served meanwhile; nothing panics.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Hostile {
    NoSqlstate,
    BadLength,
    EndlessScram,
    LongNonce,
    MidMessage,
    Silent,
}

/// Reads the startup packet, refusing TLS first if asked (pgtenant's
/// default sslmode, prefer, asks).
async fn read_startup(s: &mut TcpStream) -> Option<()> {
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        s.read_exact(&mut body).await.ok()?;
        if body != [0x04, 0xd2, 0x16, 0x2f] {
            return Some(());
        }
        s.write_all(b"N").await.ok()?;
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

async fn behave(mut s: TcpStream, how: Hostile) {
    if read_startup(&mut s).await.is_none() {
        return;
    }
    match how {
        Hostile::NoSqlstate => {
            let _ = s.write_all(&message(b'E', b"SFATAL\0Mbroken\0\0")).await;
        }
        Hostile::BadLength => {
            let _ = s.write_all(&[b'R', 0, 0, 0, 2]).await;
        }
        Hostile::MidMessage => {
            let _ = s.write_all(&[b'R', 0, 0, 0, 100, 0, 0]).await;
        }
        Hostile::EndlessScram | Hostile::LongNonce => {
            let mut sasl = 10i32.to_be_bytes().to_vec();
            sasl.extend_from_slice(b"SCRAM-SHA-256\0\0");
            let _ = s.write_all(&message(b'R', &sasl)).await;
            // The client's SASLInitialResponse: its nonce after "r=".
            let mut head = [0u8; 5];
            if s.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; len.saturating_sub(4)];
            if s.read_exact(&mut body).await.is_err() {
                return;
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            let nonce = text.split("r=").nth(1).unwrap_or_default().to_owned();
            let mut cont = 11i32.to_be_bytes().to_vec();
            let challenge = if matches!(how, Hostile::LongNonce) {
                format!("r={nonce}{},s=c2FsdA==,i=4096", "n".repeat(900_000))
            } else {
                format!("r={nonce}srv,s=c2FsdA==,i=2147483647")
            };
            cont.extend_from_slice(challenge.as_bytes());
            let _ = s.write_all(&message(b'R', &cont)).await;
        }
        Hostile::Silent => {}
    }
    // Hold the connection open, answering nothing more.
    tokio::time::sleep(Duration::from_secs(30)).await;
}

async fn fake_server(how: Hostile) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(behave(s, how));
        }
    });
    port
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_servers_get_clear_errors_and_others_are_served() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
    tenant_fixture("hs_app", &[("t_acme", "Acme")]).await;
    let cases = [
        ("nosqlstate", Hostile::NoSqlstate),
        ("badlength", Hostile::BadLength),
        ("endless", Hostile::EndlessScram),
        ("longnonce", Hostile::LongNonce),
        ("midmessage", Hostile::MidMessage),
        ("silent", Hostile::Silent),
    ];
    let mut config = String::from(
        r#"
[proxy]
server_connect_timeout = "1s"
[auth]
method = "trust"
users = [{ name = "app" }]
[servers.main]
port = {PG_PORT}
database = "hs_app"
user = "postgres"
[[tenants]]
key = "acme"
mode = "schema"
server = "main"
"#,
    );
    for (key, how) in cases {
        let port = fake_server(how).await;
        config.push_str(&format!(
            "[servers.{key}]\nport = {port}\ndatabase = \"x\"\nuser = \"u\"\npassword = \"pw\"\n[[tenants]]\nkey = \"{key}\"\nmode = \"database\"\nserver = \"{key}\"\ndatabase = \"x\"\n"
        ));
    }
    let proxy = start_proxy(&config).await;
    for (key, _) in cases {
        let started = Instant::now();
        let Err(e) = connect(&proxy, &format!("user=app.{key} dbname=x")).await else {
            panic!("{key}: a broken server can't serve");
        };
        assert_eq!(sqlstate(&e).0, "08006", "{key}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{key}: refused after {:?}",
            started.elapsed()
        );
        let acme = connect(&proxy, "user=app.acme dbname=hs_app")
            .await
            .expect("acme is served meanwhile");
        assert_eq!(scalar(&acme, "SELECT name FROM customers").await, "Acme");
    }
    // What pgtenant's log says for each (the client is told only 08006).
    let cfg =
        pgtenant::config::parse_str(&config.replace("{PG_PORT}", &pg_port().to_string()), "test")
            .expect("config");
    let tenants = pgtenant::tenant::Tenant::all_from_config(&cfg);
    let reasons = [
        "server nosqlstate refused login: broken (SQLSTATE XX000)",
        "server badlength: invalid length 2 for message type 'R'",
        "server endless: server asks for 2147483647 SCRAM iterations (more than 1000000): refused",
        // The proof for the long nonce was sent; the server then said nothing.
        "timed out connecting to server longnonce",
        "timed out connecting to server midmessage",
        "timed out connecting to server silent",
    ];
    for ((key, _), reason) in cases.iter().zip(reasons) {
        let t = tenants.iter().find(|t| t.key == *key).expect("tenant");
        let e = pgtenant::backend::ServerConn::connect(&t.target, "t", Duration::from_secs(1), 10)
            .await
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(e.to_string(), reason);
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 0, "pgtenant panicked");
    proxy.shutdown().await;
}
