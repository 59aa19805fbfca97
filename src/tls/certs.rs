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
/// None for algorithms without a single hash (Ed25519, RSASSA-PSS, whose
/// hash hides in parameters): such a certificate gets no
/// SCRAM-SHA-256-PLUS offered, rather than a binding the client computes
/// differently.
pub fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    let parsed = x509_cert::Certificate::from_der(cert).ok()?;
    let alg = parsed.signature_algorithm.oid;
    let sha256 = [
        rfc5912::MD_5_WITH_RSA_ENCRYPTION,
        rfc5912::SHA_1_WITH_RSA_ENCRYPTION,
        rfc5912::DSA_WITH_SHA_1,
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        rfc5912::ECDSA_WITH_SHA_256,
    ];
    let sha224 = [
        rfc5912::SHA_224_WITH_RSA_ENCRYPTION,
        rfc5912::ECDSA_WITH_SHA_224,
    ];
    let sha384 = [
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
        rfc5912::ECDSA_WITH_SHA_384,
    ];
    let sha512 = [
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
        rfc5912::ECDSA_WITH_SHA_512,
    ];
    if sha256.contains(&alg) {
        Some(sha2::Sha256::digest(cert).to_vec())
    } else if sha224.contains(&alg) {
        Some(sha2::Sha224::digest(cert).to_vec())
    } else if sha384.contains(&alg) {
        Some(sha2::Sha384::digest(cert).to_vec())
    } else if sha512.contains(&alg) {
        Some(sha2::Sha512::digest(cert).to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    };

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).expect("key");
        CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn the_binding_hash_follows_the_signature_algorithm() {
        let p256 = cert(&PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            end_point_hash(&p256),
            Some(sha2::Sha256::digest(&p256).to_vec())
        );
        let p384 = cert(&PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            end_point_hash(&p384),
            Some(sha2::Sha384::digest(&p384).to_vec())
        );
        assert_eq!(end_point_hash(&cert(&PKCS_ED25519)), None);
        assert_eq!(end_point_hash(b"not a certificate"), None);
    }
}
