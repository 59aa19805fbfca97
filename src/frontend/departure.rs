//! A client that goes away while it waits for a server link (it leaves the
//! queue and its quota) or in the middle of a query (the server's query is
//! cancelled, not run to the end for nobody).

use super::relay::Upstream;
use crate::pool::Lease;
use crate::protocol::frame::{no_peek, Flow};
use crate::protocol::tag::frontend as fe;
use crate::tls::ReadHalf;
use tokio::io::AsyncReadExt;

/// A client pipelining more than this while it waits for a server link is
/// no longer read until it has one (TCP pushes back).
pub(super) const WAITING_READ_LIMIT: usize = 64 * 1024;

/// Runs `work` (a checkout) while watching the client's socket: `None` if
/// the client went away first. Bytes it sends meanwhile join its request.
/// Polled after `work`, so a checkout that finds a link at once costs no
/// read.
pub(super) async fn until_gone<T>(
    work: impl std::future::Future<Output = T>,
    cr: &mut ReadHalf<'_>,
    up: &mut Upstream,
) -> Option<T> {
    let gone = async {
        while up.buf.len() < WAITING_READ_LIMIT {
            match cr.read_buf(&mut up.buf).await {
                // A client that said goodbye (Terminate) before closing
                // wants what it sent run, as PostgreSQL would: it waits.
                Ok(0) | Err(_) if said_goodbye(&up.buf) => break,
                Ok(0) | Err(_) => return,
                Ok(n) => up.received += n as u64,
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        biased;
        done = work => Some(done),
        () = gone => None,
    }
}

/// `buf` holds whole messages up to a Terminate.
pub(super) fn said_goodbye(buf: &[u8]) -> bool {
    let mut found = false;
    let _ = crate::protocol::frame::FrameScanner::new().scan(buf, 0, no_peek, |tag, _| {
        found = tag == fe::TERMINATE;
        if found {
            Flow::StopBefore
        } else {
            Flow::Continue
        }
    });
    found
}

/// How long a cancel request may take before the link is closed anyway.
pub(super) const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Cancels the query running on `lease`'s server backend, then closes the
/// link (in a task of its own): its transaction rolls back and the backend
/// is free at once.
pub(super) fn cancel_then_close(mut lease: Lease, pool: &crate::pool::TenantPool) {
    let t = pool.target();
    let (host, port, tls) = (t.host.clone(), t.port, t.tls.clone());
    tokio::spawn(async move {
        let conn = lease.conn();
        let (pid, secret) = (conn.state.pid, conn.secret);
        // Bounded: the network that stalled the link may stall this too.
        let cancel = crate::backend::send_cancel(&host, port, &tls, pid, secret);
        match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(pid, error = %e, "could not cancel a server query"),
            Err(_) => tracing::warn!(pid, "the server did not take a cancel request in time"),
        }
        drop(lease);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages;
    use bytes::BytesMut;

    #[test]
    fn a_goodbye_is_seen_only_after_whole_messages() {
        let mut buf = BytesMut::new();
        messages::query(&mut buf, "INSERT INTO t VALUES (1)");
        assert!(!said_goodbye(&buf));
        let mut with_x = buf.clone();
        with_x.extend_from_slice(&[fe::TERMINATE, 0, 0, 0, 4]);
        assert!(said_goodbye(&with_x));
        // A Terminate byte inside a message's body is not one.
        let mut inside = BytesMut::new();
        messages::query(&mut inside, "X");
        assert!(!said_goodbye(&inside[..inside.len() - 1]));
    }
}
