//! A minimal hand-driven protocol client for what real drivers can't send:
//! arbitrary startup parameters (`tenant=...`) and malformed input.

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawConn {
    pub stream: TcpStream,
    /// ParameterStatus values received at login, in order.
    pub params: Vec<(String, String)>,
    /// BackendKeyData: (pid, secret).
    pub key: (i32, i32),
}

/// Reads one backend message.
pub async fn read_msg(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 5];
    s.read_exact(&mut h).await?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    Ok((h[0], body))
}

/// (SQLSTATE, message) from an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let f = pgtenant::protocol::messages::parse_error_fields(body);
    let get = |c: u8| {
        f.iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    (get(b'C'), get(b'M'))
}

fn frontend(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

impl RawConn {
    /// Logs in with exactly these startup parameters; Err carries the server's
    /// (SQLSTATE, message).
    pub async fn connect(
        addr: SocketAddr,
        params: &[(&str, &str)],
        password: &str,
    ) -> Result<RawConn, (String, String)> {
        Self::connect_hooked(addr, params, password, async {}, &mut Vec::new()).await
    }

    /// [`RawConn::connect`], running `on_sasl` when the SCRAM exchange is
    /// requested and before answering it (something that happens while a
    /// client is half logged in).
    pub async fn connect_hooked(
        addr: SocketAddr,
        params: &[(&str, &str)],
        password: &str,
        on_sasl: impl std::future::Future<Output = ()>,
        auth_codes: &mut Vec<i32>,
    ) -> Result<RawConn, (String, String)> {
        let mut on_sasl = Some(on_sasl);
        let io = |e: std::io::Error| (String::new(), e.to_string());
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        s.write_all(&startup_packet(params)).await.map_err(io)?;
        let mut scram: Option<ScramSha256> = None;
        let mut reported = Vec::new();
        let mut key = (0, 0);
        loop {
            let (tag, body) = read_msg(&mut s).await.map_err(io)?;
            match tag {
                b'E' => return Err(error_fields(&body)),
                b'R' => {
                    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    auth_codes.push(code);
                    match code {
                        10 => {
                            if let Some(hook) = on_sasl.take() {
                                hook.await;
                            }
                            let c = ScramSha256::new(
                                password.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            let mut p = b"SCRAM-SHA-256\0".to_vec();
                            p.extend_from_slice(&(c.message().len() as i32).to_be_bytes());
                            p.extend_from_slice(c.message());
                            s.write_all(&frontend(b'p', &p)).await.map_err(io)?;
                            scram = Some(c);
                        }
                        11 => {
                            let c = scram.as_mut().expect("scram started");
                            c.update(&body[4..]).map_err(io)?;
                            s.write_all(&frontend(b'p', c.message()))
                                .await
                                .map_err(io)?;
                        }
                        12 => scram
                            .as_mut()
                            .expect("scram started")
                            .finish(&body[4..])
                            .map_err(io)?,
                        _ => {}
                    }
                }
                b'S' => {
                    let mut parts = body.split(|b| *b == 0);
                    let k = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                    let v = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                    reported.push((k, v));
                }
                b'K' if body.len() >= 8 => {
                    key = (
                        i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                        i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                    );
                }
                b'Z' => {
                    return Ok(RawConn {
                        stream: s,
                        params: reported,
                        key,
                    })
                }
                _ => {}
            }
        }
    }

    /// Runs a simple query; returns the first column of each row.
    pub async fn simple(&mut self, sql: &str) -> Result<Vec<String>, (String, String)> {
        let io = |e: std::io::Error| (String::new(), e.to_string());
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        self.stream
            .write_all(&frontend(b'Q', &q))
            .await
            .map_err(io)?;
        let mut rows = Vec::new();
        let mut err = None;
        loop {
            let (tag, body) = read_msg(&mut self.stream).await.map_err(io)?;
            match tag {
                b'D' => {
                    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                    rows.push(
                        String::from_utf8_lossy(&body[6..6 + len.max(0) as usize]).into_owned(),
                    );
                }
                b'E' => err = Some(error_fields(&body)),
                b'Z' => return err.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }
}

/// A protocol 3.0 startup packet with these parameters.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i32(196_608);
    for (k, v) in params {
        b.put_slice(k.as_bytes());
        b.put_u8(0);
        b.put_slice(v.as_bytes());
        b.put_u8(0);
    }
    b.put_u8(0);
    let len = b.len() as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.to_vec()
}

/// Frontend message builder for hand-written protocol tests.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    frontend(tag, body)
}

impl RawConn {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Every message up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let m = read_msg(&mut self.stream).await.expect("read");
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

/// A C string.
pub fn cstr(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}
