//! pgtenant logging in to a PostgreSQL server: answers whatever the server asks
//! (trust, cleartext, md5, SCRAM-SHA-256) with the configured credentials.

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

fn password_message(out: &mut BytesMut, payload: impl FnOnce(&mut BytesMut)) {
    out.clear();
    out.put_u8(b'p');
    out.put_i32(0);
    payload(out);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Handles one `R` message from the server. Returns `Ok(true)` on
/// AuthenticationOk. `password` is required for anything but trust.
pub async fn answer_auth_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    body: &[u8],
    user: &str,
    password: Option<&str>,
    scram: &mut Option<ScramSha256>,
) -> io::Result<bool> {
    if body.len() < 4 {
        return Err(invalid("short authentication request"));
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let data = &body[4..];
    let need_pw = || {
        password.ok_or_else(|| {
            invalid(format!(
                "server asks for a password for user \"{user}\" but none is configured"
            ))
        })
    };
    let mut out = BytesMut::new();
    match code {
        0 => return Ok(true),
        3 => {
            let pw = need_pw()?;
            password_message(&mut out, |o| {
                o.put_slice(pw.as_bytes());
                o.put_u8(0);
            });
        }
        5 => {
            let pw = need_pw()?;
            let salt: [u8; 4] = data
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| invalid("short md5 salt"))?;
            let hash =
                postgres_protocol::authentication::md5_hash(user.as_bytes(), pw.as_bytes(), salt);
            password_message(&mut out, |o| {
                o.put_slice(hash.as_bytes());
                o.put_u8(0);
            });
        }
        10 => {
            let pw = need_pw()?;
            let offers_scram = data.split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256");
            if !offers_scram {
                return Err(invalid("server offers no SASL mechanism pgtenant supports"));
            }
            let client = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
            let first = client.message().to_vec();
            *scram = Some(client);
            password_message(&mut out, |o| {
                o.put_slice(b"SCRAM-SHA-256\0");
                o.put_i32(first.len() as i32);
                o.put_slice(&first);
            });
        }
        11 => {
            let client = scram
                .as_mut()
                .ok_or_else(|| invalid("unexpected SASL continue"))?;
            client.update(data)?;
            let msg = client.message().to_vec();
            password_message(&mut out, |o| o.put_slice(&msg));
        }
        12 => {
            let client = scram
                .as_mut()
                .ok_or_else(|| invalid("unexpected SASL final"))?;
            client.finish(data)?;
            return Ok(false);
        }
        other => {
            return Err(invalid(format!(
                "server requested unsupported authentication method {other}"
            )))
        }
    }
    stream.write_all(&out).await?;
    Ok(false)
}
