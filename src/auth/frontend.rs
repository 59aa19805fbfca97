//! Authenticating a client to pgtenant over the wire, before any server is touched.

use super::scram::{Binding, ScramError, ScramExchange};
use super::users::Credential;
use crate::config::AuthMethod;
use crate::net::{read_message, take_cstr};
use crate::protocol::messages;
use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Auth messages are tiny; anything bigger is hostile.
const MAX_AUTH_MESSAGE: usize = 8192;

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("user \"{0}\" is not allowed to connect")]
    UnknownUser(String),
    #[error("password authentication failed for user \"{0}\"")]
    BadPassword(String),
    #[error("authentication protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ScramError> for AuthError {
    fn from(e: ScramError) -> Self {
        AuthError::Protocol(e.to_string())
    }
}

async fn expect_password_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<BytesMut, AuthError> {
    let (tag, body) = read_message(stream, buf, MAX_AUTH_MESSAGE).await?;
    if tag != b'p' {
        return Err(AuthError::Protocol(format!(
            "expected a password message, got {:?}",
            tag as char
        )));
    }
    Ok(body)
}

/// Runs the configured method for `user` (tenant suffix removed). md5 hashes
/// the name exactly as the client sent it (`wire_user`, e.g. `app.acme`).
/// `binding`: over TLS, the certificate's channel-binding data, with which
/// SCRAM-SHA-256-PLUS is offered first (as PostgreSQL does). On success it
/// returns what must still go out ahead of AuthenticationOk (SCRAM's final
/// message): the caller sends both in one write. Two small writes in a row
/// cost a login 40 ms (Nagle's algorithm meeting the client's delayed ACK).
pub async fn authenticate_client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: AuthMethod,
    cred: Option<&Credential>,
    user: &str,
    wire_user: &str,
    binding: Option<&[u8]>,
) -> Result<BytesMut, AuthError> {
    // An unknown user (or one without a usable password, or expired) goes
    // through the same exchange as a wrong password and gets the same
    // answer: neither the message nor the protocol flow tells them apart.
    if cred.is_none() {
        tracing::debug!(%user, "login attempt for an unknown user");
    }
    let mut out = BytesMut::new();
    let mut inbuf = BytesMut::new();
    match method {
        AuthMethod::Trust => cred
            .map(|_| out)
            .ok_or_else(|| AuthError::UnknownUser(user.to_owned())),
        AuthMethod::Md5 => {
            let plain = cred.and_then(|c| c.plain.as_deref());
            let salt: [u8; 4] = rand::random();
            messages::auth_request(&mut out, 5, &salt);
            stream.write_all(&out).await?;
            stream.flush().await?;
            let body = expect_password_message(stream, &mut inbuf).await?;
            let mut b = &body[..];
            let got = take_cstr(&mut b).unwrap_or_default();
            let matches = plain.is_some_and(|plain| {
                let want = postgres_protocol::authentication::md5_hash(
                    wire_user.as_bytes(),
                    plain.as_bytes(),
                    salt,
                );
                got.as_bytes() == want.as_bytes()
            });
            if matches {
                out.clear();
                Ok(out)
            } else {
                Err(AuthError::BadPassword(user.to_owned()))
            }
        }
        AuthMethod::ScramSha256 => {
            let mock;
            let verifier = match cred.and_then(|c| c.scram.as_ref()) {
                Some(v) => v,
                None => {
                    mock = super::ScramVerifier::mock(user);
                    &mock
                }
            };
            let mechanisms: &[u8] = if binding.is_some() {
                b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
            } else {
                b"SCRAM-SHA-256\0\0"
            };
            messages::auth_request(&mut out, 10, mechanisms);
            stream.write_all(&out).await?;
            stream.flush().await?;
            let body = expect_password_message(stream, &mut inbuf).await?;
            let mut b = &body[..];
            let mech = take_cstr(&mut b).unwrap_or_default();
            let bind = match (mech, binding) {
                ("SCRAM-SHA-256-PLUS", Some(data)) => Binding::Required(data),
                ("SCRAM-SHA-256", Some(_)) => Binding::Offered,
                ("SCRAM-SHA-256", None) => Binding::None,
                _ => {
                    return Err(AuthError::Protocol(format!(
                        "unsupported SASL mechanism {mech:?}"
                    )))
                }
            };
            if b.len() < 4 {
                return Err(AuthError::Protocol("malformed SASLInitialResponse".into()));
            }
            let first = std::str::from_utf8(&b[4..])
                .map_err(|_| AuthError::Protocol("SCRAM message is not UTF-8".into()))?;
            let (exchange, server_first) = ScramExchange::start(verifier, first, bind)?;
            out.clear();
            messages::auth_request(&mut out, 11, server_first.as_bytes());
            stream.write_all(&out).await?;
            stream.flush().await?;
            let body = expect_password_message(stream, &mut inbuf).await?;
            let fin = std::str::from_utf8(&body)
                .map_err(|_| AuthError::Protocol("SCRAM message is not UTF-8".into()))?;
            let server_final = exchange.finish(fin).map_err(|e| match e {
                ScramError::BadProof => AuthError::BadPassword(user.to_owned()),
                other => other.into(),
            })?;
            out.clear();
            messages::auth_request(&mut out, 12, server_final.as_bytes());
            Ok(out)
        }
    }
}
