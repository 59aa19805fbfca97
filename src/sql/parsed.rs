//! The guard's parser layer: sqlparser's PostgreSQL AST, for statements that
//! passed the pre-filter. It finds context changes by structure (SET/RESET of
//! a protected setting, SET ROLE, SET SESSION AUTHORIZATION, RESET ALL,
//! DISCARD ALL, and `set_config(...)` anywhere in any expression, however
//! nested in subqueries, CTEs or function arguments).
//!
//! sqlparser does not know all of PostgreSQL (some DDL, `DO` bodies, which are
//! strings to it), so the lexer layer (`classify`) runs as well and a statement
//! is refused when either layer objects: a failed parse never lets anything
//! through. Neither layer is the boundary; PostgreSQL is (SPEC §5).

use sqlparser::ast::{
    visit_expressions, visit_statements, DiscardObject, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, ObjectName, Reset, Set, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Settings that make up a tenant's context (lowercase names).
pub fn protected(name: &str) -> bool {
    matches!(name, "search_path" | "role" | "session_authorization")
        || name.starts_with("pgtenant.")
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
pub fn guard(stmts: &Vec<Statement>) -> Option<String> {
    let by_statement = visit_statements(stmts, |s| match statement_refusal(s) {
        Some(why) => ControlFlow::Break(why),
        None => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(why) = by_statement {
        return Some(why);
    }
    match visit_expressions(stmts, |e| match set_config_refusal(e) {
        Some(why) => ControlFlow::Break(why),
        None => ControlFlow::Continue(()),
    }) {
        ControlFlow::Break(why) => Some(why),
        ControlFlow::Continue(()) => None,
    }
}

fn statement_refusal(s: &Statement) -> Option<String> {
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
            Reset::ALL => Some(format!("RESET ALL is not allowed: {MANAGED}")),
            Reset::SessionAuthorization => Some(format!(
                "RESET SESSION AUTHORIZATION is not allowed: {MANAGED}"
            )),
            Reset::ConfigurationParameter(n) => {
                let name = setting_name(n);
                protected(&name).then(|| format!("RESET {name} is not allowed: {MANAGED}"))
            }
        },
        Statement::Discard {
            object_type: DiscardObject::ALL,
        } => Some(format!("DISCARD ALL is not allowed: {MANAGED}")),
        _ => None,
    }
}

/// `set_config(name, ...)` with a protected or computed name.
fn set_config_refusal(e: &Expr) -> Option<String> {
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
        Some(name) if !protected(&name.to_lowercase()) => None,
        Some(name) => Some(format!(
            "set_config('{name}', ...) is not allowed: {MANAGED}"
        )),
        None => Some(format!(
            "set_config() with a computed setting name is not allowed: {MANAGED}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> Option<String> {
        guard(&parse(sql).unwrap_or_else(|| panic!("sqlparser parses {sql}")))
    }

    #[test]
    fn finds_context_changes_by_structure() {
        for sql in [
            "SET search_path = x",
            "SET LOCAL search_path TO x",
            "set SESSION \"search_path\" = x",
            "SET pgtenant.tenant_id = 'x'",
            "RESET search_path",
            "RESET ALL",
            "DISCARD ALL",
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
        ] {
            assert_eq!(refused(sql), None, "{sql}");
        }
    }
}
