//! What pgtenant tells a client when it refuses something: a SQLSTATE and a
//! message the user can act on. Internal details (server addresses, OS errors)
//! are logged, not shown.

use crate::auth::AuthError;
use crate::pool::PoolError;
use crate::protocol::sqlstate as s;
use crate::protocol::startup::StartupError;
use crate::tenant::ResolveError;

/// An error as shown to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl ClientError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<&ResolveError> for ClientError {
    fn from(e: &ResolveError) -> Self {
        let msg = e.to_string();
        match e {
            ResolveError::NoUser => ClientError::new(s::INVALID_AUTHORIZATION, msg),
            ResolveError::Missing { .. } => ClientError::new(s::INVALID_AUTHORIZATION, msg)
                .hint("connect as user \"<user>.<tenant>\", or pass options=-ctenant=<tenant>"),
            ResolveError::Unknown { .. } | ResolveError::Removed(_) => {
                ClientError::new(s::INVALID_CATALOG_NAME, msg)
            }
            ResolveError::Suspended(_) => ClientError::new(s::CONNECTION_REJECTED, msg)
                .hint("the tenant's account is suspended; contact your administrator"),
            ResolveError::Conflict { .. } => ClientError::new(s::INVALID_AUTHORIZATION, msg)
                .hint("name the tenant one way: the username suffix, options -c tenant=, the tenant parameter, or the TLS server name"),
            ResolveError::Cancelled(_) => {
                ClientError::new(s::OBJECT_NOT_IN_PREREQUISITE_STATE, msg)
            }
        }
    }
}

impl From<&AuthError> for ClientError {
    fn from(e: &AuthError) -> Self {
        match e {
            // Same answer for unknown users and wrong passwords: no user enumeration.
            AuthError::UnknownUser(u) | AuthError::BadPassword(u) => ClientError::new(
                s::INVALID_PASSWORD,
                format!("password authentication failed for user \"{u}\""),
            ),
            AuthError::Protocol(m) => ClientError::new(s::PROTOCOL_VIOLATION, m.clone()),
            AuthError::Io(_) => ClientError::new(
                s::PROTOCOL_VIOLATION,
                "connection lost during authentication",
            ),
        }
    }
}

impl From<&StartupError> for ClientError {
    fn from(e: &StartupError) -> Self {
        let code = match e {
            StartupError::UnsupportedProtocol { .. } => s::FEATURE_NOT_SUPPORTED,
            _ => s::PROTOCOL_VIOLATION,
        };
        ClientError::new(code, e.to_string())
    }
}

impl From<&PoolError> for ClientError {
    fn from(e: &PoolError) -> Self {
        match e {
            PoolError::QuotaWait { .. } | PoolError::ServerFull { .. } => {
                ClientError::new(s::TOO_MANY_CONNECTIONS, e.to_string())
                    .hint("retry later, or raise the tenant's pool_size / query_wait_timeout")
            }
            PoolError::NoServer { .. } => ClientError::new(s::INTERNAL_ERROR, e.to_string()),
            PoolError::Backend(_) => ClientError::new(
                s::CONNECTION_FAILURE,
                "pgtenant could not open a server connection for this tenant",
            )
            .hint("the database server is unreachable or refused the login; see pgtenant's log"),
        }
    }
}
