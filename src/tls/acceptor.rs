//! The client side's TLS: the certificate in force (swapped by RELOAD; a
//! failed reload keeps the old one) and the handshake on a client's socket.

use super::{certs, provider, Stream, TlsError};
use crate::config::{ClientTlsMode, TlsConfig};
use std::sync::{Arc, RwLock};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;

/// ALPN protocol of PostgreSQL's direct TLS (required there, optional after
/// an SSLRequest).
const ALPN: &[u8] = b"postgresql";

/// A loaded certificate, ready to accept.
pub struct Acceptor {
    config: Arc<ServerConfig>,
    /// `tls-server-end-point` data of our certificate (SCRAM-SHA-256-PLUS).
    end_point: Option<Arc<[u8]>>,
}

impl Acceptor {
    fn load(cfg: &TlsConfig, mode: ClientTlsMode) -> Result<Option<Self>, TlsError> {
        let name = match mode {
            ClientTlsMode::Disable => return Ok(None),
            ClientTlsMode::Allow => "allow",
            ClientTlsMode::Require => "require",
        };
        let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
            return Err(TlsError::NoCertificate(name));
        };
        let chain = certs::load_certs(cert)?;
        let key = certs::load_key(key)?;
        let end_point = certs::end_point_hash(&chain[0]).map(Arc::from);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Some(Self {
            config: Arc::new(config),
            end_point,
        }))
    }
}

/// What TLS told about a client: for tenant routing and channel binding.
#[derive(Debug, Clone, Default)]
pub struct Secured {
    /// The server name the client asked for (SNI), lowercased.
    pub sni: Option<String>,
    /// The tenant that name names under `[tls] sni_domain`.
    pub sni_tenant: Option<String>,
    /// Channel-binding data when the connection is TLS.
    pub end_point: Option<Arc<[u8]>>,
    pub tls: bool,
    /// Where the client connects from (for `[[auth.rules]]`).
    pub peer: Option<std::net::SocketAddr>,
    /// Over the Unix socket (`[proxy] unix_socket_dir`).
    pub local: bool,
    /// The address the client connected to (SHOW CLIENTS' local address).
    pub listen_addr: Option<std::net::SocketAddr>,
}

/// The `[tls]` section in force.
pub struct ClientTls {
    state: RwLock<(ClientTlsMode, Option<Arc<Acceptor>>)>,
    sni_domain: RwLock<Option<String>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("mode", &self.current().0)
            .finish()
    }
}

impl Default for ClientTls {
    fn default() -> Self {
        Self {
            state: RwLock::new((ClientTlsMode::Disable, None)),
            sni_domain: RwLock::new(None),
        }
    }
}

impl ClientTls {
    /// Loads `[tls]` (at start and on RELOAD). On error nothing changes.
    pub fn load(&self, cfg: &TlsConfig) -> Result<(), TlsError> {
        let mode = cfg.effective_mode();
        let acceptor = Acceptor::load(cfg, mode)?.map(Arc::new);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = (mode, acceptor);
        *self.sni_domain.write().unwrap_or_else(|p| p.into_inner()) = cfg.sni_domain.clone();
        Ok(())
    }

    /// `[tls] sni_domain` in force.
    pub fn sni_domain(&self) -> Option<String> {
        self.sni_domain
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The mode and certificate a new connection uses (read once per login).
    pub fn current(&self) -> (ClientTlsMode, Option<Arc<Acceptor>>) {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs the server side of a TLS handshake on `tcp`. `direct`: the client
/// started with TLS instead of an SSLRequest (PostgreSQL 17), which must
/// name ALPN `postgresql`, as PostgreSQL insists.
pub async fn accept(
    acceptor: &Acceptor,
    tcp: TcpStream,
    direct: bool,
) -> std::io::Result<(Stream, Secured)> {
    let tls = tokio_rustls::TlsAcceptor::from(acceptor.config.clone())
        .accept(tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    if direct && conn.alpn_protocol() != Some(ALPN) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "direct TLS without ALPN \"postgresql\"",
        ));
    }
    let secured = Secured {
        sni: conn.server_name().map(str::to_ascii_lowercase),
        sni_tenant: None,
        end_point: acceptor.end_point.clone(),
        tls: true,
        // Filled in by the caller, which has them from accept().
        peer: None,
        local: false,
        listen_addr: None,
    };
    Ok((
        Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))),
        secured,
    ))
}
