//! A migration run over many targets: plan with one connection per database
//! (all ledgers of a database in a few statements), then apply from a shared
//! work queue with bounded parallelism (`concurrency`) and a per-database
//! limit (`per_database`), connecting only where work is pending and reusing
//! each connection for the next target of the same database.

use super::apply::{drifted, migrate_target, pending, version_of, ApplySettings, Direction};
use super::files::{migration_files, MigrationFile};
use super::ledger;
use super::report::{Report, State, TargetReport};
use super::target::{targets, Target};
use crate::catalog::watcher::merged_specs;
use crate::catalog::{self, admin_config, connect, CatalogError};
use crate::config::Config;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thiserror::Error;
use tokio::sync::{RwLock, Semaphore};
use tokio_postgres::Client;

/// The run could not start (exit code 2).
#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("reading the migrations folder {dir}: {source}")]
    Files { dir: String, source: std::io::Error },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    #[error("cannot open the migration routes on 127.0.0.1: {0}")]
    Route(std::io::Error),
}

/// Called as each target finishes (the CLI's progress display).
pub type Progress = Arc<dyn Fn(&TargetReport) + Send + Sync>;

#[derive(Clone, Default)]
pub struct RunOptions {
    /// Only the target serving this tenant.
    pub tenant: Option<String>,
    /// Plan and report; change nothing.
    pub dry_run: bool,
    pub progress: Option<Progress>,
    /// Told how many targets the run covers, once it knows.
    pub on_targets: Option<Arc<dyn Fn(usize) + Send + Sync>>,
    /// Apply (default) or revert down to a version.
    pub direction: Direction,
}

/// The catalog's tenant rows (none without a catalog). A dry run only reads:
/// it doesn't create or upgrade the catalog either (no catalog table yet
/// means no catalog tenants).
pub(super) async fn catalog_rows(
    cfg: &Config,
    dry_run: bool,
) -> Result<Vec<crate::config::TenantConfig>, MigrateError> {
    Ok(match cfg.catalog {
        Some(_) if dry_run => {
            let cat = catalog::Catalog::from_config(cfg)?;
            let client = connect(cat.pg_config()).await?;
            match catalog::load(&client).await {
                Ok(rows) => rows,
                Err(CatalogError::Sql(e))
                    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                {
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(_) => {
            let cat = catalog::Catalog::from_config(cfg)?.open().await?;
            catalog::load(&cat).await?
        }
        None => Vec::new(),
    })
}

/// Connections of one database: the per-database limit, idle connections to
/// reuse, and this runner's gate for files outside a transaction.
struct Database {
    pg: crate::catalog::PgLogin,
    limit: Semaphore,
    idle: Mutex<Vec<Client>>,
    gate: Arc<RwLock<()>>,
}

/// The process-wide gate of one database: every run in this process (startup,
/// MIGRATE, catch-up, `tenant create`) shares it, so a file outside a
/// transaction never waits on another run's open transaction.
pub fn database_gate(server: &str, database: &str) -> Arc<RwLock<()>> {
    type Gates = dashmap::DashMap<(String, String), Arc<RwLock<()>>>;
    static GATES: std::sync::OnceLock<Gates> = std::sync::OnceLock::new();
    GATES
        .get_or_init(Default::default)
        .entry((server.to_owned(), database.to_owned()))
        .or_default()
        .clone()
}

impl Database {
    async fn client(&self, opened: &AtomicUsize) -> Result<Client, CatalogError> {
        let reuse = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reuse {
            Some(c) if !c.is_closed() => Ok(c),
            _ => {
                opened.fetch_add(1, Ordering::Relaxed);
                connect(&self.pg).await
            }
        }
    }

    /// Keeps a connection for the next target (apply_target left it clean).
    fn give_back(&self, c: Client) {
        if !c.is_closed() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        }
    }
}

/// Runs migrations over every target (or one tenant's).
pub async fn run(cfg: &Config, opts: &RunOptions) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let dir = cfg.migrations.dir.clone();
    let files = migration_files(std::path::Path::new(&dir))
        .map_err(|source| MigrateError::Files { dir, source })?;
    let rows = catalog_rows(cfg, opts.dry_run).await?;
    let specs = merged_specs(cfg, &rows);
    tracing::debug!(elapsed = ?started.elapsed(), tenants = specs.len(), "catalog read");
    let all = targets(cfg, &specs, opts.tenant.as_deref());
    if let Some(k) = &opts.tenant {
        if all.is_empty() {
            return Err(MigrateError::UnknownTenant(k.clone()));
        }
    }
    if let Some(f) = &opts.on_targets {
        f(all.len());
    }
    Ok(run_targets(cfg, all, files, opts, started).await)
}

/// Plans and applies `all`.
pub async fn run_targets(
    cfg: &Config,
    all: Vec<Target>,
    files: Vec<MigrationFile>,
    opts: &RunOptions,
    started: Instant,
) -> Report {
    // Where each target should end up: the newest file, or the version
    // reverted to (none for `--to 0`).
    let latest = match opts.direction {
        Direction::Up => files.iter().map(|f| f.version).max(),
        Direction::Down { to } => (to > 0).then_some(to),
    };
    let files = Arc::new(files);
    let opened = Arc::new(AtomicUsize::new(0));
    let settings = ApplySettings::from_config(cfg);
    let per_database = cfg.migrations.per_database.max(1);
    let mut reports: Vec<TargetReport> = Vec::with_capacity(all.len());
    // Per database, then interleaved, so workers spread over databases.
    let mut queues: Vec<VecDeque<(usize, Arc<Database>)>> = Vec::new();
    // Group by database; plan each with one connection.
    let mut by_db: BTreeMap<(String, String), Vec<Target>> = BTreeMap::new();
    for t in all {
        by_db
            .entry((t.server.clone(), t.database.clone()))
            .or_default()
            .push(t);
    }
    for ((server, database), targets) in by_db {
        let mut planned: Vec<TargetReport> = targets
            .into_iter()
            .map(|t| TargetReport::new(t, latest))
            .collect();
        let servable: Vec<String> = planned
            .iter()
            .filter(|r| r.target.servable)
            .map(|r| r.target.schema.clone())
            .collect();
        for r in planned.iter_mut().filter(|r| !r.target.servable) {
            r.state = State::Skipped;
            r.error = Some("suspended or cancelled".into());
        }
        let db = match admin_config(cfg, &server, &database) {
            Ok(pg) => Arc::new(Database {
                pg,
                limit: Semaphore::new(per_database),
                idle: Mutex::new(Vec::new()),
                gate: database_gate(&server, &database),
            }),
            Err(e) => {
                fail_all(&mut planned, &e.to_string());
                reports.extend(planned);
                continue;
            }
        };
        let ledgers = if servable.is_empty() {
            Ok(Default::default())
        } else {
            // Closed after planning: with many databases, planning must not
            // hold a connection to each until the workers get there.
            match db.client(&opened).await {
                Ok(c) => ledger::read_many(&c, &servable, &cfg.migrations.ledger_table)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        tracing::debug!(elapsed = ?started.elapsed(), %database, "ledgers read");
        let ledgers = match ledgers {
            Ok(l) => l,
            Err(e) => {
                fail_all(&mut planned, &format!("database {database}: {e}"));
                reports.extend(planned);
                continue;
            }
        };
        let mut mine = VecDeque::new();
        for mut r in planned {
            if r.state == State::Skipped {
                let at = ledgers.get(&r.target.schema).and_then(|a| version_of(a));
                r.from = at;
                r.to = at;
            } else {
                let applied = ledgers.get(&r.target.schema).cloned().unwrap_or_default();
                r.from = version_of(&applied);
                r.to = r.from;
                let (drift, nothing_to_do) = match opts.direction {
                    Direction::Up => (
                        drifted(&applied, &files),
                        pending(&applied, &files).is_empty(),
                    ),
                    // What a revert would touch; its own checks (down files,
                    // drift) run under the target's lock.
                    Direction::Down { to } => (Vec::new(), !applied.iter().any(|a| a.version > to)),
                };
                if !drift.is_empty() {
                    r.record(super::apply::Outcome::Drift {
                        at: r.from,
                        versions: drift,
                    });
                } else if nothing_to_do {
                    r.state = State::Ok;
                } else if !opts.dry_run {
                    mine.push_back((reports.len(), db.clone()));
                }
            }
            if r.state != State::Pending || opts.dry_run {
                if let Some(p) = &opts.progress {
                    p(&r);
                }
            }
            reports.push(r);
        }
        queues.push(mine);
    }
    let mut queue = VecDeque::new();
    while queues.iter().any(|q| !q.is_empty()) {
        for q in queues.iter_mut() {
            if let Some(item) = q.pop_front() {
                queue.push_back(item);
            }
        }
    }
    let reports = Arc::new(Mutex::new(reports));
    let queue = Arc::new(Mutex::new(queue));
    let workers = cfg.migrations.concurrency.max(1);
    let direction = opts.direction;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (queue, reports, files, opened, settings, progress) = (
            queue.clone(),
            reports.clone(),
            files.clone(),
            opened.clone(),
            settings.clone(),
            opts.progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, db)) = next else { break };
                let target = reports.lock().unwrap_or_else(|p| p.into_inner())[i]
                    .target
                    .clone();
                let outcome = match db.limit.acquire().await {
                    Ok(_permit) => {
                        reports.lock().unwrap_or_else(|p| p.into_inner())[i].state = State::Running;
                        match db.client(&opened).await {
                            Ok(c) => {
                                let o = migrate_target(
                                    &c, &target, &files, &settings, &db.gate, direction,
                                )
                                .await;
                                db.give_back(c);
                                Ok(o)
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let mut r = reports.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(o) => r[i].record(o),
                    Err(e) => {
                        r[i].state = State::Failed;
                        r[i].error = Some(e);
                    }
                }
                if let Some(p) = &progress {
                    p(&r[i]);
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "a migration worker stopped");
        }
    }
    let mut targets = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));
    if !opts.dry_run {
        // A worker that died left its target unfinished: never report it ok.
        for r in targets
            .iter_mut()
            .filter(|r| matches!(r.state, State::Running | State::Pending))
        {
            r.state = State::Failed;
            r.error = Some("the run stopped before this target finished".into());
        }
    }
    Report {
        targets,
        connections: opened.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        dry_run: opts.dry_run,
    }
}

fn fail_all(planned: &mut [TargetReport], why: &str) {
    for r in planned.iter_mut().filter(|r| r.state != State::Skipped) {
        r.state = State::Failed;
        r.error = Some(why.to_owned());
    }
}
