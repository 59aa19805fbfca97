//! Keeps the tenant directory in step with the catalog: LISTEN for changes,
//! and poll twice a second in case a notification is missed (or LISTEN is not
//! possible, e.g. behind a transaction pooler). A change reaches every replica
//! within a second, without a restart and without touching other tenants' clients.

use super::{self as catalog, holds, Catalog, CatalogError};
use crate::app::{wait_shutdown, Proxy};
use crate::config::{Config, TenantConfig};
use crate::tenant::Tenant;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
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

/// This replica's name in `pgtenant.replicas`, and when it last reported.
pub struct Replica {
    id: String,
    reported: Option<std::time::Instant>,
    /// The holds installed, and the tags of those last reported quiet.
    held: Vec<holds::Hold>,
    quiet: Vec<String>,
}

impl Replica {
    pub fn new(proxy: &Proxy) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Replica {
            id: format!(
                "{} pid {} #{:08x}",
                proxy.config.proxy.listen,
                std::process::id(),
                nanos ^ rand::random::<u32>()
            ),
            reported: None,
            held: Vec::new(),
            quiet: Vec::new(),
        }
    }

    /// A held tenant still runs a transaction here: look again soon.
    fn awaiting_quiet(&self) -> bool {
        self.quiet.len() < self.held.len()
    }

    /// The holds of this replica's tenants none of whose transactions runs
    /// here now.
    fn quiet_now(&self, proxy: &Proxy) -> Vec<String> {
        let quiet = proxy.pools.quiet_holds();
        self.held
            .iter()
            .filter(|h| quiet.contains(&h.tenant))
            .map(holds::Hold::tag)
            .collect()
    }

    /// Installs `held` (after the directory that came with them).
    fn install(&mut self, proxy: &Proxy, held: Vec<holds::Hold>) -> bool {
        let keys: Vec<String> = held.iter().map(|h| h.tenant.clone()).collect();
        proxy.pools.set_holds(&keys);
        let changed = held != self.held;
        self.held = held;
        changed
    }

    async fn report(&mut self, proxy: &Proxy, client: &Client) -> Result<(), CatalogError> {
        let quiet = self.quiet_now(proxy);
        holds::heartbeat(client, &self.id, &quiet).await?;
        self.quiet = quiet;
        self.reported = Some(std::time::Instant::now());
        Ok(())
    }
}

/// How often a replica looks whether a held tenant's last transaction ended.
const QUIET_POLL: Duration = Duration::from_millis(5);

/// How often a draining replica looks whether its last client has gone.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Loads the catalog once and installs the merged directory if it changed,
/// then the holds, then reports this replica's heartbeat. Holds are read
/// first: a hold seen lifted means the route change committed with it is
/// visible to the tenants query that follows.
async fn reload(
    proxy: &Arc<Proxy>,
    client: &Client,
    last: &mut Option<Vec<TenantConfig>>,
    me: &mut Replica,
) -> Result<(), CatalogError> {
    let held = holds::load_holds(client).await?;
    let rows = catalog::load(client).await?;
    proxy
        .tenant_users
        .replace(catalog::load_users(client).await?);
    if proxy.catalog_down_since_ms.swap(0, Ordering::Relaxed) != 0 {
        tracing::info!("tenant catalog reachable again");
    }
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
    let changed = me.install(proxy, held);
    // While a tenant is held the mover waits for this report: send it on
    // every reload then, and otherwise as a heartbeat now and again.
    let due = me.reported.is_none_or(|t| t.elapsed() >= holds::HEARTBEAT);
    if changed || !me.held.is_empty() || due {
        me.report(proxy, client).await?;
    }
    Ok(())
}

/// How long the catalog may take to answer one step (connect, a reload):
/// a network that drops packets silently would otherwise hang the watcher
/// with the catalog still reported up.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// `step`, or a timeout error if the catalog doesn't answer in time.
async fn answered<T>(step: impl std::future::Future<Output = T>) -> Result<T, CatalogError> {
    tokio::time::timeout(ANSWER_WITHIN, step)
        .await
        .map_err(|_| CatalogError::Timeout(ANSWER_WITHIN))
}

/// One connected watching session; returns on error or shutdown.
async fn session(
    proxy: &Arc<Proxy>,
    cat: &Catalog,
    last: &mut Option<Vec<TenantConfig>>,
    me: &mut Replica,
) -> Result<(), CatalogError> {
    let (client, mut conn) = answered(cat.pg_config().connect_raw()).await??;
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
    answered(catalog::ensure_schema(&client)).await??;
    answered(client.batch_execute(&format!("LISTEN {}", catalog::CHANNEL))).await??;
    answered(reload(proxy, &client, last, me)).await??;
    let mut shutdown = proxy.shutdown_signal();
    let mut draining = *shutdown.borrow();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            n = changed.recv() => {
                if n.is_none() {
                    return Ok(()); // connection gone: reconnect
                }
                answered(reload(proxy, &client, last, me)).await??;
            }
            _ = tick.tick() => answered(reload(proxy, &client, last, me)).await??,
            _ = tokio::time::sleep(QUIET_POLL), if me.awaiting_quiet() => {
                if me.quiet_now(proxy).len() != me.quiet.len() {
                    answered(me.report(proxy, &client)).await??;
                }
            }
            _ = tokio::time::sleep(DRAIN_POLL), if draining => {
                // Left only once no client can run a transaction here:
                // until then movers wait for this replica.
                if proxy.pools.roster.clients().is_empty() {
                    let _ = holds::leave(&client, &me.id).await;
                    return Ok(());
                }
            }
            _ = proxy.sidecar.republish.notified() => {
                *last = None;
                answered(reload(proxy, &client, last, me)).await??;
            }
            _ = wait_shutdown(&mut shutdown), if !draining => draining = true,
        }
    }
}

/// The first load, before pgtenant accepts clients: the holds, the
/// directory, and this replica's first heartbeat, so a replica starting
/// while a tenant moves holds it like the others and is waited for.
pub async fn first_load(
    proxy: &Arc<Proxy>,
    cat: &Catalog,
    me: &mut Replica,
) -> Result<Vec<TenantConfig>, CatalogError> {
    let client = cat.open().await?;
    let mut last = None;
    reload(proxy, &client, &mut last, me).await?;
    Ok(last.unwrap_or_default())
}

/// Runs until shutdown (and the last client gone), reconnecting after
/// errors; `last` is what `first_load` installed.
pub async fn watch(
    proxy: Arc<Proxy>,
    cat: Catalog,
    mut me: Replica,
    mut last: Option<Vec<TenantConfig>>,
) {
    let mut shutdown = proxy.shutdown_signal();
    loop {
        let r = session(&proxy, &cat, &mut last, &mut me).await;
        if let Err(e) = r {
            // Said once per outage, not every retry.
            let down = &proxy.catalog_down_since_ms;
            let now = (crate::pool::roster::now_us() / 1000).max(1);
            if down
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                tracing::error!(error = %e, "tenant catalog unavailable; serving the last known tenants and retrying every second");
            } else {
                tracing::debug!(error = %e, "tenant catalog still unavailable");
            }
        } else if *shutdown.borrow() {
            return;
        }
        if *shutdown.borrow() && proxy.pools.roster.clients().is_empty() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = wait_shutdown(&mut shutdown) => return,
        }
    }
}
