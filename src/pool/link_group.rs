//! Idle server links that may serve one tenant (role isolation: links log in as
//! the tenant's own role or target) or many (context isolation: tenants on the
//! same server, database and user share links; pgtenant sets the tenant context
//! on every checkout). A stack, so the busiest links stay warm.

use super::budget::ServerBudget;
use crate::backend::{ServerConn, ServerParams};
use crate::tenant::Target;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// A server connection plus its slot in the server budget: dropping it closes
/// the connection and frees the slot.
#[derive(Debug)]
pub(super) struct Link {
    pub conn: ServerConn,
    pub _slot: OwnedSemaphorePermit,
    /// Its SHOW SERVERS row.
    pub listing: super::roster::ServerListing,
    /// The group's generation when it was made: RECONNECT closes older ones.
    pub generation: u64,
}

/// How far down the idle stack to look for a link already in the wanted context.
const PREFER_SCAN: usize = 32;

#[derive(Debug)]
pub struct LinkGroup {
    pub name: String,
    pub target: Target,
    pub application_name: String,
    /// Boxed: a lease moves a pointer, and a client future holding a
    /// lease stays small.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Link>>>,
    params: Mutex<Option<ServerParams>>,
    pub(super) budget: Arc<ServerBudget>,
    /// Bumped by RECONNECT: links of older generations are closed when idle.
    generation: std::sync::atomic::AtomicU64,
    /// When the last RECONNECT happened (Unix µs; WAIT_CLOSE waits for the
    /// links made before it).
    reconnected_us: std::sync::atomic::AtomicU64,
}

impl LinkGroup {
    pub(super) fn new(
        name: String,
        target: Target,
        application_name: String,
        budget: Arc<ServerBudget>,
    ) -> Self {
        Self {
            name,
            target,
            application_name,
            idle: Mutex::new(Vec::new()),
            params: Mutex::new(None),
            budget,
            generation: Default::default(),
            reconnected_us: Default::default(),
        }
    }

    #[allow(clippy::vec_box)]
    fn idle_links(&self) -> std::sync::MutexGuard<'_, Vec<Box<Link>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle link, preferring one last in the context of
    /// tenant `prefer` (its statements are likely there, no cursor to close).
    pub(super) fn pop_idle(&self, prefer: Option<&str>) -> Option<Box<Link>> {
        let mut idle = self.idle_links();
        if let Some(want) = prefer {
            let len = idle.len();
            let hit = (len.saturating_sub(PREFER_SCAN)..len)
                .rev()
                .find(|&i| idle[i].conn.state.context_owner.as_deref() == Some(want));
            if let Some(i) = hit {
                return Some(idle.remove(i));
            }
        }
        idle.pop()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// RECONNECT: idle links close now, lent ones when they come back.
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.reconnected_us
            .store(super::roster::now_us(), Ordering::Relaxed);
        self.idle_links().clear();
    }

    /// When RECONNECT last ran (Unix µs, 0: never).
    pub fn reconnected_us(&self) -> u64 {
        self.reconnected_us.load(Ordering::Relaxed)
    }

    pub(super) fn push_idle(&self, mut link: Box<Link>) {
        if link.generation != self.generation() {
            return;
        }
        link.conn.last_used = Instant::now();
        self.idle_links().push(link);
        // SeqCst, paired with `Armed::new`: a waiter counted after this
        // read looks at idle links after this push.
        if self.budget.slot_waiters.load(Ordering::SeqCst) > 0 {
            // One link, one waiter: waking them all (200 clients on 20
            // links) cost more CPU than the transactions. A woken waiter
            // that finds the link taken arms again; one that gave up passes
            // the wake-up on (tokio's Notified does on drop).
            self.budget.link_idle.notify_one();
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

    pub fn cached_params(&self) -> Option<ServerParams> {
        self.params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn idle_count(&self) -> usize {
        self.idle_links().len()
    }
}
