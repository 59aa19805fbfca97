//! Property tests of the relay over in-memory streams (issue 12: fuzzing the
//! relay state machine): whatever a server sends, however it is chunked,
//! the relay forwards it unchanged or ends with an error; it never panics
//! and never hangs. Bounded to a few hundred cases (well under a second).

use super::tests::{client, link};
use super::*;
use crate::backend::Overrides;
use crate::protocol::messages;
use bytes::BytesMut;
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

/// A query's reply: RowDescription, rows of any bytes, CommandComplete, RFQ.
fn reply(rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = msg(
        b'T',
        b"\0\x01x\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
    );
    for r in rows {
        let mut body = vec![0, 1];
        body.extend_from_slice(&(r.len() as i32).to_be_bytes());
        body.extend_from_slice(r);
        out.extend(msg(b'D', &body));
    }
    out.extend(msg(b'C', b"SELECT 1\0"));
    out.extend(msg(b'Z', b"I"));
    out
}

/// Runs one relay turn: the client sends `from_client` then waits; the
/// server reads what comes and writes `from_server` in `chunks`, then
/// closes. Returns how the relay ended and every byte the client got.
fn run(from_client: Vec<u8>, from_server: Vec<u8>, chunks: Vec<usize>) -> (String, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut c = client(Overrides::default());
        let mut l = link();
        let (mut app, front) = tokio::io::duplex(1 << 12);
        let (back, mut pg) = tokio::io::duplex(1 << 12);
        app.write_all(&from_client).await.expect("client writes");
        let (mut cr, mut cw) = tokio::io::split(front);
        let (mut sr, mut sw) = tokio::io::split(back);
        let server = async move {
            let mut sink = vec![0u8; 1 << 12];
            let _ = tokio::time::timeout(Duration::from_millis(20), pg.read(&mut sink)).await;
            let mut at = 0;
            for n in chunks.into_iter().chain(std::iter::repeat(64)) {
                if at >= from_server.len() {
                    break;
                }
                let end = (at + n.max(1)).min(from_server.len());
                if pg.write_all(&from_server[at..end]).await.is_err() {
                    break;
                }
                at = end;
                tokio::task::yield_now().await;
            }
            drop(pg);
        };
        let relay_done = relay((&mut cr, &mut cw), &mut c, (&mut sr, &mut sw), &mut l);
        let (end, ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(relay_done, server)
        })
        .await
        .expect("the relay ends: no hang");
        let _ = flush(&mut cw, &mut c.down).await;
        drop((cr, cw));
        let mut got = Vec::new();
        let _ = app.read_to_end(&mut got).await;
        (format!("{end:?}"), got)
    })
}

fn simple_query(sql: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    messages::query(&mut b, sql);
    b.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A plain query's reply reaches the client byte for byte, however the
    /// server's writes are cut.
    #[test]
    fn replies_pass_unchanged_whatever_the_chunking(
        rows in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        chunks in proptest::collection::vec(1usize..200, 0..40),
    ) {
        let expected = reply(&rows);
        let (end, got) = run(simple_query("SELECT x FROM t"), expected.clone(), chunks);
        prop_assert_eq!(end, "Release");
        prop_assert_eq!(got, expected);
    }

    /// Garbage from a server ends the relay with an error, never a panic or
    /// a hang; the client gets at most what framed cleanly before it.
    #[test]
    fn garbage_from_the_server_ends_the_turn(
        junk in proptest::collection::vec(any::<u8>(), 0..400),
        chunks in proptest::collection::vec(1usize..50, 0..20),
    ) {
        let (end, _) = run(simple_query("SELECT 1"), junk, chunks);
        prop_assert!(
            end.starts_with("ServerProtocol") || end.starts_with("ServerClosed")
                || end.starts_with("ServerIo") || end == "Release",
            "{}", end
        );
    }

    /// Whatever a client sends (well framed or not), the turn ends: `run`
    /// fails the case on a panic or when the relay is still going after 5 s.
    #[test]
    fn any_client_bytes_end_the_turn(
        junk in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        run(junk, reply(&[]), vec![]);
    }
}
