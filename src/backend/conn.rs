//! A logged-in connection to a PostgreSQL server.

use super::settings::{Overrides, Settings};
use crate::auth::backend::answer_auth_request;
use crate::net::read_message;
use crate::prepared::LinkStatements;
use crate::protocol::messages::{self, error_code_and_message};
use crate::protocol::startup::{escape_option, PROTOCOL_3_0};
use crate::tenant::Target;
use bytes::{BufMut, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("cannot connect to server {server} ({host}:{port}): {source}")]
    Connect {
        server: String,
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("timed out connecting to server {0}")]
    ConnectTimeout(String),
    #[error("server {server} refused login: {message} (SQLSTATE {code})")]
    Refused {
        server: String,
        code: String,
        message: String,
    },
    #[error("server {server}: {source}")]
    Io {
        server: String,
        source: std::io::Error,
    },
    #[error("server {server}: TLS: {message}")]
    Tls { server: String, message: String },
}

/// Why one of pgtenant's own statements failed.
#[derive(Debug, Error)]
pub enum ExecError {
    #[error("{message} (SQLSTATE {code})")]
    Server { code: String, message: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// ParameterStatus values a server reported at login, in order.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// What pgtenant knows about a link's session: the statements it holds and the
/// current values of the settings pgtenant keeps in step with each client.
#[derive(Debug)]
pub struct LinkState {
    pub prepared: LinkStatements,
    /// Reported settings (lowercase names), as the server last reported them.
    pub params: Settings,
    /// The reported settings at login: what `RESET ALL` brings back.
    pub startup: Arc<Settings>,
    /// Every other setting a client changed here, with its replay statement.
    pub settings: Overrides,
    /// The session's settings are not known exactly (a request that changed
    /// them failed half-way): `RESET ALL` before anyone uses the link again.
    pub dirty: bool,
    /// SQL-level prepared statements here: name -> version (see frontend::client).
    pub sql_prepared: std::collections::HashMap<String, u64>,
    /// This client ran SQL that may change its session out of pgtenant's
    /// sight (a DO block, `set_config` with a computed argument): the link is
    /// `DISCARD ALL`-ed before another client uses it.
    pub foreign: Option<u64>,
    /// Something ran that pgtenant can't follow (a failed settings prelude, a
    /// failed DISCARD ALL): close the link instead of pooling it again.
    pub poisoned: bool,
    /// The server backend's pid (shared-tenant signatures are bound to it).
    pub pid: i32,
    /// Context isolation: the tenant whose context the link was last put in.
    pub context_owner: Option<Arc<str>>,
    /// It served another tenant: `DISCARD ALL` goes ahead of the next
    /// client's first message (pipelined, see `frontend::rewrite::prelude`).
    pub wipe: bool,
    /// The link's entry in the notification owners registry (see
    /// `notify::owners`), made at its first checkout.
    pub owner: Option<crate::notify::Registration>,
}

impl LinkState {
    /// What pgtenant knows of the session after `RESET ALL` ran there:
    /// settings back to the link's startup values. (Only `DISCARD ALL` clears
    /// `foreign`: RESET ALL leaves locks, LISTEN, temporary tables and
    /// statements made out of sight.)
    pub fn settings_reset(&mut self) {
        self.params = (*self.startup).clone();
        self.settings = Overrides::default();
        self.dirty = false;
    }

    /// After `DISCARD ALL`: nothing of any client's is left, not even a
    /// tenant context.
    pub fn discarded(&mut self) {
        self.settings_reset();
        self.prepared.clear();
        self.sql_prepared.clear();
        self.foreign = None;
        self.context_owner = None;
        self.wipe = false;
    }
}

pub struct ServerConn {
    pub stream: crate::tls::Stream,
    pub state: LinkState,
    pub params: ServerParams,
    /// The server backend's cancel secret (its pid is `state.pid`).
    pub secret: i32,
    pub created: Instant,
    pub last_used: Instant,
}

fn startup_message(target: &Target, application_name: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(128);
    b.put_i32(0);
    b.put_u32(PROTOCOL_3_0);
    let mut param = |k: &str, v: &str| {
        b.put_slice(k.as_bytes());
        b.put_u8(0);
        b.put_slice(v.as_bytes());
        b.put_u8(0);
    };
    param("user", &target.user);
    param("database", &target.database);
    param("application_name", application_name);
    // Tenant settings go in the startup options so they are session defaults:
    // RESET ALL / DISCARD ALL restore them instead of wiping them.
    let options: Vec<String> = target
        .settings
        .iter()
        .map(|(k, v)| format!("-c {}", escape_option(&format!("{k}={v}"))))
        .collect();
    if !options.is_empty() {
        param("options", &options.join(" "));
    }
    b.put_u8(0);
    let len = b.len() as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

impl ServerConn {
    /// Connects and logs in; returns once the server is ready for queries.
    pub async fn connect(
        target: &Target,
        application_name: &str,
        timeout: Duration,
        max_prepared: usize,
    ) -> Result<ServerConn, BackendError> {
        let server = target.server.to_string();
        let io_err = |source| BackendError::Io {
            server: server.clone(),
            source,
        };
        let connect_err = |source| BackendError::Connect {
            server: server.clone(),
            host: target.host.to_string(),
            port: target.port,
            source,
        };
        let mut stream = match crate::tls::unix_socket_path(&target.host, target.port) {
            // A Unix socket: no TLS (as libpq), no Nagle to turn off.
            Some(path) => tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                .await
                .map_err(|_| BackendError::ConnectTimeout(server.clone()))?
                .map(crate::tls::Stream::Unix)
                .map_err(connect_err)?,
            None => {
                let fut = TcpStream::connect((&*target.host, target.port));
                let stream = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| BackendError::ConnectTimeout(server.clone()))?
                    .map_err(connect_err)?;
                stream.set_nodelay(true).map_err(io_err)?;
                let tls_err = |message: String| BackendError::Tls {
                    server: server.clone(),
                    message,
                };
                let tls =
                    crate::tls::ServerTls::get(&target.tls).map_err(|e| tls_err(e.to_string()))?;
                tokio::time::timeout(timeout, tls.connect(stream, &target.host))
                    .await
                    .map_err(|_| BackendError::ConnectTimeout(server.clone()))?
                    .map_err(|e| tls_err(e.to_string()))?
            }
        };
        let login = async {
            stream
                .write_all(&startup_message(target, application_name))
                .await
                .map_err(io_err)?;
            stream.flush().await.map_err(io_err)?;
            let mut buf = BytesMut::with_capacity(1024);
            let mut scram = None;
            let mut params = Vec::new();
            let (mut pid, mut secret) = (0, 0);
            loop {
                let (tag, body) = read_message(&mut stream, &mut buf, 1 << 20)
                    .await
                    .map_err(io_err)?;
                match tag {
                    b'R' => {
                        answer_auth_request(
                            &mut stream,
                            &body,
                            &target.user,
                            target.password.as_deref(),
                            &mut scram,
                        )
                        .await
                        .map_err(io_err)?;
                    }
                    b'S' => {
                        if let Some((k, v)) = messages::parameter_status_fields(&body) {
                            params.push((k.to_owned(), v.to_owned()));
                        }
                    }
                    b'K' if body.len() >= 8 => {
                        pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                        secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    }
                    b'E' => {
                        let (code, message) = error_code_and_message(&body);
                        return Err(BackendError::Refused {
                            server: server.clone(),
                            code,
                            message,
                        });
                    }
                    b'Z' => break,
                    _ => {} // NoticeResponse, NegotiateProtocolVersion: nothing to do
                }
            }
            Ok((params, pid, secret))
        };
        let (params, pid, secret) = tokio::time::timeout(timeout, login)
            .await
            .map_err(|_| BackendError::ConnectTimeout(server.clone()))??;
        let now = Instant::now();
        let tracked: Settings = params
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        Ok(ServerConn {
            stream,
            state: LinkState {
                prepared: LinkStatements::new(max_prepared),
                startup: Arc::new(tracked.clone()),
                params: tracked,
                settings: Overrides::default(),
                sql_prepared: Default::default(),
                dirty: false,
                foreign: None,
                poisoned: false,
                pid,
                context_owner: None,
                wipe: false,
                owner: None,
            },
            params: Arc::new(params),
            secret,
            created: now,
            last_used: now,
        })
    }

    /// `DISCARD ALL`: the session back to its startup state (settings,
    /// statements, cursors, LISTEN, advisory locks, temp objects, the tenant
    /// context), with pgtenant's bookkeeping of the link following.
    pub async fn discard_all(&mut self) -> Result<(), ExecError> {
        self.execute("DISCARD ALL").await?;
        self.state.discarded();
        self.state.poisoned = false;
        Ok(())
    }

    /// Runs one query of pgtenant's own and returns its rows (text values).
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ExecError> {
        let mut rows = Vec::new();
        self.run(sql, Some(&mut rows)).await?;
        Ok(rows)
    }

    /// Runs statements of pgtenant's own (e.g. `DISCARD ALL`) and waits for
    /// ReadyForQuery. Fails if a statement fails or the link is not idle after.
    /// ParameterStatus changes are applied to the link's state and returned.
    pub async fn execute(&mut self, sql: &str) -> Result<Vec<(String, String)>, ExecError> {
        self.run(sql, None).await
    }

    /// Sends pgtenant's own pipelined requests (`out`: `requests` Queries or
    /// Syncs) and waits for all their replies; fails if any failed.
    pub async fn run_pipelined(&mut self, out: &[u8], requests: usize) -> Result<(), ExecError> {
        self.stream.write_all(out).await?;
        self.stream.flush().await?;
        let mut failed = None;
        // One buffer for all: a read may hold the next request's replies.
        let mut buf = BytesMut::new();
        for _ in 0..requests {
            if let Err(e) = self.replies(&mut buf, None).await {
                if matches!(e, ExecError::Io(_)) {
                    return Err(e);
                }
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn run(
        &mut self,
        sql: &str,
        rows: Option<&mut Vec<Vec<Option<String>>>>,
    ) -> Result<Vec<(String, String)>, ExecError> {
        let mut out = BytesMut::new();
        messages::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        self.replies(&mut BytesMut::new(), rows).await
    }

    /// Reads the replies to one request, through its ReadyForQuery.
    async fn replies(
        &mut self,
        buf: &mut BytesMut,
        mut rows: Option<&mut Vec<Vec<Option<String>>>>,
    ) -> Result<Vec<(String, String)>, ExecError> {
        let mut failed = None;
        let mut changed = Vec::new();
        loop {
            let (tag, body) = read_message(&mut self.stream, buf, 1 << 20).await?;
            match tag {
                b'E' => {
                    let (code, message) = error_code_and_message(&body);
                    failed = Some(ExecError::Server { code, message });
                }
                b'S' => {
                    if let Some((k, v)) = messages::parameter_status_fields(&body) {
                        self.state
                            .params
                            .insert(k.to_ascii_lowercase(), v.to_owned());
                        changed.push((k.to_owned(), v.to_owned()));
                    }
                }
                b'D' => {
                    if let Some(rows) = rows.as_deref_mut() {
                        rows.push(messages::data_row_text(&body));
                    }
                }
                b'Z' => {
                    return match (failed, body.first()) {
                        (None, Some(b'I')) => Ok(changed),
                        (Some(e), _) => Err(e),
                        _ => Err(ExecError::Io(std::io::Error::other(
                            "link not idle after statement",
                        ))),
                    };
                }
                _ => {}
            }
        }
    }

    /// An idle link must have nothing to say: unexpected bytes (a FATAL from an
    /// administrator's kill, a stray notice) or EOF mean it can't be lent out.
    /// On TCP it costs no syscall unless the socket was marked readable. Over
    /// TLS the link is polled for plaintext: a FATAL may already sit inside
    /// the TLS layer (read along with the last ReadyForQuery), where the
    /// socket shows nothing; records without plaintext (a session ticket)
    /// are consumed and leave it usable.
    pub fn idle_link_usable(&mut self) -> bool {
        use std::task::Poll;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        if self.stream.is_tls() {
            let stream = std::pin::Pin::new(&mut self.stream);
            return matches!(
                tokio::io::AsyncRead::poll_read(stream, &mut cx, &mut buf),
                Poll::Pending
            );
        }
        self.stream.idle_and_open(&mut cx, &mut buf)
    }

    /// Tells the server goodbye without waiting (used when dropping a link).
    pub fn terminate(&mut self) {
        let mut out = BytesMut::new();
        messages::terminate(&mut out);
        self.stream.send_final(&out);
    }
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("stream", &self.stream)
            .field("pid", &self.state.pid)
            .finish_non_exhaustive()
    }
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        tracing::info!(
            pid = self.state.pid,
            age_ms = self.created.elapsed().as_millis() as u64,
            "server connection closed"
        );
        self.terminate();
    }
}

/// Sends a CancelRequest for a server backend on a fresh connection,
/// secured as the server's connections are (`sslmode`).
pub async fn send_cancel(
    host: &str,
    port: u16,
    tls: &crate::config::ServerTlsSettings,
    pid: i32,
    secret: i32,
) -> std::io::Result<()> {
    let mut s = match crate::tls::unix_socket_path(host, port) {
        Some(path) => crate::tls::Stream::Unix(tokio::net::UnixStream::connect(path).await?),
        None => {
            let tcp = TcpStream::connect((host, port)).await?;
            let tls = crate::tls::ServerTls::get(tls).map_err(std::io::Error::other)?;
            tls.connect(tcp, host)
                .await
                .map_err(std::io::Error::other)?
        }
    };
    s.write_all(&messages::cancel_request(pid, secret)).await?;
    s.flush().await?;
    // The server closes the connection once it has read the request.
    let mut sink = [0u8; 16];
    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut sink).await;
    Ok(())
}
