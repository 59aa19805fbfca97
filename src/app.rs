//! Wires the proxy together: shared state, the listener, background tasks and
//! graceful shutdown. No protocol logic here.

use crate::auth::UserDb;
use crate::config::Config;
use crate::frontend::{accept_loop, CancelRegistry, ClientListener};
use crate::pool::PoolManager;
use crate::tenant::{Tenant, TenantDirectory};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("[tls]: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Everything a session needs, shared by all sessions.
#[derive(Debug)]
pub struct Proxy {
    pub config: Arc<Config>,
    pub tenants: TenantDirectory,
    pub users: UserDb,
    pub pools: PoolManager,
    pub cancels: Arc<CancelRegistry>,
    /// Idle client sessions waiting without a task (see `frontend::parking`).
    pub(crate) parking: Arc<crate::frontend::ParkingLot<Box<crate::frontend::ParkedSession>>>,
    /// LISTEN hubs and the owners of notification senders.
    pub notify: Arc<crate::notify::Hubs>,
    /// Migration status and catch-up of reactivated tenants (`serve` only).
    pub sidecar: crate::sidecar::Sidecar,
    /// Prometheus metrics (recorded even without a listener: a few atomics).
    pub metrics: Arc<crate::metrics::Metrics>,
    shutdown: watch::Sender<bool>,
    client_slots: Arc<Semaphore>,
    /// The tiers and tenants as last (re)loaded: RELOAD and SIGHUP swap it;
    /// catalog changes merge with it. Other sections apply at start only.
    live: std::sync::RwLock<Arc<Config>>,
    /// The config file, for RELOAD (`serve`).
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
    /// The catalog's tenant rows as last loaded (merged again on RELOAD).
    pub catalog_rows: std::sync::Mutex<Vec<crate::config::TenantConfig>>,
    /// When the proxy started (SHOW STATS averages).
    pub started: std::time::Instant,
    /// Caps on connections still logging in.
    pub logins: Arc<crate::frontend::LoginGate>,
    /// The catalog was read at least once (for `/readyz`).
    pub catalog_loaded: std::sync::atomic::AtomicBool,
    /// Since when the catalog has been unreachable (Unix ms; 0: it answers).
    /// Serving goes on from the last snapshot; `/readyz` says degraded.
    pub catalog_down_since_ms: std::sync::atomic::AtomicU64,
    /// The client side's TLS certificate and mode (RELOAD swaps them).
    pub tls: crate::tls::ClientTls,
    /// `[[auth.rules]]`, compiled.
    pub auth_rules: Vec<crate::auth::AuthRule>,
    /// `[auth] auth_query` and its cache.
    pub auth_query: Option<crate::auth::AuthQuery>,
    /// Per-tenant users from the catalog.
    pub tenant_users: crate::auth::TenantUsers,
}

impl Proxy {
    pub fn new(config: Config) -> Self {
        if let Some(secret) = crate::tenant::roles::role_secret(&config) {
            crate::auth::seed_mock_secret(&secret);
        }
        let tenants = TenantDirectory::new(Tenant::all_from_config(&config));
        let metrics = Arc::new(crate::metrics::Metrics::new(&config.metrics));
        let repair_cfg = Arc::new(config.clone());
        let mut pools = PoolManager::new(&config).with_login_repair(crate::pool::LoginRepair {
            role: crate::provision::SHARED_ROLE.to_owned(),
            run: Arc::new(move |server: String, database: String| {
                let cfg = repair_cfg.clone();
                Box::pin(async move {
                    crate::provision::repair_shared_login(&cfg, &server, &database)
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
        });
        if config.metrics.listen.is_some() {
            pools = pools.with_timings(metrics.timings_factory());
        }
        Self {
            users: UserDb::from_config(&config),
            pools,
            metrics,
            cancels: Arc::new(CancelRegistry::new(&config.peering)),
            parking: Arc::new(crate::frontend::parking_lot()),
            notify: Arc::new(crate::notify::Hubs::new(
                Arc::default(),
                crate::notify::MarkerKey::new(
                    crate::tenant::roles::role_secret(&config).as_deref(),
                ),
                config.proxy.server_connect_timeout,
            )),
            sidecar: crate::sidecar::Sidecar::default(),
            shutdown: watch::channel(false).0,
            client_slots: Arc::new(Semaphore::new(config.proxy.max_client_conn)),
            catalog_loaded: Default::default(),
            catalog_down_since_ms: Default::default(),
            tls: Default::default(),
            auth_rules: config
                .auth
                .rules
                .iter()
                .filter_map(crate::auth::AuthRule::from_config)
                .collect(),
            auth_query: crate::auth::AuthQuery::from_config(&config),
            tenant_users: Default::default(),
            logins: crate::frontend::LoginGate::new(
                config.proxy.max_logins,
                config.proxy.max_logins_per_address,
            ),
            started: std::time::Instant::now(),
            live: std::sync::RwLock::new(Arc::new(config.clone())),
            config_path: std::sync::OnceLock::new(),
            catalog_rows: Default::default(),
            tenants,
            config: Arc::new(config),
        }
    }

    /// The tiers and tenants in force (see `live`).
    pub fn live_config(&self) -> Arc<Config> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts shutting down (SHUTDOWN, signals): see [`Running::shutdown`].
    /// Sessions learn it from their signals; a session listed after this
    /// sees `shutting_down` (the roster's locks order the two).
    pub fn begin_shutdown(&self) {
        // Stored even with no receiver left: `shutting_down` reads it.
        self.shutdown.send_replace(true);
        self.pools
            .roster
            .raise(None, crate::pool::signals::Signal::SHUTDOWN);
    }

    /// Whether shutdown has started.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Becomes true once shutdown starts.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn try_client_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.client_slots.clone().try_acquire_owned().ok()
    }

    /// Idle clients whose sessions wait in the parking lot, without a task.
    pub fn parked_clients(&self) -> usize {
        self.parking.len()
    }

    /// Clients currently connected.
    pub fn client_count(&self) -> usize {
        self.config.proxy.max_client_conn - self.client_slots.available_permits()
    }
}

/// Resolves once shutdown has started (drops the watch guard before returning,
/// so callers can await afterwards).
pub async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A proxy running in this process (used by `serve` and by tests).
pub struct Running {
    pub addr: SocketAddr,
    /// The Unix socket clients may connect to (`[proxy] unix_socket_dir`).
    pub unix_socket: Option<std::path::PathBuf>,
    pub proxy: Arc<Proxy>,
    /// Where `/metrics` is served (`[metrics] listen`).
    pub metrics_addr: Option<SocketAddr>,
}

/// Binds `<dir>/.s.PGSQL.<port>` with `mode`. A socket file left by a
/// process that is gone is replaced; one another process still accepts on is
/// an error, as for a TCP port in use.
fn bind_unix(
    dir: &str,
    port: u16,
    mode: u32,
) -> Result<(tokio::net::UnixListener, std::path::PathBuf), AppError> {
    use std::os::unix::fs::PermissionsExt;
    // Named as for server connections (the directory is absolute: checked
    // with the config).
    let Some(path) = crate::tls::unix_socket_path(dir, port) else {
        return Err(AppError::Listen {
            addr: dir.to_owned(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    let failed = |source: std::io::Error| AppError::Listen {
        addr: path.display().to_string(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(failed(std::io::ErrorKind::AddrInUse.into()));
        }
        std::fs::remove_file(&path).map_err(failed)?;
    }
    // Bound under a temporary name, given its mode, then renamed: no client
    // can connect while the file still has the umask's permissions.
    let staging = path.with_extension(format!("{port}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging).map_err(failed)?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&staging, &path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(failed(e));
    }
    Ok((listener, path))
}

impl Running {
    /// Binds the listener and starts the accept loop and the pool reaper.
    pub async fn start(config: Config) -> Result<Running, AppError> {
        let listen = config.proxy.listen.clone();
        let listener = TcpListener::bind(&listen)
            .await
            .map_err(|source| AppError::Listen {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AppError::Listen {
            addr: listen,
            source,
        })?;
        let proxy = Arc::new(Proxy::new(config));
        proxy.tls.load(&proxy.config.tls)?;
        if proxy.config.catalog.is_some() {
            match crate::catalog::Catalog::from_config(&proxy.config) {
                Ok(cat) => {
                    // First load before accepting, so catalog tenants (and
                    // holds) are known at once.
                    use crate::catalog::watcher;
                    let mut me = watcher::Replica::new(&proxy);
                    let last = match watcher::first_load(&proxy, &cat, &mut me).await {
                        Ok(rows) => Some(rows),
                        Err(e) => {
                            tracing::error!(error = %e, "tenant catalog unavailable at startup; retrying in the background");
                            None
                        }
                    };
                    tokio::spawn(watcher::watch(proxy.clone(), cat, me, last));
                }
                Err(e) => tracing::error!(error = %e, "tenant catalog not usable"),
            }
        }
        let unix_socket = match &proxy.config.proxy.unix_socket_dir {
            Some(dir) => {
                let (unix, path) =
                    bind_unix(dir, addr.port(), proxy.config.proxy.unix_socket_mode)?;
                tokio::spawn(accept_loop(ClientListener::Unix(unix), proxy.clone()));
                tracing::info!(path = %path.display(), "pgtenant listening on a Unix socket");
                Some(path)
            }
            None => None,
        };
        tokio::spawn(accept_loop(ClientListener::tcp(listener), proxy.clone()));
        tokio::spawn(reaper(proxy.clone()));
        let mut metrics_at = None;
        if let Some(at) = proxy.config.metrics.listen.clone() {
            let listener = TcpListener::bind(&at)
                .await
                .map_err(|source| AppError::Listen {
                    addr: at.clone(),
                    source,
                })?;
            let metrics_addr = listener.local_addr().ok();
            tracing::info!(addr = ?metrics_addr, "metrics listening");
            tokio::spawn(crate::metrics::serve_http(
                listener,
                crate::observe::routes(proxy.clone()),
            ));
            metrics_at = metrics_addr;
        }
        tracing::info!(%addr, tenants = proxy.tenants.snapshot().len(), "pgtenant listening");
        Ok(Running {
            addr,
            unix_socket,
            proxy,
            metrics_addr: metrics_at,
        })
    }

    /// Graceful shutdown: stop accepting, close idle clients, let in-flight
    /// transactions finish, up to `shutdown_timeout`.
    pub async fn shutdown(&self) {
        self.proxy.begin_shutdown();
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        let deadline = tokio::time::Instant::now() + self.proxy.config.proxy.shutdown_timeout;
        let all = self.proxy.config.proxy.max_client_conn as u32;
        let drained = tokio::time::timeout_at(deadline, self.proxy.client_slots.acquire_many(all));
        match drained.await {
            Ok(_) => tracing::info!("all clients finished"),
            Err(_) => tracing::warn!(
                clients = self.proxy.client_count(),
                "shutdown_timeout reached with clients still connected"
            ),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.proxy.begin_shutdown();
    }
}

async fn reaper(proxy: Arc<Proxy>) {
    let mut shutdown = proxy.shutdown_signal();
    let every = (proxy.config.proxy.server_idle_timeout / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    let mut trim = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => proxy.pools.reap(),
            _ = trim.tick() => {
                let asked = proxy.pools.roster.trim_idle();
                if asked > 0 {
                    tracing::debug!(clients = asked, "idle clients rest (park, or give their buffers back)");
                }
            }
            _ = upkeep.tick() => proxy.metrics.upkeep(),
            _ = wait_shutdown(&mut shutdown) => return,
        }
    }
}

/// `pgtenant serve`: runs until SIGINT/SIGTERM, then drains.
pub async fn serve(config: Config, path: std::path::PathBuf) -> Result<(), AppError> {
    let running = Running::start(config).await?;
    let _ = running.proxy.config_path.set(path);
    crate::sidecar::start(running.proxy.clone());
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(running.proxy.clone()));
    let mut console_shutdown = running.proxy.shutdown_signal();
    tokio::select! {
        _ = wait_for_signal() => {}
        _ = wait_shutdown(&mut console_shutdown) => {}
    }
    tracing::info!("shutting down: in-flight transactions finish, idle clients are told 57P01 (a second signal exits at once)");
    tokio::select! {
        _ = running.shutdown() => {}
        _ = wait_for_signal() => tracing::warn!("second signal: exiting without waiting for clients"),
    }
    Ok(())
}

#[cfg(unix)]
async fn reload_on_sighup(proxy: Arc<Proxy>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match reload(&proxy) {
            Ok(notes) => tracing::info!(?notes, "config reloaded (SIGHUP)"),
            Err(e) => tracing::error!(error = %e, "config reload failed; the old config stays"),
        }
    }
}

/// RELOAD / SIGHUP: reads the config file again. If it is invalid, nothing
/// changes and the error says why. Otherwise `[tls]` (certificate files
/// re-read), tiers and static tenants apply at once (merged with the catalog's tenants): pools whose limits
/// changed are resized in place, other tenants' clients notice nothing.
/// Returns notes on sections that changed but apply only at a restart.
pub fn reload(proxy: &Proxy) -> Result<Vec<String>, String> {
    let path = proxy
        .config_path
        .get()
        .ok_or("no config file to reload (not started by `pgtenant serve`)")?;
    let new = crate::config::load_file(path).map_err(|e| e.to_string())?;
    let old = proxy.live_config();
    let mut notes = Vec::new();
    let restart = [
        (
            "[proxy]",
            format!("{:?}", old.proxy) != format!("{:?}", new.proxy),
        ),
        (
            "[auth]",
            format!("{:?}", old.auth) != format!("{:?}", new.auth),
        ),
        (
            "[servers]",
            format!("{:?}", old.servers) != format!("{:?}", new.servers),
        ),
        (
            "[metrics]",
            format!("{:?}", old.metrics) != format!("{:?}", new.metrics),
        ),
        (
            "[catalog]",
            format!("{:?}", old.catalog) != format!("{:?}", new.catalog),
        ),
        (
            "[migrations]",
            format!("{:?}", old.migrations) != format!("{:?}", new.migrations),
        ),
    ];
    for (section, changed) in restart {
        if changed {
            notes.push(format!("{section} changed: it applies at the next restart"));
        }
    }
    // The certificate and mode apply to the next connections; a file that
    // can't be read fails the whole reload (the old ones stay).
    proxy
        .tls
        .load(&new.tls)
        .map_err(|e| format!("[tls]: {e}"))?;
    // Servers' CA, certificate and key files are read again at the next
    // connection to each.
    crate::tls::reload_server_tls();
    let new = Arc::new(new);
    let rows = proxy
        .catalog_rows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let tenants = crate::catalog::watcher::merge(&new, &rows);
    proxy.pools.apply_limits(&tenants);
    proxy.tenants.replace(tenants);
    *proxy.live.write().unwrap_or_else(|p| p.into_inner()) = new;
    Ok(notes)
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
