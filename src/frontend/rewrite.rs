//! What pgtenant changes in a client's request stream before a server sees it:
//! statement names (per-client names mapped to pgtenant's, with replays on links
//! that lack them), session statements that can't work under transaction pooling
//! (refused through the server itself so errors arrive in order), and a prelude
//! that puts the link's tracked settings in step with the client's.

use super::policy::{hint, plan_query, QueryPlan, FEATURE_NOT_SUPPORTED};
use super::tracker::TxnTracker;
use crate::backend::{LinkState, Settings};
use crate::prepared::{ClientStatements, Statement};
use crate::protocol::extended::{self, split_name};
use crate::tenant::{quote_ident, TenantContext};
use bytes::BytesMut;
use std::sync::Arc;

/// Settings kept in step per client on shared links (lowercase names). All but
/// extra_float_digits are reported by the server (ParameterStatus), so a client's
/// `SET` of them is seen and replayed on the next link it gets.
pub const TRACKED_PARAMS: [&str; 6] = [
    // First: the encoding the others' values are sent in.
    "client_encoding",
    "application_name",
    "datestyle",
    "intervalstyle",
    "timezone",
    "extra_float_digits",
];

/// Per-client state that outlives any one server link.
#[derive(Debug)]
pub struct ClientState {
    pub statements: ClientStatements,
    /// Desired values of [`TRACKED_PARAMS`].
    pub params: Settings,
    pub transaction_mode: bool,
    /// Context isolation: the tenant context set on every checkout; statements
    /// that would change it are refused.
    pub context: Option<TenantContext>,
}

impl ClientState {
    pub fn new(params: Settings, transaction_mode: bool, context: Option<TenantContext>) -> Self {
        Self {
            statements: ClientStatements::new(),
            params,
            transaction_mode,
            context,
        }
    }
}

/// Everything a rewrite may touch.
pub struct Ctx<'a> {
    pub client: &'a mut ClientState,
    pub link: &'a mut LinkState,
    pub t: &'a mut TxnTracker,
}

pub use crate::sql::literal;

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

/// Called when a link is lent to the client: on shared links the tenant
/// context first, then the tracked settings that differ, each injected ahead
/// of the client's first message with its replies swallowed.
pub fn prelude(cx: &mut Ctx<'_>, out: &mut BytesMut) {
    // Shared links: the tenant context is re-established on every checkout, so
    // nothing a client did (even through dynamic SQL) carries over.
    if let Some(context) = cx.client.context.as_ref() {
        context_prelude(context, cx.link, out);
        cx.t.injected_query();
    }
    let in_step = cx.client.params.fingerprint(&TRACKED_PARAMS)
        == cx.link.params.fingerprint(&TRACKED_PARAMS);
    if !in_step {
        settings_prelude(cx, out);
    }
}

/// Sets search_path, `pgtenant.tenant_id` and its signature together. The
/// values travel as bound parameters, never in query text, so no one reads a
/// signature from `pg_stat_activity` or the server log.
const CONTEXT_SQL: &str = "SELECT pg_catalog.set_config('search_path', $1, false), \
     pg_catalog.set_config('pgtenant.tenant_id', $2, false), \
     pg_catalog.set_config('pgtenant.tenant_sig', $3, false)";

/// One Parse/Bind/Execute/Sync that puts the link in `context`. A link coming
/// from another tenant was wiped (`DISCARD ALL`, awaited) by the session
/// first, so if this fails the link has no tenant context at all, never
/// another tenant's.
fn context_prelude(context: &TenantContext, link: &mut LinkState, out: &mut BytesMut) {
    if link.context_owner.as_deref() != Some(&*context.owner) {
        link.context_owner = Some(context.owner.clone());
    }
    let mut sig = [0u8; 64];
    let (id, sig): (&[u8], &[u8]) = match &context.signed {
        Some(s) => {
            s.key.sign(&s.id, link.pid, &mut sig);
            (s.id.as_bytes(), &sig)
        }
        None => (b"", b""),
    };
    extended::parse_query(out, b"", CONTEXT_SQL);
    extended::bind_text(out, &[context.search_path.as_bytes(), id, sig]);
    extended::execute(out);
    extended::sync(out);
}

/// SETs/RESETs for the tracked settings that differ, in one injected Query.
fn settings_prelude(cx: &mut Ctx<'_>, out: &mut BytesMut) {
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

/// A name no server-side statement has: unknown client names are sent as this,
/// so a client can never reach a statement pgtenant made for someone else.
fn foreign_name(name: &[u8]) -> Vec<u8> {
    let mut n = b"pgtx_".to_vec();
    n.extend_from_slice(name);
    n
}

fn plan(cx: &Ctx<'_>, sql: &[u8]) -> QueryPlan {
    plan_query(sql, cx.client.transaction_mode, cx.client.context.is_some())
}

fn rewrite(cx: &mut Ctx<'_>, tag: u8, body: &[u8], out: &mut BytesMut) -> bool {
    match tag {
        b'Q' => {
            let sql = body.strip_suffix(&[0]).unwrap_or(body);
            let plan = plan(cx, sql);
            if let Some((code, why)) = plan.refuse {
                cx.t.client_message(tag);
                extended::query(out, &raise_statement(code, &why, hint(code)));
                return true;
            }
            if plan.forget_statements {
                cx.client.statements.clear();
            }
            cx.link.poisoned |= plan.poisons_link;
            let Some(name) = plan.deallocate else {
                return false;
            };
            let replacement = match cx.client.statements.remove(&name) {
                // The link holds it: deallocate pgtenant's name. It doesn't: the
                // statement is gone already, nothing to do on this link.
                Some(stmt) if cx.link.prepared.touch(&stmt.server_name) => {
                    cx.link.prepared.remove(&stmt.server_name);
                    format!("DEALLOCATE {}", quote_ident(&stmt.server_name))
                }
                Some(_) => "DO $pgtenant$BEGIN END$pgtenant$".to_owned(),
                None => raise_statement(
                    "26000",
                    &format!(
                        "prepared statement \"{}\" does not exist",
                        String::from_utf8_lossy(&name)
                    ),
                    "",
                ),
            };
            cx.t.client_message(tag);
            extended::query(out, &replacement);
            true
        }
        b'P' => {
            let Some((name, rest)) = split_name(body) else {
                return false;
            };
            let refused = extended::parse_query_text(rest).and_then(|q| {
                let p = plan(cx, q);
                cx.link.poisoned |= p.poisons_link;
                // pgtenant follows DEALLOCATE/DISCARD ALL in simple queries
                // only (a Parse of one runs whenever it is executed).
                let untracked = cx.client.transaction_mode
                    && (p.deallocate.is_some() || p.forget_statements);
                p.refuse
                    .or_else(|| {
                        untracked.then(|| {
                            (
                                FEATURE_NOT_SUPPORTED,
                                "DEALLOCATE and DISCARD ALL must be sent as simple queries in transaction pooling mode".to_owned(),
                            )
                        })
                    })
                    .map(|(code, why)| raise_statement(code, &why, hint(code)))
            });
            if name.is_empty() {
                return match refused {
                    Some(raise) => {
                        cx.t.client_message(tag);
                        extended::parse_query(out, b"", &raise);
                        true
                    }
                    None => false,
                };
            }
            let stmt = match refused {
                Some(raise) => {
                    let mut rest = raise.into_bytes();
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
            if name.is_empty() {
                return false;
            }
            match known(cx, name) {
                Some(stmt) => {
                    ensure(cx, &stmt, out);
                    cx.t.client_message(tag);
                    extended::bind(out, portal, stmt.server_name.as_bytes(), rest);
                }
                None => {
                    cx.t.client_message(tag);
                    extended::bind(out, portal, &foreign_name(name), rest);
                }
            }
            true
        }
        // FunctionCall calls a function by OID, out of any guard's sight: not on
        // shared links (large objects, its main use, are off there anyway).
        b'F' if cx.client.context.is_some() => {
            cx.t.client_message(tag);
            let why = "FunctionCall messages are not supported on shared server connections";
            extended::query(out, &raise_statement(FEATURE_NOT_SUPPORTED, why, ""));
            true
        }
        b'D' | b'C' => {
            let Some((&kind, rest)) = body.split_first() else {
                return false;
            };
            let Some((name, _)) = split_name(rest) else {
                return false;
            };
            if kind != b'S' || name.is_empty() {
                return false;
            }
            let server_name = match known(cx, name) {
                Some(stmt) => {
                    if tag == b'D' {
                        ensure(cx, &stmt, out);
                    } else {
                        cx.client.statements.remove(name);
                        cx.link.prepared.remove(&stmt.server_name);
                    }
                    stmt.server_name.as_bytes().to_vec()
                }
                None => foreign_name(name),
            };
            cx.t.client_message(tag);
            extended::describe_or_close(out, tag, b'S', &server_name);
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
    fn raise_statement_cannot_be_broken_out_of() {
        let s = raise_statement("0A000", "it's $pgtenant$ bad", "x");
        assert_eq!(s.matches("$pgtenant$").count(), 2);
        assert!(s.contains("it''s"));
    }
}
