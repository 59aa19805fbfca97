//! Cancel requests: each client gets pgtenant's own BackendKeyData; a
//! CancelRequest carrying it is forwarded to whichever server backend that client
//! is using at that moment (and dropped if it is using none).
//!
//! Peering (`[peering]`, as PgBouncer's `[peers]`): behind a load balancer a
//! CancelRequest opens a new connection, which may land on another replica
//! than the client's. So the key's process id carries the replica's id (and
//! a hop count, against forwarding loops between misconfigured peers); a
//! replica that gets a key of another forwards the request to it.

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

/// Peer ids fit in 10 bits of the key's process id.
pub const MAX_PEER_ID: u16 = 1023;
/// Key process id layout with peering on: bit 31 clear (a positive pid),
/// bits 29–30 hops left, bits 19–28 the replica's id, bits 0–18 random.
const RANDOM_BITS: u32 = 19;
const PEER_SHIFT: u32 = 19;
const HOPS_SHIFT: u32 = 29;
const HOPS_MASK: i32 = 0b11 << HOPS_SHIFT;
/// How many times a request may be passed on (a well-configured pair needs 1).
const MAX_HOPS: i32 = 2;
/// A forward to a peer gives up after this long.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
struct Peering {
    id: u16,
    peers: std::collections::HashMap<u16, (String, u16)>,
}

#[derive(Debug, Default)]
pub struct CancelRegistry {
    clients: DashMap<i32, Entry>,
    peering: Option<Peering>,
    /// The slot of every parked client's key: always empty (a parked client
    /// uses no server), so a parked client holds no slot of its own.
    parked: CancelSlot,
}

/// Removes a client's key when its session ends.
pub struct CancelKey {
    /// Shared, not borrowed: a parked session keeps its key without a task.
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
    pub slot: CancelSlot,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        // Under the registry's own key (with peering, the hop count left out).
        self.registry.clients.remove(&self.registry.local(self.pid));
    }
}

impl CancelKey {
    /// Takes `pid` as the client's key (session mode: its server backend's
    /// own pid, so `pg_backend_pid()` and notifications match what it was
    /// told). Keeps the old key if another client holds that pid.
    pub fn rebind(&mut self, pid: i32) -> bool {
        if pid == self.pid {
            return true;
        }
        if self.registry.peering.is_some() {
            // A backend's pid carries no replica id: a cancel landing on a
            // peer could not find its way back.
            return false;
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

    /// Its client parks: the key keeps its pid and secret and takes the
    /// registry's shared empty slot (a cancel finds no server, as for any
    /// idle client). Never [`CancelKey::set`] until [`CancelKey::resume`].
    pub fn park(&mut self) {
        self.rebind_slot(self.registry.parked.clone());
    }

    /// Its client is back from the parking lot: a slot of its own again.
    pub fn resume(&mut self) {
        self.rebind_slot(CancelSlot::default());
    }

    fn rebind_slot(&mut self, slot: CancelSlot) {
        if let Some(mut e) = self
            .registry
            .clients
            .get_mut(&self.registry.local(self.pid))
        {
            e.slot = slot.clone();
        }
        self.slot = slot;
    }
}

impl CancelRegistry {
    /// With `[peering]` on, keys carry this replica's id.
    pub fn new(peering: &crate::config::PeeringConfig) -> Self {
        Self {
            clients: DashMap::new(),
            peering: (peering.id != 0).then(|| Peering {
                id: peering.id,
                peers: peering
                    .peers
                    .iter()
                    .map(|p| (p.id, (p.host.clone(), p.port)))
                    .collect(),
            }),
            parked: CancelSlot::default(),
        }
    }

    /// A fresh random process id: 31 random bits, or with peering this
    /// replica's id and the full hop count around 19 random bits.
    fn fresh_pid(&self) -> i32 {
        let random = rand::random::<i32>() & 0x7fff_ffff;
        match &self.peering {
            None => random,
            Some(p) => {
                (MAX_HOPS << HOPS_SHIFT)
                    | (i32::from(p.id) << PEER_SHIFT)
                    | (random & ((1 << RANDOM_BITS) - 1))
            }
        }
    }

    /// The registry's key of a process id (the hop count left out).
    fn local(&self, pid: i32) -> i32 {
        if self.peering.is_some() {
            pid & !HOPS_MASK
        } else {
            pid
        }
    }

    /// A fresh random key (pid, secret) for a new client.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        loop {
            let pid = self.fresh_pid();
            let secret = rand::random::<i32>();
            let slot: CancelSlot = Arc::default();
            if let dashmap::Entry::Vacant(v) = self.clients.entry(self.local(pid)) {
                v.insert(Entry {
                    secret,
                    slot: slot.clone(),
                });
                return CancelKey {
                    registry: self.clone(),
                    pid,
                    secret,
                    slot,
                };
            }
        }
    }

    /// Forwards a CancelRequest to the client's server backend, or with
    /// peering to the replica its key names; unknown keys are ignored, as
    /// PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let entry = self.clients.get(&self.local(pid));
        if entry.is_none() {
            if let Some((peer, host, port)) = self.peer_of(pid) {
                // One hop less (peer_of saw at least one left).
                let passed = pid - (1 << HOPS_SHIFT);
                match tokio::time::timeout(PEER_TIMEOUT, pass_on(host, *port, passed, secret)).await
                {
                    Ok(Ok(())) => tracing::debug!(peer, "cancel request passed to its replica"),
                    Ok(Err(e)) => {
                        tracing::warn!(peer, error = %e, "passing a cancel request to a peer failed")
                    }
                    Err(_) => tracing::warn!(peer, "a peer did not take a cancel request in time"),
                }
                return;
            }
        }
        let target = entry
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

    /// The peer a key of another replica names, if it is one we know and the
    /// request may still be passed on.
    fn peer_of(&self, pid: i32) -> Option<(u16, &String, &u16)> {
        let p = self.peering.as_ref()?;
        let peer = ((pid >> PEER_SHIFT) & i32::from(MAX_PEER_ID)) as u16;
        let hops = (pid & HOPS_MASK) >> HOPS_SHIFT;
        if peer == p.id || hops == 0 {
            return None;
        }
        let (host, port) = p.peers.get(&peer)?;
        Some((peer, host, port))
    }
}

/// Sends a CancelRequest to a peer replica's client listener and waits
/// until it has read it (it closes the connection, as PostgreSQL does).
async fn pass_on(host: &str, port: u16, pid: i32, secret: i32) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    s.write_all(&crate::protocol::messages::cancel_request(pid, secret))
        .await?;
    let mut sink = [0u8; 16];
    let _ = s.read(&mut sink).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PeerConfig, PeeringConfig};

    fn registry(id: u16, peers: &[u16]) -> Arc<CancelRegistry> {
        Arc::new(CancelRegistry::new(&PeeringConfig {
            id,
            peers: peers
                .iter()
                .map(|&p| PeerConfig {
                    id: p,
                    host: "127.0.0.1".into(),
                    port: 6000 + p,
                })
                .collect(),
        }))
    }

    #[test]
    fn keys_carry_the_replica_id_and_full_hops_and_stay_positive() {
        let r = registry(700, &[3]);
        for _ in 0..1000 {
            let key = r.register();
            assert!(key.pid > 0);
            assert_eq!((key.pid >> PEER_SHIFT) & 1023, 700);
            assert_eq!((key.pid & HOPS_MASK) >> HOPS_SHIFT, MAX_HOPS);
        }
    }

    #[test]
    fn a_key_of_a_known_peer_is_passed_on_with_one_hop_less_and_never_past_zero() {
        let r = registry(1, &[2]);
        let theirs = registry(2, &[1]).fresh_pid();
        assert_eq!(
            r.peer_of(theirs).map(|(p, _, port)| (p, *port)),
            Some((2, 6002))
        );
        let spent = theirs & !HOPS_MASK;
        assert_eq!(r.peer_of(spent), None, "no hops left");
        let ours = r.fresh_pid();
        assert_eq!(r.peer_of(ours), None, "our own key");
        let unknown = registry(9, &[]).fresh_pid();
        assert_eq!(r.peer_of(unknown), None, "not a peer we know");
        // A key is found locally whatever its hop count.
        let key = r.register();
        let passed_once = (key.pid & !HOPS_MASK) | (1 << HOPS_SHIFT);
        assert_eq!(r.local(passed_once), r.local(key.pid));
    }

    #[test]
    fn a_dropped_key_leaves_the_registry_with_or_without_peering() {
        for r in [Arc::new(CancelRegistry::default()), registry(3, &[4])] {
            let keys: Vec<_> = (0..100).map(|_| r.register()).collect();
            assert_eq!(r.clients.len(), 100);
            drop(keys);
            assert_eq!(r.clients.len(), 0, "every key removed");
        }
    }

    #[test]
    fn a_parked_key_shares_the_empty_slot_and_gets_its_own_back() {
        let r = Arc::new(CancelRegistry::default());
        let mut key = r.register();
        let other = r.register();
        let in_registry = |k: &CancelKey| r.clients.get(&r.local(k.pid)).map(|e| e.slot.clone());
        key.park();
        assert!(Arc::ptr_eq(&key.slot, &r.parked));
        assert!(Arc::ptr_eq(&in_registry(&key).expect("listed"), &r.parked));
        assert!(!Arc::ptr_eq(
            &in_registry(&other).expect("listed"),
            &r.parked
        ));
        key.resume();
        assert!(!Arc::ptr_eq(&key.slot, &r.parked));
        let own = in_registry(&key).expect("listed");
        assert!(
            Arc::ptr_eq(&own, &key.slot),
            "the registry reads the key's own slot"
        );
        key.set(Some(CancelTarget {
            host: Arc::from("db"),
            port: 5432,
            tls: Arc::default(),
            pid: 77,
            secret: 5,
        }));
        assert_eq!(own.lock().expect("slot").as_ref().map(|t| t.pid), Some(77));
        assert!(
            r.parked.lock().expect("slot").is_none(),
            "the shared slot stays empty"
        );
        let pid = key.pid;
        drop(key);
        assert!(r.clients.get(&r.local(pid)).is_none());
    }

    #[test]
    fn without_peering_keys_use_31_random_bits_and_session_mode_rebinds() {
        let r = Arc::new(CancelRegistry::default());
        let mut key = r.register();
        assert!(key.pid >= 0);
        assert!(key.rebind(4242), "takes the backend's pid");
        assert_eq!(key.pid, 4242);
        let peered = registry(5, &[]);
        let mut key = peered.register();
        assert!(
            !key.rebind(4243),
            "with peering the key keeps the replica id"
        );
    }
}
