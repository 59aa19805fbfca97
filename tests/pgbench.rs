//! pgbench through pgtenant in transaction mode: initialisation (COPY), simple
//! and extended protocol, 32 clients, zero failures.

mod common;

use common::*;
use tokio::process::Command;

const CONFIG: &str = r#"
[auth]
method = "trust"
users = [{ name = "postgres" }]

[servers.main]
port = {PG_PORT}
user = "postgres"

[tiers.bench]
pool_size = 5

[[tenants]]
key = "bench"
mode = "database"
server = "main"
database = "pgb_bench"
tier = "bench"
"#;

async fn pgbench(port: u16, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .arg("bench")
        .output()
        .await
        .expect("run pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

fn processed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_and_extended_with_32_clients() {
    admin_sql("postgres", "CREATE DATABASE pgb_bench").await;
    let proxy = start_proxy(CONFIG).await;
    let port = proxy.addr.port();
    // Initialise through the proxy: DDL, COPY FROM STDIN, VACUUM.
    pgbench(port, &["-i", "-s", "1", "-q"]).await;
    for mode in ["simple", "extended", "prepared"] {
        let report = pgbench(port, &["-S", "-M", mode, "-c", "32", "-j", "2", "-T", "3"]).await;
        assert!(
            report.contains("number of failed transactions: 0"),
            "{mode}:\n{report}"
        );
        assert!(processed(&report) > 100, "{mode}:\n{report}");
    }
    // Read-write TPC-B-like transactions (BEGIN ... END across several statements).
    let report = pgbench(port, &["-M", "extended", "-c", "8", "-j", "2", "-T", "3"]).await;
    assert!(
        report.contains("number of failed transactions: 0"),
        "{report}"
    );
    assert!(processed(&report) > 50, "{report}");
    let admin = direct("postgres").await;
    let links: i64 = scalar(
        &admin,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgtenant/bench'",
    )
    .await
    .parse()
    .expect("count");
    assert!(links <= 5, "quota 5, saw {links}");
}
