//! What pgtenant changes in a client's request stream before a server sees it:
//! statement names (per-client names mapped to pgtenant's, with replays on links
//! that lack them), session statements that can't work under transaction pooling
//! (refused through the server itself so errors arrive in order), and a prelude
//! that puts the link's tracked settings in step with the client's.

use super::tracker::TxnTracker;
use crate::backend::{LinkState, Settings};
use crate::prepared::{ClientStatements, Statement};
use crate::protocol::extended::{self, split_name};
use crate::sql::{classify, may_touch_session, statements, SessionStatement};
use bytes::BytesMut;
use std::sync::Arc;

/// Settings kept in step per client on shared links (lowercase names). All but
/// extra_float_digits are reported by the server (ParameterStatus), so a client's
/// `SET` of them is seen and replayed on the next link it gets.
pub const TRACKED_PARAMS: [&str; 6] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "extra_float_digits",
];

/// Settings a client may change with a plain SET under transaction pooling.
fn settable_in_transaction_mode(name: &str) -> bool {
    TRACKED_PARAMS.contains(&name) && name != "extra_float_digits"
}

/// Per-client state that outlives any one server link.
#[derive(Debug)]
pub struct ClientState {
    pub statements: ClientStatements,
    /// Desired values of [`TRACKED_PARAMS`].
    pub params: Settings,
    pub transaction_mode: bool,
}

impl ClientState {
    pub fn new(params: Settings, transaction_mode: bool) -> Self {
        Self {
            statements: ClientStatements::new(),
            params,
            transaction_mode,
        }
    }
}

/// Everything a rewrite may touch.
pub struct Ctx<'a> {
    pub client: &'a mut ClientState,
    pub link: &'a mut LinkState,
    pub t: &'a mut TxnTracker,
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// A statement that makes the server raise `code`/`message`, so a refusal
/// arrives exactly where the refused statement's reply would have.
pub fn raise_statement(code: &str, message: &str, hint: &str) -> String {
    let clean = |s: &str| s.replace('$', "");
    format!(
        "DO $pgtenant$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {}, HINT = {}; END$pgtenant$",
        literal(&clean(message)),
        literal(&clean(hint))
    )
}

/// Called when a link is lent to the client: settings that differ are set
/// first, in one injected Query whose replies are swallowed.
pub fn prelude(cx: &mut Ctx<'_>, out: &mut BytesMut) {
    if cx.client.params.fingerprint(&TRACKED_PARAMS) == cx.link.params.fingerprint(&TRACKED_PARAMS)
    {
        return;
    }
    let mut sql = String::new();
    for key in TRACKED_PARAMS {
        match (cx.client.params.get(key), cx.link.params.get(key)) {
            (Some(want), have) if have != Some(want) => {
                sql.push_str(&format!("SET {key} = {};", literal(want)));
                cx.link.params.insert(key.to_owned(), want.clone());
            }
            (None, Some(_)) => {
                sql.push_str(&format!("RESET {key};"));
                cx.link.params.remove(key);
            }
            _ => {}
        }
    }
    if !sql.is_empty() {
        extended::query(out, &sql);
        cx.t.injected_query();
    }
}

/// Makes sure the link holds `stmt`, replaying its Parse (and closing the least
/// recently used statement if the link is full).
fn ensure(cx: &mut Ctx<'_>, stmt: &Statement, out: &mut BytesMut) {
    if cx.link.prepared.touch(&stmt.server_name) {
        return;
    }
    make_room(cx, out);
    out.extend_from_slice(&stmt.parse);
    cx.t.injected(b'P');
    cx.link.prepared.insert(&stmt.server_name);
}

fn make_room(cx: &mut Ctx<'_>, out: &mut BytesMut) {
    if let Some(victim) = cx.link.prepared.victim() {
        extended::describe_or_close(out, b'C', b'S', victim.as_bytes());
        cx.t.injected(b'C');
        cx.link.prepared.remove(&victim);
    }
}

/// Why a statement can't run under transaction pooling, if it can't.
fn refusal(stmt: &SessionStatement) -> Option<String> {
    match stmt {
        SessionStatement::Set { name, local: false } if !settable_in_transaction_mode(name) => Some(format!(
            "SET {name} is not supported in transaction pooling mode: the setting would stay on a shared server connection"
        )),
        SessionStatement::Listen => Some("LISTEN is not supported in transaction pooling mode: notifications would go to whichever client next uses the server connection".into()),
        _ => None,
    }
}

const REFUSAL_HINT: &str = "use SET LOCAL inside a transaction, a tier setting (e.g. statement_timeout), or pool_mode = \"session\"";

/// What to do with a session statement found in a query.
enum QueryPlan {
    Pass,
    Refuse(String),
    /// DISCARD ALL / DEALLOCATE ALL: the server drops every prepared statement.
    ForgetAll,
    /// `DEALLOCATE name` of a client statement (the whole query).
    Deallocate(Vec<u8>),
}

fn plan_query(sql: &[u8], transaction_mode: bool) -> QueryPlan {
    if !may_touch_session(sql) {
        return QueryPlan::Pass;
    }
    let text = String::from_utf8_lossy(sql);
    let stmts = statements(&text);
    let mut plan = QueryPlan::Pass;
    for tokens in &stmts {
        let Some(kind) = classify(tokens) else {
            continue;
        };
        if transaction_mode {
            if let Some(why) = refusal(&kind) {
                return QueryPlan::Refuse(why);
            }
        }
        match kind {
            SessionStatement::DiscardAll | SessionStatement::Deallocate { name: None } => {
                plan = QueryPlan::ForgetAll
            }
            SessionStatement::Deallocate { name: Some(n) } if stmts.len() == 1 => {
                plan = QueryPlan::Deallocate(n.into_bytes())
            }
            _ => {}
        }
    }
    plan
}

/// Rewrites one whole client message (`msg` includes its header) into `out`,
/// counting it in the tracker after anything injected ahead of it. Returns false
/// when the message goes through unchanged (nothing written).
pub fn client_message(cx: &mut Ctx<'_>, msg: &[u8], out: &mut BytesMut) -> bool {
    let tag = msg[0];
    let rewritten = rewrite(cx, tag, &msg[5..], out);
    if !rewritten {
        cx.t.client_message(tag);
    }
    rewritten
}

fn rewrite(cx: &mut Ctx<'_>, tag: u8, body: &[u8], out: &mut BytesMut) -> bool {
    match tag {
        b'Q' => {
            let sql = body.strip_suffix(&[0]).unwrap_or(body);
            match plan_query(sql, cx.client.transaction_mode) {
                QueryPlan::Pass => false,
                QueryPlan::Refuse(why) => {
                    cx.t.client_message(tag);
                    extended::query(out, &raise_statement("0A000", &why, REFUSAL_HINT));
                    true
                }
                QueryPlan::ForgetAll => {
                    cx.client.statements.clear();
                    cx.link.prepared.clear();
                    false
                }
                QueryPlan::Deallocate(name) => match cx.client.statements.remove(&name) {
                    Some(stmt) => {
                        ensure(cx, &stmt, out);
                        cx.t.client_message(tag);
                        extended::query(out, &format!("DEALLOCATE \"{}\"", stmt.server_name));
                        cx.link.prepared.remove(&stmt.server_name);
                        true
                    }
                    None => false,
                },
            }
        }
        b'P' => {
            let Some((name, rest)) = split_name(body) else {
                return false;
            };
            let refused = extended::parse_query_text(rest).and_then(|q| {
                match plan_query(q, cx.client.transaction_mode) {
                    QueryPlan::Refuse(why) => Some(why),
                    _ => None,
                }
            });
            if name.is_empty() {
                return match refused {
                    Some(why) => {
                        cx.t.client_message(tag);
                        extended::parse_query(
                            out,
                            b"",
                            &raise_statement("0A000", &why, REFUSAL_HINT),
                        );
                        true
                    }
                    None => false,
                };
            }
            let stmt = match refused {
                Some(why) => {
                    let mut rest = raise_statement("0A000", &why, REFUSAL_HINT).into_bytes();
                    rest.extend_from_slice(&[0, 0, 0]);
                    cx.client.statements.register(name, &rest)
                }
                None => cx.client.statements.register(name, rest),
            };
            make_room(cx, out);
            cx.t.client_message(tag);
            out.extend_from_slice(&stmt.parse);
            cx.link.prepared.insert(&stmt.server_name);
            true
        }
        b'B' => {
            let Some((portal, rest)) = split_name(body) else {
                return false;
            };
            let Some((name, rest)) = split_name(rest) else {
                return false;
            };
            let Some(stmt) = known(cx, name) else {
                return false;
            };
            ensure(cx, &stmt, out);
            cx.t.client_message(tag);
            extended::bind(out, portal, stmt.server_name.as_bytes(), rest);
            true
        }
        b'D' | b'C' => {
            let Some((&kind, rest)) = body.split_first() else {
                return false;
            };
            let Some((name, _)) = split_name(rest) else {
                return false;
            };
            if kind != b'S' {
                return false;
            }
            let Some(stmt) = known(cx, name) else {
                return false;
            };
            if tag == b'D' {
                ensure(cx, &stmt, out);
            } else {
                cx.client.statements.remove(name);
                cx.link.prepared.remove(&stmt.server_name);
            }
            cx.t.client_message(tag);
            extended::describe_or_close(out, tag, b'S', stmt.server_name.as_bytes());
            true
        }
        _ => false,
    }
}

fn known(cx: &Ctx<'_>, name: &[u8]) -> Option<Arc<Statement>> {
    if name.is_empty() {
        return None;
    }
    cx.client.statements.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_only_in_transaction_mode() {
        assert!(matches!(
            plan_query(b"SET statement_timeout = 5", true),
            QueryPlan::Refuse(_)
        ));
        assert!(matches!(
            plan_query(b"SET statement_timeout = 5", false),
            QueryPlan::Pass
        ));
        assert!(matches!(
            plan_query(b"SET LOCAL statement_timeout = 5", true),
            QueryPlan::Pass
        ));
        assert!(matches!(
            plan_query(b"SET application_name = 'x'", true),
            QueryPlan::Pass
        ));
        assert!(matches!(
            plan_query(b"select 1; /* hi */ listen x", true),
            QueryPlan::Refuse(_)
        ));
        assert!(matches!(
            plan_query(b"DISCARD ALL", true),
            QueryPlan::ForgetAll
        ));
        assert!(matches!(
            plan_query(b"deallocate s1", true),
            QueryPlan::Deallocate(_)
        ));
    }

    #[test]
    fn raise_statement_cannot_be_broken_out_of() {
        let s = raise_statement("0A000", "it's $pgtenant$ bad", "x");
        assert_eq!(s.matches("$pgtenant$").count(), 2);
        assert!(s.contains("it''s"));
    }
}
