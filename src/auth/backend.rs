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

/// The most PBKDF2 rounds pgtenant computes for a server's SCRAM challenge
/// (PostgreSQL's default is 4096): a hostile server can't make it burn
/// minutes of CPU.
const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;

/// The `i=` of a SCRAM server-first-message.
fn scram_iterations(server_first: &[u8]) -> io::Result<u32> {
    std::str::from_utf8(server_first)
        .ok()
        .and_then(|s| s.split(',').find_map(|a| a.strip_prefix("i=")))
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| invalid("malformed SCRAM server-first-message"))
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
            let mut client = scram
                .take()
                .ok_or_else(|| invalid("unexpected SASL continue"))?;
            let rounds = scram_iterations(data)?;
            if rounds > MAX_SCRAM_ITERATIONS {
                return Err(invalid(format!(
                    "server asks for {rounds} SCRAM iterations (more than {MAX_SCRAM_ITERATIONS}): refused"
                )));
            }
            // PBKDF2 takes milliseconds at PostgreSQL's 4096 rounds: off the
            // async workers, so one server login never stalls other clients.
            let data = data.to_vec();
            let client = tokio::task::spawn_blocking(move || client.update(&data).map(|()| client))
                .await
                .map_err(|e| invalid(format!("SCRAM computation failed: {e}")))??;
            let msg = client.message().to_vec();
            *scram = Some(client);
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
    stream.flush().await?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_iteration_count_of_a_server_challenge() {
        assert_eq!(
            scram_iterations(b"r=abc,s=c2FsdA==,i=4096").ok(),
            Some(4096)
        );
        assert!(scram_iterations(b"r=abc,s=c2FsdA==").is_err());
        assert!(scram_iterations(b"r=abc,i=99999999999").is_err());
    }

    /// A hostile server asking for 2^31 rounds is refused before any work.
    #[tokio::test]
    async fn refuses_a_challenge_with_too_many_rounds() {
        let (mut ours, _theirs) = tokio::io::duplex(1024);
        let mut scram = None;
        let mut first = 10i32.to_be_bytes().to_vec();
        first.extend_from_slice(b"SCRAM-SHA-256\0\0");
        answer_auth_request(&mut ours, &first, "u", Some("pw"), &mut scram)
            .await
            .expect("SASL start");
        let mut cont = 11i32.to_be_bytes().to_vec();
        cont.extend_from_slice(b"r=x,s=c2FsdA==,i=2147483647");
        let e = answer_auth_request(&mut ours, &cont, "u", Some("pw"), &mut scram)
            .await
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "server asks for 2147483647 SCRAM iterations (more than 1000000): refused"
        );
    }
}
