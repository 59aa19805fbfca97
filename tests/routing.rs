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
async fn methods_naming_different_tenants_are_refused_with_one_fatal_naming_both() {
    fixtures().await;
    let proxy = start_proxy(CONFIG).await;
    let e = RawConn::connect(
        proxy.addr,
        &[("user", "app.globex"), ("tenant", "initech")],
        "s3cret",
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(
        e,
        (
            "28000".into(),
            "the connection names two tenants: \"initech\" (startup parameter \"tenant\") and \"globex\" (username suffix)".into()
        )
    );
    let Err(e) = connect(
        &proxy,
        "user=app.globex password=s3cret dbname=rt_app options='-c tenant=initech'",
    )
    .await
    else {
        panic!("refused");
    };
    let (code, msg) = sqlstate(&e);
    assert_eq!(code, "28000");
    assert!(
        msg.contains("\"initech\"") && msg.contains("\"globex\""),
        "{msg}"
    );
    // Methods that agree are fine; the database name is only a fallback.
    let ok = connect(
        &proxy,
        "user=app.initech password=s3cret dbname=globex options='-ctenant=initech'",
    )
    .await
    .expect("agreeing methods");
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
    let mut seen = Vec::new();
    for (user, password) in [("app.acme", "wrong"), ("mallory.acme", "s3cret")] {
        let mut codes = Vec::new();
        let e = RawConn::connect_hooked(
            proxy.addr,
            &[("user", user), ("database", "rt_app")],
            password,
            async {},
            &mut codes,
        )
        .await
        .err()
        .expect("refused");
        let name = user.split('.').next().unwrap_or_default();
        seen.push((
            codes,
            e.0,
            e.1.replace(&format!("\"{name}\""), "\"<user>\""),
        ));
    }
    // The same SCRAM exchange (SASL, SASL continue) and the same answer.
    assert_eq!(
        seen[0],
        (
            vec![10, 11],
            "28P01".into(),
            "password authentication failed for user \"<user>\"".into()
        )
    );
    assert_eq!(seen[0], seen[1]);
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
