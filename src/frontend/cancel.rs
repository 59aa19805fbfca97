//! Cancel requests: each client gets pgtenant's own BackendKeyData; a
//! CancelRequest carrying it is forwarded to whichever server backend that client
//! is using at that moment (and dropped if it is using none).

use crate::backend::send_cancel;
use dashmap::DashMap;
use std::sync::{Arc, Mutex};

/// The server backend a client is currently using.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub host: Arc<str>,
    pub port: u16,
    /// Cancels go as securely as the server's connections do.
    pub tls: Arc<crate::config::ServerTlsSettings>,
    pub pid: i32,
    pub secret: i32,
}

pub type CancelSlot = Arc<Mutex<Option<CancelTarget>>>;

#[derive(Debug)]
struct Entry {
    secret: i32,
    slot: CancelSlot,
}

#[derive(Debug, Default)]
pub struct CancelRegistry {
    clients: DashMap<i32, Entry>,
}

/// Removes a client's key when its session ends.
pub struct CancelKey<'a> {
    registry: &'a CancelRegistry,
    pub pid: i32,
    pub secret: i32,
    pub slot: CancelSlot,
}

impl Drop for CancelKey<'_> {
    fn drop(&mut self) {
        self.registry.clients.remove(&self.pid);
    }
}

impl CancelKey<'_> {
    /// Takes `pid` as the client's key (session mode: its server backend's
    /// own pid, so `pg_backend_pid()` and notifications match what it was
    /// told). Keeps the old key if another client holds that pid.
    pub fn rebind(&mut self, pid: i32) -> bool {
        if pid == self.pid {
            return true;
        }
        match self.registry.clients.entry(pid) {
            dashmap::Entry::Vacant(v) => {
                v.insert(Entry {
                    secret: self.secret,
                    slot: self.slot.clone(),
                });
            }
            dashmap::Entry::Occupied(_) => return false,
        }
        self.registry.clients.remove(&self.pid);
        self.pid = pid;
        true
    }

    pub fn set(&self, target: Option<CancelTarget>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }
}

impl CancelRegistry {
    /// A fresh random key (pid, secret) for a new client.
    pub fn register(&self) -> CancelKey<'_> {
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            let secret = rand::random::<i32>();
            let slot: CancelSlot = Arc::default();
            if let dashmap::Entry::Vacant(v) = self.clients.entry(pid) {
                v.insert(Entry {
                    secret,
                    slot: slot.clone(),
                });
                return CancelKey {
                    registry: self,
                    pid,
                    secret,
                    slot,
                };
            }
        }
    }

    /// Forwards a CancelRequest; unknown keys are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = self
            .clients
            .get(&pid)
            .filter(|e| e.secret == secret)
            .and_then(|e| e.slot.lock().unwrap_or_else(|p| p.into_inner()).clone());
        match target {
            Some(t) => {
                if let Err(e) = send_cancel(&t.host, t.port, &t.tls, t.pid, t.secret).await {
                    tracing::warn!(error = %e, "forwarding cancel request failed");
                }
            }
            None => tracing::debug!(pid, "cancel request for no running query"),
        }
    }
}
