//! LISTEN / NOTIFY through pgtenant (SPEC §4): in transaction mode clients
//! listen through one hub connection; in every mode a notification reaches
//! only listeners of the tenant that sent it, whatever SQL another tenant
//! sends (a literal NOTIFY, `pg_notify` with a computed channel, a DO block,
//! a forged owner marker).

mod common;

use common::*;
use futures_util::StreamExt;
use pgtenant::config::TenantMode;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

fn config_text() -> String {
    catalog_config_text(
        "nt_app",
        "nt_platform",
        "[tiers.t]\npool_size = 3\n[tiers.s]\npool_size = 8\npool_mode = \"session\"",
    )
}

/// A client of `tenant` whose notifications arrive on the receiver.
async fn listener(
    proxy: &pgtenant::app::Running,
    tenant: &str,
) -> (Client, mpsc::UnboundedReceiver<Notification>) {
    let s = format!(
        "host=127.0.0.1 port={} user=app.{tenant} dbname=nt_app",
        proxy.addr.port()
    );
    let (client, mut conn) = tokio_postgres::connect(&s, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {tenant}: {e}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

/// The next notification (within 10 s; `what` names it in the failure).
async fn next_note(rx: &mut mpsc::UnboundedReceiver<Notification>, what: &str) -> Notification {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("not {what}"))
        .expect("connection open")
}

/// Receives notifications until one with payload `end` (inclusive).
async fn until_end(rx: &mut mpsc::UnboundedReceiver<Notification>, who: &str) -> Vec<Notification> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(n)) => {
                let end = n.payload() == "end";
                got.push(n);
                if end {
                    return got;
                }
            }
            Ok(None) => panic!("{who}: connection closed after {} notifications", got.len()),
            Err(_) => panic!("{who}: no `end` after {} notifications", got.len()),
        }
    }
}

/// `listeners` clients of `a` and one of `b` listen on `jobs`; four clients
/// of `a` send `per_sender` NOTIFYs each, `b` tries every way to reach `a`'s
/// listeners. Every `a` listener gets each of `a`'s notifications exactly
/// once, each sender's in order, and nothing of `b`'s; `b`'s listener gets
/// exactly `b`'s. Returns a's senders' `pg_backend_pid()` as seen through
/// pgtenant and the pids the listeners saw per sender.
async fn scenario(
    proxy: &pgtenant::app::Running,
    a: &str,
    b: &str,
    listeners: usize,
    per_sender: usize,
) -> (Vec<i32>, Vec<i32>) {
    let mut a_listeners = Vec::new();
    for _ in 0..listeners {
        let (c, rx) = listener(proxy, a).await;
        c.batch_execute("LISTEN jobs").await.expect("LISTEN");
        a_listeners.push((c, rx));
    }
    let (b_client, mut b_rx) = listener(proxy, b).await;
    b_client
        .batch_execute("LISTEN jobs")
        .await
        .expect("b LISTEN");

    let mut senders = Vec::new();
    for s in 0..4 {
        let (c, _) = listener(proxy, a).await;
        senders.push(tokio::spawn(async move {
            let pid = c
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .expect("pid")
                .get::<_, i32>(0);
            for i in 0..per_sender {
                c.batch_execute(&format!("NOTIFY jobs, '{s}:{i}'"))
                    .await
                    .expect("NOTIFY");
            }
            pid
        }));
    }
    // Tenant b, meanwhile: every way it has of naming the channel.
    let (b_sender, mut b_sender_rx) = listener(proxy, b).await;
    let err = b_sender
        .batch_execute("LISTEN pgtenant_owner")
        .await
        .expect_err("reserved channel");
    assert_eq!(sqlstate(&err).0, "42939");
    for sql in [
        // Its server connection listening out of pgtenant's sight.
        "DO $$BEGIN EXECUTE 'LISTEN jobs'; END$$",
        "NOTIFY jobs, 'b-literal'",
        "SELECT pg_notify('jo' || 'bs', 'b-computed')",
        "DO $$BEGIN PERFORM pg_notify('jobs', 'b-do'); END$$",
        // A forged owner marker naming tenant a, then a notification.
        &format!(
            "SELECT pg_notify('pgtenant_owner', pg_backend_pid() || ':999999999:{}:{a}'); NOTIFY jobs, 'b-forged'",
            "0".repeat(64)
        ),
        "BEGIN; NOTIFY jobs, 'b-rolled-back'; ROLLBACK",
    ] {
        b_sender.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let mut sender_pids = Vec::new();
    for s in senders {
        sender_pids.push(s.await.expect("sender"));
    }
    let (end_sender, _) = listener(proxy, a).await;
    end_sender
        .batch_execute("NOTIFY jobs, 'end'")
        .await
        .expect("a end");
    b_sender
        .batch_execute("NOTIFY jobs, 'end'")
        .await
        .expect("b end");

    let mut seen_pids = vec![0; 4];
    for (n, (_c, rx)) in a_listeners.iter_mut().enumerate() {
        let got = until_end(rx, &format!("{a} listener {n}")).await;
        assert_eq!(
            got.len(),
            4 * per_sender + 1,
            "{a} listener {n}: each notification once, nothing else"
        );
        let mut next: HashMap<String, usize> = HashMap::new();
        for note in &got[..got.len() - 1] {
            assert_eq!(note.channel(), "jobs");
            let (sender, i) = note
                .payload()
                .split_once(':')
                .unwrap_or_else(|| panic!("{a} listener {n} got {:?}", note.payload()));
            let i: usize = i.parse().expect("number");
            let want = next.entry(sender.to_owned()).or_insert(0);
            assert_eq!(
                i, *want,
                "{a} listener {n}: sender {sender}'s notifications in order"
            );
            *want += 1;
            let s: usize = sender.parse().expect("sender");
            seen_pids[s] = note.process_id();
        }
        assert_eq!(got.last().map(|n| n.payload()), Some("end"));
    }
    let b_got: Vec<String> = until_end(&mut b_rx, &format!("{b} listener"))
        .await
        .iter()
        .map(|n| n.payload().to_owned())
        .collect();
    assert_eq!(
        b_got,
        vec!["b-literal", "b-computed", "b-do", "b-forged", "end"]
    );
    // What b's server connection heard by its own LISTEN never reached it.
    b_sender
        .batch_execute("SELECT 1")
        .await
        .expect("b still served");
    assert!(
        b_sender_rx.try_recv().is_err(),
        "{b}'s dynamic LISTEN heard something"
    );
    (sender_pids, seen_pids)
}

#[tokio::test]
async fn notifications_reach_only_their_tenant_in_every_mode() {
    let cfg = catalog_config(&config_text());
    for (key, mode, tier) in [
        ("nacme", TenantMode::Schema, "t"),
        ("nbeta", TenantMode::Schema, "t"),
        ("nfree1", TenantMode::Shared, "t"),
        ("nfree2", TenantMode::Shared, "t"),
        ("nsess1", TenantMode::Schema, "s"),
        ("nsess2", TenantMode::Schema, "s"),
        ("nsshared1", TenantMode::Shared, "s"),
        ("nsshared2", TenantMode::Shared, "s"),
    ] {
        provision_tenant(&cfg, key, mode, tier).await;
    }
    let proxy = start_proxy(&config_text()).await;
    // Transaction mode: 20 listeners over a quota of 3.
    scenario(&proxy, "nacme", "nbeta", 20, 250).await;
    scenario(&proxy, "nbeta", "nacme", 2, 10).await;
    scenario(&proxy, "nfree1", "nfree2", 20, 250).await;
    scenario(&proxy, "nfree2", "nfree1", 2, 10).await;
    // Session mode: the sender's pid is its real backend's, as directly.
    let (sent, seen) = scenario(&proxy, "nsess1", "nsess2", 3, 100).await;
    assert_eq!(
        seen, sent,
        "session mode: NotificationResponse pid = sender's pg_backend_pid()"
    );
    let (sent, seen) = scenario(&proxy, "nsshared1", "nsshared2", 3, 100).await;
    assert_eq!(seen, sent);
    proxy.shutdown().await;
}

/// LISTEN follows PostgreSQL: it takes effect at commit, a rollback undoes
/// it, UNLISTEN stops it, and a client is told nothing while in a
/// transaction (the notification waits for its end).
#[tokio::test]
async fn listen_is_transactional_and_delivered_between_transactions() {
    let cfg = catalog_config(&config_text());
    provision_tenant(&cfg, "ntx", TenantMode::Schema, "t").await;
    let proxy = start_proxy(&config_text()).await;
    let (c, mut rx) = listener(&proxy, "ntx").await;
    let (sender, _) = listener(&proxy, "ntx").await;
    c.batch_execute("BEGIN; LISTEN rolled; ROLLBACK")
        .await
        .expect("rolled back");
    c.batch_execute("BEGIN; LISTEN kept; SAVEPOINT s; UNLISTEN *; ROLLBACK TO s; COMMIT")
        .await
        .expect("kept");
    sender
        .batch_execute("NOTIFY rolled, 'no'; NOTIFY kept, 'yes'")
        .await
        .expect("notify");
    let n = next_note(&mut rx, "delivered").await;
    assert_eq!((n.channel(), n.payload()), ("kept", "yes"));
    // Inside a transaction: held until it ends.
    c.batch_execute("BEGIN").await.expect("begin");
    sender
        .batch_execute("NOTIFY kept, 'later'")
        .await
        .expect("notify");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "nothing inside a transaction"
    );
    c.batch_execute("COMMIT").await.expect("commit");
    let n = next_note(&mut rx, "delivered after COMMIT").await;
    assert_eq!(n.payload(), "later");
    c.batch_execute("UNLISTEN kept").await.expect("unlisten");
    sender
        .batch_execute("NOTIFY kept, 'gone'; NOTIFY other, 'x'")
        .await
        .expect("notify");
    c.batch_execute("LISTEN other").await.expect("listen other");
    sender
        .batch_execute("NOTIFY kept, 'gone'; NOTIFY other, 'y'")
        .await
        .expect("notify");
    let n = next_note(&mut rx, "delivered").await;
    assert_eq!((n.channel(), n.payload()), ("other", "y"));
    // An UNLISTEN rolled back in a later request: still listening.
    c.batch_execute("BEGIN").await.expect("begin");
    c.batch_execute("UNLISTEN other").await.expect("unlisten");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    sender
        .batch_execute("NOTIFY other, 'still'")
        .await
        .expect("notify");
    let n = next_note(&mut rx, "delivered after the rolled-back UNLISTEN").await;
    assert_eq!(n.payload(), "still");
    // Pipelined: its own NOTIFY, then more queries in flight behind it.
    let pipelined = async {
        tokio::join!(
            c.simple_query("NOTIFY other, 'mine'"),
            c.simple_query("SELECT 1"),
            c.simple_query("SELECT 2"),
        )
    };
    let (a, b, d) = tokio::time::timeout(Duration::from_secs(10), pipelined)
        .await
        .expect("pipelined replies all arrive");
    a.expect("notify");
    b.expect("pipelined 1");
    d.expect("pipelined 2");
    let n = next_note(&mut rx, "its own notification").await;
    assert_eq!(n.payload(), "mine");
    // The cap on channels per client.
    let many: String = (0..100).map(|i| format!("LISTEN ch{i};")).collect();
    let err = c
        .batch_execute(&many)
        .await
        .expect_err("over max_client_listens");
    assert_eq!(sqlstate(&err).0, "53400");
    proxy.shutdown().await;
}
