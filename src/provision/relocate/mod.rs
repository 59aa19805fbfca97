//! `tenant promote`, `tenant demote` and `tenant move` (SPEC §9): a tenant's
//! rows go to a new home while it keeps serving.
//!
//! 1. The new home is made (schema or database, role, every migration), or
//!    for `demote` the shared schema readied.
//! 2. Change capture goes on (`capture`), then the bulk is copied in one
//!    snapshot with COPY streams (`copy::bulk`).
//! 3. What the tenant wrote meanwhile is applied from the capture log, pass
//!    after pass, while it keeps serving, until a pass finds little.
//! 4. The tenant is held on every replica (`catalog::holds`): its running
//!    transactions finish, new ones wait. Once every live replica reports
//!    none running, the last changes are applied, sequences are advanced and
//!    the route flips in the same catalog transaction that ends the hold;
//!    replicas install the route before they release the held clients.
//! 5. The old home goes: the tenant's shared rows, or its schema or database.
//!
//! Any failure before the flip ends the hold and removes the capture and the
//! new home: the tenant stays where it was, serving, nothing deleted.

mod capture;
mod copy;

use super::dump::{advance_sequences, data_tables, find, open};
use super::{home, setup_error, shared, ProvisionError};
use crate::catalog::{self, admin_config, connect, holds};
use crate::config::{Config, TenantConfig, TenantMode};
use crate::migrate::{migration_files, Target};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// What to do with the tenant.
#[derive(Debug, Clone)]
pub enum Relocation {
    /// A shared tenant into its own schema or database (on `server`).
    Promote {
        mode: TenantMode,
        server: Option<String>,
    },
    /// A schema or database tenant back into the shared tables.
    Demote,
    /// A schema or database tenant to another server, same mode.
    Move { server: String },
}

/// Limits of a move.
#[derive(Debug, Clone)]
pub struct RelocateOptions {
    /// The longest the tenant's transactions may be held: replicas must
    /// report it quiet, and the last changes be copied, within this.
    pub max_hold: Duration,
}

impl Default for RelocateOptions {
    fn default() -> Self {
        RelocateOptions {
            max_hold: Duration::from_secs(5),
        }
    }
}

/// What a move did.
#[derive(Debug, Clone)]
pub struct RelocateReport {
    pub from: TenantConfig,
    pub to: TenantConfig,
    /// Rows copied in bulk per table.
    pub tables: Vec<(String, u64)>,
    /// Rows written or deleted by catching up, online and under the hold.
    pub caught_up: u64,
    pub passes: u32,
    /// How long the tenant's new transactions were held.
    pub hold: Duration,
    /// Changes recorded after the hold (should be none: a replica that did
    /// not see the hold). Not copied.
    pub late_changes: i64,
    /// The old home could not be removed: what to do by hand.
    pub leftover: Option<String>,
}

/// What a move reports as it goes.
pub trait RelocateProgress: Sync {
    /// Bulk copy of `table`: `bytes` so far.
    fn bytes(&self, _table: &str, _bytes: u64) {}
    /// A step, in words.
    fn step(&self, what: &str);
}

/// The move's new home, as a catalog spec.
fn new_spec(
    cfg: &Config,
    from: &TenantConfig,
    how: &Relocation,
) -> Result<TenantConfig, ProvisionError> {
    let (mode, server) = match (how, from.mode) {
        (Relocation::Promote { mode, server }, TenantMode::Shared) if *mode != TenantMode::Shared => {
            (*mode, server.clone().unwrap_or_else(|| from.server.clone()))
        }
        (Relocation::Promote { .. }, _) => {
            return Err(ProvisionError::Dump(format!(
                "tenant {:?} is not in the shared tables: promote takes a shared tenant to its own schema or database (use move for another server)",
                from.key
            )))
        }
        (Relocation::Demote, TenantMode::Schema | TenantMode::Database) => {
            (TenantMode::Shared, from.server.clone())
        }
        (Relocation::Demote, TenantMode::Shared) => {
            return Err(ProvisionError::Dump(format!(
                "tenant {:?} is in the shared tables already",
                from.key
            )))
        }
        (Relocation::Move { server }, TenantMode::Schema | TenantMode::Database) => {
            if *server == from.server {
                return Err(ProvisionError::Dump(format!(
                    "tenant {:?} is on server {server:?} already",
                    from.key
                )));
            }
            (from.mode, server.clone())
        }
        (Relocation::Move { .. }, TenantMode::Shared) => {
            return Err(ProvisionError::Dump(format!(
                "tenant {:?} is in the shared tables: promote it to its own schema or database (--server) instead",
                from.key
            )))
        }
    };
    let (database, schema) = home::route(cfg, &from.key, mode, &server)?;
    Ok(TenantConfig {
        mode,
        server,
        database: Some(database),
        schema,
        role: None,
        ..from.clone()
    })
}

/// The tenant's id, which its rows carry in the shared tables.
fn shared_id(spec: &TenantConfig) -> Result<String, ProvisionError> {
    spec.id
        .clone()
        .filter(|id| crate::config::looks_like_uuid(id))
        .ok_or_else(|| {
            ProvisionError::Dump(format!("tenant {:?} has no id in the catalog", spec.key))
        })
}

/// Same PostgreSQL cluster (a role is cluster-wide).
fn same_cluster(cfg: &Config, a: &str, b: &str) -> bool {
    match (cfg.servers.get(a), cfg.servers.get(b)) {
        (Some(a), Some(b)) => a.host == b.host && a.port == b.port,
        _ => false,
    }
}

/// What a failed move must undo, filled in as the steps go.
#[derive(Default)]
struct Undo {
    hold: Option<holds::Hold>,
    capture: Option<capture::Capture>,
    /// Rows went into the shared tables (demote): they go again.
    copied_into_shared: bool,
    /// The flip's outcome could not be seen: keep both homes.
    flip_unknown: bool,
}

/// Serialises moves of one tenant (a session lock on the mover's catalog
/// connection: a mover that dies lets go with its connection).
async fn lock_tenant(cat: &Client, key: &str) -> Result<(), ProvisionError> {
    let got: bool = cat
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('pgtenant relocate ' || $1, 0))",
            &[&key],
        )
        .await
        .map_err(setup_error("(lock tenant)"))?
        .get(0);
    if got {
        Ok(())
    } else {
        Err(ProvisionError::Dump(format!(
            "another promote, demote or move of tenant {key:?} runs"
        )))
    }
}

/// Runs a promote, demote or move of tenant `key`.
pub async fn relocate(
    cfg: &Config,
    key: &str,
    how: &Relocation,
    opts: &RelocateOptions,
    progress: &dyn RelocateProgress,
) -> Result<RelocateReport, ProvisionError> {
    let cat = catalog::Catalog::from_config(cfg)?.open().await?;
    lock_tenant(&cat, key).await?;
    let (from, from_t) = find(cfg, key).await?;
    if !catalog::load(&cat).await?.iter().any(|t| t.key == key) {
        return Err(ProvisionError::Dump(format!(
            "tenant {key:?} is defined in the config file, not the catalog: only catalog tenants can be moved"
        )));
    }
    let mut to = new_spec(cfg, &from, how)?;
    let files = migration_files(std::path::Path::new(&cfg.migrations.dir))?;
    progress.step(&format!(
        "making the new home ({} on server {})",
        catalog::mode_text(to.mode),
        to.server
    ));
    // The new home: made (and undone on failure), or the shared tables.
    let made = match to.mode {
        TenantMode::Shared => {
            let schema = to.schema.clone().unwrap_or_default();
            let database = to.database.clone().unwrap_or_default();
            to.role = Some(shared::prepare(cfg, &to.server, &database, &schema, &files).await?);
            None
        }
        _ => Some(home::make(cfg, &mut to, &files).await?),
    };
    let mut undo = Undo::default();
    let src = match admin_config(cfg, &from_t.server, &from_t.database) {
        Ok(login) => connect(&login).await,
        Err(e) => Err(e),
    };
    let src = match src {
        Ok(c) => c,
        Err(e) => {
            if let Some(home) = &made {
                home.undo(cfg).await;
            }
            return Err(e.into());
        }
    };
    let outcome = run(
        cfg,
        &cat,
        &src,
        (&from, &from_t),
        &to,
        opts,
        progress,
        &mut undo,
    )
    .await;
    match outcome {
        Ok(mut report) => {
            // Flipped: the tenant serves from its new home. Tidy the old one.
            if let Some(c) = &undo.capture {
                report.late_changes = c.pending(&src).await.unwrap_or(0);
                if let Err(e) = c.remove(&src).await {
                    report.leftover = Some(e.to_string());
                }
            }
            let mut leftovers: Vec<String> = report.leftover.take().into_iter().collect();
            if report.late_changes > 0 {
                leftovers.push(format!(
                    "the old home was kept: {} changes reached it after the hold",
                    report.late_changes
                ));
            } else {
                progress.step("removing the old home");
                let keep_role = from.role == to.role && same_cluster(cfg, &from.server, &to.server);
                if let Err(e) = home::remove_home(cfg, &from, keep_role).await {
                    leftovers.push(format!("the old home could not be removed: {e}"));
                }
            }
            report.leftover = (!leftovers.is_empty()).then(|| leftovers.join("; "));
            Ok(report)
        }
        Err(e) if undo.flip_unknown => {
            progress.step("the route change was sent but its outcome not seen: both homes kept");
            Err(ProvisionError::Dump(format!(
                "{e}; whether tenant {key:?} now routes to its new home could not be checked: see `pgtenant tenant list`, then remove the home it does not use"
            )))
        }
        Err(e) => {
            progress.step("failed: the tenant stays where it was; removing what was made");
            if let Some(hold) = &undo.hold {
                if let Err(e) = holds::release(&cat, hold).await {
                    tracing::error!(tenant = key, error = %e, "could not release the hold (replicas give it up after a minute)");
                }
            }
            if let Some(c) = &undo.capture {
                if let Err(e) = c.remove(&src).await {
                    tracing::error!(tenant = key, error = %e, "could not remove the change capture");
                }
            }
            match &made {
                Some(home) => home.undo(cfg).await,
                None if undo.copied_into_shared => {
                    // Demote: the rows this run copied into the shared
                    // tables go (the tenant had none there before: checked).
                    let out = async {
                        let db = connect(&admin_config(
                            cfg,
                            &to.server,
                            to.database.as_deref().unwrap_or_default(),
                        )?)
                        .await?;
                        shared::delete_rows(
                            &db,
                            to.schema.as_deref().unwrap_or("public"),
                            &shared_id(&to)?,
                        )
                        .await
                        .map_err(setup_error("(delete copied rows)"))
                    };
                    if let Err(e) = out.await {
                        tracing::error!(tenant = key, error = %e, "could not delete the rows copied into the shared tables");
                    }
                }
                None => {}
            }
            Err(e)
        }
    }
}

/// Steps 2 to 4 (see the module doc); `undo` says what a failure undoes.
#[allow(clippy::too_many_arguments)]
async fn run(
    cfg: &Config,
    cat: &Client,
    src_db: &Client,
    (from, from_t): (&TenantConfig, &Target),
    to: &TenantConfig,
    opts: &RelocateOptions,
    progress: &dyn RelocateProgress,
    undo: &mut Undo,
) -> Result<RelocateReport, ProvisionError> {
    let to_t =
        &Target::of(cfg, to).ok_or_else(|| ProvisionError::UnknownServer(to.server.clone()))?;
    let ledger = &cfg.migrations.ledger_table;
    let dst_db = open(cfg, to_t).await?;
    let src = copy::Side {
        db: src_db,
        schema: from_t.schema.clone(),
        tenant_id: (from.mode == TenantMode::Shared)
            .then(|| shared_id(from))
            .transpose()?,
    };
    let dst = copy::Side {
        db: &dst_db,
        schema: to_t.schema.clone(),
        tenant_id: (to.mode == TenantMode::Shared)
            .then(|| shared_id(to))
            .transpose()?,
    };
    let src_tables = data_tables(src_db, from_t, ledger).await?;
    let dst_tables = data_tables(&dst_db, to_t, ledger).await?;
    let plans = copy::plan(&src, &src_tables, &dst, &dst_tables).await?;
    if dst.tenant_id.is_some() {
        // Demote: the tenant must have no rows in the shared tables yet.
        for p in &plans {
            let any: bool = dst_db
                .query_one(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM {}.{} WHERE tenant_id = $1::text::uuid)",
                        crate::tenant::quote_ident(&dst.schema),
                        crate::tenant::quote_ident(&p.name)
                    ),
                    &[&dst.tenant_id],
                )
                .await
                .map_err(setup_error("(check shared rows)"))?
                .get(0);
            if any {
                return Err(ProvisionError::Dump(format!(
                    "tenant {:?} has rows in the shared table {:?} already",
                    to.key, p.name
                )));
            }
        }
    }
    progress.step("capturing changes");
    let keyed: Vec<(String, Option<Vec<String>>)> = plans
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.key
                    .as_ref()
                    .map(|k| k.iter().map(|(c, _)| c.clone()).collect()),
            )
        })
        .collect();
    let c = capture::install(
        src_db,
        &from.key,
        &src.schema,
        &keyed,
        src.tenant_id.as_deref(),
    )
    .await?;
    let c = &*undo.capture.insert(c);
    // The bulk: one snapshot taken after capture began, so every change
    // is in it or in the log (or both: applying one twice is harmless).
    src_db
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(setup_error("(begin)"))?;
    dst_db
        .batch_execute("BEGIN")
        .await
        .map_err(setup_error("(begin)"))?;
    undo.copied_into_shared = dst.tenant_id.is_some();
    let copied = async {
        let r = copy::bulk(&src, &dst, &plans, &|t, b| progress.bytes(t, b)).await?;
        dst_db
            .batch_execute("COMMIT")
            .await
            .map_err(setup_error("(commit)"))?;
        src_db
            .batch_execute("COMMIT")
            .await
            .map_err(setup_error("(commit)"))?;
        Ok::<_, ProvisionError>(r)
    }
    .await;
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = dst_db.batch_execute("ROLLBACK").await;
            let _ = src_db.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    // Past the copied ids at once: in the shared tables other tenants draw
    // from the same sequences while the move goes on.
    for p in &plans {
        advance_sequences(&dst_db, &dst.schema, &p.name).await?;
    }
    let tables: Vec<(String, u64)> = plans
        .iter()
        .zip(&copied)
        .map(|(p, (rows, _))| (p.name.clone(), *rows))
        .collect();
    for (name, rows) in &tables {
        progress.step(&format!("{name}: {rows} rows copied"));
    }
    // Catch up online while a pass still finds much to do.
    let (mut caught_up, mut passes) = (0u64, 0u32);
    loop {
        let n = catch_up(c, &src, &dst, &plans).await?;
        caught_up += n;
        passes += 1;
        if n < 500 || passes >= 8 {
            break;
        }
    }
    progress.step(&format!(
        "caught up {caught_up} changed rows in {passes} passes; holding the tenant"
    ));
    // The hold.
    let purpose = format!("to {} on server {}", catalog::mode_text(to.mode), to.server);
    let hold = holds::hold(cat, &from.key, &purpose)
        .await?
        .ok_or_else(|| {
            ProvisionError::Dump(format!(
                "tenant {:?} is held already: another promote, demote or move runs",
                from.key
            ))
        })?;
    let hold = &*undo.hold.insert(hold);
    let hold_began = Instant::now();
    loop {
        let busy = holds::busy_replicas(cat, hold).await?;
        if busy.is_empty() {
            break;
        }
        if hold_began.elapsed() >= opts.max_hold {
            return Err(ProvisionError::Dump(format!(
                "a transaction of tenant {:?} still ran after {:?} on {}: nothing was changed; try again when the tenant's long transactions are done (or raise --max-hold); session-mode clients must disconnect first",
                from.key,
                opts.max_hold,
                busy.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    caught_up += catch_up(c, &src, &dst, &plans).await?;
    passes += 1;
    for p in &plans {
        advance_sequences(&dst_db, &dst.schema, &p.name).await?;
    }
    if hold_began.elapsed() >= opts.max_hold {
        return Err(ProvisionError::Dump(format!(
            "the last changes took longer than --max-hold {:?}: nothing was changed",
            opts.max_hold
        )));
    }
    if let Err(e) = holds::flip(cat, from, to, hold).await {
        // The COMMIT may have happened with its answer lost: ask again.
        let check = async {
            let fresh = catalog::Catalog::from_config(cfg)?.open().await?;
            holds::routed_as(&fresh, to).await
        };
        match check.await {
            Ok(false) => return Err(e.into()),
            Ok(true) => {}
            Err(_) => {
                undo.flip_unknown = true;
                return Err(e.into());
            }
        }
    }
    let hold_time = hold_began.elapsed();
    undo.hold = None;
    progress.step(&format!(
        "route changed after a hold of {} ms",
        hold_time.as_millis()
    ));
    Ok(RelocateReport {
        from: from.clone(),
        to: to.clone(),
        tables,
        caught_up,
        passes,
        hold: hold_time,
        late_changes: 0,
        leftover: None,
    })
}

/// One catch-up pass: the changes logged so far, applied to the target;
/// the log entries go only once the target committed them.
async fn catch_up(
    c: &capture::Capture,
    src: &copy::Side<'_>,
    dst: &copy::Side<'_>,
    plans: &[copy::TablePlan],
) -> Result<u64, ProvisionError> {
    src.db
        .batch_execute("BEGIN")
        .await
        .map_err(setup_error("(begin)"))?;
    let work = async {
        let dirty = c.drain(src.db).await?;
        if dirty.is_empty() {
            return Ok(0);
        }
        dst.db
            .batch_execute("BEGIN")
            .await
            .map_err(setup_error("(begin)"))?;
        match copy::apply(src, dst, plans, &dirty).await {
            Ok(n) => {
                dst.db
                    .batch_execute("COMMIT")
                    .await
                    .map_err(setup_error("(commit)"))?;
                Ok(n)
            }
            Err(e) => {
                let _ = dst.db.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    };
    match work.await {
        Ok(n) => {
            src.db
                .batch_execute("COMMIT")
                .await
                .map_err(setup_error("(commit)"))?;
            Ok(n)
        }
        Err(e) => {
            let _ = src.db.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}
