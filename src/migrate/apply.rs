//! Migrating one target on one connection: take the target's advisory lock
//! (try-lock on this session, retried with jittered back-off), re-read its
//! ledger, stop at drift, then apply each missing file. A transactional file
//! and its ledger row commit together; `lock_timeout` bounds how long any
//! statement may sit in a lock queue in front of tenant traffic, and a timed-out
//! attempt is rolled back and retried later.

use super::files::MigrationFile;
use super::ledger::{self, Applied};
use super::target::Target;
use crate::sql::statement_texts;
use crate::tenant::quote_ident;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// What a run does to each target: apply what is missing, or revert newest
/// first down to a version (`migrate down --to N`: versions above N go).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Up,
    Down {
        to: u32,
    },
}

#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// `lock_timeout` of every migration statement.
    pub lock_timeout: Duration,
    /// Attempts per file after a lock timeout, before the target fails.
    pub lock_retries: u32,
    /// How long to keep trying for a target another runner holds.
    pub busy_wait: Duration,
    /// The ledger table's name in each target.
    pub ledger: String,
}

impl ApplySettings {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            lock_timeout: cfg.migrations.lock_timeout,
            lock_retries: cfg.migrations.lock_retries,
            busy_wait: cfg.migrations.busy_wait,
            ledger: cfg.migrations.ledger_table.clone(),
        }
    }
}

/// Why a target stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub version: u32,
    pub file: String,
    pub sqlstate: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)?;
        if !self.sqlstate.is_empty() {
            write!(f, " (SQLSTATE {})", self.sqlstate)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Up to date now; `applied` lists what this run added.
    Done {
        from: Option<u32>,
        to: Option<u32>,
        applied: Vec<u32>,
    },
    /// Applied files whose checksum changed: nothing more is applied.
    Drift { at: Option<u32>, versions: Vec<u32> },
    /// Stopped at its last good version.
    Failed {
        from: Option<u32>,
        to: Option<u32>,
        failure: Failure,
    },
    /// Another runner held the target for all of `busy_wait`.
    Busy { at: Option<u32> },
}

/// Highest applied version.
pub fn version_of(applied: &[Applied]) -> Option<u32> {
    applied.iter().map(|a| a.version).max()
}

/// Applied versions whose file now has another checksum.
pub fn drifted(applied: &[Applied], files: &[MigrationFile]) -> Vec<u32> {
    let mut v: Vec<u32> = applied
        .iter()
        .filter(|a| {
            files
                .iter()
                .any(|f| f.version == a.version && f.checksum != a.checksum)
        })
        .map(|a| a.version)
        .collect();
    v.sort_unstable();
    v
}

/// Files the ledger lacks, in order.
pub fn pending<'f>(applied: &[Applied], files: &'f [MigrationFile]) -> Vec<&'f MigrationFile> {
    files
        .iter()
        .filter(|f| !applied.iter().any(|a| a.version == f.version))
        .collect()
}

/// A failure of `file` (a migration, or a step such as "(ledger)").
fn failure(version: u32, file: String, e: &tokio_postgres::Error) -> Failure {
    let (sqlstate, message) = match e.as_db_error() {
        Some(d) => (d.code().code().to_owned(), d.message().to_owned()),
        None => (String::new(), e.to_string()),
    };
    Failure {
        version,
        file,
        sqlstate,
        message,
    }
}

/// The target failed before applying anything.
fn failed_step(step: &str, e: &tokio_postgres::Error) -> Outcome {
    Outcome::Failed {
        from: None,
        to: None,
        failure: failure(0, step.to_owned(), e),
    }
}

/// A lock timeout or a deadlock: nothing was applied, try again later.
fn is_retryable(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
        || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
}

/// Back-off before attempt `n` (1-based): 50 ms doubling to 2 s, ±50% jitter,
/// so runners and retries don't march in step.
fn backoff(n: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << n.min(6)).min(2000);
    let jitter: f64 = rand::random_range(0.5..1.5);
    Duration::from_millis((base as f64 * jitter) as u64)
}

/// Migrates `t` on `db` (an admin connection to its database). `gate` is the
/// process's per-database lock: transactional files hold it shared, files
/// outside a transaction hold it alone (CREATE INDEX CONCURRENTLY waits for
/// every open transaction in the database, ours included).
///
/// A target with its own role is migrated entirely as that role (ledger
/// included): its schema belongs to the tenant, and nothing the tenant put
/// there (a trigger on the ledger, an operator) may ever run as the admin.
/// The session is wiped afterwards (`DISCARD ALL`) for the next target.
pub async fn apply_target(
    db: &Client,
    t: &Target,
    files: &[MigrationFile],
    s: &ApplySettings,
    gate: &RwLock<()>,
) -> Outcome {
    migrate_target(db, t, files, s, gate, Direction::Up).await
}

/// [`apply_target`], or its reverse (see [`Direction`]): in both, the
/// target's lock, its role, `lock_timeout` with retries, one transaction per
/// file with its ledger row (added or removed).
pub async fn migrate_target(
    db: &Client,
    t: &Target,
    files: &[MigrationFile],
    s: &ApplySettings,
    gate: &RwLock<()>,
    direction: Direction,
) -> Outcome {
    // No transaction is open here (each step ends its own, a failed one
    // with ROLLBACK), so no stray ROLLBACK draws a server WARNING.
    let outcome = as_target(db, t, files, s, gate, direction).await;
    let _ = db.batch_execute("DISCARD ALL").await;
    outcome
}

async fn as_target(
    db: &Client,
    t: &Target,
    files: &[MigrationFile],
    s: &ApplySettings,
    gate: &RwLock<()>,
    direction: Direction,
) -> Outcome {
    if let Some(r) = &t.role {
        if let Err(e) = db
            .batch_execute(&format!("SET ROLE {}", quote_ident(r)))
            .await
        {
            return failed_step("(set role)", &e);
        }
    }
    let lock = t.lock_name();
    match lock_target(db, &lock, s.busy_wait).await {
        Ok(true) => {}
        Ok(false) => {
            let at = ledger::read(db, &t.schema, &s.ledger)
                .await
                .ok()
                .and_then(|a| version_of(&a));
            return Outcome::Busy { at };
        }
        Err(e) => return failed_step("(advisory lock)", &e),
    }
    let outcome = locked(db, t, files, s, gate, direction).await;
    if matches!(outcome, Outcome::Failed { .. }) {
        let _ = db.batch_execute("ROLLBACK").await;
    }
    unlock_target(db, &lock).await;
    outcome
}

/// Takes a target's advisory lock on this session (try-lock, retried with
/// jittered back-off for up to `busy_wait`); false when another runner held
/// it throughout. Every runner (SQL files, `--each`, `tenant create`, other
/// replicas) takes this one lock per target.
pub(super) async fn lock_target(
    db: &Client,
    lock: &str,
    busy_wait: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let row = db
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgtenant-migrate'), pg_catalog.hashtext($1))",
                &[&lock],
            )
            .await?;
        if row.get::<_, bool>(0) {
            return Ok(true);
        }
        if started.elapsed() >= busy_wait {
            return Ok(false);
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

pub(super) async fn unlock_target(db: &Client, lock: &str) {
    let _ = db
        .execute(
            "SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgtenant-migrate'), pg_catalog.hashtext($1))",
            &[&lock],
        )
        .await;
}

async fn locked(
    db: &Client,
    t: &Target,
    files: &[MigrationFile],
    s: &ApplySettings,
    gate: &RwLock<()>,
    direction: Direction,
) -> Outcome {
    let setup = |e: tokio_postgres::Error| failed_step("(ledger)", &e);
    // Under the lock: a ledger pgtenant kept under its old name is renamed
    // (once), then re-read: another runner may have applied some already.
    if let Err(e) = ledger::adopt_old_name(db, &t.schema, &s.ledger).await {
        return setup(e);
    }
    if let Err(e) = db
        .batch_execute(&ledger::ledger_ddl(&t.schema, &s.ledger))
        .await
    {
        return setup(e);
    }
    let applied = match ledger::read(db, &t.schema, &s.ledger).await {
        Ok(a) => a,
        Err(e) => return setup(e),
    };
    let from = version_of(&applied);
    if let Direction::Down { to } = direction {
        return revert(db, t, files, s, gate, &applied, to).await;
    }
    let drift = drifted(&applied, files);
    if !drift.is_empty() {
        return Outcome::Drift {
            at: from,
            versions: drift,
        };
    }
    let mut to = from;
    let mut done = Vec::new();
    for f in pending(&applied, files) {
        let insert = |ms: &str| ledger_insert(t, f, ms, &s.ledger);
        let step = Step {
            file: f.file_name(),
            sql: &f.sql,
            no_transaction: f.no_transaction,
            ledger: &insert,
        };
        if let Err(e) = run_step(db, t, &step, s, gate).await {
            return Outcome::Failed {
                from,
                to,
                failure: failure(f.version, f.file_name(), &e),
            };
        }
        to = Some(to.map_or(f.version, |v| v.max(f.version)));
        done.push(f.version);
    }
    Outcome::Done {
        from,
        to,
        applied: done,
    }
}

/// Reverts the versions above `to`, newest first, each with its down file
/// (in the same transaction as the removal of its ledger row). A version
/// without one stops the target there, as does drift in what is reverted.
async fn revert(
    db: &Client,
    t: &Target,
    files: &[MigrationFile],
    s: &ApplySettings,
    gate: &RwLock<()>,
    applied: &[Applied],
    to: u32,
) -> Outcome {
    let from = version_of(applied);
    let mut versions: Vec<u32> = applied
        .iter()
        .map(|a| a.version)
        .filter(|v| *v > to)
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    let drift: Vec<u32> = drifted(applied, files)
        .into_iter()
        .filter(|v| *v > to)
        .collect();
    if !drift.is_empty() {
        return Outcome::Drift {
            at: from,
            versions: drift,
        };
    }
    let mut at = from;
    let mut done = Vec::new();
    for v in versions {
        let stop = |file: String, message: String| Outcome::Failed {
            from,
            to: at,
            failure: Failure {
                version: v,
                file,
                sqlstate: String::new(),
                message,
            },
        };
        let Some(f) = files.iter().find(|f| f.version == v) else {
            return stop(
                format!("version {v}"),
                "applied, but its file is not in the migrations folder: nothing to revert it with"
                    .into(),
            );
        };
        let Some(down) = &f.down else {
            return stop(
                f.file_name(),
                format!("no {} to revert it with", f.down_name()),
            );
        };
        let delete = |_: &str| ledger_delete(t, v, &s.ledger);
        let step = Step {
            file: f.down_name(),
            sql: &down.sql,
            no_transaction: down.no_transaction,
            ledger: &delete,
        };
        if let Err(e) = run_step(db, t, &step, s, gate).await {
            return Outcome::Failed {
                from,
                to: at,
                failure: failure(v, f.down_name(), &e),
            };
        }
        at = applied.iter().map(|a| a.version).filter(|x| *x < v).max();
        done.push(v);
    }
    Outcome::Done {
        from,
        to: at,
        applied: done,
    }
}

/// One file's work: its SQL, then the ledger statement (given the
/// duration in ms, as SQL) in the same transaction when it has one.
struct Step<'a> {
    file: String,
    sql: &'a str,
    no_transaction: bool,
    ledger: &'a (dyn Fn(&str) -> String + Sync),
}

/// Runs `step`, retried after a lock timeout or deadlock (nothing was
/// changed then) up to `lock_retries` times. Files outside a transaction
/// hold the database's gate alone (see [`apply_target`]).
async fn run_step(
    db: &Client,
    t: &Target,
    step: &Step<'_>,
    s: &ApplySettings,
    gate: &RwLock<()>,
) -> Result<(), tokio_postgres::Error> {
    let mut tries = 0;
    loop {
        let r = if step.no_transaction {
            let _alone = gate.write().await;
            outside_transaction(db, t, step, s).await
        } else {
            let _shared = gate.read().await;
            in_transaction(db, t, step, s).await
        };
        match r {
            Err(e) if is_retryable(&e) && tries < s.lock_retries => {
                tries += 1;
                tracing::info!(target = %t.label(), file = %step.file, tries, "lock_timeout; retrying");
                tokio::time::sleep(backoff(tries)).await;
            }
            other => return other,
        }
    }
}

/// Removes version `v`'s ledger row (search_path pinned, as for inserts).
fn ledger_delete(t: &Target, v: u32, ledger: &str) -> String {
    format!(
        "SET LOCAL search_path = pg_catalog, pg_temp;
         DELETE FROM {schema}.{ledger} WHERE version = {v};",
        schema = quote_ident(&t.schema),
        ledger = quote_ident(ledger),
    )
}

/// The settings a migration runs with (`scope` LOCAL or SESSION).
fn context_sql(t: &Target, lock_timeout: Duration, scope: &str) -> String {
    format!(
        "SET {scope} lock_timeout = '{}ms'; SET {scope} search_path TO {}; SET {scope} pgtenant.target_mode = '{}';",
        lock_timeout.as_millis(),
        quote_ident(&t.schema),
        t.mode_name()
    )
}

/// Writes `f`'s ledger row, with search_path pinned to pg_catalog so no
/// operator or function of the target's schema can stand in for a built-in.
fn ledger_insert(t: &Target, f: &MigrationFile, duration_ms: &str, ledger: &str) -> String {
    format!(
        "SET LOCAL search_path = pg_catalog, pg_temp;
         INSERT INTO {schema}.{ledger}(version, name, checksum, duration_ms)
         VALUES ({version}, {name}, '{checksum}', {duration_ms});",
        schema = quote_ident(&t.schema),
        ledger = quote_ident(ledger),
        version = f.version,
        name = crate::sql::literal(&f.name),
        checksum = f.checksum,
    )
}

async fn in_transaction(
    db: &Client,
    t: &Target,
    step: &Step<'_>,
    s: &ApplySettings,
) -> Result<(), tokio_postgres::Error> {
    // One round trip: the file and its ledger row in one transaction, the
    // duration measured by the server (statement_timestamp() is when this
    // query string arrived).
    let script = format!(
        "BEGIN; {context}\n{sql}\n;\n{ledger} COMMIT;",
        context = context_sql(t, s.lock_timeout, "LOCAL"),
        sql = step.sql,
        ledger = (step.ledger)(
            "round(date_part('epoch', clock_timestamp() - statement_timestamp()) * 1000)::bigint"
        ),
    );
    let r = db.batch_execute(&script).await;
    if r.is_err() {
        let _ = db.batch_execute("ROLLBACK").await;
    }
    r
}

/// Statements that build or drop an index CONCURRENTLY: they never queue
/// tenant reads or writes, and they wait for older transactions by design,
/// so `lock_timeout` would only make them fail half-done.
fn concurrent_index_build(stmt: &str) -> bool {
    crate::sql::statements(stmt).first().is_some_and(|tokens| {
        tokens
            .iter()
            .any(|t| matches!(t, crate::sql::Token::Word(w) if w == "concurrently"))
    })
}

/// Fails when the target has an invalid index: what an interrupted CREATE
/// INDEX CONCURRENTLY leaves, which `IF NOT EXISTS` would then skip for ever.
const NO_INVALID_INDEX: &str = "DO $pgtenant$
DECLARE bad text;
BEGIN
    SELECT pg_catalog.string_agg(c.relname, ', ') INTO bad
      FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
     WHERE NOT i.indisvalid AND c.relnamespace =
           (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = pg_catalog.current_schema());
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'invalid index(es) ' || bad || ' left by an interrupted concurrent build',
            HINT = 'drop them (DROP INDEX CONCURRENTLY) and run the migration again';
    END IF;
END
$pgtenant$";

/// One statement at a time, outside any transaction block; the ledger row
/// follows the last statement. A failure part-way leaves the statements that
/// ran (write such files idempotently: `IF NOT EXISTS`).
async fn outside_transaction(
    db: &Client,
    t: &Target,
    step: &Step<'_>,
    s: &ApplySettings,
) -> Result<(), tokio_postgres::Error> {
    let started = Instant::now();
    let work = async {
        db.batch_execute(&context_sql(t, s.lock_timeout, "SESSION"))
            .await?;
        for stmt in statement_texts(step.sql) {
            if concurrent_index_build(stmt) {
                db.batch_execute("SET lock_timeout = 0").await?;
                db.batch_execute(stmt).await?;
                db.batch_execute(&format!(
                    "SET lock_timeout = '{}ms'",
                    s.lock_timeout.as_millis()
                ))
                .await?;
            } else {
                db.batch_execute(stmt).await?;
            }
        }
        db.batch_execute(NO_INVALID_INDEX).await?;
        let ms = started.elapsed().as_millis().to_string();
        db.batch_execute(&format!("BEGIN; {} COMMIT;", (step.ledger)(&ms)))
            .await
    };
    let r = work.await;
    if r.is_err() {
        let _ = db.batch_execute("ROLLBACK").await;
    }
    let _ = db
        .batch_execute("RESET lock_timeout; RESET search_path; RESET pgtenant.target_mode")
        .await;
    r
}
