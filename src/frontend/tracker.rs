//! Where a client's conversation with its server link stands: how many
//! ReadyForQuery messages the server still owes, the transaction status, and
//! which replies belong to pgtenant's own injected messages (to be swallowed).

use std::collections::VecDeque;

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
    /// Leading replies, through this many ReadyForQuery, answer pgtenant's own
    /// prelude (session settings) and are dropped.
    pub swallow_rfq: u32,
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
}

impl Default for TxnTracker {
    fn default() -> Self {
        Self {
            pending: 0,
            unsynced: false,
            status: b'I',
            swallow_rfq: 0,
            prelude_failed: false,
            sent_epoch: 0,
            recv_epoch: 0,
            parses: VecDeque::new(),
            closes: VecDeque::new(),
            copy_in: false,
            syncs_after_execute: 0,
            last_command: 0,
        }
    }
}

impl TxnTracker {
    /// The link is between transactions with nothing in flight.
    pub fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced && !self.copy_in && self.status == b'I'
    }

    /// Counts a message the client sent (forwarded as is or renamed).
    pub fn client_message(&mut self, tag: u8) {
        match tag {
            b'Q' | b'F' => {
                self.pending += 1;
                self.sent_epoch += 1;
                self.last_command = tag;
            }
            b'S' if self.copy_in => {}
            b'S' => {
                self.pending += 1;
                self.sent_epoch += 1;
                self.unsynced = false;
                self.syncs_after_execute += 1;
            }
            b'c' | b'f' => {
                self.copy_in = false;
                // An Execute started this COPY: the Syncs sent with it were
                // swallowed, so the server waits for another before the
                // extended-protocol transaction ends.
                if self.last_command == b'E' {
                    self.unsynced = true;
                }
            }
            b'E' => {
                self.unsynced = true;
                self.syncs_after_execute = 0;
                self.last_command = b'E';
            }
            b'H' if self.copy_in => {}
            b'P' => {
                self.unsynced = true;
                self.parses.push_back(Sent {
                    epoch: self.sent_epoch,
                    ours: false,
                });
            }
            b'C' => {
                self.unsynced = true;
                self.closes.push_back(Sent {
                    epoch: self.sent_epoch,
                    ours: false,
                });
            }
            b'B' | b'D' | b'H' => self.unsynced = true,
            _ => {}
        }
    }

    /// The server sent CopyInResponse. If an Execute started the COPY, the
    /// Syncs the client sent after it are swallowed by the COPY: no
    /// ReadyForQuery will answer them.
    pub fn copy_in_started(&mut self) {
        if self.last_command == b'E' {
            let ignored = self.syncs_after_execute;
            self.pending = self.pending.saturating_sub(ignored);
            self.sent_epoch = self.sent_epoch.saturating_sub(u64::from(ignored));
            self.syncs_after_execute = 0;
        }
        self.copy_in = true;
    }

    /// pgtenant injected a Parse (`b'P'`) or Close (`b'C'`) ahead of a client message.
    pub fn injected(&mut self, tag: u8) {
        let sent = Sent {
            epoch: self.sent_epoch,
            ours: true,
        };
        match tag {
            b'P' => self.parses.push_back(sent),
            b'C' => self.closes.push_back(sent),
            _ => {}
        }
    }

    /// pgtenant injected a simple Query whose replies the client must not see.
    pub fn injected_query(&mut self) {
        self.pending += 1;
        self.sent_epoch += 1;
        self.swallow_rfq += 1;
    }

    /// A ReadyForQuery arrived. Parses/Closes of earlier sync groups that never
    /// got a reply were skipped by the server after an error: forget them.
    pub fn ready_for_query(&mut self, status: u8) {
        self.pending = self.pending.saturating_sub(1);
        self.status = status;
        self.recv_epoch += 1;
        let live = self.recv_epoch;
        while self.parses.front().is_some_and(|s| s.epoch < live) {
            self.parses.pop_front();
        }
        while self.closes.front().is_some_and(|s| s.epoch < live) {
            self.closes.pop_front();
        }
    }

    /// A ParseComplete (`b'1'`) or CloseComplete (`b'3'`) arrived: true if it
    /// answers an injected message and must be dropped.
    pub fn reply_is_ours(&mut self, tag: u8) -> bool {
        let queue = if tag == b'1' {
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
        t.ready_for_query(b'I');
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
        t.ready_for_query(b'I');
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
        t.ready_for_query(b'I');
        assert!(
            !t.reply_is_ours(b'1'),
            "the next group's reply is the client's"
        );
    }
}
