//! Down migrations (SPEC §8, issue 13 acceptance 6): `NNN_name.down.sql`
//! reverts its version newest first, per target, with the migration lock,
//! lock_timeout and failure isolation of `migrate`; the ledger row goes with
//! it. A version without a down file stops its target with a clear error and
//! the others go on; two runners at once revert each target once.

mod common;

use common::migrate_fx::Fx;
use common::*;
use pgtenant::config::TenantMode;
use pgtenant::migrate::{Report, State};

async fn ledger(database: &str, schema: &str) -> Vec<String> {
    column(
        &direct(database).await,
        &format!("SELECT version::text FROM {schema}.pgtenant_migrations ORDER BY version"),
    )
    .await
}

fn versions(n: u32) -> Vec<String> {
    (1..=n).map(|v| v.to_string()).collect()
}

fn row(r: &Report, label: &str) -> (State, Option<u32>, Option<u32>, Option<String>) {
    let t = r
        .targets
        .iter()
        .find(|t| t.target.label() == label)
        .unwrap_or_else(|| panic!("no target {label} in\n{}", r.table()));
    (t.state, t.from, t.to, t.error.clone())
}

/// Tables of `schema` in `database`, sorted.
async fn tables(database: &str, schema: &str) -> Vec<String> {
    column(
        &direct(database).await,
        &format!(
            "SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'
                AND tablename <> 'pgtenant_migrations' ORDER BY 1"
        ),
    )
    .await
}

const COUNTER: &str = "CREATE SCHEMA IF NOT EXISTS counter;
    CREATE TABLE IF NOT EXISTS counter.downs (target text, version int);
    GRANT USAGE ON SCHEMA counter TO PUBLIC; GRANT INSERT ON counter.downs TO PUBLIC;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_to_a_version_reverts_every_mode_once_and_stops_where_a_down_file_is_missing() {
    let fx = Fx::new("mgd", "concurrency = 4\nper_database = 2").await;
    let files: [(&str, &str, &str); 6] = [
        (
            "001_items",
            "CREATE TABLE items (id serial PRIMARY KEY, name text);",
            "DROP TABLE items;",
        ),
        (
            "002_price",
            "ALTER TABLE items ADD COLUMN price int;",
            "ALTER TABLE items DROP COLUMN price;",
        ),
        (
            "003_notes",
            "CREATE TABLE notes (body text);",
            "DROP TABLE notes;",
        ),
        (
            "004_index",
            "CREATE INDEX items_by_name ON items (name);",
            "DROP INDEX items_by_name;",
        ),
        (
            "005_labels",
            "CREATE TABLE labels (x int);",
            "DROP TABLE labels;",
        ),
        (
            "006_tags",
            "CREATE TABLE tags (x int);",
            "DROP TABLE tags;
             INSERT INTO counter.downs VALUES (current_database() || '.' || current_schema(), 6);",
        ),
    ];
    for (stem, up, down) in files {
        fx.write(&format!("{stem}.sql"), up);
        fx.write(&format!("{stem}.down.sql"), down);
    }
    admin_sql("mgd_app", COUNTER).await;
    fx.create("dsa", TenantMode::Schema).await;
    fx.create("dsb", TenantMode::Schema).await;
    fx.create("dsh", TenantMode::Shared).await;
    fx.create("mgd_db", TenantMode::Database).await;
    admin_sql("mgd_db", COUNTER).await;
    // dsb also got a 007 that can't be reverted.
    fx.write("007_extra.sql", "CREATE TABLE extra (x int);");
    let r = fx
        .run_with(pgtenant::migrate::RunOptions {
            tenant: Some("dsb".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(r.exit_code(), 0, "{}", r.table());

    let (a, b) = tokio::join!(fx.down(5, None), fx.down(5, None));
    for r in [&a, &b] {
        assert_eq!(r.exit_code(), 1, "dsb fails in both runs:\n{}", r.table());
        assert_eq!(
            row(r, "dsb"),
            (
                State::Failed,
                Some(7),
                Some(7),
                Some("007_extra.sql: no 007_extra.down.sql to revert it with".into())
            )
        );
    }
    for (db, schema) in [
        ("mgd_app", "t_dsa"),
        ("mgd_app", "public"),
        ("mgd_db", "public"),
    ] {
        assert_eq!(ledger(db, schema).await, versions(5), "{db}.{schema}");
        assert_eq!(
            tables(db, schema).await,
            vec!["items", "labels", "notes"],
            "{db}.{schema}"
        );
    }
    assert_eq!(ledger("mgd_app", "t_dsb").await, versions(7));
    // Each target's 006 was reverted exactly once, whichever runner did it.
    let downs = |db: &'static str| async move {
        column(
            &direct(db).await,
            "SELECT target || 'x' || count(*) FROM counter.downs GROUP BY target ORDER BY 1",
        )
        .await
    };
    assert_eq!(
        downs("mgd_app").await,
        vec!["mgd_app.publicx1", "mgd_app.t_dsax1"]
    );
    assert_eq!(downs("mgd_db").await, vec!["mgd_db.publicx1"]);
    let (from_to, reverted): (Vec<_>, Vec<_>) = [&a, &b]
        .iter()
        .flat_map(|r| r.targets.iter())
        .filter(|t| t.target.label() == "dsa")
        .map(|t| ((t.from, t.to), t.applied.clone()))
        .unzip();
    assert!(
        from_to.contains(&(Some(6), Some(5))) && reverted.iter().flatten().count() == 1,
        "one run reverted dsa's 006: {from_to:?} {reverted:?}"
    );

    // The CLI: a dry run changes nothing; then one tenant goes to 3.
    let (code, out) = fx
        .cli(&["down", "--to", "3", "--tenant", "dsa", "--dry-run"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(ledger("mgd_app", "t_dsa").await, versions(5));
    let (code, out) = fx.cli(&["down", "--to", "3", "--tenant", "dsa"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(ledger("mgd_app", "t_dsa").await, versions(3));
    assert_eq!(tables("mgd_app", "t_dsa").await, vec!["items", "notes"]);
    let indexes = column(
        &direct("mgd_app").await,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 't_dsa' AND indexname = 'items_by_name'",
    )
    .await;
    assert_eq!(indexes, Vec::<String>::new());
    // Up again: the reverted versions are applied anew.
    let r = fx
        .run_with(pgtenant::migrate::RunOptions {
            tenant: Some("dsa".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(r.exit_code(), 0, "{}", r.table());
    assert_eq!(ledger("mgd_app", "t_dsa").await, versions(7));
}

#[tokio::test]
async fn a_down_file_without_its_migration_is_refused_before_anything_runs() {
    let fx = Fx::new("mge", "").await;
    fx.write("001_a.sql", "CREATE TABLE a (x int);");
    fx.write("002_b.down.sql", "DROP TABLE b;");
    let (code, out, err) = fx.cli_full(&["down", "--to", "0"]).await;
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        err,
        "pgtenant migrate: reading the migrations folder FOLDER: 002_b.down.sql: no 002_b.sql beside it to revert\n"
            .replace("FOLDER", &fx.dir.display().to_string())
    );
}
