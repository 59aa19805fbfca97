//! Which statements change session state, which setting they change, and
//! which control the transaction (so a SET can be undone with it).

use super::lexer::Token;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatement {
    /// `SET [SESSION | LOCAL] name ...` and its special forms (TIME ZONE, NAMES,
    /// SCHEMA, ROLE, SESSION AUTHORIZATION, XML OPTION). `name` is lowercased;
    /// `to_default` for `SET name TO DEFAULT` (a RESET by another name).
    Set {
        name: String,
        local: bool,
        to_default: bool,
    },
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION ...`: the settings it
    /// changes, with their values.
    Characteristics(Vec<(&'static str, &'static str)>),
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
    /// `LISTEN channel`: the channel as PostgreSQL names it (unquoted
    /// lowercased, truncated to 63 bytes).
    Listen {
        channel: String,
    },
    /// `UNLISTEN channel`; `None` for `UNLISTEN *`.
    Unlisten {
        channel: Option<String>,
    },
    Notify,
    /// SQL-level `PREPARE name AS ...` / `EXECUTE name`: bound to one session.
    Prepare {
        name: Option<String>,
    },
    Execute {
        name: Option<String>,
    },
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`, `PREPARE TRANSACTION` (session settings of a prepared
    /// transaction stay, as after a commit).
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    /// An anonymous code block: it may run anything, out of sight.
    Do,
    /// `DECLARE ... WITH HOLD`: a cursor that outlives its transaction.
    DeclareHold,
    Close,
}

/// The first two letters (lowercase) of the words `may_touch_session` looks
/// for, as a table: `table[first] >> (second - 'a') & 1`.
const fn bigrams(lists: &[&[&[u8; 2]]]) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut l = 0;
    while l < lists.len() {
        let mut k = 0;
        while k < lists[l].len() {
            table[lists[l][k][0] as usize] |= 1 << (lists[l][k][1] - b'a');
            k += 1;
        }
        l += 1;
    }
    table
}

/// set, discard, deallocate, do, listen, prepare, execute, alter, advisory,
/// hold, temp, close, notify.
const SESSION_WORDS: &[&[u8; 2]] = &[
    b"se", b"di", b"de", b"do", b"li", b"pr", b"ex", b"al", b"ad", b"ho", b"te", b"cl", b"no",
];
/// savepoint, start, end, abort, commit, rollback, release, begin.
const TRANSACTION_WORDS: &[&[u8; 2]] = &[b"sa", b"st", b"en", b"ab", b"co", b"ro", b"re", b"be"];
static SESSION_STARTS: [u32; 256] = bigrams(&[SESSION_WORDS]);
static WATCHED_STARTS: [u32; 256] = bigrams(&[SESSION_WORDS, TRANSACTION_WORDS]);

/// Cheap pre-filter: can `sql` contain a session statement at all? Ordinary
/// queries pay one pass over their bytes and no lexing. `in_txn_watch` adds
/// transaction-control words: needed only while a client has session changes
/// in an open transaction (they must be undone if it rolls back).
pub fn may_touch_session(sql: &[u8], in_txn_watch: bool) -> bool {
    // This runs on every Query and Parse. Most letters of ordinary SQL start
    // no word looked for: one table lookup on each byte pair rules a place
    // out, and only the rare places that pass are compared with the words.
    let starts = if in_txn_watch {
        &WATCHED_STARTS
    } else {
        &SESSION_STARTS
    };
    sql.windows(2).enumerate().any(|(i, pair)| {
        let second = (pair[1] | 0x20).wrapping_sub(b'a');
        second < 26
            && (starts[(pair[0] | 0x20) as usize] >> second) & 1 == 1
            && word_at(sql, i, in_txn_watch)
    })
}

/// Does one of `may_touch_session`'s words start at `i`?
fn word_at(sql: &[u8], i: usize, in_txn_watch: bool) -> bool {
    let at = |n: &[u8]| {
        sql.get(i..i + n.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(n))
    };
    let ident = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
    // A whole word: `do` and `end` are too common inside other words.
    let word =
        |n: &[u8]| at(n) && (i == 0 || !ident(sql.get(i - 1))) && !ident(sql.get(i + n.len()));
    match sql[i] | 0x20 {
        b's' => at(b"set") || (in_txn_watch && (at(b"savepoint") || at(b"start"))),
        b'd' => at(b"discard") || at(b"deallocate") || word(b"do"),
        b'l' => at(b"listen"),
        b'p' => at(b"prepare"),
        b'e' => at(b"execute") || (in_txn_watch && word(b"end")),
        b'a' => at(b"alter") || at(b"advisory") || (in_txn_watch && at(b"abort")),
        b'h' => at(b"hold"),
        b't' => at(b"temp"),
        b'c' => at(b"close") || (in_txn_watch && at(b"commit")),
        b'n' => at(b"notify"),
        b'r' => in_txn_watch && (at(b"rollback") || at(b"release")),
        b'b' => in_txn_watch && at(b"begin"),
        _ => false,
    }
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

/// The tokens after a SET's name are `= DEFAULT` or `TO DEFAULT`.
fn sets_default(tokens: &[Token], name_end: usize) -> bool {
    let rest = &tokens[name_end.min(tokens.len())..];
    matches!(rest, [Token::Other('='), Token::Word(d)] | [Token::Word(_), Token::Word(d)] if d == "default")
        && (rest[0] == Token::Other('=') || rest[0] == Token::Word("to".into()))
}

/// `SET SESSION CHARACTERISTICS AS TRANSACTION` modes as plain settings.
fn characteristics(tokens: &[Token]) -> Vec<(&'static str, &'static str)> {
    let w = |i: usize| word(tokens.get(i));
    let mut out = Vec::new();
    let mut i = tokens
        .iter()
        .position(|t| *t == Token::Word("transaction".into()))
        .map_or(tokens.len(), |p| p + 1);
    while i < tokens.len() {
        match (w(i), w(i + 1), w(i + 2), w(i + 3)) {
            (Some("isolation"), Some("level"), Some("serializable"), _) => {
                out.push(("default_transaction_isolation", "serializable"));
                i += 3;
            }
            (Some("isolation"), Some("level"), Some("repeatable"), Some("read")) => {
                out.push(("default_transaction_isolation", "repeatable read"));
                i += 4;
            }
            (Some("isolation"), Some("level"), Some("read"), Some("committed")) => {
                out.push(("default_transaction_isolation", "read committed"));
                i += 4;
            }
            (Some("isolation"), Some("level"), Some("read"), Some("uncommitted")) => {
                out.push(("default_transaction_isolation", "read uncommitted"));
                i += 4;
            }
            (Some("read"), Some("only"), _, _) => {
                out.push(("default_transaction_read_only", "on"));
                i += 2;
            }
            (Some("read"), Some("write"), _, _) => {
                out.push(("default_transaction_read_only", "off"));
                i += 2;
            }
            (Some("deferrable"), _, _, _) => {
                out.push(("default_transaction_deferrable", "on"));
                i += 1;
            }
            (Some("not"), Some("deferrable"), _, _) => {
                out.push(("default_transaction_deferrable", "off"));
                i += 2;
            }
            _ => i += 1,
        }
    }
    out
}

fn classify_set(tokens: &[Token]) -> Option<SessionStatement> {
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
    let set = |name: &str, name_end: usize| SessionStatement::Set {
        name: name.to_owned(),
        local,
        to_default: sets_default(tokens, name_end),
    };
    Some(match (word(tokens.get(at)), word(tokens.get(at + 1))) {
        (Some("transaction"), _) | (Some("constraints"), _) => return None,
        (Some("time"), Some("zone")) => set("timezone", at + 2),
        (Some("names"), _) => set("client_encoding", at + 1),
        (Some("schema"), _) => set("search_path", at + 1),
        (Some("xml"), Some("option")) => set("xmloption", at + 2),
        (Some("session"), Some("authorization")) => set("session_authorization", at + 2),
        (Some("session"), Some("characteristics")) => {
            SessionStatement::Characteristics(characteristics(tokens))
        }
        _ => {
            let name = name_at(tokens, at)?;
            let end = at + 1 + 2 * name.matches('.').count();
            set(&name, end)
        }
    })
}

fn savepoint_name(tokens: &[Token], from: usize) -> Option<String> {
    let at = if word(tokens.get(from)) == Some("savepoint") {
        from + 1
    } else {
        from
    };
    word(tokens.get(at)).map(str::to_owned)
}

/// PostgreSQL's longest identifier (NAMEDATALEN - 1 bytes): longer ones are
/// truncated, channel names included.
const MAX_IDENTIFIER: usize = 63;

/// The channel named by `LISTEN` / `UNLISTEN`, as the server will name it.
fn channel_at(tokens: &[Token]) -> Option<String> {
    let mut name = match tokens.get(1)? {
        Token::Word(w) | Token::QuotedIdent(w) => w.clone(),
        _ => return None,
    };
    if name.len() > MAX_IDENTIFIER {
        let mut end = MAX_IDENTIFIER;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    Some(name)
}

/// Classifies one statement's tokens (from [`super::statements`]).
pub fn classify(tokens: &[Token]) -> Option<SessionStatement> {
    let first = match tokens.first()? {
        Token::Word(w) => w.as_str(),
        _ => return None,
    };
    let second = word(tokens.get(1));
    match first {
        "set" => classify_set(tokens),
        "reset" => {
            let name = match (second, word(tokens.get(2))) {
                (Some("time"), Some("zone")) => "timezone".to_owned(),
                (Some("session"), Some("authorization")) => "session_authorization".to_owned(),
                _ => name_at(tokens, 1)?,
            };
            Some(SessionStatement::Reset { name })
        }
        "discard" => Some(match second {
            Some("all") => SessionStatement::DiscardAll,
            _ => SessionStatement::Discard,
        }),
        "deallocate" => {
            let at = if second == Some("prepare") { 2 } else { 1 };
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
        "listen" => channel_at(tokens).map(|channel| SessionStatement::Listen { channel }),
        "unlisten" => match tokens.get(1) {
            Some(Token::Other('*')) => Some(SessionStatement::Unlisten { channel: None }),
            _ => channel_at(tokens).map(|c| SessionStatement::Unlisten { channel: Some(c) }),
        },
        "notify" => Some(SessionStatement::Notify),
        "prepare" if second == Some("transaction") => Some(SessionStatement::Commit),
        "prepare" => Some(SessionStatement::Prepare {
            name: second.map(str::to_owned),
        }),
        "execute" => Some(SessionStatement::Execute {
            name: second.map(str::to_owned),
        }),
        "begin" => Some(SessionStatement::Begin),
        "start" if second == Some("transaction") => Some(SessionStatement::Begin),
        "commit" | "end" if second != Some("prepared") => Some(SessionStatement::Commit),
        "rollback" | "abort" if second != Some("prepared") => {
            match tokens.iter().position(|t| *t == Token::Word("to".into())) {
                Some(to) => savepoint_name(tokens, to + 1).map(SessionStatement::RollbackTo),
                None => Some(SessionStatement::Rollback),
            }
        }
        "savepoint" => word(tokens.get(1)).map(|n| SessionStatement::Savepoint(n.to_owned())),
        "release" => savepoint_name(tokens, 1).map(SessionStatement::Release),
        "do" => Some(SessionStatement::Do),
        "declare" => {
            let hold = tokens
                .windows(2)
                .any(|w| w[0] == Token::Word("with".into()) && w[1] == Token::Word("hold".into()));
            hold.then_some(SessionStatement::DeclareHold)
        }
        "close" => Some(SessionStatement::Close),
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
            to_default: false,
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
            one("SET work_mem TO DEFAULT"),
            Some(SessionStatement::Set {
                name: "work_mem".into(),
                local: false,
                to_default: true
            })
        );
        assert_eq!(
            one("SET myapp.user_id = DEFAULT"),
            Some(SessionStatement::Set {
                name: "myapp.user_id".into(),
                local: false,
                to_default: true
            })
        );
        assert_eq!(
            one("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
            Some(SessionStatement::Characteristics(vec![
                ("default_transaction_isolation", "repeatable read"),
                ("default_transaction_read_only", "on"),
            ]))
        );
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
        assert_eq!(
            one("LISTEN chan"),
            Some(SessionStatement::Listen {
                channel: "chan".into()
            })
        );
        assert_eq!(
            one("listen \"Jobs\""),
            Some(SessionStatement::Listen {
                channel: "Jobs".into()
            })
        );
        assert_eq!(
            one(&format!("LISTEN {}", "x".repeat(70))),
            Some(SessionStatement::Listen {
                channel: "x".repeat(63)
            })
        );
        assert_eq!(
            one("UNLISTEN *"),
            Some(SessionStatement::Unlisten { channel: None })
        );
        assert_eq!(
            one("unlisten Chan"),
            Some(SessionStatement::Unlisten {
                channel: Some("chan".into())
            })
        );
        assert_eq!(one("SELECT 1"), None);
    }

    #[test]
    fn recognises_transaction_control() {
        assert_eq!(
            one("begin isolation level serializable"),
            Some(SessionStatement::Begin)
        );
        assert_eq!(one("START TRANSACTION"), Some(SessionStatement::Begin));
        assert_eq!(one("END"), Some(SessionStatement::Commit));
        assert_eq!(one("commit prepared 'x'"), None);
        assert_eq!(
            one("PREPARE TRANSACTION 'x'"),
            Some(SessionStatement::Commit)
        );
        assert_eq!(one("abort"), Some(SessionStatement::Rollback));
        assert_eq!(
            one("ROLLBACK TRANSACTION TO SAVEPOINT s1"),
            Some(SessionStatement::RollbackTo("s1".into()))
        );
        assert_eq!(
            one("rollback to \"S\""),
            Some(SessionStatement::RollbackTo("S".into()))
        );
        assert_eq!(
            one("SAVEPOINT a"),
            Some(SessionStatement::Savepoint("a".into()))
        );
        assert_eq!(
            one("RELEASE a"),
            Some(SessionStatement::Release("a".into()))
        );
        assert_eq!(
            one("release savepoint a"),
            Some(SessionStatement::Release("a".into()))
        );
        assert_eq!(
            one("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            Some(SessionStatement::DeclareHold)
        );
        assert_eq!(one("DECLARE c CURSOR FOR SELECT 1"), None);
    }

    /// The pre-filter before its bigram table: every place, every word.
    fn may_touch_session_reference(sql: &[u8], in_txn_watch: bool) -> bool {
        (0..sql.len()).any(|i| word_at(sql, i, in_txn_watch))
    }

    proptest::proptest! {
        #[test]
        fn the_bigram_table_misses_no_word(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "SET", "set", "sAvEpOiNt", "start", "discard", "deallocate", "do", "DO", "listen",
                "prepare", "execute", "end", "END", "alter", "advisory", "abort", "hold", "temp",
                "close", "commit", "notify", "rollback", "release", "begin", "s", "e", "x", "_",
                " ", ";", "'", "\u{e9}", "$1", "undo", "append", "select", "a", "SE", "t",
            ]), 0..8),
            watch in proptest::bool::ANY,
        ) {
            let sql = parts.concat();
            proptest::prop_assert_eq!(
                may_touch_session(sql.as_bytes(), watch),
                may_touch_session_reference(sql.as_bytes(), watch),
                "{:?}", sql
            );
        }
    }

    #[test]
    fn prefilter_is_cheap_and_sound() {
        assert!(!may_touch_session(
            b"SELECT * FROM customers WHERE id = $1",
            false
        ));
        assert!(may_touch_session(b"select 1; SeT x=1", false));
        assert!(may_touch_session(b"DISCARD ALL", false));
        assert!(may_touch_session(b"/**/LiStEn x", false));
        assert!(may_touch_session(b"DO $$ begin end $$", false));
        assert!(!may_touch_session(b"select done, undo from t", false));
        assert!(!may_touch_session(b"ROLLBACK", false));
        assert!(may_touch_session(b"ROLLBACK", true));
        assert!(may_touch_session(b"end", true));
        assert!(!may_touch_session(b"select append from t", true));
    }
}
