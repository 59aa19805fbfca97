//! Just enough SQL understanding to police session state in pooled
//! connections: split a query string into statements and recognise the few
//! statement kinds that change session state (SET, RESET, DISCARD, DEALLOCATE,
//! LISTEN). Lexing follows PostgreSQL's rules for quotes, dollar quotes, nested
//! comments and escape strings, so tricks with comments and quoting can't hide a
//! statement. Written by hand: no maintained crate classifies PostgreSQL
//! statements without a C toolchain (pg_query) or rejecting valid dialect
//! (sqlparser fails on much DDL; a failed parse must not mean "let it through").

mod classify;
mod lexer;

pub use classify::{classify, may_touch_session, SessionStatement};
pub use lexer::{statements, Token};
