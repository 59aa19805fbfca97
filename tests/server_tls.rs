//! pgtenant to its servers over TLS (SPEC §5, issue 12 acceptance 4): a
//! server that takes its login role only over TLS with SCRAM
//! (`hostssl ... scram-sha-256`, plaintext rejected) is reached with
//! `sslmode = "verify-full"` against a CA made in the test, by the relay's
//! links and by pgtenant's own (admin) connections; a wrong CA or plaintext
//! fails with a clear reason.

mod common;

use common::tls::{test_ca, TestCa, CLIENT_CN};
use common::*;
use std::time::Duration;

const ROLE: &str = "st_user";
const PASSWORD: &str = "tls only pw";

/// The CA whose certificate this binary's cluster serves, set up once.
async fn server_ca() -> &'static TestCa {
    static CA: tokio::sync::OnceCell<TestCa> = tokio::sync::OnceCell::const_new();
    CA.get_or_init(|| async {
        let ca = test_ca("server");
        tls_only_server(&ca).await;
        ca
    })
    .await
}

/// Turns TLS on in this binary's cluster with `ca`'s server certificate and
/// lets [`ROLE`] in only over TLS with SCRAM (fixture set-up, as superuser).
async fn tls_only_server(ca: &TestCa) {
    let c = cluster();
    let data = c.data_dir();
    let owner = std::fs::metadata(&data).expect("data dir");
    for (from, to) in [
        (&ca.cert, "server.crt"),
        (&ca.key, "server.key"),
        (&ca.ca, "root.crt"),
    ] {
        let dest = data.join(to);
        std::fs::copy(from, &dest).expect("copy into the data directory");
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).expect("mode");
        std::os::unix::fs::chown(&dest, Some(owner.uid()), Some(owner.gid())).expect("owner");
    }
    tenant_fixture_with(
        "st_app",
        &[("t_acme", "Acme")],
        &format!(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                 CREATE ROLE {ROLE} LOGIN; END IF; END$$;
             SET password_encryption = 'scram-sha-256';
             ALTER ROLE {ROLE} PASSWORD '{PASSWORD}';
             GRANT USAGE ON SCHEMA t_acme TO {ROLE};
             GRANT SELECT ON t_acme.customers TO {ROLE};
             DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{CLIENT_CN}') THEN
                 CREATE ROLE {CLIENT_CN} LOGIN; END IF; END$$;
             GRANT USAGE ON SCHEMA t_acme TO {CLIENT_CN};
             GRANT SELECT ON t_acme.customers TO {CLIENT_CN};"
        ),
    )
    .await;
    // ALTER SYSTEM runs alone (not in a transaction block).
    for sql in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        // Client certificates signed by the test CA are accepted.
        "ALTER SYSTEM SET ssl_ca_file = 'root.crt'",
    ] {
        admin_sql("postgres", sql).await;
    }
    c.set_hba(&format!(
        "hostssl all {ROLE} 127.0.0.1/32 scram-sha-256\nhostnossl all {ROLE} 127.0.0.1/32 reject\n\
         hostssl all {CLIENT_CN} 127.0.0.1/32 cert\nhostnossl all {CLIENT_CN} 127.0.0.1/32 reject"
    ))
    .expect("pg_hba.conf");
    let admin = direct("postgres").await;
    let on = wait_until(Duration::from_secs(10), || async {
        scalar(&admin, "SHOW ssl").await == "on"
    })
    .await;
    assert!(on, "the server took ssl = on");
}

fn config(sslmode: &str, ca_file: &std::path::Path) -> String {
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
host = "127.0.0.1"
port = {{PG_PORT}}
database = "st_app"
user = "{ROLE}"
password = "{PASSWORD}"
admin_user = "{ROLE}"
admin_password = "{PASSWORD}"
sslmode = "{sslmode}"
ca_file = "{ca}"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
schema = "t_acme"
"#,
        ca = ca_file.display()
    )
}

#[tokio::test]
async fn verify_full_and_scram_reach_a_tls_only_server() {
    let ca = server_ca().await;

    // The relay's links: encrypted, checked against the CA and the host.
    let proxy = start_proxy(&config("verify-full", &ca.ca)).await;
    let c = connect(&proxy, "user=app.acme dbname=st_app")
        .await
        .expect("client");
    assert_eq!(column(&c, "SELECT name FROM customers").await, vec!["Acme"]);
    assert_eq!(
        scalar(
            &c,
            "SELECT ssl::text || ' ' || version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await,
        "true TLSv1.3"
    );
    // A cancel reaches the server the way its connections do, over TLS.
    let cancel = c.cancel_token();
    let sleeping = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(20)").await });
    let admin = direct("postgres").await;
    let asleep = wait_until(Duration::from_secs(5), || async {
        column(
            &admin,
            "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)'",
        )
        .await
        .len()
            == 1
    })
    .await;
    assert!(asleep, "the query runs");
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request");
    let e = tokio::time::timeout(Duration::from_secs(5), sleeping)
        .await
        .expect("cancelled in time")
        .expect("task")
        .expect_err("cancelled");
    assert_eq!(
        sqlstate(&e),
        (
            "57014".into(),
            "canceling statement due to user request".into()
        )
    );
    proxy.shutdown().await;

    // pgtenant's own connections (catalog, provisioning, migrations).
    let cfg = pgtenant::config::parse_str(
        &config("verify-full", &ca.ca).replace("{PG_PORT}", &pg_port().to_string()),
        "test",
    )
    .expect("config");
    let admin = pgtenant::catalog::connect(
        &pgtenant::catalog::admin_config(&cfg, "main", "st_app").expect("admin config"),
    )
    .await
    .expect("admin connection over TLS");
    assert_eq!(
        scalar(
            &admin,
            "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await,
        "true"
    );
}

#[tokio::test]
async fn a_wrong_ca_or_plaintext_fails_with_the_reason() {
    let ca = server_ca().await;
    let other = test_ca("server-other");
    let target = |sslmode: &str, ca_file: &std::path::Path| {
        let cfg = pgtenant::config::parse_str(
            &config(sslmode, ca_file).replace("{PG_PORT}", &pg_port().to_string()),
            "test",
        )
        .expect("config");
        pgtenant::tenant::Tenant::all_from_config(&cfg)
            .into_iter()
            .next()
            .expect("tenant")
            .target
            .clone()
    };
    let open = |t: pgtenant::tenant::Target| async move {
        pgtenant::backend::ServerConn::connect(&t, "pgtenant/test", Duration::from_secs(5), 10)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(open(target("verify-full", &ca.ca)).await, Ok(()));
    assert_eq!(
        open(target("verify-full", &other.ca)).await,
        Err("server main: TLS: TLS handshake: invalid peer certificate: UnknownIssuer".into())
    );
    assert_eq!(
        open(target("disable", &ca.ca)).await,
        Err(format!(
            "server main refused login: pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{ROLE}\", database \"st_app\", no encryption (SQLSTATE 28000)"
        ))
    );
    // A client of a tenant on such a server gets the generic refusal; the
    // reason is in pgtenant's log.
    let proxy = start_proxy(&config("verify-full", &other.ca)).await;
    let e = connect(&proxy, "user=app.acme dbname=st_app")
        .await
        .expect_err("no server connection at login");
    assert_eq!(
        sqlstate(&e),
        (
            "08006".into(),
            "pgtenant could not open a server connection for this tenant".into()
        )
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_logs_in_where_the_server_asks_for_one() {
    let ca = server_ca().await;
    let text = format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
host = "127.0.0.1"
port = {{PG_PORT}}
database = "st_app"
user = "{CLIENT_CN}"
sslmode = "verify-full"
ca_file = "{ca}"
client_cert_file = "{cert}"
client_key_file = "{key}"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
schema = "t_acme"
"#,
        ca = ca.ca.display(),
        cert = ca.client_cert.display(),
        key = ca.client_key.display(),
    );
    let proxy = start_proxy(&text).await;
    let c = connect(&proxy, "user=app.acme dbname=st_app")
        .await
        .expect("client");
    assert_eq!(
        scalar(
            &c,
            "SELECT current_user || ' ' || client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await,
        format!("{CLIENT_CN} /CN={CLIENT_CN}")
    );
    proxy.shutdown().await;
    // Without the certificate, the server says why.
    let cfg = pgtenant::config::parse_str(
        &text
            .replace("{PG_PORT}", &pg_port().to_string())
            .replace("client_cert_file", "# client_cert_file")
            .replace("client_key_file", "# client_key_file"),
        "test",
    )
    .expect("config");
    let t = pgtenant::tenant::Tenant::all_from_config(&cfg)
        .into_iter()
        .next()
        .expect("tenant");
    let e = pgtenant::backend::ServerConn::connect(&t.target, "t", Duration::from_secs(5), 10)
        .await
        .map(|_| ())
        .expect_err("no certificate");
    assert_eq!(
        e.to_string(),
        "server main refused login: connection requires a valid client certificate (SQLSTATE 28000)"
    );
}

#[tokio::test]
async fn idle_tls_links_are_reused_and_a_killed_one_is_not_lent_out() {
    let ca = server_ca().await;
    let proxy = start_proxy(&config("verify-full", &ca.ca)).await;
    let c = connect(&proxy, "user=app.acme dbname=st_app")
        .await
        .expect("client");
    let pid = scalar(&c, "SELECT pg_backend_pid()::text").await;
    // A healthy idle link passes the check (nothing to read inside TLS).
    for _ in 0..3 {
        assert_eq!(scalar(&c, "SELECT pg_backend_pid()::text").await, pid);
    }
    // Its backend is killed while idle: the FATAL comes over TLS.
    admin_sql("postgres", &format!("SELECT pg_terminate_backend({pid})")).await;
    let admin = direct("postgres").await;
    let gone = wait_until(Duration::from_secs(5), || async {
        column(
            &admin,
            &format!("SELECT 1 FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .await
        .is_empty()
    })
    .await;
    assert!(gone, "the backend exited");
    let next = scalar(&c, "SELECT pg_backend_pid()::text").await;
    assert_ne!(next, pid, "a fresh link, not the killed one");
    proxy.shutdown().await;
}
