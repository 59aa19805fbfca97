//! Which session statements a pooled client may run, decided from the SQL text
//! (see `sql`): what transaction pooling can't support (0A000), what would change
//! the tenant context on shared links (42501), and what invalidates pgtenant's
//! knowledge of a link (prepared statements, settings).

use super::rewrite::TRACKED_PARAMS;
use crate::sql::{classify, may_touch_session, statements, SessionStatement, Token};

pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
const REFUSAL_HINT: &str = "use SET LOCAL inside a transaction, a tier setting (e.g. statement_timeout), or pool_mode = \"session\"";
const GUARD_HINT: &str = "the tenant's schema and identity are set by pgtenant for every transaction; connect as the tenant you mean";

pub fn hint(code: &str) -> &'static str {
    if code == INSUFFICIENT_PRIVILEGE {
        GUARD_HINT
    } else {
        REFUSAL_HINT
    }
}

/// What pgtenant does about one query string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueryPlan {
    /// Refuse it: (SQLSTATE, message).
    pub refuse: Option<(&'static str, String)>,
    /// It may drop prepared statements or settings pgtenant can't observe
    /// (DISCARD, DEALLOCATE ALL, RESET): the link must not be pooled again.
    pub poisons_link: bool,
    /// DISCARD ALL / DEALLOCATE ALL: the client's own statements are gone.
    pub forget_statements: bool,
    /// The whole query is `DEALLOCATE name`.
    pub deallocate: Option<Vec<u8>>,
}

impl QueryPlan {
    fn refuse(code: &'static str, why: String) -> Self {
        QueryPlan {
            refuse: Some((code, why)),
            ..QueryPlan::default()
        }
    }
}

use crate::sql::parsed::{self, protected};

/// Settings a client may change with a plain SET under transaction pooling:
/// the server reports them, so pgtenant follows and replays them.
fn settable_in_transaction_mode(name: &str) -> bool {
    TRACKED_PARAMS.contains(&name) && name != "extra_float_digits"
}

const MANAGED: &str = "pgtenant manages the tenant context";

/// Context isolation: statements that would change the tenant context.
fn guard_refusal(stmt: &SessionStatement) -> Option<String> {
    match stmt {
        SessionStatement::Set { name, .. } if protected(name) => {
            Some(format!("SET {name} is not allowed: {MANAGED}"))
        }
        SessionStatement::Reset { name } if protected(name) || name == "all" => {
            Some(format!("RESET {name} is not allowed: {MANAGED}"))
        }
        SessionStatement::DiscardAll => Some(format!("DISCARD ALL is not allowed: {MANAGED}")),
        _ => None,
    }
}

/// `ALTER ROLE/USER` (a role may change its own defaults and password,
/// which on shared links would reach every tenant of the tier) and writes to
/// `pg_settings` (another way to SET).
fn role_or_settings_refusal(tokens: &[Token]) -> Option<String> {
    let word = |t: Option<&Token>, w: &str| {
        matches!(t, Some(Token::Word(x)) if x == w)
            || matches!(t, Some(Token::QuotedIdent(x)) if x == w)
    };
    if word(tokens.first(), "alter") && (word(tokens.get(1), "role") || word(tokens.get(1), "user"))
    {
        return Some(format!("ALTER ROLE is not allowed: {MANAGED}"));
    }
    let writes = ["update", "insert", "delete"]
        .iter()
        .any(|w| tokens.iter().any(|t| word(Some(t), w)));
    if writes && tokens.iter().any(|t| word(Some(t), "pg_settings")) {
        return Some(format!("writing pg_settings is not allowed: {MANAGED}"));
    }
    None
}

/// `set_config(name, ...)` anywhere in a statement, with a protected or
/// computed (non-literal) name.
fn set_config_refusal(tokens: &[Token]) -> Option<String> {
    tokens.windows(2).enumerate().find_map(|(i, w)| {
        let named = match &w[0] {
            Token::Word(n) => n == "set_config",
            Token::QuotedIdent(n) => n == "set_config",
            _ => false,
        };
        if !named || w[1] != Token::Other('(') {
            return None;
        }
        match tokens.get(i + 2) {
            Some(Token::Str(name)) if !protected(&name.to_lowercase()) => None,
            Some(Token::Str(name)) => Some(format!(
                "set_config('{name}', ...) is not allowed: {MANAGED}"
            )),
            _ => Some(format!(
                "set_config() with a computed setting name is not allowed: {MANAGED}"
            )),
        }
    })
}

/// The guard over one statement and, `depth` levels down, over SQL inside its
/// string literals (DO bodies, EXECUTE 'SET search_path ...'). Dynamic SQL
/// assembled at run time stays invisible: under context isolation the schema
/// is a convenience, not a security boundary (role isolation is one).
fn guard_in_tokens(tokens: &[Token], depth: u8) -> Option<String> {
    if let Some(why) = set_config_refusal(tokens).or_else(|| role_or_settings_refusal(tokens)) {
        return Some(why);
    }
    if depth == 0 {
        return None;
    }
    tokens.iter().find_map(|t| match t {
        Token::Str(body) if may_touch_session(body.as_bytes()) => {
            statements(body).iter().find_map(|inner| {
                guard_in_tokens(inner, depth - 1)
                    .or_else(|| classify(inner).as_ref().and_then(guard_refusal))
            })
        }
        _ => None,
    })
}

/// Why a statement can't run under transaction pooling, if it can't.
fn pooling_refusal(stmt: &SessionStatement, statements_in_query: usize) -> Option<String> {
    let tail = "in transaction pooling mode";
    match stmt {
        SessionStatement::Set { name, local: false } if !settable_in_transaction_mode(name) => Some(format!(
            "SET {name} is not supported {tail}: the setting would stay on a shared server connection"
        )),
        SessionStatement::Listen => Some(format!(
            "LISTEN is not supported {tail}: notifications would go to whichever client next uses the server connection"
        )),
        SessionStatement::Prepare | SessionStatement::Execute => Some(format!(
            "SQL PREPARE/EXECUTE is not supported {tail}: the statement would exist on one server connection only; use protocol-level prepared statements (your driver's)"
        )),
        SessionStatement::Deallocate { name: Some(_) } if statements_in_query > 1 => {
            Some(format!("DEALLOCATE name must be sent on its own {tail}"))
        }
        _ => None,
    }
}

pub fn plan_query(sql: &[u8], transaction_mode: bool, guarded: bool) -> QueryPlan {
    if !may_touch_session(sql) {
        return QueryPlan::default();
    }
    let text = String::from_utf8_lossy(sql);
    if guarded {
        if let Some(why) = parsed::parse(&text).and_then(|s| parsed::guard(&s)) {
            return QueryPlan::refuse(INSUFFICIENT_PRIVILEGE, why);
        }
    }
    let stmts = statements(&text);
    let mut plan = QueryPlan::default();
    for tokens in &stmts {
        if guarded {
            if let Some(why) = guard_in_tokens(tokens, 2) {
                return QueryPlan::refuse(INSUFFICIENT_PRIVILEGE, why);
            }
        }
        let Some(kind) = classify(tokens) else {
            continue;
        };
        if guarded {
            if let Some(why) = guard_refusal(&kind) {
                return QueryPlan::refuse(INSUFFICIENT_PRIVILEGE, why);
            }
        }
        if transaction_mode {
            if let Some(why) = pooling_refusal(&kind, stmts.len()) {
                return QueryPlan::refuse(FEATURE_NOT_SUPPORTED, why);
            }
        }
        match kind {
            SessionStatement::DiscardAll | SessionStatement::Deallocate { name: None } => {
                plan.forget_statements = true;
                plan.poisons_link = true;
            }
            SessionStatement::Discard | SessionStatement::Reset { .. } => plan.poisons_link = true,
            SessionStatement::Deallocate { name: Some(n) } => {
                plan.deallocate = Some(n.into_bytes())
            }
            _ => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str, transaction_mode: bool, guarded: bool) -> Option<&'static str> {
        plan_query(sql.as_bytes(), transaction_mode, guarded)
            .refuse
            .map(|r| r.0)
    }

    #[test]
    fn refusals_only_where_they_apply() {
        assert_eq!(
            refused("SET statement_timeout = 5", true, false),
            Some("0A000")
        );
        assert_eq!(refused("SET statement_timeout = 5", false, false), None);
        assert_eq!(
            refused("SET LOCAL statement_timeout = 5", true, false),
            None
        );
        assert_eq!(refused("SET application_name = 'x'", true, false), None);
        assert_eq!(
            refused("select 1; /* hi */ listen x", true, false),
            Some("0A000")
        );
        assert_eq!(refused("PREPARE p AS SELECT 1", true, false), Some("0A000"));
        assert_eq!(
            refused("select 1; DEALLOCATE s1", true, false),
            Some("0A000")
        );
        let p = plan_query(b"DISCARD ALL", true, false);
        assert!(p.forget_statements && p.poisons_link && p.refuse.is_none());
        assert!(plan_query(b"RESET ALL", true, false).poisons_link);
        assert_eq!(
            plan_query(b"deallocate s1", true, false).deallocate,
            Some(b"s1".to_vec())
        );
    }

    #[test]
    fn guard_refuses_context_changes_in_any_disguise() {
        for sql in [
            "SET search_path = t_other",
            "set LOCAL search_path to t_other",
            "SET SCHEMA 't_other'",
            "RESET search_path",
            "RESET ALL",
            "DISCARD ALL",
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
        ] {
            assert_eq!(refused(sql, true, true), Some("42501"), "{sql}");
        }
        assert_eq!(
            refused(
                "SELECT set_config('application_name', 'x', false)",
                true,
                true
            ),
            None
        );
        assert_eq!(refused("SELECT * FROM dataset", true, true), None);
    }
}
