//! The session effects of a statement string, as data: what pgtenant must
//! follow (settings, transaction control), put back (after RESET ALL and
//! DISCARD ALL) or watch (pins, changes out of sight). Decided once per
//! statement text by `frontend::policy`, stored with prepared statements.

use std::sync::Arc;

/// One session-level change seen in a client's SQL, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp {
    /// A setting changed; `replay` is the statement that re-applies it.
    Set {
        name: String,
        replay: Arc<str>,
    },
    /// `RESET name` / `SET name TO DEFAULT`: back to the client's startup value.
    Reset(String),
    /// `RESET ALL` / `DISCARD ALL`: every setting back to its startup value.
    ResetAll,
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    /// SQL-level `PREPARE name ...`; `text` is the statement, to replay.
    SqlPrepare {
        name: String,
        text: Arc<str>,
    },
    /// SQL-level `DEALLOCATE name`; `None` for ALL (and DISCARD ALL).
    SqlDeallocate(Option<String>),
    /// `LISTEN channel`: transactional, like a setting.
    Listen(String),
    /// `UNLISTEN channel`; `None` for `UNLISTEN *` (and DISCARD ALL).
    Unlisten(Option<String>),
    /// `NOTIFY` or `pg_notify(...)`: a listening client hears its own
    /// notifications before its ReadyForQuery, as from PostgreSQL.
    Notified,
}

impl SessionOp {
    pub fn controls_transaction(&self) -> bool {
        matches!(
            self,
            SessionOp::Begin
                | SessionOp::Commit
                | SessionOp::Rollback
                | SessionOp::Savepoint(_)
                | SessionOp::Release(_)
                | SessionOp::RollbackTo(_)
        )
    }
}

/// What to put back on the link after a request that resets settings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Restore {
    #[default]
    Nothing,
    /// `RESET name`: PostgreSQL puts it back to the link's startup value; the
    /// client's own startup value (if it had one) is set again.
    Names(Vec<String>),
    /// RESET ALL / DISCARD ALL: the tenant context and every startup value.
    All,
}

impl Restore {
    pub fn add(&mut self, other: Restore) {
        *self = match (std::mem::take(self), other) {
            (Restore::All, _) | (_, Restore::All) => Restore::All,
            (Restore::Names(mut a), Restore::Names(b)) => {
                a.extend(b);
                Restore::Names(a)
            }
            (a, Restore::Nothing) => a,
            (Restore::Nothing, b) => b,
        }
    }
}

/// The session effects of one statement string, applied when it is sent
/// (simple Query) or executed (a Parse's, at its Execute).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Followed when the server answers (undone with a rollback).
    pub ops: Vec<SessionOp>,
    pub restore: Restore,
    /// DISCARD ALL / DEALLOCATE ALL: the client's statements are gone, and
    /// every statement on the link.
    pub forget_statements: bool,
    /// Settings may change out of pgtenant's sight (DO blocks, `set_config`
    /// with a computed argument): the link is reset before another client
    /// uses it.
    pub untracked: bool,
    /// Session settings set to values no SQL text shows
    /// (`set_config('app.user', $1, false)`): asked of the server when the
    /// transaction ends, then followed like any other.
    pub learn: Vec<String>,
    /// May take something that can't move between links (a session advisory
    /// lock, a WITH HOLD cursor, a temporary table).
    pub may_pin: bool,
    /// SQL-level prepared statements it names (PREPARE, EXECUTE, DEALLOCATE):
    /// the link must hold exactly the client's own before it runs.
    pub sql_names: Vec<String>,
    /// LISTEN: pgtenant listens for the client (see `notify`), so the server
    /// link must not: `UNLISTEN *` follows right behind.
    pub listens: bool,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }
}
