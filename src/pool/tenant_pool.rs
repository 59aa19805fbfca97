//! One tenant's pool: its quota and its idle links (a stack, so the busiest
//! links stay warm and the rest age out).

use super::budget::ServerBudget;
use crate::backend::{ServerConn, ServerParams};
use crate::tenant::Target;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A server connection plus its slot in the server budget: dropping it closes
/// the connection and frees the slot.
#[derive(Debug)]
pub(super) struct Link {
    pub conn: ServerConn,
    pub _slot: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub active: usize,
    pub idle: usize,
    pub quota: usize,
}

#[derive(Debug)]
pub struct TenantPool {
    pub key: String,
    pub target: Target,
    pub application_name: String,
    quota_size: usize,
    pub(super) quota: Arc<Semaphore>,
    idle: Mutex<Vec<Link>>,
    params: Mutex<Option<ServerParams>>,
    pub(super) budget: Arc<ServerBudget>,
    /// Client connections this tenant may have open (`max_client_conn`).
    pub client_slots: Arc<Semaphore>,
    /// Startup-setting values as the server spells them, e.g. (client_encoding, utf8) -> UTF8.
    canonical: Mutex<HashMap<(String, String), String>>,
}

impl TenantPool {
    pub(super) fn new(
        key: &str,
        target: Target,
        quota: usize,
        max_clients: usize,
        budget: Arc<ServerBudget>,
    ) -> Self {
        Self {
            key: key.to_owned(),
            application_name: format!("pgtenant/{key}"),
            target,
            quota_size: quota,
            quota: Arc::new(Semaphore::new(quota)),
            idle: Mutex::new(Vec::new()),
            params: Mutex::new(None),
            budget,
            client_slots: Arc::new(Semaphore::new(max_clients)),
            canonical: Mutex::new(HashMap::new()),
        }
    }

    fn idle_links(&self) -> std::sync::MutexGuard<'_, Vec<Link>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn pop_idle(&self) -> Option<Link> {
        self.idle_links().pop()
    }

    pub(super) fn push_idle(&self, mut link: Link) {
        link.conn.last_used = Instant::now();
        self.idle_links().push(link);
        if self.budget.slot_waiters.load(Ordering::Relaxed) > 0 {
            self.budget.link_idle.notify_waiters();
        }
    }

    pub(super) fn oldest_idle_use(&self) -> Option<Instant> {
        self.idle_links().first().map(|l| l.conn.last_used)
    }

    pub(super) fn evict_oldest_idle(&self) -> bool {
        let mut idle = self.idle_links();
        if idle.is_empty() {
            false
        } else {
            drop(idle.remove(0));
            true
        }
    }

    /// Closes links idle longer than `idle_timeout` or older than `lifetime`.
    pub(super) fn reap(&self, idle_timeout: Duration, lifetime: Duration) {
        let now = Instant::now();
        self.idle_links().retain(|l| {
            now.duration_since(l.conn.last_used) < idle_timeout
                && now.duration_since(l.conn.created) < lifetime
        });
    }

    pub(super) fn remember_params(&self, params: &ServerParams) {
        let mut p = self.params.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none() {
            *p = Some(params.clone());
        }
    }

    /// ParameterStatus values of this pool's server, once a link has been made.
    pub fn cached_params(&self) -> Option<ServerParams> {
        self.params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        let idle = self.idle_links().len();
        PoolStats {
            active: self.quota_size - self.quota.available_permits(),
            idle,
            quota: self.quota_size,
        }
    }
}
