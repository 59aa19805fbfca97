//! One client's life after login: wait for a request, borrow a server link,
//! relay until the transaction (or session) ends, give the link back clean.

use super::cancel::{CancelKey, CancelTarget};
use super::handshake::{login, send_fatal, Login, Refusal};
use super::relay::{flush, relay, Downstream, RelayEnd, Upstream};
use super::rewrite::{ClientState, Ctx};
use super::tracker::TxnTracker;
use crate::app::{wait_shutdown, Proxy};
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::protocol::frame::{no_peek, Flow};
use crate::protocol::messages::{self, Severity};
use crate::protocol::sqlstate;
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Serves one client connection from its first byte to its close.
pub async fn serve_client(mut stream: TcpStream, proxy: Arc<Proxy>) {
    let key = proxy.cancels.register();
    let timeout = proxy.config.proxy.client_login_timeout;
    let login = match tokio::time::timeout(timeout, login(&mut stream, &proxy, &key)).await {
        Ok(Ok(l)) => l,
        Ok(Err(Refusal::Error(e))) => return send_fatal(&mut stream, &e).await,
        Ok(Err(Refusal::Cancel | Refusal::Closed)) => return,
        Err(_) => {
            let e = ClientError::new(
                sqlstate::PROTOCOL_VIOLATION,
                format!("login not completed within client_login_timeout ({timeout:?})"),
            );
            return send_fatal(&mut stream, &e).await;
        }
    };
    run_session(stream, &proxy, &key, login).await;
}

async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, e: &ClientError, severity: Severity) -> bool {
    let mut out = BytesMut::new();
    messages::error_response(&mut out, severity, e.code, &e.message, e.hint.as_deref());
    if severity == Severity::Error {
        messages::ready_for_query(&mut out, b'I');
    }
    w.write_all(&out).await.is_ok()
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
    loop {
        let mut ended = false;
        let mut flushed = false;
        let scan = up.scanner.scan(&up.buf, 0, no_peek, |tag, _| {
            if ended {
                return Flow::StopBefore;
            }
            match tag {
                b'Q' | b'S' | b'F' => ended = true,
                b'H' => flushed = true,
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
            told = true;
        }
        if complete {
            let mut out = BytesMut::new();
            messages::ready_for_query(&mut out, b'I');
            return w.write_all(&out).await;
        }
        if r.read_buf(&mut up.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn run_session(mut stream: TcpStream, proxy: &Proxy, key: &CancelKey<'_>, login: Login) {
    let Login {
        tenant,
        pool,
        user,
        params,
        ..
    } = &login;
    let release_when_idle = tenant.pool_mode == PoolMode::Transaction;
    let mut client = ClientState::new(params.clone(), release_when_idle, tenant.context.clone());
    let mut shutdown = proxy.shutdown_signal();
    let (mut cr, mut cw) = stream.split();
    let mut up = Upstream::new();
    let mut down = Downstream::new();
    let mut seen_generation = proxy.tenants.generation();
    loop {
        // Between transactions: no server link held.
        if up.buf.is_empty() {
            tokio::select! {
                r = cr.read_buf(&mut up.buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = wait_shutdown(&mut shutdown) => {
                    let e = ClientError::new(sqlstate::ADMIN_SHUTDOWN, "pgtenant is shutting down");
                    send_error(&mut cw, &e, Severity::Fatal).await;
                    return;
                }
            }
        }
        if up.buf[0] == b'X' {
            return;
        }
        // A catalog change may have suspended, cancelled or removed the tenant:
        // its clients learn at their next transaction (one atomic load otherwise).
        let generation = proxy.tenants.generation();
        if generation != seen_generation {
            seen_generation = generation;
            if let Err(e) = still_allowed(proxy, &tenant.key) {
                send_error(&mut cw, &e, Severity::Fatal).await;
                return;
            }
        }
        let mut lease = match proxy.pools.checkout(pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(tenant = %tenant.key, %user, error = %err, "checkout failed");
                if refuse_request(&mut cr, &mut cw, &mut up, &ClientError::from(&err))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        // A shared link last used by another tenant: wipe that tenant's session
        // state (statements, settings, cursors, LISTEN, locks, its signed
        // context) and wait for it to succeed before any of this client's bytes
        // reach the server: nothing of the client's may run in another
        // tenant's context, even if pgtenant's own statements were cancelled.
        if let Some(ctx) = &client.context {
            let conn = lease.conn();
            if conn
                .state
                .context_owner
                .as_ref()
                .is_some_and(|o| *o != ctx.owner)
            {
                let limit = proxy.pools.settings().server_connect_timeout;
                let wiped = tokio::time::timeout(limit, conn.discard_all()).await;
                if !matches!(wiped, Ok(Ok(()))) {
                    tracing::warn!(tenant = %tenant.key, result = ?wiped, "could not reset a shared server connection; closed it");
                    drop(lease);
                    let e = ClientError::new(
                        sqlstate::CONNECTION_FAILURE,
                        "pgtenant could not reset a shared server connection; try again",
                    );
                    if refuse_request(&mut cr, &mut cw, &mut up, &e).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        let conn = lease.conn();
        key.set(Some(CancelTarget {
            host: pool.target().host.clone(),
            port: pool.target().port,
            pid: conn.state.pid,
            secret: conn.secret,
        }));
        let mut t = TxnTracker::default();
        let (mut sr, mut sw) = conn.stream.split();
        let mut cx = Ctx {
            client: &mut client,
            link: &mut conn.state,
            t: &mut t,
        };
        let end = relay(
            &mut cr,
            &mut cw,
            &mut sr,
            &mut sw,
            &mut up,
            &mut down,
            &mut cx,
            release_when_idle,
        )
        .await;
        key.set(None);
        let link_clean = t.idle() && down.drained() && up.drained();
        match end {
            RelayEnd::Release => {
                lease.release();
                if flush(&mut cw, &mut down).await.is_err() {
                    return;
                }
                if *shutdown.borrow() {
                    let e = ClientError::new(sqlstate::ADMIN_SHUTDOWN, "pgtenant is shutting down");
                    send_error(&mut cw, &e, Severity::Fatal).await;
                    return;
                }
            }
            RelayEnd::Terminate | RelayEnd::ClientClosed | RelayEnd::ClientIo(_) => {
                if link_clean && !release_when_idle {
                    tokio::spawn(
                        lease.reset_and_release(proxy.pools.settings().server_connect_timeout),
                    );
                }
                // Otherwise the lease drops here: a link left mid-transaction is
                // closed (the server rolls back), never handed to another client.
                return;
            }
            RelayEnd::ClientProtocol(e) => {
                let e = ClientError::new(sqlstate::PROTOCOL_VIOLATION, e.to_string());
                send_error(&mut cw, &e, Severity::Fatal).await;
                return;
            }
            RelayEnd::ContextFailed => {
                tracing::error!(tenant = %tenant.key, "could not set the tenant context on a server connection");
                let e = ClientError::new(
                    sqlstate::CONNECTION_FAILURE,
                    "pgtenant could not set the tenant context on a server connection; the connection was closed",
                );
                send_error(&mut cw, &e, Severity::Fatal).await;
                return;
            }
            RelayEnd::ServerClosed | RelayEnd::ServerIo(_) | RelayEnd::ServerProtocol(_) => {
                tracing::warn!(tenant = %tenant.key, end = ?end, "server link lost");
                let _ = flush(&mut cw, &mut down).await;
                let e = ClientError::new(
                    sqlstate::CONNECTION_FAILURE,
                    "server connection lost; pgtenant closed the client",
                );
                send_error(&mut cw, &e, Severity::Fatal).await;
                return;
            }
        }
    }
}

/// Whether the tenant may still run transactions after a catalog change.
fn still_allowed(proxy: &Proxy, key: &str) -> Result<(), ClientError> {
    use crate::config::TenantStatus;
    use crate::tenant::ResolveError;
    let refusal = match proxy.tenants.get(key).map(|t| t.status) {
        Some(TenantStatus::Active | TenantStatus::Trial) => return Ok(()),
        Some(TenantStatus::Suspended) => ResolveError::Suspended(key.to_owned()),
        Some(TenantStatus::Cancelled) => ResolveError::Cancelled(key.to_owned()),
        None => ResolveError::Removed(key.to_owned()),
    };
    Err(ClientError::from(&refusal))
}
