//! Hostile and broken input: every case gets an error or a close, never a panic
//! or a hang, and the proxy keeps serving everyone else.

mod common;

use common::raw::{read_msg, RawConn};
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[proxy]
client_login_timeout = "500ms"

[auth]
method = "trust"
users = [{ name = "app" }]

[servers.main]
port = {PG_PORT}
database = "mf_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
"#;

/// What the proxy answered before closing: the SQLSTATE of an ErrorResponse,
/// or "" if it closed without one. Fails the test if the proxy hangs.
async fn answer_then_close(s: &mut TcpStream) -> String {
    let read = async {
        let mut code = String::new();
        loop {
            match read_msg(s).await {
                Ok((b'E', body)) => code = common::raw::error_fields(&body).0,
                Ok(_) => {}
                Err(_) => return code,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("proxy must answer and close, not hang")
}

async fn still_serving(proxy: &pgtenant::app::Running) {
    let c = connect(proxy, "user=app.acme dbname=mf_app")
        .await
        .expect("healthy client");
    assert_eq!(scalar(&c, "SELECT name FROM customers").await, "Acme");
}

#[tokio::test]
async fn bad_startup_packets_are_refused() {
    tenant_fixture("mf_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(CONFIG).await;
    let healthy = connect(&proxy, "user=app.acme dbname=mf_app")
        .await
        .expect("healthy");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("8 GiB length", vec![0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0]),
        ("negative length", (-100i32).to_be_bytes().to_vec()),
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("oversized startup", {
            let mut v = 20_000u32.to_be_bytes().to_vec();
            v.extend(std::iter::repeat_n(b'a', 20_000));
            v
        }),
        ("protocol 2", {
            let mut v = 8u32.to_be_bytes().to_vec();
            v.extend(0x0002_0000u32.to_be_bytes());
            v
        }),
        ("unterminated parameters", {
            let body = b"\x00\x03\x00\x00user\x00app";
            let mut v = ((body.len() + 4) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(body);
            v
        }),
    ];
    for (name, bytes) in cases {
        let mut s = TcpStream::connect(proxy.addr).await.expect("tcp");
        let _ = s.write_all(&bytes).await;
        let code = answer_then_close(&mut s).await;
        assert!(
            ["08P01", "0A000"].contains(&code.as_str()),
            "{name}: got {code:?}"
        );
    }
    // Random garbage: whatever it decodes to, the proxy answers or closes.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..50 {
        let mut bytes = vec![0u8; 64];
        for b in &mut bytes {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let mut s = TcpStream::connect(proxy.addr).await.expect("tcp");
        let _ = s.write_all(&bytes).await;
        answer_then_close(&mut s).await;
    }
    assert_eq!(scalar(&healthy, "SELECT 'still here'").await, "still here");
    still_serving(&proxy).await;
}

#[tokio::test]
async fn bad_messages_after_login_close_the_connection() {
    tenant_fixture("mf_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(CONFIG).await;
    for (name, bytes) in [
        ("negative length", vec![b'Q', 0xff, 0xff, 0xff, 0xf0]),
        ("length below 4", vec![b'Q', 0, 0, 0, 2]),
        ("length above 1 GB", vec![b'Q', 0x7f, 0xff, 0xff, 0xff]),
    ] {
        let mut raw = RawConn::connect(
            proxy.addr,
            &[("user", "app.acme"), ("database", "mf_app")],
            "",
        )
        .await
        .expect("login");
        raw.stream.write_all(&bytes).await.expect("send");
        assert_eq!(answer_then_close(&mut raw.stream).await, "08P01", "{name}");
    }
    // Half a message then a hang-up must not take anything down.
    let mut raw = RawConn::connect(
        proxy.addr,
        &[("user", "app.acme"), ("database", "mf_app")],
        "",
    )
    .await
    .expect("login");
    raw.stream
        .write_all(&[b'Q', 0, 0, 0, 100, b's'])
        .await
        .expect("send");
    drop(raw);
    still_serving(&proxy).await;
}

#[tokio::test]
async fn slow_logins_are_cut_off() {
    tenant_fixture("mf_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(CONFIG).await;
    // Connects and says nothing.
    let mut silent = TcpStream::connect(proxy.addr).await.expect("tcp");
    // Sends half a startup packet.
    let mut half = TcpStream::connect(proxy.addr).await.expect("tcp");
    half.write_all(&[0, 0, 0, 40, 0, 3]).await.expect("send");
    for s in [&mut silent, &mut half] {
        assert_eq!(answer_then_close(s).await, "08P01");
    }
    // SSLRequest is answered with 'N' and the login continues in plain text.
    let mut s = TcpStream::connect(proxy.addr).await.expect("tcp");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("ssl request");
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"N");
    still_serving(&proxy).await;
}

/// Reads messages until ReadyForQuery; returns their tags and the text of
/// the first DataRow's first column. Fails the test on a hang or an error.
async fn tags_until_ready(s: &mut TcpStream) -> (Vec<u8>, Option<String>) {
    let read = async {
        let mut tags = Vec::new();
        let mut first = None;
        loop {
            let (tag, body) = read_msg(s).await.expect("proxy answers");
            assert_ne!(tag, b'E', "error: {:?}", common::raw::error_fields(&body));
            if tag == b'D' && first.is_none() {
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
                first = Some(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
            }
            tags.push(tag);
            if tag == b'Z' {
                return (tags, first);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("proxy must answer, not hang")
}

/// pgtenant peeks at the startup packet and reads it in one go when it has
/// all arrived; a packet that arrives in pieces, one longer than the peek,
/// and a query pipelined right behind the packet all log in the same.
#[tokio::test]
async fn startup_packets_are_read_however_they_arrive() {
    use common::raw::{message, startup_packet};
    tenant_fixture("mf_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(CONFIG).await;
    let query = |sql: &str| message(b'Q', &[sql.as_bytes(), b"\0"].concat());
    // Longer than the 64 bytes a new client's first read takes.
    let sql = "SELECT name FROM customers WHERE name <> 'a name no customer has, to be long'";
    let long_name = "x".repeat(600);
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "in pieces",
            vec![("user", "app.acme"), ("database", "mf_app")],
        ),
        (
            "longer than the peek",
            vec![
                ("user", "app.acme"),
                ("database", "mf_app"),
                ("application_name", &long_name),
            ],
        ),
        (
            "pipelined",
            vec![("user", "app.acme"), ("database", "mf_app")],
        ),
    ];
    for (case, params) in cases {
        let packet = startup_packet(&params);
        let mut s = TcpStream::connect(proxy.addr).await.expect("tcp");
        match case {
            "in pieces" => {
                s.write_all(&packet[..6]).await.expect("send");
                tokio::time::sleep(Duration::from_millis(50)).await;
                s.write_all(&packet[6..]).await.expect("send");
            }
            "pipelined" => {
                let both = [packet, query(sql)].concat();
                s.write_all(&both).await.expect("send");
            }
            _ => s.write_all(&packet).await.expect("send"),
        }
        let (tags, _) = tags_until_ready(&mut s).await;
        assert_eq!(tags.first(), Some(&b'R'), "{case}: AuthenticationOk first");
        if case != "pipelined" {
            s.write_all(&query(sql)).await.expect("send");
        }
        let (tags, name) = tags_until_ready(&mut s).await;
        assert_eq!(tags, b"TDCZ", "{case}");
        assert_eq!(name.as_deref(), Some("Acme"), "{case}");
    }
    still_serving(&proxy).await;
}
