//! Managed PostgreSQL (SPEC §5, issue 12 acceptance 1): the admin that
//! provisions, migrates and drops has only CREATEROLE and CREATEDB, the
//! server user is a plain login role, and a superuser is used only to set up
//! the fixture. Everything runs through the CLI, as a user on RDS would.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// `pgtenant ARGS...`; (success, stdout, stderr).
async fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    pgtenant_cli(config, args, "").await
}

/// The shipped migrations copied into a folder of the test's own.
fn migrations_copy(base: &Path) -> PathBuf {
    let dir = base.join("migrations");
    std::fs::create_dir_all(&dir).expect("migrations dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for f in std::fs::read_dir(&shipped).expect("shipped migrations") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy");
    }
    dir
}

async fn attributes(role: &str) -> String {
    scalar(
        &direct("postgres").await,
        &format!(
            "SELECT concat_ws(',', rolsuper, rolcreaterole, rolcreatedb, rolbypassrls)
               FROM pg_roles WHERE rolname = '{role}'"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_createrole_createdb_admin_provisions_migrates_serves_and_drops_every_mode() {
    managed_database("mg_app").await;
    managed_database("mg_platform").await;
    assert_eq!(attributes(ADMIN_ROLE).await, "f,t,t,f", "the managed shape");
    assert_eq!(attributes(SERVICE_ROLE).await, "f,f,f,f", "a plain login");

    let base = scratch("managed");
    let _ = std::fs::remove_dir_all(&base);
    let dir = migrations_copy(&base);
    let text = catalog_config_text("mg_app", "mg_platform", "").replace(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
        &dir.display().to_string(),
    );
    let path = base.join("pgtenant.toml");
    std::fs::write(&path, text.replace("{PG_PORT}", &pg_port().to_string())).expect("config");

    // Create: each mode in one command, quiet but for the one thing a
    // managed admin cannot do for shared tenants, said once with what to do.
    for (key, mode) in [
        ("acme", "schema"),
        ("globex", "database"),
        ("beta", "shared"),
        ("gamma", "shared"),
    ] {
        let (ok, out, err) = cli(&path, &["tenant", "create", key, "--mode", mode]).await;
        assert!(ok, "create {key}: {out}{err}");
        if mode == "shared" {
            let warnings: Vec<&str> = err.lines().collect();
            assert_eq!(warnings.len(), 1, "{err}");
            assert!(
                warnings[0].contains("WARN")
                    && warnings[0].contains("pgtenant shared-hardening-sql"),
                "{err}"
            );
        } else {
            assert_eq!(err, "", "create {key} is quiet");
        }
    }
    // Tenant roles are members of nothing; the admin is a member of each
    // dedicated tenant's role (it owns and migrates through them).
    let pg = direct("postgres").await;
    assert_eq!(
        column(
            &pg,
            "SELECT r.rolname || ' in ' || g.rolname FROM pg_auth_members m
               JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
              WHERE r.rolname IN ('t_acme', 't_globex', 'pgtenant_shared', 'pgtenant_admin')
              ORDER BY 1"
        )
        .await,
        vec!["pgtenant_admin in t_acme", "pgtenant_admin in t_globex"]
    );

    // Migrate: a new file reaches every target, run by the same admin.
    std::fs::write(
        dir.join("004_note.sql"),
        "ALTER TABLE customers ADD COLUMN note text NOT NULL DEFAULT 'none';",
    )
    .expect("write migration");
    let (ok, out, err) = cli(&path, &["migrate"]).await;
    assert!(ok, "migrate: {out}{err}");
    for (db, schema) in [
        ("mg_app", "t_acme"),
        ("globex", "public"),
        ("mg_app", "public"),
    ] {
        assert_eq!(
            column(
                &direct(db).await,
                &format!("SELECT version FROM {schema}.pgtenant_migrations ORDER BY 1")
            )
            .await,
            vec!["1", "2", "3", "4"],
            "{db}.{schema}"
        );
    }

    // Serve: identical SQL for every mode, each tenant sees its own rows.
    let proxy = start_proxy(&catalog_config_text("mg_app", "mg_platform", "")).await;
    for key in ["acme", "globex", "beta", "gamma"] {
        let c = connect(&proxy, &format!("user=app.{key} dbname=mg_app"))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        c.execute(
            "INSERT INTO customers(name, email, note) VALUES ($1, $2, 'managed')",
            &[&format!("{key} customer"), &format!("{key}@example.com")],
        )
        .await
        .unwrap_or_else(|e| panic!("{key} insert: {e}"));
        assert_eq!(
            column(&c, "SELECT name || '/' || note FROM customers").await,
            vec![format!("{key} customer/managed")],
            "{key} sees only its rows"
        );
        // The tenant role can't borrow the admin's rights, whatever SQL.
        let e = c
            .batch_execute(&format!(
                "DO $$BEGIN EXECUTE 'SET ' || 'ROLE ' || '{ADMIN_ROLE}'; END$$"
            ))
            .await
            .expect_err("SET ROLE to the admin");
        assert_eq!(
            sqlstate(&e),
            (
                "42501".into(),
                format!("permission denied to set role \"{ADMIN_ROLE}\"")
            ),
            "{key}"
        );
    }
    proxy.shutdown().await;

    // Drop: everything each tenant had goes, through the same admin.
    for key in ["acme", "globex", "beta"] {
        let (ok, out, err) = cli(&path, &["tenant", "drop", key, "--yes"]).await;
        assert!(ok, "drop {key}: {out}{err}");
        assert_eq!(err, "", "drop {key} is quiet");
    }
    assert_eq!(
        column(
            &pg,
            "SELECT rolname FROM pg_roles WHERE rolname IN ('t_acme', 't_globex')
             UNION ALL SELECT datname FROM pg_database WHERE datname = 'globex'"
        )
        .await,
        Vec::<String>::new()
    );
    let app = direct("mg_app").await;
    assert_eq!(
        column(
            &app,
            "SELECT nspname FROM pg_namespace WHERE nspname = 't_acme'
             UNION ALL SELECT name FROM public.customers ORDER BY 1"
        )
        .await,
        vec!["gamma customer"],
        "acme's schema and beta's rows are gone, gamma's stay"
    );
    let (_, listed, _) = cli(&path, &["tenant", "list"]).await;
    let keys: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(keys, vec!["gamma"]);
}

#[tokio::test]
async fn the_hardening_sql_is_printed_for_a_superuser_to_run() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .arg("shared-hardening-sql")
        .output()
        .await
        .expect("run pgtenant");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        pgtenant::provision::HARDENING_SQL
    );
    // It applies as written, and afterwards a plain role (as the shared
    // role is) reaches none of it.
    managed_database("mg_hardened").await;
    admin_sql("mg_hardened", pgtenant::provision::HARDENING_SQL).await;
    assert_eq!(
        scalar(
            &direct("mg_hardened").await,
            "SELECT concat_ws(',',
                 has_table_privilege('app_service', 'pg_catalog.pg_stat_activity', 'SELECT'),
                 has_function_privilege('app_service', 'pg_catalog.pg_cancel_backend(integer)', 'EXECUTE'),
                 has_function_privilege('app_service', 'pg_catalog.lo_open(oid, integer)', 'EXECUTE'))"
        )
        .await,
        "f,f,f"
    );
}
