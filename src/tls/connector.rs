//! pgtenant's connections to its servers over TLS, with libpq's `sslmode`
//! meanings: `prefer` and `require` encrypt without checking the
//! certificate (`require` with a `ca_file` checks it as `verify-ca`, as
//! libpq does with a root certificate), `verify-ca` checks it against
//! `ca_file`, `verify-full` also checks that it names the host. One rustls
//! config per distinct settings, built on first use and kept until RELOAD
//! (a server connection is opened far less often than a query runs).

use super::{certs, provider, Stream, TlsError};
use crate::config::{ServerSslMode, ServerTlsSettings};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

#[derive(Debug, Error)]
pub enum TlsConnectError {
    #[error(transparent)]
    Setup(#[from] TlsError),
    #[error("the server does not accept TLS (sslmode = {0:?} requires it)")]
    Refused(ServerSslMode),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

type Built = Mutex<Option<HashMap<ServerTlsSettings, Arc<ServerTls>>>>;
static BUILT: Built = Mutex::new(None);

/// Forgets every built config (RELOAD): the next connection to each server
/// reads its CA, certificate and key files again; open ones keep theirs.
pub fn reload_server_tls() {
    *BUILT.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// The client side of TLS to one server (settings plus a built config).
pub struct ServerTls {
    mode: ServerSslMode,
    config: Option<Arc<ClientConfig>>,
}

impl ServerTls {
    /// The config for `settings`, built on first use after a (re)load.
    pub fn get(settings: &ServerTlsSettings) -> Result<Arc<ServerTls>, TlsError> {
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        let map = built.get_or_insert_with(HashMap::new);
        if let Some(t) = map.get(settings) {
            return Ok(t.clone());
        }
        let t = Arc::new(Self::build(settings)?);
        map.insert(settings.clone(), t.clone());
        Ok(t)
    }

    fn build(s: &ServerTlsSettings) -> Result<ServerTls, TlsError> {
        if s.sslmode == ServerSslMode::Disable {
            return Ok(ServerTls {
                mode: s.sslmode,
                config: None,
            });
        }
        let provider = provider();
        let checks_ca = matches!(
            s.sslmode,
            ServerSslMode::VerifyCa | ServerSslMode::VerifyFull
        ) || (s.sslmode == ServerSslMode::Require && s.ca_file.is_some());
        let verifier: Arc<dyn ServerCertVerifier> = match checks_ca {
            true => {
                let ca = s.ca_file.as_deref().ok_or_else(|| TlsError::File {
                    path: "(none)".into(),
                    why: format!("sslmode = {:?} needs ca_file", s.sslmode),
                })?;
                let mut roots = RootCertStore::empty();
                for c in certs::load_certs(ca)? {
                    roots.add(c)?;
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::File {
                            path: ca.to_owned(),
                            why: e.to_string(),
                        })?;
                Arc::new(Verifier {
                    chain: Some(webpki),
                    check_name: s.sslmode == ServerSslMode::VerifyFull,
                    provider: provider.clone(),
                })
            }
            false => Arc::new(Verifier {
                chain: None,
                check_name: false,
                provider: provider.clone(),
            }),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&s.client_cert_file, &s.client_key_file) {
            (Some(cert), Some(key)) => {
                builder.with_client_auth_cert(certs::load_certs(cert)?, certs::load_key(key)?)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(ServerTls {
            mode: s.sslmode,
            config: Some(Arc::new(config)),
        })
    }

    /// The rustls config, for tokio-postgres connections (admin, catalog).
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.config.clone()
    }

    pub fn mode(&self) -> ServerSslMode {
        self.mode
    }

    /// Asks `tcp`'s server for TLS (SSLRequest) as the mode says and returns
    /// the stream to log in on.
    pub async fn connect(&self, mut tcp: TcpStream, host: &str) -> Result<Stream, TlsConnectError> {
        let Some(config) = &self.config else {
            return Ok(Stream::Plain(tcp));
        };
        const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        tcp.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {}
            b'N' if self.mode == ServerSslMode::Prefer => return Ok(Stream::Plain(tcp)),
            b'N' => return Err(TlsConnectError::Refused(self.mode)),
            other => {
                return Err(TlsConnectError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected answer {other:#04x} to SSLRequest"),
                )))
            }
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            TlsConnectError::Handshake(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(TlsConnectError::Handshake)?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }
}

/// What `sslmode` checks of a server's certificate. `chain`: it must lead
/// to `ca_file` (`verify-ca`, `verify-full`, `require` with a CA), and with
/// `check_name` also name the host (`verify-full`); none: it is not checked
/// (`prefer`, `require`, libpq's meaning without a root certificate). The
/// handshake's signatures are always checked.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(tokio_rustls::rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The stream type of pgtenant's tokio-postgres connections (admin, catalog,
/// migrations, LISTEN), TLS or not as the server's `sslmode` says.
pub type PgStream =
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        tokio_postgres::Socket,
    >>::Stream;

/// A tokio-postgres connection of pgtenant's own.
pub type PgConnection = tokio_postgres::Connection<tokio_postgres::Socket, PgStream>;

#[derive(Debug, Error)]
pub enum PgConnectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// Connects with `pg` secured per `tls` (libpq's sslmode meanings).
pub async fn pg_connect(
    pg: &tokio_postgres::Config,
    tls: &ServerTlsSettings,
) -> Result<(tokio_postgres::Client, PgConnection), PgConnectError> {
    use tokio_postgres::config::SslMode;
    let server = ServerTls::get(tls)?;
    let mut pg = pg.clone();
    let unix = pg
        .get_hosts()
        .iter()
        .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    pg.ssl_mode(match tls.sslmode {
        // No TLS over a Unix socket (as libpq).
        _ if unix => SslMode::Disable,
        ServerSslMode::Disable => SslMode::Disable,
        ServerSslMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    let config = match server.client_config() {
        Some(c) => (*c).clone(),
        // Never used with sslmode disable; the connector needs one anyway.
        None => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                chain: None,
                check_name: false,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    let make = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    Ok(pg.connect(make).await?)
}
