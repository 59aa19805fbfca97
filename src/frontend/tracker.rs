//! Where a client's conversation with its server link stands: how many
//! ReadyForQuery messages the server still owes, the transaction status,
//! which replies belong to pgtenant's own injected messages (to be
//! swallowed), and which requests carry session changes to apply when the
//! server answers them.

use crate::protocol::tag::{backend as be, frontend as fe};
use crate::sql::SessionOp;
use std::collections::VecDeque;

/// A request of pgtenant's own: its replies, through its ReadyForQuery, are
/// dropped.
#[derive(Debug, Clone, Copy)]
pub struct Ours {
    /// The sync point it ends at (see `sent_epoch`).
    epoch: u64,
    /// Put back what a client's RESET/DISCARD took, or replay its SQL-level
    /// prepared statements: a failure there is not fatal (the client gets
    /// its own request's error), and its ParameterStatus reach the client.
    pub restore: bool,
}

/// A client request with session changes, applied at its ReadyForQuery.
#[derive(Debug, Clone)]
struct Changes {
    epoch: u64,
    ops: Vec<SessionOp>,
    /// It drops server statements (DISCARD ALL, DEALLOCATE ALL): if it
    /// fails, pgtenant's list of the link's statements is wrong.
    drops_statements: bool,
}

/// What a client request did, handed over at its ReadyForQuery.
#[derive(Debug)]
pub struct Answered {
    pub ops: Vec<SessionOp>,
    pub before: u8,
    pub after: u8,
    pub errored: bool,
    pub drops_statements: bool,
}

/// One Parse or Close sent to the server: `epoch` is the number of
/// sync points (Sync, Query) sent before it; `ours` means pgtenant injected it
/// and its reply must not reach the client.
#[derive(Debug, Clone, Copy)]
struct Sent {
    epoch: u64,
    ours: bool,
}

#[derive(Debug, Clone)]
pub struct TxnTracker {
    /// ReadyForQuery messages the server still owes (one per Query, Sync, FunctionCall).
    pub pending: u32,
    /// Extended-protocol messages were sent after the last Sync.
    pub unsynced: bool,
    /// Status byte of the last ReadyForQuery: I, T or E.
    pub status: u8,
    /// pgtenant's own requests in flight, oldest first.
    ours: VecDeque<Ours>,
    /// Client requests with session changes in flight, oldest first.
    changes: VecDeque<Changes>,
    /// The server sent an ErrorResponse since the last ReadyForQuery.
    pub errored: bool,
    /// One of pgtenant's own prelude statements failed on the server.
    pub prelude_failed: bool,
    sent_epoch: u64,
    recv_epoch: u64,
    parses: VecDeque<Sent>,
    closes: VecDeque<Sent>,
    /// The server is in COPY FROM STDIN: it ignores Sync and Flush until the
    /// client's CopyDone/CopyFail (libpq and tokio-postgres send a Sync right
    /// after the Execute that starts a COPY, and another after CopyDone).
    copy_in: bool,
    /// Syncs sent since the last Execute, and whether the last command sent
    /// was an Execute (b'E') or a Query/FunctionCall.
    syncs_after_execute: u32,
    last_command: u8,
    /// The client's requests answered (ReadyForQuery of its own, not
    /// pgtenant's), and of those the ones that left the session idle: its
    /// queries and transactions, taken by the session when it flushes.
    pub queries: u64,
    pub transactions: u64,
    /// With metrics on: where request latencies go, and when the oldest
    /// unanswered client request of the current burst was sent.
    pub query_timer: Option<metrics::Histogram>,
    query_started: Option<std::time::Instant>,
}

impl Default for TxnTracker {
    fn default() -> Self {
        Self {
            pending: 0,
            unsynced: false,
            status: b'I',
            ours: VecDeque::new(),
            changes: VecDeque::new(),
            errored: false,
            prelude_failed: false,
            sent_epoch: 0,
            recv_epoch: 0,
            parses: VecDeque::new(),
            closes: VecDeque::new(),
            copy_in: false,
            syncs_after_execute: 0,
            last_command: 0,
            queries: 0,
            transactions: 0,
            query_timer: None,
            query_started: None,
        }
    }
}

impl TxnTracker {
    /// Ready for a new link, keeping its queues' memory.
    pub fn reset(&mut self) {
        let mut ours = std::mem::take(&mut self.ours);
        let mut changes = std::mem::take(&mut self.changes);
        let mut parses = std::mem::take(&mut self.parses);
        let mut closes = std::mem::take(&mut self.closes);
        ours.clear();
        changes.clear();
        parses.clear();
        closes.clear();
        *self = Self {
            ours,
            changes,
            parses,
            closes,
            queries: self.queries,
            transactions: self.transactions,
            query_timer: self.query_timer.take(),
            ..Self::default()
        };
    }

    /// The next replies answer a request of pgtenant's own.
    pub fn swallowing(&self) -> Option<Ours> {
        self.ours
            .front()
            .filter(|o| o.epoch == self.recv_epoch + 1)
            .copied()
    }

    /// Requests of pgtenant's own are in flight.
    pub fn ours_pending(&self) -> bool {
        !self.ours.is_empty()
    }

    /// The next ReadyForQuery answers a client request with session changes.
    pub fn changes_due(&self) -> bool {
        self.changes
            .front()
            .is_some_and(|c| c.epoch == self.recv_epoch + 1)
    }

    /// Client requests with session changes are in flight.
    pub fn changes_pending(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Session changes sent in the request now being sent (a Query just
    /// counted, or extended messages before their Sync).
    pub fn add_changes(&mut self, ops: &[SessionOp], drops_statements: bool, in_query: bool) {
        let epoch = if in_query {
            self.sent_epoch
        } else {
            self.sent_epoch + 1
        };
        match self.changes.back_mut() {
            Some(c) if c.epoch == epoch => {
                c.ops.extend_from_slice(ops);
                c.drops_statements |= drops_statements;
            }
            _ => self.changes.push_back(Changes {
                epoch,
                ops: ops.to_vec(),
                drops_statements,
            }),
        }
    }

    /// The link is between transactions with nothing in flight.
    pub fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced && !self.copy_in && self.status == b'I'
    }

    /// The server owes an answer to something sent: a query may be running
    /// (not merely a transaction left open between statements).
    pub fn awaiting_reply(&self) -> bool {
        self.pending > 0 || self.unsynced || self.copy_in
    }

    /// The server owes a ReadyForQuery and is not waiting on the client
    /// (COPY FROM STDIN, a portal suspended until the next Execute): its
    /// silence means it is stalled or busy, not that the client is.
    pub fn server_owes_answer(&self) -> bool {
        self.pending > 0 && !self.copy_in
    }

    /// Counts a message the client sent (forwarded as is or renamed).
    pub fn client_message(&mut self, tag: u8) {
        if self.query_timer.is_some()
            && self.query_started.is_none()
            && matches!(tag, fe::QUERY | fe::FUNCTION_CALL | fe::SYNC)
            && !self.copy_in
        {
            self.query_started = Some(std::time::Instant::now());
        }
        match tag {
            fe::QUERY | fe::FUNCTION_CALL => {
                self.pending += 1;
                self.sent_epoch += 1;
                self.last_command = tag;
            }
            fe::SYNC if self.copy_in => {}
            fe::SYNC => {
                self.pending += 1;
                self.sent_epoch += 1;
                self.unsynced = false;
                self.syncs_after_execute += 1;
            }
            fe::COPY_DONE | fe::COPY_FAIL => {
                self.copy_in = false;
                // An Execute started this COPY: the Syncs sent with it were
                // swallowed, so the server waits for another before the
                // extended-protocol transaction ends.
                if self.last_command == fe::EXECUTE {
                    self.unsynced = true;
                }
            }
            fe::EXECUTE => {
                self.unsynced = true;
                self.syncs_after_execute = 0;
                self.last_command = fe::EXECUTE;
            }
            fe::FLUSH if self.copy_in => {}
            fe::PARSE => {
                self.unsynced = true;
                self.parses.push_back(Sent {
                    epoch: self.sent_epoch,
                    ours: false,
                });
            }
            fe::CLOSE => {
                self.unsynced = true;
                self.closes.push_back(Sent {
                    epoch: self.sent_epoch,
                    ours: false,
                });
            }
            fe::BIND | fe::DESCRIBE | fe::FLUSH => self.unsynced = true,
            _ => {}
        }
    }

    /// The server sent CopyInResponse. If an Execute started the COPY, the
    /// Syncs the client sent after it are swallowed by the COPY: no
    /// ReadyForQuery will answer them.
    pub fn copy_in_started(&mut self) {
        if self.last_command == fe::EXECUTE {
            let ignored = self.syncs_after_execute;
            self.pending = self.pending.saturating_sub(ignored);
            self.sent_epoch = self.sent_epoch.saturating_sub(u64::from(ignored));
            // Changes recorded for those swallowed Syncs belong to the Sync
            // that will end the COPY.
            for c in self.changes.iter_mut() {
                c.epoch = c.epoch.min(self.sent_epoch + 1);
            }
            self.syncs_after_execute = 0;
        }
        self.copy_in = true;
    }

    /// pgtenant injected a Parse (`fe::PARSE`) or Close (`fe::CLOSE`) ahead of a client message.
    pub fn injected(&mut self, tag: u8) {
        let sent = Sent {
            epoch: self.sent_epoch,
            ours: true,
        };
        match tag {
            fe::PARSE => self.parses.push_back(sent),
            fe::CLOSE => self.closes.push_back(sent),
            _ => {}
        }
    }

    /// pgtenant injected a request (a simple Query, or extended messages
    /// through a Sync) whose replies the client must not see.
    pub fn injected_query(&mut self, restore: bool) {
        self.pending += 1;
        self.sent_epoch += 1;
        self.ours.push_back(Ours {
            epoch: self.sent_epoch,
            restore,
        });
    }

    /// A ReadyForQuery arrived. Parses/Closes of earlier sync groups that never
    /// got a reply were skipped by the server after an error: forget them.
    /// Returns the session changes of the request it answers, if any.
    pub fn ready_for_query(&mut self, status: u8) -> Option<Answered> {
        let before = self.status;
        let errored = std::mem::take(&mut self.errored);
        self.pending = self.pending.saturating_sub(1);
        self.status = status;
        self.recv_epoch += 1;
        if self
            .ours
            .front()
            .is_some_and(|o| o.epoch == self.recv_epoch)
        {
            self.ours.pop_front();
        } else {
            self.queries += 1;
            self.transactions += u64::from(status == b'I');
            if self.pending == 0 {
                if let (Some(h), Some(t)) = (&self.query_timer, self.query_started.take()) {
                    h.record(t.elapsed().as_secs_f64());
                }
            }
        }
        let live = self.recv_epoch;
        while self.parses.front().is_some_and(|s| s.epoch < live) {
            self.parses.pop_front();
        }
        while self.closes.front().is_some_and(|s| s.epoch < live) {
            self.closes.pop_front();
        }
        while self.changes.front().is_some_and(|c| c.epoch < live) {
            self.changes.pop_front();
        }
        match self.changes.front() {
            Some(c) if c.epoch == live => self.changes.pop_front().map(|c| Answered {
                ops: c.ops,
                before,
                after: status,
                errored,
                drops_statements: c.drops_statements,
            }),
            _ => None,
        }
    }

    /// A ParseComplete (`b'1'`) or CloseComplete (`b'3'`) arrived: true if it
    /// answers an injected message and must be dropped.
    pub fn reply_is_ours(&mut self, tag: u8) -> bool {
        let queue = if tag == be::PARSE_COMPLETE {
            &mut self.parses
        } else {
            &mut self.closes
        };
        queue.pop_front().is_some_and(|s| s.ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_replies_are_matched_in_order() {
        let mut t = TxnTracker::default();
        t.injected(b'P'); // replay of a statement
        t.client_message(b'B');
        t.client_message(b'P'); // client's own
        t.client_message(b'S');
        assert!(t.reply_is_ours(b'1'));
        assert!(!t.reply_is_ours(b'1'));
        assert!(t.ready_for_query(b'I').is_none());
        assert!(t.idle());
    }

    #[test]
    fn changes_are_handed_over_with_their_answer() {
        let mut t = TxnTracker::default();
        t.injected_query(false); // prelude
        t.client_message(b'Q');
        t.add_changes(&[SessionOp::Begin], false, true);
        t.client_message(b'P');
        t.client_message(b'B');
        t.client_message(b'E');
        t.add_changes(&[SessionOp::Rollback], true, false);
        t.client_message(b'S');
        assert!(t.swallowing().is_some());
        assert!(t.ready_for_query(b'I').is_none());
        assert!(t.swallowing().is_none());
        assert!(t.changes_due());
        let a = t.ready_for_query(b'T').expect("the Query's changes");
        assert_eq!(
            (a.ops, a.before, a.after),
            (vec![SessionOp::Begin], b'I', b'T')
        );
        t.errored = true;
        let b = t.ready_for_query(b'I').expect("the Sync's changes");
        assert!(b.errored && b.drops_statements && b.before == b'T');
        assert!(t.idle());
    }

    #[test]
    fn extended_copy_in_owes_one_ready_for_query() {
        let mut t = TxnTracker::default();
        for tag in [b'B', b'E', b'S'] {
            t.client_message(tag);
        }
        t.copy_in_started();
        assert!(!t.idle(), "mid-COPY is never idle");
        for tag in [b'd', b'd', b'c', b'S'] {
            t.client_message(tag);
        }
        assert_eq!(t.pending, 1);
        assert!(t.ready_for_query(b'I').is_none());
        assert!(t.idle());
    }

    #[test]
    fn replies_skipped_after_an_error_are_forgotten() {
        let mut t = TxnTracker::default();
        t.client_message(b'P'); // fails: server skips the rest until Sync
        t.injected(b'P');
        t.client_message(b'S');
        t.client_message(b'P'); // next group
        t.client_message(b'S');
        // No ParseComplete for the first group: the error, then ReadyForQuery.
        assert!(t.ready_for_query(b'I').is_none());
        assert!(
            !t.reply_is_ours(b'1'),
            "the next group's reply is the client's"
        );
    }
}
