//! One client's life after login: wait for a request, borrow a server link,
//! relay until the transaction (or session) ends, give the link back clean.

mod parked;
pub(crate) use parked::{parking_lot, ParkedSession};

use super::cancel::{CancelKey, CancelTarget};
use super::checkout::checkout;
use super::client::{Client, ClientLimits, ClientState};
use super::departure::{cancel_then_close, until_gone};
use super::handshake::{login, send_fatal, LoggedIn, Login, Opening, Refusal};
use super::pin_check::after_transaction;
use super::relay::{flush, relay, Downstream, RelayEnd, Upstream};
use super::secure::Opened;
use super::session_end::{
    checkout_error_kind, killed, listen_lost, login_failure, moved, moved_away, shutting_down,
    still_allowed, stopped,
};
use crate::app::Proxy;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::metrics::LoginFailure;
use crate::pool::signals::Signal;
use crate::pool::{ErrorKind, Lease};
use crate::protocol::frame::{no_peek, Flow};
use crate::protocol::messages::{self, Severity};
use crate::protocol::sqlstate;
use crate::protocol::tag::frontend as fe;
use crate::tls::{ReadHalf, Stream, WriteHalf};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A connection just accepted, boxed: what only its login needs takes no
/// room in its task's future for the rest of its life.
pub struct Accepted {
    pub socket: super::secure::ClientSocket,
    /// Its place among connections logging in, given back once its login
    /// ends.
    pub pass: super::LoginPass,
    /// Its place in `max_client_conn`, held until it closes.
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

/// Serves one client connection from its first byte to its close.
pub async fn serve_client(accepted: Box<Accepted>, proxy: Arc<Proxy>) {
    let mut key = proxy.cancels.register();
    // Boxed: a login's futures (TLS, SCRAM, the catalog) are several times
    // larger than an idle session's, and a task's future is as large as its
    // largest state for as long as the client stays connected.
    let Some((stream, secured, login, slot)) = Box::pin(log_in(accepted, &proxy, &mut key)).await
    else {
        return;
    };
    let session = Session::start(stream.is_tls(), &secured, proxy, key, *login, slot);
    serve(stream, session).await;
}

/// From a client's first byte to its session: TLS, the startup packet, the
/// tenant, authentication. `None` when the connection ended there (refused,
/// timed out, a cancel request, or the admin console, served here).
async fn log_in(
    accepted: Box<Accepted>,
    proxy: &Arc<Proxy>,
    key: &mut CancelKey,
) -> Option<(
    Stream,
    crate::tls::Secured,
    Box<Login>,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let Accepted { socket, pass, slot } = *accepted;
    let timeout = proxy.config.proxy.client_login_timeout;
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let in_flight = proxy.metrics.login_started();
    let timed_out = || {
        ClientError::new(
            sqlstate::PROTOCOL_VIOLATION,
            format!("login not completed within client_login_timeout ({timeout:?})"),
        )
    };
    let (mut stream, secured, params) = match super::secure::open(socket, proxy, deadline).await {
        Opened::Ready(stream, secured, Opening::Startup(params)) => (stream, secured, params),
        Opened::Ready(_, _, Opening::Cancel { pid, secret }) => {
            proxy.cancels.cancel(pid, secret).await;
            return None;
        }
        Opened::Refused(stream, refusal) => {
            refused(proxy, stream, refusal).await;
            return None;
        }
        Opened::TimedOut(stream) => {
            proxy.metrics.login_failed(LoginFailure::Timeout);
            if let Some(mut s) = stream {
                send_fatal(&mut s, &timed_out()).await;
            }
            return None;
        }
    };
    // Pinned where it is made: moved into the timeout, the login's large
    // future would be copied whole (callgrind: 7% of a login's instructions).
    let outcome = {
        let login = std::pin::pin!(login(&mut stream, proxy, key, params, &secured));
        tokio::time::timeout_at(deadline, login).await
    };
    let login = match outcome {
        Ok(Ok(LoggedIn::Tenant(l))) => l,
        Ok(Ok(LoggedIn::Console { user })) => {
            proxy.metrics.login_succeeded(started.elapsed());
            drop(in_flight);
            drop(pass);
            crate::admin::serve_console(stream, proxy.clone(), user).await;
            return None;
        }
        Ok(Err(refusal)) => {
            refused(proxy, Some(stream), refusal).await;
            return None;
        }
        Err(_) => {
            proxy.metrics.login_failed(LoginFailure::Timeout);
            send_fatal(&mut stream, &timed_out()).await;
            return None;
        }
    };
    proxy.metrics.login_succeeded(started.elapsed());
    drop(in_flight);
    drop(pass);
    Some((stream, secured, login, slot))
}

/// Ends a login that was refused: counted, and told when there is a stream.
async fn refused(proxy: &Proxy, stream: Option<Stream>, refusal: Refusal) {
    match refusal {
        Refusal::Error(e) => {
            proxy.metrics.login_failed(login_failure(e.code));
            if let Some(mut s) = stream {
                send_fatal(&mut s, &e).await;
            }
        }
        Refusal::Cancel => {}
        Refusal::Closed => proxy.metrics.login_failed(LoginFailure::ClientGone),
    }
}

async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, e: &ClientError, severity: Severity) -> bool {
    let mut out = BytesMut::new();
    messages::error_response(&mut out, severity, e.code, &e.message, e.hint.as_deref());
    if severity == Severity::Error {
        messages::ready_for_query(&mut out, b'I');
    }
    w.write_all(&out).await.is_ok() && w.flush().await.is_ok()
}

/// After a failed checkout: drops the client's request (a Query, or extended
/// messages through the next Sync) and answers as PostgreSQL does after an
/// error: the ErrorResponse as soon as the client waits for replies (a Flush
/// counts), ReadyForQuery at the Sync or Query.
async fn refuse_request<R, W>(
    r: &mut R,
    w: &mut W,
    up: &mut Upstream,
    e: &ClientError,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut told = false;
    // Kept across reads: the request's last message may arrive in pieces
    // (a trimmed client's first read takes only 64 bytes).
    let mut ended = false;
    loop {
        let mut flushed = false;
        let scan = up.scanner.scan(&up.buf, 0, no_peek, |tag, _| {
            if ended {
                return Flow::StopBefore;
            }
            match tag {
                fe::QUERY | fe::SYNC | fe::FUNCTION_CALL => ended = true,
                fe::FLUSH => flushed = true,
                _ => {}
            }
            Flow::Continue
        });
        let end = scan
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            .end;
        up.buf.advance(end);
        let complete = ended && up.scanner.at_boundary();
        if (flushed || complete) && !told {
            let mut out = BytesMut::new();
            messages::error_response(
                &mut out,
                Severity::Error,
                e.code,
                &e.message,
                e.hint.as_deref(),
            );
            w.write_all(&out).await?;
            w.flush().await?;
            told = true;
        }
        if complete {
            let mut out = BytesMut::new();
            messages::ready_for_query(&mut out, b'I');
            w.write_all(&out).await?;
            return w.flush().await;
        }
        if r.read_buf(&mut up.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A logged-in client's requests, one after another, until it leaves.
/// Idle a while, its session parks (see `parked`): the task ends, and the
/// parking lot starts a new one with its next request.
pub(super) async fn serve(mut stream: Stream, mut session: Box<Session>) {
    loop {
        let rest = {
            let (mut cr, mut cw) = stream.split();
            loop {
                match session.next_request(&mut cr, &mut cw).await {
                    Wait::Request => {
                        // Boxed, one allocation per request: the transaction
                        // path's future (checkout, relay, the error paths) is
                        // most of a session's, and a task's future is as
                        // large as its largest state for as long as the
                        // client stays. An idle client holds only the wait.
                        let step = Box::pin(session.transaction(&mut cr, &mut cw)).await;
                        if step == Step::End {
                            break false;
                        }
                    }
                    Wait::Rest => break true,
                    Wait::End => break false,
                }
            }
        };
        if !rest {
            break;
        }
        match parked::park(stream, session) {
            Ok(()) => return,
            Err((back, mut unparked)) => {
                // Something of its session lives only in this task (a held
                // link, a LISTEN, TLS): it stays, without its buffers.
                unparked.client.trim();
                unparked.listed.entry.set_buffers(false);
                unparked.listed.entry.set_rested(true);
                (stream, session) = (back, unparked);
            }
        }
    }
    session.finish();
}

/// After one request: wait for the next, or the session is over.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Next,
    End,
}

/// What the wait between requests ended with.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    /// The next request's first bytes are in the client's buffer.
    Request,
    /// Idle a while (see `Roster::trim_idle`): park, or give buffers back.
    Rest,
    /// The session is over (the client left or was told why it must go).
    End,
}

/// A client session: what lives between its transactions. Owned, so that
/// it can wait in the parking lot without a task.
pub(super) struct Session {
    proxy: Arc<Proxy>,
    key: CancelKey,
    /// Owned: a route change (promote, move, a new schema) moves the client
    /// to the tenant's new pool between transactions.
    tenant: Arc<crate::tenant::Tenant>,
    pool: Arc<crate::pool::TenantPool>,
    client_slot: crate::pool::Slot,
    /// Its SHOW CLIENTS row while it is connected, and its signals.
    listed: crate::pool::roster::ClientListing,
    client: Client,
    /// The link kept between transactions: in session mode the one taken at
    /// login (whose pid the client was told); in transaction mode a pinned one.
    held: Option<Lease>,
    total: crate::pool::SessionStats,
    seen_generation: u64,
    transaction_mode: bool,
    reset_timeout: std::time::Duration,
    /// Its place in `max_client_conn`, held until it closes.
    conn_slot: tokio::sync::OwnedSemaphorePermit,
    connected: std::time::Instant,
}

/// A client's state after login, with what it needs from the proxy and its
/// pool (limits, its LISTEN setup, shutdown, timers): one place for a new
/// session and a parked one resumed.
fn client_for(
    proxy: &Proxy,
    pool: &Arc<crate::pool::TenantPool>,
    build: impl FnOnce(ClientLimits) -> ClientState,
    tls: bool,
) -> Client {
    let limits = ClientLimits {
        max_settings: proxy.config.proxy.max_client_settings,
        max_statements: proxy.config.proxy.max_client_statements,
        max_listens: proxy.config.proxy.max_client_listens,
    };
    let mut client = Client::logged_in(build(limits));
    client.listen.setup = Some(super::client::ListenSetup {
        hubs: proxy.notify.clone(),
        pool: pool.clone(),
        tenant: pool.name.clone(),
        timeout: proxy.pools.settings().server_connect_timeout,
    });
    client.shutdown = Some(proxy.shutdown_signal());
    let silence = proxy.config.proxy.query_timeout;
    client.server_silence = (!silence.is_zero()).then_some(silence);
    if pool.timings.enabled {
        client.t.query_timer = Some(pool.timings.query.clone());
    }
    // TLS holds written bytes until flushed; plain TCP never needs it.
    client.down.flush_writes = tls;
    client
}

impl Session {
    /// A session for a client that just logged in.
    fn start(
        tls: bool,
        secured: &crate::tls::Secured,
        proxy: Arc<Proxy>,
        key: CancelKey,
        login: Login,
        conn_slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Box<Self> {
        let Login {
            tenant,
            pool,
            user,
            params,
            settings,
            _client_slot: client_slot,
            lease,
        } = login;
        // The link kept between transactions: in session mode the one taken at
        // login (whose pid the client was told); in transaction mode a pinned one.
        let held: Option<Lease> = lease;
        let transaction_mode = tenant.pool_mode == PoolMode::Transaction;
        // Its SHOW CLIENTS row while it is connected.
        let listed = proxy
            .pools
            .roster
            .add_client(crate::pool::roster::NewClient {
                tenant: pool.name.clone(),
                user: pool.startups.share_user(&user),
                addr: secured.peer,
                local: secured.listen_addr,
                application_name: params.get("application_name").cloned().unwrap_or_default(),
            });
        if proxy.shutting_down() {
            // Listed after the shutdown's broadcast (see Proxy::begin_shutdown).
            listed.entry.signals.raise(Signal::SHUTDOWN);
        }
        let client = client_for(
            &proxy,
            &pool,
            |limits| {
                ClientState::new(
                    params,
                    settings,
                    transaction_mode,
                    tenant.context.clone(),
                    pool.pins.clone(),
                    limits,
                )
            },
            tls,
        );
        Box::new(Session {
            seen_generation: proxy.tenants.generation(),
            reset_timeout: proxy.pools.settings().server_connect_timeout,
            proxy,
            key,
            tenant,
            pool,
            client_slot,
            listed,
            client,
            held,
            total: crate::pool::SessionStats::default(),
            transaction_mode,
            conn_slot,
            connected: std::time::Instant::now(),
        })
    }

    /// The session is over: its counters flushed, its close logged.
    fn finish(mut self: Box<Self>) {
        let Session {
            client,
            pool,
            total,
            tenant,
            listed,
            connected,
            ..
        } = &mut *self;
        flush_stats(client, pool, total);
        tracing::info!(
            tenant = %tenant.key,
            user = %listed.entry.user,
            // `Some(ip:port)` was Debug noise: the address, or "unix".
            address = %listed.entry.addr().map_or_else(|| "unix".to_owned(), |a| a.to_string()),
            duration_ms = connected.elapsed().as_millis() as u64,
            transactions = total.transactions,
            bytes_received = total.bytes_received,
            bytes_sent = total.bytes_sent,
            "client closed"
        );
    }
}

impl Session {
    /// Waits, between transactions, for the client's next request (true:
    /// its first bytes are in its buffer). False: the session is over
    /// (the client left or was told why it must go). The only state of an
    /// idle client's task, so it stays small.
    async fn next_request(&mut self, cr: &mut ReadHalf<'_>, cw: &mut WriteHalf<'_>) -> Wait {
        let me = &self.listed.entry;
        let client = &mut self.client;
        // No server link held between transactions, unless pinned.
        while client.up.buf.is_empty() {
            tokio::select! {
                r = cr.read_buf(&mut client.up.buf) => match r {
                    Ok(0) | Err(_) => return self.end(),
                    Ok(n) => client.up.received += n as u64,
                },
                note = client.listen.next(), if client.listen.waiting() => {
                    let Some(note) = note else {
                        send_error(cw, &listen_lost(), Severity::Fatal).await;
                        return self.end();
                    };
                    if cw.write_all(&note).await.is_err() || cw.flush().await.is_err() {
                        return self.end();
                    }
                }
                _ = me.signals.wait(Signal::KILL | Signal::SHUTDOWN | Signal::TRIM) => {
                    if let Some(e) = stopped(me) {
                        send_error(cw, &e, Severity::Fatal).await;
                        return self.end();
                    }
                    // Idle a while (see Roster::trim_idle).
                    me.signals.lower(Signal::TRIM);
                    return Wait::Rest;
                }
            }
        }
        if client.up.buf[0] == fe::TERMINATE {
            return self.end();
        }
        if client.refill() {
            me.set_buffers(true);
            me.set_rested(false);
            // A trimmed client's wait reads 64 bytes (all an idle client
            // holds), and a new client starts trimmed. The rest of a longer
            // first message has most likely arrived with it: read it now, so
            // the request reaches the server in one write (the relay would
            // forward the part it has, then the rest: two writes, two
            // wake-ups of the server). Polled once; if nothing is there, the
            // relay reads it as usual.
            if !crate::protocol::frame::first_whole(&client.up.buf) {
                use futures_util::FutureExt;
                match cr.read_buf(&mut client.up.buf).now_or_never() {
                    Some(Ok(n)) => client.up.received += n as u64,
                    // A TLS error may not show again until more bytes come.
                    Some(Err(_)) => return self.end(),
                    None => {}
                }
            }
        }
        Wait::Request
    }

    /// The session ends between transactions: a held link goes back wiped.
    fn end(&mut self) -> Wait {
        give_back(self.held.take(), self.reset_timeout);
        Wait::End
    }

    /// Serves the request the client started (its first bytes are in its
    /// buffer): a PAUSE or hold first, a route change, a server link, the
    /// relay until the link can go back, and what the end calls for.
    async fn transaction(&mut self, cr: &mut ReadHalf<'_>, cw: &mut WriteHalf<'_>) -> Step {
        let Session {
            proxy,
            key,
            tenant,
            pool,
            client_slot,
            listed,
            client,
            held,
            total,
            seen_generation,
            transaction_mode,
            reset_timeout,
            conn_slot: _,
            connected: _,
        } = self;
        let (proxy, key): (&Proxy, &CancelKey) = (proxy, key);
        let (transaction_mode, reset_timeout) = (*transaction_mode, *reset_timeout);
        let me = &listed.entry;
        let asked = std::time::Instant::now();
        // PAUSE or a hold: the new transaction waits here (two loads
        // otherwise). Then a catalog change may have suspended, cancelled
        // or removed the tenant, or given it a new home: its clients learn
        // at their next transaction (one atomic load otherwise), and a
        // client released from a hold finds the new route first.
        loop {
            if proxy.pools.gate_closed(pool, held.is_some()) {
                me.held();
                tokio::select! {
                    _ = proxy.pools.wait_open(pool, held.is_some()) => {}
                    _ = me.signals.wait(Signal::KILL | Signal::SHUTDOWN) => {
                        let e = stopped(me).unwrap_or_else(killed);
                        send_error(cw, &e, Severity::Fatal).await;
                        return give_back(held.take(), reset_timeout);
                    }
                }
            }
            let generation = proxy.tenants.generation();
            if generation != *seen_generation {
                *seen_generation = generation;
                if let Err(e) = still_allowed(proxy, &tenant.key) {
                    send_error(cw, &e, Severity::Fatal).await;
                    return give_back(held.take(), reset_timeout);
                }
                if let Some(now) = moved(proxy, tenant) {
                    // Nothing that lives on the old server session can follow.
                    if held.is_some() || client.listen.waiting() {
                        send_error(cw, &moved_away(&tenant.key), Severity::Fatal).await;
                        return give_back(held.take(), reset_timeout);
                    }
                    let next = proxy
                        .pools
                        .pool_for(&now)
                        .map_err(|e| ClientError::from(&e));
                    let slot = next.as_ref().map_err(Clone::clone).and_then(|p| {
                        p.client_slots
                            .try_acquire()
                            .map_err(|_| moved_away(&now.key))
                    });
                    let (next, slot) = match (next, slot) {
                        (Ok(p), Ok(s)) => (p, s),
                        (Err(e), _) | (_, Err(e)) => {
                            send_error(cw, &e, Severity::Fatal).await;
                            return give_back(held.take(), reset_timeout);
                        }
                    };
                    flush_stats(client, pool, total);
                    client.state.context = now.context.clone();
                    // The guard a login to the new home gets (a move into
                    // context isolation protects search_path from now on).
                    let guard = crate::sql::parsed::Guard::of(now.context.is_some());
                    if guard != client.state.guard {
                        client.state.guard = guard;
                        client.state.settings.drop_protected(guard);
                    }
                    client.state.pins = next.pins.clone();
                    if let Some(setup) = client.listen.setup.as_mut() {
                        setup.pool = next.clone();
                    }
                    client.t.query_timer = next.timings.enabled.then(|| next.timings.query.clone());
                    tracing::info!(tenant = %now.key, user = %me.user, "client follows its tenant to a new home");
                    (*tenant, *pool, *client_slot) = (now, next, slot);
                }
            }
            me.waiting();
            // Published before the gate is read again: a hold's quiet
            // check (PoolManager::quiet_holds) either sees this client on
            // its way in or the client sees the hold.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if !proxy.pools.gate_closed(pool, held.is_some()) {
                break;
            }
        }
        if me.signals.has(Signal::TRIM) {
            // Raised by a sweep that saw this client idle just before its
            // request (see Roster::trim_idle): it is busy now.
            me.signals.lower(Signal::TRIM);
        }
        if me.signals.has(Signal::KILL) {
            send_error(cw, &killed(), Severity::Fatal).await;
            return give_back(held.take(), reset_timeout);
        }
        let mut lease = match held.take() {
            Some(l) => l,
            None => match until_gone(
                checkout(proxy, pool, client.state.context.as_deref()),
                cr,
                &mut client.up,
            )
            .await
            {
                // Gone while waiting: its place in the queue and its quota
                // go to the clients still there.
                None => return Step::End,
                Some(Ok(l)) => {
                    let waited = asked.elapsed();
                    pool.timings.pool_wait.record(waited.as_secs_f64());
                    pool.counters.wait_us.fetch_add(
                        waited.as_micros() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    l
                }
                Some(Err(e)) => {
                    match pool.warnings.pass() {
                        Some(held_back) => {
                            tracing::warn!(tenant = %tenant.key, user = %me.user, error = %e.message, held_back, "checkout failed")
                        }
                        None => {
                            tracing::debug!(tenant = %tenant.key, user = %me.user, error = %e.message, "checkout failed")
                        }
                    }
                    pool.counters.error(checkout_error_kind(e.code), 1);
                    if refuse_request(cr, cw, &mut client.up, &e).await.is_err() {
                        return Step::End;
                    }
                    me.idle(held.is_some(), client.state.statements.len());
                    return Step::Next;
                }
            },
        };
        let conn = lease.conn();
        me.active(conn.state.pid);
        if let Some(owner) = &conn.state.owner {
            // Shown as the sender of its notifications (see notify::owners).
            owner
                .client_pid
                .store(key.pid, std::sync::atomic::Ordering::Relaxed);
        }
        let target = CancelTarget {
            host: pool.target().host.clone(),
            port: pool.target().port,
            tls: pool.target().tls.clone(),
            pid: conn.state.pid,
            secret: conn.secret,
        };
        if conn.state.wipe {
            key.set(None);
            client.state.cancel_after_prelude = Some((key.slot.clone(), target));
        } else {
            key.set(Some(target));
        }
        client.up.flush_writes = conn.stream.is_tls();
        let (mut sr, mut sw) = conn.stream.split();
        let end = relay((cr, cw), client, (&mut sr, &mut sw), &mut conn.state).await;
        key.set(None);
        client.state.cancel_after_prelude = None;
        flush_stats(client, pool, total);
        // Transaction mode: one relay is one request-to-idle span.
        if matches!(end, RelayEnd::Release) && transaction_mode {
            let took = asked.elapsed();
            pool.timings.transaction.record(took.as_secs_f64());
            pool.counters.xact_us.fetch_add(
                took.as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        match &end {
            RelayEnd::ClientProtocol(_) => pool.counters.error(ErrorKind::Protocol, 1),
            RelayEnd::ServerClosed
            | RelayEnd::ServerIo(_)
            | RelayEnd::ServerProtocol(_)
            | RelayEnd::ContextFailed => pool.counters.error(ErrorKind::Server, 1),
            RelayEnd::ServerSilent => pool.counters.error(ErrorKind::Timeout, 1),
            _ => {}
        }
        let link_clean = client.t.idle() && client.down.drained() && client.up.drained();
        match end {
            RelayEnd::Release => {
                if client.state.check_pins
                    || client.state.pinned()
                    || !client.state.learn.is_empty()
                {
                    // Before the client has its answer: once it has, its pins
                    // and settings must be known (a pin slot it gave back is
                    // free for another client the moment it sees its reply).
                    // Boxed: rare, and its queries' futures are large.
                    let ask = after_transaction(&mut client.state, lease.conn(), reset_timeout);
                    if let Err(e) = Box::pin(ask).await {
                        tracing::warn!(tenant = %tenant.key, error = %e, "could not ask the server connection what a client's transaction left on it");
                        let e = ClientError::new(
                            sqlstate::CONNECTION_FAILURE,
                            "server connection lost; pgtenant closed the client",
                        );
                        last_word(cw, &mut client.down, &e).await;
                        return Step::End;
                    }
                }
                if client.state.pinned() {
                    *held = Some(lease);
                } else {
                    lease.release();
                }
                me.idle(held.is_some(), client.state.statements.len());
                if flush(cw, &mut client.down).await.is_err() {
                    return give_back(held.take(), reset_timeout);
                }
                if me.signals.has(Signal::SHUTDOWN) {
                    send_error(cw, &shutting_down(), Severity::Fatal).await;
                    return give_back(held.take(), reset_timeout);
                }
            }
            RelayEnd::Terminate | RelayEnd::ClientClosed | RelayEnd::ClientIo(_) => {
                if link_clean && (!transaction_mode || client.state.pinned()) {
                    tokio::spawn(lease.reset_and_release(reset_timeout));
                } else if !matches!(end, RelayEnd::Terminate) && client.t.awaiting_reply() {
                    // Gone without a goodbye while its query may run:
                    // PostgreSQL would finish it for nobody (it notices a
                    // closed client only when it next writes). Cancelled
                    // first, then the link is closed (a client that sent
                    // Terminate after its query wants it finished).
                    cancel_then_close(lease, pool);
                }
                // Otherwise the lease drops here: a link left mid-transaction is
                // closed (the server rolls back), never handed to another client.
                return Step::End;
            }
            RelayEnd::ClientProtocol(e) => {
                let e = ClientError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string());
                send_error(cw, &e, Severity::Fatal).await;
                return Step::End;
            }
            RelayEnd::ContextFailed => {
                tracing::error!(tenant = %tenant.key, "could not set the tenant context or session settings on a server connection");
                // Replies to its earlier requests first: a pipelining client
                // waits for their ReadyForQuery.
                let e = ClientError::new(
                    sqlstate::CONNECTION_FAILURE,
                    "pgtenant could not set the tenant context or this session's settings on a server connection; the connection was closed",
                );
                last_word(cw, &mut client.down, &e).await;
                return Step::End;
            }
            RelayEnd::Shutdown => {
                last_word(cw, &mut client.down, &shutting_down()).await;
                return give_back(Some(lease), reset_timeout);
            }
            RelayEnd::ListenFailed => {
                last_word(cw, &mut client.down, &listen_lost()).await;
                return Step::End;
            }
            RelayEnd::ServerSilent => {
                let waited = proxy.config.proxy.query_timeout;
                tracing::warn!(tenant = %tenant.key, pid = lease.conn().state.pid, ?waited, "server sent nothing for query_timeout while an answer was due; closing its connection and the client's");
                cancel_then_close(lease, pool);
                // A connection failure, not a cancelled statement: whether
                // the request ran (a COMMIT may have) is unknown, as when a
                // connection breaks.
                let e = ClientError::new(
                    sqlstate::CONNECTION_FAILURE,
                    format!("the server sent nothing for {waited:?} while an answer was due (query_timeout); pgtenant closed the server connection and this one"),
                )
                .hint("an open transaction was rolled back; a request answered by nothing (a COMMIT) may or may not have run. Raise query_timeout if queries may run silent this long");
                last_word(cw, &mut client.down, &e).await;
                return Step::End;
            }
            RelayEnd::ServerClosed | RelayEnd::ServerIo(_) | RelayEnd::ServerProtocol(_) => {
                match pool.warnings.pass() {
                    Some(held_back) => {
                        tracing::warn!(tenant = %tenant.key, end = ?end, held_back, "server link lost")
                    }
                    None => tracing::debug!(tenant = %tenant.key, end = ?end, "server link lost"),
                }
                let e = ClientError::new(
                    sqlstate::CONNECTION_FAILURE,
                    "server connection lost; pgtenant closed the client",
                );
                last_word(cw, &mut client.down, &e).await;
                return Step::End;
            }
        }
        Step::Next
    }
}

/// Ends a client whose server link failed mid-request: what it was sent
/// goes out, then `e` as a FATAL. Unless the client is mid-message (a result
/// streamed in part): anything more would be read as the rest of that
/// message, so it is closed without a word (libpq: "server closed the
/// connection unexpectedly").
async fn last_word(cw: &mut WriteHalf<'_>, down: &mut Downstream, e: &ClientError) {
    let _ = flush(cw, down).await;
    if down.scanner.at_boundary() {
        send_error(cw, e, Severity::Fatal).await;
    } else {
        tracing::info!(error = %e.message, "client closed mid-message, without an error message");
    }
}

/// Adds what the client did since the last flush to its tenant's counters:
/// once per transaction (after each relay) and when the session ends.
fn flush_stats(
    client: &mut Client,
    pool: &crate::pool::TenantPool,
    total: &mut crate::pool::SessionStats,
) {
    let stats = crate::pool::SessionStats {
        transactions: std::mem::take(&mut client.t.transactions),
        queries: std::mem::take(&mut client.t.queries),
        bytes_received: std::mem::take(&mut client.up.received),
        bytes_sent: std::mem::take(&mut client.down.sent),
        isolation_refusals: std::mem::take(&mut client.state.refusals),
        reprepares: std::mem::take(&mut client.state.reprepares),
        evictions: std::mem::take(&mut client.state.evictions),
    };
    if !stats.is_empty() {
        pool.counters.add(&stats);
        total.transactions += stats.transactions;
        total.queries += stats.queries;
        total.bytes_received += stats.bytes_received;
        total.bytes_sent += stats.bytes_sent;
    }
}

/// A link kept by a pinned client that leaves between transactions: wiped
/// (`DISCARD ALL` releases its locks, closes its cursors, drops its temporary
/// tables) before anyone else gets it; closed if that fails.
fn give_back(held: Option<Lease>, timeout: std::time::Duration) -> Step {
    if let Some(lease) = held {
        tokio::spawn(lease.reset_and_release(timeout));
    }
    Step::End
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn of two owned arguments returns.
    fn future_size<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A resident client costs its task's future for as long as it stays:
    /// the login, its session and each request's transaction path are
    /// boxed so that it stays small (792 bytes in a test build; it was
    /// 7 KB, then 2 KB). An idle client parks and holds none.
    #[test]
    fn a_client_task_future_stays_small() {
        let size = future_size(super::serve_client);
        println!("serve_client future: {size} bytes");
        assert!(size <= 1024, "serve_client's future grew to {size} bytes");
    }

    /// A refused request whose Query arrives in pieces (a trimmed client's
    /// first read takes 64 bytes) still gets its error and ReadyForQuery;
    /// it used to wait forever for more once the first piece was scanned.
    #[tokio::test]
    async fn a_refused_request_read_in_pieces_is_answered() {
        use super::*;
        let sql = format!(
            "BEGIN; INSERT INTO t.ledger VALUES ({}); COMMIT",
            "1".repeat(60)
        );
        let mut query = BytesMut::new();
        messages::query(&mut query, &sql);
        let (mut client, server) = tokio::io::duplex(4096);
        let (mut r, mut w) = tokio::io::split(server);
        let mut up = Upstream::default();
        up.buf.extend_from_slice(&query[..64]);
        client
            .write_all(&query[64..])
            .await
            .expect("rest of the query");
        let e = ClientError::new(sqlstate::CONNECTION_FAILURE, "no server");
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            refuse_request(&mut r, &mut w, &mut up, &e),
        )
        .await
        .expect("answered, not waiting for more")
        .expect("written");
        let mut tags = Vec::new();
        for _ in 0..2 {
            let mut head = [0u8; 5];
            client.read_exact(&mut head).await.expect("header");
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; len - 4];
            client.read_exact(&mut body).await.expect("body");
            tags.push(head[0]);
        }
        assert_eq!(tags, vec![b'E', b'Z']);
        assert!(up.buf.is_empty() && up.scanner.at_boundary());
    }
}
