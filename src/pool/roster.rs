//! Who is connected, for SHOW CLIENTS and SHOW SERVERS: one entry per client
//! session and per server connection, updated with a few relaxed stores per
//! transaction (never per message), read by the console.

use super::signals::{Signal, Signals};
use dashmap::DashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPhase {
    /// Between transactions.
    Idle = 0,
    /// In a transaction, on a server connection.
    Active = 1,
    /// Waiting for a server connection.
    Waiting = 2,
    /// Waiting at a PAUSE or a hold.
    Held = 3,
}

#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    /// Shared with the tenant's pool and its other clients (see
    /// `TenantPool::name`, `SharedStartups::share_user`): every idle client
    /// carries its entry.
    pub tenant: Arc<str>,
    pub user: Arc<str>,
    /// Compact (an IP and a port; `None` for a Unix socket): every idle
    /// client carries its entry.
    addr: Option<(IpAddr, u16)>,
    local: Option<(IpAddr, u16)>,
    pub application_name: Box<str>,
    pub connected_us: u64,
    phase: AtomicU8,
    /// When its current (or last) request came.
    request_us: AtomicU64,
    /// The server backend it is on now (0: none).
    server_pid: AtomicI32,
    /// Named statements it has prepared.
    statements: AtomicU32,
    /// KILL, shutdown, trim: read by its session between transactions.
    pub signals: Signals,
    /// It holds relay buffers (false once it gave them back while idle).
    buffers: AtomicBool,
    /// Idle a while, it gave back what it could (parked, or its buffers);
    /// cleared by its next request. Idle sweeps ask only clients without it.
    rested: AtomicBool,
    /// Its session waits in the parking lot, without a task.
    parked: AtomicBool,
    /// `request_us` as the last idle sweep saw it (see [`Roster::trim_idle`]).
    swept_request_us: AtomicU64,
}

impl ClientPhase {
    /// Waiting for a server connection or at a PAUSE/hold (cl_waiting).
    pub fn is_waiting(self) -> bool {
        matches!(self, ClientPhase::Waiting | ClientPhase::Held)
    }
}

impl ClientEntry {
    /// The client's address (`None`: a Unix socket).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.map(SocketAddr::from)
    }

    /// pgtenant's address on the connection (`None`: a Unix socket).
    pub fn local(&self) -> Option<SocketAddr> {
        self.local.map(SocketAddr::from)
    }

    pub fn phase(&self) -> ClientPhase {
        match self.phase.load(Ordering::Relaxed) {
            1 => ClientPhase::Active,
            2 => ClientPhase::Waiting,
            3 => ClientPhase::Held,
            _ => ClientPhase::Idle,
        }
    }

    pub fn request_us(&self) -> u64 {
        self.request_us.load(Ordering::Relaxed)
    }

    pub fn server_pid(&self) -> i32 {
        self.server_pid.load(Ordering::Relaxed)
    }

    pub fn statements(&self) -> u32 {
        self.statements.load(Ordering::Relaxed)
    }

    /// A request came and waits for a server connection.
    pub fn waiting(&self) {
        self.request_us.store(now_us(), Ordering::Relaxed);
        self.phase
            .store(ClientPhase::Waiting as u8, Ordering::Relaxed);
    }

    /// Its request waits at a PAUSE or a hold: it runs nothing.
    pub fn held(&self) {
        self.request_us.store(now_us(), Ordering::Relaxed);
        self.phase.store(ClientPhase::Held as u8, Ordering::Relaxed);
    }

    /// It got server connection `pid`.
    pub fn active(&self, pid: i32) {
        self.server_pid.store(pid, Ordering::Relaxed);
        self.phase
            .store(ClientPhase::Active as u8, Ordering::Relaxed);
    }

    /// Whether it holds relay buffers (false: it gave them back while idle).
    pub fn holds_buffers(&self) -> bool {
        self.buffers.load(Ordering::Relaxed)
    }

    /// Whether it holds relay buffers; set by its session when it takes
    /// them again, and when it gave them back.
    pub fn set_buffers(&self, held: bool) {
        self.buffers.store(held, Ordering::Relaxed);
    }

    /// It gave back what it could while idle (true), or took a request.
    pub fn set_rested(&self, rested: bool) {
        self.rested.store(rested, Ordering::Relaxed);
    }

    /// Whether its session is parked (waits without a task).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// Its transaction ended; `kept` when it keeps its server connection.
    pub fn idle(&self, kept: bool, statements: usize) {
        if !kept {
            self.server_pid.store(0, Ordering::Relaxed);
        }
        self.statements.store(statements as u32, Ordering::Relaxed);
        self.phase.store(ClientPhase::Idle as u8, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct ServerEntry {
    pub pid: i32,
    pub tenant_group: String,
    pub server: String,
    pub database: String,
    pub user: String,
    pub host: String,
    pub port: u16,
    pub local: Option<SocketAddr>,
    pub connected_us: u64,
    active: AtomicU8,
    used_us: AtomicU64,
    statements: AtomicU32,
}

impl ServerEntry {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 1
    }

    pub fn used_us(&self) -> u64 {
        self.used_us.load(Ordering::Relaxed)
    }

    pub fn statements(&self) -> u32 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn lent(&self) {
        self.used_us.store(now_us(), Ordering::Relaxed);
        self.active.store(1, Ordering::Relaxed);
    }

    pub fn returned(&self, statements: usize) {
        self.statements.store(statements as u32, Ordering::Relaxed);
        self.active.store(0, Ordering::Relaxed);
    }
}

/// Every client and server connection now.
#[derive(Debug, Default)]
pub struct Roster {
    clients: DashMap<u64, Arc<ClientEntry>>,
    servers: DashMap<i32, Arc<ServerEntry>>,
    next_client: AtomicU64,
}

/// A client's place in the roster, removed when dropped.
#[derive(Debug)]
pub struct ClientListing {
    pub entry: Arc<ClientEntry>,
    roster: Arc<Roster>,
}

impl Drop for ClientListing {
    fn drop(&mut self) {
        self.roster.clients.remove(&self.entry.id);
    }
}

/// A server connection's place in the roster, removed when dropped.
#[derive(Debug)]
pub struct ServerListing {
    pub entry: Arc<ServerEntry>,
    roster: Arc<Roster>,
}

impl Drop for ServerListing {
    fn drop(&mut self) {
        self.roster.servers.remove(&self.entry.pid);
    }
}

/// What a new client entry is made of.
pub struct NewClient {
    pub tenant: Arc<str>,
    pub user: Arc<str>,
    pub addr: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub application_name: String,
}

/// What a new server entry is made of.
pub struct NewServer {
    pub pid: i32,
    pub tenant_group: String,
    pub server: String,
    pub database: String,
    pub user: String,
    pub host: String,
    pub port: u16,
    pub local: Option<SocketAddr>,
}

impl Roster {
    /// Tenants with a client in a transaction or on its way into one.
    pub fn busy_tenants(&self) -> std::collections::HashSet<String> {
        self.clients
            .iter()
            .filter(|c| matches!(c.phase(), ClientPhase::Active | ClientPhase::Waiting))
            .map(|c| c.tenant.to_string())
            .collect()
    }

    pub fn add_client(self: &Arc<Self>, c: NewClient) -> ClientListing {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            tenant: c.tenant,
            user: c.user,
            addr: c.addr.map(|a| (a.ip(), a.port())),
            local: c.local.map(|a| (a.ip(), a.port())),
            application_name: c.application_name.into_boxed_str(),
            connected_us: now_us(),
            phase: AtomicU8::new(ClientPhase::Idle as u8),
            request_us: AtomicU64::new(0),
            server_pid: AtomicI32::new(0),
            statements: AtomicU32::new(0),
            signals: Signals::default(),
            // A new client takes its buffers with its first request.
            buffers: AtomicBool::new(false),
            // Not yet: a client that logs in and idles parks too.
            rested: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            // Never a request time: its first sweep only records.
            swept_request_us: AtomicU64::new(u64::MAX),
        });
        self.clients.insert(id, entry.clone());
        ClientListing {
            entry,
            roster: self.clone(),
        }
    }

    pub fn add_server(self: &Arc<Self>, s: NewServer) -> ServerListing {
        let entry = Arc::new(ServerEntry {
            pid: s.pid,
            tenant_group: s.tenant_group,
            server: s.server,
            database: s.database,
            user: s.user,
            host: s.host,
            port: s.port,
            local: s.local,
            connected_us: now_us(),
            active: AtomicU8::new(0),
            used_us: AtomicU64::new(now_us()),
            statements: AtomicU32::new(0),
        });
        self.servers.insert(s.pid, entry.clone());
        ServerListing {
            entry,
            roster: self.clone(),
        }
    }

    /// Every client, oldest first.
    pub fn clients(&self) -> Vec<Arc<ClientEntry>> {
        let mut v: Vec<_> = self.clients.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Every server connection, by pid.
    pub fn servers(&self) -> Vec<Arc<ServerEntry>> {
        let mut v: Vec<_> = self.servers.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|s| s.pid);
        v
    }

    /// Raises `signal` for every client (of `tenant` only, when given).
    pub fn raise(&self, tenant: Option<&str>, signal: Signal) {
        for c in self.clients.iter() {
            if tenant.is_none_or(|t| *c.tenant == *t) {
                c.signals.raise(signal);
            }
        }
    }

    /// Asks clients idle at this sweep and the last, with no request in
    /// between, to rest: park (their session waits without a task) or at
    /// least give their relay buffers back. Called every second or so: a
    /// client between two transactions of a busy app keeps them (no
    /// allocation per transaction), one idle for a full sweep interval holds
    /// none. A client is asked once per idle spell. Returns how many were
    /// asked.
    pub fn trim_idle(&self) -> usize {
        let mut asked = 0;
        for c in self.clients.iter() {
            let idle = c.phase() == ClientPhase::Idle;
            let request = c.request_us();
            // Recorded only while idle: a transaction running across this
            // sweep makes the next one a first look again.
            let seen = if idle { request } else { u64::MAX };
            let swept = c.swept_request_us.swap(seen, Ordering::Relaxed);
            if idle
                && swept == request
                && !c.rested.load(Ordering::Relaxed)
                && !c.signals.has(Signal::TRIM)
            {
                c.signals.raise(Signal::TRIM);
                asked += 1;
            }
        }
        asked
    }

    pub fn client(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.clients.get(&id).map(|e| e.value().clone())
    }

    /// The client now on server backend `pid`, if any.
    pub fn client_on(&self, pid: i32) -> Option<u64> {
        self.clients
            .iter()
            .find(|c| c.server_pid() == pid)
            .map(|c| c.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster_with_client() -> (Arc<Roster>, ClientListing) {
        let roster = Arc::new(Roster::default());
        let listing = roster.add_client(NewClient {
            tenant: "acme".into(),
            user: "app".into(),
            addr: None,
            local: None,
            application_name: String::new(),
        });
        (roster, listing)
    }

    #[test]
    fn a_client_is_asked_to_rest_only_after_a_full_sweep_interval_idle() {
        let (roster, listing) = roster_with_client();
        let c = &listing.entry;
        // Logged in, never used: asked after its first full interval too
        // (an app's pool warming up parks).
        assert_eq!(roster.trim_idle(), 0, "a first look");
        assert_eq!(roster.trim_idle(), 1, "idle since login");
        c.signals.lower(Signal::TRIM);
        c.set_rested(true);
        assert_eq!(roster.trim_idle(), 0, "rested: not asked again");
        // A request, still running at the next sweep.
        c.set_rested(false);
        c.waiting();
        c.active(42);
        assert_eq!(roster.trim_idle(), 0, "busy");
        c.idle(false, 0);
        // Idle now, but it was busy at the last sweep: a first look.
        assert_eq!(roster.trim_idle(), 0, "idle for less than an interval");
        assert_eq!(roster.trim_idle(), 1, "idle across a whole interval");
        assert!(c.signals.has(Signal::TRIM));
        // Asked once: not again while the request is pending.
        assert_eq!(roster.trim_idle(), 0);
        c.signals.lower(Signal::TRIM);
        c.set_rested(true);
        // Rested: nothing more to ask.
        assert_eq!(roster.trim_idle(), 0);
    }

    /// Every idle client carries its entry (in an Arc: 16 bytes more): it
    /// stays within the allocator's 192-byte size class.
    #[test]
    fn a_client_entry_stays_small() {
        let size = std::mem::size_of::<ClientEntry>();
        assert!(size + 16 <= 192, "ClientEntry grew to {size} bytes");
    }

    #[test]
    fn kill_reaches_only_the_tenants_clients() {
        let (roster, acme) = roster_with_client();
        let beta = roster.add_client(NewClient {
            tenant: "beta".into(),
            user: "app".into(),
            addr: None,
            local: None,
            application_name: String::new(),
        });
        roster.raise(Some("acme"), Signal::KILL);
        assert!(acme.entry.signals.has(Signal::KILL));
        assert!(!beta.entry.signals.has(Signal::KILL));
        roster.raise(None, Signal::SHUTDOWN);
        assert!(acme.entry.signals.has(Signal::SHUTDOWN));
        assert!(beta.entry.signals.has(Signal::SHUTDOWN));
    }
}
