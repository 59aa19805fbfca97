//! The pools of every tenant and the budgets of every server; checkout with a
//! deadline; periodic reaping.

use super::budget::ServerBudget;
use super::counters::{Metering, TenantCounters, TimingsFactory};
use super::lease::Lease;
use super::link_group::{Link, LinkGroup};
use super::tenant_pool::TenantPool;
use crate::backend::{BackendError, ServerConn, ServerParams};
use crate::config::Config;
use crate::tenant::Tenant;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("no server connection for tenant \"{tenant}\" within query_wait_timeout ({waited:?}): all {quota} connection(s) of its quota are busy")]
    QuotaWait {
        tenant: String,
        quota: usize,
        waited: Duration,
    },
    #[error("no server connection for tenant \"{tenant}\" within query_wait_timeout ({waited:?}): server {server} is at max_connections")]
    ServerFull {
        tenant: String,
        server: String,
        waited: Duration,
    },
    #[error("tenant \"{tenant}\" points at unknown server \"{server}\"")]
    NoServer { tenant: String, server: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub query_wait_timeout: Duration,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_connect_timeout: Duration,
    pub max_prepared_statements: usize,
}

impl PoolSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            query_wait_timeout: cfg.proxy.query_wait_timeout,
            server_idle_timeout: cfg.proxy.server_idle_timeout,
            server_lifetime: cfg.proxy.server_lifetime,
            server_connect_timeout: cfg.proxy.server_connect_timeout,
            max_prepared_statements: cfg.proxy.max_prepared_statements,
        }
    }
}

/// Repairs the login of `role` on (server, database).
#[derive(Clone)]
pub struct LoginRepair {
    pub role: String,
    pub run: Arc<RepairFn>,
}

type RepairFn = dyn Fn(String, String) -> futures_util::future::BoxFuture<'static, Result<(), String>>
    + Send
    + Sync;

impl std::fmt::Debug for LoginRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRepair")
            .field("role", &self.role)
            .finish()
    }
}

#[derive(Debug)]
pub struct PoolManager {
    settings: PoolSettings,
    /// Puts back the password of a login role that every context link uses
    /// (the shared role), when a server refuses it: given by the app, so the
    /// pool never calls up into provisioning.
    repair: Option<LoginRepair>,
    /// When the shared login was last repaired (at most one repair a second).
    last_repair: std::sync::Mutex<Option<Instant>>,
    budgets: HashMap<String, Arc<ServerBudget>>,
    pools: DashMap<String, Arc<TenantPool>>,
    groups: DashMap<String, Arc<LinkGroup>>,
    /// Every tenant's counters since start, surviving pool replacements.
    counters: DashMap<String, Arc<TenantCounters>>,
    /// Makes a new pool's latency histograms (the metrics registry's, or
    /// no-ops): passed in, so the pool never calls up into metrics.
    timings: TimingsFactory,
    /// PAUSE without a tenant: every new transaction waits.
    paused_all: std::sync::atomic::AtomicBool,
    /// Tenants paused by key (kept for pools made while paused).
    paused: DashMap<String, ()>,
    /// Tenants held by the catalog (see `catalog::holds`), by key: whatever
    /// pool a client is on, old or new; `any_held` is the fast path.
    holds: DashMap<String, ()>,
    any_held: std::sync::atomic::AtomicBool,
    resumed: tokio::sync::Notify,
    /// Who is connected (SHOW CLIENTS, SHOW SERVERS).
    pub roster: Arc<super::roster::Roster>,
}

impl PoolManager {
    pub fn new(cfg: &Config) -> Self {
        let reserves: Vec<(String, usize)> = cfg
            .tiers
            .iter()
            .map(|(name, t)| (name.clone(), t.reserve))
            .collect();
        let budgets = cfg
            .servers
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    Arc::new(ServerBudget::new(name, s.max_connections, &reserves)),
                )
            })
            .collect();
        Self {
            settings: PoolSettings::from_config(cfg),
            repair: None,
            last_repair: std::sync::Mutex::new(None),
            budgets,
            pools: DashMap::new(),
            groups: DashMap::new(),
            counters: DashMap::new(),
            timings: TimingsFactory::default(),
            paused_all: Default::default(),
            paused: DashMap::new(),
            holds: DashMap::new(),
            any_held: Default::default(),
            resumed: tokio::sync::Notify::new(),
            roster: Arc::default(),
        }
    }

    /// PAUSE: the tenant's (or every tenant's) new transactions wait.
    pub fn pause(&self, tenant: Option<&str>) {
        match tenant {
            Some(k) => {
                self.paused.insert(k.to_owned(), ());
                if let Some(p) = self.pools.get(k) {
                    p.paused.store(true, Ordering::Release);
                }
            }
            None => self.paused_all.store(true, Ordering::Release),
        }
    }

    /// RESUME: wakes what PAUSE held.
    pub fn resume(&self, tenant: Option<&str>) {
        match tenant {
            Some(k) => {
                self.paused.remove(k);
                if let Some(p) = self.pools.get(k) {
                    p.paused.store(false, Ordering::Release);
                }
            }
            None => {
                self.paused_all.store(false, Ordering::Release);
                self.paused.clear();
                for p in self.pools.iter() {
                    p.paused.store(false, Ordering::Release);
                }
            }
        }
        self.resumed.notify_waiters();
    }

    pub fn is_paused(&self, pool: &TenantPool) -> bool {
        self.paused_all.load(Ordering::Acquire)
            || pool.paused.load(Ordering::Acquire)
            || self.is_held(pool)
    }

    /// Held by the catalog: decided by the tenant's key, so a client on a
    /// pool the manager replaced is held as well (one load when nothing is).
    pub fn is_held(&self, pool: &TenantPool) -> bool {
        self.any_held.load(Ordering::SeqCst) && self.holds.contains_key(&pool.key)
    }

    /// Whether a client's next transaction must wait: a pinned client (one
    /// keeping its server connection) waits only for a hold, not for PAUSE.
    pub fn gate_closed(&self, pool: &TenantPool, pinned: bool) -> bool {
        if pinned {
            self.is_held(pool)
        } else {
            self.is_paused(pool)
        }
    }

    /// Waits while `gate_closed`.
    pub async fn wait_open(&self, pool: &TenantPool, pinned: bool) {
        while self.gate_closed(pool, pinned) {
            let woke = self.resumed.notified();
            if !self.gate_closed(pool, pinned) {
                return;
            }
            woke.await;
        }
    }

    /// Installs the catalog's holds: new ones close the gate of the tenants'
    /// pools, lifted ones open it. Call after installing the directory that
    /// came with them, so released clients find their tenant's new route.
    pub fn set_holds(&self, keys: &[String]) {
        let mut lifted = false;
        self.holds.retain(|k, _| {
            let keep = keys.contains(k);
            lifted |= !keep;
            keep
        });
        for k in keys {
            self.holds.insert(k.clone(), ());
        }
        self.any_held.store(!keys.is_empty(), Ordering::SeqCst);
        if lifted {
            self.resumed.notify_waiters();
        }
    }

    /// Held tenants none of whose transactions runs here: every client of
    /// theirs is between transactions or waiting at the hold.
    pub fn quiet_holds(&self) -> Vec<String> {
        let held: Vec<String> = self.holds.iter().map(|e| e.key().clone()).collect();
        if held.is_empty() {
            return held;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        let busy = self.roster.busy_tenants();
        held.into_iter().filter(|k| !busy.contains(k)).collect()
    }

    pub fn is_tenant_paused(&self, key: &str) -> bool {
        self.paused_all.load(Ordering::Acquire) || self.paused.contains_key(key)
    }

    /// The link groups of a tenant's pool (or of every pool).
    pub fn groups_of(&self, tenant: Option<&str>) -> Vec<Arc<LinkGroup>> {
        let mut seen = std::collections::HashSet::new();
        self.pools
            .iter()
            .filter(|p| tenant.is_none_or(|k| p.key == k))
            .map(|p| p.group.clone())
            .filter(|g| seen.insert(g.name.clone()))
            .collect()
    }

    /// KILL: the tenant's clients are disconnected (idle ones at once, the
    /// others when their transaction ends).
    pub fn kill(&self, tenant: &str) {
        self.roster
            .raise(Some(tenant), super::signals::Signal::KILL);
    }

    /// How a refused login of `repair.role` is repaired.
    pub fn with_login_repair(mut self, repair: LoginRepair) -> Self {
        self.repair = Some(repair);
        self
    }

    /// Where new pools get their latency histograms.
    pub fn with_timings(mut self, timings: TimingsFactory) -> Self {
        self.timings = timings;
        self
    }

    /// A known tenant's counters (made on first use).
    pub fn counters_of(&self, tenant: &str) -> Arc<TenantCounters> {
        self.counters.entry(tenant.to_owned()).or_default().clone()
    }

    /// Every tenant's counters, by key.
    pub fn counters(&self) -> Vec<(String, Arc<TenantCounters>)> {
        self.counters
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// The tenant's pool, created on first use, drawing from its link group
    /// (shared with other tenants under context isolation).
    pub fn pool_for(&self, tenant: &Tenant) -> Result<Arc<TenantPool>, PoolError> {
        if let Some(p) = self.pools.get(&tenant.key) {
            if p.tier == tenant.tier
                && p.group.name == tenant.group_key()
                && p.group.target == tenant.target
            {
                p.resize(tenant.pool_size, tenant.max_client_conn);
                return Ok(p.clone());
            }
        }
        // New, or moved to another tier, server, database or schema: a fresh
        // pool. Its clients follow at their next transaction (the session
        // checks); the old pool and its links go when the last has left.
        let budget =
            self.budgets
                .get(&*tenant.target.server)
                .ok_or_else(|| PoolError::NoServer {
                    tenant: tenant.key.clone(),
                    server: tenant.target.server.to_string(),
                })?;
        let group_key = tenant.group_key();
        let make = || {
            let app = match &tenant.context {
                Some(_) => "pgtenant".to_owned(),
                None => format!("pgtenant/{}", tenant.key),
            };
            let g = Arc::new(LinkGroup::new(
                group_key.clone(),
                tenant.target.clone(),
                app,
                budget.clone(),
            ));
            budget.register(&g);
            g
        };
        let mut entry = self.groups.entry(group_key.clone()).or_insert_with(make);
        // A dedicated tenant's group is keyed by the tenant: a new route
        // (schema, database) gets a new group, the old one's links stay
        // with the old pool.
        if entry.target != tenant.target {
            *entry = make();
        }
        let group = entry.clone();
        drop(entry);
        let pool = Arc::new(TenantPool::new(
            tenant,
            group,
            Metering {
                counters: self.counters.entry(tenant.key.clone()).or_default().clone(),
                timings: self.timings.make(&tenant.key, &tenant.tier),
            },
        ));
        if self.paused.contains_key(&tenant.key) {
            pool.paused.store(true, Ordering::Release);
        }
        // Two first logins at once: the first pool in wins.
        let pool = match self.pools.entry(tenant.key.clone()) {
            dashmap::mapref::entry::Entry::Occupied(e)
                if e.get().tier == tenant.tier
                    && e.get().group.name == pool.group.name
                    && e.get().group.target == pool.group.target =>
            {
                e.get().clone()
            }
            dashmap::mapref::entry::Entry::Occupied(mut e) => {
                e.insert(pool.clone());
                pool
            }
            dashmap::mapref::entry::Entry::Vacant(e) => e.insert(pool).clone(),
        };
        Ok(pool)
    }

    /// A catalog change: running pools take their tenants' new limits now
    /// (a new tier or server takes effect at the tenant's next login).
    pub fn apply_limits(&self, tenants: &[Tenant]) {
        for t in tenants {
            if let Some(p) = self.pools.get(&t.key) {
                if p.tier == t.tier {
                    p.resize(t.pool_size, t.max_client_conn);
                }
            }
        }
    }

    /// Server connections pgtenant holds open to `server` (lent plus idle).
    pub fn server_links(&self, server: &str) -> usize {
        self.budgets.get(server).map_or(0, |b| b.in_use())
    }

    pub fn pools(&self) -> Vec<Arc<TenantPool>> {
        self.pools.iter().map(|e| e.value().clone()).collect()
    }

    /// Lends a server connection of `pool`, waiting up to `query_wait_timeout`
    /// for the tenant's quota and the server's budget.
    pub async fn checkout(&self, pool: &Arc<TenantPool>) -> Result<Lease, PoolError> {
        let waited = self.settings.query_wait_timeout;
        let deadline = Instant::now() + waited;
        let quota = match pool.quota.try_acquire() {
            Ok(slot) => Some(slot),
            Err(_) => {
                // Counted until this wait ends, however it ends: a client
                // that goes away while queued drops this future.
                let _waiting = Waiting::new(&pool.waiting);
                tokio::time::timeout_at(deadline, pool.quota.acquire())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        }
        .ok_or_else(|| PoolError::QuotaWait {
            tenant: pool.key.clone(),
            quota: pool.stats().quota,
            waited,
        })?;
        let group = &pool.group;
        let budget = &group.budget;
        // Armed (counted in `slot_waiters` and registered with the budget's
        // notifier) before the last look at idle links: a link given back
        // after that look sees the count and wakes this waiter, so no missed
        // wake-up needs covering by polling. Only the slow path (the
        // server's budget full) arms it.
        let mut armed: Option<Armed<'_>> = None;
        loop {
            while let Some(mut link) = group.pop_idle(pool.prefer.as_deref()) {
                if link.conn.created.elapsed() < self.settings.server_lifetime
                    && link.conn.idle_link_usable()
                {
                    return Ok(Lease::new(
                        link,
                        pool.clone(),
                        self.settings.server_lifetime,
                        quota,
                    ));
                }
            }
            let slot = match budget.try_slot(&pool.tier) {
                Some(s) => s,
                None if budget.evict_lru_idle() => continue,
                None => {
                    let Some(mut waiting) = armed.take() else {
                        armed = Some(Armed::new(budget));
                        continue; // look once more, armed
                    };
                    // Wait for a free slot, or for an idle link somewhere (ours
                    // to reuse, or another tenant's to evict).
                    let woke = tokio::select! {
                        s = budget.slot(&pool.tier) => s,
                        _ = waiting.idle.as_mut() => None,
                        _ = tokio::time::sleep_until(deadline) => {
                            return Err(PoolError::ServerFull {
                                tenant: pool.key.clone(),
                                server: budget.name.clone(),
                                waited,
                            });
                        }
                    };
                    match woke {
                        Some(s) => s,
                        None => continue,
                    }
                }
            };
            // Boxed: connecting (TLS, authentication) is rare and its future
            // large; inline, every waiting client's task would carry it.
            let conn = Box::pin(self.connect_repairing(group)).await?;
            group.remember_params(&conn.params);
            let t = &group.target;
            let listing = self.roster.add_server(super::roster::NewServer {
                pid: conn.state.pid,
                tenant_group: group.name.clone(),
                server: t.server.to_string(),
                database: t.database.clone(),
                user: t.user.clone(),
                host: t.host.to_string(),
                port: t.port,
                local: conn.stream.local_addr().ok(),
            });
            let link = Box::new(Link {
                conn,
                _slot: slot,
                listing,
                generation: group.generation(),
            });
            return Ok(Lease::new(
                link,
                pool.clone(),
                self.settings.server_lifetime,
                quota,
            ));
        }
    }

    /// Connects a new link of `group`. Shared tenants all log in as one
    /// role, which can change its own password: a refused login of it puts
    /// the password back and tries once more.
    async fn connect_repairing(&self, group: &LinkGroup) -> Result<ServerConn, BackendError> {
        match self.connect(group).await {
            Err(BackendError::Refused { code, .. })
                if code == "28P01" && self.may_repair(group) =>
            {
                let t = &group.target;
                let Some(repair) = &self.repair else {
                    return Err(BackendError::Refused {
                        server: t.server.to_string(),
                        code,
                        message: "password authentication failed".into(),
                    });
                };
                match (repair.run)(t.server.to_string(), t.database.clone()).await {
                    Ok(()) => {
                        tracing::warn!(server = %t.server, "the shared role's password had been changed; reset it")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not repair the shared role's login")
                    }
                }
                self.connect(group).await
            }
            other => other,
        }
    }

    async fn connect(&self, group: &LinkGroup) -> Result<ServerConn, BackendError> {
        let conn = ServerConn::connect(
            &group.target,
            &group.application_name,
            self.settings.server_connect_timeout,
            self.settings.max_prepared_statements,
        )
        .await?;
        let t = &group.target;
        tracing::info!(server = %t.server, database = %t.database, user = %t.user, pid = conn.state.pid, "server connection opened");
        Ok(conn)
    }

    /// A refused login of the shared role may be repaired, once a second.
    fn may_repair(&self, group: &LinkGroup) -> bool {
        if self
            .repair
            .as_ref()
            .is_none_or(|r| group.target.user != r.role)
        {
            return false;
        }
        let mut last = self.last_repair.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The server's ParameterStatus values for a pool, connecting once if needed.
    pub async fn server_params(&self, pool: &Arc<TenantPool>) -> Result<ServerParams, PoolError> {
        if let Some(p) = pool.cached_params() {
            return Ok(p);
        }
        let mut lease = self.checkout(pool).await?;
        let params = lease.conn().params.clone();
        lease.release();
        Ok(params)
    }

    /// Closes idle links past `server_idle_timeout` or `server_lifetime`.
    pub fn reap(&self) {
        for g in self.groups.iter() {
            g.reap(
                self.settings.server_idle_timeout,
                self.settings.server_lifetime,
            );
        }
    }
}

/// One client counted in a pool's `waiting` while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A checkout waiting for the server's budget: counted in `slot_waiters`
/// (so a link given back wakes one waiter) and registered with the notifier,
/// both before its last look at idle links; uncounted when dropped.
struct Armed<'a> {
    budget: &'a super::budget::ServerBudget,
    idle: std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>,
}

impl<'a> Armed<'a> {
    fn new(budget: &'a super::budget::ServerBudget) -> Self {
        budget.slot_waiters.fetch_add(1, Ordering::SeqCst);
        let mut idle = Box::pin(budget.link_idle.notified());
        idle.as_mut().enable();
        Armed { budget, idle }
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.budget.slot_waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;
    use crate::pool::roster::NewClient;

    fn manager_and_tenant() -> (PoolManager, Tenant) {
        let cfg = crate::config::parse_str(
            "[servers.main]\nuser = \"postgres\"\n[[tenants]]\nkey = \"acme\"\nmode = \"schema\"\nserver = \"main\"\n",
            "test",
        )
        .expect("config");
        let tenant = Tenant::build(&cfg, &cfg.tenants[0]).expect("tenant");
        (PoolManager::new(&cfg), tenant)
    }

    fn client(m: &PoolManager) -> crate::pool::roster::ClientListing {
        m.roster.add_client(NewClient {
            tenant: "acme".into(),
            user: "app".into(),
            addr: None,
            local: None,
            application_name: String::new(),
        })
    }

    #[test]
    fn a_hold_stops_pinned_clients_too_and_pause_does_not() {
        let (m, t) = manager_and_tenant();
        let pool = m.pool_for(&t).expect("pool");
        assert!(!m.gate_closed(&pool, false));
        m.pause(Some("acme"));
        assert!(m.gate_closed(&pool, false));
        assert!(!m.gate_closed(&pool, true), "PAUSE lets a pinned client on");
        m.resume(Some("acme"));
        m.set_holds(&["acme".into()]);
        assert!(m.gate_closed(&pool, false));
        assert!(m.gate_closed(&pool, true), "a hold stops a pinned client");
        m.set_holds(&[]);
        assert!(!m.gate_closed(&pool, false));
        assert!(!m.gate_closed(&pool, true));
    }

    #[test]
    fn a_pool_made_while_held_is_held_and_a_replaced_one_is_let_go() {
        let (m, t) = manager_and_tenant();
        let old = m.pool_for(&t).expect("pool");
        m.set_holds(&["acme".into()]);
        // The tenant gets a new route while held: a new pool, held too.
        let mut moved = t.clone();
        moved.target.database = "elsewhere".into();
        let new = m.pool_for(&moved).expect("new pool");
        assert!(!Arc::ptr_eq(&old, &new));
        assert!(m.gate_closed(&new, false));
        m.set_holds(&[]);
        assert!(!m.gate_closed(&new, false));
        assert!(
            !m.gate_closed(&old, false),
            "the replaced pool is not left held"
        );
    }

    #[test]
    fn quiet_once_no_client_is_in_or_entering_a_transaction() {
        let (m, _) = manager_and_tenant();
        assert_eq!(m.quiet_holds(), Vec::<String>::new(), "nothing held");
        m.set_holds(&["acme".into()]);
        let c = client(&m);
        assert_eq!(m.quiet_holds(), ["acme"], "idle between transactions");
        c.entry.waiting();
        assert_eq!(m.quiet_holds(), Vec::<String>::new(), "on its way in");
        c.entry.active(42);
        assert_eq!(m.quiet_holds(), Vec::<String>::new(), "in a transaction");
        c.entry.held();
        assert_eq!(m.quiet_holds(), ["acme"], "waiting at the hold");
        c.entry.idle(false, 0);
        drop(c);
        assert_eq!(m.quiet_holds(), ["acme"]);
    }

    #[tokio::test]
    async fn lifting_a_hold_wakes_the_waiters() {
        let (m, t) = manager_and_tenant();
        let m = Arc::new(m);
        let pool = m.pool_for(&t).expect("pool");
        m.set_holds(&["acme".into()]);
        let waiter = {
            let (m, pool) = (m.clone(), pool.clone());
            tokio::spawn(async move { m.wait_open(&pool, true).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        m.set_holds(&[]);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
