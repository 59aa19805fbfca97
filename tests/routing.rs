//! Tenant routing (SPEC §2): every resolution method lands in the right schema or
//! database; refused tenants never reach a server; client authentication.

mod common;

use common::raw::RawConn;
use common::*;

const CONFIG: &str = r#"
[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "s3cret" }]

[servers.main]
port = {PG_PORT}
database = "rt_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"

[[tenants]]
key = "initech"
mode = "schema"
server = "main"
schema = "t_initech"

[[tenants]]
key = "globex"
mode = "database"
server = "main"
database = "rt_globex"

[[tenants]]
key = "sleepy"
mode = "schema"
server = "main"
status = "suspended"

[[tenants]]
key = "gone"
mode = "schema"
server = "main"
status = "cancelled"

[[tenants]]
key = "trialco"
mode = "schema"
server = "main"
schema = "t_acme"
status = "trial"
"#;

async fn fixtures() {
    tenant_fixture("rt_app", &[("t_acme", "Acme"), ("t_initech", "Initech")]).await;
    tenant_fixture("rt_globex", &[("public", "Globex")]).await;
}

const TENANTS: [(&str, &str); 3] = [
    ("acme", "Acme"),
    ("initech", "Initech"),
    ("globex", "Globex"),
];

#[tokio::test]
async fn each_resolution_method_routes_to_the_tenants_own_rows() {
    fixtures().await;
    let proxy = start_proxy(CONFIG).await;
    for (key, owner) in TENANTS {
        let by_suffix = connect(
            &proxy,
            &format!("user=app.{key} password=s3cret dbname=rt_app"),
        )
        .await
        .expect("suffix");
        let by_options = connect(
            &proxy,
            &format!("user=app password=s3cret dbname=rt_app options='-c tenant={key}'"),
        )
        .await
        .expect("options");
        let by_database = connect(&proxy, &format!("user=app password=s3cret dbname={key}"))
            .await
            .expect("database name");
        for (how, client) in [
            ("suffix", &by_suffix),
            ("options", &by_options),
            ("database", &by_database),
        ] {
            assert_eq!(
                column(client, "SELECT name FROM customers").await,
                vec![owner.to_owned()],
                "{key} by {how}"
            );
        }
        let mut raw = RawConn::connect(
            proxy.addr,
            &[("user", "app"), ("database", "rt_app"), ("tenant", key)],
            "s3cret",
        )
        .await
        .expect("startup parameter");
        assert_eq!(
            raw.simple("SELECT name FROM customers")
                .await
                .expect("query"),
            vec![owner.to_owned()],
            "{key} by tenant parameter"
        );
    }
    // Trial tenants are served like active ones.
    let trial = connect(&proxy, "user=app.trialco password=s3cret dbname=x")
        .await
        .expect("trial");
    assert_eq!(
        column(&trial, "SELECT name FROM customers").await,
        vec!["Acme"]
    );
}

#[tokio::test]
async fn the_startup_parameter_wins_over_the_username_suffix() {
    fixtures().await;
    let proxy = start_proxy(CONFIG).await;
    let mut raw = RawConn::connect(
        proxy.addr,
        &[("user", "app.globex"), ("tenant", "initech")],
        "s3cret",
    )
    .await
    .err();
    // user "app.globex" is not a configured user when the tenant comes from the
    // parameter: the suffix is only stripped when it names the tenant.
    assert_eq!(raw.take().map(|e| e.0), Some("28P01".into()));
    let client = connect(
        &proxy,
        "user=app.globex password=s3cret dbname=rt_app options='-c tenant=initech'",
    )
    .await
    .err();
    assert!(
        client.is_some(),
        "suffix is kept as part of the user name when options name the tenant"
    );
    let ok = connect(
        &proxy,
        "user=app password=s3cret dbname=globex options='-ctenant=initech'",
    )
    .await
    .expect("options beat database");
    assert_eq!(
        column(&ok, "SELECT name FROM customers").await,
        vec!["Initech"]
    );
}

#[tokio::test]
async fn refused_tenants_get_distinct_errors_and_never_reach_a_server() {
    fixtures().await;
    let proxy = start_proxy(CONFIG).await;
    let cases = [
        (
            "user=app password=s3cret dbname=rt_app",
            "28000",
            "no tenant given",
        ),
        (
            "user=app.nope password=s3cret dbname=rt_app",
            "3D000",
            "tenant \"nope\" does not exist",
        ),
        (
            "user=app.sleepy password=s3cret dbname=rt_app",
            "08004",
            "tenant \"sleepy\" is suspended",
        ),
        (
            "user=app.gone password=s3cret dbname=rt_app",
            "55000",
            "tenant \"gone\" is cancelled",
        ),
    ];
    for (conn, code, message) in cases {
        let err = connect(&proxy, conn).await.expect_err(conn);
        let (got_code, got_message) = sqlstate(&err);
        assert_eq!(got_code, code, "{conn}: {got_message}");
        assert!(got_message.contains(message), "{conn}: {got_message}");
    }
    // No pool was even created for them, and PostgreSQL never saw a connection.
    let pools: Vec<String> = proxy
        .proxy
        .pools
        .pools()
        .iter()
        .map(|p| p.key.clone())
        .collect();
    assert!(pools.is_empty(), "pools created: {pools:?}");
    let admin = direct("postgres").await;
    for t in ["nope", "sleepy", "gone"] {
        assert_eq!(server_links(&admin, t).await, 0);
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_refused_alike() {
    fixtures().await;
    let proxy = start_proxy(CONFIG).await;
    for conn in [
        "user=app.acme password=wrong dbname=rt_app",
        "user=mallory.acme password=s3cret dbname=rt_app",
    ] {
        let (code, msg) = sqlstate(&connect(&proxy, conn).await.expect_err(conn));
        assert_eq!(code, "28P01", "{conn}: {msg}");
        assert!(msg.contains("password authentication failed"), "{msg}");
    }
}

#[tokio::test]
async fn md5_and_trust_methods() {
    fixtures().await;
    let md5 = start_proxy(&CONFIG.replace("scram-sha-256", "md5")).await;
    let c = connect(&md5, "user=app.acme password=s3cret dbname=rt_app")
        .await
        .expect("md5 login");
    assert_eq!(column(&c, "SELECT name FROM customers").await, vec!["Acme"]);
    let bad = connect(&md5, "user=app.acme password=nope dbname=rt_app")
        .await
        .expect_err("bad md5");
    assert_eq!(sqlstate(&bad).0, "28P01");
    let trust = start_proxy(&CONFIG.replace("scram-sha-256", "trust")).await;
    let c = connect(&trust, "user=app.initech dbname=rt_app")
        .await
        .expect("trust login");
    assert_eq!(
        column(&c, "SELECT name FROM customers").await,
        vec!["Initech"]
    );
}

#[tokio::test]
async fn psql_connects_through_pgtenant() {
    fixtures().await;
    let proxy = start_proxy(CONFIG).await;
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app.globex dbname=rt_app",
            proxy.addr.port()
        ))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT name FROM customers",
            "-c",
            "SHOW search_path",
        ])
        .env("PGPASSWORD", "s3cret")
        .output()
        .await
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().next(), Some("Globex"), "{stdout}");
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=app.acme dbname=rt_app",
            proxy.addr.port()
        ))
        .args(["-X", "-A", "-t", "-c", "SHOW search_path"])
        .env("PGPASSWORD", "s3cret")
        .output()
        .await
        .expect("run psql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"t_acme\", public"
    );
}
