//! Login: first packet (SSL/GSS refusal, cancel, startup), tenant resolution,
//! client authentication, then the greeting (AuthenticationOk, ParameterStatus,
//! BackendKeyData, ReadyForQuery). No server is contacted before the tenant is
//! known to be allowed and the client has authenticated.

use super::cancel::CancelKey;
use super::policy::{reported, set_config_replay};
use crate::app::Proxy;
use crate::auth::authenticate_client;
use crate::backend::{ExecError, Overrides, Settings};
use crate::error::ClientError;
use crate::pool::{Lease, LoginTemplate, Slot, TenantPool};
use crate::protocol::messages::{self, Severity};
use crate::protocol::startup::{check_length, parse_first_packet, FirstPacket, StartupParams};
use crate::sql::literal;
use crate::sql::parsed::{protected, Guard};
use crate::tenant::{resolve, Tenant};
use crate::tls::Secured;
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
    /// The client's values of the reported settings (`policy::REPORTED_PARAMS`).
    pub params: Arc<Settings>,
    /// Every other setting from its startup packet, as replay statements.
    pub settings: Overrides,
    /// Session mode: the client's link, taken at login so its BackendKeyData
    /// carries the real backend pid.
    pub lease: Option<Lease>,
}

/// How a login ended.
pub enum LoggedIn {
    /// A tenant's client.
    Tenant(Box<Login>),
    /// An admin on the console (database `pgtenant` or `pgbouncer`).
    Console { user: String },
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

pub(super) async fn read_first_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<FirstPacket, Refusal> {
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

/// Reads the first packet of a plain TCP connection: a peek sees what has
/// arrived, and when that is the whole packet (nearly always: a client sends
/// it in one write), one read takes it. Two syscalls where
/// [`read_first_packet`] makes three (length, then body, after the peek
/// that looks for direct TLS). A packet still arriving is read as usual.
/// `peeked`: what the caller's own peek saw, if it made one just before.
pub(super) async fn read_first_packet_peeked(
    tcp: &mut tokio::net::TcpStream,
    peeked: Option<&[u8]>,
) -> Result<FirstPacket, Refusal> {
    let mut own = [0u8; PEEK_LEN];
    let seen = match peeked {
        Some(p) => p,
        None => {
            let n = tcp.peek(&mut own).await.map_err(|_| Refusal::Closed)?;
            &own[..n]
        }
    };
    if seen.len() >= 4 {
        let len = u32::from_be_bytes([seen[0], seen[1], seen[2], seen[3]]);
        let body_len = check_length(len).map_err(|e| ClientError::from(&e))?;
        if 4 + body_len <= seen.len() {
            let mut packet = vec![0u8; 4 + body_len];
            tcp.read_exact(&mut packet)
                .await
                .map_err(|_| Refusal::Closed)?;
            return Ok(parse_first_packet(&packet[4..]).map_err(|e| ClientError::from(&e))?);
        }
    }
    read_first_packet(tcp).await
}

/// How much of a first packet a peek looks at: startup packets are 60-200
/// bytes in practice (libpq, pgjdbc, npgsql); a longer one is read in two.
pub(super) const PEEK_LEN: usize = 256;

/// Where a login's password comes from, first found: `[auth] users`, the
/// tenant's own users in the catalog, then `auth_query` on the tenant's
/// server. None: unknown (it still gets the full exchange).
async fn credential(
    proxy: &Proxy,
    r: &crate::tenant::Resolution,
) -> Result<Option<crate::auth::Credential>, ClientError> {
    if let Some(c) = proxy.users.get(&r.user) {
        return Ok(Some(c.clone()));
    }
    if let Some(c) = proxy.tenant_users.get(&r.tenant.key, &r.user) {
        return Ok(Some(c));
    }
    let Some(q) = &proxy.auth_query else {
        return Ok(None);
    };
    // In the server's own database (or auth_database), never the tenant's:
    // a database tenant owns its database and could plant a lookup there.
    let t = &r.tenant.target;
    let server = crate::auth::LookupServer {
        host: t.host.to_string(),
        port: t.port,
        database: proxy
            .config
            .servers
            .get(&*t.server)
            .map_or_else(|| t.database.clone(), |s| s.database.clone()),
        tls: (*t.tls).clone(),
    };
    q.lookup(&server, &r.user).await.map_err(|e| {
        tracing::warn!(error = %e, server = %t.server, "auth_query failed");
        ClientError::new(
            crate::protocol::sqlstate::CONNECTION_FAILURE,
            "pgtenant could not look up the user on the tenant's server",
        )
        .hint("see pgtenant's log ([auth] auth_query)")
    })
}

/// Channel-binding data SCRAM-SHA-256-PLUS may use: only over TLS.
fn binding(secured: &Secured) -> Option<&[u8]> {
    secured.end_point.as_deref().filter(|_| secured.tls)
}

/// What a connection opens with, once encryption requests are answered.
pub(super) enum Opening {
    Startup(StartupParams),
    Cancel { pid: i32, secret: i32 },
}

/// Reads the first packets of a connection that offers no TLS (the owner
/// routes): SSLRequest/GSSENCRequest answered with 'N' (at most one of each
/// may precede), then a startup packet or a CancelRequest. Clients of the
/// proxy go through `secure::open` instead.
pub(super) async fn opening<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<Opening, Refusal> {
    for _ in 0..3 {
        match read_first_packet(stream).await? {
            FirstPacket::SslRequest | FirstPacket::GssEncRequest => {
                stream.write_all(b"N").await.map_err(|_| Refusal::Closed)?;
            }
            FirstPacket::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            FirstPacket::Startup(p) => return Ok(Opening::Startup(p)),
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
    key: &mut CancelKey,
    params: StartupParams,
    secured: &Secured,
) -> Result<LoggedIn, Refusal> {
    if params
        .get("database")
        .is_some_and(|d| crate::admin::CONSOLE_DATABASES.contains(&d))
    {
        return console_login(stream, proxy, key, &params, secured).await;
    }
    tenant_login(stream, proxy, key, params, secured)
        .await
        .map(|l| LoggedIn::Tenant(Box::new(l)))
}

/// The admin console's login: only `auth.admin_users`, always with a
/// password (SCRAM-SHA-256, or md5 when that is the configured method: never
/// trust), then a greeting of the console's own parameters.
async fn console_login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    key: &CancelKey,
    params: &StartupParams,
    secured: &Secured,
) -> Result<LoggedIn, Refusal> {
    let user = params.get("user").unwrap_or_default().to_owned();
    if !proxy.config.auth.admin_users.contains(&user) {
        tracing::info!(%user, "refused console login: not an admin user");
        return Err(ClientError::new(
            crate::protocol::sqlstate::INVALID_AUTHORIZATION,
            format!("user \"{user}\" may not use the admin console"),
        )
        .hint("list the user in [auth] admin_users")
        .into());
    }
    let method = match proxy.config.auth.method {
        crate::config::AuthMethod::Md5 => crate::config::AuthMethod::Md5,
        _ => crate::config::AuthMethod::ScramSha256,
    };
    let mut out = authenticate_client(
        stream,
        method,
        proxy.users.get(&user),
        &user,
        &user,
        binding(secured),
    )
    .await
    .map_err(|e| {
        tracing::info!(error = %e, %user, "console authentication failed");
        ClientError::from(&e)
    })?;
    messages::auth_ok(&mut out);
    for (k, v) in crate::admin::greeting(proxy, params) {
        messages::parameter_status(&mut out, &k, &v);
    }
    messages::backend_key_data(&mut out, key.pid, key.secret);
    messages::ready_for_query(&mut out, b'I');
    stream.write_all(&out).await.map_err(|_| Refusal::Closed)?;
    stream.flush().await.map_err(|_| Refusal::Closed)?;
    tracing::info!(%user, "admin console login");
    Ok(LoggedIn::Console { user })
}

async fn tenant_login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    proxy: &Proxy,
    key: &mut CancelKey,
    params: StartupParams,
    secured: &Secured,
) -> Result<Login, Refusal> {
    let resolution = resolve(
        &params,
        &proxy.config.proxy.username_separator,
        secured.sni_tenant.as_deref(),
        &proxy.tenants,
    )
    .map_err(|e| {
        tracing::info!(error = %e, "refused connection");
        ClientError::from(&e)
    })?;
    let mut out = BytesMut::with_capacity(1024);
    let unsupported = params.protocol_options();
    if params.minor_version > 0 || !unsupported.is_empty() {
        messages::negotiate_protocol_version(&mut out, &unsupported);
    }
    if !out.is_empty() {
        stream.write_all(&out).await.map_err(|_| Refusal::Closed)?;
        stream.flush().await.map_err(|_| Refusal::Closed)?;
        out.clear();
    }
    let wire_user = params.get("user").unwrap_or_default();
    let method = crate::auth::choose(
        &proxy.auth_rules,
        proxy.config.auth.method,
        &crate::auth::LoginFacts {
            addr: secured
                .peer
                .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.ip()),
            local: secured.local,
            tls: secured.tls,
            user: &resolution.user,
            tenant: &resolution.tenant.key,
        },
    )
    .map_err(|reason| {
        tracing::info!(%reason, "refused connection");
        ClientError::new(crate::protocol::sqlstate::INVALID_AUTHORIZATION, reason)
    })?;
    let cred = credential(proxy, &resolution).await?;
    let ahead = authenticate_client(
        stream,
        method,
        cred.as_ref(),
        &resolution.user,
        wire_user,
        binding(secured),
    )
    .await
    .map_err(|e| {
        tracing::info!(error = %e, user = %resolution.user, tenant = %resolution.tenant.key, "authentication failed");
        proxy
            .pools
            .counters_of(&resolution.tenant.key)
            .error(crate::pool::ErrorKind::Auth, 1);
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
    let context = tenant.context.is_some();
    let template = match pool.startups.login(&server_params, context, &params.params) {
        Some(t) => t,
        None => {
            let t = work_out_login(proxy, &pool, &server_params, &params, context).await?;
            pool.startups
                .remember_login(server_params.clone(), context, &params.params, t.clone());
            t
        }
    };
    // Session mode: the client's own backend from the start, as directly.
    let lease = if tenant.pool_mode == crate::config::PoolMode::Session {
        let mut lease = super::checkout::checkout(proxy, &pool, tenant.context.as_deref()).await?;
        let pid = lease.conn().state.pid;
        if !key.rebind(pid) {
            tracing::debug!(
                pid,
                "keeping pgtenant's own cancel key (the backend pid is another client's key, or peering is on)"
            );
        }
        Some(lease)
    } else {
        None
    };
    out.extend_from_slice(&ahead);
    messages::auth_ok(&mut out);
    out.extend_from_slice(&template.status);
    messages::backend_key_data(&mut out, key.pid, key.secret);
    messages::ready_for_query(&mut out, b'I');
    stream.write_all(&out).await.map_err(|_| Refusal::Closed)?;
    stream.flush().await.map_err(|_| Refusal::Closed)?;
    tracing::debug!(tenant = %tenant.key, user = %resolution.user, by = ?resolution.by, "client logged in");
    Ok(Login {
        tenant,
        user: resolution.user,
        pool,
        _client_slot: client_slot,
        params: template.params,
        settings: template.settings,
        lease,
    })
}

/// What a login with this startup packet comes to: its settings (shared
/// with earlier clients' equal ones) and the ParameterStatus messages it is
/// sent. Worked out once per distinct packet (see `LoginTemplate`).
async fn work_out_login(
    proxy: &Proxy,
    pool: &Arc<TenantPool>,
    server_params: &[(String, String)],
    startup: &StartupParams,
    context: bool,
) -> Result<LoginTemplate, Refusal> {
    let guard = Guard::of(context);
    let (desired, settings) = client_settings(proxy, pool, server_params, startup, guard).await?;
    let mut status = BytesMut::with_capacity(512);
    for (k, v) in server_params.iter() {
        let value = desired.get(&k.to_ascii_lowercase()).unwrap_or(v);
        messages::parameter_status(&mut status, k, value);
    }
    let (params, settings) = pool.startups.share(desired.into_iter().collect(), settings);
    Ok(LoginTemplate {
        params,
        settings,
        status: status.freeze(),
    })
}

/// Startup parameters that are not settings.
fn not_a_setting(key: &str) -> bool {
    matches!(
        key,
        "user" | "database" | "options" | "replication" | "tenant"
    ) || key.starts_with("_pq_.")
}

/// The client's settings: the reported ones (the server's, overridden by
/// its startup packet) by value, and every other setting of its startup
/// packet or `options` (`-c name=value`) as a replay statement, as PostgreSQL
/// would apply them at login. Settings of the tenant context are ignored.
/// New values are checked once on a link and put in the server's canonical
/// spelling (`utf8` -> `UTF8`, whether or not the link already used it);
/// results are cached per pool, so this costs a round trip only the first
/// time. An invalid value refuses the login, as PostgreSQL would.
async fn client_settings(
    proxy: &Proxy,
    pool: &Arc<TenantPool>,
    server_params: &[(String, String)],
    startup: &StartupParams,
    guard: Guard,
) -> Result<(HashMap<String, String>, Overrides), Refusal> {
    let mut desired: HashMap<String, String> = server_params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| reported(k))
        .collect();
    let from_options = startup
        .get("options")
        .map(crate::protocol::startup::option_settings)
        .unwrap_or_default();
    let mut settings = Overrides::default();
    let mut unknown = Vec::new();
    for (k, v) in startup.params.iter().chain(from_options.iter()) {
        let key = k.to_ascii_lowercase();
        if not_a_setting(&key) || protected(&key, guard) {
            continue;
        }
        // pgtenant reads SQL with standard conforming strings (see policy).
        if key == "standard_conforming_strings"
            && !matches!(v.to_lowercase().as_str(), "on" | "true" | "1")
        {
            continue;
        }
        if reported(&key) && desired.get(&key) == Some(v) {
            continue;
        }
        match pool.canonical(&key, v) {
            Some(c) if reported(&key) => {
                desired.insert(key, c);
            }
            Some(c) => settings.set(&key, set_config_replay(&key, &c)),
            None => unknown.push((key, v.clone())),
        }
    }
    if unknown.is_empty() {
        return Ok((desired, settings));
    }
    let calls: Vec<String> = unknown
        .iter()
        .map(|(k, v)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                literal(k),
                literal(v)
            )
        })
        .collect();
    let sql = format!("SELECT {}", calls.join(", "));
    let mut lease = proxy
        .pools
        .checkout(pool)
        .await
        .map_err(|e| ClientError::from(&e))?;
    let result = lease.conn().query_rows(&sql).await;
    match result {
        Ok(rows) => {
            let values = rows.into_iter().next().unwrap_or_default();
            for (i, (key, raw)) in unknown.into_iter().enumerate() {
                let canonical = values
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| raw.clone());
                pool.remember_canonical(&key, &raw, &canonical);
                if reported(&key) {
                    desired.insert(key, canonical);
                } else {
                    let replay = set_config_replay(&key, &canonical);
                    // The link now carries it: say so, or it would reach the next client.
                    lease.conn().state.settings.set(&key, replay.clone());
                    settings.set(&key, replay);
                }
            }
            lease.release();
            Ok((desired, settings))
        }
        Err(ExecError::Server { code, message }) => {
            // The link is idle again but carries the failed request's state: drop it.
            drop(lease);
            let code = match code.as_str() {
                "22023" => crate::protocol::sqlstate::INVALID_PARAMETER_VALUE,
                "42704" => crate::protocol::sqlstate::UNDEFINED_OBJECT,
                _ => crate::protocol::sqlstate::PROTOCOL_VIOLATION,
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
