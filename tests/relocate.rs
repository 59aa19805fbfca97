//! `tenant promote`, `demote` and `move` online (SPEC §9, issue 13
//! acceptance 1–4): a writer keeps working through pgtenant while its tenant
//! moves; afterwards every acknowledged write is in the new home exactly
//! once, nothing is left in the old one, the writer saw no error and paused
//! under 2 s, ids are kept and the next insert gets a fresh one, and another
//! tenant of the same shared tables noticed nothing. A move that fails at the
//! flip leaves the tenant serving from where it was, with nothing made left.

mod common;

use common::*;
use pgtenant::config::TenantMode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a writer did: every acknowledged write, its errors, its longest wait.
#[derive(Default, Debug)]
struct Log {
    /// Order id -> amount.
    orders: BTreeMap<i32, i32>,
    /// Customer id -> the name it was last given.
    names: BTreeMap<i32, String>,
    errors: Vec<String>,
    longest: Duration,
    writes: u64,
}

/// Writes through pgtenant as `app.KEY` until `stop`: inserts orders and
/// renames customers (ids from `customers`), logging each acknowledged
/// write. The same SQL throughout, whatever the tenant's home.
fn writer(
    port: u16,
    db: &str,
    key: &str,
    customers: Vec<i32>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Log> {
    let conn = format!("host=127.0.0.1 port={port} user=app.{key} dbname={db}");
    let key = key.to_owned();
    tokio::spawn(async move {
        let mut log = Log::default();
        let (c, conn) = match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
            Ok(x) => x,
            Err(e) => {
                log.errors.push(format!("connect: {e}"));
                return log;
            }
        };
        tokio::spawn(conn);
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let cid = customers[i * 7919 % customers.len()];
            let began = Instant::now();
            let r = if i % 3 == 0 {
                let name = format!("{key} renamed {i}");
                c.query(
                    "UPDATE customers SET name = $2 WHERE id = $1 RETURNING id",
                    &[&cid, &name],
                )
                .await
                .map(|rows| {
                    assert_eq!(rows.len(), 1, "customer {cid} of {key} updated");
                    log.names.insert(cid, name);
                })
            } else {
                let amount = i as i32;
                c.query_one(
                    "INSERT INTO orders (customer_id, amount_cents) VALUES ($1, $2) RETURNING id",
                    &[&cid, &amount],
                )
                .await
                .map(|row| {
                    log.orders.insert(row.get(0), amount);
                })
            };
            log.longest = log.longest.max(began.elapsed());
            match r {
                Ok(()) => {
                    log.writes += 1;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let (code, message) = sqlstate(&e);
                    log.errors.push(format!("{code} {message}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        log
    })
}

/// `SELECT id, x FROM ...` as a map.
async fn pairs<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    c: &tokio_postgres::Client,
    sql: &str,
) -> BTreeMap<i32, T> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Fills a tenant through pgtenant: `n` customers and three orders each.
async fn fill(proxy: &pgtenant::app::Running, db: &str, key: &str, n: i32) {
    let c = connect(proxy, &format!("user=app.{key} dbname={db}"))
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    c.batch_execute(&format!(
        "INSERT INTO customers (name, email) SELECT '{key} ' || i, 'c' || i || '@{key}' FROM generate_series(1, {n}) i;
         INSERT INTO orders (customer_id, amount_cents, status)
              SELECT id, id * k, CASE WHEN k = 2 THEN 'paid' ELSE 'new' END
                FROM customers, generate_series(1, 3) k;"
    ))
    .await
    .unwrap_or_else(|e| panic!("fill {key}: {e}"));
}

/// A tenant's rows as it sees them through pgtenant (identical SQL in every
/// mode): customers and orders, counted and checksummed.
async fn fingerprint(proxy: &pgtenant::app::Running, db: &str, key: &str) -> Vec<String> {
    let c = connect(proxy, &format!("user=app.{key} dbname={db}"))
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    column(
        &c,
        "SELECT 'customers ' || count(*) || ' ' || md5(coalesce(string_agg(id || '|' || name || '|' || coalesce(email, ''), ',' ORDER BY id), '')) FROM customers
         UNION ALL
         SELECT 'orders ' || count(*) || ' ' || md5(coalesce(string_agg(id || '|' || customer_id || '|' || amount_cents || '|' || status, ',' ORDER BY id), '')) FROM orders",
    )
    .await
}

/// The tenant's route in the catalog: mode, server, database, schema.
async fn route(platform: &str, key: &str) -> Vec<String> {
    let c = direct(platform).await;
    let r = c
        .query_one(
            "SELECT mode, server, database, coalesce(schema, '-') FROM pgtenant.tenants WHERE key = $1",
            &[&key],
        )
        .await
        .expect("catalog row");
    (0..4).map(|i| r.get::<_, String>(i)).collect()
}

async fn relocation_leftovers(db: &str) -> i64 {
    relocation_leftovers_on(&direct(db).await).await
}

/// Capture triggers and logs left in a database.
async fn relocation_leftovers_on(db: &tokio_postgres::Client) -> i64 {
    count(
        db,
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgtenant_relocate%')
              + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'pgtenant_relocate' AND c.relkind = 'r')",
    )
    .await
}

struct Moved {
    ok: bool,
    stdout: String,
    stderr: String,
    log: Log,
    other: Option<Log>,
}

/// Runs `args` through the CLI while `key` (and `other`, when given) write
/// through pgtenant, before, during and after.
async fn while_writing(
    proxy: &pgtenant::app::Running,
    config: &std::path::Path,
    db: &str,
    key: &str,
    other: Option<&str>,
    args: &[&str],
) -> Moved {
    let mine = customer_ids(proxy, db, key).await;
    let stop = Arc::new(AtomicBool::new(false));
    let port = proxy.addr.port();
    let acked = Arc::new(AtomicU64::new(0));
    let w = writer(port, db, key, mine, stop.clone(), acked.clone());
    let o = match other {
        Some(k) => Some(writer(
            port,
            db,
            k,
            customer_ids(proxy, db, k).await,
            stop.clone(),
            Arc::default(),
        )),
        None => None,
    };
    // Writes in the old home before, in the new one after.
    let wrote = |n: u64| {
        let acked = acked.clone();
        async move {
            wait_until(Duration::from_secs(20), || {
                let acked = acked.clone();
                async move { acked.load(Ordering::Relaxed) >= n }
            })
            .await
        }
    };
    assert!(wrote(100).await, "the writer writes before the move");
    let (ok, stdout, stderr) = pgtenant_cli(config, args, "").await;
    let after = acked.load(Ordering::Relaxed);
    assert!(wrote(after + 100).await, "the writer writes after the move");
    stop.store(true, Ordering::Relaxed);
    let log = w.await.expect("writer");
    eprintln!(
        "{args:?}: {stdout}{stderr}{key}: {} writes, longest {:?}",
        log.writes, log.longest
    );
    let other = match o {
        Some(o) => Some(o.await.expect("other writer")),
        None => None,
    };
    Moved {
        ok,
        stdout,
        stderr,
        log,
        other,
    }
}

async fn customer_ids(proxy: &pgtenant::app::Running, db: &str, key: &str) -> Vec<i32> {
    let c = connect(proxy, &format!("user=app.{key} dbname={db}"))
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    c.query("SELECT id FROM customers ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every acknowledged write of `log` is in `orders`/`customers` (qualified
/// names of the tenant's tables, `filter` selecting its rows) exactly once,
/// and (with `orders_before`) the order count is `before + inserted`.
async fn assert_writes_kept(
    db: &tokio_postgres::Client,
    tables: (&str, &str),
    filter: &str,
    log: &Log,
    orders_before: Option<i64>,
) {
    let (customers, orders) = tables;
    let amounts: BTreeMap<i32, i32> = pairs(
        db,
        &format!("SELECT id, amount_cents FROM {orders} WHERE {filter}"),
    )
    .await;
    for (id, amount) in &log.orders {
        assert_eq!(amounts.get(id), Some(amount), "order {id} in {orders}");
    }
    if let Some(before) = orders_before {
        assert_eq!(
            amounts.len() as i64,
            before + log.orders.len() as i64,
            "{orders}: the rows before plus each acknowledged insert, once"
        );
    }
    let names: BTreeMap<i32, String> = pairs(
        db,
        &format!("SELECT id, name FROM {customers} WHERE {filter}"),
    )
    .await;
    for (id, name) in &log.names {
        assert_eq!(names.get(id), Some(name), "customer {id} in {customers}");
    }
}

fn assert_smooth(what: &str, log: &Log) {
    assert!(log.errors.is_empty(), "{what} saw errors: {:?}", log.errors);
    assert!(
        log.writes > 20,
        "{what} kept writing ({} writes)",
        log.writes
    );
    assert!(
        log.longest < Duration::from_secs(2),
        "{what}'s longest pause {:?}",
        log.longest
    );
}

fn config_file(text: &str, name: &str) -> std::path::PathBuf {
    let path = scratch(&format!("relocate-{name}.toml"));
    std::fs::write(&path, text.replace("{PG_PORT}", &pg_port().to_string())).expect("config");
    path
}

/// Acceptance 1: the seed scenario, promote to a schema under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_to_schema_under_load_keeps_every_write() {
    let text = catalog_config_text("rl_app1", "rl_platform1", "");
    let cfg = catalog_config(&text);
    let bob = provision_tenant(&cfg, "bob", TenantMode::Shared, "default").await;
    let beta = provision_tenant(&cfg, "beta", TenantMode::Shared, "default").await;
    let path = config_file(&text, "one");
    let proxy = start_proxy(&text).await;
    fill(&proxy, "rl_app1", "beta", 300).await;
    fill(&proxy, "rl_app1", "bob", 10_000).await;
    let db = direct("rl_app1").await;
    let bob_rows = format!("tenant_id = '{bob}'");
    let beta_rows = format!("tenant_id = '{beta}'");
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM public.orders WHERE {bob_rows}")
        )
        .await,
        30_000
    );
    let bob_customers: BTreeMap<i32, String> = pairs(
        &db,
        &format!("SELECT id, email FROM public.customers WHERE {bob_rows}"),
    )
    .await;
    let beta_customers_before = fingerprint(&proxy, "rl_app1", "beta").await[0].clone();

    let moved = while_writing(
        &proxy,
        &path,
        "rl_app1",
        "bob",
        Some("beta"),
        &["tenant", "promote", "bob", "--mode", "schema"],
    )
    .await;
    assert!(moved.ok, "promote failed: {}{}", moved.stdout, moved.stderr);
    assert!(
        moved
            .stdout
            .contains("tenant bob moved from shared on main to schema on main"),
        "{}",
        moved.stdout
    );
    assert_smooth("bob's writer", &moved.log);
    let beta_log = moved.other.expect("beta's writer");
    assert_smooth("beta's writer", &beta_log);
    assert_eq!(
        route("rl_platform1", "bob").await,
        ["schema", "main", "rl_app1", "t_bob"]
    );

    // Every acknowledged write in t_bob once; ids kept; none left shared.
    assert_writes_kept(
        &db,
        ("t_bob.customers", "t_bob.orders"),
        "true",
        &moved.log,
        Some(30_000),
    )
    .await;
    let kept: BTreeMap<i32, String> = pairs(&db, "SELECT id, email FROM t_bob.customers").await;
    assert_eq!(kept, bob_customers, "bob's customers, ids and all");
    for table in ["customers", "orders"] {
        assert_eq!(
            count(
                &db,
                &format!("SELECT count(*) FROM public.{table} WHERE {bob_rows}")
            )
            .await,
            0,
            "bob's rows left in public.{table}"
        );
    }
    assert_eq!(
        relocation_leftovers("rl_app1").await,
        0,
        "capture triggers and log removed"
    );
    assert_eq!(
        count(
            &direct("rl_platform1").await,
            "SELECT count(*) FROM pgtenant.holds"
        )
        .await,
        0
    );
    // beta: untouched, and each of its writes there.
    assert_writes_kept(
        &db,
        ("public.customers", "public.orders"),
        &beta_rows,
        &beta_log,
        Some(900),
    )
    .await;
    if beta_log.names.is_empty() {
        assert_eq!(
            fingerprint(&proxy, "rl_app1", "beta").await[0],
            beta_customers_before
        );
    }
    // The next insert gets a fresh id, through the same SQL.
    let max: i32 = db
        .query_one("SELECT max(id) FROM t_bob.orders", &[])
        .await
        .expect("max")
        .get(0);
    let c = connect(&proxy, "user=app.bob dbname=rl_app1")
        .await
        .expect("bob");
    let cid = *bob_customers.keys().next().expect("a customer");
    let id: i32 = c
        .query_one(
            "INSERT INTO orders (customer_id, amount_cents) VALUES ($1, $2) RETURNING id",
            &[&cid, &1i32],
        )
        .await
        .expect("insert after promote")
        .get(0);
    assert!(id > max, "fresh id {id} after {max}");
    proxy.shutdown().await;
}

/// Acceptance 2: promote to a database under load, then demote back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_to_database_and_demote_back_under_load() {
    let text = catalog_config_text("rl_app2", "rl_platform2", "");
    let cfg = catalog_config(&text);
    let dan = provision_tenant(&cfg, "dan", TenantMode::Shared, "default").await;
    let path = config_file(&text, "two");
    let proxy = start_proxy(&text).await;
    fill(&proxy, "rl_app2", "dan", 2_000).await;
    let app = direct("rl_app2").await;
    let emails = format!("SELECT id, email FROM public.customers WHERE tenant_id = '{dan}'");
    let before: BTreeMap<i32, String> = pairs(&app, &emails).await;

    let up = while_writing(
        &proxy,
        &path,
        "rl_app2",
        "dan",
        None,
        &["tenant", "promote", "dan", "--mode", "database"],
    )
    .await;
    assert!(up.ok, "promote failed: {}{}", up.stdout, up.stderr);
    assert_smooth("dan's writer (promote)", &up.log);
    assert_eq!(
        route("rl_platform2", "dan").await,
        ["database", "main", "dan", "-"]
    );
    let home = direct("dan").await;
    assert_writes_kept(
        &home,
        ("public.customers", "public.orders"),
        "true",
        &up.log,
        Some(6_000),
    )
    .await;
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM public.orders WHERE tenant_id = '{dan}'")
        )
        .await,
        0
    );
    let orders_in_db = count(&home, "SELECT count(*) FROM public.orders").await;
    drop(home);

    let down = while_writing(
        &proxy,
        &path,
        "rl_app2",
        "dan",
        None,
        &["tenant", "demote", "dan"],
    )
    .await;
    assert!(down.ok, "demote failed: {}{}", down.stdout, down.stderr);
    assert_smooth("dan's writer (demote)", &down.log);
    assert_eq!(
        route("rl_platform2", "dan").await,
        ["shared", "main", "rl_app2", "public"]
    );
    let filter = format!("tenant_id = '{dan}'");
    let mut both = up.log;
    both.orders.extend(down.log.orders.clone());
    both.names.extend(down.log.names.clone());
    assert_writes_kept(
        &app,
        ("public.customers", "public.orders"),
        &filter,
        &both,
        None,
    )
    .await;
    assert_writes_kept(
        &app,
        ("public.customers", "public.orders"),
        &filter,
        &down.log,
        Some(orders_in_db),
    )
    .await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM pg_database WHERE datname = 'dan'"
        )
        .await,
        0,
        "the database is gone"
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM pg_roles WHERE rolname = 't_dan'"
        )
        .await,
        0
    );
    assert_eq!(relocation_leftovers("rl_app2").await, 0);
    // Dan's customers, ids and all, are back in the shared tables.
    assert_eq!(pairs::<String>(&app, &emails).await, before);
    proxy.shutdown().await;
}

/// Acceptance 3: a promote that fails at the flip leaves everything as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_failing_at_the_flip_leaves_the_tenant_serving() {
    let text = catalog_config_text("rl_app3", "rl_platform3", "");
    let cfg = catalog_config(&text);
    let eve = provision_tenant(&cfg, "eve", TenantMode::Shared, "default").await;
    let path = config_file(&text, "three");
    let proxy = start_proxy(&text).await;
    fill(&proxy, "rl_app3", "eve", 500).await;
    // The flip's catalog update fails (as a revoked grant would).
    admin_sql(
        "rl_platform3",
        "CREATE FUNCTION public.no_flip() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'permission denied for table tenants' USING ERRCODE = '42501'; END $$;
         CREATE TRIGGER no_flip BEFORE UPDATE ON pgtenant.tenants FOR EACH ROW
             WHEN (OLD.key = 'eve') EXECUTE FUNCTION public.no_flip();",
    )
    .await;
    let moved = while_writing(
        &proxy,
        &path,
        "rl_app3",
        "eve",
        None,
        &["tenant", "promote", "eve", "--mode", "schema"],
    )
    .await;
    assert!(!moved.ok, "promote should fail: {}", moved.stdout);
    assert!(
        moved.stderr.contains("permission denied for table tenants"),
        "{}",
        moved.stderr
    );
    assert_smooth("eve's writer", &moved.log);
    assert_eq!(
        route("rl_platform3", "eve").await,
        ["shared", "main", "rl_app3", "public"]
    );
    let db = direct("rl_app3").await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 't_eve'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pg_roles WHERE rolname = 't_eve'").await,
        0
    );
    assert_eq!(relocation_leftovers("rl_app3").await, 0);
    assert_eq!(
        count(
            &direct("rl_platform3").await,
            "SELECT count(*) FROM pgtenant.holds"
        )
        .await,
        0
    );
    let filter = format!("tenant_id = '{eve}'");
    assert_writes_kept(
        &db,
        ("public.customers", "public.orders"),
        &filter,
        &moved.log,
        Some(1_500),
    )
    .await;
    // Still serving from the shared tables.
    let c = connect(&proxy, "user=app.eve dbname=rl_app3")
        .await
        .expect("eve");
    assert_eq!(scalar(&c, "SELECT count(*) FROM customers").await, "500");
    proxy.shutdown().await;
}

/// A second PostgreSQL cluster (the other server of `tenant move`), set up
/// as a managed service would be: the admin with CREATEROLE and CREATEDB
/// owning the server's database, a plain service login.
async fn east() -> &'static pgtenant::cluster::TempCluster {
    static EAST: std::sync::OnceLock<pgtenant::cluster::TempCluster> = std::sync::OnceLock::new();
    let c = EAST.get_or_init(|| {
        let mut c = pgtenant::cluster::TempCluster::start().expect("second cluster");
        c.stop_when_process_exits();
        c
    });
    let (su, conn) = tokio_postgres::connect(&c.conn_string("postgres"), tokio_postgres::NoTls)
        .await
        .expect("east");
    tokio::spawn(conn);
    for sql in [
        format!("CREATE ROLE {ADMIN_ROLE} LOGIN CREATEROLE CREATEDB"),
        format!("CREATE ROLE {SERVICE_ROLE} LOGIN"),
        format!("CREATE DATABASE east_app OWNER {ADMIN_ROLE}"),
    ] {
        su.batch_execute(&sql).await.expect(&sql);
    }
    c
}

/// Acceptance 4: a database tenant moves to another cluster under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_database_tenant_to_another_cluster_under_load() {
    let east = east().await;
    let servers = format!(
        r#"
[servers.east]
port = {}
database = "east_app"
user = "{SERVICE_ROLE}"
admin_user = "{ADMIN_ROLE}"
"#,
        east.port
    );
    let text = catalog_config_text("rl_app4", "rl_platform4", &servers);
    let cfg = catalog_config(&text);
    provision_tenant(&cfg, "fay", TenantMode::Database, "default").await;
    let path = config_file(&text, "four");
    let proxy = start_proxy(&text).await;
    fill(&proxy, "fay", "fay", 3_000).await;
    let old = direct("fay").await;
    let emails: BTreeMap<i32, String> = pairs(&old, "SELECT id, email FROM customers").await;
    drop(old);

    let moved = while_writing(
        &proxy,
        &path,
        "fay",
        "fay",
        None,
        &["tenant", "move", "fay", "--server", "east"],
    )
    .await;
    assert!(moved.ok, "move failed: {}{}", moved.stdout, moved.stderr);
    assert!(
        moved
            .stdout
            .contains("tenant fay moved from database on main to database on east"),
        "{}",
        moved.stdout
    );
    assert_smooth("fay's writer", &moved.log);
    assert_eq!(
        route("rl_platform4", "fay").await,
        ["database", "east", "fay", "-"]
    );
    let (new, conn) = tokio_postgres::connect(&east.conn_string("fay"), tokio_postgres::NoTls)
        .await
        .expect("fay on east");
    tokio::spawn(conn);
    assert_writes_kept(
        &new,
        ("public.customers", "public.orders"),
        "true",
        &moved.log,
        Some(9_000),
    )
    .await;
    assert_eq!(
        pairs::<String>(&new, "SELECT id, email FROM customers").await,
        emails
    );
    assert_eq!(relocation_leftovers_on(&new).await, 0);
    let main = direct("postgres").await;
    assert_eq!(
        count(
            &main,
            "SELECT count(*) FROM pg_database WHERE datname = 'fay'"
        )
        .await,
        0,
        "old database dropped"
    );
    assert_eq!(
        count(
            &main,
            "SELECT count(*) FROM pg_roles WHERE rolname = 't_fay'"
        )
        .await,
        0,
        "old role dropped"
    );
    // The next insert, same SQL, lands on east with a fresh id.
    let max: i32 = new
        .query_one("SELECT max(id) FROM orders", &[])
        .await
        .expect("max")
        .get(0);
    let c = connect(&proxy, "user=app.fay dbname=fay")
        .await
        .expect("fay");
    let cid = *emails.keys().next().expect("a customer");
    let id: i32 = c
        .query_one(
            "INSERT INTO orders (customer_id, amount_cents) VALUES ($1, $2) RETURNING id",
            &[&cid, &1i32],
        )
        .await
        .expect("insert after move")
        .get(0);
    assert!(id > max, "fresh id {id} after {max}");
    assert_eq!(
        count(
            &new,
            &format!("SELECT count(*) FROM orders WHERE id = {id}")
        )
        .await,
        1
    );
    proxy.shutdown().await;
}

/// A hostile database tenant makes schema `pgtenant_relocate` first, to have
/// the admin's capture code write into objects it controls: the move is
/// refused, nothing changes, and the tenant keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_owned_capture_schema_is_refused() {
    let text = catalog_config_text("rl_app5", "rl_platform5", "");
    let cfg = catalog_config(&text);
    provision_tenant(&cfg, "gus", TenantMode::Database, "default").await;
    let path = config_file(&text, "five");
    let proxy = start_proxy(&text).await;
    fill(&proxy, "gus", "gus", 10).await;
    let c = connect(&proxy, "user=app.gus dbname=gus")
        .await
        .expect("gus");
    c.batch_execute(
        "CREATE SCHEMA pgtenant_relocate;
         CREATE TABLE pgtenant_relocate.trap (x int);",
    )
    .await
    .expect("the tenant owns its database");
    let (ok, stdout, stderr) = pgtenant_cli(&path, &["tenant", "demote", "gus"], "").await;
    assert!(!ok, "demote should be refused: {stdout}");
    assert!(
        stderr
            .contains("schema pgtenant_relocate in database gus does not belong to pgtenant_admin"),
        "{stderr}"
    );
    assert_eq!(
        route("rl_platform5", "gus").await,
        ["database", "main", "gus", "-"]
    );
    assert_eq!(scalar(&c, "SELECT count(*) FROM customers").await, "10");
    let app = direct("rl_app5").await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM public.customers").await,
        0,
        "nothing left in the shared tables"
    );
    assert_eq!(
        count(
            &direct("gus").await,
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgtenant_relocate%')
                  + (SELECT count(*) FROM pg_class WHERE relname LIKE 'changes!_%' ESCAPE '!')",
        )
        .await,
        0,
        "no capture made"
    );
    proxy.shutdown().await;
}
