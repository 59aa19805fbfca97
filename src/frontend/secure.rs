//! A client connection's opening with TLS (SPEC §5): an SSLRequest answered
//! 'S' and a handshake, or PostgreSQL 17's direct TLS (the first byte is a
//! TLS record, ALPN `postgresql`), then the startup packet or a cancel
//! request. `[tls] mode = "require"` refuses a plaintext login (28000); a
//! plaintext cancel request is still served (it carries its own secret).

use super::handshake::{read_first_packet, read_first_packet_peeked, Opening, Refusal, PEEK_LEN};
use crate::app::Proxy;
use crate::config::ClientTlsMode;
use crate::error::ClientError;
use crate::protocol::sqlstate;
use crate::protocol::startup::FirstPacket;
use crate::tls::{Acceptor, Secured, Stream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout_at, Instant};

/// A client's accepted socket.
pub enum ClientSocket {
    /// With its peer's address and the listener's, as accept() told them
    /// (asking the kernel again costs two syscalls per login).
    Tcp(
        TcpStream,
        std::net::SocketAddr,
        Option<std::net::SocketAddr>,
    ),
    /// On `[proxy] unix_socket_dir`.
    Unix(UnixStream),
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How a connection's opening ended.
pub enum Opened {
    /// The stream (TLS or not), what TLS told, and what the client opened with.
    Ready(Stream, Secured, Opening),
    /// Refused: tell the client on the stream, if one is left, and close.
    Refused(Option<Stream>, Refusal),
    /// `deadline` passed first (client_login_timeout).
    TimedOut(Option<Stream>),
}

/// Negotiates encryption and reads what the connection opens with, by
/// `deadline`. A Unix-socket client gets no TLS (libpq never asks for it
/// there; an SSLRequest is answered 'N'), and `[tls] mode = "require"` does
/// not apply to it: the socket file's permissions guard that door, as
/// PostgreSQL's `local` lines do.
pub async fn open(socket: ClientSocket, proxy: &Proxy, deadline: Instant) -> Opened {
    let (mode, acceptor) = proxy.tls.current();
    let (tcp, plain) = match socket {
        ClientSocket::Tcp(tcp, peer, listen_addr) => (
            tcp,
            Secured {
                peer: Some(peer),
                listen_addr,
                ..Secured::default()
            },
        ),
        ClientSocket::Unix(unix) => {
            let secured = Secured {
                local: true,
                ..Secured::default()
            };
            return negotiate(
                Stream::Unix(unix),
                secured,
                &[],
                None,
                mode,
                proxy,
                deadline,
            )
            .await;
        }
    };
    // A peek: a TLS acceptor needs the bytes left there. What it saw of a
    // plaintext packet spares `negotiate` a peek of its own.
    let mut first = [0u8; PEEK_LEN];
    let peeked = match timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(p) => p,
        Err(_) => return Opened::TimedOut(Some(tcp.into())),
    };
    if matches!(peeked, Ok(n) if n >= 1) && first[0] == TLS_HANDSHAKE {
        // Direct TLS: nothing can be said in the protocol before the
        // handshake, so a refusal is a close, as PostgreSQL does.
        let Some(acceptor) = acceptor else {
            return Opened::Refused(None, Refusal::Closed);
        };
        let (mut stream, secured) =
            match timeout_at(deadline, handshake(&acceptor, tcp, true, proxy, &plain)).await {
                Ok(Some(s)) => s,
                Ok(None) => return Opened::Refused(None, Refusal::Closed),
                Err(_) => return Opened::TimedOut(None),
            };
        let Ok(packet) = timeout_at(deadline, read_first_packet(&mut stream)).await else {
            return Opened::TimedOut(Some(stream));
        };
        return match packet {
            Ok(FirstPacket::Startup(p)) => Opened::Ready(stream, secured, Opening::Startup(p)),
            Ok(FirstPacket::Cancel { pid, secret }) => {
                Opened::Ready(stream, secured, Opening::Cancel { pid, secret })
            }
            Ok(_) => Opened::Refused(Some(stream), inside_tls()),
            Err(r) => Opened::Refused(Some(stream), r),
        };
    }
    let seen = match peeked {
        Ok(n) => &first[..n],
        Err(_) => &[],
    };
    negotiate(
        Stream::from(tcp),
        plain,
        seen,
        acceptor,
        mode,
        proxy,
        deadline,
    )
    .await
}

/// SSLRequest / GSSENCRequest answers until the startup packet or a cancel
/// request.
/// `peeked`: what `open`'s peek saw of the first packet (empty: nothing).
async fn negotiate(
    mut stream: Stream,
    mut secured: Secured,
    peeked: &[u8],
    acceptor: Option<std::sync::Arc<Acceptor>>,
    mode: ClientTlsMode,
    proxy: &Proxy,
    deadline: Instant,
) -> Opened {
    for round in 0..3 {
        let read = async {
            match &mut stream {
                Stream::Plain(tcp) => {
                    let seen = (round == 0 && !peeked.is_empty()).then_some(peeked);
                    read_first_packet_peeked(tcp, seen).await
                }
                other => read_first_packet(other).await,
            }
        };
        let packet = match timeout_at(deadline, read).await {
            Ok(Ok(p)) => p,
            Ok(Err(r)) => return Opened::Refused(Some(stream), r),
            Err(_) => return Opened::TimedOut(Some(stream)),
        };
        match packet {
            FirstPacket::SslRequest | FirstPacket::GssEncRequest if secured.tls => {
                return Opened::Refused(Some(stream), inside_tls());
            }
            FirstPacket::SslRequest => {
                let Some(acceptor) = acceptor.as_deref() else {
                    if stream.write_all(b"N").await.is_err() {
                        return Opened::Refused(None, Refusal::Closed);
                    }
                    continue;
                };
                if stream.write_all(b"S").await.is_err() {
                    return Opened::Refused(None, Refusal::Closed);
                }
                let Stream::Plain(tcp) = stream else {
                    return Opened::Refused(None, inside_tls());
                };
                match timeout_at(deadline, handshake(acceptor, tcp, false, proxy, &secured)).await {
                    Ok(Some((s, info))) => (stream, secured) = (s, info),
                    Ok(None) => return Opened::Refused(None, Refusal::Closed),
                    Err(_) => return Opened::TimedOut(None),
                }
            }
            FirstPacket::GssEncRequest => {
                if stream.write_all(b"N").await.is_err() {
                    return Opened::Refused(None, Refusal::Closed);
                }
            }
            FirstPacket::Cancel { pid, secret } => {
                return Opened::Ready(stream, secured, Opening::Cancel { pid, secret });
            }
            FirstPacket::Startup(_)
                if mode == ClientTlsMode::Require && !secured.tls && !secured.local =>
            {
                return Opened::Refused(Some(stream), Refusal::Error(tls_required()));
            }
            FirstPacket::Startup(p) => return Opened::Ready(stream, secured, Opening::Startup(p)),
        }
    }
    Opened::Refused(
        Some(stream),
        protocol("too many encryption requests before the startup packet"),
    )
}

/// The TLS handshake, and the tenant its server name names (SNI routing);
/// the addresses are `plain`'s (from accept()).
async fn handshake(
    acceptor: &Acceptor,
    tcp: TcpStream,
    direct: bool,
    proxy: &Proxy,
    plain: &Secured,
) -> Option<(Stream, Secured)> {
    let (stream, mut secured) = crate::tls::accept(acceptor, tcp, direct)
        .await
        .map_err(|e| tracing::debug!(error = %e, direct, "client TLS handshake failed"))
        .ok()?;
    secured.peer = plain.peer;
    secured.listen_addr = plain.listen_addr;
    if let (Some(name), Some(domain)) = (&secured.sni, proxy.tls.sni_domain()) {
        secured.sni_tenant = crate::tenant::tenant_from_server_name(name, &domain);
    }
    Some((stream, secured))
}

fn protocol(what: &str) -> Refusal {
    Refusal::Error(ClientError::new(sqlstate::PROTOCOL_VIOLATION, what))
}

fn inside_tls() -> Refusal {
    protocol("an encryption request inside TLS")
}

fn tls_required() -> ClientError {
    ClientError::new(
        sqlstate::INVALID_AUTHORIZATION,
        "pgtenant accepts only TLS connections",
    )
    .hint("connect with sslmode=require or verify-full ([tls] mode is \"require\")")
}
