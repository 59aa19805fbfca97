//! TLS on both sides (SPEC §5), with rustls: clients' connections
//! (SSLRequest, PostgreSQL 17's direct TLS, SNI, channel binding) and
//! pgtenant's own connections to servers (libpq's `sslmode`).

mod acceptor;
mod certs;
mod connector;
mod stream;

pub use acceptor::{accept, Acceptor, ClientTls, Secured};
pub use certs::end_point_hash;
pub use connector::{
    pg_connect, reload_server_tls, PgConnectError, PgConnection, PgStream, ServerTls,
    TlsConnectError,
};
pub use stream::{unix_socket_path, ReadHalf, Stream, WriteHalf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("[tls] mode = \"{0}\" needs cert_file and key_file")]
    NoCertificate(&'static str),
    #[error("TLS set-up: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// The crypto provider for every TLS config pgtenant builds (ring: no C
/// build step, as the issue asks).
fn provider() -> std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}
