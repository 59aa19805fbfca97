//! One-time owner routes for `pgtenant migrate --each` (SPEC §8): a listener
//! on 127.0.0.1 that lives only as long as one run and serves each migration
//! target's command with the DDL rights of that target's owner.
//!
//! Each target gets its own random user and password, valid while its
//! command runs: dropping the [`Grant`] revokes it and closes its sessions,
//! and dropping [`OwnerRoutes`] closes the port. The main listener never
//! serves these routes. A session here is a plain pass-through to one server
//! connection (PostgreSQL's own session semantics, no pooling, no statement
//! guard): the operator's migration tool is trusted with the owner's rights,
//! and only that tool is told the credential.

use super::handshake::{opening, send_fatal, Opening, Refusal};
use crate::auth::{authenticate_client, UserDb};
use crate::backend::{BackendError, ServerConn};
use crate::config::AuthMethod;
use crate::error::ClientError;
use crate::protocol::messages::{self, Severity};
use crate::protocol::sqlstate;
use crate::protocol::startup::{option_settings, StartupParams};
use crate::tenant::Target;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The listener of one run and the routes granted on it.
pub struct OwnerRoutes {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// A server backend's cancel key (pid, secret) and where it runs.
type Backends = HashMap<(i32, i32), (Arc<str>, u16, Arc<crate::config::ServerTlsSettings>)>;

struct Shared {
    routes: Mutex<HashMap<String, Arc<Route>>>,
    /// Server backends of live sessions, so a CancelRequest sent here (with
    /// the BackendKeyData the client was given) reaches the right server.
    backends: Mutex<Backends>,
    connect_timeout: Duration,
    login_timeout: Duration,
}

struct Route {
    users: UserDb,
    server: Target,
    /// Whether the grant is revoked, and the backends of its sessions: one
    /// lock, so a session logging in while the grant goes either is seen by
    /// [`Grant::revoke`] or sees the revocation itself.
    state: Mutex<RouteState>,
    /// Wakes the sessions' relays at revocation.
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct RouteState {
    revoked: bool,
    live: Vec<(i32, i32)>,
}

impl Route {
    /// Records a session's backend; false once revoked (the session must end
    /// without running anything).
    fn enter(&self, key: (i32, i32)) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.revoked {
            return false;
        }
        st.live.push(key);
        true
    }

    fn leave(&self, key: (i32, i32)) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.live.retain(|k| *k != key);
    }
}

/// One target's credential: valid until dropped.
pub struct Grant {
    user: String,
    password: String,
    database: String,
    addr: SocketAddr,
    route: Arc<Route>,
    shared: Arc<Shared>,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Percent-encodes a URL component (everything but RFC 3986's unreserved).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Grant {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `postgres://user:password@127.0.0.1:port/database`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user,
            self.password,
            self.host(),
            self.port(),
            url_encode(&self.database)
        )
    }
}

impl Grant {
    /// Ends the grant: no new session is let in, each live session's running
    /// statement is cancelled and its connections closed. Returns the server
    /// pids of those sessions, so the caller can wait for them to be gone
    /// before anyone else may take the target.
    pub async fn revoke(self) -> Vec<i32> {
        let live = self.close();
        for (pid, secret) in &live {
            let _ = crate::backend::send_cancel(
                &self.route.server.host,
                self.route.server.port,
                &self.route.server.tls,
                *pid,
                *secret,
            )
            .await;
        }
        live.into_iter().map(|(pid, _)| pid).collect()
    }

    fn close(&self) -> Vec<(i32, i32)> {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.user);
        let live = {
            let mut st = self.route.state.lock().unwrap_or_else(|p| p.into_inner());
            st.revoked = true;
            st.live.clone()
        };
        self.route.closed.send_replace(true);
        live
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.close();
    }
}

impl OwnerRoutes {
    /// Binds 127.0.0.1 on a free port and starts accepting. A client gets
    /// `login_timeout` to log in; server logins get `connect_timeout`.
    pub async fn start(
        connect_timeout: Duration,
        login_timeout: Duration,
    ) -> std::io::Result<OwnerRoutes> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            routes: Mutex::default(),
            backends: Mutex::default(),
            connect_timeout,
            login_timeout,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(OwnerRoutes {
            addr,
            shared,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A credential for a route to `server` (logged in as its user, with its
    /// settings as session defaults).
    pub fn grant(&self, server: Target) -> Grant {
        let user = format!("pgtenant_each_{}", random_hex(8));
        let password = random_hex(24);
        let route = Arc::new(Route {
            users: UserDb::one(&user, &password),
            state: Mutex::default(),
            closed: watch::channel(false).0,
            server,
        });
        self.shared
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.clone(), route.clone());
        Grant {
            database: route.server.database.clone(),
            user,
            password,
            addr: self.addr,
            route,
            shared: self.shared.clone(),
        }
    }
}

impl Drop for OwnerRoutes {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "owner route: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The startup packet (after refusing SSL/GSS), or None when the connection
/// was a cancel request (served) or went away.
async fn startup(stream: &mut TcpStream, shared: &Shared) -> Result<StartupParams, Refusal> {
    match opening(stream).await? {
        Opening::Startup(p) => Ok(p),
        Opening::Cancel { pid, secret } => {
            let to = shared
                .backends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(pid, secret))
                .cloned();
            if let Some((host, port, tls)) = to {
                let _ = crate::backend::send_cancel(&host, port, &tls, pid, secret).await;
            }
            Err(Refusal::Cancel)
        }
    }
}

/// The server settings of a session: what the client asked for (its startup
/// parameters and `options`), then the route's own, which win.
fn session_settings(params: &StartupParams, route: &[(String, String)]) -> Vec<(String, String)> {
    let passed = |k: &str| {
        !matches!(
            k,
            "user" | "database" | "options" | "application_name" | "tenant" | "replication"
        ) && !k.starts_with("_pq_.")
    };
    let mut out: Vec<(String, String)> = params
        .params
        .iter()
        .filter(|(k, _)| passed(k))
        .cloned()
        .collect();
    if let Some(o) = params.get("options") {
        out.extend(
            option_settings(o)
                .into_iter()
                .filter(|(k, _)| k != "tenant"),
        );
    }
    out.extend(route.iter().cloned());
    out
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let login = tokio::time::timeout(shared.login_timeout, login(&mut stream, &shared)).await;
    let (route, mut conn) = match login {
        Ok(Ok(session)) => session,
        Ok(Err(Refusal::Error(e))) => return send_fatal(&mut stream, &e).await,
        Ok(Err(Refusal::Cancel | Refusal::Closed)) => return,
        Err(_) => {
            let e = ClientError::new(
                sqlstate::PROTOCOL_VIOLATION,
                "timeout while logging in (client_login_timeout)",
            );
            return send_fatal(&mut stream, &e).await;
        }
    };
    let key = (conn.state.pid, conn.secret);
    if !route.enter(key) {
        return send_fatal(&mut stream, &revoked_error()).await;
    }
    let mut out = BytesMut::new();
    messages::auth_ok(&mut out);
    for (k, v) in conn.params.iter() {
        messages::parameter_status(&mut out, k, v);
    }
    messages::backend_key_data(&mut out, key.0, key.1);
    messages::ready_for_query(&mut out, b'I');
    shared
        .backends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            key,
            (
                route.server.host.clone(),
                route.server.port,
                route.server.tls.clone(),
            ),
        );
    if stream.write_all(&out).await.is_ok() {
        let mut closed = route.closed.subscribe();
        tokio::select! {
            biased;
            _ = async { closed.wait_for(|c| *c).await.map(|_| ()) } => {
                send_fatal(&mut stream, &revoked_error()).await;
            }
            _ = tokio::io::copy_bidirectional(&mut stream, &mut conn.stream) => {}
        }
    }
    shared
        .backends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    route.leave(key);
}

fn revoked_error() -> ClientError {
    ClientError::new(
        sqlstate::ADMIN_SHUTDOWN,
        "this target's migration command has finished: its route is closed",
    )
}

/// Startup, the client's SCRAM exchange, and the server login; on success
/// nothing has been sent after the last auth message.
async fn login(
    stream: &mut TcpStream,
    shared: &Shared,
) -> Result<(Arc<Route>, ServerConn), Refusal> {
    let params = startup(stream, shared).await?;
    let user = params.get("user").unwrap_or_default().to_owned();
    let route = shared
        .routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&user)
        .cloned();
    let Some(route) = route else {
        tracing::info!(%user, "owner route: unknown or expired credential");
        return Err(ClientError::new(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
        .hint("a route of pgtenant migrate --each is valid only while its target's command runs")
        .into());
    };
    if params.get("replication").is_some() {
        return Err(ClientError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not served on a migration route",
        )
        .into());
    }
    let database = params.get("database").unwrap_or(&user);
    if database != route.server.database {
        return Err(ClientError::new(
            sqlstate::INVALID_CATALOG_NAME,
            format!(
                "this migration route serves database \"{}\", not \"{database}\"",
                route.server.database
            ),
        )
        .into());
    }
    let mut out = BytesMut::new();
    let unsupported = params.protocol_options();
    if params.minor_version > 0 || !unsupported.is_empty() {
        messages::negotiate_protocol_version(&mut out, &unsupported);
        stream.write_all(&out).await.map_err(|_| Refusal::Closed)?;
    }
    let ahead = authenticate_client(
        stream,
        AuthMethod::ScramSha256,
        route.users.get(&user),
        &user,
        &user,
        None,
    )
    .await
    .map_err(|e| ClientError::from(&e))?;
    // A rare login (one per migration target): SCRAM's final message goes
    // out now, not with AuthenticationOk after the server login.
    stream
        .write_all(&ahead)
        .await
        .map_err(|_| Refusal::Closed)?;
    let mut server = route.server.clone();
    server.settings = session_settings(&params, &route.server.settings);
    let app = params.get("application_name").unwrap_or_default();
    match ServerConn::connect(&server, app, shared.connect_timeout, 0).await {
        Ok(c) => Ok((route, c)),
        Err(e) => {
            tracing::warn!(error = %e, "owner route: server login failed");
            // The server's own SQLSTATE and message (ClientError codes are
            // pgtenant's fixed set).
            out.clear();
            let (code, message) = match &e {
                BackendError::Refused { code, message, .. } => (code.as_str(), message.clone()),
                _ => (sqlstate::CONNECTION_FAILURE, e.to_string()),
            };
            messages::error_response(&mut out, Severity::Fatal, code, &message, None);
            let _ = stream.write_all(&out).await;
            Err(Refusal::Closed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> StartupParams {
        StartupParams {
            minor_version: 0,
            params: p
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_routes_settings_come_last_and_routing_parameters_are_dropped() {
        let p = params(&[
            ("user", "u"),
            ("database", "d"),
            ("client_encoding", "UTF8"),
            ("tenant", "acme"),
            ("options", "-c search_path=x -ctenant=acme -c DateStyle=ISO"),
        ]);
        let route = vec![("search_path".to_owned(), "\"t_acme\"".to_owned())];
        assert_eq!(
            session_settings(&p, &route),
            vec![
                ("client_encoding".to_owned(), "UTF8".to_owned()),
                ("search_path".to_owned(), "x".to_owned()),
                ("DateStyle".to_owned(), "ISO".to_owned()),
                ("search_path".to_owned(), "\"t_acme\"".to_owned()),
            ]
        );
    }

    #[test]
    fn urls_encode_the_database() {
        assert_eq!(url_encode("my db/é"), "my%20db%2F%C3%A9");
        assert_eq!(url_encode("dj_app-1.x"), "dj_app-1.x");
    }
}
