//! Certificates and keys from PEM files, and the TLS channel-binding data
//! SCRAM-SHA-256-PLUS binds a login to (RFC 5929 `tls-server-end-point`).

use super::TlsError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use x509_cert::der::oid::db::rfc5912;
use x509_cert::der::Decode;

/// Every certificate of a PEM file, in order (a chain: leaf first).
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bad = |why: String| TlsError::File {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| bad(format!("no usable private key: {e}")))
}

/// The `tls-server-end-point` binding of `cert` (DER): its hash under the
/// hash of its signature algorithm, SHA-256 for MD5 and SHA-1 (RFC 5929 §4.1).
/// None for algorithms without one (Ed25519): such a server offers no
/// SCRAM-SHA-256-PLUS, as PostgreSQL does.
pub fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    let parsed = x509_cert::Certificate::from_der(cert).ok()?;
    let alg = parsed.signature_algorithm.oid;
    let sha256 = [
        rfc5912::MD_5_WITH_RSA_ENCRYPTION,
        rfc5912::SHA_1_WITH_RSA_ENCRYPTION,
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        rfc5912::ECDSA_WITH_SHA_256,
        rfc5912::ID_RSASSA_PSS,
        rfc5912::ECDSA_WITH_SHA_224,
        rfc5912::SHA_224_WITH_RSA_ENCRYPTION,
    ];
    if sha256.contains(&alg) {
        Some(sha2::Sha256::digest(cert).to_vec())
    } else if [
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
        rfc5912::ECDSA_WITH_SHA_384,
    ]
    .contains(&alg)
    {
        Some(sha2::Sha384::digest(cert).to_vec())
    } else if [
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
        rfc5912::ECDSA_WITH_SHA_512,
    ]
    .contains(&alg)
    {
        Some(sha2::Sha512::digest(cert).to_vec())
    } else {
        None
    }
}
