//! Borrowing a server link for a client, with the tenant switch of shared
//! links done first.

use crate::app::Proxy;
use crate::error::ClientError;
use crate::notify::owners::tick;
use crate::notify::MARKER_CHANNEL;
use crate::pool::{Lease, TenantPool};
use crate::protocol::sqlstate;
use crate::protocol::{extended, messages};
use crate::tenant::TenantContext;
use bytes::BytesMut;
use std::sync::Arc;

/// A shared link's owner marker (see `notify::owners`); its commit need not
/// wait for the WAL flush (a marker lost in a crash marks nothing).
const MARKER_SQL: &str =
    "SELECT pg_catalog.set_config('synchronous_commit', 'off', true), pg_catalog.pg_notify($1, $2)";

/// Borrows a link for the client's next transaction. A shared link last used
/// by another tenant is wiped (statements, settings, cursors, LISTEN, locks,
/// its signed context) before any of this client's SQL runs there: awaited
/// here while a hub listens (with the owner marker, which must commit first),
/// else pipelined ahead of the client's first message by the relay's prelude,
/// with the tenant context after it. Either way nothing of the client's may
/// run in another tenant's context: a failed wipe or context ends the client
/// before any reply reaches it, and the client's cancels reach the server only
/// once both were answered. A link starting to serve a tenant also records
/// whose notifications it sends.
pub async fn checkout(
    proxy: &Proxy,
    pool: &Arc<TenantPool>,
    context: Option<&TenantContext>,
) -> Result<Lease, ClientError> {
    let mut lease = proxy
        .pools
        .checkout(pool)
        .await
        .map_err(|e| ClientError::from(&e))?;
    let owners = proxy.notify.owners();
    let conn = lease.conn();
    let server = || (pool.target().host.clone(), pool.target().port);
    let Some(ctx) = context else {
        // Role isolation: the link serves this tenant for life.
        if conn.state.owner.is_none() {
            let owner = Arc::from(pool.key.as_str());
            conn.state.owner = Some(owners.register_fixed(server(), conn.state.pid, owner));
        }
        return Ok(lease);
    };
    if conn.state.context_owner.as_ref() == Some(&ctx.owner) {
        return Ok(lease);
    }
    let previous = conn.state.context_owner.is_some();
    let pid = conn.state.pid;
    if !proxy.notify.any_live() {
        // No hub listens: no owner marker is needed (see notify::owners,
        // "Unmarked switches"), so nothing is awaited here. The wipe goes
        // ahead of the client's first message, then the context; a failure
        // of either ends the client before any reply reaches it.
        let at = tick();
        match &conn.state.owner {
            Some(reg) => owners.switch_unmarked(reg, ctx.owner.clone(), at),
            None => {
                conn.state.owner =
                    Some(owners.register_unmarked(server(), pid, ctx.owner.clone(), at))
            }
        }
        // Read again after the tick: a hub that started meanwhile may have
        // taken its `lo` before it, and needs the marker after all.
        if !proxy.notify.any_live() {
            // Pipelined, not awaited (a third more throughput when many
            // tenants share few links); the client's cancel target waits
            // for it (see `ClientState::cancel_after_prelude`).
            conn.state.wipe |= previous;
            conn.state.context_owner = Some(ctx.owner.clone());
            return Ok(lease);
        }
    }
    // Boxed: a rare path (a hub listens) with a large future.
    Box::pin(switch_marked(proxy, pool, lease.conn(), ctx, previous)).await?;
    Ok(lease)
}

/// The link changes tenant while a hub listens: the wipe and its owner
/// marker (see notify::owners) are awaited, and the marker commits before
/// any of the new tenant's SQL runs there.
async fn switch_marked(
    proxy: &Proxy,
    pool: &Arc<TenantPool>,
    conn: &mut crate::backend::ServerConn,
    ctx: &TenantContext,
    previous: bool,
) -> Result<(), ClientError> {
    let owners = proxy.notify.owners();
    let pid = conn.state.pid;
    let server = || (pool.target().host.clone(), pool.target().port);
    let sent = tick();
    match &conn.state.owner {
        Some(reg) => owners.switch(reg, ctx.owner.clone(), sent),
        None => {
            conn.state.owner = Some(owners.register_switch(server(), pid, ctx.owner.clone(), sent))
        }
    }
    let marker = proxy.notify.marker_key().marker(pid, sent, &ctx.owner);
    // Pipelined: the wipe, then the marker as bound parameters (never in
    // query text, where pg_stat_activity would show it to the tier's role).
    let mut out = BytesMut::new();
    if previous {
        messages::query(&mut out, "DISCARD ALL");
    }
    extended::parse_query(&mut out, b"", MARKER_SQL);
    extended::bind_text(&mut out, &[MARKER_CHANNEL.as_bytes(), marker.as_bytes()]);
    extended::execute(&mut out);
    extended::sync(&mut out);
    let requests = if previous { 2 } else { 1 };
    let limit = proxy.pools.settings().server_connect_timeout;
    let switched = tokio::time::timeout(limit, conn.run_pipelined(&out, requests)).await;
    if !matches!(switched, Ok(Ok(_))) {
        tracing::warn!(tenant = %ctx.owner, result = ?switched, "could not reset a shared server connection; closed it");
        return Err(ClientError::new(
            sqlstate::CONNECTION_FAILURE,
            "pgtenant could not reset a shared server connection; try again",
        ));
    }
    if previous {
        conn.state.discarded();
        conn.state.poisoned = false;
    }
    if let Some(reg) = &conn.state.owner {
        owners.confirm(reg, tick());
    }
    conn.state.context_owner = Some(ctx.owner.clone());
    Ok(())
}
