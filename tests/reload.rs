//! RELOAD (SPEC §10): a changed quota applies to its tenant while 50 clients
//! of another run without an error; an invalid file keeps the old config and
//! the console says why.

mod common;

use common::*;

fn config(small: usize) -> String {
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}, {{ name = "admin", password = "adm1n" }}]
admin_users = ["admin"]

[servers.main]
port = {pg}
database = "rl_app"
user = "postgres"

[tiers.small]
pool_size = {small}

[[tenants]]
key = "acme"
mode = "schema"
server = "main"
tier = "small"

[[tenants]]
key = "globex"
mode = "schema"
server = "main"
"#,
        pg = pg_port()
    )
}

/// acme's quota as SHOW POOLS reports it.
async fn quota(admin: &tokio_postgres::Client) -> i32 {
    admin
        .query("SHOW POOLS", &[])
        .await
        .expect("pools")
        .iter()
        .find(|r| r.get::<_, &str>("database") == "acme")
        .map(|r| r.get::<_, i32>("quota"))
        .expect("acme's pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_resizes_one_tenant_and_refuses_a_bad_file() {
    tenant_fixture("rl_app", &[("t_acme", "Acme"), ("t_globex", "Globex")]).await;
    let path = scratch("rl.toml");
    let proxy = start_proxy_from_file(&config(2), &path).await;
    let acme = connect(&proxy, "user=app.acme dbname=rl_app")
        .await
        .expect("acme");
    acme.simple_query("SELECT 1").await.expect("acme works");
    let admin = connect(&proxy, "user=admin password=adm1n dbname=pgtenant")
        .await
        .expect("console");
    assert_eq!(quota(&admin).await, 2);
    // 50 globex clients run while acme's quota changes.
    let port = proxy.addr.port();
    let load: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let s = format!("host=127.0.0.1 port={port} user=app.globex dbname=rl_app");
                let (c, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                for _ in 0..40 {
                    c.query_one("SELECT count(*) FROM customers", &[]).await?;
                }
                Ok::<(), tokio_postgres::Error>(())
            })
        })
        .collect();
    std::fs::write(&path, config(5)).expect("new config");
    admin.simple_query("RELOAD").await.expect("reload");
    for l in load {
        l.await
            .expect("task")
            .expect("no globex client saw an error");
    }
    assert_eq!(quota(&admin).await, 5, "the new quota holds");
    // An invalid file: refused with the reason, the old config stays.
    std::fs::write(&path, "[tiers.small]\npool_size = \"many\"\n").expect("bad config");
    let e = admin.simple_query("RELOAD").await.expect_err("refused");
    let (code, message) = sqlstate(&e);
    assert_eq!(code, "F0000");
    assert!(
        message.starts_with("config reload failed; the old config stays:")
            && message.contains("pool_size"),
        "{message}"
    );
    assert_eq!(quota(&admin).await, 5);
    acme.simple_query("SELECT 1")
        .await
        .expect("acme still served");
    proxy.shutdown().await;
}

/// One schema tenant, "mover", in `schema` of `database` (trust logins for
/// `app`); `tenant_extra` is more of its `[[tenants]]` table (a tier). A tier
/// with context isolation, "shared", is there for it to move into.
fn mover_config(database: &str, schema: &str, tenant_extra: &str) -> String {
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {pg}
database = "{database}"
user = "postgres"

[tiers.shared]
isolation = "context"

[[tenants]]
key = "mover"
mode = "schema"
server = "main"
schema = "{schema}"
{tenant_extra}
"#,
        pg = pg_port()
    )
}

/// A tenant's route changes (here its schema, by RELOAD; promote and move
/// flip the catalog the same way): connected clients follow it at their
/// next transaction, with their session settings; a client holding server
/// state (a temporary table pins it) is told to reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_clients_follow_their_tenant_to_a_new_home() {
    tenant_fixture("rl_move", &[("t_old", "Old home"), ("t_new", "New home")]).await;
    let config = |schema: &str| mover_config("rl_move", schema, "");
    let path = scratch("rl-move.toml");
    let proxy = start_proxy_from_file(&config("t_old"), &path).await;
    let c = connect(&proxy, "user=app.mover dbname=rl_move")
        .await
        .expect("client");
    c.batch_execute("SET application_name = 'follower'")
        .await
        .expect("set");
    assert_eq!(
        column(&c, "SELECT name FROM customers").await,
        vec!["Old home"]
    );
    let pinned = connect(&proxy, "user=app.mover dbname=rl_move")
        .await
        .expect("pinned client");
    pinned
        .batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .expect("temp table");

    std::fs::write(&path, config("t_new")).expect("config");
    pgtenant::app::reload(&proxy.proxy).expect("reload");
    assert_eq!(
        column(&c, "SELECT name FROM customers").await,
        vec!["New home"]
    );
    assert_eq!(
        scalar(&c, "SHOW application_name").await,
        "follower",
        "its session settings came along"
    );
    let e = pinned
        .simple_query("SELECT 1")
        .await
        .expect_err("pinned to the old home");
    assert_eq!(
        sqlstate(&e),
        (
            "57P01".into(),
            "tenant \"mover\" moved to a new home while this session held server state".into()
        )
    );
    // New clients go to the new home.
    let fresh = connect(&proxy, "user=app.mover dbname=rl_move")
        .await
        .expect("new client");
    assert_eq!(
        column(&fresh, "SELECT name FROM customers").await,
        vec!["New home"]
    );
    proxy.shutdown().await;
}

/// A client that follows its tenant into context isolation takes the guard
/// a login there gets: the search_path it set while role-isolated is
/// forgotten (the context's schema serves it), and it may not set one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_following_its_tenant_into_context_isolation_takes_its_guard() {
    tenant_fixture("rl_guard", &[("t_old", "Old home"), ("t_new", "New home")]).await;
    let config = |tier: &str, schema: &str| mover_config("rl_guard", schema, tier);
    let path = scratch("rl-guard.toml");
    let proxy = start_proxy_from_file(&config("", "t_old"), &path).await;
    let c = connect(&proxy, "user=app.mover dbname=rl_guard")
        .await
        .expect("client");
    // Role isolation: search_path is an ordinary setting.
    c.batch_execute("SET search_path = t_old, public")
        .await
        .expect("set search_path while role-isolated");
    assert_eq!(
        column(&c, "SELECT name FROM customers").await,
        vec!["Old home"]
    );

    std::fs::write(&path, config("tier = \"shared\"", "t_new")).expect("config");
    pgtenant::app::reload(&proxy.proxy).expect("reload");
    assert_eq!(
        column(&c, "SELECT name FROM customers").await,
        vec!["New home"],
        "the context's search_path, not the one set before the move"
    );
    let e = c
        .batch_execute("SET search_path = t_old, public")
        .await
        .expect_err("search_path is the context's now");
    assert_eq!(sqlstate(&e).0, "42501");
    assert_eq!(
        column(&c, "SELECT name FROM customers").await,
        vec!["New home"]
    );
    proxy.shutdown().await;
}
