//! What one query string means for pgtenant, decided from its SQL text (see
//! `sql`): what it refuses (the tenant context guard, 42501; what transaction
//! pooling can't carry yet, 0A000) and the session changes pgtenant follows
//! (settings, transaction control, statements, pins).

use crate::sql::parsed::{self, protected, Guard};
use crate::sql::{classify, may_touch_session, statements, statements_with_text};
use crate::sql::{literal, Effects, Restore, SessionOp, SessionStatement, Token};
use std::sync::Arc;

use crate::protocol::sqlstate::RESERVED_NAME;
pub use crate::protocol::sqlstate::{FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE};
const REFUSAL_HINT: &str = "use pool_mode = \"session\" for this tenant or tier";
const GUARD_HINT: &str = "the tenant's schema and identity are set by pgtenant for every transaction; connect as the tenant you mean";

pub fn hint(code: &str) -> &'static str {
    if code == INSUFFICIENT_PRIVILEGE {
        GUARD_HINT
    } else {
        REFUSAL_HINT
    }
}

/// Settings the server reports (ParameterStatus): pgtenant follows them from
/// the reports, not from the SQL (lowercase names). First: the encoding the
/// others' values are sent in.
pub const REPORTED_PARAMS: [&str; 5] = [
    "client_encoding",
    "application_name",
    "datestyle",
    "intervalstyle",
    "timezone",
];

pub fn reported(name: &str) -> bool {
    REPORTED_PARAMS.contains(&name)
}

/// What pgtenant does about one query string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueryPlan {
    /// Refuse it: (SQLSTATE, message).
    pub refuse: Option<(&'static str, String)>,
    /// The whole query is `DEALLOCATE name`.
    pub deallocate: Option<Vec<u8>>,
    pub effects: Effects,
}

impl QueryPlan {
    fn refuse(code: &'static str, why: String) -> Self {
        QueryPlan {
            refuse: Some((code, why)),
            ..QueryPlan::default()
        }
    }
}

/// How a client's link is guarded and pooled.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub transaction_mode: bool,
    /// The SQL came in a Parse (extended protocol), not a simple Query.
    pub extended: bool,
    pub guard: Guard,
    /// The client has session changes in an open transaction.
    pub watch_transaction: bool,
}

const MANAGED: &str = "pgtenant manages the tenant context";

fn guard_refusal(stmt: &SessionStatement, guard: Guard) -> Option<String> {
    match stmt {
        SessionStatement::Set { name, .. } if protected(name, guard) => {
            Some(format!("SET {name} is not allowed: {MANAGED}"))
        }
        SessionStatement::Reset { name } if protected(name, guard) => {
            Some(format!("RESET {name} is not allowed: {MANAGED}"))
        }
        _ => None,
    }
}

fn is_word(t: Option<&Token>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x == w)
        || matches!(t, Some(Token::QuotedIdent(x)) if x == w)
}

/// `ALTER ROLE/USER` (a role may change its own defaults and password,
/// which on shared links would reach every tenant of the tier) and writes to
/// `pg_settings` (another way to SET).
fn role_or_settings_refusal(tokens: &[Token]) -> Option<String> {
    if is_word(tokens.first(), "alter")
        && (is_word(tokens.get(1), "role") || is_word(tokens.get(1), "user"))
    {
        return Some(format!("ALTER ROLE is not allowed: {MANAGED}"));
    }
    let writes = ["update", "insert", "delete"]
        .iter()
        .any(|w| tokens.iter().any(|t| is_word(Some(t), w)));
    if writes && tokens.iter().any(|t| is_word(Some(t), "pg_settings")) {
        return Some(format!("writing pg_settings is not allowed: {MANAGED}"));
    }
    None
}

/// One `set_config(...)` call found in a statement's tokens.
enum SetConfig {
    /// `set_config('name', 'value', false)`: a session setting pgtenant follows.
    Session { name: String, value: String },
    /// `set_config('name', ..., true)`: ends with the transaction.
    Local { name: String, value: Option<String> },
    /// A computed name, value or scope. `learn`: the name is a literal and
    /// the scope `false` (`set_config('app.user', $1, false)`), so the value
    /// it took can be asked of the server when the transaction ends.
    Computed { name: Option<String>, learn: bool },
    /// A literal name with a backslash: a `U&'\0072ole'` escape the lexer
    /// leaves undecoded. No setting's name has one: refused on any link.
    Escaped,
}

/// The tokens of a call's argument list from its `(` at `open` to its `)`,
/// split at the commas outside nested parentheses (None: never closed).
fn call_args(tokens: &[Token], open: usize) -> Option<Vec<&[Token]>> {
    let (mut depth, mut start, mut args) = (0usize, open + 1, Vec::new());
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::Other('(') => depth += 1,
            Token::Other(')') if depth == 1 => {
                args.push(&tokens[start..i]);
                return Some(args);
            }
            Token::Other(')') => depth -= 1,
            Token::Other(',') if depth == 1 => {
                args.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// The statement that puts a session setting back on another link.
pub(super) fn set_config_replay(name: &str, value: &str) -> Arc<str> {
    Arc::from(format!(
        "SELECT pg_catalog.set_config({}, {}, false)",
        literal(name),
        literal(value)
    ))
}

fn set_config_calls(tokens: &[Token]) -> Vec<SetConfig> {
    let mut out = Vec::new();
    for (i, w) in tokens.windows(2).enumerate() {
        if !is_word(Some(&w[0]), "set_config") || w[1] != Token::Other('(') {
            continue;
        }
        let args = call_args(tokens, i + 1);
        let name = |arg: &[Token]| literal_text(arg).map(|n| n.to_lowercase());
        let escaped = args
            .as_deref()
            .and_then(|a| a.first())
            .and_then(|n| literal_text(n))
            .is_some_and(|n| n.contains('\\'));
        out.push(match args.as_deref() {
            _ if escaped => SetConfig::Escaped,
            Some([n, value, [Token::Word(scope)]]) => match (name(n), literal_text(value)) {
                (Some(name), Some(value)) if scope == "false" => SetConfig::Session { name, value },
                (Some(name), value) if scope == "true" => SetConfig::Local { name, value },
                (Some(name), None) if scope == "false" => SetConfig::Computed {
                    name: Some(name),
                    learn: true,
                },
                (name, _) => SetConfig::Computed { name, learn: false },
            },
            Some([n, ..]) => SetConfig::Computed {
                name: name(n),
                learn: false,
            },
            _ => SetConfig::Computed {
                name: None,
                learn: false,
            },
        });
    }
    out
}

/// The text of an argument that is only string literals, as PostgreSQL
/// reads it: adjacent literals (across a newline) join into one, so
/// `'ro'\n'le'` is `role`. None for anything else.
fn literal_text(arg: &[Token]) -> Option<String> {
    if arg.is_empty() {
        return None;
    }
    arg.iter()
        .map(|t| match t {
            Token::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

fn set_config_refusal(calls: &[SetConfig], guard: Guard) -> Option<String> {
    calls.iter().find_map(|c| match c {
        SetConfig::Session { name, .. }
        | SetConfig::Local { name, .. }
        | SetConfig::Computed {
            name: Some(name), ..
        } if protected(name, guard) => Some(format!(
            "set_config('{name}', ...) is not allowed: {MANAGED}"
        )),
        SetConfig::Computed { name: None, .. } if guard == Guard::Context => Some(format!(
            "set_config() with a computed setting name is not allowed: {MANAGED}"
        )),
        SetConfig::Escaped => Some(format!(
            "set_config() with an escaped setting name is not allowed: {MANAGED}"
        )),
        _ => None,
    })
}

/// Statements whose string literals are SQL that runs: `DO` bodies and
/// function bodies. Anywhere else a literal is data, never refused.
fn runs_its_strings(tokens: &[Token]) -> bool {
    match tokens.first() {
        Some(Token::Word(w)) if w == "do" => true,
        Some(Token::Word(w)) if w == "create" => tokens
            .iter()
            .take(6)
            .any(|t| is_word(Some(t), "function") || is_word(Some(t), "procedure")),
        _ => false,
    }
}

/// The guard over one statement and, `depth` levels down, over SQL inside the
/// literals that run (DO bodies, and inside them EXECUTE 'SET ...'). Dynamic
/// SQL assembled at run time stays invisible: under context isolation the
/// schema is a convenience, not a security boundary (role isolation is one).
fn guard_in_tokens(tokens: &[Token], guard: Guard, depth: u8, executed: bool) -> Option<String> {
    if let Some(why) = set_config_refusal(&set_config_calls(tokens), guard)
        .or_else(|| role_or_settings_refusal(tokens))
    {
        return Some(why);
    }
    if depth == 0 || !(executed || runs_its_strings(tokens)) {
        return None;
    }
    tokens.iter().find_map(|t| match t {
        Token::Str(body) if may_touch_session(body.as_bytes(), false) => {
            statements(body).iter().find_map(|inner| {
                guard_in_tokens(inner, guard, depth - 1, true).or_else(|| {
                    classify(inner)
                        .as_ref()
                        .and_then(|s| guard_refusal(s, guard))
                })
            })
        }
        _ => None,
    })
}

/// Why a statement can't run under transaction pooling, if it can't.
fn pooling_refusal(
    stmt: &SessionStatement,
    statements_in_query: usize,
    extended: bool,
) -> Option<String> {
    let tail = "in transaction pooling mode";
    match stmt {
        SessionStatement::Prepare { .. } | SessionStatement::Execute { .. } if extended => Some(format!(
            "SQL PREPARE/EXECUTE over the extended protocol is not supported {tail}: send it as a simple query, or use protocol-level prepared statements (your driver's)"
        )),
        SessionStatement::Deallocate { name: Some(_) } if statements_in_query > 1 => {
            Some(format!("DEALLOCATE name must be sent on its own {tail}"))
        }
        _ => None,
    }
}

/// Statement names starting `pgt` are pgtenant's own (it names every
/// client's protocol-level statements so): a client may not take or drop them.
fn reserved_name(stmt: &SessionStatement) -> Option<String> {
    match stmt {
        SessionStatement::Listen { channel }
        | SessionStatement::Unlisten {
            channel: Some(channel),
        } if channel == crate::notify::MARKER_CHANNEL => {
            Some(format!("channel \"{channel}\" is reserved by pgtenant"))
        }
        SessionStatement::Prepare { name: Some(n) }
        | SessionStatement::Execute { name: Some(n) }
        | SessionStatement::Deallocate { name: Some(n) } => reserved(n),
        _ => None,
    }
}

fn reserved(name: &str) -> Option<String> {
    name.starts_with("pgt").then(|| {
        format!(
            "prepared statement names starting with \"pgt\" are reserved by pgtenant: \"{name}\""
        )
    })
}

/// The statement name after an `EXECUTE` inside another statement.
fn embedded_execute(tokens: &[Token]) -> Option<String> {
    if is_word(tokens.first(), "execute") {
        return None;
    }
    tokens.windows(2).find_map(|w| match (&w[0], &w[1]) {
        (Token::Word(e), Token::Word(n) | Token::QuotedIdent(n)) if e == "execute" && n != "on" => {
            Some(n.clone())
        }
        _ => None,
    })
}

/// Functions whose effect outlives the transaction and binds the session.
fn takes_a_pin(tokens: &[Token]) -> bool {
    let pins_lock = tokens.iter().any(|t| match t {
        Token::Word(w) | Token::QuotedIdent(w) => {
            w.starts_with("pg_advisory_lock") || w.starts_with("pg_try_advisory_lock")
        }
        _ => false,
    });
    let temp_table = (is_word(tokens.first(), "create") || is_word(tokens.first(), "select"))
        && tokens.iter().any(|t| {
            is_word(Some(t), "temp") || is_word(Some(t), "temporary") || is_word(Some(t), "pg_temp")
        });
    pins_lock || temp_table
}

/// The session effects of one classified statement.
fn effects_of(stmt: &SessionStatement, text: &str, fx: &mut Effects) {
    match stmt {
        SessionStatement::Set { local: true, .. } => {}
        SessionStatement::Set {
            name,
            to_default: true,
            ..
        } => reset_effects(name, fx),
        SessionStatement::Set { name, .. } if reported(name) || transaction_scoped(name) => {}
        SessionStatement::Set { name, .. } => fx.ops.push(SessionOp::Set {
            name: name.clone(),
            replay: Arc::from(text),
        }),
        SessionStatement::Characteristics(settings) => {
            for (name, value) in settings {
                fx.ops.push(SessionOp::Set {
                    name: (*name).to_owned(),
                    replay: Arc::from(format!("SET {name} = '{value}'")),
                });
            }
        }
        SessionStatement::Reset { name } if name == "all" => {
            fx.ops.push(SessionOp::ResetAll);
            fx.restore.add(Restore::All);
        }
        SessionStatement::Reset { name } => reset_effects(name, fx),
        SessionStatement::DiscardAll => {
            fx.ops.push(SessionOp::ResetAll);
            fx.ops.push(SessionOp::SqlDeallocate(None));
            fx.ops.push(SessionOp::Unlisten(None));
            fx.restore.add(Restore::All);
            fx.forget_statements = true;
        }
        SessionStatement::Deallocate { name: None } => {
            fx.ops.push(SessionOp::SqlDeallocate(None));
            fx.forget_statements = true;
        }
        SessionStatement::Deallocate { name: Some(name) } => {
            fx.ops.push(SessionOp::SqlDeallocate(Some(name.clone())));
            fx.sql_names.push(name.clone());
        }
        SessionStatement::Prepare { name: Some(name) } => {
            fx.ops.push(SessionOp::SqlPrepare {
                name: name.clone(),
                text: Arc::from(text),
            });
            fx.sql_names.push(name.clone());
        }
        SessionStatement::Execute { name: Some(name) } => fx.sql_names.push(name.clone()),
        SessionStatement::Begin => fx.ops.push(SessionOp::Begin),
        SessionStatement::Commit => fx.ops.push(SessionOp::Commit),
        SessionStatement::Rollback => fx.ops.push(SessionOp::Rollback),
        SessionStatement::Savepoint(n) => fx.ops.push(SessionOp::Savepoint(n.clone())),
        SessionStatement::Release(n) => fx.ops.push(SessionOp::Release(n.clone())),
        SessionStatement::RollbackTo(n) => fx.ops.push(SessionOp::RollbackTo(n.clone())),
        SessionStatement::Listen { channel } => {
            fx.ops.push(SessionOp::Listen(channel.clone()));
            fx.listens = true;
        }
        // (No UNLISTEN on the link after it: it listens on nothing anyway.)
        SessionStatement::Unlisten { channel } => fx.ops.push(SessionOp::Unlisten(channel.clone())),
        SessionStatement::Notify => fx.ops.push(SessionOp::Notified),
        SessionStatement::Do => fx.untracked = true,
        SessionStatement::DeclareHold => fx.may_pin = true,
        _ => {}
    }
}

fn reset_effects(name: &str, fx: &mut Effects) {
    fx.restore.add(Restore::Names(vec![name.to_owned()]));
    // Also for reported settings (their values follow ParameterStatus): the
    // op makes a failed RESET visible, so the link is reset after it.
    fx.ops.push(SessionOp::Reset(name.to_owned()));
}

/// Settings that only exist inside a transaction (`SET transaction_isolation`
/// outside one is a no-op with a warning): never session state.
fn transaction_scoped(name: &str) -> bool {
    matches!(
        name,
        "transaction_isolation" | "transaction_read_only" | "transaction_deferrable"
    )
}

const CONFORMING_STRINGS: &str = "standard_conforming_strings can't be turned off through pgtenant: it reads SQL with standard conforming strings";

/// pgtenant reads SQL with standard conforming strings (backslashes are
/// literal in '...'); a session that turned them off would hide statements
/// from its parsers.
fn turns_off_conforming_strings(name: &str, value_tokens: &[Token]) -> bool {
    name == "standard_conforming_strings"
        && !value_tokens.iter().any(|t| match t {
            Token::Word(w) | Token::Str(w) => {
                matches!(w.to_lowercase().as_str(), "on" | "true" | "default")
            }
            Token::Other('1') => true,
            _ => false,
        })
}

fn set_config_effects(calls: &[SetConfig], fx: &mut Effects) {
    for call in calls {
        match call {
            SetConfig::Session { name, .. } if reported(name) || transaction_scoped(name) => {}
            SetConfig::Session { name, value } => fx.ops.push(SessionOp::Set {
                name: name.clone(),
                replay: set_config_replay(name, value),
            }),
            SetConfig::Local { .. } => {}
            // Still untracked (the link is reset before another client takes
            // it), and learned: the client's next link gets the value too.
            // Only an app's own (dotted) settings: any client may set and
            // read those, where a built-in one may be refused to it (its
            // value, learned anyway, would then fail the client's next link).
            SetConfig::Computed {
                name: Some(name),
                learn: true,
            } if name.contains('.') => {
                fx.untracked = true;
                fx.learn.push(name.clone());
            }
            SetConfig::Computed { .. } | SetConfig::Escaped => fx.untracked = true,
        }
    }
}

pub fn plan_query(sql: &[u8], rules: Rules) -> QueryPlan {
    if !may_touch_session(sql, rules.watch_transaction) {
        return QueryPlan::default();
    }
    let text = String::from_utf8_lossy(sql);
    if let Some(why) = parsed::parse(&text).and_then(|s| parsed::guard(&s, rules.guard)) {
        return QueryPlan::refuse(INSUFFICIENT_PRIVILEGE, why);
    }
    let stmts = statements_with_text(&text);
    let mut plan = QueryPlan::default();
    for (tokens, stmt_text) in &stmts {
        if let Some(why) = guard_in_tokens(tokens, rules.guard, 2, false) {
            return QueryPlan::refuse(INSUFFICIENT_PRIVILEGE, why);
        }
        let calls = set_config_calls(tokens);
        if calls.iter().any(|c| match c {
            SetConfig::Session { name, value }
            | SetConfig::Local {
                name,
                value: Some(value),
            } => turns_off_conforming_strings(name, &[Token::Str(value.clone())]),
            SetConfig::Local { name, value: None }
            | SetConfig::Computed {
                name: Some(name), ..
            } => name == "standard_conforming_strings",
            SetConfig::Computed { name: None, .. } | SetConfig::Escaped => false,
        }) {
            return QueryPlan::refuse(FEATURE_NOT_SUPPORTED, CONFORMING_STRINGS.to_owned());
        }
        set_config_effects(&calls, &mut plan.effects);
        plan.effects.may_pin |= takes_a_pin(tokens);
        if tokens.iter().any(|t| is_word(Some(t), "pg_notify")) {
            plan.effects.ops.push(SessionOp::Notified);
        }
        // `EXPLAIN EXECUTE p`, `CREATE TABLE t AS EXECUTE p`: p must be the
        // client's own (and never one of pgtenant's names).
        if let Some(name) = embedded_execute(tokens) {
            if rules.extended && rules.transaction_mode {
                return QueryPlan::refuse(
                    FEATURE_NOT_SUPPORTED,
                    "EXECUTE of an SQL-level prepared statement over the extended protocol is not supported in transaction pooling mode; send it as a simple query".to_owned(),
                );
            }
            if let Some(why) = reserved(&name) {
                return QueryPlan::refuse(RESERVED_NAME, why);
            }
            plan.effects.sql_names.push(name);
        }
        let Some(kind) = classify(tokens) else {
            continue;
        };
        if let Some(why) = guard_refusal(&kind, rules.guard) {
            return QueryPlan::refuse(INSUFFICIENT_PRIVILEGE, why);
        }
        if let Some(why) = reserved_name(&kind) {
            return QueryPlan::refuse(RESERVED_NAME, why);
        }
        if let SessionStatement::Set { name, .. } = &kind {
            if turns_off_conforming_strings(name, tokens) {
                return QueryPlan::refuse(FEATURE_NOT_SUPPORTED, CONFORMING_STRINGS.to_owned());
            }
        }
        if rules.transaction_mode {
            if let Some(why) = pooling_refusal(&kind, stmts.len(), rules.extended) {
                return QueryPlan::refuse(FEATURE_NOT_SUPPORTED, why);
            }
        }
        effects_of(&kind, stmt_text, &mut plan.effects);
        if let SessionStatement::Deallocate { name: Some(n) } = kind {
            plan.deallocate = Some(n.into_bytes());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(transaction_mode: bool, guard: Guard) -> Rules {
        Rules {
            transaction_mode,
            extended: false,
            guard,
            watch_transaction: false,
        }
    }

    fn refused(sql: &str, transaction_mode: bool, guard: Guard) -> Option<&'static str> {
        plan_query(sql.as_bytes(), rules(transaction_mode, guard))
            .refuse
            .map(|r| r.0)
    }

    fn effects(sql: &str) -> Effects {
        let plan = plan_query(sql.as_bytes(), rules(true, Guard::Role));
        assert_eq!(plan.refuse, None, "{sql}");
        plan.effects
    }

    fn set(name: &str, replay: &str) -> SessionOp {
        SessionOp::Set {
            name: name.into(),
            replay: replay.into(),
        }
    }

    #[test]
    fn settings_are_followed_not_refused() {
        assert_eq!(
            effects("SET statement_timeout = '50ms'").ops,
            vec![set("statement_timeout", "SET statement_timeout = '50ms'")]
        );
        assert_eq!(
            effects("select 1; set SESSION Work_Mem to '64MB'; SET LOCAL lock_timeout = 1").ops,
            vec![set("work_mem", "set SESSION Work_Mem to '64MB'")]
        );
        assert_eq!(
            effects("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE").ops,
            vec![set(
                "default_transaction_isolation",
                "SET default_transaction_isolation = 'serializable'"
            )]
        );
        assert_eq!(
            effects("SELECT set_config('myapp.user_id', '7', false)").ops,
            vec![set(
                "myapp.user_id",
                "SELECT pg_catalog.set_config('myapp.user_id', '7', false)"
            )]
        );
        assert!(effects("SELECT set_config('myapp.user_id', '7', true)").is_empty());
        let bound = effects("SELECT set_config('myapp.user_id', $1, false)");
        assert!(bound.untracked);
        assert_eq!(bound.learn, vec!["myapp.user_id".to_owned()]);
        let learned = |sql: &str| effects(sql).learn;
        assert_eq!(
            learned("SELECT set_config('app.x', 'a' || f($1, (2)), false)"),
            vec!["app.x".to_owned()]
        );
        // Not learned: a computed scope, a built-in setting (it may be
        // refused to the client), a computed name, a reported setting, a name
        // whose literal is only the start of an expression.
        // Transaction-local whatever its value: nothing to follow.
        let local = effects("SELECT set_config('app.x', $1, true)");
        assert!(!local.untracked && local.learn.is_empty());
        for sql in [
            "SELECT set_config('app.x', $1, $2)",
            "SELECT set_config('statement_timeout', $1, false)",
            "SELECT set_config(lower('APP.X'), $1, false)",
            "SELECT set_config('application_name', $1, false)",
            "SELECT set_config('app' || '.x', $1, false)",
        ] {
            assert!(effects(sql).untracked, "{sql}");
            assert_eq!(learned(sql), Vec::<String>::new(), "{sql}");
        }
        assert!(effects("DO $$BEGIN SET statement_timeout = 1; END$$").untracked);
        assert_eq!(
            effects("SET application_name = 'x'"),
            Effects::default(),
            "reported settings follow ParameterStatus"
        );
        assert_eq!(
            effects("RESET application_name").restore,
            Restore::Names(vec!["application_name".into()])
        );
        let to_default = effects("SET work_mem TO DEFAULT");
        assert_eq!(to_default.ops, vec![SessionOp::Reset("work_mem".into())]);
        assert_eq!(to_default.restore, Restore::Names(vec!["work_mem".into()]));
        let asyncpg = effects("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;");
        assert_eq!(
            asyncpg.ops,
            vec![SessionOp::Unlisten(None), SessionOp::ResetAll]
        );
        assert_eq!(asyncpg.restore, Restore::All);
        assert!(!asyncpg.listens, "no UNLISTEN * behind an UNLISTEN");
        let listen = effects("LISTEN jobs; NOTIFY jobs, 'x'; UNLISTEN \"Other\"");
        assert_eq!(
            listen.ops,
            vec![
                SessionOp::Listen("jobs".into()),
                SessionOp::Notified,
                SessionOp::Unlisten(Some("Other".into()))
            ]
        );
        assert!(listen.listens);
        assert!(!effects("NOTIFY jobs").listens);
        assert_eq!(effects("NOTIFY jobs").ops, vec![SessionOp::Notified]);
        assert_eq!(
            effects("SELECT pg_notify('jobs', 'x')").ops,
            vec![SessionOp::Notified]
        );
        let discard = effects("DISCARD ALL");
        assert!(discard.forget_statements && discard.restore == Restore::All);
        assert!(effects("SELECT pg_try_advisory_lock(42)").may_pin);
        assert!(!effects("SELECT pg_advisory_xact_lock(42)").may_pin);
        assert!(effects("DECLARE c CURSOR WITH HOLD FOR SELECT 1").may_pin);
        assert!(effects("CREATE TEMP TABLE x (a int)").may_pin);
        assert!(effects("CREATE TABLE pg_temp.x AS SELECT 1").may_pin);
        assert!(effects("SET transaction_isolation = 'serializable'").is_empty());
        assert_eq!(
            effects("EXPLAIN ANALYZE EXECUTE q(1)").sql_names,
            vec!["q".to_owned()]
        );
        assert_eq!(
            effects("GRANT EXECUTE ON FUNCTION f() TO x").sql_names,
            Vec::<String>::new()
        );
    }

    #[test]
    fn transaction_control_is_followed_while_watched() {
        let watched = Rules {
            watch_transaction: true,
            ..rules(true, Guard::Role)
        };
        assert_eq!(
            plan_query(b"ROLLBACK TO SAVEPOINT s", watched).effects.ops,
            vec![SessionOp::RollbackTo("s".into())]
        );
        assert_eq!(
            plan_query(b"ROLLBACK", rules(true, Guard::Role))
                .effects
                .ops,
            vec![]
        );
    }

    #[test]
    fn refusals_only_where_they_apply() {
        assert_eq!(
            refused("SET statement_timeout = 5", true, Guard::Role),
            None
        );
        assert_eq!(
            refused("select 1; /* hi */ listen x", true, Guard::Role),
            None
        );
        assert_eq!(refused("PREPARE p AS SELECT 1", true, Guard::Role), None);
        let extended = Rules {
            extended: true,
            ..rules(true, Guard::Role)
        };
        assert_eq!(
            plan_query(b"EXECUTE p", extended).refuse.map(|r| r.0),
            Some("0A000")
        );
        assert_eq!(refused("EXECUTE pgt3_1", true, Guard::Role), Some("42939"));
        assert_eq!(
            refused("EXPLAIN EXECUTE pgt3_1", true, Guard::Role),
            Some("42939")
        );
        for sql in [
            "SET standard_conforming_strings = off",
            "SET standard_conforming_strings TO 'false'",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SET LOCAL standard_conforming_strings = off",
            "SELECT set_config('standard_conforming_strings', 'of' || 'f', false)",
        ] {
            assert_eq!(refused(sql, true, Guard::Role), Some("0A000"), "{sql}");
        }
        assert_eq!(effects("SET transaction_timeout = '5s'").ops.len(), 1);
        let extended = Rules {
            extended: true,
            ..rules(true, Guard::Role)
        };
        assert_eq!(
            plan_query(b"EXPLAIN ANALYZE EXECUTE q", extended)
                .refuse
                .map(|r| r.0),
            Some("0A000")
        );
        assert_eq!(
            refused("SET standard_conforming_strings = on", true, Guard::Role),
            None
        );
        assert_eq!(
            effects("PREPARE q (int) AS SELECT $1; EXECUTE q(1)").sql_names,
            vec!["q".to_owned(), "q".to_owned()]
        );
        assert_eq!(
            refused("select 1; DEALLOCATE s1", true, Guard::Role),
            Some("0A000")
        );
        assert_eq!(
            plan_query(b"deallocate s1", rules(true, Guard::Role)).deallocate,
            Some(b"s1".to_vec())
        );
        for sql in ["RESET ALL", "DISCARD ALL"] {
            assert_eq!(refused(sql, true, Guard::Context), None, "{sql}");
        }
    }

    #[test]
    fn guard_refuses_context_changes_in_any_disguise() {
        for sql in [
            "SET search_path = t_other",
            "set LOCAL search_path to t_other",
            "SET SCHEMA 't_other'",
            "RESET search_path",
            "SET ROLE other",
            "SET SESSION AUTHORIZATION other",
            "SET pgtenant.tenant_id = 'x'",
            "select 1; /* ; */ SET search_path = x",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT pg_catalog.set_config('SEARCH_PATH', 'x', true)",
            "SELECT set_config('pgtenant.tenant_id', 'x', false)",
            "SELECT set_config(lower('SEARCH_PATH'), 'x', false)",
            "select set_config ( 'role' , 'x', false)",
            "DO $$BEGIN PERFORM set_config('search_path', 'x', false); END$$",
            "DO $f$ BEGIN EXECUTE 'SET search_path = t_b'; END $f$",
            "SET \"search_path\" = t_b",
            "ALTER ROLE CURRENT_USER SET row_security = off",
            "alter user current_user password 'x'",
            "UPDATE pg_settings SET setting = 't_b' WHERE name = 'search_path'",
            "DO $$BEGIN PERFORM \"set_config\"('search_path', 't_b', false); END$$",
            // Adjacent literals join across a newline; U& escapes are undecoded.
            "SELECT set_config('search'\n'_path', 't_b', false)",
            "SELECT set_config(U&'search\\005fpath', 't_b', false)",
        ] {
            assert_eq!(refused(sql, true, Guard::Context), Some("42501"), "{sql}");
        }
        for sql in [
            "SELECT set_config('application_name', 'x', false)",
            "SELECT * FROM dataset",
            "SELECT 'SET search_path = t_initech' AS s",
            "SELECT $$SET pgtenant.tenant_id = 'x'$$",
            "INSERT INTO notes(body) VALUES ('RESET ALL; set_config(''pgtenant.tenant_id'', ''x'', false)')",
            "SELECT 1 /* SET search_path = t_b */",
        ] {
            assert_eq!(refused(sql, true, Guard::Context), None, "{sql}");
        }
    }

    #[test]
    fn role_links_guard_identity_but_not_search_path() {
        assert_eq!(
            refused("SET search_path = t_a, public", true, Guard::Role),
            None
        );
        for sql in [
            "SET ROLE postgres",
            "RESET role",
            "SET SESSION AUTHORIZATION postgres",
            "RESET SESSION AUTHORIZATION",
            "SET LOCAL pgtenant.tenant_id = 'x'",
            "SELECT set_config('pgtenant.tenant_id', 'x', false)",
            "select 1; set role postgres",
            "SELECT set_config('ro'\n'le', 'postgres', false)",
            "SELECT set_config(U&'r\\006fle', 'postgres', false)",
        ] {
            assert_eq!(refused(sql, true, Guard::Role), Some("42501"), "{sql}");
        }
    }
}
