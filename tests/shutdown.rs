//! Graceful shutdown of `pgtenant serve` (SPEC §10): on SIGTERM, clients in
//! a transaction can still COMMIT, an idle client gets FATAL 57P01, and the
//! process exits 0.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_commit_and_tells_idle_clients() {
    tenant_fixture("sd_app", &[("t_acme", "Acme")]).await;
    admin_sql("sd_app", "CREATE TABLE IF NOT EXISTS t_acme.ledger (n int)").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let config = format!(
        r#"
[proxy]
listen = "127.0.0.1:{port}"
shutdown_timeout = "20s"
[auth]
method = "trust"
users = [{{ name = "app" }}]
[servers.main]
port = {pg}
database = "sd_app"
user = "postgres"
[migrations]
on_startup = false
[tiers.default]
pool_size = 25
[[tenants]]
key = "acme"
mode = "schema"
server = "main"
"#,
        pg = pg_port()
    );
    let path = scratch("sd.toml");
    std::fs::write(&path, config).expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("pgtenant serve");
    let conninfo = format!("host=127.0.0.1 port={port} user=app.acme dbname=sd_app");
    let up = wait_until(Duration::from_secs(10), || async {
        tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
    assert!(up, "pgtenant serve came up");
    let open = |c: &str| {
        let c = c.to_owned();
        async move {
            let (client, conn) = tokio_postgres::connect(&c, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let conn = tokio::spawn(conn);
            (client, conn)
        }
    };
    let mut in_txn = Vec::new();
    for i in 0..20 {
        let (c, conn) = open(&conninfo).await;
        c.batch_execute(&format!("BEGIN; INSERT INTO t_acme.ledger VALUES ({i})"))
            .await
            .expect("begin");
        in_txn.push((c, conn));
    }
    let (idle, idle_conn) = open(&conninfo).await;
    idle.simple_query("SELECT 1")
        .await
        .expect("idle client works");
    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    // The idle client is told at once.
    let ended = tokio::time::timeout(Duration::from_secs(5), idle_conn)
        .await
        .expect("the idle client is let go")
        .expect("task");
    assert_eq!(sqlstate(&ended.expect_err("FATAL")).0, "57P01");
    // Every open transaction still commits.
    for (c, _) in &in_txn {
        c.batch_execute("COMMIT")
            .await
            .expect("commit after SIGTERM");
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("pgtenant exits once its clients are gone")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        scalar(
            &direct("sd_app").await,
            "SELECT count(*)::text FROM t_acme.ledger"
        )
        .await,
        "20"
    );
    drop(in_txn);
}
