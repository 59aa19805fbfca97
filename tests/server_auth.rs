//! pgtenant logging in to PostgreSQL with each method the server may ask for:
//! SCRAM-SHA-256, md5, cleartext password, trust; and a clear client error when
//! the server refuses.

mod common;

use common::*;

const CONFIG: &str = r#"
[auth]
method = "trust"
users = [{ name = "app" }]

[servers.main]
port = {PG_PORT}
database = "sa_app"
user = "postgres"

[[tenants]]
key = "scram"
mode = "schema"
server = "main"
schema = "t_scram"
role = "pgt_scram"
role_password = "scram pw"

[[tenants]]
key = "md5"
mode = "schema"
server = "main"
schema = "t_md5"
role = "pgt_md5"
role_password_env = "PGTENANT_TEST_MD5_PASSWORD"

[[tenants]]
key = "plain"
mode = "schema"
server = "main"
schema = "t_plain"
role = "pgt_plain"
role_password = "plain pw"

[[tenants]]
key = "wrongpw"
mode = "schema"
server = "main"
schema = "t_scram"
role = "pgt_scram"
role_password = "not it"
"#;

#[tokio::test]
async fn every_server_auth_method_logs_in() {
    tenant_fixture(
        "sa_app",
        &[("t_scram", "Scram"), ("t_md5", "Md5"), ("t_plain", "Plain")],
    )
    .await;
    admin_sql(
        "sa_app",
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE pgt_scram LOGIN PASSWORD 'scram pw';
         CREATE ROLE pgt_plain LOGIN PASSWORD 'plain pw';
         SET password_encryption = 'md5';
         CREATE ROLE pgt_md5 LOGIN PASSWORD 'md5 pw';
         GRANT USAGE ON SCHEMA t_scram TO pgt_scram; GRANT SELECT ON t_scram.customers TO pgt_scram;
         GRANT USAGE ON SCHEMA t_md5 TO pgt_md5; GRANT SELECT ON t_md5.customers TO pgt_md5;
         GRANT USAGE ON SCHEMA t_plain TO pgt_plain; GRANT SELECT ON t_plain.customers TO pgt_plain;",
    )
    .await;
    cluster()
        .set_hba(
            "host all pgt_scram 127.0.0.1/32 scram-sha-256\n\
             host all pgt_md5 127.0.0.1/32 md5\n\
             host all pgt_plain 127.0.0.1/32 password",
        )
        .expect("pg_hba");
    // SAFETY: the only test in this binary that reads the variable.
    unsafe { std::env::set_var("PGTENANT_TEST_MD5_PASSWORD", "md5 pw") };
    let proxy = start_proxy(CONFIG).await;
    for (tenant, role, owner) in [
        ("scram", "pgt_scram", "Scram"),
        ("md5", "pgt_md5", "Md5"),
        ("plain", "pgt_plain", "Plain"),
    ] {
        let c = connect(&proxy, &format!("user=app.{tenant} dbname=sa_app"))
            .await
            .expect(tenant);
        assert_eq!(scalar(&c, "SELECT current_user").await, role);
        assert_eq!(scalar(&c, "SELECT name FROM customers").await, owner);
    }
    // Each role sees only what was granted to it: Postgres enforces the boundary.
    let c = connect(&proxy, "user=app.md5 dbname=sa_app")
        .await
        .expect("md5");
    let err = c
        .simple_query("SELECT name FROM t_scram.customers")
        .await
        .expect_err("not granted");
    assert_eq!(sqlstate(&err).0, "42501");
    // A wrong server password is the operator's problem: the client gets a clear
    // error without the server's details, at login.
    let err = connect(&proxy, "user=app.wrongpw dbname=sa_app")
        .await
        .expect_err("server refuses");
    let (code, msg) = sqlstate(&err);
    assert_eq!(code, "08006", "{msg}");
    assert!(msg.contains("could not open a server connection"), "{msg}");
}
