//! Accepts client connections and starts one session task per client.

use super::handshake::send_fatal;
use super::session::serve_client;
use crate::app::{wait_shutdown, Proxy};
use crate::error::ClientError;
use crate::protocol::sqlstate;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Accepts until shutdown. Over `max_client_conn`, a client gets a FATAL
/// "too many clients" instead of a session.
pub async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>) {
    let mut shutdown = proxy.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = wait_shutdown(&mut shutdown) => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = proxy.try_client_slot() else {
            proxy
                .metrics
                .login_failed(crate::metrics::LoginFailure::TooManyClients);
            let e = ClientError::new(
                sqlstate::TOO_MANY_CONNECTIONS,
                "too many clients for pgtenant (max_client_conn)",
            );
            tokio::spawn(async move { send_fatal(&mut stream, &e).await });
            continue;
        };
        let pass = match proxy.logins.enter(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                proxy
                    .metrics
                    .login_failed(crate::metrics::LoginFailure::TooManyClients);
                tracing::info!(%peer, why, "refused connection");
                let e = ClientError::new(sqlstate::TOO_MANY_CONNECTIONS, why);
                tokio::spawn(async move { send_fatal(&mut stream, &e).await });
                continue;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            tracing::trace!(%peer, "client connected");
            serve_client(stream, proxy, pass).await;
            drop(slot);
        });
    }
}
