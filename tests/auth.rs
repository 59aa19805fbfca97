//! Client authentication beyond `[auth] users` (SPEC §5, issue 12
//! acceptance 5): users looked up on the tenant's server with `auth_query`
//! (an expired role and a wrong password fail exactly like an unknown user),
//! and `[[auth.rules]]` choosing the method per address, user and tenant.

mod common;

use common::raw::RawConn;
use common::*;

/// The lookup a superuser installs once: a SECURITY DEFINER function over
/// pg_authid that the auth user may call (fixture set-up).
const LOOKUP: &str = "
CREATE SCHEMA IF NOT EXISTS pgtenant_auth;
CREATE OR REPLACE FUNCTION pgtenant_auth.lookup(name text)
    RETURNS TABLE (rolname text, rolpassword text, rolvaliduntil timestamptz)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        SELECT rolname::text, rolpassword, rolvaliduntil FROM pg_catalog.pg_authid
         WHERE rolname = name AND rolcanlogin
    $$;
REVOKE ALL ON FUNCTION pgtenant_auth.lookup(text) FROM PUBLIC;
DO $$BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'au_lookup') THEN
        CREATE ROLE au_lookup LOGIN PASSWORD 'lookup pw';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'carol') THEN
        CREATE ROLE carol LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dave') THEN
        CREATE ROLE dave LOGIN;
    END IF;
END$$;
GRANT USAGE ON SCHEMA pgtenant_auth TO au_lookup;
GRANT EXECUTE ON FUNCTION pgtenant_auth.lookup(text) TO au_lookup;
SET password_encryption = 'scram-sha-256';
ALTER ROLE carol PASSWORD 'carol pw' VALID UNTIL 'infinity';
ALTER ROLE dave PASSWORD 'dave pw' VALID UNTIL '2001-01-01';
";

const CONFIG: &str = r#"
[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "s3cret" }]
auth_query = "SELECT rolname, rolpassword, rolvaliduntil FROM pgtenant_auth.lookup($1)"
auth_user = "au_lookup"
auth_password = "lookup pw"
auth_query_ttl = "1s"

[servers.main]
port = {PG_PORT}
database = "au_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
schema = "t_acme"

[[tenants]]
key = "dbt"
mode = "database"
server = "main"
database = "au_dbt"
"#;

/// Logs in over the raw protocol; the auth requests seen and the outcome.
async fn login(
    proxy: &pgtenant::app::Running,
    user: &str,
    password: &str,
) -> (Vec<i32>, Result<(), (String, String)>) {
    let mut codes = Vec::new();
    let r = RawConn::connect_hooked(
        proxy.addr,
        &[("user", user), ("database", "au_app")],
        password,
        async {},
        &mut codes,
    )
    .await
    .map(|_| ());
    (codes, r)
}

#[tokio::test]
async fn auth_query_users_log_in_and_expired_wrong_and_unknown_fail_alike() {
    let _one = LOOKUPS.lock().await;
    tenant_fixture_with("au_app", &[("t_acme", "Acme")], LOOKUP).await;
    let proxy = start_proxy(CONFIG).await;

    // carol exists only on the server.
    let c = connect(&proxy, "user=carol.acme password='carol pw' dbname=au_app")
        .await
        .expect("carol from auth_query");
    assert_eq!(column(&c, "SELECT name FROM customers").await, vec!["Acme"]);
    assert_eq!(
        login(&proxy, "carol.acme", "carol pw").await,
        (vec![10, 11, 12, 0], Ok(()))
    );

    // Expired, wrong password and unknown: the same requests, the same end.
    let refused = |user: &str| {
        (
            vec![10, 11],
            Err((
                "28P01".to_owned(),
                format!("password authentication failed for user \"{user}\""),
            )),
        )
    };
    assert_eq!(login(&proxy, "dave.acme", "dave pw").await, refused("dave"));
    assert_eq!(login(&proxy, "carol.acme", "guess").await, refused("carol"));
    assert_eq!(
        login(&proxy, "nobody.acme", "guess").await,
        refused("nobody")
    );
    // The name is a bound parameter, never query text.
    assert_eq!(
        login(&proxy, "x') OR true --.acme", "guess").await,
        refused("x') OR true --")
    );

    // A database tenant owns its database: a lookup function planted there
    // is never what pgtenant asks (it asks in the server's database).
    tenant_fixture_with(
        "au_dbt",
        &[],
        "CREATE SCHEMA IF NOT EXISTS pgtenant_auth;
         CREATE OR REPLACE FUNCTION pgtenant_auth.lookup(name text)
             RETURNS TABLE (rolname text, rolpassword text, rolvaliduntil timestamptz)
             LANGUAGE sql AS $$ SELECT name, 'planted', NULL::timestamptz $$;
         GRANT USAGE ON SCHEMA pgtenant_auth TO PUBLIC;",
    )
    .await;
    assert_eq!(
        login(&proxy, "mallory.dbt", "planted").await,
        refused("mallory")
    );
    // A name longer than any role is unknown without a lookup.
    let long = "n".repeat(200);
    assert_eq!(
        login(&proxy, &format!("{long}.acme"), "guess").await,
        refused(&long)
    );

    // The answer is kept for auth_query_ttl, then asked again: a role made
    // valid again logs in once the cached "expired" has aged out.
    admin_sql("au_app", "ALTER ROLE dave VALID UNTIL 'infinity'").await;
    let renewed = wait_until(std::time::Duration::from_secs(5), || async {
        login(&proxy, "dave.acme", "dave pw").await.1.is_ok()
    })
    .await;
    assert!(renewed, "dave logs in after the TTL");
    admin_sql("au_app", "ALTER ROLE dave VALID UNTIL '2001-01-01'").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_lookup_runs_with_a_pinned_search_path() {
    let _one = LOOKUPS.lock().await;
    tenant_fixture_with(
        "au_app",
        &[("t_acme", "Acme")],
        &format!("{LOOKUP} ALTER ROLE au_lookup SET search_path = evil, public;"),
    )
    .await;
    // A query that answers with the search_path it ran under, as the
    // password: whatever the auth user's own default, it is the pinned one.
    let proxy = start_proxy(&CONFIG.replace(
        "SELECT rolname, rolpassword, rolvaliduntil FROM pgtenant_auth.lookup($1)",
        "SELECT $1::text, pg_catalog.current_setting('search_path'), NULL::timestamptz",
    ))
    .await;
    assert_eq!(
        login(&proxy, "zed.acme", "pg_catalog,pg_temp").await,
        (vec![10, 11, 12, 0], Ok(()))
    );
    assert_eq!(
        login(&proxy, "zed.acme", "evil, public").await.1,
        Err((
            "28P01".to_owned(),
            "password authentication failed for user \"zed\"".to_owned()
        ))
    );
    admin_sql("au_app", "ALTER ROLE au_lookup RESET search_path").await;
    proxy.shutdown().await;
}

/// The auth_query tests change the same roles.
static LOOKUPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RULES: &str = r#"
[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "s3cret" }]

[[auth.rules]]
type = "host"
tenants = ["blocked"]
method = "reject"

[[auth.rules]]
type = "hostnossl"
address = "127.0.0.1"
tenants = ["free-*"]
method = "trust"

[[auth.rules]]
type = "host"
address = "127.0.0.0/8"
users = ["app"]
tenants = ["acme"]
method = "scram-sha-256"

[servers.main]
port = {PG_PORT}
database = "au_app"
user = "postgres"

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
schema = "t_acme"

[[tenants]]
key = "free-1"
mode = "schema"
server = "main"
schema = "t_acme"

[[tenants]]
key = "blocked"
mode = "schema"
server = "main"
schema = "t_acme"

[[tenants]]
key = "other"
mode = "schema"
server = "main"
schema = "t_acme"
"#;

#[tokio::test]
async fn rules_choose_the_method_first_match_wins() {
    tenant_fixture("au_app", &[("t_acme", "Acme")]).await;
    let proxy = start_proxy(RULES).await;
    assert_eq!(
        login(&proxy, "app.acme", "s3cret").await,
        (vec![10, 11, 12, 0], Ok(()))
    );
    // trust: no password asked.
    assert_eq!(login(&proxy, "app.free-1", "").await, (vec![0], Ok(())));
    assert_eq!(
        login(&proxy, "app.blocked", "s3cret").await,
        (
            vec![],
            Err((
                "28000".into(),
                "[[auth.rules]] rejects connection for host \"127.0.0.1\", user \"app\", tenant \"blocked\", no encryption".into()
            ))
        )
    );
    assert_eq!(
        login(&proxy, "app.other", "s3cret").await,
        (
            vec![],
            Err((
                "28000".into(),
                "no [[auth.rules]] entry for host \"127.0.0.1\", user \"app\", tenant \"other\", no encryption".into()
            ))
        )
    );
    proxy.shutdown().await;
}

/// `pgtenant ARGS...` with `stdin`; (success, stdout and stderr).
async fn cli(config: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let (ok, out, err) = pgtenant_cli(config, args, stdin).await;
    (ok, format!("{out}{err}"))
}

#[tokio::test]
async fn catalog_users_log_in_to_their_tenant_only() {
    let text = catalog_config_text("au_cat_app", "au_cat_platform", "").replace(
        "method = \"trust\"\nusers = [{ name = \"app\" }]",
        "method = \"scram-sha-256\"\nusers = [{ name = \"app\", password = \"s3cret\" }]",
    );
    let cfg = catalog_config(&text);
    provision_tenant(&cfg, "cu1", pgtenant::config::TenantMode::Schema, "default").await;
    provision_tenant(&cfg, "cu2", pgtenant::config::TenantMode::Schema, "default").await;
    let path = scratch("au-cat.toml");
    std::fs::write(&path, text.replace("{PG_PORT}", &pg_port().to_string())).expect("config");
    let proxy = start_proxy(&text).await;

    let (ok, out) = cli(
        &path,
        &["tenant", "user", "add", "cu1", "alice"],
        "alice pw\n",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out, "user alice may log in to tenant cu1 (as alice.cu1)\n");
    let (ok, out) = cli(&path, &["tenant", "user", "add", "nope", "alice"], "pw\n").await;
    assert_eq!(
        (ok, out.as_str()),
        (false, "pgtenant: no tenant \"nope\" in the catalog\n")
    );
    // Only a SCRAM verifier is stored.
    let stored = column(
        &direct("au_cat_platform").await,
        "SELECT tenant || ' ' || name || ' ' || (verifier LIKE 'SCRAM-SHA-256$4096:%')::text
              || ' ' || (strpos(verifier, 'alice pw') = 0)::text FROM pgtenant.tenant_users",
    )
    .await;
    assert_eq!(stored, vec!["cu1 alice true true"]);

    let served = wait_until(std::time::Duration::from_secs(2), || async {
        login(&proxy, "alice.cu1", "alice pw").await.1.is_ok()
    })
    .await;
    assert!(served, "alice logs in to cu1 within the catalog's poll");
    let refused = |user: &str| {
        (
            vec![10, 11],
            Err((
                "28P01".to_owned(),
                format!("password authentication failed for user \"{user}\""),
            )),
        )
    };
    assert_eq!(
        login(&proxy, "alice.cu2", "alice pw").await,
        refused("alice")
    );
    assert_eq!(login(&proxy, "alice.cu1", "guess").await, refused("alice"));
    let (ok, out) = cli(&path, &["tenant", "user", "list", "cu1"], "").await;
    assert_eq!((ok, out.as_str()), (true, "alice\n"));

    let (ok, out) = cli(&path, &["tenant", "user", "remove", "cu1", "alice"], "").await;
    assert!(ok, "{out}");
    let gone = wait_until(std::time::Duration::from_secs(2), || async {
        login(&proxy, "alice.cu1", "alice pw").await == refused("alice")
    })
    .await;
    assert!(gone, "a removed user is refused within the catalog's poll");
    proxy.shutdown().await;
}
