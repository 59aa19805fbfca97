//! `pgtenant bench` (issue 14's many-tenant load generator) end to end: its
//! fixture, a run through pgtenant over many context-isolation tenants sharing
//! a few server connections with every answer checked, each protocol, logins
//! per connection, and the check failing when answers come from the wrong
//! tenant.

mod common;

use common::*;

const DB: &str = "bench_app";
const TENANTS: usize = 30;
const MAX_LINKS: usize = 4;

fn config() -> String {
    let keys: Vec<String> = (1..=TENANTS).map(|i| format!("bt{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    context_tenants_config(DB, "postgres", 2, MAX_LINKS, &keys)
}

/// `pgtenant bench ARGS...`: (success, stdout, stderr).
async fn bench(args: &[&str]) -> (bool, String, String) {
    // bench reads no config; any path will do
    pgtenant_cli(std::path::Path::new("/nonexistent.toml"), args, "").await
}

/// `pgtenant bench run` on `url` over `tenants` of the fixture's tenants
/// with `clients` in flight for `duration`, no warm-up, one thread, plus
/// `extra` arguments.
async fn bench_run(
    url: &str,
    tenants: usize,
    clients: usize,
    duration: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let (tenants, clients) = (tenants.to_string(), clients.to_string());
    let mut args = vec![
        "bench",
        "run",
        "--url",
        url,
        "--tenants",
        &tenants,
        "--prefix",
        "bt",
        "--rows",
        "50",
        "--clients",
        &clients,
        "--duration",
        duration,
        "--warmup",
        "0s",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    bench(&args).await
}

/// The `summary` line's value for `key`.
fn summary(stdout: &str, key: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("summary "))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_owned()
}

/// Made once per binary, whichever test comes first.
static FIXTURE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn fixture() {
    FIXTURE.get_or_init(make_fixture).await;
}

async fn make_fixture() {
    admin_sql("postgres", &format!("CREATE DATABASE {DB}")).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{DB}", pg_port());
    let n = TENANTS.to_string();
    let (ok, _, err) = bench(&[
        "bench",
        "init",
        "--url",
        &url,
        "--tenants",
        &n,
        "--prefix",
        "bt",
        "--rows",
        "50",
    ])
    .await;
    assert!(ok, "bench init: {err}");
    assert!(err.contains("bench init: 30 of 30 tenants"), "{err}");
    let db = direct(DB).await;
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM t_bt7.bench_accounts WHERE tenant = 'bt7'"
        )
        .await,
        "50"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tenants_share_few_links_and_every_answer_is_the_tenants_own() {
    fixture().await;
    let proxy = start_proxy(&config()).await;
    let url = format!(
        "host=127.0.0.1 port={} user=app.{{tenant}} dbname={DB}",
        proxy.addr.port()
    );
    for protocol in ["simple", "extended", "prepared"] {
        let (ok, out, err) = bench_run(&url, TENANTS, 8, "2s", &["--protocol", protocol]).await;
        assert!(ok, "{protocol}: {out}{err}");
        assert!(err.contains("30 connections open over 30 tenants"), "{err}");
        assert_eq!(summary(&out, "errors"), "0", "{protocol}: {out}");
        assert_eq!(summary(&out, "wrong_tenant"), "0", "{protocol}: {out}");
        assert_eq!(summary(&out, "served"), "30", "{protocol}: {out}");
        let tps: f64 = summary(&out, "tps").parse().expect("tps");
        assert!(tps > 0.0, "{out}");
        // 30 tenants took turns on at most max_connections server links.
        let links: i64 = scalar(
            &direct(DB).await,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}' AND pid <> pg_backend_pid()"),
        )
        .await
        .parse()
        .expect("count");
        assert!(
            (1..=MAX_LINKS as i64).contains(&links),
            "{links} server links"
        );
    }

    // A login per transaction, round-robin over the tenants.
    let (ok, out, err) = bench_run(&url, TENANTS, 4, "2s", &["--connect"]).await;
    assert!(ok, "connect: {out}{err}");
    assert_eq!(summary(&out, "served"), "30", "{out}");
    assert_eq!(summary(&out, "errors"), "0", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_the_wrong_tenant_fail_the_run() {
    fixture().await;
    // Straight to PostgreSQL, every connection in tenant bt1's schema whatever
    // its tenant: all but bt1's answers are wrong.
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname={DB} application_name={{tenant}} options=-csearch_path=t_bt1",
        pg_port()
    );
    let (ok, out, err) = bench_run(&url, 3, 3, "1s", &[]).await;
    assert!(!ok, "a run with wrong answers must fail: {out}{err}");
    assert_eq!(summary(&out, "served"), "1", "{out}");
    assert_eq!(summary(&out, "errors"), "0", "{out}");
    let wrong: u64 = summary(&out, "wrong_tenant").parse().expect("wrong");
    assert!(wrong > 0, "{out}");
}
