//! The migration sidecar (SPEC §8) against real PostgreSQL: every mode of
//! tenant, statuses, concurrent runners, failures that stay with one tenant,
//! lock safety, files outside a transaction, drift, and a 1,000-tenant run.

mod common;

use common::migrate_fx::Fx;
use common::*;
use pgtenant::config::{TenantMode, TenantStatus};
use pgtenant::migrate::{self, Report, RunOptions, State};
use std::time::{Duration, Instant};

/// Versions in a target's ledger ("" when it has none).
async fn ledger(database: &str, schema: &str) -> Vec<String> {
    let db = direct(database).await;
    let has = column(
        &db,
        &format!("SELECT 1 FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'pgtenant_migrations'"),
    )
    .await;
    if has.is_empty() {
        return Vec::new();
    }
    column(
        &db,
        &format!("SELECT version FROM \"{schema}\".pgtenant_migrations ORDER BY version"),
    )
    .await
}

fn versions(n: u32) -> Vec<String> {
    (1..=n).map(|v| v.to_string()).collect()
}

fn state_of(r: &Report, label: &str) -> State {
    r.targets
        .iter()
        .find(|t| t.target.label() == label)
        .unwrap_or_else(|| panic!("no target {label} in\n{}", r.table()))
        .state
}

const FIVE: [(&str, &str); 5] = [
    (
        "001_items.sql",
        "CREATE TABLE items (id serial PRIMARY KEY, name text);",
    ),
    ("002_price.sql", "ALTER TABLE items ADD COLUMN price int;"),
    ("003_notes.sql", "CREATE TABLE notes (body text);"),
    (
        "004_index.sql",
        "CREATE INDEX items_by_name ON items (name);",
    ),
    (
        "005_view.sql",
        "CREATE VIEW item_names AS SELECT name FROM items;",
    ),
];

#[tokio::test]
async fn seed_scenario_across_modes_and_statuses() {
    let fx = Fx::new("mga", "").await;
    fx.create("aact", TenantMode::Schema).await;
    fx.create("atrial", TenantMode::Schema).await;
    fx.create("asusp", TenantMode::Schema).await;
    fx.create("adb", TenantMode::Database).await;
    fx.create("adbcanc", TenantMode::Database).await;
    fx.create("ashared1", TenantMode::Shared).await;
    fx.create("ashared2", TenantMode::Shared).await;
    fx.status("ashared2", TenantStatus::Cancelled).await;
    fx.status("atrial", TenantStatus::Trial).await;
    fx.status("asusp", TenantStatus::Suspended).await;
    fx.status("adbcanc", TenantStatus::Cancelled).await;
    for (f, sql) in FIVE {
        fx.write(f, sql);
    }
    let r = fx.run().await;
    println!("{}", r.table());
    assert_eq!(r.exit_code(), 0);
    for label in ["aact", "atrial", "adb", "shared:mga_app.public"] {
        assert_eq!(state_of(&r, label), State::Ok, "{label}");
    }
    for label in ["asusp", "adbcanc"] {
        assert_eq!(state_of(&r, label), State::Skipped, "{label}");
    }
    assert_eq!(ledger("mga_app", "t_aact").await, versions(5));
    assert_eq!(ledger("mga_app", "t_atrial").await, versions(5));
    assert_eq!(ledger("adb", "public").await, versions(5));
    assert_eq!(
        ledger("mga_app", "public").await,
        versions(5),
        "shared schema"
    );
    assert_eq!(ledger("mga_app", "t_asusp").await, Vec::<String>::new());
    assert_eq!(ledger("adbcanc", "public").await, Vec::<String>::new());

    fx.write(
        "006_more.sql",
        "ALTER TABLE notes ADD COLUMN at timestamptz;",
    );
    let r = fx.run().await;
    assert_eq!(r.exit_code(), 0, "{}", r.table());
    let aact = r
        .targets
        .iter()
        .find(|t| t.target.label() == "aact")
        .expect("aact");
    assert_eq!(
        (aact.from, aact.to, aact.applied.clone()),
        (Some(5), Some(6), vec![6])
    );
    for (db, schema) in [
        ("mga_app", "t_aact"),
        ("mga_app", "t_atrial"),
        ("adb", "public"),
        ("mga_app", "public"),
    ] {
        assert_eq!(ledger(db, schema).await, versions(6), "{db}.{schema}");
    }
    // A tenant created now has every migration before its first connection.
    fx.create("anew", TenantMode::Schema).await;
    assert_eq!(ledger("mga_app", "t_anew").await, versions(6));
    // A no-op run changes nothing and plans with one connection per database
    // (mga_app, adb; adbcanc is skipped without connecting).
    let r = fx.run().await;
    assert!(r.targets.iter().all(|t| t.applied.is_empty()));
    assert_eq!(r.connections, 2, "{}", r.table());
}

#[tokio::test]
async fn shared_schema_is_one_target_migrated_while_any_tenant_is_active() {
    let fx = Fx::new("mgs", "").await;
    fx.create("sfree1", TenantMode::Shared).await;
    fx.create("sfree2", TenantMode::Shared).await;
    fx.status("sfree2", TenantStatus::Suspended).await;
    fx.write("001_items.sql", FIVE[0].1);
    let r = fx.run().await;
    assert_eq!(r.targets.len(), 1, "{}", r.table());
    assert_eq!(state_of(&r, "shared:mgs_app.public"), State::Ok);
    assert_eq!(r.targets[0].target.tenants, vec!["sfree1", "sfree2"]);
    assert_eq!(ledger("mgs_app", "public").await, versions(1));
}

#[tokio::test]
async fn two_runners_at_once_apply_each_version_exactly_once() {
    let fx = Fx::new("mgb", "concurrency = 3\nper_database = 3").await;
    admin_sql(
        "mgb_app",
        "CREATE SCHEMA IF NOT EXISTS counter;
         CREATE TABLE IF NOT EXISTS counter.runs (target text, version int);
         GRANT USAGE ON SCHEMA counter TO PUBLIC; GRANT INSERT ON counter.runs TO PUBLIC;",
    )
    .await;
    let keys: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    for k in &keys {
        fx.create(k, TenantMode::Schema).await;
    }
    for v in 1..=3 {
        fx.write(
            &format!("00{v}_count.sql"),
            &format!(
                "CREATE TABLE step{v} (x int); INSERT INTO counter.runs VALUES (current_schema(), {v});"
            ),
        );
    }
    let (a, b) = tokio::join!(fx.run(), fx.run());
    assert_eq!(
        a.exit_code() + b.exit_code(),
        0,
        "{}\n{}",
        a.table(),
        b.table()
    );
    let db = direct("mgb_app").await;
    let runs = column(
        &db,
        "SELECT target || ':' || version || 'x' || n
           FROM (SELECT target, version, count(*) AS n FROM counter.runs GROUP BY 1, 2) s ORDER BY 1",
    )
    .await;
    let mut want: Vec<String> = keys
        .iter()
        .flat_map(|k| (1..=3).map(move |v| format!("t_{k}:{v}x1")))
        .collect();
    want.sort();
    assert_eq!(runs, want, "every migration ran once per target");
    for k in &keys {
        assert_eq!(ledger("mgb_app", &format!("t_{k}")).await, versions(3));
    }
}

#[tokio::test]
async fn a_failing_tenant_stops_alone_and_the_cli_reports_it() {
    let fx = Fx::new("mgc", "").await;
    for k in ["cok1", "cbad", "cok2"] {
        fx.create(k, TenantMode::Schema).await;
    }
    fx.write("001_items.sql", FIVE[0].1);
    assert_eq!(fx.cli(&[]).await.0, 0);
    // Something in cbad's schema conflicts with the next migration.
    admin_sql("mgc_app", "CREATE TABLE t_cbad.widgets (x int)").await;
    fx.write("002_widgets.sql", "CREATE TABLE widgets (id int);");
    let (dry_code, dry) = fx.cli(&["--dry-run"]).await;
    assert_eq!(dry_code, 0, "{dry}");
    assert!(dry.contains("pending") && dry.contains("dry run"), "{dry}");
    assert_eq!(
        ledger("mgc_app", "t_cok1").await,
        versions(1),
        "dry run changed nothing"
    );
    let (code, out) = fx.cli(&[]).await;
    assert_eq!(code, 1, "{out}");
    let bad = out
        .lines()
        .find(|l| l.starts_with("cbad"))
        .expect("cbad row");
    assert!(
        bad.contains("failed") && bad.contains("002_widgets.sql") && bad.contains("42P07"),
        "{out}"
    );
    assert_eq!(
        ledger("mgc_app", "t_cbad").await,
        versions(1),
        "stays at its last good version"
    );
    for k in ["t_cok1", "t_cok2"] {
        assert_eq!(ledger("mgc_app", k).await, versions(2));
    }
    // Retried on the next run; fixed, it goes through.
    admin_sql("mgc_app", "DROP TABLE t_cbad.widgets").await;
    let (code, out) = fx.cli(&["--tenant", "cbad"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(ledger("mgc_app", "t_cbad").await, versions(2));
    let (code, _) = fx.cli(&["--tenant", "nobody"]).await;
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_never_holds_tenant_traffic_longer_than_lock_timeout() {
    let fx = Fx::new("mgd", "lock_timeout = \"300ms\"\nlock_retries = 100").await;
    fx.write("001_items.sql", FIVE[0].1);
    fx.create("dlock", TenantMode::Schema).await;
    admin_sql("mgd_app", "INSERT INTO t_dlock.items(name) VALUES ('a')").await;
    // A long transaction holds a lock on the table for 2 s.
    let holder = direct("mgd_app").await;
    holder
        .batch_execute("BEGIN; SELECT count(*) FROM t_dlock.items;")
        .await
        .expect("hold");
    fx.write("002_alter.sql", "ALTER TABLE items ADD COLUMN note text;");
    let cfg = fx.cfg.clone();
    let migration = tokio::spawn(async move {
        migrate::run(&cfg, &RunOptions::default())
            .await
            .expect("run")
    });
    let reader = direct("mgd_app").await;
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let t = Instant::now();
        scalar(&reader, "SELECT count(*) FROM t_dlock.items").await;
        worst = worst.max(t.elapsed());
    }
    holder.batch_execute("COMMIT").await.expect("release");
    let r = migration.await.expect("migration task");
    println!("worst SELECT wait while the migration retried: {worst:?}");
    assert_eq!(r.exit_code(), 0, "{}", r.table());
    assert_eq!(ledger("mgd_app", "t_dlock").await, versions(2));
    assert!(
        worst < Duration::from_millis(400),
        "a reader waited {worst:?} behind the migration (lock_timeout 300ms)"
    );
}

#[tokio::test]
async fn no_transaction_files_build_indexes_concurrently_everywhere() {
    let fx = Fx::new("mge", "").await;
    fx.write("001_items.sql", FIVE[0].1);
    for k in ["e1", "e2", "e3"] {
        fx.create(k, TenantMode::Schema).await;
    }
    fx.write(
        "002_index.sql",
        "-- pgtenant:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_name ON items (name);\n",
    );
    let r = fx.run().await;
    assert_eq!(r.exit_code(), 0, "{}", r.table());
    let db = direct("mge_app").await;
    let valid = column(
        &db,
        "SELECT n.nspname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relname = 'items_name' AND i.indisvalid ORDER BY 1",
    )
    .await;
    assert_eq!(valid, vec!["t_e1", "t_e2", "t_e3"]);
    // A new tenant gets it too (create runs the same code).
    fx.create("e4", TenantMode::Schema).await;
    assert_eq!(ledger("mge_app", "t_e4").await, versions(2));
}

#[tokio::test]
async fn an_edited_applied_file_is_drift_and_nothing_reruns() {
    let fx = Fx::new("mgf", "").await;
    admin_sql(
        "mgf_app",
        "CREATE SCHEMA IF NOT EXISTS counter; CREATE TABLE IF NOT EXISTS counter.runs (target text);
         GRANT USAGE ON SCHEMA counter TO PUBLIC; GRANT INSERT ON counter.runs TO PUBLIC;",
    )
    .await;
    fx.write(
        "001_count.sql",
        "CREATE TABLE t (x int); INSERT INTO counter.runs VALUES (current_schema());",
    );
    for k in ["f1", "f2"] {
        fx.create(k, TenantMode::Schema).await;
    }
    fx.write(
        "001_count.sql",
        "CREATE TABLE t (x int, y int); INSERT INTO counter.runs VALUES (current_schema());",
    );
    fx.write("002_next.sql", "CREATE TABLE u (x int);");
    let r = fx.run().await;
    assert_eq!(r.exit_code(), 1);
    for k in ["f1", "f2"] {
        assert_eq!(state_of(&r, k), State::Drift);
        assert_eq!(
            ledger("mgf_app", &format!("t_{k}")).await,
            versions(1),
            "not migrated further"
        );
    }
    assert!(r.table().contains("checksum changed"), "{}", r.table());
    assert_eq!(
        scalar(
            &direct("mgf_app").await,
            "SELECT count(*) FROM counter.runs"
        )
        .await,
        "2"
    );
}

/// The benchmark of issue 5: 1,000 schema tenants × 5 migrations from empty,
/// then a no-op run. Times are printed (run with --nocapture); the asserts are
/// about work, not time: the no-op run plans with one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenants_from_empty_then_a_no_op_run() {
    let fx = Fx::new("mgg", "concurrency = 4\nper_database = 4").await;
    let cat = pgtenant::catalog::Catalog::from_config(&fx.cfg)
        .expect("catalog")
        .open()
        .await
        .expect("open catalog");
    cat.batch_execute(
        "INSERT INTO pgtenant.tenants(key, mode, server, database, schema, tier)
         SELECT 'g' || lpad(i::text, 4, '0'), 'schema', 'main', 'mgg_app', 't_g' || lpad(i::text, 4, '0'), 'default'
           FROM generate_series(1, 1000) i",
    )
    .await
    .expect("catalog rows");
    let mut ddl = String::from("BEGIN;");
    for i in 1..=1000 {
        ddl.push_str(&format!(
            "CREATE SCHEMA t_g{i:04} AUTHORIZATION {ADMIN_ROLE};"
        ));
    }
    ddl.push_str("COMMIT;");
    admin_sql("mgg_app", &ddl).await;
    for (f, sql) in FIVE {
        fx.write(f, sql);
    }
    let r = fx.run().await;
    assert_eq!(r.exit_code(), 0, "{}", r.table());
    assert_eq!(r.count(State::Ok), 1000);
    println!(
        "1000 tenants x 5 migrations from empty: {:?}, {} server connections",
        r.elapsed, r.connections
    );
    // One to plan (closed before applying), at most per_database to apply.
    assert!(r.connections <= 5, "{} connections", r.connections);
    let noop = fx.run().await;
    println!(
        "no-op run over 1000 tenants: {:?}, {} server connection(s)",
        noop.elapsed, noop.connections
    );
    assert_eq!(noop.connections, 1);
    assert_eq!(noop.count(State::Ok), 1000);
    assert!(noop.targets.iter().all(|t| t.applied.is_empty()));
}

/// `serve`'s sidecar: the startup run catches tenants up; a tenant activated
/// again is let in only once it has every migration.
#[tokio::test]
async fn serve_migrates_at_startup_and_catches_up_reactivated_tenants() {
    let fx = Fx::new("mgh", "").await;
    fx.write("001_items.sql", FIVE[0].1);
    fx.create("hre", TenantMode::Schema).await;
    fx.write("002_price.sql", FIVE[1].1);
    let text = std::fs::read_to_string(&fx.path).expect("config");
    let proxy = start_proxy(&text).await;
    pgtenant::sidecar::start(proxy.proxy.clone());
    let board = || proxy.proxy.sidecar.status.get("hre");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            board().is_some_and(|s| s.state == State::Ok && s.version == Some(2))
        })
        .await,
        "startup run: {:?}",
        board()
    );
    assert_eq!(ledger("mgh_app", "t_hre").await, versions(2));

    fx.status("hre", TenantStatus::Suspended).await;
    assert!(
        wait_until(Duration::from_secs(2), || async {
            matches!(connect(&proxy, "user=app.hre dbname=mgh_app").await, Err(e) if sqlstate(&e).0 == "08004")
        })
        .await
    );
    // A slow migration lands while it is suspended; activation waits for it.
    fx.write(
        "003_slow.sql",
        "SELECT pg_sleep(1); CREATE TABLE three (x int);",
    );
    fx.status("hre", TenantStatus::Active).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match connect(&proxy, "user=app.hre dbname=mgh_app").await {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(sqlstate(&e).0, "08004", "held with its old status");
                assert!(Instant::now() < deadline, "never let in");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM three").await,
        "0",
        "let in only after catching up"
    );
    assert_eq!(ledger("mgh_app", "t_hre").await, versions(3));
    proxy.shutdown().await;
}

/// A tenant owns its schema, ledger included. Whatever it puts there (here a
/// trigger on its ledger that tries to make its role a superuser) runs as the
/// tenant's role, never as pgtenant's admin user.
#[tokio::test]
async fn tenant_code_in_its_own_schema_never_runs_as_the_admin() {
    let fx = Fx::new("mgi", "").await;
    fx.write("001_items.sql", FIVE[0].1);
    fx.create("ihost", TenantMode::Schema).await;
    admin_sql(
        "mgi_app",
        "SET ROLE t_ihost;
         CREATE FUNCTION t_ihost.grab() RETURNS trigger LANGUAGE plpgsql AS
             $$BEGIN EXECUTE 'ALTER ROLE t_ihost SUPERUSER'; RETURN NEW; END$$;
         CREATE TRIGGER grab BEFORE INSERT ON t_ihost.pgtenant_migrations
             FOR EACH ROW EXECUTE FUNCTION t_ihost.grab();",
    )
    .await;
    fx.write("002_price.sql", FIVE[1].1);
    let r = fx.run().await;
    assert_eq!(state_of(&r, "ihost"), State::Failed, "{}", r.table());
    assert_eq!(
        scalar(
            &direct("postgres").await,
            "SELECT rolsuper::text FROM pg_roles WHERE rolname = 't_ihost'"
        )
        .await,
        "false"
    );
}

/// A concurrent index build that fails leaves an INVALID index, which `IF NOT
/// EXISTS` would skip on the next run: the runner refuses to record that.
#[tokio::test]
async fn an_invalid_index_is_never_recorded_as_applied() {
    let fx = Fx::new("mgj", "").await;
    fx.write("001_items.sql", FIVE[0].1);
    fx.create("jdup", TenantMode::Schema).await;
    admin_sql(
        "mgj_app",
        "INSERT INTO t_jdup.items(name) VALUES ('same'), ('same')",
    )
    .await;
    fx.write(
        "002_unique.sql",
        "-- pgtenant:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS items_uname ON items (name);\n",
    );
    let first = fx.run().await;
    assert_eq!(state_of(&first, "jdup"), State::Failed, "{}", first.table());
    let second = fx.run().await;
    assert_eq!(state_of(&second, "jdup"), State::Failed);
    assert!(
        second.table().contains("invalid index"),
        "{}",
        second.table()
    );
    assert_eq!(ledger("mgj_app", "t_jdup").await, versions(1));
}

/// pgtenant's ledger has a name no framework uses; one it kept under the
/// old name (`schema_migrations`, Rails' table) is renamed once, under two
/// racing runners, with no version lost; a framework's `schema_migrations`
/// is never touched and lives beside pgtenant's ledger.
#[tokio::test]
async fn the_ledger_is_renamed_once_and_a_frameworks_table_is_left_alone() {
    let fx = Fx::new("mgl", "concurrency = 2\nper_database = 2").await;
    fx.write("001_a.sql", "CREATE TABLE a (x int);");
    fx.write("002_b.sql", "CREATE TABLE b (x int);");
    fx.create("lold", TenantMode::Schema).await;
    fx.create("lrails", TenantMode::Schema).await;
    assert_eq!(ledger("mgl_app", "t_lold").await, versions(2));
    // As an older pgtenant left it; and Rails' own table in the other tenant.
    admin_sql(
        "mgl_app",
        "ALTER TABLE t_lold.pgtenant_migrations RENAME TO schema_migrations;
         CREATE TABLE t_lrails.schema_migrations (version varchar PRIMARY KEY);
         INSERT INTO t_lrails.schema_migrations VALUES ('20240101000000');",
    )
    .await;
    fx.write("003_c.sql", "CREATE TABLE c (x int);");
    let (a, b) = tokio::join!(fx.run(), fx.run());
    assert_eq!(
        a.exit_code() + b.exit_code(),
        0,
        "{}\n{}",
        a.table(),
        b.table()
    );
    assert_eq!(
        ledger("mgl_app", "t_lold").await,
        versions(3),
        "no version lost"
    );
    assert_eq!(ledger("mgl_app", "t_lrails").await, versions(3));
    let db = direct("mgl_app").await;
    assert_eq!(
        column(
            &db,
            "SELECT schemaname || '.' || tablename FROM pg_tables
              WHERE tablename = 'schema_migrations' ORDER BY 1"
        )
        .await,
        vec!["t_lrails.schema_migrations"],
        "pgtenant's old ledger renamed, Rails' kept"
    );
    assert_eq!(
        column(&db, "SELECT version FROM t_lrails.schema_migrations").await,
        vec!["20240101000000"]
    );
}
