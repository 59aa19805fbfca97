//! Just enough SQL understanding to police session state in pooled
//! connections, behind a cheap pre-filter (`may_touch_session`) so ordinary
//! queries pay nothing:
//! - `parsed`: sqlparser's PostgreSQL AST finds context changes by structure;
//! - `lexer` + `classify`: a hand-written lexer that follows PostgreSQL's rules
//!   for quotes, dollar quotes, nested comments and escape strings, splits a
//!   query string into statements and recognises session statements (SET,
//!   RESET, DISCARD, DEALLOCATE, LISTEN, PREPARE) even where sqlparser can't
//!   parse (some DDL, and SQL inside `DO` bodies and other string literals).
//!
//! The guard refuses when either layer objects, so a failed parse never means
//! "let it through".

mod classify;
mod effects;
mod lexer;
pub mod parsed;

pub use classify::{classify, may_touch_session, SessionStatement};
pub use effects::{Effects, Restore, SessionOp};
pub use lexer::{statement_texts, statements, statements_with_text, Token};

/// A SQL string literal (quotes doubled; backslashes escaped in an E'' string).
pub fn literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}
