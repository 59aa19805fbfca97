//! The hot path: moves framed bytes between a client and its server link in both
//! directions at once, without decoding or re-encoding, and tracks just enough
//! (expected ReadyForQuery count, transaction status) to know when the link may
//! go back to the pool. Buffers are bounded; large messages stream through.

use crate::protocol::frame::{no_peek, server_peek, Flow, FrameError, FrameScanner};
use bytes::{Buf, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Stop reading a side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 64 * 1024;

/// One direction's bytes: `buf[..scanned]` may be forwarded, the rest is an
/// incomplete header waiting for more input.
#[derive(Debug, Default)]
pub struct Direction {
    pub buf: BytesMut,
    pub scanned: usize,
    pub scanner: FrameScanner,
}

impl Direction {
    pub fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(16 * 1024),
            scanned: 0,
            scanner: FrameScanner::new(),
        }
    }

    /// Nothing read and unforwarded, and no message half-way through.
    pub fn drained(&self) -> bool {
        self.scanned == 0 && self.scanner.at_boundary()
    }

    fn consumed(&mut self, n: usize) {
        self.buf.advance(n);
        self.scanned -= n;
    }
}

/// Protocol position of a client's conversation with its server link.
#[derive(Debug, Clone)]
pub struct TxnTracker {
    /// ReadyForQuery messages the server still owes (one per Query, Sync, FunctionCall).
    pub pending: u32,
    /// Extended-protocol messages were sent after the last Sync.
    pub unsynced: bool,
    /// Status byte of the last ReadyForQuery: I, T or E.
    pub status: u8,
}

impl Default for TxnTracker {
    fn default() -> Self {
        Self {
            pending: 0,
            unsynced: false,
            status: b'I',
        }
    }
}

impl TxnTracker {
    /// The link is between transactions with nothing in flight.
    pub fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced && self.status == b'I'
    }

    fn client_message(&mut self, tag: u8) -> Flow {
        match tag {
            b'Q' | b'F' => self.pending += 1,
            b'S' => {
                self.pending += 1;
                self.unsynced = false;
            }
            b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => self.unsynced = true,
            b'X' => return Flow::StopBefore,
            _ => {}
        }
        Flow::Continue
    }

    fn server_message(&mut self, tag: u8, peek: &[u8]) -> Flow {
        if tag == b'Z' {
            self.pending = self.pending.saturating_sub(1);
            self.status = peek.first().copied().unwrap_or(b'I');
        }
        Flow::Continue
    }
}

/// Why the relay returned.
#[derive(Debug)]
pub enum RelayEnd {
    /// Transaction mode: the link is idle and may go back to the pool.
    Release,
    /// The client sent Terminate (left unconsumed at the front of `up`).
    Terminate,
    ClientClosed,
    ServerClosed,
    ClientProtocol(FrameError),
    ServerProtocol(FrameError),
    ClientIo(io::Error),
    ServerIo(io::Error),
}

/// Scans what the client sent; returns true when it asked to terminate.
pub fn scan_client(up: &mut Direction, t: &mut TxnTracker) -> Result<bool, FrameError> {
    let r = up
        .scanner
        .scan(&up.buf, up.scanned, no_peek, |tag, _| t.client_message(tag))?;
    up.scanned = r.end;
    Ok(r.stopped)
}

fn scan_server(down: &mut Direction, t: &mut TxnTracker) -> Result<(), FrameError> {
    let r = down
        .scanner
        .scan(&down.buf, down.scanned, server_peek, |tag, peek| {
            t.server_message(tag, peek)
        })?;
    down.scanned = r.end;
    Ok(())
}

enum Step {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
}

/// Pumps both directions until something needs the session's attention.
/// `release_when_idle` is transaction pooling: return as soon as the link is idle.
#[allow(clippy::too_many_arguments)]
pub async fn relay<CR, CW, SR, SW>(
    client_r: &mut CR,
    client_w: &mut CW,
    server_r: &mut SR,
    server_w: &mut SW,
    up: &mut Direction,
    down: &mut Direction,
    t: &mut TxnTracker,
    release_when_idle: bool,
) -> RelayEnd
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    match scan_client(up, t) {
        Ok(true) if up.scanned == 0 => return RelayEnd::Terminate,
        Ok(_) => {}
        Err(e) => return RelayEnd::ClientProtocol(e),
    }
    let mut terminating = false;
    loop {
        let up_enabled = up.scanned > 0 || (!terminating && up.buf.len() < HIGH_WATER);
        let down_enabled = down.scanned > 0 || down.buf.len() < HIGH_WATER;
        let up_step = async {
            if up.scanned > 0 {
                Step::Wrote(server_w.write(&up.buf[..up.scanned]).await)
            } else {
                Step::Read(client_r.read_buf(&mut up.buf).await)
            }
        };
        let down_step = async {
            if down.scanned > 0 {
                Step::Wrote(client_w.write(&down.buf[..down.scanned]).await)
            } else {
                Step::Read(server_r.read_buf(&mut down.buf).await)
            }
        };
        tokio::select! {
            biased;
            step = down_step, if down_enabled => match step {
                Step::Read(Ok(0)) => return RelayEnd::ServerClosed,
                Step::Read(Ok(_)) => {
                    if let Err(e) = scan_server(down, t) {
                        return RelayEnd::ServerProtocol(e);
                    }
                    if release_when_idle
                        && t.idle()
                        && down.scanner.at_boundary()
                        && down.scanned == down.buf.len()
                        && up.drained()
                    {
                        return RelayEnd::Release;
                    }
                }
                Step::Read(Err(e)) => return RelayEnd::ServerIo(e),
                Step::Wrote(Ok(0)) => return RelayEnd::ClientClosed,
                Step::Wrote(Ok(n)) => down.consumed(n),
                Step::Wrote(Err(e)) => return RelayEnd::ClientIo(e),
            },
            step = up_step, if up_enabled => match step {
                Step::Read(Ok(0)) => return RelayEnd::ClientClosed,
                Step::Read(Ok(_)) => match scan_client(up, t) {
                    Ok(stop) => terminating = stop,
                    Err(e) => return RelayEnd::ClientProtocol(e),
                },
                Step::Read(Err(e)) => return RelayEnd::ClientIo(e),
                Step::Wrote(Ok(0)) => return RelayEnd::ServerClosed,
                Step::Wrote(Ok(n)) => up.consumed(n),
                Step::Wrote(Err(e)) => return RelayEnd::ServerIo(e),
            },
        }
        if terminating && up.scanned == 0 {
            return RelayEnd::Terminate;
        }
    }
}

/// Writes everything forwardable in `dir` to `w` (used after a release).
pub async fn flush<W: AsyncWrite + Unpin>(w: &mut W, dir: &mut Direction) -> io::Result<()> {
    if dir.scanned > 0 {
        w.write_all(&dir.buf[..dir.scanned]).await?;
        let n = dir.scanned;
        dir.consumed(n);
    }
    Ok(())
}
