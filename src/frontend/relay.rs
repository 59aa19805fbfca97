//! The hot path: moves framed bytes between a client and its server link in both
//! directions at once. Bytes are forwarded from the read buffer as they are,
//! except the few messages pgtenant must rewrite (see `rewrite`), which go
//! through a small side buffer; large messages (COPY data, big rows) stream
//! through without being held whole.

use super::client::{shutting_down, Client, Listen};
use super::policy::reported;
use super::rewrite::{self, Ctx};
use super::tracker::Answered;
use crate::backend::LinkState;
use crate::protocol::frame::{frame_len, Flow, FrameError, FrameScanner};
use crate::protocol::tag::{backend as be, frontend as fe};
use crate::sql::SessionOp;
use bytes::{Buf, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What each relay buffer (client-to-server, server-to-client) starts with:
/// a typical request or result in one read.
pub const RELAY_BUF_SIZE: usize = 16 * 1024;

/// Client-to-server bytes. `buf[..scanned]` may be forwarded as is; once
/// something was rewritten, bytes go through `out` (in order) until it drains.
#[derive(Debug, Default)]
pub struct Upstream {
    pub buf: BytesMut,
    pub scanned: usize,
    pub scanner: FrameScanner,
    pub out: BytesMut,
    scratch: BytesMut,
    /// Bytes read from the client since the session last flushed its stats.
    pub received: u64,
    /// The server side is TLS: a write may leave bytes inside the TLS layer
    /// until flushed (plain TCP never does, and skips the step).
    pub flush_writes: bool,
    /// Written but not yet flushed out of the TLS layer.
    unflushed: bool,
}

impl Upstream {
    /// Nothing read and unforwarded, and no message half-way through.
    pub fn drained(&self) -> bool {
        self.scanned == 0 && self.out.is_empty() && self.scanner.at_boundary() && !self.unflushed
    }

    /// Nothing in it at all, read or to write: the client can park.
    pub fn at_rest(&self) -> bool {
        self.buf.is_empty() && self.scratch.is_empty() && self.drained()
    }

    /// Gives back the memory of buffers with nothing in them.
    fn trim(&mut self) {
        for b in [&mut self.buf, &mut self.out, &mut self.scratch] {
            if b.is_empty() {
                *b = BytesMut::new();
            }
        }
    }

    fn output(&self) -> &[u8] {
        if self.out.is_empty() {
            &self.buf[..self.scanned]
        } else {
            &self.out
        }
    }

    fn wrote(&mut self, n: usize) {
        if self.out.is_empty() {
            self.buf.advance(n);
            self.scanned -= n;
        } else {
            self.out.advance(n);
        }
        self.unflushed = self.flush_writes;
    }

    /// Moves forwardable bytes into `out` (keeps order once `out` is in use).
    fn spill(&mut self) {
        if self.scanned > 0 {
            self.out.extend_from_slice(&self.buf[..self.scanned]);
            self.buf.advance(self.scanned);
            self.scanned = 0;
        }
    }
}

/// Server-to-client bytes; `buf[..scanned]` may be forwarded.
#[derive(Debug, Default)]
pub struct Downstream {
    pub buf: BytesMut,
    pub scanned: usize,
    pub scanner: FrameScanner,
    /// Bytes written to the client since the session last flushed its stats.
    pub sent: u64,
    /// The client is on TLS (see `Upstream::flush_writes`).
    pub flush_writes: bool,
    unflushed: bool,
}

impl Downstream {
    /// Nothing read and unforwarded, not even part of a header.
    pub fn drained(&self) -> bool {
        self.buf.is_empty() && self.scanner.at_boundary()
    }

    fn trim(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Nothing in it at all, not even unflushed TLS bytes: the client can park.
    pub fn at_rest(&self) -> bool {
        self.drained() && !self.unflushed
    }

    fn wrote(&mut self, n: usize) {
        self.buf.advance(n);
        self.scanned -= n;
        self.sent += n as u64;
        self.unflushed = self.flush_writes;
    }
}

/// Both directions' buffers of an idle client: given back while it idles
/// (see `Roster::trim_idle`), taken again with its next request.
pub fn trim_buffers(up: &mut Upstream, down: &mut Downstream) {
    up.trim();
    down.trim();
}

/// Reserves both buffers' usual size again after [`trim_buffers`].
pub fn refill_buffers(up: &mut Upstream, down: &mut Downstream) {
    up.buf.reserve(RELAY_BUF_SIZE);
    down.buf.reserve(RELAY_BUF_SIZE);
}

/// Client messages pgtenant reads whole (small in practice; PostgreSQL holds
/// them whole too): those carrying statement names or SQL text, and the
/// small Execute and Sync.
fn client_peek(tag: u8) -> usize {
    match tag {
        fe::PARSE
        | fe::BIND
        | fe::DESCRIBE
        | fe::CLOSE
        | fe::QUERY
        | fe::FUNCTION_CALL
        | fe::EXECUTE
        | fe::SYNC => usize::MAX,
        _ => 0,
    }
}

/// Scans what the client sent, counting and rewriting. Returns true when the
/// client asked to terminate (its Terminate left unconsumed at `buf[scanned..]`).
pub fn scan_client(up: &mut Upstream, cx: &mut Ctx<'_>) -> Result<bool, FrameError> {
    loop {
        // Execute and Sync matter only when a statement with session
        // effects was bound, or a restore waits for the Sync.
        let watch_execute =
            cx.client.unnamed_portal.is_some() || !cx.client.named_portals.is_empty();
        let watch_sync = cx.client.restore_after_sync != crate::sql::Restore::Nothing
            || cx.client.unlisten_after_sync;
        let t = &mut *cx.t;
        let r = up
            .scanner
            .scan(&up.buf, up.scanned, client_peek, |tag, _| match tag {
                fe::PARSE
                | fe::BIND
                | fe::DESCRIBE
                | fe::CLOSE
                | fe::QUERY
                | fe::FUNCTION_CALL
                | fe::TERMINATE => Flow::StopBefore,
                fe::EXECUTE if watch_execute => Flow::StopBefore,
                fe::SYNC if watch_sync => Flow::StopBefore,
                _ => {
                    t.client_message(tag);
                    Flow::Continue
                }
            })?;
        up.scanned = r.end;
        if !up.out.is_empty() {
            up.spill();
        }
        if !r.stopped {
            return Ok(false);
        }
        let at = up.scanned;
        if up.buf[at] == fe::TERMINATE {
            return Ok(true);
        }
        let total = frame_len(&up.buf, at);
        let mut scratch = std::mem::take(&mut up.scratch);
        if rewrite::client_message(cx, &up.buf[at..at + total], &mut scratch) {
            up.spill();
            up.out.extend_from_slice(&scratch);
            up.buf.advance(total);
        } else if !up.out.is_empty() {
            up.out.extend_from_slice(&up.buf[at..at + total]);
            up.buf.advance(total);
        } else {
            up.scanned += total;
        }
        scratch.clear();
        up.scratch = scratch;
    }
}

/// Scans what the server sent: tracks ReadyForQuery and errors, drops replies
/// to pgtenant's own messages, follows ParameterStatus, and applies a
/// request's session changes once the server answered it.
fn scan_server(down: &mut Downstream, cx: &mut Ctx<'_>) -> Result<(), FrameError> {
    loop {
        let ours = cx.t.swallowing();
        let swallowing = ours.is_some();
        let t = &mut *cx.t;
        let peek = move |tag: u8| match tag {
            _ if swallowing => usize::MAX,
            be::PARAMETER_STATUS
            | be::PARSE_COMPLETE
            | be::CLOSE_COMPLETE
            | be::NOTIFICATION_RESPONSE => usize::MAX,
            be::READY_FOR_QUERY => 1,
            _ => 0,
        };
        let r = down
            .scanner
            .scan(&down.buf, down.scanned, peek, |tag, p| match tag {
                _ if swallowing => Flow::StopBefore,
                // Handled below when its request carries changes, or when a
                // request of pgtenant's own may follow (the next replies
                // are then swallowed: `swallowing` must be recomputed).
                be::READY_FOR_QUERY if t.changes_due() || t.ours_pending() => Flow::StopBefore,
                be::READY_FOR_QUERY => {
                    t.ready_for_query(p.first().copied().unwrap_or(b'I'));
                    Flow::Continue
                }
                be::ERROR_RESPONSE => {
                    t.errored = true;
                    Flow::Continue
                }
                be::COPY_IN_RESPONSE => {
                    t.copy_in_started();
                    Flow::Continue
                }
                be::PARSE_COMPLETE
                | be::CLOSE_COMPLETE
                | be::PARAMETER_STATUS
                | be::NOTIFICATION_RESPONSE => Flow::StopBefore,
                _ => Flow::Continue,
            })?;
        down.scanned = r.end;
        if !r.stopped {
            return Ok(());
        }
        let at = down.scanned;
        let tag = down.buf[at];
        let total = frame_len(&down.buf, at);
        let body = &down.buf[at + 5..at + total];
        let restoring = ours.is_some_and(|o| o.restore);
        let drop = match tag {
            be::PARAMETER_STATUS => {
                if let Some((k, v)) = crate::protocol::messages::parameter_status_fields(body) {
                    let key = k.to_ascii_lowercase();
                    if key == "standard_conforming_strings" && v == "off" {
                        // Turned off out of the guard's sight (dynamic SQL):
                        // pgtenant can no longer read this client's SQL.
                        tracing::warn!(
                            "a client turned standard_conforming_strings off; closing it"
                        );
                        cx.link.poisoned = true;
                        cx.t.prelude_failed = true;
                    }
                    if reported(&key) {
                        cx.link.params.insert(key.clone(), v.to_owned());
                        if !swallowing || restoring {
                            crate::backend::Settings::insert_shared(
                                &mut cx.client.params,
                                key,
                                v.to_owned(),
                            );
                        }
                    }
                }
                // A restore's reports reach the client: its settings changed.
                swallowing && !restoring
            }
            // Links never listen for clients (the hub does, per tenant): a
            // notification here is one no client may get (e.g. from a LISTEN
            // run out of sight, or between a LISTEN and pgtenant's UNLISTEN).
            be::NOTIFICATION_RESPONSE => {
                if !cx.t.ours_pending() {
                    // Not between a client's LISTEN and pgtenant's UNLISTEN:
                    // the link listens out of sight (dynamic SQL). Closed
                    // rather than pooled, so it never stalls the server's
                    // notification queue unread.
                    cx.link.poisoned = true;
                }
                true
            }
            be::READY_FOR_QUERY => {
                let status = body.first().copied().unwrap_or(b'I');
                if let Some(answered) = cx.t.ready_for_query(status) {
                    on_answered(cx.client, cx.link, answered);
                }
                swallowing
            }
            be::ERROR_RESPONSE if swallowing => {
                let f = crate::protocol::messages::parse_error_fields(body);
                if restoring {
                    // A restore fails only when the client's own RESET failed
                    // (then it changed nothing); a replayed SQL PREPARE when
                    // its tables changed. The client gets its own request's
                    // error; the link is closed when it comes back.
                    tracing::debug!(error = ?f, "pgtenant's restore or statement replay failed");
                    cx.link.poisoned = true;
                    cx.link.context_owner = None;
                } else {
                    tracing::warn!(error = ?f, "pgtenant's prelude (tenant context or settings) failed");
                    // Its settings are unknown now: never pool it again.
                    cx.link.poisoned = true;
                    cx.t.prelude_failed = true;
                }
                true
            }
            be::PARSE_COMPLETE | be::CLOSE_COMPLETE if !swallowing => cx.t.reply_is_ours(tag),
            _ => swallowing,
        };
        if cx.t.prelude_failed {
            // Nothing from here on may reach the client; what came before
            // (replies to its earlier requests) still does, ahead of the FATAL.
            down.buf.truncate(at);
            return Ok(());
        }
        if drop {
            down.buf.copy_within(at + total.., at);
            let len = down.buf.len() - total;
            down.buf.truncate(len);
        } else {
            down.scanned += total;
        }
        if cx.client.notify_barrier {
            // The relay puts the client's notifications before this
            // ReadyForQuery (the last message scanned).
            return Ok(());
        }
    }
}

/// A client request with session changes was answered: follow them, and
/// keep the link's record in step (the changes ran there).
fn on_answered(client: &mut super::client::ClientState, link: &mut LinkState, a: Answered) {
    let certain = client
        .settings
        .finish_request(&a.ops, a.before, a.after, a.errored);
    link.settings = client.settings.current.clone();
    if !certain {
        tracing::debug!(
            "a request's session changes can't be known exactly; the link will be reset"
        );
        link.dirty = true;
    }
    if a.errored && a.drops_statements {
        // It may not have dropped the statements pgtenant forgot.
        link.poisoned = true;
    }
    follow_sql_statements(client, link, &a);
    // Listening changes at commit (a rollback may also undo one).
    if a.after == b'I' && std::mem::take(&mut client.settings.listening_changed) {
        client.follow_listens = true;
    }
    if a.after == b'I'
        && !client.settings.listening.is_empty()
        && a.ops.iter().any(|op| matches!(op, SessionOp::Notified))
    {
        client.notify_barrier = true;
    }
}

/// SQL-level PREPARE / DEALLOCATE answered: both sides follow. They are not
/// transactional; after an error pgtenant can't tell which ran, so the link
/// is closed rather than pooled with statements it doesn't know of.
fn follow_sql_statements(
    client: &mut super::client::ClientState,
    link: &mut LinkState,
    a: &Answered,
) {
    let mut ops = a
        .ops
        .iter()
        .filter(|op| {
            matches!(
                op,
                SessionOp::SqlPrepare { .. } | SessionOp::SqlDeallocate(_)
            )
        })
        .peekable();
    if ops.peek().is_none() {
        return;
    }
    if a.errored {
        link.poisoned = true;
        return;
    }
    for op in ops {
        match op {
            SessionOp::SqlPrepare { name, text } => {
                let version = super::client::next_sql_version();
                client
                    .sql_prepared
                    .insert(name.clone(), (version, text.clone()));
                link.sql_prepared.insert(name.clone(), version);
            }
            SessionOp::SqlDeallocate(Some(name)) => {
                client.sql_prepared.remove(name);
                link.sql_prepared.remove(name);
            }
            SessionOp::SqlDeallocate(None) => {
                client.sql_prepared.clear();
                link.sql_prepared.clear();
            }
            _ => {}
        }
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
    /// The tenant context or the client's settings could not be set: nothing
    /// the server answered after it may reach the client (it ran without
    /// them, possibly in another client's state).
    ContextFailed,
    /// The client listens, and pgtenant's LISTEN connection could not start
    /// listening or was lost (or the client let too many notifications pile
    /// up): it can't get its notifications any more.
    ListenFailed,
    /// pgtenant is shutting down and the client was between transactions.
    Shutdown,
    /// The server owed an answer and sent nothing for `query_timeout`.
    ServerSilent,
}

enum Step {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
}

/// Pumps both directions until something needs the session's attention.
/// In transaction mode it returns as soon as the link is idle.
pub async fn relay<CR, CW, SR, SW>(
    (client_r, client_w): (&mut CR, &mut CW),
    client: &mut Client,
    (server_r, server_w): (&mut SR, &mut SW),
    link: &mut LinkState,
) -> RelayEnd
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let Client {
        up,
        down,
        t,
        state,
        listen,
        shutdown,
        server_silence,
        ..
    } = client;
    let mut silence = super::silence::SilenceWatch::new(*server_silence);
    t.reset();
    let release_when_idle = state.transaction_mode;
    let cx = &mut Ctx {
        client: state,
        link,
        t,
    };
    rewrite::prelude(cx, &mut up.out);
    let mut terminating = match scan_client(up, cx) {
        Ok(stop) => stop,
        Err(e) => return RelayEnd::ClientProtocol(e),
    };
    loop {
        if terminating && up.output().is_empty() && !up.unflushed {
            return RelayEnd::Terminate;
        }
        let up_has_output = !up.output().is_empty();
        let up_unflushed = up.unflushed;
        let down_unflushed = down.unflushed;
        // Between transactions with nothing in flight: notifications go
        // out, and a shutdown lets the client go (session mode, pinned).
        let between = cx.t.idle()
            && down.buf.is_empty()
            && down.scanner.at_boundary()
            && !down_unflushed
            && !up_has_output;
        let deliver = between && listen.waiting();
        let watch_shutdown = between && !terminating && shutdown.is_some();
        // Silence counts only while pgtenant is reading the server for an
        // answer it owes (not while a slow client holds its output back).
        let watch_silence =
            silence.is_on() && cx.t.server_owes_answer() && !down_unflushed && down.scanned == 0;
        silence.watch(watch_silence);
        // A TLS write flushes as a step of its own: cancel-safe in the
        // select (a dropped flush loses nothing), and never taken on TCP.
        let up_step = async {
            if up_unflushed {
                Step::Flushed(server_w.flush().await)
            } else if up_has_output {
                Step::Wrote(server_w.write(up.output()).await)
            } else {
                Step::Read(client_r.read_buf(&mut up.buf).await)
            }
        };
        let down_step = async {
            if down_unflushed {
                Step::Flushed(client_w.flush().await)
            } else if down.scanned > 0 {
                Step::Wrote(client_w.write(&down.buf[..down.scanned]).await)
            } else {
                Step::Read(server_r.read_buf(&mut down.buf).await)
            }
        };
        let up_enabled = up_has_output || up_unflushed || !terminating;
        tokio::select! {
            biased;
            step = down_step => match step {
                Step::Read(Ok(0)) => return RelayEnd::ServerClosed,
                Step::Read(Ok(_)) => {
                    silence.heard();
                    if let Some(end) = on_server_bytes(down, cx, listen).await {
                        return end;
                    }
                    // Not while part of the client's next message waits
                    // for the rest (unscanned in `up.buf`): the link would
                    // go back, and the session take one again at once for
                    // those bytes, and put a shared link in context again,
                    // once per round trip while the client is slow.
                    if release_when_idle
                        && cx.t.idle()
                        && down.scanner.at_boundary()
                        && down.scanned == down.buf.len()
                        && up.drained()
                        && up.buf.is_empty()
                    {
                        return RelayEnd::Release;
                    }
                }
                Step::Read(Err(e)) => return RelayEnd::ServerIo(e),
                Step::Wrote(Ok(0)) => return RelayEnd::ClientClosed,
                Step::Wrote(Ok(n)) => down.wrote(n),
                Step::Wrote(Err(e)) | Step::Flushed(Err(e)) => return RelayEnd::ClientIo(e),
                Step::Flushed(Ok(())) => down.unflushed = false,
            },
            step = up_step, if up_enabled => match step {
                Step::Read(Ok(0)) => return RelayEnd::ClientClosed,
                Step::Read(Ok(n)) => {
                    up.received += n as u64;
                    match scan_client(up, cx) {
                        Ok(stop) => terminating = stop,
                        Err(e) => return RelayEnd::ClientProtocol(e),
                    }
                }
                Step::Read(Err(e)) => return RelayEnd::ClientIo(e),
                Step::Wrote(Ok(0)) => return RelayEnd::ServerClosed,
                Step::Wrote(Ok(n)) => {
                    up.wrote(n);
                    silence.heard();
                }
                Step::Wrote(Err(e)) | Step::Flushed(Err(e)) => return RelayEnd::ServerIo(e),
                Step::Flushed(Ok(())) => up.unflushed = false,
            },
            _ = shutting_down(shutdown), if watch_shutdown => return RelayEnd::Shutdown,
            () = silence.silent(), if watch_silence => return RelayEnd::ServerSilent,
            note = listen.next(), if deliver => match note {
                Some(note) => {
                    down.buf.extend_from_slice(&note);
                    down.scanned = down.buf.len();
                }
                None => return RelayEnd::ListenFailed,
            },
        }
    }
}

/// Scans what the server sent and does what it calls for before any of it
/// reaches the client. `Some` ends the relay.
async fn on_server_bytes(
    down: &mut Downstream,
    cx: &mut Ctx<'_>,
    listen: &mut Listen,
) -> Option<RelayEnd> {
    loop {
        if let Err(e) = scan_server(down, cx) {
            return Some(RelayEnd::ServerProtocol(e));
        }
        // Nothing the server answers after a failed prelude may reach the
        // client: it ran without its session state (or tenant context).
        if cx.t.prelude_failed {
            return Some(RelayEnd::ContextFailed);
        }
        if !cx.t.ours_pending() {
            if let Some((slot, target)) = cx.client.cancel_after_prelude.take() {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
            }
        }
        // A LISTEN is done once the hub listens: the client's ReadyForQuery
        // (scanned, not yet written) waits for it.
        if cx.client.follow_listens {
            cx.client.follow_listens = false;
            let id = cx.client.id();
            if !listen.follow(&cx.client.settings.listening, id).await {
                return Some(RelayEnd::ListenFailed);
            }
        }
        if !cx.client.notify_barrier {
            return None;
        }
        // The scan stopped right after the ReadyForQuery of a request that
        // notified: the client's own notifications go before it; then the
        // scan goes on.
        cx.client.notify_barrier = false;
        let notes = listen.barrier().await;
        before_ready_for_query(down, &notes);
    }
}

/// Puts `notes` right before the ReadyForQuery that ends the scanned bytes.
fn before_ready_for_query(down: &mut Downstream, notes: &[crate::notify::Note]) {
    const RFQ_LEN: usize = 6;
    if notes.is_empty()
        || down.scanned < RFQ_LEN
        || down.buf[down.scanned - RFQ_LEN] != be::READY_FOR_QUERY
    {
        return;
    }
    let at = down.scanned - RFQ_LEN;
    let tail = down.buf.split_off(at);
    for n in notes {
        down.buf.extend_from_slice(n);
    }
    let added = down.buf.len() - at;
    down.buf.unsplit(tail);
    down.scanned += added;
}

/// Writes everything forwardable in `down` to `w` and flushes it out of a
/// TLS layer (used after a release).
pub async fn flush<W: AsyncWrite + Unpin>(w: &mut W, down: &mut Downstream) -> io::Result<()> {
    if down.scanned > 0 {
        w.write_all(&down.buf[..down.scanned]).await?;
        let n = down.scanned;
        down.wrote(n);
    }
    if down.unflushed {
        w.flush().await?;
        down.unflushed = false;
    }
    Ok(())
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
