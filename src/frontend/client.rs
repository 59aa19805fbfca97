//! One client after login, in one place: its buffers, where its conversation
//! with the current link stands, and the session state that outlives any one
//! server link (statements, settings, the tenant context it gets, its pin).

use super::relay::{Downstream, Upstream};
use super::session_state::{ClientSettings, Listening};
use super::tracker::TxnTracker;
use crate::backend::{Overrides, Settings};
use crate::notify::{Hubs, Listener, Note};
use crate::pool::{Quota, Slot};
use crate::prepared::ClientStatements;
use crate::sql::parsed::Guard;
use crate::sql::{Effects, Restore};
use crate::tenant::TenantContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a client keeps its server link between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinReason {
    pub advisory_locks: u32,
    pub held_cursors: u32,
    pub temp_tables: u32,
}

impl PinReason {
    pub fn any(&self) -> bool {
        self.advisory_locks + self.held_cursors + self.temp_tables > 0
    }
}

/// Limits on what one client may make pgtenant remember.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Settings changed from their defaults (beyond it: 53400).
    pub max_settings: usize,
    /// Named prepared statements (beyond it, a Parse of a new name: 53400).
    pub max_statements: usize,
    /// Channels it listens on (beyond it, a LISTEN of a new one: 53400).
    pub max_listens: usize,
}

/// Everything about a client that outlives one server link.
#[derive(Debug)]
pub struct ClientState {
    pub statements: ClientStatements,
    /// Wanted values of the reported settings (`policy::REPORTED_PARAMS`);
    /// the same map as `startup_params` until the client changes one.
    pub params: Arc<Settings>,
    /// Their values at login: what RESET / DISCARD ALL go back to.
    pub startup_params: Arc<Settings>,
    /// Every other setting the client changed.
    pub settings: ClientSettings,
    pub transaction_mode: bool,
    /// Context isolation: the tenant context set on every checkout.
    pub context: Option<Arc<TenantContext>>,
    pub guard: Guard,
    /// Effects of the unnamed statement (its Parse), and of the unnamed
    /// portal (its Bind), applied at Execute.
    pub unnamed_statement: Option<Arc<Effects>>,
    pub unnamed_portal: Option<Arc<Effects>>,
    /// Named portals bound to statements with session effects (rare), until
    /// executed.
    pub named_portals: HashMap<Vec<u8>, Arc<Effects>>,
    /// To put back after the next Sync (a RESET ALL executed via Execute).
    pub restore_after_sync: Restore,
    /// `UNLISTEN *` the link after the next Sync (a LISTEN executed there).
    pub unlisten_after_sync: bool,
    /// Something that may pin the link ran: check at the transaction's end.
    pub check_pins: bool,
    /// Settings set to values pgtenant could not read (`learned_settings`):
    /// asked of the server at the transaction's end.
    pub learn: Vec<String>,
    /// Why the client keeps its link between transactions, if it does.
    pub pin: Option<PinReason>,
    /// Its place in the tenant's `max_pinned`, taken when a statement that
    /// may pin is sent (so the cap refuses that statement, not a later one).
    pub pin_slot: Option<Slot>,
    pub pins: Arc<Quota>,
    /// Requests the statement guard refused (42501) since the last flush.
    pub refusals: u64,
    /// Its statements pgtenant prepared again on a link that lacked them,
    /// and statements closed to make room on a full link, since the last
    /// flush.
    pub reprepares: u64,
    pub evictions: u64,
    /// SQL-level prepared statements: name -> (version, PREPARE text). The
    /// version tells a link's copy from another client's of the same name.
    pub sql_prepared: SqlPrepared,
    pub limits: ClientLimits,
    /// A request that LISTENs or UNLISTENs was answered: the hub must follow
    /// before the client hears back.
    pub follow_listens: bool,
    /// A request of this listening client that notifies committed: its own
    /// notifications go out before its ReadyForQuery.
    pub notify_barrier: bool,
    /// The link was wiped for this client (it served another tenant): its
    /// cancel target, published only once pgtenant's own prelude (the wipe,
    /// the tenant context) has been answered. A cancel must never stop those
    /// two and let the client's SQL run in the previous tenant's context.
    pub cancel_after_prelude: Option<(super::cancel::CancelSlot, super::cancel::CancelTarget)>,
}

/// SQL-level prepared statements: name -> (version, PREPARE text).
pub type SqlPrepared = HashMap<String, (u64, Arc<str>)>;

/// Versions of SQL-level prepared statements, unique in the process.
static NEXT_SQL_VERSION: AtomicU64 = AtomicU64::new(1);

pub fn next_sql_version() -> u64 {
    NEXT_SQL_VERSION.fetch_add(1, Ordering::Relaxed)
}

impl ClientState {
    pub fn new(
        params: Arc<Settings>,
        startup_settings: Overrides,
        transaction_mode: bool,
        context: Option<Arc<TenantContext>>,
        pins: Arc<Quota>,
        limits: ClientLimits,
    ) -> Self {
        let guard = Guard::of(context.is_some());
        Self {
            statements: ClientStatements::new(),
            startup_params: params.clone(),
            params,
            settings: ClientSettings::new(startup_settings),
            transaction_mode,
            context,
            guard,
            unnamed_statement: None,
            unnamed_portal: None,
            named_portals: HashMap::new(),
            restore_after_sync: Restore::Nothing,
            unlisten_after_sync: false,
            check_pins: false,
            learn: Vec::new(),
            pin: None,
            pin_slot: None,
            pins,
            refusals: 0,
            reprepares: 0,
            evictions: 0,
            sql_prepared: HashMap::new(),
            limits,
            follow_listens: false,
            cancel_after_prelude: None,
            notify_barrier: false,
        }
    }

    pub fn id(&self) -> u64 {
        self.statements.client_id()
    }

    /// Keeps its link between transactions.
    pub fn pinned(&self) -> bool {
        self.pin.is_some()
    }
}

/// Where a client's LISTENs go: its tenant's hub (see `notify`).
#[derive(Debug)]
pub struct ListenSetup {
    pub hubs: Arc<Hubs>,
    /// The client's pool: its target (server, database and role) is where
    /// the hub listens. Shared, not copied: every client carries a setup.
    pub pool: Arc<crate::pool::TenantPool>,
    pub tenant: Arc<str>,
    /// How long a LISTEN waits for the hub to be listening.
    pub timeout: Duration,
}

/// A client's listening: set up at login, a listener once it listens.
#[derive(Debug, Default)]
pub struct Listen {
    pub setup: Option<ListenSetup>,
    /// Boxed: few clients listen, every client carries the field.
    pub listener: Option<Box<Listener>>,
}

impl Listen {
    /// The client listens: notifications may arrive for it.
    pub fn waiting(&self) -> bool {
        self.listener.as_ref().is_some_and(|l| l.listening())
    }

    /// Makes the hub listen on exactly `want` for the client; true once it
    /// does (false: the hub could not listen, the client must be closed).
    pub async fn follow(&mut self, want: &Listening, client: u64) -> bool {
        let Some(setup) = &self.setup else {
            return true;
        };
        if self.listener.is_none() && want.is_empty() {
            return true;
        }
        let listener = self.listener.get_or_insert_with(|| {
            Box::new(Listener::new(
                setup.hubs.clone(),
                setup.pool.target().clone(),
                setup.tenant.clone(),
                client,
            ))
        });
        let Some(waits) = listener.follow(want) else {
            return false;
        };
        let all = futures_util::future::join_all(waits);
        match tokio::time::timeout(setup.timeout, all).await {
            Ok(done) => done.into_iter().all(|d| d == Ok(true)),
            Err(_) => false,
        }
    }

    /// Notifications committed so far that are for this client (see
    /// [`Listener::barrier`]); none unless it listens.
    pub async fn barrier(&mut self) -> Vec<Note> {
        match (&self.setup, self.listener.as_mut()) {
            (Some(setup), Some(l)) if l.listening() => l.barrier(setup.timeout).await,
            _ => Vec::new(),
        }
    }

    /// The next notification for the client; `None` when the hub dropped it
    /// while it listens (call only while [`Listen::waiting`]).
    pub async fn next(&mut self) -> Option<Note> {
        match self.listener.as_mut() {
            Some(l) => l.next().await,
            None => std::future::pending().await,
        }
    }
}

/// A client: buffers, the conversation with its current link, its state.
#[derive(Debug)]
pub struct Client {
    pub up: Upstream,
    pub down: Downstream,
    pub t: TxnTracker,
    pub state: ClientState,
    pub listen: Listen,
    /// pgtenant is shutting down: a client idle on a held link (session
    /// mode, pinned) is told so and let go. `None` in tests.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// `query_timeout`: how long a server owing an answer may stay silent.
    pub server_silence: Option<std::time::Duration>,
    /// Its relay buffers were given back while it idled.
    trimmed: bool,
}

impl Client {
    /// A client with its relay buffers ready (tests drive the relay directly).
    pub fn new(state: ClientState) -> Self {
        let mut client = Self::logged_in(state);
        client.refill();
        client
    }

    /// A client just logged in: its buffers are taken with its first
    /// request ([`Client::refill`]), so a connected, never-used client
    /// (an app's pool warming up) holds none.
    pub fn logged_in(state: ClientState) -> Self {
        Self {
            up: Upstream::default(),
            down: Downstream::default(),
            t: TxnTracker::default(),
            state,
            listen: Listen::default(),
            shutdown: None,
            server_silence: None,
            trimmed: true,
        }
    }

    /// Idle a while: gives the relay buffers' memory back (an idle client
    /// then holds none), keeping whatever is still in them.
    pub fn trim(&mut self) {
        super::relay::trim_buffers(&mut self.up, &mut self.down);
        self.trimmed = true;
    }

    /// Its next request came: takes the buffers' usual size again if they
    /// were given back. True when it did.
    pub fn refill(&mut self) -> bool {
        if !std::mem::take(&mut self.trimmed) {
            return false;
        }
        super::relay::refill_buffers(&mut self.up, &mut self.down);
        true
    }
}

/// Resolves once `shutdown` says pgtenant is shutting down (never without one).
pub async fn shutting_down(shutdown: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}
