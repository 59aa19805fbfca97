//! Frameworks with their default settings through pgtenant in transaction
//! mode (issue 10's matrix), each on a schema, a database and a shared
//! tenant over a quota of 3. Each framework's own migrations run through
//! `pgtenant migrate --each` (twice), on the one-time route with the
//! target owner's rights; the shared schema's tables get a `tenant_id` and
//! row-level security in their migration when `pgtenant.target_mode` is
//! `shared`, and a second shared tenant sees none of the first one's rows.
//! - Django 5.2 (psycopg 3): `migrate`; ORM CRUD, `transaction.atomic`,
//!   `.iterator()` (a WITH HOLD cursor fetched across transactions) while 20
//!   threads run;
//! - SQLAlchemy 2 on psycopg 3 and on asyncpg: Alembic upgrade / downgrade /
//!   upgrade; ORM CRUD, 20 threads and 20 tasks over the default pools;
//! - asyncpg: its own versioned migrations; CRUD, a rolled-back transaction,
//!   20 workers over its Pool (statement cache and reset on release);
//! - TypeORM (pg): runMigrations / undoLastMigration / runMigrations; entity
//!   CRUD, a rolled-back transaction, 20 concurrent workers;
//! - sqlx: its Migrator on a folder (`examples/sqlx_migrate.rs`); query /
//!   query_as, a transaction, 20 tasks;
//! - Rails ActiveRecord: migrations with its advisory lock; model CRUD,
//!   `transaction do`, 20 threads;
//! - pgjdbc + HikariCP: Flyway-style versioned migrations; a
//!   PreparedStatement run 100 times (server-prepared from the fifth), a
//!   batch insert, SERIALIZABLE with a rollback, 20 threads;
//! - Go pgx v4: versioned migrations; pgxpool, CopyFrom (through a temp
//!   staging table on the shared tenant, where COPY FROM meets RLS), a
//!   rolled-back transaction, 20 goroutines.
//!
//! scripts/test.sh installs them; a missing one fails the test.

mod common;

use common::*;
use pgtenant::config::TenantMode;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// One framework's tenants in its own database `<p>_app`: `<p>schema`,
/// `<p>db`, `<p>sh1` (on the shared schema the framework migrates) and
/// `<p>sh2` (a second shared tenant, which must see none of sh1's rows),
/// served by pgtenant, with the config file `pgtenant migrate` reads.
struct Matrix {
    prefix: String,
    app_db: String,
    config: PathBuf,
    proxy: pgtenant::app::Running,
}

impl Matrix {
    async fn new(prefix: &str) -> Matrix {
        let app_db = format!("{prefix}_app");
        let text = catalog_config_text(&app_db, "fw_platform", "[tiers.t]\npool_size = 3")
            .replace("{PG_PORT}", &pg_port().to_string());
        let config = scratch(&format!("fw-{prefix}.toml"));
        std::fs::write(&config, &text).expect("write the config");
        let cfg = catalog_config(&text);
        for (suffix, mode) in [
            ("schema", TenantMode::Schema),
            ("db", TenantMode::Database),
            ("sh1", TenantMode::Shared),
            ("sh2", TenantMode::Shared),
        ] {
            provision_tenant(&cfg, &format!("{prefix}{suffix}"), mode, "t").await;
        }
        Matrix {
            prefix: prefix.to_owned(),
            proxy: start_proxy(&text).await,
            app_db,
            config,
        }
    }

    fn port(&self) -> u16 {
        self.proxy.addr.port()
    }

    /// The tenants each scenario runs as: schema, database, shared.
    fn legs(&self) -> [String; 3] {
        ["schema", "db", "sh1"].map(|s| format!("{}{s}", self.prefix))
    }

    /// `pgtenant migrate --each --tenant T --verbose -- PROGRAM ARGS` (which
    /// must succeed); the command's output for that target.
    async fn each(&self, tenant: &str, program: &OsStr, args: &[&OsStr]) -> Vec<String> {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
            .arg("migrate")
            .arg("--config")
            .arg(&self.config)
            .args(["--each", "--verbose", "--tenant", tenant, "--"])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run pgtenant migrate --each");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "migrate --each on {tenant}:\n{stdout}{stderr}"
        );
        let label = if tenant.ends_with("sh1") {
            format!("shared:{}.public", self.app_db)
        } else {
            tenant.to_owned()
        };
        let prefix = format!("{label} | ");
        stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect()
    }

    /// Migrates every leg with `--each`, twice (the second finds nothing to
    /// do); each run's output must be `want`.
    async fn migrate_each(&self, program: &OsStr, args: &[&OsStr], want: &str) {
        for tenant in self.legs() {
            for run in ["first", "second"] {
                assert_eq!(
                    self.each(&tenant, program, args).await,
                    vec![want.to_owned()],
                    "{tenant}, {run} run"
                );
            }
        }
    }

    /// sh1 left `rows` rows in the shared `table`; sh2 sees none of them.
    async fn shared_rows_stay_with_their_tenant(&self, table: &str, rows: i64) {
        let count = format!("SELECT count(*)::text FROM {table}");
        for (tenant, want) in [("sh1", rows.to_string()), ("sh2", "0".to_owned())] {
            let c = connect(
                &self.proxy,
                &format!("user=app.{}{tenant} dbname={}", self.prefix, self.app_db),
            )
            .await
            .expect("connect");
            assert_eq!(scalar(&c, &count).await, want, "{tenant} in {table}");
        }
        assert_eq!(
            scalar(
                &direct(&self.app_db).await,
                &format!(
                    "SELECT count(*) || ' rows of ' || count(DISTINCT tenant_id) || ' tenant(s)' FROM public.{table}"
                )
            )
            .await,
            format!("{rows} rows of 1 tenant(s)")
        );
    }
}

/// `tests/drivers/<script>`.
fn driver(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/drivers")
        .join(script)
}

/// The venv's Python with the frameworks.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "Python venv with the frameworks missing at {}: run ./scripts/test.sh, which installs it",
        python.display()
    );
    python
}

/// Asserts TypeORM is installed (tests/drivers/node_modules).
fn node() -> &'static OsStr {
    let typeorm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/node_modules/typeorm");
    assert!(
        typeorm.exists(),
        "TypeORM missing at {}: run ./scripts/test.sh, which installs it",
        typeorm.display()
    );
    "node".as_ref()
}

/// Runs `tests/drivers/<script>` with `program` as `app.<tenant>` through
/// pgtenant; its last line of output.
async fn run_script(program: &OsStr, script: &str, m: &Matrix, tenant: &str) -> String {
    run_app(program, &[driver(script).as_os_str()], m, tenant).await
}

/// Runs `program args` as `app.<tenant>` through pgtenant (PGHOST, PGPORT,
/// PGUSER, PGDATABASE); its last line of output.
async fn run_app(program: &OsStr, args: &[&OsStr], m: &Matrix, tenant: &str) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", m.port().to_string())
        .env("PGUSER", format!("app.{tenant}"))
        .env("PGDATABASE", &m.app_db)
        .output()
        .await
        .expect("run the framework's app");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} on {tenant} failed:\n{stdout}{}",
        program.to_string_lossy(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().expect("a JSON line").to_owned()
}

#[tokio::test]
async fn django_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("dj").await;
    let script = driver("django_app.py");
    m.migrate_each(
        python().as_os_str(),
        &[script.as_os_str(), "migrate".as_ref()],
        r#"{"migrated": ["0001_initial"]}"#,
    )
    .await;
    let want = format!(
        r#"{{"iterated": 3000, "sum": {}, "errors": []}}"#,
        (0..3000).sum::<i64>()
    );
    for tenant in m.legs() {
        assert_eq!(
            run_script(python().as_os_str(), "django_app.py", &m, &tenant).await,
            want,
            "{tenant}"
        );
    }
    // Django's tables went to the schema tenant's own schema and the shared one.
    assert_eq!(
        column(
            &direct(&m.app_db).await,
            "SELECT schemaname FROM pg_tables WHERE tablename = 'django_shop_item' ORDER BY 1"
        )
        .await,
        vec!["public", "t_djschema"]
    );
    m.shared_rows_stay_with_their_tenant("django_shop_item", 3000)
        .await;
    m.proxy.shutdown().await;
}

#[tokio::test]
async fn sqlalchemy_and_alembic_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("sa").await;
    let script = driver("sqlalchemy_app.py");
    m.migrate_each(
        python().as_os_str(),
        &[script.as_os_str(), "migrate".as_ref()],
        r#"{"alembic": "0002"}"#,
    )
    .await;
    let want = format!(
        r#"{{"psycopg": {}, "asyncpg": {}, "errors": []}}"#,
        (0..100).sum::<i64>(),
        (0..100).sum::<i64>()
    );
    for tenant in m.legs() {
        assert_eq!(
            run_script(python().as_os_str(), "sqlalchemy_app.py", &m, &tenant).await,
            want,
            "{tenant}"
        );
    }
    assert_eq!(
        column(
            &direct(&m.app_db).await,
            "SELECT schemaname FROM pg_tables WHERE tablename = 'alembic_version' ORDER BY 1"
        )
        .await,
        vec!["public", "t_saschema"]
    );
    m.shared_rows_stay_with_their_tenant("sa_items", 100).await;
    m.proxy.shutdown().await;
}

#[tokio::test]
async fn asyncpg_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("ap").await;
    let script = driver("asyncpg_app.py");
    m.migrate_each(
        python().as_os_str(),
        &[script.as_os_str(), "migrate".as_ref()],
        r#"{"migrated": [1, 2]}"#,
    )
    .await;
    let want = format!(r#"{{"sum": {}, "errors": []}}"#, (0..100).sum::<i64>());
    for tenant in m.legs() {
        assert_eq!(
            run_script(python().as_os_str(), "asyncpg_app.py", &m, &tenant).await,
            want,
            "{tenant}"
        );
    }
    m.shared_rows_stay_with_their_tenant("ap_items", 100).await;
    m.proxy.shutdown().await;
}

#[tokio::test]
async fn typeorm_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("to").await;
    let script = driver("typeorm_app.js");
    m.migrate_each(
        node(),
        &[script.as_os_str(), "migrate".as_ref()],
        r#"{"migrated":["CreateItems1700000000000","IndexItems1700000000001"]}"#,
    )
    .await;
    let want = format!(r#"{{"sum":{},"errors":[]}}"#, (0..100).sum::<i64>());
    for tenant in m.legs() {
        assert_eq!(
            run_script(node(), "typeorm_app.js", &m, &tenant).await,
            want,
            "{tenant}"
        );
    }
    m.shared_rows_stay_with_their_tenant("to_items", 100).await;
    m.proxy.shutdown().await;
}

/// sqlx with its defaults (named prepared statements cached per connection,
/// a pool of 10): `query` / `query_as`, a rolled-back transaction, 20 tasks;
/// the sum of `qty`.
async fn sqlx_scenario(m: &Matrix, tenant: &str) -> i64 {
    use sqlx::postgres::PgPoolOptions;
    let url = format!(
        "postgres://app.{tenant}@127.0.0.1:{}/{}",
        m.port(),
        m.app_db
    );
    let pool = PgPoolOptions::new()
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{tenant}: connect: {e}"));
    sqlx::query("DELETE FROM sx_items")
        .execute(&pool)
        .await
        .expect("clear");
    for i in 0..100i32 {
        sqlx::query("INSERT INTO sx_items (name, qty) VALUES ($1, $2)")
            .bind(format!("row-{i}"))
            .bind(i)
            .execute(&pool)
            .await
            .expect("insert");
    }
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO sx_items (name) VALUES ('rolled back')")
        .execute(&mut *tx)
        .await
        .expect("insert in tx");
    tx.rollback().await.expect("rollback");
    let tasks: Vec<_> = (0..20i32)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let mut tx = pool.begin().await.expect("begin");
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO sx_items (name, qty) VALUES ($1, $2) RETURNING id",
                    )
                    .bind(format!("w{n}"))
                    .bind(n)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("insert");
                    sqlx::query("DELETE FROM sx_items WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .expect("delete");
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let (sum,): (i64,) = sqlx::query_as("SELECT sum(qty)::bigint FROM sx_items")
        .fetch_one(&pool)
        .await
        .expect("sum");
    pool.close().await;
    sum
}

/// `examples/sqlx_migrate.rs`, which `cargo test` builds beside this binary.
fn sqlx_migrate() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples/sqlx_migrate");
    assert!(
        bin.exists(),
        "{} missing: cargo test builds it (examples/sqlx_migrate.rs)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("sx").await;
    m.migrate_each(sqlx_migrate().as_os_str(), &[], r#"{"migrated":[1,2]}"#)
        .await;
    for tenant in m.legs() {
        assert_eq!(
            sqlx_scenario(&m, &tenant).await,
            (0..100).sum::<i64>(),
            "{tenant}"
        );
    }
    m.shared_rows_stay_with_their_tenant("sx_items", 100).await;
    m.proxy.shutdown().await;
}

#[tokio::test]
async fn rails_activerecord_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("ar").await;
    let script = driver("rails_app.rb");
    m.migrate_each(
        "ruby".as_ref(),
        &[script.as_os_str(), "migrate".as_ref()],
        r#"{"migrated":["20240101000000","20240102000000"]}"#,
    )
    .await;
    let want = format!(r#"{{"sum":{},"errors":[]}}"#, (0..100).sum::<i64>());
    for tenant in m.legs() {
        assert_eq!(
            run_script("ruby".as_ref(), "rails_app.rb", &m, &tenant).await,
            want,
            "{tenant}"
        );
    }
    // Rails' schema_migrations and pgtenant's ledger side by side.
    assert_eq!(
        column(
            &direct(&m.app_db).await,
            "SELECT tablename FROM pg_tables WHERE schemaname = 't_arschema'
                AND tablename IN ('schema_migrations', 'pgtenant_migrations') ORDER BY 1"
        )
        .await,
        vec!["pgtenant_migrations", "schema_migrations"]
    );
    m.shared_rows_stay_with_their_tenant("ar_items", 100).await;
    m.proxy.shutdown().await;
}

/// pgjdbc and HikariCP from Debian (scripts/test.sh installs them), with
/// slf4j-nop so HikariCP logs nothing.
fn jdbc_classpath() -> String {
    let jars = [
        "postgresql.jar",
        "HikariCP.jar",
        "slf4j-api.jar",
        "slf4j-nop.jar",
    ]
    .map(|j| Path::new("/usr/share/java").join(j));
    for j in &jars {
        assert!(
            j.exists(),
            "{} missing: run ./scripts/test.sh, which installs libpostgresql-jdbc-java, libhikaricp-java and libslf4j-java",
            j.display()
        );
    }
    jars.map(|j| j.display().to_string()).join(":")
}

#[tokio::test]
async fn pgjdbc_and_hikaricp_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("jd").await;
    let cp = jdbc_classpath();
    let app = driver("JdbcApp.java");
    let args: [&OsStr; 3] = ["-cp".as_ref(), cp.as_ref(), app.as_os_str()];
    let mut migrate = args.to_vec();
    migrate.push("migrate".as_ref());
    m.migrate_each("java".as_ref(), &migrate, r#"{"migrated":[1,2]}"#)
        .await;
    let want = format!(
        r#"{{"sum":{},"isolation":"serializable","errors":[]}}"#,
        (0..100).sum::<i64>()
    );
    for tenant in m.legs() {
        assert_eq!(
            run_app("java".as_ref(), &args, &m, &tenant).await,
            want,
            "{tenant}"
        );
    }
    m.shared_rows_stay_with_their_tenant("jd_items", 100).await;
    m.proxy.shutdown().await;
}

/// `tests/drivers/pgx_app.go` built with Debian's Go and pgx v4 (GOPATH
/// mode, offline), once per test binary.
async fn pgx_app() -> PathBuf {
    static BUILT: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let gopath = Path::new("/usr/share/gocode/src/github.com/jackc/pgx/v4");
            assert!(
                gopath.exists(),
                "pgx v4 missing at {}: run ./scripts/test.sh, which installs golang-go and golang-github-jackc-pgx-v4-dev",
                gopath.display()
            );
            let bin = scratch("pgx-app");
            let out = tokio::process::Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(driver("pgx_app.go"))
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .output()
                .await
                .expect("run go build (golang-go)");
            assert!(
                out.status.success(),
                "go build pgx_app.go: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            bin
        })
        .await
        .clone()
}

#[tokio::test]
async fn go_pgx_with_defaults_on_schema_database_and_shared_tenants() {
    let m = Matrix::new("gx").await;
    let app = pgx_app().await;
    m.migrate_each(
        app.as_os_str(),
        &["migrate".as_ref()],
        r#"{"migrated":[1,2]}"#,
    )
    .await;
    for (tenant, copy) in m.legs().into_iter().zip(["direct", "direct", "staging"]) {
        assert_eq!(
            run_app(app.as_os_str(), &[], &m, &tenant).await,
            format!(
                r#"{{"copy":"{copy}","errors":[],"sum":{}}}"#,
                (0..100).sum::<i64>()
            ),
            "{tenant}"
        );
    }
    m.shared_rows_stay_with_their_tenant("gx_items", 100).await;
    m.proxy.shutdown().await;
}
