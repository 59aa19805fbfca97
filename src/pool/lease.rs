//! A server connection lent to one client. Returning it is explicit
//! ([`Lease::release`]); a lease dropped any other way closes the connection, so
//! a link in an unknown state can never reach another client.

use super::link_group::Link;
use super::quota::Slot;
use super::tenant_pool::TenantPool;
use crate::backend::ServerConn;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Lease {
    link: Option<Box<Link>>,
    pool: Arc<TenantPool>,
    lifetime: Duration,
    _quota: Slot,
}

impl Lease {
    pub(super) fn new(
        link: Box<Link>,
        pool: Arc<TenantPool>,
        lifetime: Duration,
        quota: Slot,
    ) -> Self {
        link.listing.entry.lent();
        Self {
            link: Some(link),
            pool,
            lifetime,
            _quota: quota,
        }
    }

    pub fn conn(&mut self) -> &mut ServerConn {
        // The link is only taken out by consuming methods.
        &mut self
            .link
            .as_mut()
            .expect("lease holds a link until consumed")
            .conn
    }

    /// Returns a clean (idle, outside any transaction) link to the pool.
    pub fn release(mut self) {
        if let Some(link) = self.link.take() {
            link.listing.entry.returned(link.conn.state.prepared.len());
            if link.conn.created.elapsed() < self.lifetime && !link.conn.state.poisoned {
                self.pool.group.push_idle(link);
            }
        }
    }

    /// Session pooling: wipe session state (`DISCARD ALL` keeps the startup
    /// search_path) before the link can serve another client; close it if that fails.
    pub async fn reset_and_release(mut self, timeout: Duration) {
        let reset = tokio::time::timeout(timeout, self.conn().discard_all()).await;
        if matches!(reset, Ok(Ok(()))) {
            self.release();
        }
    }
}
