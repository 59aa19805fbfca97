//! Which statements change session state, and which setting they change.

use super::lexer::Token;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatement {
    /// `SET [SESSION | LOCAL] name ...` and its special forms (TIME ZONE, NAMES,
    /// SCHEMA, ROLE, SESSION AUTHORIZATION). `name` is lowercased.
    Set {
        name: String,
        local: bool,
    },
    /// `RESET name`; `RESET ALL` has name "all".
    Reset {
        name: String,
    },
    DiscardAll,
    /// `DISCARD PLANS | SEQUENCES | TEMP`.
    Discard,
    /// `DEALLOCATE [PREPARE] name`; `None` for ALL.
    Deallocate {
        name: Option<String>,
    },
    Listen,
    Unlisten,
    /// SQL-level `PREPARE name AS ...` / `EXECUTE name`: bound to one session.
    Prepare,
    Execute,
}

/// Cheap pre-filter: can `sql` contain a session statement at all? Ordinary
/// queries pay one pass over their bytes and no lexing.
pub fn may_touch_session(sql: &[u8]) -> bool {
    // One dispatch on each byte's first letter; a needle is compared only
    // where its first letter is (this runs on every query).
    let at = |i: usize, n: &[u8]| {
        sql.get(i..i + n.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(n))
    };
    (0..sql.len()).any(|i| match sql[i] | 0x20 {
        b's' => at(i, b"set"),
        b'd' => at(i, b"discard") || at(i, b"deallocate"),
        b'l' => at(i, b"listen"),
        b'p' => at(i, b"prepare"),
        b'e' => at(i, b"execute"),
        b'a' => at(i, b"alter"),
        _ => false,
    })
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Word(w)) => Some(w),
        Some(Token::QuotedIdent(q)) => Some(q),
        _ => None,
    }
}

/// A possibly qualified name (`a.b`) starting at `i`, lowercased.
fn name_at(tokens: &[Token], mut i: usize) -> Option<String> {
    let mut name = word(tokens.get(i))?.to_lowercase();
    while tokens.get(i + 1) == Some(&Token::Other('.')) {
        name.push('.');
        name.push_str(&word(tokens.get(i + 2))?.to_lowercase());
        i += 2;
    }
    Some(name)
}

/// Classifies one statement's tokens (from [`super::statements`]).
pub fn classify(tokens: &[Token]) -> Option<SessionStatement> {
    let first = match tokens.first()? {
        Token::Word(w) => w.as_str(),
        _ => return None,
    };
    match first {
        "set" => {
            let (local, at) = match word(tokens.get(1)) {
                Some("local") => (true, 2),
                Some("session")
                    if word(tokens.get(2)) != Some("authorization")
                        && word(tokens.get(2)) != Some("characteristics") =>
                {
                    (false, 2)
                }
                _ => (false, 1),
            };
            let name = match (word(tokens.get(at)), word(tokens.get(at + 1))) {
                (Some("transaction"), _) | (Some("constraints"), _) => return None,
                (Some("time"), Some("zone")) => "timezone".to_owned(),
                (Some("names"), _) => "client_encoding".to_owned(),
                (Some("schema"), _) => "search_path".to_owned(),
                (Some("xml"), Some("option")) => "xmloption".to_owned(),
                (Some("session"), Some("authorization")) => "session_authorization".to_owned(),
                (Some("session"), Some("characteristics")) => {
                    "default_transaction_isolation".to_owned()
                }
                _ => name_at(tokens, at)?,
            };
            Some(SessionStatement::Set { name, local })
        }
        "reset" => {
            let name = match (word(tokens.get(1)), word(tokens.get(2))) {
                (Some("time"), Some("zone")) => "timezone".to_owned(),
                (Some("session"), Some("authorization")) => "session_authorization".to_owned(),
                _ => name_at(tokens, 1)?,
            };
            Some(SessionStatement::Reset { name })
        }
        "discard" => Some(match word(tokens.get(1)) {
            Some("all") => SessionStatement::DiscardAll,
            _ => SessionStatement::Discard,
        }),
        "deallocate" => {
            let at = if word(tokens.get(1)) == Some("prepare") {
                2
            } else {
                1
            };
            match tokens.get(at) {
                Some(Token::Word(w)) if w == "all" => {
                    Some(SessionStatement::Deallocate { name: None })
                }
                Some(Token::Word(w)) => Some(SessionStatement::Deallocate {
                    name: Some(w.clone()),
                }),
                Some(Token::QuotedIdent(q)) => Some(SessionStatement::Deallocate {
                    name: Some(q.clone()),
                }),
                _ => None,
            }
        }
        "listen" => Some(SessionStatement::Listen),
        "prepare" => Some(SessionStatement::Prepare),
        "execute" => Some(SessionStatement::Execute),
        "unlisten" => Some(SessionStatement::Unlisten),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::statements;
    use super::*;

    fn one(sql: &str) -> Option<SessionStatement> {
        classify(&statements(sql)[0])
    }

    fn set(name: &str, local: bool) -> Option<SessionStatement> {
        Some(SessionStatement::Set {
            name: name.into(),
            local,
        })
    }

    #[test]
    fn recognises_session_statements() {
        assert_eq!(
            one("SET statement_timeout = 5"),
            set("statement_timeout", false)
        );
        assert_eq!(one("set SESSION Work_Mem to '1MB'"), set("work_mem", false));
        assert_eq!(one("SET LOCAL search_path TO x"), set("search_path", true));
        assert_eq!(one("SET TIME ZONE 'UTC'"), set("timezone", false));
        assert_eq!(
            one("SET \"pgtenant\".tenant_id = 'x'"),
            set("pgtenant.tenant_id", false)
        );
        assert_eq!(
            one("SET SESSION AUTHORIZATION bob"),
            set("session_authorization", false)
        );
        assert_eq!(one("SET ROLE bob"), set("role", false));
        assert_eq!(one("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), None);
        assert_eq!(
            one("RESET ALL"),
            Some(SessionStatement::Reset { name: "all".into() })
        );
        assert_eq!(one("DISCARD ALL"), Some(SessionStatement::DiscardAll));
        assert_eq!(
            one("DEALLOCATE PREPARE s1"),
            Some(SessionStatement::Deallocate {
                name: Some("s1".into())
            })
        );
        assert_eq!(
            one("deallocate all"),
            Some(SessionStatement::Deallocate { name: None })
        );
        assert_eq!(one("LISTEN chan"), Some(SessionStatement::Listen));
        assert_eq!(one("SELECT 1"), None);
    }

    #[test]
    fn prefilter_is_cheap_and_sound() {
        assert!(!may_touch_session(b"SELECT * FROM customers WHERE id = $1"));
        assert!(may_touch_session(b"select 1; SeT x=1"));
        assert!(may_touch_session(b"DISCARD ALL"));
        assert!(may_touch_session(b"/**/LiStEn x"));
    }
}
