//! Which tenant sent a notification. PostgreSQL tells only the sender's
//! backend pid, and under context isolation one backend serves many tenants
//! in turn, so a pid's tenant must be known *as of the notification's
//! commit*. Two sources, both ordered with the notifications themselves:
//!
//! - **Owner markers**: whenever a shared link changes tenant, it commits
//!   `pg_notify('pgtenant_owner', '<pid>:<seq>:<mac>:<tenant>')` before any of
//!   the new tenant's SQL runs. Listening hubs read markers in commit order,
//!   interleaved with the notifications, so every later notification of that
//!   pid belongs to the marked tenant. The MAC (HMAC-SHA256 under a key
//!   derived from `role_secret`) and the pid check make a marker unforgeable
//!   by a tenant's own `pg_notify`; the increasing `seq` makes one unreplayable.
//! - **Unmarked switches**: while no hub of this process listens (nor is
//!   starting), a link changes tenant without a marker, its new owner
//!   recorded as confirmed at once. Safe for hubs started later: the old
//!   owner's notifications all committed before the switch, so before any
//!   later LISTEN, and are never delivered; the switch's tick is taken
//!   before the hub count is read (SeqCst), a hub counts itself before
//!   taking its `lo`, so a switch that saw no hub has `confirmed < lo`. The
//!   cost: another replica's hubs cannot attribute that link's
//!   notifications until it changes tenant with a hub live here (they are
//!   dropped, never misattributed). It saves a round trip and a committed
//!   `pg_notify` per tenant switch, which is most checkouts when many
//!   tenants share few links. Because of them a hub trusts markers only
//!   from this process's own links (another replica's would go stale).
//! - **This registry**, for what happened before a hub started listening:
//!   links that serve one tenant for life (role isolation) register once;
//!   shared links record each owner change with the clock ticks around its
//!   marker. A hub started at ticks `lo..hi` trusts an owner only if its
//!   marker certainly committed before the hub listened; when that is unsure,
//!   the notification is dropped, never given to a tenant it might not be
//!   from.
//!
//! Not covered (documented in the README): a backend pid reused by the
//! server within the delivery delay, senders that are not pgtenant links of
//! this process (direct connections, cron jobs, another replica's links).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The channel owner markers travel on (never delivered to clients).
pub const MARKER_CHANNEL: &str = "pgtenant_owner";

/// Orders owner changes against hub starts (process-wide, only increases).
/// Starts at the wall clock in nanoseconds, so a restarted pgtenant's marker
/// sequence numbers exceed the ones it sent before.
static CLOCK: AtomicU64 = AtomicU64::new(0);

pub fn tick() -> u64 {
    if CLOCK.load(Ordering::Relaxed) == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let _ = CLOCK.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    }
    CLOCK.fetch_add(1, Ordering::SeqCst)
}

/// A PostgreSQL server, as pids are unique on one.
pub type ServerKey = (Arc<str>, u16);

/// The key owner markers are signed with.
#[derive(Clone)]
pub struct MarkerKey([u8; 32]);

impl std::fmt::Debug for MarkerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MarkerKey(..)")
    }
}

impl MarkerKey {
    /// Derived from the role secret, so every replica verifies every
    /// replica's markers; a random key for this process without one.
    pub fn new(role_secret: Option<&str>) -> Self {
        let seed: Vec<u8> = match role_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&seed).expect("HMAC accepts any key length");
        mac.update(b"pgtenant-owner-marker");
        MarkerKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, pid: i32, seq: u64, owner: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(format!("{pid}:{seq}:{owner}").as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The marker payload a link sends when it starts serving `owner`.
    pub fn marker(&self, pid: i32, seq: u64, owner: &str) -> String {
        format!("{pid}:{seq}:{}:{owner}", self.mac(pid, seq, owner))
    }

    /// A marker's (seq, owner) if it is genuine and was sent by `sender`.
    pub fn verify(&self, sender: i32, payload: &str) -> Option<(u64, Arc<str>)> {
        let mut parts = payload.splitn(4, ':');
        let pid: i32 = parts.next()?.parse().ok()?;
        let seq: u64 = parts.next()?.parse().ok()?;
        let mac = parts.next()?;
        let owner = parts.next()?;
        let genuine: bool = self
            .mac(pid, seq, owner)
            .bytes()
            .zip(mac.bytes())
            .fold(mac.len() == 64, |ok, (a, b)| ok & (a == b));
        (genuine && pid == sender).then(|| (seq, Arc::from(owner)))
    }
}

#[derive(Debug, Clone)]
struct Ownership {
    owner: Arc<str>,
    /// Clock ticks before the marker was sent and after it committed
    /// (`u64::MAX` while unconfirmed).
    sent: u64,
    confirmed: u64,
}

#[derive(Debug)]
struct Entry {
    /// Serves one tenant for life (role isolation): no markers needed.
    fixed: bool,
    now: Ownership,
    before: Option<Ownership>,
    /// The pgtenant pid of the client using the link (or last using it),
    /// shown as the sender of its notifications.
    client_pid: Arc<AtomicI32>,
    /// The link was closed: kept a while for its notifications in flight.
    closed: Option<std::time::Instant>,
}

/// How long a closed link's entry stays for its notifications in flight.
const CLOSED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// pid -> owner, per server.
#[derive(Debug, Default)]
pub struct Owners {
    entries: Mutex<HashMap<ServerKey, HashMap<i32, Entry>>>,
}

/// A link's place in the registry: removed when the link is dropped.
#[derive(Debug)]
pub struct Registration {
    owners: Arc<Owners>,
    server: ServerKey,
    pid: i32,
    pub client_pid: Arc<AtomicI32>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut all = self.owners.lock();
        if let Some(m) = all.get_mut(&self.server) {
            // Only its own entry (a newer link may have the pid by now),
            // kept a while: its last notifications may still be on their
            // way to a hub.
            if let Some(e) = m
                .get_mut(&self.pid)
                .filter(|e| Arc::ptr_eq(&e.client_pid, &self.client_pid))
            {
                e.closed = Some(std::time::Instant::now());
            }
        }
    }
}

/// The ownership of a link in force when a hub started listening (ticks
/// `lo..hi`), if certain.
fn at_start(e: &Entry, lo: u64, hi: u64) -> Option<&Ownership> {
    if e.fixed || e.now.confirmed < lo {
        Some(&e.now)
    } else if e.now.sent > hi {
        // Its marker comes after the hub started (and after anything of the
        // previous owner's the hub received): the one before was in force.
        e.before.as_ref().filter(|b| b.confirmed < lo)
    } else {
        None
    }
}

impl Owners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServerKey, HashMap<i32, Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A link that serves `owner` for its whole life.
    pub fn register_fixed(
        self: &Arc<Self>,
        server: ServerKey,
        pid: i32,
        owner: Arc<str>,
    ) -> Registration {
        self.insert(server, pid, owner, true, 0, 0)
    }

    /// A shared link about to serve `owner`: call before sending its marker
    /// (with the tick taken then), then [`Owners::confirm`] once it committed.
    pub fn register_switch(
        self: &Arc<Self>,
        server: ServerKey,
        pid: i32,
        owner: Arc<str>,
        sent: u64,
    ) -> Registration {
        self.insert(server, pid, owner, false, sent, u64::MAX)
    }

    fn insert(
        self: &Arc<Self>,
        server: ServerKey,
        pid: i32,
        owner: Arc<str>,
        fixed: bool,
        sent: u64,
        confirmed: u64,
    ) -> Registration {
        let client_pid = Arc::new(AtomicI32::new(pid));
        let now = Ownership {
            owner,
            sent,
            confirmed,
        };
        let mut all = self.lock();
        let m = all.entry(server.clone()).or_default();
        m.retain(|_, e| e.closed.is_none_or(|t| t.elapsed() < CLOSED_GRACE));
        let before = m.remove(&pid).map(|e| e.now);
        m.insert(
            pid,
            Entry {
                fixed,
                now,
                before,
                client_pid: client_pid.clone(),
                closed: None,
            },
        );
        Registration {
            owners: self.clone(),
            server,
            pid,
            client_pid,
        }
    }

    /// A shared link about to serve `owner` with no marker (no hub live):
    /// in force from tick `at` (see the module doc, "Unmarked switches").
    pub fn register_unmarked(
        self: &Arc<Self>,
        server: ServerKey,
        pid: i32,
        owner: Arc<str>,
        at: u64,
    ) -> Registration {
        self.insert(server, pid, owner, false, at, at)
    }

    /// A registered shared link changes owner (before its marker is sent).
    pub fn switch(&self, reg: &Registration, owner: Arc<str>, sent: u64) {
        self.replace_owner(reg, owner, sent, u64::MAX);
    }

    /// A registered shared link changes owner with no marker (no hub live),
    /// in force from tick `at`.
    pub fn switch_unmarked(&self, reg: &Registration, owner: Arc<str>, at: u64) {
        self.replace_owner(reg, owner, at, at);
    }

    fn replace_owner(&self, reg: &Registration, owner: Arc<str>, sent: u64, confirmed: u64) {
        let mut all = self.lock();
        if let Some(e) = all.get_mut(&reg.server).and_then(|m| m.get_mut(&reg.pid)) {
            let before = std::mem::replace(
                &mut e.now,
                Ownership {
                    owner,
                    sent,
                    confirmed,
                },
            );
            e.before = Some(before);
        }
    }

    /// The marker of the link's latest owner change committed.
    pub fn confirm(&self, reg: &Registration, confirmed: u64) {
        let mut all = self.lock();
        if let Some(e) = all.get_mut(&reg.server).and_then(|m| m.get_mut(&reg.pid)) {
            e.now.confirmed = confirmed;
        }
    }

    /// The tenant of a notification from `pid` that a hub (listening since
    /// ticks `lo..hi`) received before any marker of that pid, and the pid
    /// to show its listeners. `None` when unsure.
    pub fn owner_since_start(
        &self,
        server: &ServerKey,
        pid: i32,
        lo: u64,
        hi: u64,
    ) -> Option<(Arc<str>, i32)> {
        let all = self.lock();
        let e = all.get(server)?.get(&pid)?;
        let owner = at_start(e, lo, hi)?.owner.clone();
        let client_pid = if owner == e.now.owner {
            e.client_pid.load(Ordering::Relaxed)
        } else {
            pid
        };
        Some((owner, client_pid))
    }

    /// The lowest marker sequence a hub listening since `lo..hi` may accept
    /// from `pid` as its first: anything up to the marker of the owner in
    /// force when the hub started is a replay (it committed before). `None`:
    /// no marker from `pid` is trusted (it serves one tenant for life, or it
    /// is not a link of this process).
    pub fn marker_floor(&self, server: &ServerKey, pid: i32, lo: u64, hi: u64) -> Option<u64> {
        let all = self.lock();
        match all.get(server).and_then(|m| m.get(&pid)) {
            Some(e) if e.fixed => None,
            Some(e) => Some(at_start(e, lo, hi).map_or(0, |o| o.sent + 1)),
            // Not a link of this process: another replica may switch it with
            // no marker (see "Unmarked switches"), so its markers would go
            // stale unseen. Its notifications are dropped, never
            // attributed to the tenant of an old marker.
            None => None,
        }
    }

    /// The tenant of a link that serves one tenant for life.
    pub fn fixed_owner(&self, server: &ServerKey, pid: i32) -> Option<Arc<str>> {
        let all = self.lock();
        all.get(server)
            .and_then(|m| m.get(&pid))
            .filter(|e| e.fixed)
            .map(|e| e.now.owner.clone())
    }

    /// The pid to show for a notification of `owner` from `pid`: the
    /// pgtenant pid of the link's client while the link still serves that
    /// tenant, else the server's pid (never another tenant's client).
    pub fn client_pid(&self, server: &ServerKey, pid: i32, owner: &str) -> i32 {
        let all = self.lock();
        all.get(server)
            .and_then(|m| m.get(&pid))
            .filter(|e| &*e.now.owner == owner)
            .map_or(pid, |e| e.client_pid.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerKey {
        (Arc::from("127.0.0.1"), 5432)
    }

    #[test]
    fn markers_verify_only_for_their_sender_and_key() {
        let key = MarkerKey::new(Some("secret"));
        let m = key.marker(42, 7, "acme");
        assert_eq!(key.verify(42, &m), Some((7, Arc::from("acme"))));
        assert_eq!(key.verify(43, &m), None, "another backend replays it");
        assert_eq!(MarkerKey::new(Some("other")).verify(42, &m), None);
        let forged = m.replace("acme", "initech");
        assert_eq!(key.verify(42, &forged), None);
        assert_eq!(key.verify(42, "42:7:00:acme"), None);
        assert_eq!(key.verify(42, "garbage"), None);
    }

    #[test]
    fn unmarked_switches_are_in_force_for_hubs_started_after_them() {
        let owners = Arc::new(Owners::default());
        let link = owners.register_unmarked(server(), 2, "a".into(), 10);
        owners.switch_unmarked(&link, "b".into(), 15);
        // A hub listening since 20..21: b's, and a marker up to b's switch
        // would be a replay.
        let at = |lo, hi| owners.owner_since_start(&server(), 2, lo, hi).map(|o| o.0);
        assert_eq!(at(20, 21).as_deref(), Some("b"));
        assert_eq!(owners.marker_floor(&server(), 2, 20, 21), Some(16));
        // A hub that started before b's switch (never the case when the
        // switch saw no hub live) is not told b.
        assert_eq!(at(12, 13).as_deref(), Some("a"));
        // Then a marked switch once a hub is live: until its marker, the
        // previous owner is in force for that hub.
        owners.switch(&link, "c".into(), 30);
        assert_eq!(at(20, 21).as_deref(), Some("b"));
    }

    #[test]
    fn owners_before_a_hub_started_are_trusted_only_when_certain() {
        let owners = Arc::new(Owners::default());
        let fixed = owners.register_fixed(server(), 1, "acme".into());
        let shared = owners.register_switch(server(), 2, "a".into(), 10);
        owners.confirm(&shared, 11);
        // Markers up to a's (sent before the hub started) are replays.
        assert_eq!(owners.marker_floor(&server(), 2, 20, 21), Some(11));
        // Hub listening since ticks 20..21.
        let at = |pid| {
            owners
                .owner_since_start(&server(), pid, 20, 21)
                .map(|o| o.0)
        };
        assert_eq!(at(1).as_deref(), Some("acme"));
        assert_eq!(at(2).as_deref(), Some("a"));
        // Changed after the hub started: until its marker arrives, a
        // notification from that pid is the previous owner's.
        owners.switch(&shared, "b".into(), 30);
        assert_eq!(at(2).as_deref(), Some("a"));
        owners.confirm(&shared, 31);
        assert_eq!(at(2).as_deref(), Some("a"));
        // Changed while the hub started: unsure, dropped.
        owners.switch(&shared, "c".into(), 19);
        assert_eq!(at(2), None);
        owners.confirm(&shared, 22);
        assert_eq!(at(2), None);
        assert_eq!(at(3), None, "unknown sender");
        // A closed link's notifications in flight keep their tenant.
        drop(fixed);
        assert_eq!(at(1).as_deref(), Some("acme"));
        let fixed = owners.register_fixed(server(), 1, "acme".into());
        assert_eq!(owners.marker_floor(&server(), 1, 20, 21), None, "fixed");
        assert_eq!(
            owners.marker_floor(&server(), 3, 20, 21),
            None,
            "not a link of this process (another replica's): its markers are not trusted"
        );
        // The pid taken by a newer link: the newer one's.
        let newer = owners.register_fixed(server(), 1, "initech".into());
        drop(fixed);
        assert_eq!(at(1).as_deref(), Some("initech"));
        drop(newer);
    }
}
