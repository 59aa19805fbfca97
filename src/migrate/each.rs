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
//! and the config's secrets are removed. The command runs in its own process
//! group, killed when it exits; its route is revoked (running statements
//! cancelled) before the target's lock is released.

use super::apply::{lock_target, unlock_target};
use super::report::{Report, State, TargetReport};
use super::runner::{catalog_rows, MigrateError, Progress};
use super::target::{targets, Target};
use crate::catalog::watcher::merged_specs;
use crate::catalog::{admin_config, connect};
use crate::config::{secret, Config, TenantConfig, TenantMode};
use crate::frontend::{Grant, OwnerRoutes};
use crate::tenant::{quote_ident, roles};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt};
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
        OwnerRoutes::start(
            cfg.proxy.server_connect_timeout,
            cfg.proxy.client_login_timeout,
        )
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
        tls: std::sync::Arc::new(server.tls_settings()),
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
    if let Err(e) = check_login(&login, t).await {
        return EachDone::failed(e);
    }
    let admin = match admin_config(cfg, &t.server, &t.database) {
        Ok(pg) => match connect(&pg).await {
            Ok(c) => c,
            Err(e) => return EachDone::failed(format!("database {}: {e}", t.database)),
        },
        Err(e) => return EachDone::failed(e.to_string()),
    };
    // The lock lives on this session, idle while the command runs.
    let _ = admin
        .batch_execute(
            "SELECT pg_catalog.set_config('idle_session_timeout', '0', false)
               FROM pg_catalog.pg_settings WHERE name = 'idle_session_timeout'",
        )
        .await;
    let lock = t.lock_name();
    match lock_target(&admin, &lock, cfg.migrations.busy_wait).await {
        Ok(true) => {}
        Ok(false) => {
            return EachDone {
                state: State::Skipped,
                error: Some(format!(
                    "another runner held the migration lock of {lock} for all of busy_wait ({:?})",
                    cfg.migrations.busy_wait
                )),
                output: Vec::new(),
            }
        }
        Err(e) => return EachDone::failed(format!("(advisory lock): {e}")),
    }
    let grant = routes.grant(login);
    let mut done = run_command(cfg, command, &grant, t).await;
    // The route goes before the lock: what its sessions still run is
    // cancelled, and the lock waits until their backends are gone.
    let pids = grant.revoke().await;
    if !gone(&admin, &pids).await {
        tracing::warn!(target = %t.label(), ?pids, "route sessions still on the server after 30 s");
    }
    if admin.is_closed() {
        done.state = State::Failed;
        done.error = Some(format!(
            "the connection holding the migration lock of {lock} was lost while the command ran: another runner may have migrated it at the same time"
        ));
    }
    unlock_target(&admin, &lock).await;
    done
}

/// Logs in once as the route's user before the command runs, so a missing
/// password says what to configure instead of failing inside the app's tool.
async fn check_login(login: &crate::tenant::Target, t: &Target) -> Result<(), String> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&*login.host)
        .port(login.port)
        .user(&login.user)
        .dbname(&login.database)
        .application_name("pgtenant-migrate-each")
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(p) = &login.password {
        pg.password(p);
    }
    let pg = crate::catalog::PgLogin {
        pg,
        tls: (*login.tls).clone(),
    };
    match connect(&pg).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "cannot log in as {} for {}: {e}{}",
            login.user,
            t.label(),
            if t.role.is_some() {
                " (its password comes from the tenant's role_password_env or [catalog] role_secret_env)"
            } else {
                " (the server's admin_user / admin_password_env)"
            }
        )),
    }
}

/// Waits (up to 30 s) until none of `pids` is a server backend any more.
async fn gone(admin: &tokio_postgres::Client, pids: &[i32]) -> bool {
    if pids.is_empty() {
        return true;
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = admin
            .query_one(
                // Not pg_stat_activity: the shared tier's hardening revokes
                // it from PUBLIC, and a managed admin is no superuser.
                "SELECT count(*) FROM pg_catalog.pg_stat_get_backend_idset() AS b
                  WHERE pg_catalog.pg_stat_get_backend_pid(b) = ANY($1)",
                &[&pids],
            )
            .await
            .map(|r| r.get::<_, i64>(0));
        match left {
            Ok(0) | Err(_) => return left.is_ok(),
            Ok(_) if Instant::now() >= deadline => return false,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// The command's environment: the route and the target. Every `PG*`
/// variable of the caller (pgtenant's own included) and every secret the
/// config reads is removed, so none sends the command elsewhere or hands it
/// another tenant's credentials.
fn command_env(grant: &Grant, t: &Target) -> Vec<(&'static str, String)> {
    let mut env = vec![
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
    ];
    if t.mode != TenantMode::Shared {
        if let Some(k) = t.tenants.first() {
            env.push(("PGTENANT_TENANT", k.clone()));
        }
    }
    env
}

fn removed_env(cfg: &Config) -> Vec<OsString> {
    let secrets = crate::config::secret_env_names(cfg);
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            k.as_encoded_bytes().starts_with(b"PG")
                || secrets.iter().any(|s| k.as_encoded_bytes() == s.as_bytes())
        })
        .collect()
}

type Lines = Arc<Mutex<VecDeque<String>>>;

/// Keeps the last [`OUTPUT_LINES`] lines of `from` (each cut at
/// [`LINE_CHARS`] bytes, `\r` ending a line like `\n`, bytes that are not
/// UTF-8 replaced), and reads to the end whatever comes: a reader that
/// stopped would break the command's pipe.
async fn collect<R: AsyncRead + Unpin>(mut from: R, into: Lines) {
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let keep = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        let mut kept = into.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == OUTPUT_LINES {
            kept.pop_front();
        }
        kept.push_back(text);
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            match b {
                b'\n' | b'\r' if !line.is_empty() => keep(&mut line),
                b'\n' | b'\r' => {}
                _ if line.len() < LINE_CHARS => line.push(b),
                _ => {}
            }
        }
    }
    if !line.is_empty() {
        keep(&mut line);
    }
}

/// How long output readers may outlive the command (a background process
/// it left holding the pipe) before they are dropped.
const DRAIN_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn run_command(cfg: &Config, command: &[OsString], grant: &Grant, t: &Target) -> EachDone {
    let Some((program, args)) = command.split_first() else {
        return EachDone::failed("no command given".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group: what it leaves running is stopped with it.
    #[cfg(unix)]
    cmd.process_group(0);
    for k in removed_env(cfg) {
        cmd.env_remove(k);
    }
    cmd.envs(command_env(grant, t));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return EachDone::failed(format!("cannot run {}: {e}", program.to_string_lossy()))
        }
    };
    let group = child.id();
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
    #[cfg(unix)]
    if let Some(pgid) = group
        .and_then(|g| i32::try_from(g).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        // The group is the command's own (process_group(0) above).
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    for h in [out, err].into_iter().flatten() {
        let abort = h.abort_handle();
        if tokio::time::timeout(DRAIN_AFTER_EXIT, h).await.is_err() {
            abort.abort();
        }
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
    let routes = OwnerRoutes::start(
        cfg.proxy.server_connect_timeout,
        cfg.proxy.client_login_timeout,
    )
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
