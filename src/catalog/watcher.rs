//! Keeps the tenant directory in step with the catalog: LISTEN for changes,
//! and poll twice a second in case a notification is missed (or LISTEN is not
//! possible, e.g. behind a transaction pooler). A change reaches every replica
//! within a second, without a restart and without touching other tenants' clients.

use super::{self as catalog, Catalog, CatalogError};
use crate::app::{wait_shutdown, Proxy};
use crate::config::{Config, TenantConfig};
use crate::tenant::Tenant;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client};

const POLL: Duration = Duration::from_millis(500);

/// Static tenants from the config merged with catalog rows, by key (the
/// catalog wins for a key in both, so `tenant suspend` works on any tenant it
/// lists).
pub fn merged_specs<'a>(cfg: &'a Config, rows: &'a [TenantConfig]) -> Vec<&'a TenantConfig> {
    let mut specs: BTreeMap<&str, &TenantConfig> =
        cfg.tenants.iter().map(|t| (t.key.as_str(), t)).collect();
    for r in rows {
        if specs.insert(r.key.as_str(), r).is_some() {
            tracing::debug!(tenant = %r.key, "catalog row overrides the config file's tenant");
        }
    }
    specs.into_values().collect()
}

/// The merged specs built into tenants (skipping ones that can't be served).
pub fn merge(cfg: &Config, rows: &[TenantConfig]) -> Vec<Tenant> {
    merged_specs(cfg, rows)
        .into_iter()
        .filter_map(|t| {
            if t.tier.as_ref().is_some_and(|tier| tier != "default" && !cfg.tiers.contains_key(tier)) {
                tracing::warn!(tenant = %t.key, tier = ?t.tier, "tenant skipped: unknown tier");
                return None;
            }
            let built = Tenant::build(cfg, t);
            if built.is_none() {
                tracing::warn!(tenant = %t.key, server = %t.server, "tenant skipped: unknown server, or a shared tenant without id or role secret");
            }
            built
        })
        .collect()
}

/// Loads the catalog once and installs the merged directory if it changed.
async fn reload(
    proxy: &Arc<Proxy>,
    client: &Client,
    last: &mut Option<Vec<TenantConfig>>,
) -> Result<(), CatalogError> {
    let rows = catalog::load(client).await?;
    proxy
        .tenant_users
        .replace(catalog::load_users(client).await?);
    if last.as_ref() != Some(&rows) {
        let mut tenants = merge(&proxy.live_config(), &rows);
        crate::sidecar::hold_reactivated(proxy, &mut tenants);
        proxy.pools.apply_limits(&tenants);
        proxy.tenants.replace(tenants);
        proxy
            .catalog_loaded
            .store(true, std::sync::atomic::Ordering::Release);
        *proxy.catalog_rows.lock().unwrap_or_else(|p| p.into_inner()) = rows.clone();
        tracing::info!(catalog_tenants = rows.len(), "tenant catalog loaded");
        *last = Some(rows);
    }
    Ok(())
}

/// One connected watching session; returns on error or shutdown.
async fn session(
    proxy: &Arc<Proxy>,
    cat: &Catalog,
    last: &mut Option<Vec<TenantConfig>>,
) -> Result<(), CatalogError> {
    let (client, mut conn) = cat.pg_config().connect_raw().await?;
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "catalog connection failed");
                    break;
                }
            }
        }
    });
    catalog::ensure_schema(&client).await?;
    client
        .batch_execute(&format!("LISTEN {}", catalog::CHANNEL))
        .await?;
    reload(proxy, &client, last).await?;
    let mut shutdown = proxy.shutdown_signal();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            n = changed.recv() => {
                if n.is_none() {
                    return Ok(()); // connection gone: reconnect
                }
                reload(proxy, &client, last).await?;
            }
            _ = tick.tick() => reload(proxy, &client, last).await?,
            _ = proxy.sidecar.republish.notified() => {
                *last = None;
                reload(proxy, &client, last).await?;
            }
            _ = wait_shutdown(&mut shutdown) => return Ok(()),
        }
    }
}

/// Runs until shutdown, reconnecting after errors.
pub async fn watch(proxy: Arc<Proxy>, cat: Catalog) {
    let mut last = None;
    let mut shutdown = proxy.shutdown_signal();
    loop {
        if let Err(e) = session(&proxy, &cat, &mut last).await {
            tracing::error!(error = %e, "tenant catalog unavailable; serving the last known tenants");
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = wait_shutdown(&mut shutdown) => return,
        }
    }
}
