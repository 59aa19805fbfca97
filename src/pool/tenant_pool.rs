//! One tenant's share of pooling: its quota of server links, its client
//! limit, and the link group it draws from (its own, or one shared with other
//! tenants under context isolation).

use super::counters::{Metering, TenantCounters, Timings};
use super::link_group::LinkGroup;
use super::quota::Quota;
use super::startups::SharedStartups;
use crate::backend::ServerParams;
use crate::tenant::{Target, Tenant};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub active: usize,
    pub idle: usize,
    pub quota: usize,
    /// Clients waiting for a place in the quota.
    pub waiting: usize,
    /// Clients connected.
    pub clients: usize,
}

#[derive(Debug)]
pub struct TenantPool {
    pub key: String,
    /// The key again, shared by its clients' roster entries and LISTEN setups.
    pub name: Arc<str>,
    /// For the server budget's reserved slots.
    pub tier: String,
    pub(super) quota: Arc<Quota>,
    pub group: Arc<LinkGroup>,
    /// Client connections this tenant may have open (`max_client_conn`).
    pub client_slots: Arc<Quota>,
    /// Links its clients may keep pinned between transactions (`max_pinned`).
    pub pins: Arc<Quota>,
    /// Startup-setting values as the server spells them, e.g. (client_encoding, utf8) -> UTF8.
    canonical: Mutex<HashMap<(String, String), String>>,
    /// Context isolation: the tenant's key, to prefer links already in its context.
    pub prefer: Option<Arc<str>>,
    /// What its clients did (read by the metrics module and the console);
    /// kept by the manager across pool replacements.
    pub counters: Arc<TenantCounters>,
    /// Its tier's (or its own) latency histograms.
    pub timings: Timings,
    /// Clients waiting for a place in its quota now.
    pub waiting: std::sync::atomic::AtomicUsize,
    /// PAUSE: its new transactions wait.
    pub paused: std::sync::atomic::AtomicBool,
    /// Paces the warnings an outage repeats for each of its requests.
    pub warnings: crate::log_throttle::Throttle,
    /// What recent logins worked out from their startup packets.
    pub startups: SharedStartups,
}

impl TenantPool {
    /// The pool of `tenant` (its limits, and its key as the preferred
    /// context under context isolation), drawing from `group`.
    pub(super) fn new(tenant: &Tenant, group: Arc<LinkGroup>, metering: Metering) -> Self {
        let (key, tier, quota) = (&tenant.key, &tenant.tier, tenant.pool_size);
        let (max_clients, max_pinned) = (tenant.max_client_conn, tenant.max_pinned);
        let prefer = tenant.context.as_ref().map(|c| c.owner.clone());
        Self {
            key: key.to_owned(),
            name: Arc::from(key.as_str()),
            tier: tier.to_owned(),
            quota: Quota::new(quota),
            group,
            client_slots: Quota::new(max_clients),
            pins: Quota::new(max_pinned),
            canonical: Mutex::new(HashMap::new()),
            prefer,
            counters: metering.counters,
            timings: metering.timings,
            waiting: Default::default(),
            paused: Default::default(),
            warnings: Default::default(),
            startups: Default::default(),
        }
    }

    /// Applies a catalog change of the tenant's limits to the running pool.
    pub fn resize(&self, quota: usize, max_clients: usize) {
        if self.quota.size() != quota {
            tracing::info!(tenant = %self.key, quota, "pool quota changed");
            self.quota.resize(quota);
        }
        if self.client_slots.size() != max_clients {
            self.client_slots.resize(max_clients);
        }
    }

    pub fn target(&self) -> &Target {
        &self.group.target
    }

    /// ParameterStatus values of this pool's server, once a link has been made.
    pub fn cached_params(&self) -> Option<ServerParams> {
        self.group.cached_params()
    }

    pub fn canonical(&self, key: &str, raw: &str) -> Option<String> {
        let c = self.canonical.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(key.to_owned(), raw.to_owned())).cloned()
    }

    pub fn remember_canonical(&self, key: &str, raw: &str, canonical: &str) {
        let mut c = self.canonical.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a client can't grow this without limit with odd spellings.
        if c.len() < 1024 {
            c.insert((key.to_owned(), raw.to_owned()), canonical.to_owned());
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            active: self.quota.in_use(),
            idle: self.group.idle_count(),
            quota: self.quota.size(),
            waiting: self.waiting.load(std::sync::atomic::Ordering::Relaxed),
            clients: self.client_slots.in_use(),
        }
    }
}
