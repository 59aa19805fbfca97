//! A throw-away certificate authority for TLS tests (rcgen): a CA, a server
//! certificate it signed for `localhost`, `*.db.test` and 127.0.0.1, and a
//! client certificate for user `tls_client`, as PEM files in a folder of the
//! test's own; and clients that trust it.

use super::scratch;
use std::path::{Path, PathBuf};
use tokio_postgres::Client;
use tokio_rustls::rustls;

pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate with common name [`CLIENT_CN`].
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub const CLIENT_CN: &str = "tls_client";

/// Generates a CA and a server certificate under `temp/pgtenant-tls-NAME-PID`.
pub fn test_ca(name: &str) -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let dir = scratch(&format!("tls-{name}"));
    std::fs::create_dir_all(&dir).expect("tls dir");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("pgtenant test CA {name}"));
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "*.db.test".to_owned()])
        .expect("server params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server certificate");
    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, CLIENT_CN);
    let client_cert = client
        .signed_by(&client_key, &ca_cert, &ca_key)
        .expect("client certificate");
    let out = TestCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    };
    std::fs::write(&out.ca, ca_cert.pem()).expect("write CA");
    std::fs::write(&out.cert, cert.pem()).expect("write cert");
    std::fs::write(&out.key, key.serialize_pem()).expect("write key");
    std::fs::write(&out.client_cert, client_cert.pem()).expect("write client cert");
    std::fs::write(&out.client_key, client_key.serialize_pem()).expect("write client key");
    out
}

/// A rustls client config trusting only `ca`.
pub fn client_config(ca: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("read CA");
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("CA pem")).expect("add root");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// Connects through pgtenant over TLS with tokio-postgres-rustls, checking
/// the certificate against `ca` and the host name (verify-full). `conn` is a
/// libpq-style string (host, hostaddr, port, user, password...).
pub async fn connect_tls(conn: &str, ca: &Path) -> Result<Client, tokio_postgres::Error> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(ca));
    let (client, connection) =
        tokio_postgres::connect(&format!("{conn} sslmode=require"), tls).await?;
    tokio::spawn(connection);
    Ok(client)
}
