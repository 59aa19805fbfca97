//! Login: first packet (SSL/GSS refusal, cancel, startup), tenant resolution,
//! client authentication, then the greeting (AuthenticationOk, ParameterStatus,
//! BackendKeyData, ReadyForQuery). No server is contacted before the tenant is
//! known to be allowed and the client has authenticated.

use super::cancel::CancelKey;
use super::rewrite::{literal, TRACKED_PARAMS};
use crate::app::Proxy;
use crate::auth::authenticate_client;
use crate::backend::{ExecError, Settings};
use crate::error::ClientError;
use crate::pool::{Slot, TenantPool};
use crate::protocol::messages::{self, Severity};
use crate::protocol::startup::{check_length, parse_first_packet, FirstPacket, StartupParams};
use crate::tenant::{resolve, Tenant};
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A client that logged in.
pub struct Login {
    pub tenant: Arc<Tenant>,
    pub user: String,
    pub pool: Arc<TenantPool>,
    /// Held for the session: counts against the tenant's `max_client_conn`.
    pub _client_slot: Slot,
    /// The client's values of the tracked settings (see `rewrite::TRACKED_PARAMS`).
    pub params: Settings,
}

/// How a handshake ended without a session.
pub enum Refusal {
    /// A cancel request was handled; close quietly.
    Cancel,
    /// Tell the client (FATAL) and close.
    Error(ClientError),
    /// Nothing useful to say (client went away).
    Closed,
}

impl From<ClientError> for Refusal {
    fn from(e: ClientError) -> Self {
        Refusal::Error(e)
    }
}

pub async fn send_fatal<S: AsyncWrite + Unpin>(stream: &mut S, e: &ClientError) {
    let mut out = BytesMut::new();
    messages::error_response(
        &mut out,
        Severity::Fatal,
        e.code,
        &e.message,
        e.hint.as_deref(),
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

async fn read_first_packet<S: AsyncRead + Unpin>(stream: &mut S) -> Result<FirstPacket, Refusal> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|_| Refusal::Closed)?;
    let body_len = check_length(u32::from_be_bytes(len)).map_err(|e| ClientError::from(&e))?;
    let mut body = vec![0u8; body_len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|_| Refusal::Closed)?;
    Ok(parse_first_packet(&body).map_err(|e| ClientError::from(&e))?)
}

/// Reads the startup packet, answering SSLRequest/GSSENCRequest with 'N' (TLS
/// arrives in a later version) and serving CancelRequest.
async fn startup<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
) -> Result<StartupParams, Refusal> {
    // At most one SSLRequest and one GSSENCRequest may precede the startup packet.
    for _ in 0..3 {
        match read_first_packet(stream).await? {
            FirstPacket::SslRequest | FirstPacket::GssEncRequest => {
                stream.write_all(b"N").await.map_err(|_| Refusal::Closed)?;
            }
            FirstPacket::Cancel { pid, secret } => {
                proxy.cancels.cancel(pid, secret).await;
                return Err(Refusal::Cancel);
            }
            FirstPacket::Startup(p) => return Ok(p),
        }
    }
    Err(ClientError::new(
        crate::protocol::sqlstate::PROTOCOL_VIOLATION,
        "too many encryption requests before the startup packet",
    )
    .into())
}

/// Runs the whole login. On success the client has been greeted and is ready
/// to send queries.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    key: &CancelKey<'_>,
) -> Result<Login, Refusal> {
    let params = startup(stream, proxy).await?;
    let resolution = resolve(
        &params,
        &proxy.config.proxy.username_separator,
        &proxy.tenants,
    )
    .map_err(|e| {
        tracing::info!(error = %e, "refused connection");
        ClientError::from(&e)
    })?;
    let mut out = BytesMut::new();
    let unsupported = params.protocol_options();
    if params.minor_version > 0 || !unsupported.is_empty() {
        messages::negotiate_protocol_version(&mut out, &unsupported);
    }
    if !out.is_empty() {
        stream.write_all(&out).await.map_err(|_| Refusal::Closed)?;
        out.clear();
    }
    let wire_user = params.get("user").unwrap_or_default();
    authenticate_client(
        stream,
        proxy.config.auth.method,
        &proxy.users,
        &resolution.user,
        wire_user,
    )
    .await
    .map_err(|e| {
        tracing::info!(error = %e, user = %resolution.user, "authentication failed");
        ClientError::from(&e)
    })?;
    let tenant = resolution.tenant;
    let pool = proxy
        .pools
        .pool_for(&tenant)
        .map_err(|e| ClientError::from(&e))?;
    let client_slot = pool.client_slots.try_acquire().map_err(|_| {
        ClientError::new(
            crate::protocol::sqlstate::TOO_MANY_CONNECTIONS,
            format!(
                "too many client connections for tenant \"{}\" (max_client_conn {})",
                tenant.key, tenant.max_client_conn
            ),
        )
    })?;
    let server_params = proxy.pools.server_params(&pool).await.map_err(|e| {
        tracing::warn!(tenant = %tenant.key, error = %e, "no server parameters at login");
        ClientError::from(&e)
    })?;
    let desired = client_settings(proxy, &pool, &server_params, &params).await?;
    messages::auth_ok(&mut out);
    for (k, v) in server_params.iter() {
        let value = desired.get(&k.to_ascii_lowercase()).unwrap_or(v);
        messages::parameter_status(&mut out, k, value);
    }
    messages::backend_key_data(&mut out, key.pid, key.secret);
    messages::ready_for_query(&mut out, b'I');
    stream.write_all(&out).await.map_err(|_| Refusal::Closed)?;
    tracing::debug!(tenant = %tenant.key, user = %resolution.user, by = ?resolution.by, "client logged in");
    Ok(Login {
        tenant,
        user: resolution.user,
        pool,
        _client_slot: client_slot,
        params: desired.into_iter().collect(),
    })
}

/// The client's tracked settings: the server's, overridden by what the client
/// asked for in its startup packet. Requested values are checked and put in the
/// server's canonical spelling (`utf8` -> `UTF8`) by setting them once on a link;
/// results are cached per pool, so this costs a round trip only the first time.
/// An invalid value refuses the login, as PostgreSQL would.
async fn client_settings(
    proxy: &Proxy,
    pool: &Arc<TenantPool>,
    server_params: &[(String, String)],
    startup: &StartupParams,
) -> Result<HashMap<String, String>, Refusal> {
    let mut desired: HashMap<String, String> = server_params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| TRACKED_PARAMS.contains(&k.as_str()))
        .collect();
    let mut unknown = Vec::new();
    for (k, v) in &startup.params {
        let key = k.to_ascii_lowercase();
        if !TRACKED_PARAMS.contains(&key.as_str()) || desired.get(&key) == Some(v) {
            continue;
        }
        match pool.canonical(&key, v) {
            Some(c) => {
                desired.insert(key, c);
            }
            None => unknown.push((key, v.clone())),
        }
    }
    if unknown.is_empty() {
        return Ok(desired);
    }
    let sql: String = unknown
        .iter()
        .map(|(k, v)| format!("SET {k} = {};", literal(v)))
        .collect();
    let mut lease = proxy
        .pools
        .checkout(pool)
        .await
        .map_err(|e| ClientError::from(&e))?;
    let result = lease.conn().execute(&sql).await;
    match result {
        Ok(reported) => {
            lease.release();
            for (key, raw) in unknown {
                let canonical = reported
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                    .map_or_else(|| raw.clone(), |(_, v)| v.clone());
                pool.remember_canonical(&key, &raw, &canonical);
                desired.insert(key, canonical);
            }
            Ok(desired)
        }
        Err(ExecError::Server { code, message }) => {
            // The link is idle again but carries the failed request's state: drop it.
            drop(lease);
            let code = if code == "22023" {
                crate::protocol::sqlstate::INVALID_PARAMETER_VALUE
            } else {
                crate::protocol::sqlstate::PROTOCOL_VIOLATION
            };
            Err(ClientError::new(code, message).into())
        }
        Err(ExecError::Io(e)) => {
            tracing::warn!(error = %e, "checking startup settings failed");
            Err(ClientError::new(
                crate::protocol::sqlstate::CONNECTION_FAILURE,
                "server connection lost during login",
            )
            .into())
        }
    }
}
