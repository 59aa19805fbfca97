//! A client's own session settings under transaction pooling: every setting
//! it changed that the server does not report (those follow ParameterStatus),
//! kept with the statement that re-applies it, and the channels it listens
//! on; both undone with the transaction or savepoint that changed them, as
//! PostgreSQL does (a LISTEN takes effect at commit).
//!
//! Changes are applied when the server answers the request that made them
//! (at its ReadyForQuery), so a failed `SET` never counts. Pure bookkeeping.

pub use crate::backend::Overrides;
pub use crate::sql::SessionOp;

/// The channels a client listens on (as PostgreSQL names them).
pub type Listening = std::collections::BTreeSet<String>;

/// What a rollback puts back.
#[derive(Debug, Clone)]
struct Snapshot {
    settings: Overrides,
    listening: Listening,
}

#[derive(Debug, Clone)]
struct SavedPoint {
    name: String,
    snapshot: Snapshot,
    /// Created in a request that failed: it may not exist on the server.
    doubtful: bool,
}

/// The client's transaction as far as its settings are concerned.
#[derive(Debug, Clone, Default)]
struct Txn {
    open: bool,
    /// The transaction failed: COMMIT rolls it back.
    failed: bool,
    /// State before the transaction's first change (taken lazily).
    start: Option<Snapshot>,
    savepoints: Vec<SavedPoint>,
}

/// A client's settings beyond the reported ones.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// Values from the startup packet: what RESET and DISCARD ALL go back to.
    pub startup: Overrides,
    pub current: Overrides,
    pub listening: Listening,
    /// `listening` changed since pgtenant last made its hub follow it.
    pub listening_changed: bool,
    txn: Txn,
}

impl ClientSettings {
    pub fn new(startup: Overrides) -> Self {
        Self {
            current: startup.clone(),
            startup,
            listening: Listening::new(),
            listening_changed: false,
            txn: Txn::default(),
        }
    }

    /// Between transactions with nothing but its settings to keep: no
    /// channel listened on or about to be, no transaction state.
    pub fn at_rest(&self) -> bool {
        let Self {
            startup: _,
            current: _,
            listening,
            listening_changed,
            txn:
                Txn {
                    open,
                    failed,
                    start,
                    savepoints,
                },
        } = self;
        listening.is_empty()
            && !listening_changed
            && !open
            && !failed
            && start.is_none()
            && savepoints.is_empty()
    }

    /// The settings of a client at rest ([`ClientSettings::at_rest`]):
    /// what it started with and what it has now.
    pub fn into_resting(self) -> (Overrides, Overrides) {
        (self.startup, self.current)
    }

    /// A client at rest's settings again, from [`ClientSettings::into_resting`].
    pub fn resumed(startup: Overrides, current: Overrides) -> Self {
        Self {
            startup,
            current,
            ..Self::default()
        }
    }

    /// Forgets the settings `guard` protects, as a login under it would
    /// never have taken them (a client following its tenant into context
    /// isolation: its `search_path` is the context's now).
    pub fn drop_protected(&mut self, guard: crate::sql::parsed::Guard) {
        for overrides in [&mut self.startup, &mut self.current] {
            let names: Vec<String> = overrides
                .iter()
                .map(|(name, _)| name.clone())
                .filter(|name| crate::sql::parsed::protected(name, guard))
                .collect();
            for name in names {
                overrides.remove(&name);
            }
        }
    }

    /// A change in an open transaction may have to be undone: transaction
    /// control must be watched (it is otherwise ignored, for speed).
    pub fn watching_transaction(&self) -> bool {
        self.txn.start.is_some() || !self.txn.savepoints.is_empty()
    }

    /// Applies the changes of one request (a Query, or extended messages up
    /// to their Sync) once the server answered it: `before` and `after` are
    /// the transaction status bytes around it, `errored` whether it raised an
    /// error. Returns false when the outcome can't be known exactly (then the
    /// server connection must be reset before anyone else uses it).
    pub fn finish_request(
        &mut self,
        ops: &[SessionOp],
        before: u8,
        after: u8,
        errored: bool,
    ) -> bool {
        self.txn.open = before != b'I';
        self.txn.failed = before == b'E';
        let mut certain = true;
        match (errored, after) {
            (false, _) => ops
                .iter()
                .for_each(|op| self.apply(op, false, &mut certain)),
            // The transaction failed part-way: what ran before the error stays
            // until the rollback that must follow, which restores a snapshot.
            // Which ops ran is unknown (a RELEASE after the error did not):
            // the link is reset before anyone else uses it.
            (true, b'E') => {
                ops.iter().for_each(|op| self.apply(op, true, &mut certain));
                self.txn.failed = true;
                // BEGIN/COMMIT/ROLLBACK alone change no setting.
                certain = ops.iter().all(|op| {
                    matches!(
                        op,
                        SessionOp::Begin
                            | SessionOp::Commit
                            | SessionOp::Rollback
                            | SessionOp::Notified
                    )
                });
            }
            // An implicit transaction rolled back whole: nothing happened.
            (true, b'I') if before == b'I' && !ops.iter().any(SessionOp::controls_transaction) => {}
            (true, _) => {
                certain = false;
                self.rollback();
            }
        }
        // The server's status is the truth about the transaction.
        match after {
            b'I' if self.txn.open => {
                // Ended in a way pgtenant did not see (e.g. COMMIT in a procedure).
                certain = false;
                self.txn = Txn::default();
            }
            b'I' => self.txn = Txn::default(),
            _ if !self.txn.open => {
                self.txn = Txn {
                    open: true,
                    failed: after == b'E',
                    ..Txn::default()
                }
            }
            _ => {}
        }
        certain
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            settings: self.current.clone(),
            listening: self.listening.clone(),
        }
    }

    fn restore(&mut self, to: &Snapshot) {
        self.current = to.settings.clone();
        if self.listening != to.listening {
            self.listening = to.listening.clone();
            self.listening_changed = true;
        }
    }

    fn changing(&mut self) {
        if self.txn.open && self.txn.start.is_none() {
            self.txn.start = Some(self.snapshot());
        }
    }

    fn apply(&mut self, op: &SessionOp, in_failed_request: bool, certain: &mut bool) {
        match op {
            SessionOp::Set { name, replay } => {
                self.changing();
                self.current.set(name, replay.clone());
            }
            SessionOp::Reset(name) => {
                self.changing();
                match self.startup.get(name).cloned() {
                    Some(v) => self.current.set(name, v),
                    None => self.current.remove(name),
                }
            }
            SessionOp::ResetAll => {
                self.changing();
                self.current = self.startup.clone();
            }
            SessionOp::Begin => {
                if !self.txn.open {
                    self.txn = Txn {
                        open: true,
                        ..Txn::default()
                    };
                }
            }
            SessionOp::Commit if self.txn.failed => self.rollback(),
            SessionOp::Commit => self.txn = Txn::default(),
            SessionOp::Rollback => self.rollback(),
            SessionOp::Savepoint(name) if self.txn.open => {
                let snapshot = self.snapshot();
                self.txn.savepoints.push(SavedPoint {
                    name: name.clone(),
                    snapshot,
                    doubtful: in_failed_request,
                });
            }
            SessionOp::Savepoint(_) => {}
            SessionOp::Release(name) => {
                if let Some(i) = self.txn.savepoints.iter().rposition(|s| s.name == *name) {
                    self.txn.savepoints.truncate(i);
                }
            }
            SessionOp::RollbackTo(name) => {
                self.txn.failed = false;
                match self.txn.savepoints.iter().rposition(|s| s.name == *name) {
                    Some(i) => {
                        let point = self.txn.savepoints[i].clone();
                        *certain &= !point.doubtful;
                        self.restore(&point.snapshot);
                        self.txn.savepoints.truncate(i + 1);
                    }
                    // Made before pgtenant watched this transaction, i.e.
                    // before its first change: back to the start.
                    None => {
                        if let Some(start) = self.txn.start.clone() {
                            self.restore(&start);
                        }
                    }
                }
            }
            SessionOp::Listen(channel) => {
                self.changing();
                self.listening_changed |= self.listening.insert(channel.clone());
            }
            SessionOp::Unlisten(Some(channel)) => {
                self.changing();
                self.listening_changed |= self.listening.remove(channel);
            }
            SessionOp::Unlisten(None) => {
                self.changing();
                self.listening_changed |= !self.listening.is_empty();
                self.listening.clear();
            }
            // Prepared statements are not settings (and not transactional).
            SessionOp::SqlPrepare { .. } | SessionOp::SqlDeallocate(_) | SessionOp::Notified => {}
        }
    }

    fn rollback(&mut self) {
        if let Some(start) = self.txn.start.take() {
            self.restore(&start);
        }
        self.txn = Txn::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, v: &str) -> SessionOp {
        SessionOp::Set {
            name: name.into(),
            replay: format!("SET {name} = {v}").into(),
        }
    }

    fn value(s: &ClientSettings, name: &str) -> Option<String> {
        s.current.get(name).map(|r| r.to_string())
    }

    #[test]
    fn autocommit_set_and_reset() {
        let mut startup = Overrides::default();
        startup.set("extra_float_digits", "SET extra_float_digits = 3".into());
        let mut s = ClientSettings::new(startup);
        assert!(s.finish_request(&[set("work_mem", "'64MB'")], b'I', b'I', false));
        assert_eq!(
            value(&s, "work_mem").as_deref(),
            Some("SET work_mem = '64MB'")
        );
        assert!(s.finish_request(&[set("extra_float_digits", "1")], b'I', b'I', false));
        assert!(s.finish_request(
            &[SessionOp::Reset("extra_float_digits".into())],
            b'I',
            b'I',
            false
        ));
        assert_eq!(
            value(&s, "extra_float_digits").as_deref(),
            Some("SET extra_float_digits = 3")
        );
        assert!(s.finish_request(&[SessionOp::ResetAll], b'I', b'I', false));
        assert!(s.current.same_as(&s.startup));
        assert!(!s.current.same_as(&Overrides::default()));
    }

    #[test]
    fn a_failed_set_changes_nothing() {
        let mut s = ClientSettings::default();
        assert!(s.finish_request(&[set("work_mem", "'bogus'")], b'I', b'I', true));
        assert_eq!(value(&s, "work_mem"), None);
    }

    #[test]
    fn rollback_undoes_and_commit_keeps() {
        let mut s = ClientSettings::default();
        // BEGIN sent alone: not watched, the status says a transaction is open.
        assert!(s.finish_request(&[], b'I', b'T', false));
        assert!(s.finish_request(&[set("work_mem", "'64MB'")], b'T', b'T', false));
        assert!(s.watching_transaction());
        assert!(s.finish_request(&[SessionOp::Rollback], b'T', b'I', false));
        assert_eq!(value(&s, "work_mem"), None);
        assert!(!s.watching_transaction());
        // In one string: BEGIN; SET; COMMIT.
        let ops = [
            SessionOp::Begin,
            set("work_mem", "'8MB'"),
            SessionOp::Commit,
        ];
        assert!(s.finish_request(&ops, b'I', b'I', false));
        assert_eq!(
            value(&s, "work_mem").as_deref(),
            Some("SET work_mem = '8MB'")
        );
    }

    #[test]
    fn savepoints_undo_what_came_after_them() {
        let mut s = ClientSettings::default();
        let ops = [
            SessionOp::Begin,
            set("a", "1"),
            SessionOp::Savepoint("s".into()),
            set("a", "2"),
            set("b", "2"),
            SessionOp::RollbackTo("s".into()),
        ];
        assert!(s.finish_request(&ops, b'I', b'T', false));
        assert_eq!(value(&s, "a").as_deref(), Some("SET a = 1"));
        assert_eq!(value(&s, "b"), None);
        assert!(s.finish_request(&[SessionOp::Commit], b'T', b'I', false));
        assert_eq!(value(&s, "a").as_deref(), Some("SET a = 1"));
    }

    #[test]
    fn a_failed_transaction_commits_nothing() {
        let mut s = ClientSettings::default();
        assert!(s.finish_request(&[SessionOp::Begin, set("a", "1")], b'I', b'T', false));
        // An error later in the transaction; then COMMIT, which rolls back.
        assert!(s.finish_request(&[], b'T', b'E', true));
        assert!(s.finish_request(&[SessionOp::Commit], b'E', b'I', false));
        assert_eq!(value(&s, "a"), None);
    }

    #[test]
    fn rollback_to_a_savepoint_made_before_the_error_keeps_earlier_changes() {
        let mut s = ClientSettings::default();
        let ops = [
            SessionOp::Begin,
            set("a", "1"),
            SessionOp::Savepoint("s".into()),
        ];
        assert!(s.finish_request(&ops, b'I', b'T', false));
        // Which of a failed request's ops ran is unknown: reported.
        assert!(!s.finish_request(&[set("a", "2")], b'T', b'E', true));
        assert!(s.finish_request(&[SessionOp::RollbackTo("s".into())], b'E', b'T', false));
        assert!(s.finish_request(&[SessionOp::Commit], b'T', b'I', false));
        assert_eq!(value(&s, "a").as_deref(), Some("SET a = 1"));
    }

    #[test]
    fn unknowable_outcomes_are_reported() {
        let mut s = ClientSettings::default();
        // A multi-statement string that committed part-way and then failed.
        let ops = [
            SessionOp::Begin,
            set("a", "1"),
            SessionOp::Commit,
            set("b", "1"),
        ];
        assert!(!s.finish_request(&ops, b'I', b'I', true));
        // A transaction ended out of sight.
        assert!(s.finish_request(&[set("c", "1")], b'T', b'T', false));
        assert!(!s.finish_request(&[], b'T', b'I', false));
        assert_eq!(value(&s, "c").as_deref(), Some("SET c = 1"));
    }

    #[test]
    fn overrides_compare_by_content_in_any_order() {
        let mut x = Overrides::default();
        let mut y = Overrides::default();
        x.set("a", "1".into());
        x.set("b", "2".into());
        y.set("b", "2".into());
        y.set("a", "0".into());
        assert!(!x.same_as(&y));
        y.set("a", "1".into());
        assert!(x.same_as(&y));
        y.remove("b");
        assert!(!x.same_as(&y));
    }

    #[test]
    fn listens_take_effect_at_commit_and_roll_back() {
        let mut s = ClientSettings::default();
        let listen = |c: &str| SessionOp::Listen(c.into());
        let listening = |s: &ClientSettings| s.listening.iter().cloned().collect::<Vec<_>>();
        assert!(s.finish_request(&[listen("jobs")], b'I', b'I', false));
        assert_eq!(listening(&s), vec!["jobs"]);
        // BEGIN; LISTEN mail; ROLLBACK: nothing.
        let ops = [SessionOp::Begin, listen("mail"), SessionOp::Rollback];
        assert!(s.finish_request(&ops, b'I', b'I', false));
        assert_eq!(listening(&s), vec!["jobs"]);
        // A failed implicit transaction: nothing.
        assert!(s.finish_request(&[listen("mail")], b'I', b'I', true));
        assert_eq!(listening(&s), vec!["jobs"]);
        // Savepoints: the inner UNLISTEN * is rolled back, the LISTEN kept.
        let ops = [
            SessionOp::Begin,
            listen("mail"),
            SessionOp::Savepoint("s".into()),
            SessionOp::Unlisten(None),
            SessionOp::RollbackTo("s".into()),
            SessionOp::Commit,
        ];
        assert!(s.finish_request(&ops, b'I', b'I', false));
        assert_eq!(listening(&s), vec!["jobs", "mail"]);
        assert!(s.finish_request(
            &[SessionOp::Unlisten(Some("jobs".into()))],
            b'I',
            b'I',
            false
        ));
        assert_eq!(listening(&s), vec!["mail"]);
        assert!(s.finish_request(&[SessionOp::Unlisten(None)], b'I', b'I', false));
        assert!(s.listening.is_empty());
    }
}
