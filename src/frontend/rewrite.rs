//! What pgtenant changes in a client's request stream before a server sees it:
//! statement names (per-client names mapped to pgtenant's, with replays on links
//! that lack them), what the guard or transaction pooling refuses (through the
//! server itself, so errors arrive in order), the session changes it follows,
//! and the requests of its own it injects: the prelude that puts a link in step
//! with the client at checkout, and the restore after a client's RESET ALL or
//! DISCARD ALL (tenant context and startup values back).

use super::client::ClientState;
use super::policy::{
    hint, plan_query, reported, QueryPlan, Rules, INSUFFICIENT_PRIVILEGE, REPORTED_PARAMS,
};
use super::tracker::TxnTracker;
use crate::backend::{LinkState, Overrides, Settings};
use crate::prepared::Statement;
use crate::protocol::extended::{self, split_name};
use crate::protocol::tag::frontend as fe;
use crate::sql::{literal, Effects, Restore, SessionOp, Token};
use crate::tenant::{quote_ident, TenantContext};
use bytes::BytesMut;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::protocol::sqlstate::{CONFIGURATION_LIMIT_EXCEEDED, FEATURE_NOT_SUPPORTED};

/// Everything a rewrite may touch.
pub struct Ctx<'a> {
    pub client: &'a mut ClientState,
    pub link: &'a mut LinkState,
    pub t: &'a mut TxnTracker,
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

/// Called when a link is lent to the client: a link that served another
/// tenant, or may carry another client's changes made out of sight, is
/// `DISCARD ALL`-ed first, one whose
/// settings are unknown `RESET ALL`-ed; then the client's settings that differ; then, on shared
/// links, the tenant context. All injected ahead of the client's first
/// message, their replies swallowed.
pub fn prelude(cx: &mut Ctx<'_>, out: &mut BytesMut) {
    let id = cx.client.id();
    if cx.link.wipe || cx.link.foreign.is_some_and(|other| other != id) {
        // Whatever that client did out of sight (a DO block may also prepare
        // statements or listen) is wiped, not only its settings. Pipelined
        // ahead of this client's SQL, so nothing the last client left may
        // make the wipe fail: a 1 ms statement_timeout set out of sight (and
        // a slow DISCARD TEMP) would end this client after its SQL ran.
        extended::query(out, "SET statement_timeout = 0; SET lock_timeout = 0");
        cx.t.injected_query(false);
        extended::query(out, "DISCARD ALL");
        cx.t.injected_query(false);
        cx.link.discarded();
    } else if cx.link.dirty {
        extended::query(out, "RESET ALL");
        cx.t.injected_query(false);
        cx.link.settings_reset();
    }
    // What the link's last client set goes first: pgtenant's context
    // statement never runs under it (nor under this client's replays).
    resets_prelude(cx.link, cx.t, &cx.client.settings.current, out, false);
    // Shared links: the tenant context is re-established on every checkout, so
    // nothing a client did (even through dynamic SQL) carries over.
    if let Some(context) = cx.client.context.as_ref() {
        for _ in 0..context_calls(context, cx.link, out) {
            cx.t.injected_query(false);
        }
        cx.t.injected(fe::CLOSE);
    }
    let client = &mut *cx.client;
    settings_prelude(
        cx.link,
        cx.t,
        &client.params,
        &client.settings.current,
        out,
        false,
    );
}

/// `pg_catalog.set_config(text, text, boolean)`: its OID is fixed in
/// PostgreSQL's bootstrap catalog (pg_proc.dat), the same in every version.
const SET_CONFIG_OID: u32 = 2078;

/// The settings that make up a tenant context, in the order they are set.
const CONTEXT_SETTINGS: [&[u8]; 3] = [
    b"search_path",
    b"pgtenant.tenant_id",
    b"pgtenant.tenant_sig",
];

/// Puts the link in `context`, on every checkout of a shared link: a
/// FunctionCall of `set_config` per setting (search_path,
/// `pgtenant.tenant_id`, its signature: no parse or plan on the server),
/// then the unnamed statement's Close, with no Sync: the client's own
/// messages end that batch (a Close starts no transaction and can't fail),
/// so the server flushes once less per checkout. The values travel as
/// arguments, never in query text, so no one reads a signature from
/// `pg_stat_activity` or the server log. A FunctionCall costs the server
/// less than anything parsed: `BEGIN`, a prepared SELECT of `set_config`
/// and `COMMIT` bound with no Sync (one flush per checkout instead of two)
/// cost the server 10% more CPU per transaction (`benches/ab_tenants.sh`).
/// A link from another tenant was wiped (`DISCARD ALL`) ahead of this, so
/// if a call fails the link has no tenant context at all, never another
/// tenant's, and the client is ended. Returns the calls injected, each
/// answered by its own ReadyForQuery; the caller counts the Close.
fn context_calls(context: &TenantContext, link: &mut LinkState, out: &mut BytesMut) -> usize {
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
    // A tenant with no signed id (a `schema` tenant) needs only its
    // search_path: the id and signature are empty on its links already (a
    // link from another tenant was wiped, which resets them), and nothing its
    // own clients could set there is a signature that verifies.
    let wanted = if context.signed.is_some() { 3 } else { 1 };
    let values = [context.search_path.as_bytes(), id, sig];
    for (name, value) in CONTEXT_SETTINGS.iter().zip(values).take(wanted) {
        extended::function_call_text(out, SET_CONFIG_OID, &[name, value, b"false"]);
    }
    // The unnamed statement goes too: a client's Bind of it with no Parse
    // of its own must never run the last client's.
    extended::describe_or_close(out, fe::CLOSE, extended::STATEMENT, b"");
    wanted
}

/// Puts the link back in `context` after a client's `RESET ALL`/`DISCARD
/// ALL`: [`context_calls`] and a Sync for its Close. Returns the requests
/// injected.
fn context_prelude(context: &TenantContext, link: &mut LinkState, out: &mut BytesMut) -> usize {
    let calls = context_calls(context, link, out);
    extended::sync(out);
    calls + 1
}

/// A setting name as SQL: each dotted part quoted.
fn setting_ident(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// Appends one replayed statement: a newline before the separator, so a
/// trailing `--` comment in the client's text can't swallow what follows.
fn push_statement(sql: &mut String, stmt: &str) {
    sql.push_str(stmt);
    sql.push_str("\n;");
}

/// RESETs, in one injected Query, of what the link holds that `want` does
/// not (so a failing replay can't undo them, and nothing runs under them).
fn resets_prelude(
    link: &mut LinkState,
    t: &mut TxnTracker,
    want: &Overrides,
    out: &mut BytesMut,
    restore: bool,
) {
    if want.same_as(&link.settings) {
        return;
    }
    let mut resets = String::new();
    let mut gone = Vec::new();
    for (name, _) in link.settings.iter() {
        if !want.contains(name) {
            let _ = write!(resets, "RESET {};", setting_ident(name));
            gone.push(name.clone());
        }
    }
    for name in gone {
        link.settings.remove(&name);
    }
    if !resets.is_empty() {
        extended::query(out, &resets);
        t.injected_query(restore);
    }
}

/// Puts the link's settings in step with `want_params` (reported settings)
/// and `want` (every other one), when they differ: RESETs first (see
/// [`resets_prelude`]), then the reported settings (`client_encoding` among
/// them, so the replays that follow are read in the client's encoding), then
/// the client's replays; each its own injected Query.
fn settings_prelude(
    link: &mut LinkState,
    t: &mut TxnTracker,
    want_params: &Settings,
    want: &Overrides,
    out: &mut BytesMut,
    restore: bool,
) {
    let params_in_step =
        want_params.fingerprint(&REPORTED_PARAMS) == link.params.fingerprint(&REPORTED_PARAMS);
    let settings_in_step = want.same_as(&link.settings);
    if params_in_step && settings_in_step {
        return;
    }
    resets_prelude(link, t, want, out, restore);
    let mut inject = |sql: &str| {
        if !sql.is_empty() {
            extended::query(out, sql);
            t.injected_query(restore);
        }
    };
    if !params_in_step {
        let mut sql = String::new();
        for key in REPORTED_PARAMS {
            match (want_params.get(key), link.params.get(key)) {
                (Some(v), have) if have != Some(v) => {
                    let _ = write!(sql, "SET {key} = {};", literal(v));
                    link.params.insert(key.to_owned(), v.clone());
                }
                (None, Some(_)) => {
                    let _ = write!(sql, "RESET {key};");
                    link.params.remove(key);
                }
                _ => {}
            }
        }
        inject(&sql);
    }
    if !settings_in_step {
        let mut replays = String::new();
        for (name, replay) in want.iter() {
            if link.settings.get(name) != Some(replay) {
                push_statement(&mut replays, replay);
            }
        }
        inject(&replays);
        link.settings = want.clone();
    }
}

/// After a client's LISTEN / UNLISTEN ran on the link: pgtenant's hub
/// listens for the client (`notify`), so the link itself stops listening,
/// in the same transaction (a LISTEN still pending there is cancelled).
/// Its reply is swallowed; if it fails (the client's transaction had
/// failed), the link is closed when it comes back.
fn unlisten_link(cx: &mut Ctx<'_>, out: &mut BytesMut) {
    extended::query(out, "UNLISTEN *");
    cx.t.injected_query(true);
}

/// After a client request that resets settings: the server put them back to
/// the link's startup values; put the client's own back (and on shared
/// links the tenant context), pipelined right behind it.
fn restore(cx: &mut Ctx<'_>, what: &Restore, out: &mut BytesMut) {
    let client = &mut *cx.client;
    match what {
        Restore::Nothing => {}
        Restore::Names(names) => {
            let mut sql = String::new();
            for name in names {
                if reported(name) {
                    let back = cx.link.startup.get(name).cloned();
                    let want = client.startup_params.get(name).cloned();
                    if let Some(v) = &want {
                        Settings::insert_shared(&mut client.params, name.clone(), v.clone());
                        if back.as_ref() != Some(v) {
                            let _ = write!(sql, "SET {name} = {};", literal(v));
                        }
                    }
                    if let Some(v) = want.or(back) {
                        cx.link.params.insert(name.clone(), v);
                    }
                } else if let Some(replay) = client.settings.startup.get(name) {
                    push_statement(&mut sql, replay);
                    cx.link.settings.set(name, replay.clone());
                } else {
                    cx.link.settings.remove(name);
                }
            }
            if !sql.is_empty() {
                extended::query(out, &sql);
                cx.t.injected_query(true);
            }
        }
        Restore::All => {
            cx.link.settings_reset();
            client.params = client.startup_params.clone();
            if let Some(context) = client.context.as_ref() {
                for _ in 0..context_prelude(context, cx.link, out) {
                    cx.t.injected_query(true);
                }
            }
            settings_prelude(
                cx.link,
                cx.t,
                &client.params,
                &client.settings.startup,
                out,
                true,
            );
        }
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
    cx.t.injected(fe::PARSE);
    cx.link.prepared.insert(&stmt.server_name);
    cx.client.reprepares += 1;
}

fn make_room(cx: &mut Ctx<'_>, out: &mut BytesMut) {
    if let Some(victim) = cx.link.prepared.victim() {
        extended::describe_or_close(out, fe::CLOSE, extended::STATEMENT, victim.as_bytes());
        cx.t.injected(fe::CLOSE);
        cx.link.prepared.remove(&victim);
        cx.client.evictions += 1;
    }
}

/// Rewrites one whole client message (`msg` includes its header) into `out`,
/// counting it in the tracker after anything injected ahead of it. Returns false
/// when the message goes through unchanged (nothing written).
pub fn client_message(cx: &mut Ctx<'_>, msg: &[u8], out: &mut BytesMut) -> bool {
    let tag = msg[0];
    let rewritten = rewrite(cx, msg, out);
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

fn plan(cx: &Ctx<'_>, sql: &[u8], extended: bool) -> QueryPlan {
    plan_query(
        sql,
        Rules {
            transaction_mode: cx.client.transaction_mode,
            extended,
            guard: cx.client.guard,
            // A Parse runs whenever it is executed, maybe inside a
            // transaction with changes: always note its transaction control.
            watch_transaction: extended
                || cx.client.settings.watching_transaction()
                || cx.t.changes_pending(),
        },
    )
}

/// A refusal for effects beyond the client's limits, if they are.
fn over_limits(cx: &Ctx<'_>, fx: &Effects) -> Option<String> {
    let current = &cx.client.settings.current;
    let set = fx.ops.iter().filter_map(|op| match op {
        crate::sql::SessionOp::Set { name, .. } => Some(name),
        _ => None,
    });
    // Settings to be learned count too, as they will be followed the same.
    let mut names: Vec<&String> = set
        .chain(&fx.learn)
        .chain(&cx.client.learn)
        .filter(|n| !current.contains(n))
        .collect();
    names.sort();
    names.dedup();
    let new = names.len();
    let max = cx.client.limits.max_settings;
    if new > 0 && current.len() + new > max {
        return Some(format!("too many session settings for one client (max_client_settings {max}); RESET some, or raise [proxy] max_client_settings"));
    }
    let listening = &cx.client.settings.listening;
    let mut channels: Vec<&String> = fx
        .ops
        .iter()
        .filter_map(|op| match op {
            crate::sql::SessionOp::Listen(c) if !listening.contains(c) => Some(c),
            _ => None,
        })
        .collect();
    channels.sort();
    channels.dedup();
    let max = cx.client.limits.max_listens;
    (!channels.is_empty() && listening.len() + channels.len() > max).then(|| {
        format!("too many LISTEN channels for one client (max_client_listens {max}); UNLISTEN some, or raise [proxy] max_client_listens")
    })
}

/// Records what a statement does to the session, as it is sent (Query) or
/// executed (Execute): followed when the server answers it.
fn apply_effects(cx: &mut Ctx<'_>, fx: &Effects) {
    // A NOTIFY matters only to a client that listens (its own notifications
    // before its ReadyForQuery): producers pay nothing for it.
    let only_notified = fx.ops.iter().all(|op| *op == SessionOp::Notified);
    let follow = !fx.ops.is_empty() && (!only_notified || !cx.client.settings.listening.is_empty());
    if follow || fx.forget_statements {
        cx.t.add_changes(&fx.ops, fx.forget_statements, false);
    }
    if fx.forget_statements {
        cx.client.statements.clear();
        cx.link.prepared.clear();
    }
    if fx.untracked {
        cx.link.foreign = Some(cx.client.id());
    }
    if cx.client.transaction_mode {
        // Bounded: `over_limits` refused what would pass max_client_settings.
        for name in &fx.learn {
            if !cx.client.learn.contains(name) {
                cx.client.learn.push(name.clone());
            }
        }
    }
    if fx.may_pin {
        cx.client.check_pins = true;
    }
}

/// The statement that replaces `DEALLOCATE name`: pgtenant's own name on
/// this link, nothing if the link lacks it, an error if the client has no
/// such statement.
fn deallocate(cx: &mut Ctx<'_>, name: &[u8]) -> String {
    match cx.client.statements.remove(name) {
        Some(stmt) if cx.link.prepared.touch(&stmt.server_name) => {
            cx.link.prepared.remove(&stmt.server_name);
            format!("DEALLOCATE {}", quote_ident(&stmt.server_name))
        }
        Some(_) => "DO $pgtenant$BEGIN END$pgtenant$".to_owned(),
        None => raise_statement(
            "26000",
            &format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            ),
            "",
        ),
    }
}

/// A statement that may pin the link takes a place in the tenant's
/// `max_pinned` first; none left refuses it.
fn pin_refusal(cx: &mut Ctx<'_>, fx: &Effects) -> Option<String> {
    if !fx.may_pin || !cx.client.transaction_mode || cx.client.pin_slot.is_some() {
        return None;
    }
    match cx.client.pins.try_acquire() {
        Ok(slot) => {
            // Kept until a transaction that executed it is checked (a
            // statement prepared now may pin in a later transaction).
            cx.client.pin_slot = Some(slot);
            None
        }
        Err(_) => Some(format!(
            "too many server connections of this tenant are pinned (max_pinned {}): a session advisory lock, WITH HOLD cursor or temporary table keeps a server connection for its client",
            cx.client.pins.size()
        )),
    }
}

const PIN_HINT: &str = "release advisory locks and close held cursors sooner, use pg_advisory_xact_lock, raise the tier's max_pinned, or use pool_mode = \"session\"";

/// The statement text pgtenant sends instead of a client's, if any.
fn replacement(cx: &mut Ctx<'_>, plan: &QueryPlan) -> Option<String> {
    if let Some((code, why)) = &plan.refuse {
        if *code == INSUFFICIENT_PRIVILEGE {
            cx.client.refusals += 1;
        }
        return Some(raise_statement(code, why, hint(code)));
    }
    if let Some(why) = over_limits(cx, &plan.effects) {
        return Some(raise_statement(CONFIGURATION_LIMIT_EXCEEDED, &why, ""));
    }
    if let Some(why) = pin_refusal(cx, &plan.effects) {
        return Some(raise_statement(FEATURE_NOT_SUPPORTED, &why, PIN_HINT));
    }
    plan.deallocate
        .as_ref()
        .filter(|name| !sql_level(cx, name))
        .map(|name| deallocate(cx, name))
}

/// The query string has a COPY statement (checked only when it also resets
/// settings, so lexing here costs ordinary queries nothing). COPY to or from
/// the client runs only as a statement of its own, never inside a function, so
/// a statement's first word decides: `SELECT * FROM copy_jobs` is no COPY.
/// Text that is not UTF-8 is taken as one, to stay on the safe side.
fn runs_copy(sql: &[u8]) -> bool {
    std::str::from_utf8(sql).map_or(true, |sql| {
        crate::sql::statements(sql)
            .iter()
            .any(|s| matches!(s.first(), Some(Token::Word(w)) if w == "copy"))
    })
}

/// `name` is one of the client's SQL-level prepared statements.
fn sql_level(cx: &Ctx<'_>, name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok_and(|n| cx.client.sql_prepared.contains_key(n))
}

/// Before a request that names SQL-level prepared statements: the link must
/// hold exactly the client's own (another client's of the same name is
/// deallocated; the client's is prepared again from its text), so PREPARE,
/// EXECUTE and DEALLOCATE behave as on the client's own session.
fn ensure_sql_statements(cx: &mut Ctx<'_>, names: &[String], out: &mut BytesMut) {
    let mut sql = String::new();
    for name in names {
        let mine = cx.client.sql_prepared.get(name);
        let here = cx.link.sql_prepared.get(name).copied();
        if here.is_some() && here == mine.map(|m| m.0) {
            continue;
        }
        if here.is_some() {
            let _ = write!(sql, "DEALLOCATE {};", quote_ident(name));
            cx.link.sql_prepared.remove(name);
        }
        if let Some((version, text)) = mine {
            push_statement(&mut sql, text);
            cx.link.sql_prepared.insert(name.clone(), *version);
        }
    }
    if !sql.is_empty() {
        extended::query(out, &sql);
        cx.t.injected_query(true);
    }
}

fn rewrite(cx: &mut Ctx<'_>, msg: &[u8], out: &mut BytesMut) -> bool {
    let tag = msg[0];
    let body = &msg[5..];
    match tag {
        fe::QUERY => {
            let sql = body.strip_suffix(&[0]).unwrap_or(body);
            let plan = plan(cx, sql, false);
            if plan.effects.restore != Restore::Nothing && runs_copy(sql) {
                // pgtenant's restore would be read as COPY data.
                cx.t.client_message(tag);
                let why = "RESET and COPY in one query string are not supported through pgtenant; send them as separate queries";
                extended::query(out, &raise_statement(FEATURE_NOT_SUPPORTED, why, ""));
                return true;
            }
            if let Some(sql) = replacement(cx, &plan) {
                cx.t.client_message(tag);
                extended::query(out, &sql);
                return true;
            }
            let ensure = cx.client.transaction_mode && !plan.effects.sql_names.is_empty();
            if ensure {
                ensure_sql_statements(cx, &plan.effects.sql_names, out);
            }
            apply_effects(cx, &plan.effects);
            let what = plan.effects.restore.clone();
            let unlisten = plan.effects.listens;
            if what == Restore::Nothing && !ensure && !unlisten {
                return false;
            }
            cx.t.client_message(tag);
            out.extend_from_slice(msg);
            restore(cx, &what, out);
            if unlisten {
                unlisten_link(cx, out);
            }
            true
        }
        fe::PARSE => {
            let Some((name, rest)) = split_name(body) else {
                return false;
            };
            let Some(query) = extended::parse_query_text(rest) else {
                return false;
            };
            let plan = plan(cx, query, true);
            let replaced = replacement(cx, &plan);
            let effects =
                (replaced.is_none() && !plan.effects.is_empty()).then(|| Arc::new(plan.effects));
            if name.is_empty() {
                cx.client.unnamed_statement = effects;
                return match replaced {
                    Some(sql) => {
                        cx.t.client_message(tag);
                        extended::parse_query(out, b"", &sql);
                        true
                    }
                    None => false,
                };
            }
            let max = cx.client.limits.max_statements;
            if cx.client.statements.get(name).is_none() && cx.client.statements.len() >= max {
                // Refused as an unnamed statement: the name is never taken.
                let why = format!("too many prepared statements for one client (max_client_statements {max}); close some, or raise [proxy] max_client_statements");
                cx.t.client_message(tag);
                let sql = raise_statement(CONFIGURATION_LIMIT_EXCEEDED, &why, "");
                extended::parse_query(out, b"", &sql);
                return true;
            }
            let stmt = match replaced {
                Some(sql) => {
                    let mut rest = sql.into_bytes();
                    rest.extend_from_slice(&[0, 0, 0]);
                    cx.client.statements.register(name, &rest, None)
                }
                None => cx.client.statements.register(name, rest, effects),
            };
            make_room(cx, out);
            cx.t.client_message(tag);
            out.extend_from_slice(&stmt.parse);
            cx.link.prepared.insert(&stmt.server_name);
            true
        }
        fe::BIND => {
            let Some((portal, rest)) = split_name(body) else {
                return false;
            };
            let Some((name, rest)) = split_name(rest) else {
                return false;
            };
            let stmt = known(cx, name);
            let effects = match (&stmt, name.is_empty()) {
                (_, true) => cx.client.unnamed_statement.clone(),
                (Some(s), false) => s.effects.clone(),
                (None, false) => None,
            };
            if portal.is_empty() {
                cx.client.unnamed_portal = effects;
            } else {
                match effects {
                    Some(fx) if cx.client.named_portals.len() < 64 => {
                        cx.client.named_portals.insert(portal.to_vec(), fx);
                    }
                    // Too many to follow: wiped before anyone else uses the link.
                    Some(_) => cx.link.foreign = Some(cx.client.id()),
                    None if !cx.client.named_portals.is_empty() => {
                        cx.client.named_portals.remove(portal);
                    }
                    None => {}
                }
            }
            if name.is_empty() {
                return false;
            }
            match stmt {
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
        fe::EXECUTE => {
            // Only stopped for when a portal has session effects.
            let effects = match split_name(body) {
                Some((b"", _)) => cx.client.unnamed_portal.clone(),
                Some((portal, _)) => cx.client.named_portals.remove(portal),
                None => None,
            };
            if let Some(fx) = effects {
                apply_effects(cx, &fx);
                cx.client.restore_after_sync.add(fx.restore.clone());
                cx.client.unlisten_after_sync |= fx.listens;
            }
            false
        }
        fe::SYNC => {
            // Only stopped for when a restore or an UNLISTEN waits for this Sync.
            let what = std::mem::take(&mut cx.client.restore_after_sync);
            let unlisten = std::mem::take(&mut cx.client.unlisten_after_sync);
            if what == Restore::Nothing && !unlisten {
                return false;
            }
            cx.t.client_message(tag);
            out.extend_from_slice(msg);
            restore(cx, &what, out);
            if unlisten {
                unlisten_link(cx, out);
            }
            true
        }
        // FunctionCall calls a function by OID, out of any guard's sight: not on
        // shared links (large objects, its main use, are off there anyway).
        fe::FUNCTION_CALL if cx.client.context.is_some() => {
            cx.t.client_message(tag);
            let why = "FunctionCall messages are not supported on shared server connections";
            extended::query(out, &raise_statement(FEATURE_NOT_SUPPORTED, why, ""));
            true
        }
        fe::DESCRIBE | fe::CLOSE => {
            let Some((&kind, rest)) = body.split_first() else {
                return false;
            };
            let Some((name, _)) = split_name(rest) else {
                return false;
            };
            if kind != extended::STATEMENT || name.is_empty() {
                return false;
            }
            let server_name = match known(cx, name) {
                Some(stmt) => {
                    if tag == fe::DESCRIBE {
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
            extended::describe_or_close(out, tag, extended::STATEMENT, &server_name);
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
    fn only_a_copy_statement_counts_as_copy() {
        assert!(runs_copy(b"RESET ALL; COPY t FROM STDIN"));
        assert!(runs_copy(
            b"reset all;\n  /* then */ copy (select 1) to stdout"
        ));
        assert!(!runs_copy(b"RESET ALL; SELECT * FROM copy_jobs"));
        assert!(!runs_copy(b"RESET ALL; SELECT 'copy'"));
        assert!(!runs_copy(
            b"RESET ALL; INSERT INTO t VALUES ('COPY t FROM STDIN')"
        ));
        assert!(runs_copy(&[b'R', 0xff, b';']), "not UTF-8: taken as a COPY");
    }

    #[test]
    fn raise_statement_cannot_be_broken_out_of() {
        let s = raise_statement("0A000", "it's $pgtenant$ bad", "x");
        assert_eq!(s.matches("$pgtenant$").count(), 2);
        assert!(s.contains("it''s"));
    }

    #[test]
    fn setting_names_are_quoted_per_part() {
        assert_eq!(setting_ident("myapp.user_id"), "\"myapp\".\"user_id\"");
        assert_eq!(setting_ident("work_mem"), "\"work_mem\"");
    }
}
