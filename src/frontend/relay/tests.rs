//! The relay and the session state machine over in-memory streams
//! (`tokio::io::duplex`), with a scripted server: no PostgreSQL needed.

use super::*;
use crate::backend::{Overrides, Settings};
use crate::frontend::client::{ClientLimits, ClientState};
use crate::pool::Quota;
use crate::prepared::LinkStatements;
use crate::protocol::messages;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

pub(super) fn link() -> LinkState {
    let startup: Settings = [("application_name".to_owned(), "pgtenant/x".to_owned())]
        .into_iter()
        .collect();
    LinkState {
        prepared: LinkStatements::new(10),
        params: startup.clone(),
        startup: Arc::new(startup),
        settings: Overrides::default(),
        sql_prepared: Default::default(),
        dirty: false,
        foreign: None,
        poisoned: false,
        pid: 42,
        context_owner: None,
        wipe: false,
        owner: None,
    }
}

pub(super) fn client(startup: Overrides) -> Client {
    client_in(startup, None)
}

/// A transaction-mode client, on a shared link's `context` if given.
fn client_in(startup: Overrides, context: Option<Arc<crate::tenant::TenantContext>>) -> Client {
    let params: Settings = [("application_name".to_owned(), "pgtenant/x".to_owned())]
        .into_iter()
        .collect();
    Client::new(ClientState::new(
        Arc::new(params),
        startup,
        true,
        context,
        Quota::new(1),
        ClientLimits {
            max_settings: 10,
            max_statements: 10,
            max_listens: 10,
        },
    ))
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    messages::query(&mut b, sql);
    b.to_vec()
}

/// Reads one message; returns (tag, body).
async fn read_msg(s: &mut DuplexStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 5];
    s.read_exact(&mut h).await.expect("header");
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("body");
    (h[0], body)
}

async fn read_query(s: &mut DuplexStream) -> String {
    let (tag, body) = read_msg(s).await;
    assert_eq!(tag, b'Q');
    String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()
}

fn command_complete(tag: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    let at = messages::begin(&mut b, b'C');
    b.extend_from_slice(tag.as_bytes());
    b.extend_from_slice(&[0]);
    messages::finish(&mut b, at);
    b.to_vec()
}

/// The server's reply to a command: CommandComplete(tag) then ReadyForQuery.
fn done(tag: &str, status: u8) -> Vec<u8> {
    let mut b = BytesMut::from(&command_complete(tag)[..]);
    messages::ready_for_query(&mut b, status);
    b.to_vec()
}

fn error(code: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    messages::error_response(&mut b, messages::Severity::Error, code, "boom", None);
    b.to_vec()
}

/// Runs one relay turn: `client_bytes` from the client, `server` scripted.
async fn turn<F, Fut>(
    c: &mut Client,
    l: &mut LinkState,
    client_bytes: &[u8],
    server: F,
) -> (RelayEnd, Vec<(u8, Vec<u8>)>)
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: std::future::Future<Output = DuplexStream>,
{
    let (mut app, proxy_front) = tokio::io::duplex(1 << 16);
    let (proxy_back, pg) = tokio::io::duplex(1 << 16);
    app.write_all(client_bytes).await.expect("client writes");
    let (mut cr, mut cw) = tokio::io::split(proxy_front);
    let (mut sr, mut sw) = tokio::io::split(proxy_back);
    let relay_done = relay((&mut cr, &mut cw), c, (&mut sr, &mut sw), l);
    let (end, pg) = tokio::join!(relay_done, server(pg));
    drop(pg);
    flush(&mut cw, &mut c.down).await.expect("flush");
    drop((cr, cw));
    let mut seen = Vec::new();
    let mut rest = Vec::new();
    app.read_to_end(&mut rest).await.expect("client reads");
    let mut at = 0;
    while at + 5 <= rest.len() {
        let len =
            u32::from_be_bytes([rest[at + 1], rest[at + 2], rest[at + 3], rest[at + 4]]) as usize;
        seen.push((rest[at], rest[at + 5..at + 1 + len].to_vec()));
        at += 1 + len;
    }
    (end, seen)
}

fn tags(seen: &[(u8, Vec<u8>)]) -> Vec<char> {
    seen.iter().map(|(t, _)| *t as char).collect()
}

#[tokio::test]
async fn a_set_follows_the_client_and_is_replayed_ahead_on_the_next_link() {
    let mut c = client(Overrides::default());
    let mut first = link();
    let (end, seen) = turn(
        &mut c,
        &mut first,
        &query("SET work_mem = '64MB'"),
        |mut pg| async move {
            assert_eq!(read_query(&mut pg).await, "SET work_mem = '64MB'");
            pg.write_all(&done("SET", b'I')).await.expect("reply");
            pg
        },
    )
    .await;
    assert!(matches!(end, RelayEnd::Release), "{end:?}");
    assert_eq!(tags(&seen), vec!['C', 'Z']);
    assert_eq!(
        c.state
            .settings
            .current
            .get("work_mem")
            .map(|r| r.to_string()),
        Some("SET work_mem = '64MB'".to_owned())
    );
    assert!(first.settings.same_as(&c.state.settings.current));

    // Another link: the SET goes first, its reply never reaches the client.
    let mut second = link();
    let (end, seen) = turn(
        &mut c,
        &mut second,
        &query("SHOW work_mem"),
        |mut pg| async move {
            assert_eq!(read_query(&mut pg).await, "SET work_mem = '64MB'\n;");
            assert_eq!(read_query(&mut pg).await, "SHOW work_mem");
            pg.write_all(&done("SET", b'I'))
                .await
                .expect("prelude reply");
            pg.write_all(&done("SHOW", b'I')).await.expect("reply");
            pg
        },
    )
    .await;
    assert!(matches!(end, RelayEnd::Release), "{end:?}");
    assert_eq!(tags(&seen), vec!['C', 'Z']);
    assert_eq!(seen[0].1, b"SHOW\0");

    // A client that never set it, on the first link: RESET ahead of its query.
    let mut other = client(Overrides::default());
    let (_, seen) = turn(
        &mut other,
        &mut first,
        &query("SELECT 1"),
        |mut pg| async move {
            assert_eq!(read_query(&mut pg).await, "RESET \"work_mem\";");
            assert_eq!(read_query(&mut pg).await, "SELECT 1");
            pg.write_all(&done("RESET", b'I'))
                .await
                .expect("prelude reply");
            pg.write_all(&done("SELECT 1", b'I')).await.expect("reply");
            pg
        },
    )
    .await;
    assert_eq!(tags(&seen), vec!['C', 'Z']);
}

#[tokio::test]
async fn a_failed_or_rolled_back_set_is_not_followed() {
    let mut c = client(Overrides::default());
    let mut l = link();
    let (_, seen) = turn(
        &mut c,
        &mut l,
        &query("SET work_mem = 'lots'"),
        |mut pg| async move {
            read_query(&mut pg).await;
            pg.write_all(&error("22023")).await.expect("error");
            let mut rfq = BytesMut::new();
            messages::ready_for_query(&mut rfq, b'I');
            pg.write_all(&rfq).await.expect("rfq");
            pg
        },
    )
    .await;
    assert_eq!(tags(&seen), vec!['E', 'Z']);
    assert!(c.state.settings.current.is_empty());
    let (_, _) = turn(
        &mut c,
        &mut l,
        &query("BEGIN; SET work_mem = '64MB'; ROLLBACK"),
        |mut pg| async move {
            read_query(&mut pg).await;
            pg.write_all(&done("ROLLBACK", b'I')).await.expect("reply");
            pg
        },
    )
    .await;
    assert!(c.state.settings.current.is_empty());
    assert!(!l.dirty);
}

#[tokio::test]
async fn reset_all_runs_and_the_startup_values_come_back_behind_it() {
    let mut startup = Overrides::default();
    startup.set(
        "extra_float_digits",
        "SELECT pg_catalog.set_config('extra_float_digits', '3', false)".into(),
    );
    let mut c = client(startup);
    let mut l = link();
    l.settings = c.state.settings.current.clone();
    let (end, seen) = turn(&mut c, &mut l, &query("RESET ALL"), |mut pg| async move {
        assert_eq!(read_query(&mut pg).await, "RESET ALL");
        assert_eq!(
            read_query(&mut pg).await,
            "SELECT pg_catalog.set_config('extra_float_digits', '3', false)\n;"
        );
        pg.write_all(&done("RESET", b'I')).await.expect("reply");
        pg.write_all(&done("SELECT 1", b'I'))
            .await
            .expect("restore reply");
        pg
    })
    .await;
    assert!(matches!(end, RelayEnd::Release), "{end:?}");
    assert_eq!(tags(&seen), vec!['C', 'Z'], "only RESET ALL's own reply");
    assert!(l.settings.same_as(&c.state.settings.startup));
    assert!(!l.poisoned && !l.dirty);
}

#[tokio::test]
async fn sql_run_out_of_sight_marks_the_link_for_a_reset_before_others() {
    let mut a = client(Overrides::default());
    let mut l = link();
    let (_, _) = turn(
        &mut a,
        &mut l,
        &query("DO $$BEGIN SET work_mem = '1GB'; END$$"),
        |mut pg| async move {
            read_query(&mut pg).await;
            pg.write_all(&done("DO", b'I')).await.expect("reply");
            pg
        },
    )
    .await;
    assert_eq!(l.foreign, Some(a.state.id()));
    let mut b = client(Overrides::default());
    let (_, seen) = turn(&mut b, &mut l, &query("SELECT 1"), |mut pg| async move {
        assert_eq!(
            read_query(&mut pg).await,
            "SET statement_timeout = 0; SET lock_timeout = 0"
        );
        assert_eq!(read_query(&mut pg).await, "DISCARD ALL");
        assert_eq!(read_query(&mut pg).await, "SELECT 1");
        pg.write_all(&done("SET", b'I'))
            .await
            .expect("prelude reply");
        pg.write_all(&done("DISCARD ALL", b'I'))
            .await
            .expect("prelude reply");
        pg.write_all(&done("SELECT 1", b'I')).await.expect("reply");
        pg
    })
    .await;
    assert_eq!(tags(&seen), vec!['C', 'Z']);
    assert_eq!(l.foreign, None);
}

#[tokio::test]
async fn replies_to_a_restore_arriving_with_the_clients_are_swallowed() {
    let params: Settings = [("application_name".to_owned(), "driver".to_owned())]
        .into_iter()
        .collect();
    let mut c = Client::new(ClientState::new(
        Arc::new(params),
        Overrides::default(),
        true,
        None,
        Quota::new(1),
        ClientLimits {
            max_settings: 10,
            max_statements: 10,
            max_listens: 10,
        },
    ));
    let mut l = link();
    l.params
        .insert("application_name".to_owned(), "driver".to_owned());
    let (end, seen) = turn(
        &mut c,
        &mut l,
        &query("RESET application_name"),
        |mut pg| async move {
            assert_eq!(read_query(&mut pg).await, "RESET application_name");
            assert_eq!(
                read_query(&mut pg).await,
                "SET application_name = 'driver';"
            );
            // Both answers in one write: the client's, then pgtenant's restore.
            let mut b = BytesMut::new();
            messages::parameter_status(&mut b, "application_name", "pgtenant/x");
            b.extend_from_slice(&done("RESET", b'I'));
            messages::parameter_status(&mut b, "application_name", "driver");
            b.extend_from_slice(&done("SET", b'I'));
            pg.write_all(&b).await.expect("replies");
            pg
        },
    )
    .await;
    assert!(matches!(end, RelayEnd::Release), "{end:?}");
    // Its own reply, then the restore's report (its setting came back); never
    // the restore's CommandComplete or ReadyForQuery.
    assert_eq!(tags(&seen), vec!['S', 'C', 'Z', 'S']);
    assert_eq!(
        c.state.params.get("application_name").map(String::as_str),
        Some("driver")
    );
}

#[tokio::test]
async fn pgtenants_request_between_two_pipelined_queries_stays_hidden() {
    let mut c = client(Overrides::default());
    c.state
        .sql_prepared
        .insert("p".to_owned(), (7, "PREPARE p AS SELECT 1".into()));
    let mut l = link();
    let mut both = query("SELECT 1");
    both.extend_from_slice(&query("EXECUTE p"));
    let (end, seen) = turn(&mut c, &mut l, &both, |mut pg| async move {
        assert_eq!(read_query(&mut pg).await, "SELECT 1");
        // The link lacks the client's p: prepared again, right before use.
        assert_eq!(read_query(&mut pg).await, "PREPARE p AS SELECT 1\n;");
        assert_eq!(read_query(&mut pg).await, "EXECUTE p");
        let mut b = done("SELECT 1", b'I');
        b.extend_from_slice(&done("PREPARE", b'I'));
        b.extend_from_slice(&done("SELECT 1", b'I'));
        pg.write_all(&b).await.expect("replies in one write");
        pg
    })
    .await;
    assert!(matches!(end, RelayEnd::Release), "{end:?}");
    assert_eq!(tags(&seen), vec!['C', 'Z', 'C', 'Z']);
    assert!(seen.iter().all(|(_, body)| body != b"PREPARE\0"));
    assert_eq!(l.sql_prepared.get("p"), Some(&7));
}

#[tokio::test]
async fn a_session_closed_for_what_it_ran_still_gets_its_earlier_replies() {
    // The client pipelines: its first query's ReadyForQuery arrives in the
    // same read as the reply that ends the session. The client waits for that
    // ReadyForQuery; nothing after the closing ParameterStatus reaches it.
    let mut c = client(Overrides::default());
    let mut l = link();
    let mut both = query("SELECT 1");
    both.extend_from_slice(&query(
        "DO $$BEGIN SET standard_conforming_strings = off; END$$",
    ));
    let (end, seen) = turn(&mut c, &mut l, &both, |mut pg| async move {
        assert_eq!(read_query(&mut pg).await, "SELECT 1");
        read_query(&mut pg).await;
        let mut b = done("SELECT 1", b'I');
        b.extend_from_slice(&command_complete("DO"));
        let mut ps = BytesMut::new();
        messages::parameter_status(&mut ps, "standard_conforming_strings", "off");
        b.extend_from_slice(&ps);
        b.extend_from_slice(&done("SELECT 2", b'I'));
        pg.write_all(&b).await.expect("replies in one write");
        pg
    })
    .await;
    assert!(matches!(end, RelayEnd::ContextFailed), "{end:?}");
    assert_eq!(tags(&seen), vec!['C', 'Z', 'C']);
    assert_eq!(seen[0].1, b"SELECT 1\0");
    assert_eq!(seen[2].1, b"DO\0");
    assert!(l.poisoned);
}

/// A client whose link served another tenant, with its cancel target held
/// back (as the session sets it up).
fn wiped_link_client() -> (Client, LinkState, crate::frontend::cancel::CancelSlot) {
    let mut c = client(Overrides::default());
    let mut l = link();
    l.wipe = true;
    l.context_owner = Some(Arc::from("beta"));
    let slot = crate::frontend::cancel::CancelSlot::default();
    let target = crate::frontend::cancel::CancelTarget {
        host: Arc::from("127.0.0.1"),
        port: 5432,
        tls: Arc::default(),
        pid: 42,
        secret: 7,
    };
    c.state.cancel_after_prelude = Some((slot.clone(), target));
    (c, l, slot)
}

fn published(slot: &crate::frontend::cancel::CancelSlot) -> Option<i32> {
    slot.lock().expect("slot").as_ref().map(|t| t.pid)
}

#[tokio::test]
async fn a_link_from_another_tenant_is_wiped_ahead_and_cancels_wait_for_the_wipe() {
    let (mut c, mut l, slot) = wiped_link_client();
    let watched = slot.clone();
    let (end, seen) = turn(&mut c, &mut l, &query("SELECT 1"), |mut pg| async move {
        assert_eq!(
            read_query(&mut pg).await,
            "SET statement_timeout = 0; SET lock_timeout = 0"
        );
        assert_eq!(read_query(&mut pg).await, "DISCARD ALL");
        assert_eq!(read_query(&mut pg).await, "SELECT 1");
        // The client's query is on its way, but a cancel could still stop
        // pgtenant's wipe: none reaches the server yet.
        assert_eq!(published(&watched), None);
        pg.write_all(&done("SET", b'I'))
            .await
            .expect("prelude reply");
        pg.write_all(&done("DISCARD ALL", b'I'))
            .await
            .expect("prelude reply");
        for _ in 0..200 {
            if published(&watched).is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            published(&watched),
            Some(42),
            "published once the wipe is answered"
        );
        pg.write_all(&done("SELECT 1", b'I')).await.expect("reply");
        pg
    })
    .await;
    assert!(matches!(end, RelayEnd::Release), "{end:?}");
    assert_eq!(tags(&seen), vec!['C', 'Z']);
    assert!(!l.wipe);
    assert_eq!(l.context_owner, None, "the wipe took the old context away");
}

#[tokio::test]
async fn a_failed_wipe_ends_the_client_before_any_reply_and_publishes_no_cancel() {
    let (mut c, mut l, slot) = wiped_link_client();
    let (end, seen) = turn(&mut c, &mut l, &query("SELECT 1"), |mut pg| async move {
        assert_eq!(
            read_query(&mut pg).await,
            "SET statement_timeout = 0; SET lock_timeout = 0"
        );
        assert_eq!(read_query(&mut pg).await, "DISCARD ALL");
        assert_eq!(read_query(&mut pg).await, "SELECT 1");
        let mut reply = done("SET", b'I');
        reply.extend_from_slice(&error("57014"));
        let mut rfq = BytesMut::new();
        messages::ready_for_query(&mut rfq, b'I');
        reply.extend_from_slice(&rfq);
        reply.extend_from_slice(&done("SELECT 1", b'I'));
        pg.write_all(&reply).await.expect("replies");
        pg
    })
    .await;
    assert!(matches!(end, RelayEnd::ContextFailed), "{end:?}");
    assert!(
        seen.is_empty(),
        "nothing of the query's reached the client: {seen:?}"
    );
    assert_eq!(published(&slot), None);
    assert!(l.poisoned);
}

/// A client of a schema tenant on context isolation.
fn context_client() -> Client {
    let context = crate::tenant::TenantContext {
        owner: Arc::from("acme"),
        search_path: "\"t_acme\", public".to_owned(),
        signed: None,
    };
    client_in(Overrides::default(), Some(Arc::new(context)))
}

/// The server's answers to a context prelude of one call (FunctionCall
/// result, ReadyForQuery, CloseComplete), then to the client's `tag` query.
fn context_then(tag: &str) -> Vec<u8> {
    let mut reply = BytesMut::new();
    let at = messages::begin(&mut reply, b'V');
    reply.extend_from_slice(&[0, 0, 0, 1, b'x']);
    messages::finish(&mut reply, at);
    messages::ready_for_query(&mut reply, b'I');
    let at = messages::begin(&mut reply, b'3');
    messages::finish(&mut reply, at);
    reply.extend_from_slice(&done(tag, b'I'));
    reply.to_vec()
}

#[tokio::test]
async fn the_tenant_context_rides_ahead_of_the_first_message_with_no_sync_of_its_own() {
    let mut c = context_client();
    let mut l = link();
    for round in 0..2 {
        let (end, seen) = turn(&mut c, &mut l, &query("SELECT 1"), |mut pg| async move {
            let (tag, body) = read_msg(&mut pg).await;
            assert_eq!(tag, b'F', "set_config by FunctionCall");
            assert!(
                body.windows(16).any(|w| w == b"\"t_acme\", public"),
                "the search_path travels as an argument"
            );
            let (tag, body) = read_msg(&mut pg).await;
            assert_eq!(
                (tag, body.as_slice()),
                (b'C', &b"S\0"[..]),
                "Close of the unnamed statement"
            );
            // No Sync: the client's own message ends the batch.
            assert_eq!(read_query(&mut pg).await, "SELECT 1");
            pg.write_all(&context_then("SELECT 1"))
                .await
                .expect("replies");
            pg
        })
        .await;
        assert!(matches!(end, RelayEnd::Release), "round {round}: {end:?}");
        assert_eq!(
            tags(&seen),
            vec!['C', 'Z'],
            "round {round}: only the client's reply"
        );
        assert_eq!(seen[0].1, b"SELECT 1\0");
        assert_eq!(l.context_owner.as_deref(), Some("acme"));
    }
}

#[tokio::test]
async fn a_link_is_not_given_back_while_part_of_the_next_message_waits() {
    let mut c = context_client();
    let mut l = link();
    let next = query("SELECT 2");
    let bytes = [query("SELECT 1"), next[..3].to_vec()].concat();
    let (end, seen) = turn(&mut c, &mut l, &bytes, |mut pg| async move {
        assert_eq!(read_msg(&mut pg).await.0, b'F');
        assert_eq!(read_msg(&mut pg).await.0, b'C');
        assert_eq!(read_query(&mut pg).await, "SELECT 1");
        pg.write_all(&context_then("SELECT 1"))
            .await
            .expect("replies");
        // A relay that gave the link back would have ended by now; this one
        // waits for the rest of "SELECT 2" until the server goes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(pg);
        tokio::io::duplex(1).0
    })
    .await;
    assert!(matches!(end, RelayEnd::ServerClosed), "{end:?}");
    assert_eq!(tags(&seen), vec!['C', 'Z'], "the first request's answer");
}
