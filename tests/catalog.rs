//! The tenant catalog and the provisioning CLI: tenants created, suspended,
//! activated and dropped with `pgtenant tenant ...` reach a running proxy within
//! a second, without a restart and without disturbing other tenants' clients.

mod common;

use common::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config_text() -> String {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/migrations");
    format!(
        r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {}
database = "ct_app"
user = "postgres"

[catalog]
server = "main"
database = "ct_platform"

[tiers.free]
pool_size = 2

[migrations]
dir = "{migrations}"

[[tenants]]
key = "static1"
mode = "schema"
server = "main"
schema = "t_static"
"#,
        pg_port()
    )
}

async fn setup() -> (pgtenant::app::Running, PathBuf) {
    tenant_fixture("ct_app", &[("t_static", "Static")]).await;
    tenant_fixture("ct_platform", &[]).await;
    let text = config_text();
    let path = scratch(&format!("ct-{}.toml", rand_suffix()));
    std::fs::write(&path, &text).expect("write config");
    (start_proxy(&text).await, path)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs `pgtenant --config FILE tenant ARGS...`; returns (success, output).
async fn cli(config: &PathBuf, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .arg("--config")
        .arg(config)
        .arg("tenant")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run pgtenant");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_is_served_within_a_second_while_others_run() {
    let (proxy, cfg) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let queries = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..50 {
        let c = connect(&proxy, "user=app.static1 dbname=ct_app")
            .await
            .expect("static client");
        let (stop, errors, queries) = (stop.clone(), errors.clone(), queries.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.simple_query("SELECT name FROM customers").await {
                    Ok(_) => queries.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let (ok, out) = cli(
        &cfg,
        &["create", "newco", "--mode", "schema", "--tier", "free"],
    )
    .await;
    assert!(ok, "{out}");
    let created = Instant::now();
    let served = wait_until(Duration::from_secs(1), || async {
        connect(&proxy, "user=app.newco dbname=ct_app")
            .await
            .is_ok()
    })
    .await;
    assert!(served, "new tenant not served within 1 s");
    let newco = connect(&proxy, "user=app.newco dbname=ct_app")
        .await
        .expect("newco");
    newco
        .simple_query("INSERT INTO customers(name) VALUES ('New Co'); INSERT INTO orders(customer_id, amount_cents) VALUES (1, 500)")
        .await
        .expect("migrations applied at create");
    assert_eq!(
        scalar(&newco, "SELECT c.name || ':' || o.amount_cents FROM orders o JOIN customers c ON c.id = o.customer_id").await,
        "New Co:500"
    );
    assert!(created.elapsed() < Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "clients of other tenants saw errors"
    );
    assert!(queries.load(Ordering::Relaxed) > 50);
    let (ok, out) = cli(&cfg, &["create", "newco"]).await;
    assert!(!ok && out.contains("already exists"), "{out}");
}

#[tokio::test]
async fn suspend_and_activate_take_effect_within_a_second() {
    let (proxy, cfg) = setup().await;
    let (ok, out) = cli(&cfg, &["create", "sus", "--tier", "free"]).await;
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(1), || async {
            connect(&proxy, "user=app.sus dbname=ct_app").await.is_ok()
        })
        .await
    );
    let existing = connect(&proxy, "user=app.sus dbname=ct_app")
        .await
        .expect("client");
    scalar(&existing, "SELECT count(*) FROM customers").await;

    let (ok, out) = cli(&cfg, &["suspend", "sus"]).await;
    assert!(ok, "{out}");
    let refused = wait_until(Duration::from_secs(1), || async {
        matches!(connect(&proxy, "user=app.sus dbname=ct_app").await, Err(e) if sqlstate(&e).0 == "08004")
    })
    .await;
    assert!(refused, "suspended tenant still accepted after 1 s");
    let err = existing
        .simple_query("SELECT 1")
        .await
        .expect_err("existing client stopped at its next transaction");
    let (code, msg) = sqlstate(&err);
    assert_eq!(code, "08004", "{msg}");
    assert!(msg.contains("suspended"), "{msg}");

    let (ok, out) = cli(&cfg, &["activate", "sus"]).await;
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(1), || async {
            connect(&proxy, "user=app.sus dbname=ct_app").await.is_ok()
        })
        .await
    );
    let (ok, out) = cli(&cfg, &["suspend", "nobody"]).await;
    assert!(!ok && out.contains("no tenant"), "{out}");
}

#[tokio::test]
async fn database_tenants_list_and_drop() {
    let (proxy, cfg) = setup().await;
    let (ok, out) = cli(
        &cfg,
        &["create", "dbco", "--mode", "database", "--tier", "free"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(1), || async {
            connect(&proxy, "user=app.dbco dbname=x").await.is_ok()
        })
        .await
    );
    let c = connect(&proxy, "user=app.dbco dbname=x")
        .await
        .expect("dbco");
    assert_eq!(scalar(&c, "SELECT current_database()").await, "dbco");
    assert_eq!(scalar(&c, "SELECT count(*) FROM customers").await, "0");
    drop(c);
    let (ok, out) = cli(&cfg, &["list"]).await;
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("dbco ") && l.contains("database")),
        "{out}"
    );
    let (ok, out) = cli(&cfg, &["drop", "dbco"]).await;
    assert!(!ok && out.contains("--yes"), "{out}");
    let (ok, out) = cli(&cfg, &["drop", "dbco", "--yes"]).await;
    assert!(ok, "{out}");
    let gone = wait_until(Duration::from_secs(1), || async {
        matches!(connect(&proxy, "user=app.dbco dbname=x").await, Err(e) if sqlstate(&e).0 == "3D000")
    })
    .await;
    assert!(gone);
    let admin = direct("postgres").await;
    assert!(
        column(&admin, "SELECT 1 FROM pg_database WHERE datname = 'dbco'")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn provisioned_roles_make_postgres_enforce_isolation() {
    tenant_fixture("ct_app", &[("t_static", "Static")]).await;
    tenant_fixture("ct_platform", &[]).await;
    let text = config_text().replace(
        "database = \"ct_platform\"",
        "database = \"ct_platform\"\nrole_secret = \"test-role-secret\"",
    );
    let path = scratch("ct-roles.toml");
    std::fs::write(&path, &text).expect("write config");
    let proxy = start_proxy(&text).await;
    for key in ["rla", "rlb"] {
        let (ok, out) = cli(&path, &["create", key, "--tier", "free"]).await;
        assert!(ok, "{out}");
    }
    let (ok, out) = cli(
        &path,
        &["create", "rlc", "--mode", "database", "--tier", "free"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(1), || async {
            connect(&proxy, "user=app.rlc dbname=x").await.is_ok()
        })
        .await
    );
    let a = connect(&proxy, "user=app.rla dbname=ct_app")
        .await
        .expect("rla");
    assert_eq!(scalar(&a, "SELECT current_user").await, "t_rla");
    a.simple_query("INSERT INTO customers(name) VALUES ('mine')")
        .await
        .expect("own schema writable");
    // Another tenant's schema, reached any way, is refused by PostgreSQL itself.
    for sql in [
        "SELECT * FROM t_rlb.customers",
        "INSERT INTO t_rlb.customers(name) VALUES ('x')",
        "BEGIN; SET LOCAL ROLE t_rlb; COMMIT",
        "SELECT * FROM t_static.customers",
        "DO $$BEGIN EXECUTE 'SELECT * FROM t_' || 'rlb.customers'; END$$",
    ] {
        let err = a.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err).0, "42501", "{sql}: {}", sqlstate(&err).1);
        let _ = a.simple_query("ROLLBACK").await;
    }
    // A database tenant's role can't even connect to another tenant's database.
    let admin = direct("postgres").await;
    let can_connect = scalar(
        &admin,
        "SELECT has_database_privilege('t_rla', 'rlc', 'CONNECT')",
    )
    .await;
    assert_eq!(can_connect, "f");
    let c = connect(&proxy, "user=app.rlc dbname=x").await.expect("rlc");
    assert_eq!(
        scalar(&c, "SELECT current_user || '@' || current_database()").await,
        "t_rlc@rlc"
    );
    // Dropping removes the role too.
    drop(c);
    let (ok, out) = cli(&path, &["drop", "rlc", "--yes"]).await;
    assert!(ok, "{out}");
    assert!(
        column(&admin, "SELECT 1 FROM pg_roles WHERE rolname = 't_rlc'")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_catalog_quota_change_resizes_the_running_pool() {
    let (proxy, cfg) = setup().await;
    let (ok, out) = cli(&cfg, &["create", "rsz", "--tier", "free"]).await;
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(1), || async {
            connect(&proxy, "user=app.rsz dbname=ct_app").await.is_ok()
        })
        .await
    );
    let client = connect(&proxy, "user=app.rsz dbname=ct_app")
        .await
        .expect("client");
    // Hold both links of the free tier's quota (2) in open transactions.
    let other = connect(&proxy, "user=app.rsz dbname=ct_app")
        .await
        .expect("second client");
    client.batch_execute("BEGIN").await.expect("begin");
    other.batch_execute("BEGIN").await.expect("begin");
    let quota = |p: &pgtenant::app::Running| {
        p.proxy
            .pools
            .pools()
            .iter()
            .find(|pool| pool.key == "rsz")
            .map(|pool| pool.stats())
    };
    assert_eq!(quota(&proxy).map(|s| (s.quota, s.active)), Some((2, 2)));
    admin_sql(
        "ct_platform",
        "UPDATE pgtenant.tenants SET pool_size = 3 WHERE key = 'rsz'",
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(1), || async {
            quota(&proxy).map(|s| s.quota) == Some(3)
        })
        .await,
        "quota still {:?}",
        quota(&proxy)
    );
    // The third link is available at once, with no restart or reconnect.
    let third = connect(&proxy, "user=app.rsz dbname=ct_app")
        .await
        .expect("third client");
    let served = tokio::time::timeout(Duration::from_secs(2), third.simple_query("SELECT 1")).await;
    assert!(matches!(served, Ok(Ok(_))), "grown quota not usable");
    // Shrinking never cuts off a client: the limit holds as links come back.
    admin_sql(
        "ct_platform",
        "UPDATE pgtenant.tenants SET pool_size = 1 WHERE key = 'rsz'",
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(1), || async {
            quota(&proxy).map(|s| s.quota) == Some(1)
        })
        .await
    );
    client.batch_execute("COMMIT").await.expect("commit");
    other.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(quota(&proxy).map(|s| s.active), Some(0));
}
