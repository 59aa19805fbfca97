//! A session at rest, parked: what of it outlives its transactions, without
//! a task, buffers or a runtime registration, in the proxy's parking lot
//! (`frontend::parking`) until its client's next request, close or signal.
//!
//! A session parks only when nothing of it lives in its task alone: plain
//! TCP or Unix socket (a TLS session's state is rustls's), transaction
//! pooling with no held link (session mode, a pin), no LISTEN, nothing
//! half-read or unsent, and no transaction-scoped state. Everything else
//! rests in its task with its buffers given back. Both conversions list
//! every field of the session and of the client's state, so a new field
//! does not compile until it is decided whether it parks.

use super::{client_for, Session};
use crate::app::Proxy;
use crate::backend::{Overrides, Settings};
use crate::frontend::cancel::CancelKey;
use crate::frontend::client::{Client, ClientState, Listen, SqlPrepared};
use crate::frontend::parking::ParkedSocket;
use crate::frontend::session_state::ClientSettings;
use crate::pool::signals::Signal;
use crate::prepared::ParkedStatements;
use crate::sql::{Effects, Restore};
use crate::tls::Stream;
use std::sync::Arc;

/// A session while parked (see the module's doc).
pub(crate) struct ParkedSession {
    proxy: Arc<Proxy>,
    key: CancelKey,
    tenant: Arc<crate::tenant::Tenant>,
    pool: Arc<crate::pool::TenantPool>,
    client_slot: crate::pool::Slot,
    listed: crate::pool::roster::ClientListing,
    /// What the session's close is logged with (transactions, queries,
    /// bytes received, bytes sent); the rest of its stats were flushed.
    total: [u64; 4],
    seen_generation: u64,
    conn_slot: tokio::sync::OwnedSemaphorePermit,
    client: RestingClient,
}

/// What of a client's state outlives its transactions.
struct RestingClient {
    statements: ParkedStatements,
    params: Arc<Settings>,
    startup_params: Arc<Settings>,
    startup: Overrides,
    current: Overrides,
    context: Option<Arc<crate::tenant::TenantContext>>,
    /// As it was (a tenant's move changes its context, not its guard).
    guard: crate::sql::parsed::Guard,
    unnamed_statement: Option<Arc<Effects>>,
    unnamed_portal: Option<Arc<Effects>>,
    /// Boxed: few clients PREPARE in SQL, every parked one carries it.
    sql_prepared: Option<Box<SqlPrepared>>,
}

/// The parking lot the proxy keeps for its sessions.
pub(crate) fn parking_lot() -> crate::frontend::parking::ParkingLot<Box<ParkedSession>> {
    crate::frontend::parking::ParkingLot::new(resume, watch)
}

/// Parks the session, its task ending; or hands both back when it cannot.
pub(super) fn park(stream: Stream, session: Box<Session>) -> Result<(), (Stream, Box<Session>)> {
    if !session.at_rest() {
        return Err((stream, session));
    }
    let socket = match stream {
        Stream::Plain(s) => s.into_std().map(ParkedSocket::Tcp),
        Stream::Unix(s) => s.into_std().map(ParkedSocket::Unix),
        tls @ Stream::Tls(_) => return Err((tls, session)),
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            // Out of the runtime already: the connection cannot go on.
            tracing::warn!(error = %e, "could not park an idle client; it is closed");
            session.finish();
            return Ok(());
        }
    };
    let lot = session.proxy.parking.clone();
    let me = session.listed.entry.clone();
    me.set_rested(true);
    me.set_parked(true);
    me.set_buffers(false);
    match lot.park(socket, session.into_parked()) {
        Ok(()) => Ok(()),
        Err((socket, parked)) => {
            me.set_parked(false);
            back(socket, parked.resumed())
        }
    }
}

/// A session that could not park goes on in its task.
fn back(socket: ParkedSocket, session: Box<Session>) -> Result<(), (Stream, Box<Session>)> {
    match into_stream(socket) {
        Ok(stream) => Err((stream, session)),
        Err(e) => {
            tracing::warn!(error = %e, "could not take an idle client back from the parking lot; it is closed");
            session.finish();
            Ok(())
        }
    }
}

fn into_stream(socket: ParkedSocket) -> std::io::Result<Stream> {
    Ok(match socket {
        ParkedSocket::Tcp(s) => Stream::Plain(tokio::net::TcpStream::from_std(s)?),
        ParkedSocket::Unix(s) => Stream::Unix(tokio::net::UnixStream::from_std(s)?),
    })
}

/// The lot's way back: the session's task again, on its socket.
fn resume(socket: ParkedSocket, parked: Box<ParkedSession>) {
    let me = &parked.listed.entry;
    me.set_parked(false);
    // A sweep that saw it just before it parked: it has rested already.
    me.signals.lower(Signal::TRIM);
    let session = parked.resumed();
    match into_stream(socket) {
        Ok(stream) => {
            tokio::spawn(super::serve(stream, session));
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not take an idle client back from the parking lot; it is closed");
            session.finish();
        }
    }
}

/// The lot's waker hears the parked session's signals; a KILL or shutdown
/// raised already sends it back to act on it.
#[allow(clippy::borrowed_box)] // the lot's items are the boxes
fn watch(parked: &Box<ParkedSession>, lot: &std::task::Waker) -> bool {
    let signals = &parked.listed.entry.signals;
    signals.watch(lot);
    signals.has(Signal::KILL | Signal::SHUTDOWN)
}

impl Session {
    /// Nothing of it lives in its task alone (see the module's doc).
    fn at_rest(&self) -> bool {
        let Session {
            proxy: _,
            key: _,
            tenant: _,
            pool: _,
            client_slot: _,
            listed: _,
            client,
            held,
            total: _,
            seen_generation: _,
            transaction_mode,
            reset_timeout: _,
            conn_slot: _,
            connected: _,
        } = self;
        let Client {
            up,
            down,
            t: _, // reset for every link
            state,
            listen: Listen { setup: _, listener },
            shutdown: _,
            server_silence: _,
            ..
        } = client;
        let ClientState {
            statements: _,
            params: _,
            startup_params: _,
            settings,
            transaction_mode: _,
            context: _,
            guard: _,
            unnamed_statement: _,
            unnamed_portal: _,
            named_portals,
            restore_after_sync,
            unlisten_after_sync,
            check_pins,
            learn,
            pin,
            pin_slot,
            pins: _,
            refusals: _,
            reprepares: _,
            evictions: _,
            sql_prepared: _,
            limits: _,
            follow_listens,
            notify_barrier,
            cancel_after_prelude,
        } = state;
        *transaction_mode
            && held.is_none()
            && listener.is_none()
            && up.at_rest()
            && down.at_rest()
            && settings.at_rest()
            && named_portals.is_empty()
            && matches!(restore_after_sync, Restore::Nothing)
            && !unlisten_after_sync
            && !check_pins
            && learn.is_empty()
            && pin.is_none()
            && pin_slot.is_none()
            && !follow_listens
            && !notify_barrier
            && cancel_after_prelude.is_none()
    }

    /// The parked form of a session at rest; its counters are flushed first,
    /// and its cancel key takes the shared empty slot ([`CancelKey::park`]).
    fn into_parked(mut self: Box<Self>) -> Box<ParkedSession> {
        super::flush_stats(&mut self.client, &self.pool, &mut self.total);
        self.key.park();
        let Session {
            proxy,
            key,
            tenant,
            pool,
            client_slot,
            listed,
            client,
            held: _,
            total,
            seen_generation,
            transaction_mode: _,
            reset_timeout: _,
            conn_slot,
            connected: _,
        } = *self;
        let ClientState {
            statements,
            params,
            startup_params,
            settings,
            transaction_mode: _,
            context,
            guard,
            unnamed_statement,
            unnamed_portal,
            named_portals: _,
            restore_after_sync: _,
            unlisten_after_sync: _,
            check_pins: _,
            learn: _,
            pin: _,
            pin_slot: _,
            pins: _,
            refusals: _,
            reprepares: _,
            evictions: _,
            sql_prepared,
            limits: _,
            follow_listens: _,
            notify_barrier: _,
            cancel_after_prelude: _,
        } = client.state;
        let (startup, current) = settings.into_resting();
        Box::new(ParkedSession {
            proxy,
            key,
            tenant,
            pool,
            client_slot,
            listed,
            total: [
                total.transactions,
                total.queries,
                total.bytes_received,
                total.bytes_sent,
            ],
            seen_generation,
            conn_slot,
            client: RestingClient {
                statements: statements.park(),
                params,
                startup_params,
                startup,
                current,
                context,
                guard,
                unnamed_statement,
                unnamed_portal,
                sql_prepared: (!sql_prepared.is_empty()).then(|| Box::new(sql_prepared)),
            },
        })
    }
}

impl ParkedSession {
    /// The session again, as it was when it parked.
    fn resumed(self: Box<Self>) -> Box<Session> {
        let ParkedSession {
            proxy,
            key,
            tenant,
            pool,
            client_slot,
            listed,
            total,
            seen_generation,
            conn_slot,
            client: resting,
        } = *self;
        let [transactions, queries, bytes_received, bytes_sent] = total;
        let total = crate::pool::SessionStats {
            transactions,
            queries,
            bytes_received,
            bytes_sent,
            ..Default::default()
        };
        // From its roster entry: one clock less to keep while parked (the
        // wall clock's: the close log's duration follows a clock step).
        let since = crate::pool::roster::now_us().saturating_sub(listed.entry.connected_us);
        let connected = std::time::Instant::now()
            .checked_sub(std::time::Duration::from_micros(since))
            .unwrap_or_else(std::time::Instant::now);
        let client = client_for(
            &proxy,
            &pool,
            |limits| {
                let mut state = ClientState::new(
                    resting.params,
                    Overrides::default(),
                    true,
                    resting.context,
                    pool.pins.clone(),
                    limits,
                );
                state.statements = resting.statements.resume();
                state.guard = resting.guard;
                state.startup_params = resting.startup_params;
                state.settings = ClientSettings::resumed(resting.startup, resting.current);
                state.unnamed_statement = resting.unnamed_statement;
                state.unnamed_portal = resting.unnamed_portal;
                state.sql_prepared = resting.sql_prepared.map(|m| *m).unwrap_or_default();
                state
            },
            false,
        );
        let mut key = key;
        key.resume();
        Box::new(Session {
            reset_timeout: proxy.pools.settings().server_connect_timeout,
            proxy,
            key,
            tenant,
            pool,
            client_slot,
            listed,
            client,
            held: None,
            total,
            seen_generation,
            transaction_mode: true,
            conn_slot,
            connected,
        })
    }
}

#[cfg(test)]
mod tests {
    /// A parked session's own allocation stays in the allocator's 256-byte
    /// size class: it is most of what an idle client costs (benches/idle.sh).
    #[test]
    fn a_parked_session_fits_in_256_bytes() {
        let size = std::mem::size_of::<super::ParkedSession>();
        println!("ParkedSession: {size} bytes");
        assert!(size <= 256, "ParkedSession grew to {size} bytes");
    }
}
