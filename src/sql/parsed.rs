//! The guard's parser layer: sqlparser's PostgreSQL AST, for statements that
//! passed the pre-filter. It finds context changes by structure (SET/RESET of
//! a protected setting, SET ROLE, SET SESSION AUTHORIZATION, and
//! `set_config(...)` anywhere in any expression, however nested in
//! subqueries, CTEs or function arguments). `RESET ALL` and `DISCARD ALL`
//! pass: pgtenant restores the context after them itself.
//!
//! sqlparser does not know all of PostgreSQL (some DDL, `DO` bodies, which are
//! strings to it), so the lexer layer (`classify`) runs as well and a statement
//! is refused when either layer objects: a failed parse never lets anything
//! through. Neither layer is the boundary; PostgreSQL is (SPEC §5).

use sqlparser::ast::{
    visit_expressions, visit_statements, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    ObjectName, Reset, Set, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Which settings a link's tenant context is made of (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Role-isolated links: the login role is the boundary; `search_path` is
    /// an ordinary setting.
    Role,
    /// Context-isolated links: `search_path` is part of the context too.
    Context,
}

impl Guard {
    /// The guard of a tenant with a context (context isolation) or without.
    pub fn of(context_isolated: bool) -> Guard {
        if context_isolated {
            Guard::Context
        } else {
            Guard::Role
        }
    }
}

/// Settings a client may not change on a link guarded by `guard` (lowercase).
pub fn protected(name: &str, guard: Guard) -> bool {
    matches!(name, "role" | "session_authorization")
        || name.starts_with("pgtenant.")
        || (guard == Guard::Context && name == "search_path")
}

const MANAGED: &str = "pgtenant manages the tenant context";

fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_owned())
        .collect::<Vec<_>>()
        .join(".")
        .to_lowercase()
}

/// Parses `sql` (PostgreSQL dialect); None when sqlparser can't.
pub fn parse(sql: &str) -> Option<Vec<Statement>> {
    Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()
}

/// Why one of `stmts` would change the tenant context, if one would.
/// (A `&Vec`: sqlparser implements `Visit` for `Vec`, not for slices.)
#[allow(clippy::ptr_arg)]
pub fn guard(stmts: &Vec<Statement>, level: Guard) -> Option<String> {
    let by_statement = visit_statements(stmts, |s| match statement_refusal(s, level) {
        Some(why) => ControlFlow::Break(why),
        None => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(why) = by_statement {
        return Some(why);
    }
    match visit_expressions(stmts, |e| match set_config_refusal(e, level) {
        Some(why) => ControlFlow::Break(why),
        None => ControlFlow::Continue(()),
    }) {
        ControlFlow::Break(why) => Some(why),
        ControlFlow::Continue(()) => None,
    }
}

fn statement_refusal(s: &Statement, level: Guard) -> Option<String> {
    let protected = |n: &str| protected(n, level);
    match s {
        Statement::Set(Set::SingleAssignment { variable, .. }) => {
            let name = setting_name(variable);
            protected(&name).then(|| format!("SET {name} is not allowed: {MANAGED}"))
        }
        Statement::Set(Set::ParenthesizedAssignments { variables, .. }) => variables
            .iter()
            .map(setting_name)
            .find(|n| protected(n))
            .map(|name| format!("SET {name} is not allowed: {MANAGED}")),
        Statement::Set(Set::MultipleAssignments { assignments }) => assignments
            .iter()
            .map(|a| setting_name(&a.name))
            .find(|n| protected(n))
            .map(|name| format!("SET {name} is not allowed: {MANAGED}")),
        Statement::Set(Set::SetRole { .. }) => Some(format!("SET ROLE is not allowed: {MANAGED}")),
        Statement::Set(Set::SetSessionAuthorization(_)) => Some(format!(
            "SET SESSION AUTHORIZATION is not allowed: {MANAGED}"
        )),
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => None,
            Reset::SessionAuthorization => Some(format!(
                "RESET SESSION AUTHORIZATION is not allowed: {MANAGED}"
            )),
            Reset::ConfigurationParameter(n) => {
                let name = setting_name(n);
                protected(&name).then(|| format!("RESET {name} is not allowed: {MANAGED}"))
            }
        },
        _ => None,
    }
}

/// `set_config(name, ...)` with a protected name, or with a computed one on
/// a context link (on a role link the role is the boundary: a computed name
/// runs, and pgtenant resets what it may have changed before anyone else
/// uses the link).
fn set_config_refusal(e: &Expr, level: Guard) -> Option<String> {
    let Expr::Function(f) = e else {
        return None;
    };
    let last = f.name.0.last()?.to_string();
    if !last.trim_matches('"').eq_ignore_ascii_case("set_config") {
        return None;
    }
    let first = match &f.args {
        FunctionArguments::List(list) => list.args.first(),
        _ => None,
    };
    let literal = match first {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            Value::DollarQuotedString(d) => Some(d.value.clone()),
            _ => None,
        },
        _ => None,
    };
    match literal {
        Some(name) if !protected(&name.to_lowercase(), level) => None,
        Some(name) => Some(format!(
            "set_config('{name}', ...) is not allowed: {MANAGED}"
        )),
        None if level == Guard::Role => None,
        None => Some(format!(
            "set_config() with a computed setting name is not allowed: {MANAGED}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> Option<String> {
        guard(
            &parse(sql).unwrap_or_else(|| panic!("sqlparser parses {sql}")),
            Guard::Context,
        )
    }

    #[test]
    fn finds_context_changes_by_structure() {
        for sql in [
            "SET search_path = x",
            "SET LOCAL search_path TO x",
            "set SESSION \"search_path\" = x",
            "SET pgtenant.tenant_id = 'x'",
            "RESET search_path",
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT pg_catalog.set_config('PGTENANT.TENANT_ID', 'x', false)",
            "SELECT 1 FROM (SELECT set_config(lower('ROLE'), 'x', true)) s",
            "WITH c AS (SELECT set_config('role', 'x', false)) SELECT * FROM c",
            "SELECT 1; SET search_path = x",
        ] {
            assert!(refused(sql).is_some(), "{sql}");
        }
        for sql in [
            "SET application_name = 'x'",
            "SELECT set_config('application_name', 'x', false)",
            "SELECT * FROM settings WHERE name = 'search_path'",
            "SELECT 'SET search_path = x'",
            "RESET ALL",
            "DISCARD ALL",
        ] {
            assert_eq!(refused(sql), None, "{sql}");
        }
        let role = |sql: &str| guard(&parse(sql).expect("parses"), Guard::Role);
        assert_eq!(role("SET search_path = t_x, public"), None);
        assert_eq!(role("SELECT set_config(lower('X'), 'x', false)"), None);
        assert!(role("SET ROLE postgres").is_some());
        assert!(role("RESET role").is_some());
        assert!(role("SET LOCAL pgtenant.tenant_id = 'x'").is_some());
        assert!(role("SELECT set_config('pgtenant.tenant_id', 'x', false)").is_some());
    }
}
