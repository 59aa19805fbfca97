//! Why a client session ends or may not go on, what its client is told,
//! and how the metrics count it.

use crate::app::Proxy;
use crate::error::ClientError;
use crate::metrics::LoginFailure;
use crate::pool::signals::Signal;
use crate::pool::ErrorKind;
use crate::protocol::sqlstate;
use std::sync::Arc;

/// The `pgtenant_logins_failed_total` reason of a refused login.
pub(super) fn login_failure(code: &str) -> LoginFailure {
    match code {
        sqlstate::INVALID_PASSWORD => LoginFailure::Auth,
        sqlstate::INVALID_AUTHORIZATION
        | sqlstate::INVALID_CATALOG_NAME
        | sqlstate::CONNECTION_REJECTED
        | sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE => LoginFailure::RefusedTenant,
        sqlstate::TOO_MANY_CONNECTIONS => LoginFailure::TooManyClients,
        _ => LoginFailure::Protocol,
    }
}

/// The `pgtenant_errors_total` kind of a failed checkout.
pub(super) fn checkout_error_kind(code: &str) -> ErrorKind {
    match code.get(..2) {
        Some("53") => ErrorKind::Quota,
        Some("08") => ErrorKind::Server,
        _ => ErrorKind::Timeout,
    }
}

/// Why the client must go, if it must: a KILL, or pgtenant shutting down.
pub(super) fn stopped(me: &crate::pool::roster::ClientEntry) -> Option<ClientError> {
    if me.signals.has(Signal::KILL) {
        Some(killed())
    } else if me.signals.has(Signal::SHUTDOWN) {
        Some(shutting_down())
    } else {
        None
    }
}

pub(super) fn shutting_down() -> ClientError {
    ClientError::new(sqlstate::ADMIN_SHUTDOWN, "pgtenant is shutting down")
}

/// What a client of a tenant the admin KILLed is told.
pub(super) fn killed() -> ClientError {
    ClientError::new(
        sqlstate::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command (KILL / KILL_CLIENT)",
    )
}

/// A listening client whose notifications can't reach it any more.
pub(super) fn listen_lost() -> ClientError {
    ClientError::new(
        sqlstate::CONNECTION_FAILURE,
        "pgtenant's LISTEN connection for this tenant failed (or this client left too many notifications unread); reconnect and LISTEN again",
    )
}

/// Whether the tenant may still run transactions after a catalog change.
/// The tenant as the directory has it now, when its route (server,
/// database, schema, role, isolation) differs from `current`'s.
pub(super) fn moved(
    proxy: &Proxy,
    current: &Arc<crate::tenant::Tenant>,
) -> Option<Arc<crate::tenant::Tenant>> {
    proxy.tenants.get(&current.key).filter(|now| {
        !Arc::ptr_eq(now, current)
            && (now.target != current.target || now.context.is_some() != current.context.is_some())
    })
}

pub(super) fn moved_away(key: &str) -> ClientError {
    ClientError::new(
        sqlstate::ADMIN_SHUTDOWN,
        format!("tenant \"{key}\" moved to a new home while this session held server state"),
    )
    .hint("reconnect: the new connection goes to the tenant's new home")
}

pub(super) fn still_allowed(proxy: &Proxy, key: &str) -> Result<(), ClientError> {
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
