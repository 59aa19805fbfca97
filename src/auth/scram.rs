//! Server side of SCRAM-SHA-256 (RFC 5802/7677) and SCRAM-SHA-256-PLUS
//! (channel binding `tls-server-end-point`, RFC 5929), as PostgreSQL speaks
//! them. Written by hand: postgres-protocol only
//! has the client side, and pgwire's server side is tied to its own connection
//! stack, which we don't use past the handshake. Sans-IO so it is unit-tested.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message")]
    Malformed,
    #[error("channel binding is not supported without TLS")]
    ChannelBinding,
    #[error("SCRAM channel binding negotiation error")]
    BindingNegotiation,
    #[error("SCRAM channel binding check failed")]
    BindingMismatch,
    #[error("SCRAM proof does not match")]
    BadProof,
}

/// What a server stores: `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt_b64: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramVerifier {
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iter.parse().ok()?,
            salt_b64: salt.to_owned(),
            stored_key: B64.decode(stored).ok()?,
            server_key: B64.decode(server).ok()?,
        })
    }
}

/// The secret mock verifiers derive from: random per process unless
/// [`seed_mock_secret`] ran first.
static MOCK_SECRET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Derives mock verifiers from a secret every replica shares (`[catalog]
/// role_secret`), so an unknown user's salt is the same on every replica
/// and across restarts, as a real user's is. The first call wins.
pub fn seed_mock_secret(shared: &str) {
    let _ = MOCK_SECRET.set(hmac(shared.as_bytes(), b"pgtenant mock SCRAM verifier"));
}

impl ScramVerifier {
    /// A verifier no password matches, the same for `user` whenever it is
    /// asked for (see [`seed_mock_secret`]), so an unknown user goes
    /// through the same exchange as a known one with a wrong password and
    /// can't be told apart by its salt changing between attempts.
    pub fn mock(user: &str) -> Self {
        let secret = MOCK_SECRET.get_or_init(|| rand::random::<[u8; 32]>().to_vec());
        let part = |label: &str| hmac(secret, format!("{label}\0{user}").as_bytes());
        Self {
            iterations: 4096,
            salt_b64: B64.encode(&part("salt")[..16]),
            stored_key: part("stored"),
            server_key: part("server"),
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The channel binding a login may or must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// No TLS: only `n` (and `y`) are valid.
    None,
    /// TLS, SCRAM-SHA-256 chosen: the client must not claim the server
    /// lacks binding (`y` is a downgrade) nor use it (`p=`).
    Offered,
    /// SCRAM-SHA-256-PLUS chosen: `p=tls-server-end-point` with this data.
    Required(&'a [u8]),
}

/// One login's exchange, between server-first and server-final.
#[derive(Debug)]
pub struct ScramExchange {
    verifier: ScramVerifier,
    gs2_header: String,
    /// What `c=` must carry after the GS2 header: the channel-binding data.
    binding_data: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramExchange {
    /// Takes the client-first-message; returns the exchange and server-first-message.
    pub fn start(
        verifier: &ScramVerifier,
        client_first: &str,
        binding: Binding<'_>,
    ) -> Result<(Self, String), ScramError> {
        let mut parts = client_first.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError::Malformed)?;
        let authzid = parts.next().ok_or(ScramError::Malformed)?;
        let bare = parts.next().ok_or(ScramError::Malformed)?;
        let binding_data = match (flag, binding) {
            ("n", Binding::None | Binding::Offered) | ("y", Binding::None) => Vec::new(),
            // The client believes the server has no binding while it does:
            // someone in between removed the -PLUS mechanism.
            ("y", _) => return Err(ScramError::BindingNegotiation),
            ("p=tls-server-end-point", Binding::Required(data)) => data.to_vec(),
            (f, Binding::None) if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            (f, _) if f.starts_with("p=") => return Err(ScramError::BindingNegotiation),
            (_, Binding::Required(_)) => return Err(ScramError::BindingNegotiation),
            _ => return Err(ScramError::Malformed),
        };
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed)?;
        let mut raw = [0u8; 18];
        rand::fill(&mut raw);
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            verifier.salt_b64, verifier.iterations
        );
        Ok((
            Self {
                verifier: verifier.clone(),
                gs2_header: format!("{flag},{authzid},"),
                binding_data,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks the client-final-message; returns the server-final-message.
    pub fn finish(self, client_final: &str) -> Result<String, ScramError> {
        let (without_proof, proof_b64) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed)?;
        let mut cbind = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                cbind = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let mut expected = self.gs2_header.clone().into_bytes();
        expected.extend_from_slice(&self.binding_data);
        if cbind != Some(B64.encode(&expected).as_str()) {
            return Err(ScramError::BindingMismatch);
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::BadProof);
        }
        let proof = B64.decode(proof_b64).map_err(|_| ScramError::Malformed)?;
        if proof.len() != 32 {
            return Err(ScramError::BadProof);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let derived = Sha256::digest(&client_key);
        let diff = derived
            .iter()
            .zip(&self.verifier.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || self.verifier.stored_key.len() != 32 {
            return Err(ScramError::BadProof);
        }
        let server_sig = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(server_pw: &str, client_pw: &str) -> Result<(), ScramError> {
        run_bound(
            server_pw,
            client_pw,
            ChannelBinding::unsupported(),
            Binding::None,
        )
    }

    fn run_bound(
        server_pw: &str,
        client_pw: &str,
        client_binding: ChannelBinding,
        server_binding: Binding<'_>,
    ) -> Result<(), ScramError> {
        let v = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
            server_pw.as_bytes(),
        ))
        .expect("verifier");
        let mut client = ScramSha256::new(client_pw.as_bytes(), client_binding);
        let first = std::str::from_utf8(client.message())
            .expect("utf8")
            .to_owned();
        let (ex, server_first) = ScramExchange::start(&v, &first, server_binding)?;
        client
            .update(server_first.as_bytes())
            .map_err(|_| ScramError::Malformed)?;
        let fin = std::str::from_utf8(client.message())
            .expect("utf8")
            .to_owned();
        let server_final = ex.finish(&fin)?;
        client
            .finish(server_final.as_bytes())
            .map_err(|_| ScramError::Malformed)
    }

    #[test]
    fn real_client_logs_in() {
        assert_eq!(run("s3cret", "s3cret"), Ok(()));
    }

    #[test]
    fn a_mock_verifier_is_stable_per_user() {
        assert_eq!(ScramVerifier::mock("ghost"), ScramVerifier::mock("ghost"));
        assert_ne!(ScramVerifier::mock("ghost"), ScramVerifier::mock("ghost2"));
    }

    #[test]
    fn wrong_password_fails() {
        assert_eq!(run("s3cret", "guess"), Err(ScramError::BadProof));
    }

    #[test]
    fn channel_binding_logs_in_only_with_the_servers_certificate_hash() {
        let ours = [7u8; 32];
        let plus = |data: &[u8]| ChannelBinding::tls_server_end_point(data.to_vec());
        assert_eq!(
            run_bound("pw", "pw", plus(&ours), Binding::Required(&ours)),
            Ok(())
        );
        // A man in the middle terminates TLS with another certificate.
        assert_eq!(
            run_bound("pw", "pw", plus(&[8u8; 32]), Binding::Required(&ours)),
            Err(ScramError::BindingMismatch)
        );
        // Binding asked for without TLS, or over plain SCRAM-SHA-256.
        assert_eq!(
            run_bound("pw", "pw", plus(&ours), Binding::None),
            Err(ScramError::ChannelBinding)
        );
        assert_eq!(
            run_bound("pw", "pw", plus(&ours), Binding::Offered),
            Err(ScramError::BindingNegotiation)
        );
        // 'y' over TLS: the client was told there is no -PLUS (a downgrade).
        assert_eq!(
            run_bound("pw", "pw", ChannelBinding::unrequested(), Binding::Offered),
            Err(ScramError::BindingNegotiation)
        );
        assert_eq!(
            run_bound("pw", "pw", ChannelBinding::unrequested(), Binding::None),
            Ok(())
        );
        // -PLUS chosen but no binding sent.
        assert_eq!(
            run_bound(
                "pw",
                "pw",
                ChannelBinding::unsupported(),
                Binding::Required(&ours)
            ),
            Err(ScramError::BindingNegotiation)
        );
        assert_eq!(
            run_bound("pw", "pw", ChannelBinding::unsupported(), Binding::Offered),
            Ok(())
        );
    }
}

/// Property tests: whatever a client sends, the server side of SCRAM answers
/// with an error or a message, never a panic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_client_messages_never_panic(first in ".{0,80}", last in ".{0,120}") {
            let verifier = ScramVerifier::mock("someone");
            let first = format!("n,,n=,r={first}");
            if let Ok((exchange, _)) = ScramExchange::start(&verifier, &first, Binding::None) {
                prop_assert!(exchange.finish(&last).is_err());
            }
            let _ = ScramVerifier::parse(&last);
        }
    }
}
