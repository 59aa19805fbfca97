//! The migration sidecar inside `serve`: a run over every tenant at startup
//! (`[migrations] on_startup`), `MIGRATE [tenant]` for the admin console, and
//! catch-up of a tenant that becomes trial/active again: it stays refused
//! (with its previous status) until its target has every migration, then the
//! directory lets it in. The latest status of every tenant is kept for the
//! admin console and metrics.

use crate::app::Proxy;
use crate::config::TenantStatus;
use crate::migrate::{self, MigrateError, Report, RunOptions, StatusBoard};
use crate::tenant::Tenant;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Sidecar {
    enabled: AtomicBool,
    pub status: StatusBoard,
    /// Reactivated tenants whose catch-up runs now (held at their old status).
    catching_up: Mutex<HashSet<String>>,
    /// Reactivated tenants caught up, to be let in at the next publish.
    caught_up: Mutex<HashSet<String>>,
    /// Wakes the catalog watcher to publish the directory again.
    pub republish: Notify,
}

fn servable(s: TenantStatus) -> bool {
    matches!(s, TenantStatus::Active | TenantStatus::Trial)
}

fn lock(m: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sidecar {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

/// `MIGRATE [tenant]`: one run, its result kept in the status board.
pub async fn migrate(proxy: &Arc<Proxy>, tenant: Option<String>) -> Result<Report, MigrateError> {
    let board = proxy.clone();
    let report = migrate::run(
        &proxy.config,
        &RunOptions {
            tenant,
            progress: Some(Arc::new(move |t| board.sidecar.status.update_target(t))),
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
        let Some(was) = proxy.tenants.get(&t.key).map(|o| o.status) else {
            continue;
        };
        if !servable(t.status) || servable(was) {
            continue;
        }
        if lock(&proxy.sidecar.caught_up).remove(&t.key) {
            continue;
        }
        t.status = was;
        if lock(&proxy.sidecar.catching_up).insert(t.key.clone()) {
            let (proxy, key) = (proxy.clone(), t.key.clone());
            tokio::spawn(async move {
                match migrate(&proxy, Some(key.clone())).await {
                    Ok(r) if r.exit_code() == 0 => {
                        tracing::info!(tenant = %key, "caught up on migrations; letting it in")
                    }
                    Ok(r) => {
                        tracing::error!(tenant = %key, "catch-up failed; letting it in at its last good version:\n{}", r.table())
                    }
                    Err(e) => {
                        tracing::error!(tenant = %key, error = %e, "catch-up could not run; letting it in")
                    }
                }
                lock(&proxy.sidecar.catching_up).remove(&key);
                lock(&proxy.sidecar.caught_up).insert(key);
                proxy.sidecar.republish.notify_one();
            });
        }
    }
}
