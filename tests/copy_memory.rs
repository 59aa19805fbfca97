//! 200 MB through COPY FROM STDIN and COPY TO STDOUT with pgtenant's resident
//! memory staying under 64 MB: data streams, it is never held whole. pgtenant
//! runs as its own process here so its RSS is its own.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

const TOTAL: usize = 200 * 1024 * 1024;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Proxy(Child);
impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_megabytes_each_way_in_bounded_memory() {
    tenant_fixture_with(
        "cm_app",
        &[("t_bulk", "Bulk")],
        "CREATE UNLOGGED TABLE IF NOT EXISTS t_bulk.lines (line text)",
    )
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let dir = scratch("cm");
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("pgtenant.toml");
    std::fs::write(
        &cfg,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\n[auth]\nmethod = \"trust\"\nusers = [{{ name = \"app\" }}]\n\
             [servers.main]\nport = {}\ndatabase = \"cm_app\"\nuser = \"postgres\"\n\
             [[tenants]]\nkey = \"bulk\"\nmode = \"schema\"\nserver = \"main\"\n",
            pg_port()
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start pgtenant");
    let pid = child.id();
    let _proxy = Proxy(child);
    let conn_str = format!("host=127.0.0.1 port={port} user=app.bulk dbname=cm_app");
    let up = wait_until(Duration::from_secs(20), || async {
        tokio_postgres::connect(&conn_str, NoTls).await.is_ok()
    })
    .await;
    assert!(up, "pgtenant did not start");
    let (client, conn) = tokio_postgres::connect(&conn_str, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .simple_query("TRUNCATE lines")
        .await
        .expect("truncate");

    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // In: 200 MB of 100-byte lines, generated as we go.
    let line = format!("{}\n", "y".repeat(99));
    let chunk = bytes::Bytes::from(line.repeat(64 * 1024 / line.len()));
    let sink = client
        .copy_in("COPY lines FROM STDIN")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    let mut sent = 0;
    while sent < TOTAL {
        sink.send(chunk.clone()).await.expect("send");
        sent += chunk.len();
    }
    let rows = sink.finish().await.expect("finish");
    assert_eq!(rows as usize, sent / line.len());
    // Out: the same 200 MB, read and dropped as it comes.
    let stream = client
        .copy_out("COPY lines TO STDOUT")
        .await
        .expect("copy out");
    futures_util::pin_mut!(stream);
    let mut received = 0;
    while let Some(part) = stream.next().await {
        received += part.expect("chunk").len();
    }
    sampler.abort();
    assert_eq!(received, sent);
    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    eprintln!("pgtenant peak RSS {peak_mib} MiB moving {sent} bytes each way");
    assert!(peak_mib > 0, "RSS was sampled");
    assert!(peak_mib < 64, "pgtenant's RSS peaked at {peak_mib} MiB");
    let _ = std::fs::remove_dir_all(&dir);
}
