//! The admin console (SPEC §6) through real clients: psql (also with `\x`),
//! tokio-postgres over the extended protocol, PAUSE / RESUME / KILL on one
//! tenant while another goes on, refusals, and Debian's
//! prometheus-pgbouncer-exporter reading it as if it were PgBouncer.

mod common;

use common::*;
use std::time::Duration;

const CONFIG: &str = r#"
[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "s3cret" }, { name = "admin", password = "adm1n" }]
admin_users = ["admin"]

[servers.main]
port = {PG_PORT}
database = "cs_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"

[[tenants]]
key = "globex"
mode = "schema"
server = "main"
"#;

async fn start() -> pgtenant::app::Running {
    tenant_fixture("cs_app", &[("t_acme", "Acme"), ("t_globex", "Globex")]).await;
    start_proxy(CONFIG).await
}

async fn tenant(proxy: &pgtenant::app::Running, key: &str) -> tokio_postgres::Client {
    connect(
        proxy,
        &format!("user=app.{key} password=s3cret dbname=cs_app"),
    )
    .await
    .expect("tenant client")
}

async fn console(proxy: &pgtenant::app::Running) -> tokio_postgres::Client {
    connect(proxy, "user=admin password=adm1n dbname=pgtenant")
        .await
        .expect("console")
}

/// `psql -c` each of `commands` on the console; its stdout.
async fn psql(
    proxy: &pgtenant::app::Running,
    db: &str,
    commands: &[&str],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-X", "-A", "-F", "|", "-h", "127.0.0.1", "-p"])
        .arg(proxy.addr.port().to_string())
        .args(["-U", "admin", "-d", db]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.env("PGPASSWORD", "adm1n").output().await.expect("psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SOCKETS: &str = "type|user|database|replication|state|addr|port|local_addr|local_port|connect_time|request_time|wait|wait_us|close_needed|ptr|link|remote_pid|tls|application_name|prepared_statements|id";

const POOLS: &str = "database|user|cl_active|cl_waiting|cl_active_cancel_req|cl_waiting_cancel_req|sv_active|sv_active_cancel|sv_being_canceled|sv_idle|sv_used|sv_tested|sv_login|maxwait|maxwait_us|pool_mode|tier|quota|paused";

#[tokio::test]
async fn every_show_has_its_documented_columns_through_psql() {
    let proxy = start().await;
    let acme = tenant(&proxy, "acme").await;
    acme.simple_query("SELECT 1").await.expect("acme works");
    let headers = [
        ("SHOW POOLS", POOLS),
        (
            "SHOW STATS",
            "database|total_server_assignment_count|total_xact_count|total_query_count|total_received|total_sent|total_xact_time|total_query_time|total_wait_time|avg_server_assignment_count|avg_xact_count|avg_query_count|avg_recv|avg_sent|avg_xact_time|avg_query_time|avg_wait_time|total_requests",
        ),
        (
            "SHOW STATS_TOTALS",
            "database|server_assignment_count|xact_count|query_count|bytes_received|bytes_sent|xact_time|query_time|wait_time",
        ),
        (
            "SHOW STATS_AVERAGES",
            "database|server_assignment_count|xact_count|query_count|bytes_received|bytes_sent|xact_time|query_time|wait_time",
        ),
        (
            "SHOW DATABASES",
            "name|host|port|database|force_user|pool_size|min_pool_size|reserve_pool|server_lifetime|pool_mode|max_connections|current_connections|paused|disabled|mode|tier|status|schema",
        ),
        ("SHOW LISTS", "list|items"),
        ("SHOW CLIENTS", SOCKETS),
        ("SHOW SERVERS", SOCKETS),
        ("SHOW CONFIG", "key|value|default|changeable"),
        ("SHOW VERSION", "version"),
        (
            "SHOW TENANTS",
            "key|mode|tier|status|server|database|schema|pool_in_use|quota|clients|migration_version",
        ),
        ("SHOW MIGRATIONS", "tenant|version|target_version|state|last_error"),
        (
            "SHOW TIERS",
            "name|pool_size|reserve|max_client_conn|pool_mode|statement_timeout_ms|isolation|max_pinned|tenants",
        ),
    ];
    for (command, header) in headers {
        let (ok, out, err) = psql(&proxy, "pgtenant", &[command]).await;
        assert!(ok, "{command}: {err}");
        assert_eq!(out.lines().next(), Some(header), "{command}:\n{out}");
    }
    // Rows: acme's pool and stats (one transaction), the version, the lists.
    let (_, out, _) = psql(&proxy, "pgbouncer", &["SHOW POOLS"]).await;
    assert!(
        out.lines()
            .any(|l| l == "acme|postgres|1|0|0|0|0|0|0|1|0|0|0|0|0|transaction|default|20|0"),
        "{out}"
    );
    let (_, out, _) = psql(&proxy, "pgtenant", &["SHOW STATS_TOTALS"]).await;
    let acme_row = out
        .lines()
        .find(|l| l.starts_with("acme|"))
        .expect("acme's stats");
    assert_eq!(acme_row.split('|').nth(2), Some("1"), "{out}");
    let (_, out, _) = psql(&proxy, "pgtenant", &["\\x", "SHOW VERSION"]).await;
    assert!(
        out.lines()
            .any(|l| l == concat!("version|pgtenant ", env!("CARGO_PKG_VERSION"))),
        "expanded: {out}"
    );
    // acme's client and its idle server connection.
    let (_, out, _) = psql(&proxy, "pgtenant", &["SHOW CLIENTS"]).await;
    let acme_clients: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("C|app|acme|none|active|127.0.0.1|"))
        .collect();
    assert_eq!(acme_clients.len(), 1, "{out}");
    let (_, out, _) = psql(&proxy, "pgtenant", &["SHOW SERVERS"]).await;
    let acme_servers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("S|postgres|acme|none|idle|127.0.0.1|"))
        .collect();
    assert_eq!(acme_servers.len(), 1, "{out}");
    let (_, out, _) = psql(&proxy, "pgtenant", &["SHOW LISTS"]).await;
    assert_eq!(out.lines().count(), 1 + 14 + 1, "{out}");
    assert!(out.lines().any(|l| l == "databases|2"), "{out}");
    // SHOW HELP is a notice listing the commands; unknown commands list them.
    let (ok, _, err) = psql(&proxy, "pgtenant", &["SHOW HELP"]).await;
    assert!(
        ok && err.contains("Console usage") && err.contains("PAUSE [tenant]"),
        "{err}"
    );
    let (ok, _, err) = psql(&proxy, "pgtenant", &["SHOW NOPE"]).await;
    assert!(
        !ok && err.contains("invalid command 'SHOW NOPE', use SHOW HELP;"),
        "{err}"
    );
    assert!(
        err.contains("SHOW TENANTS"),
        "the error lists the commands: {err}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn extended_protocol_and_refusals() {
    let proxy = start().await;
    let acme = tenant(&proxy, "acme").await;
    acme.simple_query("SELECT 1").await.expect("acme works");
    let admin = console(&proxy).await;
    let rows = admin
        .query("SHOW POOLS", &[])
        .await
        .expect("extended SHOW POOLS");
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names.join("|"), POOLS);
    let acme_row = rows
        .iter()
        .find(|r| r.get::<_, &str>("database") == "acme")
        .expect("acme's pool");
    assert_eq!(acme_row.get::<_, i32>("cl_active"), 1);
    assert_eq!(acme_row.get::<_, &str>("pool_mode"), "transaction");
    // A prepared statement run twice.
    let st = admin.prepare("SHOW VERSION").await.expect("prepare");
    for _ in 0..2 {
        let r = admin.query_one(&st, &[]).await.expect("execute");
        assert_eq!(
            r.get::<_, &str>(0),
            concat!("pgtenant ", env!("CARGO_PKG_VERSION"))
        );
    }
    let e = admin.query("SHOW NOPE", &[]).await.expect_err("unknown");
    assert_eq!(sqlstate(&e).0, "08P01");
    // The session goes on after an error.
    assert_eq!(
        admin.query("SHOW LISTS", &[]).await.expect("lists").len(),
        14
    );
    // Not an admin, or a wrong password.
    for (conninfo, code) in [
        ("user=app password=s3cret dbname=pgtenant", "28000"),
        ("user=admin password=wrong dbname=pgbouncer", "28P01"),
    ] {
        let Err(e) = connect(&proxy, conninfo).await else {
            panic!("{conninfo} is refused");
        };
        assert_eq!(sqlstate(&e).0, code, "{conninfo}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn pause_holds_one_tenant_resume_releases_it_kill_disconnects_it() {
    let proxy = start().await;
    let admin = console(&proxy).await;
    let acme = tenant(&proxy, "acme").await;
    let globex = tenant(&proxy, "globex").await;
    admin.simple_query("PAUSE acme").await.expect("pause");
    let waiting = tokio::spawn(async move {
        let r = acme.simple_query("SELECT 42").await.map(|_| ());
        (acme, r)
    });
    // globex goes on while acme waits.
    for _ in 0..10 {
        globex.simple_query("SELECT 1").await.expect("globex runs");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "acme's transaction ran while paused"
    );
    let rows = admin.query("SHOW POOLS", &[]).await.expect("pools");
    let paused: Vec<(String, i32)> = rows
        .iter()
        .map(|r| (r.get::<_, String>("database"), r.get::<_, i32>("paused")))
        .collect();
    let acme_row = rows
        .iter()
        .find(|r| r.get::<_, &str>("database") == "acme")
        .expect("acme's pool");
    assert_eq!(acme_row.get::<_, i32>("cl_waiting"), 1);
    assert_eq!(acme_row.get::<_, i32>("cl_active"), 0);
    let waited = i64::from(acme_row.get::<_, i32>("maxwait")) * 1_000_000
        + i64::from(acme_row.get::<_, i32>("maxwait_us"));
    assert!(
        waited >= 150_000,
        "acme's client has waited at least the 200 ms slept: {waited} µs"
    );
    assert!(
        paused.contains(&("acme".into(), 1)) && paused.contains(&("globex".into(), 0)),
        "{paused:?}"
    );
    admin.simple_query("RESUME acme").await.expect("resume");
    let (acme, r) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("released by RESUME")
        .expect("task");
    r.expect("acme's transaction ran");
    // KILL acme: acme's client is gone, globex's stays.
    admin.simple_query("KILL acme").await.expect("kill");
    let gone = wait_until(Duration::from_secs(5), || async { acme.is_closed() }).await;
    assert!(gone, "acme's client was disconnected");
    globex
        .simple_query("SELECT 1")
        .await
        .expect("globex untouched");
    let e = admin
        .simple_query("KILL nobody")
        .await
        .expect_err("unknown tenant");
    assert_eq!(sqlstate(&e).0, "3D000");
    // KILL_CLIENT: one globex client goes, the other stays.
    let victim = connect(
        &proxy,
        "user=app.globex password=s3cret dbname=cs_app application_name=victim",
    )
    .await
    .expect("victim");
    victim.simple_query("SELECT 1").await.expect("victim works");
    let id: i64 = admin
        .query("SHOW CLIENTS", &[])
        .await
        .expect("clients")
        .iter()
        .find(|r| r.get::<_, &str>("application_name") == "victim")
        .map(|r| r.get("id"))
        .expect("the victim's row");
    admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .expect("kill_client");
    let gone = wait_until(Duration::from_secs(5), || async { victim.is_closed() }).await;
    assert!(gone, "the victim was disconnected");
    globex
        .simple_query("SELECT 1")
        .await
        .expect("globex untouched");
    // RECONNECT + WAIT_CLOSE: globex gets a fresh server connection.
    let before = scalar(&globex, "SELECT pg_backend_pid()::text").await;
    admin
        .simple_query("RECONNECT globex")
        .await
        .expect("reconnect");
    admin
        .simple_query("WAIT_CLOSE globex")
        .await
        .expect("wait_close");
    let after = scalar(&globex, "SELECT pg_backend_pid()::text").await;
    assert_ne!(before, after, "a new server connection after RECONNECT");
    let gone = wait_until(Duration::from_secs(5), || async {
        scalar(
            &direct("cs_app").await,
            &format!("SELECT count(*)::text FROM pg_stat_activity WHERE pid = {before}"),
        )
        .await
            == "0"
    })
    .await;
    assert!(gone, "the old server connection was closed");
    // MIGRATE acme answers with acme's summary row.
    let rows = admin.query("MIGRATE acme", &[]).await.expect("migrate");
    let targets: Vec<&str> = rows.iter().map(|r| r.get::<_, &str>("target")).collect();
    assert_eq!(targets, vec!["acme"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn debians_pgbouncer_exporter_reads_the_console() {
    let exporter = "/usr/bin/prometheus-pgbouncer-exporter";
    assert!(
        std::path::Path::new(exporter).exists(),
        "{exporter} missing: run ./scripts/test.sh, which installs prometheus-pgbouncer-exporter"
    );
    let proxy = start().await;
    for key in ["acme", "globex"] {
        tenant(&proxy, key)
            .await
            .simple_query("SELECT 1")
            .await
            .expect("tenant works");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(exporter)
        .args(["--pgbouncer-host", "127.0.0.1", "--pgbouncer-port"])
        .arg(proxy.addr.port().to_string())
        .args(["--pgbouncer-user", "admin", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .env("PGPASSWORD", "adm1n")
        .env("PGSSLMODE", "disable")
        .env_remove("HOST")
        .env_remove("PORT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the exporter");
    let mut body = String::new();
    let mut scraped = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !scraped && std::time::Instant::now() < deadline {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        if s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .is_err()
        {
            continue;
        }
        body.clear();
        let _ = s.read_to_string(&mut body).await;
        scraped = body.contains("pgbouncer_active_clients");
    }
    let _ = child.start_kill();
    let stderr = child
        .wait_with_output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    assert!(scraped, "the exporter never answered: {body}\n{stderr}");
    for key in ["acme", "globex"] {
        assert!(
            body.lines().any(|l| l.starts_with(&format!(
                "pgbouncer_active_clients{{database=\"{key}\",user=\"postgres\"}}"
            ))),
            "{key}'s pool: {body}"
        );
    }
    assert!(!stderr.contains("Traceback"), "{stderr}");
    proxy.shutdown().await;
}
