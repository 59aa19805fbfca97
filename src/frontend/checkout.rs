//! Borrowing a server link for a client, with the tenant switch of shared
//! links done first.

use crate::app::Proxy;
use crate::error::ClientError;
use crate::pool::{Lease, TenantPool};
use crate::protocol::sqlstate;
use crate::tenant::TenantContext;
use std::sync::Arc;

/// Borrows a link for the client's next transaction. A shared link last used
/// by another tenant is wiped first (statements, settings, cursors, LISTEN,
/// locks, its signed context), and the wipe must succeed before any of this
/// client's bytes reach the server: nothing of the client's may run in another
/// tenant's context, even if pgtenant's own statements were cancelled.
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
    let Some(ctx) = context else {
        return Ok(lease);
    };
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
            tracing::warn!(tenant = %ctx.owner, result = ?wiped, "could not reset a shared server connection; closed it");
            return Err(ClientError::new(
                sqlstate::CONNECTION_FAILURE,
                "pgtenant could not reset a shared server connection; try again",
            ));
        }
    }
    Ok(lease)
}
