//! The migration sidecar inside `serve`: a run over every tenant at startup
//! (`[migrations] on_startup`), `MIGRATE [tenant]` for the admin console, and
//! catch-up of a tenant that becomes trial/active again: it stays refused
//! (with its previous status) until its target has every migration, then the
//! directory lets it in. The latest status of every tenant is kept for the
//! admin console and metrics.

use crate::app::Proxy;
use crate::migrate::{self, MigrateError, Report, RunOptions, State, StatusBoard};
use crate::tenant::Tenant;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Sidecar {
    enabled: AtomicBool,
    pub status: StatusBoard,
    catch_up: Mutex<CatchUp>,
    /// Wakes the catalog watcher to publish the directory again.
    pub republish: Notify,
}

/// Reactivated tenants: being caught up (held at their old status), or
/// caught up and to be let in at the next publish. One lock for both.
#[derive(Debug, Default)]
struct CatchUp {
    running: HashSet<String>,
    done: HashSet<String>,
}

use crate::tenant::servable;

impl Sidecar {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    fn catch_up(&self) -> std::sync::MutexGuard<'_, CatchUp> {
        self.catch_up.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `MIGRATE [tenant]`: one run, its result kept in the status board.
pub async fn migrate(proxy: &Arc<Proxy>, tenant: Option<String>) -> Result<Report, MigrateError> {
    migrate_in(proxy, tenant, migrate::Direction::Up).await
}

/// [`migrate`] in either direction (`MIGRATE DOWN N [tenant]`).
pub async fn migrate_in(
    proxy: &Arc<Proxy>,
    tenant: Option<String>,
    direction: migrate::Direction,
) -> Result<Report, MigrateError> {
    let board = proxy.clone();
    let report = migrate::run(
        &proxy.config,
        &RunOptions {
            tenant,
            progress: Some(Arc::new(move |t| board.sidecar.status.update_target(t))),
            direction,
            ..RunOptions::default()
        },
    )
    .await?;
    proxy.sidecar.status.update(&report);
    Ok(report)
}

/// The startup run, in the background: logs its summary.
pub fn start(proxy: Arc<Proxy>) {
    proxy.sidecar.enable();
    if !proxy.config.migrations.on_startup {
        return;
    }
    tokio::spawn(async move {
        match migrate(&proxy, None).await {
            Ok(r) if r.exit_code() == 0 => {
                tracing::info!(targets = r.targets.len(), connections = r.connections, elapsed = ?r.elapsed, "migrations up to date")
            }
            Ok(r) => tracing::error!("migrations failed for some tenants:\n{}", r.table()),
            Err(e) => tracing::error!(error = %e, "migrations could not run"),
        }
    });
}

/// Called with a catalog change about to be published: tenants that turn
/// trial/active again keep their previous status until caught up.
pub fn hold_reactivated(proxy: &Arc<Proxy>, tenants: &mut [Tenant]) {
    if !proxy.sidecar.enabled() {
        return;
    }
    for t in tenants.iter_mut() {
        if !servable(t.status) {
            // Suspended again: a later activation starts over.
            let mut c = proxy.sidecar.catch_up();
            c.done.remove(&t.key);
            continue;
        }
        let Some(was) = proxy.tenants.get(&t.key).map(|o| o.status) else {
            continue;
        };
        if servable(was) {
            continue;
        }
        let start = {
            let mut c = proxy.sidecar.catch_up();
            if c.done.remove(&t.key) {
                continue;
            }
            c.running.insert(t.key.clone())
        };
        t.status = was;
        if start {
            tokio::spawn(catch_up(proxy.clone(), t.key.clone()));
        }
    }
}

/// Migrates one reactivated tenant, then lets it in. Lets it in at its last
/// good version when a migration fails (the failure is in the status and the
/// log: a broken migration must not lock a tenant out); tries again later
/// when its target was skipped or busy (another runner is on it).
async fn catch_up(proxy: Arc<Proxy>, key: String) {
    let mut delay = Duration::from_millis(200);
    loop {
        let result = migrate(&proxy, Some(key.clone())).await;
        let state = result
            .as_ref()
            .ok()
            .and_then(|r| r.targets.iter().find(|t| t.target.tenants.contains(&key)))
            .map(|t| t.state);
        match (&result, state) {
            (Ok(_), Some(State::Ok)) => {
                tracing::info!(tenant = %key, "caught up on migrations; letting it in");
                break;
            }
            (Ok(_), Some(State::Skipped)) | (Ok(_), Some(State::Running | State::Pending))
                if delay < Duration::from_secs(60) =>
            {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            (Ok(r), _) => {
                tracing::error!(tenant = %key, "catch-up did not finish; letting it in at its last good version:\n{}", r.table());
                break;
            }
            (Err(e), _) => {
                tracing::error!(tenant = %key, error = %e, "catch-up could not run; letting it in");
                break;
            }
        }
    }
    {
        let mut c = proxy.sidecar.catch_up();
        c.running.remove(&key);
        c.done.insert(key);
    }
    proxy.sidecar.republish.notify_one();
}
