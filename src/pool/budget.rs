//! The cap on connections to one server across all tenants (pgbouncer#130: per
//! tenant quotas alone let the sum overrun `max_connections`).

use super::link_group::LinkGroup;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct ServerBudget {
    pub name: String,
    max: usize,
    /// Slots any tenant may use: `max_connections` minus every tier's reserve.
    slots: Arc<Semaphore>,
    /// Per tier: slots only that tier's tenants may use (`reserve`), so premium
    /// tenants get connections while free tenants flood the server.
    reserved: HashMap<String, (usize, Arc<Semaphore>)>,
    groups: Mutex<Vec<Weak<LinkGroup>>>,
    /// Woken when a link of this server goes idle, so slot waiters can try eviction.
    pub(super) link_idle: Notify,
    /// Checkouts waiting for a slot; releases only pay for a wake-up when > 0.
    pub(super) slot_waiters: AtomicUsize,
}

impl ServerBudget {
    pub fn new(name: &str, max_connections: usize, reserves: &[(String, usize)]) -> Self {
        let reserved_total: usize = reserves.iter().map(|(_, r)| r).sum();
        Self {
            name: name.to_owned(),
            max: max_connections,
            slots: Arc::new(Semaphore::new(
                max_connections.saturating_sub(reserved_total),
            )),
            reserved: reserves
                .iter()
                .filter(|(_, r)| *r > 0)
                .map(|(tier, r)| (tier.clone(), (*r, Arc::new(Semaphore::new(*r)))))
                .collect(),
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

    /// A shared slot, or else one of `tier`'s reserved slots.
    pub(super) fn try_slot(&self, tier: &str) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok().or_else(|| {
            self.reserved
                .get(tier)
                .and_then(|(_, s)| s.clone().try_acquire_owned().ok())
        })
    }

    /// Waits for a shared slot or one of `tier`'s reserved ones: a reserved
    /// slot freed by another tier's eviction wakes its tier's waiter here,
    /// since a link going idle wakes only one waiter, of any tier.
    pub(super) async fn slot(&self, tier: &str) -> Option<OwnedSemaphorePermit> {
        match self.reserved.get(tier) {
            // Cancel-safe: the losing acquire takes no permit.
            Some((_, reserved)) => tokio::select! {
                s = self.slots.clone().acquire_owned() => s.ok(),
                s = reserved.clone().acquire_owned() => s.ok(),
            },
            None => self.slots.clone().acquire_owned().await.ok(),
        }
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
    pub fn in_use(&self) -> usize {
        let reserved_free: usize = self
            .reserved
            .values()
            .map(|(_, s)| s.available_permits())
            .sum();
        self.max - self.slots.available_permits() - reserved_free
    }
}
