//! The cap on connections to one server across all tenants (pgbouncer#130: per
//! tenant quotas alone let the sum overrun `max_connections`).

use super::link_group::LinkGroup;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct ServerBudget {
    pub name: String,
    slots: Arc<Semaphore>,
    groups: Mutex<Vec<Weak<LinkGroup>>>,
    /// Woken when a link of this server goes idle, so slot waiters can try eviction.
    pub(super) link_idle: Notify,
    /// Checkouts waiting for a slot; releases only pay for a wake-up when > 0.
    pub(super) slot_waiters: AtomicUsize,
}

impl ServerBudget {
    pub fn new(name: &str, max_connections: usize) -> Self {
        Self {
            name: name.to_owned(),
            slots: Arc::new(Semaphore::new(max_connections)),
            groups: Mutex::new(Vec::new()),
            link_idle: Notify::new(),
            slot_waiters: AtomicUsize::new(0),
        }
    }

    pub(super) fn register(&self, group: &Arc<LinkGroup>) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.retain(|w| w.strong_count() > 0);
        groups.push(Arc::downgrade(group));
    }

    pub(super) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    pub(super) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Closes the least recently used idle link of any group on this server.
    /// Returns false when no group has an idle link.
    pub(super) fn evict_lru_idle(&self) -> bool {
        let pools: Vec<Arc<LinkGroup>> = {
            let g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            g.iter().filter_map(Weak::upgrade).collect()
        };
        let oldest = pools
            .iter()
            .filter_map(|p| p.oldest_idle_use().map(|t| (t, p)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, pool)) => pool.evict_oldest_idle(),
            None => false,
        }
    }

    /// Connections open to this server (checked out plus idle).
    pub fn in_use(&self, max: usize) -> usize {
        max - self.slots.available_permits()
    }
}
