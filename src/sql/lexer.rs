//! A PostgreSQL lexer reduced to what classification needs: words (lowercased
//! unless quoted), string-ish literals, punctuation, and statement boundaries.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Keyword or identifier: unquoted ones lowercased, quoted ones verbatim.
    Word(String),
    /// A quoted identifier ("Name"), kept apart so `"set"` is not the keyword.
    QuotedIdent(String),
    /// Any string literal (plain, E'', U&'', $tag$...$tag$), its content.
    Str(String),
    /// Numbers and other single characters (`=`, `,`, `(`, `.`, ...).
    Other(char),
}

/// Splits `sql` into statements (at every semicolon outside literals and
/// comments: splitting too eagerly only makes classification stricter). Comments
/// and whitespace vanish. An unterminated literal or comment swallows the rest,
/// as the server would fail it anyway.
pub fn statements(sql: &str) -> Vec<Vec<Token>> {
    let mut out = lex(sql).0;
    out.retain(|s| !s.is_empty());
    out
}

/// Splits `sql` into the text of its statements (without the semicolons),
/// for running them one at a time; pieces with only comments are dropped.
pub fn statement_texts(sql: &str) -> Vec<&str> {
    let (tokens, splits) = lex(sql);
    let mut start = 0;
    let mut out = Vec::new();
    for (i, toks) in tokens.iter().enumerate() {
        let end = splits.get(i).copied().unwrap_or(sql.len());
        if !toks.is_empty() {
            out.push(sql[start..end].trim());
        }
        start = (end + 1).min(sql.len());
    }
    out
}

/// Each statement's tokens with its text (trimmed, without the semicolon),
/// empty statements dropped: classification needs both (a SET is replayed
/// from its own text).
pub fn statements_with_text(sql: &str) -> Vec<(Vec<Token>, &str)> {
    let (tokens, splits) = lex(sql);
    let mut start = 0;
    let mut out = Vec::new();
    for (i, toks) in tokens.into_iter().enumerate() {
        let end = splits.get(i).copied().unwrap_or(sql.len());
        if !toks.is_empty() {
            out.push((toks, sql[start..end].trim()));
        }
        start = (end + 1).min(sql.len());
    }
    out
}

/// Tokens per statement (empty ones included) and the byte offsets of the
/// semicolons that separate them.
fn lex(sql: &str) -> (Vec<Vec<Token>>, Vec<usize>) {
    let b = sql.as_bytes();
    let mut splits = Vec::new();
    let mut out = vec![Vec::new()];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // PostgreSQL block comments nest.
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b';' => {
                out.push(Vec::new());
                splits.push(i);
                i += 1;
            }
            b'\'' => {
                let (s, next) = quoted(b, i + 1, b'\'', false);
                push(&mut out, Token::Str(s));
                i = next;
            }
            b'"' => {
                let (s, next) = quoted(b, i + 1, b'"', false);
                push(&mut out, Token::QuotedIdent(s));
                i = next;
            }
            b'$' => match dollar_tag(b, i) {
                Some(tag_end) => {
                    let tag = &b[i..tag_end];
                    let body_start = tag_end;
                    let end = find(b, body_start, tag).unwrap_or(b.len());
                    push(
                        &mut out,
                        Token::Str(String::from_utf8_lossy(&b[body_start..end]).into_owned()),
                    );
                    i = (end + tag.len()).min(b.len());
                }
                None => {
                    push(&mut out, Token::Other('$'));
                    i += 1;
                }
            },
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                // E'...' escape strings and U&'...' / U&"..." unicode forms.
                if (c == b'e' || c == b'E') && b.get(i + 1) == Some(&b'\'') {
                    let (s, next) = quoted(b, i + 2, b'\'', true);
                    push(&mut out, Token::Str(s));
                    i = next;
                    continue;
                }
                if (c == b'u' || c == b'U') && b.get(i + 1) == Some(&b'&') {
                    match b.get(i + 2) {
                        Some(b'\'') => {
                            let (s, next) = quoted(b, i + 3, b'\'', false);
                            push(&mut out, Token::Str(s));
                            i = next;
                            continue;
                        }
                        Some(b'"') => {
                            let (s, next) = quoted(b, i + 3, b'"', false);
                            push(&mut out, Token::QuotedIdent(s));
                            i = next;
                            continue;
                        }
                        _ => {}
                    }
                }
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                push(
                    &mut out,
                    // PostgreSQL folds only ASCII letters of unquoted names
                    // (UTF-8): `Ärger` stays `Ärger`.
                    Token::Word(String::from_utf8_lossy(&b[start..i]).to_ascii_lowercase()),
                );
            }
            _ => {
                // Multi-byte UTF-8 never reaches here (>= 0x80 is a word byte).
                push(&mut out, Token::Other(c as char));
                i += 1;
            }
        }
    }
    (out, splits)
}

fn push(out: &mut [Vec<Token>], t: Token) {
    if let Some(last) = out.last_mut() {
        last.push(t);
    }
}

/// Reads a quoted run starting after the opening quote; a doubled quote is a
/// literal quote; with `backslash`, `\x` escapes x.
fn quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> (String, usize) {
    let mut s = Vec::new();
    while i < b.len() {
        let c = b[i];
        if backslash && c == b'\\' && i + 1 < b.len() {
            s.push(b[i + 1]);
            i += 2;
        } else if c == q {
            if b.get(i + 1) == Some(&q) {
                s.push(q);
                i += 2;
            } else {
                return (String::from_utf8_lossy(&s).into_owned(), i + 1);
            }
        } else {
            s.push(c);
            i += 1;
        }
    }
    (String::from_utf8_lossy(&s).into_owned(), b.len())
}

/// If a dollar-quote opening tag (`$$` or `$tag$`) starts at `i`, its end.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'$' => return Some(j + 1),
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                if j == i + 1 && c.is_ascii_digit() {
                    return None; // $1 is a parameter
                }
                j += 1;
            }
            _ => return None,
        }
    }
    None
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<Vec<String>> {
        statements(sql)
            .into_iter()
            .map(|s| {
                s.into_iter()
                    .map(|t| match t {
                        Token::Word(w) => w,
                        Token::QuotedIdent(q) => format!("\"{q}\""),
                        Token::Str(s) => format!("'{s}'"),
                        Token::Other(c) => c.to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn splits_and_hides_nothing_behind_comments_or_quotes() {
        assert_eq!(
            words("select 'a;b'; /* x /* nested */ ; */ SET x = 1 -- ; tail\n;reset ALL"),
            vec![
                vec!["select", "'a;b'"],
                vec!["set", "x", "=", "1"],
                vec!["reset", "all"]
            ]
        );
        assert_eq!(
            words("do $f$ begin perform 1; end $f$; select 1")[0],
            vec!["do", "' begin perform 1; end '"]
        );
        assert_eq!(words("select E'it\\'s;'; set a=1").len(), 2);
        assert_eq!(
            words("select \"a\"\"b;\""),
            vec![vec!["select", "\"a\"b;\""]]
        );
        assert_eq!(words("select $1; set a=1").len(), 2);
    }

    #[test]
    fn statement_texts_keep_literals_whole() {
        assert_eq!(
            statement_texts(
                "-- head\nCREATE INDEX CONCURRENTLY i ON t (a);\n select ';' ; -- tail\n"
            ),
            vec![
                "-- head\nCREATE INDEX CONCURRENTLY i ON t (a)",
                "select ';'"
            ]
        );
    }
}

/// Property tests: any text lexes and classifies without a panic.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_sql_never_panics(sql in ".{0,200}") {
            for tokens in super::statements(&sql) {
                let _ = crate::sql::classify(&tokens);
            }
            let _ = super::statement_texts(&sql);
        }
    }
}
