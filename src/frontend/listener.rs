//! Accepts client connections (TCP, and the Unix socket when configured)
//! and starts one session task per client.

use super::handshake::send_fatal;
use super::secure::ClientSocket;
use super::session::{serve_client, Accepted};
use crate::app::{wait_shutdown, Proxy};
use crate::error::ClientError;
use crate::protocol::sqlstate;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};

/// Where clients connect.
pub enum ClientListener {
    /// With its own address, asked once (not once per client).
    Tcp(TcpListener, Option<std::net::SocketAddr>),
    Unix(UnixListener),
}

impl ClientListener {
    pub fn tcp(listener: TcpListener) -> Self {
        let local = listener.local_addr().ok();
        ClientListener::Tcp(listener, local)
    }

    /// The next client and the address it counts under for
    /// `max_logins_per_address` (all Unix-socket clients share one).
    async fn accept(&self) -> std::io::Result<(ClientSocket, IpAddr)> {
        match self {
            ClientListener::Tcp(l, local) => {
                let (stream, peer) = l.accept().await?;
                // Replies go out as written: with Nagle's algorithm a reply
                // written in two parts waits for the client's delayed ACK
                // (40 ms per SCRAM login, measured when this was missing).
                let _ = stream.set_nodelay(true);
                Ok((ClientSocket::Tcp(stream, peer, *local), peer.ip()))
            }
            ClientListener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok((ClientSocket::Unix(stream), Ipv4Addr::UNSPECIFIED.into()))
            }
        }
    }
}

async fn send_fatal_to(socket: ClientSocket, e: ClientError) {
    match socket {
        ClientSocket::Tcp(mut s, ..) => send_fatal(&mut s, &e).await,
        ClientSocket::Unix(mut s) => send_fatal(&mut s, &e).await,
    }
}

/// Accepts until shutdown. Over `max_client_conn`, a client gets a FATAL
/// "too many clients" instead of a session.
pub async fn accept_loop(listener: ClientListener, proxy: Arc<Proxy>) {
    let mut shutdown = proxy.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = wait_shutdown(&mut shutdown) => return,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = proxy.try_client_slot() else {
            proxy
                .metrics
                .login_failed(crate::metrics::LoginFailure::TooManyClients);
            let e = ClientError::new(
                sqlstate::TOO_MANY_CONNECTIONS,
                "too many clients for pgtenant (max_client_conn)",
            );
            tokio::spawn(send_fatal_to(socket, e));
            continue;
        };
        let pass = match proxy.logins.enter(peer) {
            Ok(p) => p,
            Err(why) => {
                proxy
                    .metrics
                    .login_failed(crate::metrics::LoginFailure::TooManyClients);
                tracing::info!(%peer, why, "refused connection");
                let e = ClientError::new(sqlstate::TOO_MANY_CONNECTIONS, why);
                tokio::spawn(send_fatal_to(socket, e));
                continue;
            }
        };
        tracing::trace!(%peer, "client connected");
        let accepted = Box::new(Accepted { socket, pass, slot });
        tokio::spawn(serve_client(accepted, proxy.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_clients_are_accepted_with_nodelay_and_their_addresses() {
        let listener = ClientListener::tcp(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        let ClientListener::Tcp(_, Some(at)) = &listener else {
            panic!("a TCP listener knows its address");
        };
        let at = *at;
        let client = tokio::net::TcpStream::connect(at).await.expect("connect");
        let (socket, ip) = listener.accept().await.expect("accept");
        let ClientSocket::Tcp(stream, peer, local) = socket else {
            panic!("a TCP client");
        };
        assert!(stream.nodelay().expect("nodelay"), "TCP_NODELAY is set");
        assert_eq!(peer, client.local_addr().expect("client addr"));
        assert_eq!(ip, peer.ip());
        assert_eq!(local, Some(at));
    }
}
