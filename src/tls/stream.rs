//! A connection that is plain TCP, TLS over TCP, or a Unix-domain socket
//! (to a server on the same machine: no TLS there, as with libpq), on either
//! side (clients of pgtenant, pgtenant to its servers). An enum, not a boxed trait object:
//! plaintext, the common case, pays one predictable branch per poll and no
//! allocation, and `split` stays a borrow split (no lock) for it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};
use tokio_rustls::TlsStream;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

/// The socket file of a server whose `host` is a directory (starts with
/// `/`, as in libpq): `{host}/.s.PGSQL.{port}`.
pub fn unix_socket_path(host: &str, port: u16) -> Option<std::path::PathBuf> {
    host.starts_with('/')
        .then(|| std::path::Path::new(host).join(format!(".s.PGSQL.{port}")))
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Plain(s)
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Stream::Plain(_) => "plain",
            Stream::Tls(_) => "tls",
            Stream::Unix(_) => "unix",
        };
        write!(f, "Stream({kind}, {:?})", self.peer_addr().ok())
    }
}

impl Stream {
    /// The TCP socket underneath (none for a Unix socket; never read or
    /// write it directly when the stream is TLS).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(t.get_ref().0),
            Stream::Unix(_) => None,
        }
    }

    /// The peer's address (an error for a Unix socket).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp()
            .ok_or_else(|| io::ErrorKind::Unsupported.into())
            .and_then(TcpStream::peer_addr)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp()
            .ok_or_else(|| io::ErrorKind::Unsupported.into())
            .and_then(TcpStream::local_addr)
    }

    /// Whether a plain socket (TCP or Unix) has nothing to read and is not
    /// closed: an idle server link that is still good. A Unix socket that is
    /// readable counts as not good (an idle link is sent nothing).
    pub fn idle_and_open(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> bool {
        match self {
            Stream::Unix(u) => matches!(u.poll_read_ready(cx), Poll::Pending),
            Stream::Plain(tcp) => match tcp.poll_read_ready(cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => matches!(tcp.poll_peek(cx, buf), Poll::Pending),
            },
            Stream::Tls(_) => false,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Writes `data` as far as the socket takes it now, without waiting, and
    /// for TLS a close_notify after it: a goodbye (Terminate) from code that
    /// can't wait, such as `Drop`.
    pub fn send_final(&mut self, data: &[u8]) {
        match self {
            Stream::Plain(s) => {
                let _ = s.try_write(data);
            }
            Stream::Unix(s) => {
                let _ = s.try_write(data);
            }
            Stream::Tls(t) => match &mut **t {
                TlsStream::Client(c) => {
                    let (tcp, conn) = c.get_mut();
                    goodbye(tcp, conn, data);
                }
                TlsStream::Server(c) => {
                    let (tcp, conn) = c.get_mut();
                    goodbye(tcp, conn, data);
                }
            },
        }
    }

    /// Read and write halves borrowed from the stream, usable at once (the
    /// relay reads one side while writing the other). TLS has one state
    /// machine for both directions, so its halves share it through tokio's
    /// `split` (an uncontended lock, next to the cost of the cipher).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(t) => {
                let (r, w) = tokio::io::split(&mut **t);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }
}

/// Encrypts `data` and a close_notify and writes what the socket takes now.
fn goodbye<D>(tcp: &TcpStream, conn: &mut tokio_rustls::rustls::ConnectionCommon<D>, data: &[u8]) {
    use std::io::Write;
    let _ = conn.writer().write_all(data);
    conn.send_close_notify();
    let mut out = Vec::new();
    while conn.wants_write() {
        if conn.write_tls(&mut out).is_err() {
            break;
        }
    }
    let _ = tcp.try_write(&out);
}

pub enum ReadHalf<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
    Unix(unix::ReadHalf<'a>),
}

pub enum WriteHalf<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
    Unix(unix::WriteHalf<'a>),
}

/// Forwards a poll to whichever variant the value holds.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Self::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Self::Tls($s) => {
                let $s = Pin::new($s);
                $e
            }
            Self::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

/// AsyncRead for a stream enum, forwarding to the variant.
macro_rules! forward_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                each!(self, s => s.poll_read(cx, buf))
            }
        }
    };
}

/// AsyncWrite for a stream enum, forwarding to the variant.
macro_rules! forward_write {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                each!(self, s => s.poll_write(cx, buf))
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                each!(self, s => s.poll_write_vectored(cx, bufs))
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    Self::Tls(t) => t.is_write_vectored(),
                    Self::Unix(u) => u.is_write_vectored(),
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                each!(self, s => s.poll_flush(cx))
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                each!(self, s => s.poll_shutdown(cx))
            }
        }
    };
}

forward_read!(Stream);
forward_write!(Stream);
forward_read!(ReadHalf<'_>);
forward_write!(WriteHalf<'_>);
