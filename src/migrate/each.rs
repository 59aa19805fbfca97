//! `pgtenant migrate --each -- COMMAND ARGS...` (SPEC §8): the app's own
//! migration command (Rails, Django, Alembic, TypeORM, sqlx...) run once per
//! target, with `DATABASE_URL` and the libpq variables pointing at a one-time
//! route that logs in as the target's owner: the tenant's role for a
//! dedicated schema or database, the owner of the shared tables (the admin
//! the SQL-file runner uses) for a shared schema. The same targets, advisory
//! lock, failure isolation, bounded parallelism and report as `migrate`;
//! `tenant create` runs it for a new tenant (`[migrations] each_command`).
//!
//! The command also sees `PGTENANT_TARGET` (the report's label),
//! `PGTENANT_MODE` (`schema`, `database` or `shared`, as the GUC
//! `pgtenant.target_mode` on the route's sessions), `PGTENANT_SCHEMA` and, for
//! a dedicated target, `PGTENANT_TENANT`. Other `PG*` variables of the caller
//! are removed so none can send the command elsewhere.

use super::apply::{lock_target, unlock_target};
use super::report::{Report, State, TargetReport};
use super::runner::{catalog_rows, MigrateError, Progress};
use super::target::{targets, Target};
use crate::config::{secret, Config, TenantConfig, TenantMode};
use crate::frontend::{Grant, OwnerRoutes};
use crate::tenant::catalog::{admin_config, connect};
use crate::tenant::watcher::merged_specs;
use crate::tenant::{quote_ident, roles};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Semaphore;

/// Lines of a command's output kept per target (the last ones).
const OUTPUT_LINES: usize = 200;
/// Characters kept of one output line.
const LINE_CHARS: usize = 2000;

#[derive(Clone, Default)]
pub struct EachOptions {
    /// The program and its arguments (no shell).
    pub command: Vec<OsString>,
    /// Only the target serving this tenant.
    pub tenant: Option<String>,
    /// List the targets; run nothing.
    pub dry_run: bool,
    pub progress: Option<Progress>,
    pub on_targets: Option<Arc<dyn Fn(usize) + Send + Sync>>,
}

/// Runs the command over every servable target (or one tenant's).
pub async fn run_each(cfg: &Config, opts: &EachOptions) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let rows = catalog_rows(cfg, opts.dry_run).await?;
    let specs = merged_specs(cfg, &rows);
    let all = targets(cfg, &specs, opts.tenant.as_deref());
    if let Some(k) = &opts.tenant {
        if all.is_empty() {
            return Err(MigrateError::UnknownTenant(k.clone()));
        }
    }
    if let Some(f) = &opts.on_targets {
        f(all.len());
    }
    let routes = Arc::new(
        OwnerRoutes::start(cfg.proxy.server_connect_timeout)
            .await
            .map_err(MigrateError::Route)?,
    );
    let mut reports = Vec::with_capacity(all.len());
    let mut queue = VecDeque::new();
    let mut per_database: BTreeMap<(String, String), Arc<Semaphore>> = BTreeMap::new();
    for t in all {
        let mut r = TargetReport::new(t, None);
        if !r.target.servable {
            r.state = State::Skipped;
            r.error = Some("suspended or cancelled".into());
        } else if !opts.dry_run {
            let limit = per_database
                .entry((r.target.server.clone(), r.target.database.clone()))
                .or_insert_with(|| Arc::new(Semaphore::new(cfg.migrations.per_database.max(1))))
                .clone();
            let spec = owner_spec(&specs, &r.target);
            queue.push_back((reports.len(), limit, spec));
        }
        if r.state != State::Pending || opts.dry_run {
            if let Some(p) = &opts.progress {
                p(&r);
            }
        }
        reports.push(r);
    }
    // One admin connection per target run, holding its lock.
    let connections = queue.len();
    let reports = Arc::new(Mutex::new(reports));
    let queue = Arc::new(Mutex::new(queue));
    let cfg = Arc::new(cfg.clone());
    let command = Arc::new(opts.command.clone());
    let mut tasks = Vec::new();
    for _ in 0..cfg.migrations.concurrency.max(1) {
        let (queue, reports, routes, cfg, command, progress) = (
            queue.clone(),
            reports.clone(),
            routes.clone(),
            cfg.clone(),
            command.clone(),
            opts.progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, limit, spec)) = next else { break };
                let target = reports.lock().unwrap_or_else(|p| p.into_inner())[i]
                    .target
                    .clone();
                let _permit = limit.acquire().await;
                reports.lock().unwrap_or_else(|p| p.into_inner())[i].state = State::Running;
                let done = each_target(&cfg, &routes, &target, spec.as_ref(), &command).await;
                let mut r = reports.lock().unwrap_or_else(|p| p.into_inner());
                r[i].state = done.state;
                r[i].error = done.error;
                r[i].output = done.output;
                if let Some(p) = &progress {
                    p(&r[i]);
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "a migrate --each worker stopped");
        }
    }
    let mut targets = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));
    if !opts.dry_run {
        for r in targets
            .iter_mut()
            .filter(|r| matches!(r.state, State::Running | State::Pending))
        {
            r.state = State::Failed;
            r.error = Some("the run stopped before this target finished".into());
        }
    }
    Ok(Report {
        targets,
        connections,
        elapsed: started.elapsed(),
        dry_run: opts.dry_run,
    })
}

/// The spec whose role a dedicated target belongs to (None for shared ones).
fn owner_spec(specs: &[&TenantConfig], t: &Target) -> Option<TenantConfig> {
    if t.mode == TenantMode::Shared {
        return None;
    }
    specs
        .iter()
        .find(|s| t.tenants.first() == Some(&s.key))
        .map(|s| (*s).clone())
}

/// How one target's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EachDone {
    pub state: State,
    pub error: Option<String>,
    pub output: Vec<String>,
}

impl EachDone {
    fn failed(error: String) -> Self {
        Self {
            state: State::Failed,
            error: Some(error),
            output: Vec::new(),
        }
    }
}

/// Where the owner's route logs in: the tenant's role (with its configured or
/// derived password) when the target has one, else the admin the SQL-file
/// runner uses; the target's schema first in `search_path`, and
/// `pgtenant.target_mode` as the SQL files see it.
fn owner_login(
    cfg: &Config,
    t: &Target,
    spec: Option<&TenantConfig>,
) -> Result<crate::tenant::Target, String> {
    let server = cfg
        .servers
        .get(&t.server)
        .ok_or_else(|| format!("server {:?} is not defined in the config", t.server))?;
    let (user, password) = match &t.role {
        Some(role) => {
            let configured = spec
                .map(|s| secret(&s.role_password, &s.role_password_env))
                .transpose()?
                .flatten();
            (
                role.clone(),
                configured.or_else(|| roles::derived_password(cfg, role)),
            )
        }
        None => {
            let admin = admin_config(cfg, &t.server, &t.database).map_err(|e| e.to_string())?;
            (
                admin.get_user().unwrap_or_default().to_owned(),
                admin
                    .get_password()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            )
        }
    };
    let mut settings = Vec::new();
    match t.mode {
        TenantMode::Schema => settings.push((
            "search_path".to_owned(),
            format!("{}, public", quote_ident(&t.schema)),
        )),
        TenantMode::Shared => settings.push(("search_path".to_owned(), quote_ident(&t.schema))),
        TenantMode::Database => {}
    }
    settings.push(("pgtenant.target_mode".to_owned(), t.mode_name().to_owned()));
    Ok(crate::tenant::Target {
        server: t.server.as_str().into(),
        host: server.host.as_str().into(),
        port: server.port,
        database: t.database.clone(),
        user,
        password,
        settings,
    })
}

/// Runs `command` for one target: its advisory lock held on an admin
/// connection of its database while the command runs on a one-time route.
pub async fn each_target(
    cfg: &Config,
    routes: &OwnerRoutes,
    t: &Target,
    spec: Option<&TenantConfig>,
    command: &[OsString],
) -> EachDone {
    let login = match owner_login(cfg, t, spec) {
        Ok(l) => l,
        Err(e) => return EachDone::failed(e),
    };
    let admin = match admin_config(cfg, &t.server, &t.database) {
        Ok(pg) => match connect(&pg).await {
            Ok(c) => c,
            Err(e) => return EachDone::failed(format!("database {}: {e}", t.database)),
        },
        Err(e) => return EachDone::failed(e.to_string()),
    };
    let lock = t.lock_name();
    match lock_target(&admin, &lock, cfg.migrations.busy_wait).await {
        Ok(true) => {}
        Ok(false) => {
            return EachDone {
                state: State::Skipped,
                error: Some("another runner held it throughout".into()),
                output: Vec::new(),
            }
        }
        Err(e) => return EachDone::failed(format!("(advisory lock): {e}")),
    }
    let grant = routes.grant(login);
    let done = run_command(command, &grant, t).await;
    // Revoked before the lock goes: nothing of this command runs on the
    // target once another runner may take it.
    drop(grant);
    unlock_target(&admin, &lock).await;
    done
}

/// The command's environment: the route, the target, and no other `PG*`.
fn command_env(grant: &Grant, t: &Target) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", grant.url()),
        ("PGHOST", grant.host()),
        ("PGPORT", grant.port().to_string()),
        ("PGUSER", grant.user().to_owned()),
        ("PGPASSWORD", grant.password().to_owned()),
        ("PGDATABASE", grant.database().to_owned()),
        ("PGOPTIONS", String::new()),
        ("PGSSLMODE", "disable".to_owned()),
        ("PGTENANT_TARGET", t.label()),
        ("PGTENANT_MODE", t.mode_name().to_owned()),
        ("PGTENANT_SCHEMA", t.schema.clone()),
        (
            "PGTENANT_TENANT",
            match t.mode {
                TenantMode::Shared => String::new(),
                _ => t.tenants.first().cloned().unwrap_or_default(),
            },
        ),
    ]
}

type Lines = Arc<Mutex<VecDeque<String>>>;

async fn collect<R: AsyncRead + Unpin>(from: R, into: Lines) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(mut line)) = lines.next_line().await {
        if line.len() > LINE_CHARS {
            let mut cut = LINE_CHARS;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let mut kept = into.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == OUTPUT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
}

async fn run_command(command: &[OsString], grant: &Grant, t: &Target) -> EachDone {
    let Some((program, args)) = command.split_first() else {
        return EachDone::failed("no command given".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("PG") && !k.starts_with("PGTENANT_") {
            cmd.env_remove(&*k);
        }
    }
    cmd.envs(command_env(grant, t));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return EachDone::failed(format!("cannot run {}: {e}", program.to_string_lossy()))
        }
    };
    let lines: Lines = Arc::default();
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(collect(s, lines.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(collect(s, lines.clone())));
    let status = child.wait().await;
    for h in [out, err].into_iter().flatten() {
        let _ = h.await;
    }
    let output: Vec<String> = lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    let (state, error) = match status {
        Ok(s) if s.success() => (State::Ok, None),
        Ok(s) => {
            let how = match s.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("ended by a signal ({s})"),
            };
            let last = output.iter().rev().find(|l| !l.trim().is_empty());
            (
                State::Failed,
                Some(match last {
                    Some(l) => format!("{how}: {}", l.trim()),
                    None => how,
                }),
            )
        }
        Err(e) => (State::Failed, Some(format!("waiting for the command: {e}"))),
    };
    EachDone {
        state,
        error,
        output,
    }
}

/// Runs `[migrations] each_command` for a tenant being created (before its
/// catalog row exists, so it accepts connections only once this succeeded).
pub async fn each_for_new_tenant(cfg: &Config, spec: &TenantConfig) -> Result<(), String> {
    let command: Vec<OsString> = cfg
        .migrations
        .each_command
        .iter()
        .map(OsString::from)
        .collect();
    if command.is_empty() {
        return Ok(());
    }
    let t = Target::of(cfg, spec)
        .ok_or_else(|| format!("server {:?} is not defined in the config", spec.server))?;
    let routes = OwnerRoutes::start(cfg.proxy.server_connect_timeout)
        .await
        .map_err(|e| format!("cannot open a migration route on 127.0.0.1: {e}"))?;
    let done = each_target(cfg, &routes, &t, Some(spec), &command).await;
    match done.state {
        State::Ok => Ok(()),
        _ => {
            let tail: Vec<&str> = done
                .output
                .iter()
                .rev()
                .take(20)
                .rev()
                .map(String::as_str)
                .collect();
            Err(format!(
                "{}{}",
                done.error.unwrap_or_default(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("\n{}", tail.join("\n"))
                }
            ))
        }
    }
}
