//! Server connections over a Unix-domain socket (SPEC §10, `host =
//! "/var/run/postgresql"` style): queries, link reuse between transactions
//! (the idle check on a Unix socket), cancel requests, and /readyz-style
//! reachability all go through the socket file, never TCP.

mod common;

use common::*;
use std::time::Duration;

fn config() -> String {
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
host = "{}"
port = {{PG_PORT}}
database = "ux_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
pool_size = 1
"#,
        cluster().dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_cancels_over_a_unix_socket() {
    tenant_fixture("ux_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(&config()).await;
    let c = connect(&proxy, "user=app.acme dbname=ux_app")
        .await
        .expect("acme");
    assert_eq!(scalar(&c, "SELECT name FROM customers").await, "Acme");
    // The server sees a Unix-socket client (no address), on one link reused
    // across transactions.
    let first = scalar(
        &c,
        "SELECT pg_backend_pid()::text || ' ' || coalesce(inet_client_addr()::text, 'local')",
    )
    .await;
    assert!(first.ends_with(" local"), "{first}");
    for _ in 0..5 {
        let again = scalar(
            &c,
            "SELECT pg_backend_pid()::text || ' ' || coalesce(inet_client_addr()::text, 'local')",
        )
        .await;
        assert_eq!(again, first, "the idle link is reused");
    }
    // A cancel request reaches the backend through the socket too.
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
    let direct = direct("ux_app").await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            scalar(&direct, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'").await == "1"
        })
        .await,
        "the sleep runs"
    );
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled in time")
        .expect("joined")
        .expect_err("cancelled");
    assert_eq!(sqlstate(&err).0, "57014");
    proxy.shutdown().await;
}

/// `[proxy] unix_socket_dir`: clients connect over a socket file, as to
/// PostgreSQL with `host=/dir`; only `local` rules apply to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_over_a_unix_socket_under_local_rules() {
    tenant_fixture("ux_app", &[("t_acme", "Acme")]).await;
    let dir = scratch("ux");
    std::fs::create_dir_all(&dir).expect("socket dir");
    let cfg = format!(
        r#"
[proxy]
unix_socket_dir = "{dir}"
unix_socket_mode = 0o770

[auth]
method = "trust"
users = [{{ name = "app", password = "s3cret" }}]

[[auth.rules]]
type = "local"
method = "trust"

[[auth.rules]]
type = "host"
method = "scram-sha-256"

[servers.main]
port = {{PG_PORT}}
database = "ux_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
"#,
        dir = dir.display()
    );
    // On a port known in advance, with a socket file left there by a
    // process that is gone: it is replaced.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    drop(
        std::os::unix::net::UnixListener::bind(dir.join(format!(".s.PGSQL.{port}")))
            .expect("stale socket"),
    );
    let text = cfg.replace("{PG_PORT}", &pg_port().to_string());
    let mut config = pgtenant::config::parse_str(&text, "test config").expect("valid config");
    config.proxy.listen = format!("127.0.0.1:{port}");
    let proxy = pgtenant::app::Running::start(config)
        .await
        .expect("start over a stale socket file");
    let path = proxy.unix_socket.clone().expect("unix socket bound");
    assert_eq!(
        path,
        dir.join(format!(".s.PGSQL.{}", proxy.addr.port())),
        "named as PostgreSQL names its socket"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path)
            .expect("socket file")
            .permissions()
            .mode()
            & 0o777,
        0o770
    );
    let local = format!(
        "host={} port={} user=app.acme dbname=ux_app",
        dir.display(),
        proxy.addr.port()
    );
    let (c, conn) = tokio_postgres::connect(&local, tokio_postgres::NoTls)
        .await
        .expect("trusted over the socket (a local rule)");
    tokio::spawn(conn);
    assert_eq!(scalar(&c, "SELECT name FROM customers").await, "Acme");
    // Over TCP the host rule asks for the password.
    let err = connect(&proxy, "user=app.acme dbname=ux_app password=wrong")
        .await
        .expect_err("wrong password over TCP");
    assert_eq!(sqlstate(&err).0, "28P01");
    connect(&proxy, "user=app.acme dbname=ux_app password=s3cret")
        .await
        .expect("right password over TCP");
    // psql, as users run it.
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-At", "-h"])
        .arg(&dir)
        .args([
            "-p",
            &proxy.addr.port().to_string(),
            "-U",
            "app.acme",
            "-d",
            "ux_app",
            "-c",
            "SELECT name FROM customers",
        ])
        .output()
        .await
        .expect("psql runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Acme",
        "{out:?}"
    );
    drop(c);
    proxy.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
