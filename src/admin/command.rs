//! What a console command is: a name, a usage line, and a run that answers
//! with rows or a tag. Parsing the console's one-line commands.

use crate::app::Proxy;
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// A column's type as sent (text format always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int4,
    Int8,
    Numeric,
}

impl Type {
    pub fn oid(self) -> u32 {
        match self {
            Type::Text => 25,
            Type::Int4 => 23,
            Type::Int8 => 20,
            Type::Numeric => 1700,
        }
    }
}

/// A value in the format the client asked for (text, or binary for the
/// types drivers decode in binary: int4, int8, numeric integers, text).
pub fn encode(value: &str, ty: Type, binary: bool) -> Vec<u8> {
    if !binary {
        return value.as_bytes().to_vec();
    }
    match ty {
        Type::Text => value.as_bytes().to_vec(),
        Type::Int4 => value.parse::<i32>().unwrap_or(0).to_be_bytes().to_vec(),
        Type::Int8 => value.parse::<i64>().unwrap_or(0).to_be_bytes().to_vec(),
        Type::Numeric => numeric_binary(value.parse::<u64>().unwrap_or(0)),
    }
}

/// PostgreSQL's binary numeric for a non-negative integer: base-10000
/// digits, most significant first, weight = digits - 1, scale 0.
fn numeric_binary(mut n: u64) -> Vec<u8> {
    let mut digits: Vec<i16> = Vec::new();
    while n > 0 {
        digits.push((n % 10_000) as i16);
        n /= 10_000;
    }
    digits.reverse();
    let weight = digits.len().saturating_sub(1) as i16;
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// A command's answer: rows (with their columns) or just a tag, and maybe a
/// notice sent first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub columns: Vec<(&'static str, Type)>,
    pub rows: Vec<Vec<Option<String>>>,
    pub tag: String,
    /// (message, detail)
    pub notice: Option<(String, String)>,
}

impl Output {
    /// A SHOW answer with these columns (rows added with [`Output::row`]).
    pub fn table(columns: &[(&'static str, Type)]) -> Self {
        Self {
            columns: columns.to_vec(),
            tag: "SHOW".into(),
            ..Self::default()
        }
    }

    pub fn row(&mut self, values: Vec<Option<String>>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values);
    }

    /// A command with no rows.
    pub fn done(tag: &str) -> Self {
        Self {
            tag: tag.into(),
            ..Self::default()
        }
    }
}

/// A value for a row.
pub fn v(x: impl ToString) -> Option<String> {
    Some(x.to_string())
}

/// An error the console reports (the session goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl AdminError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }
}

pub type Run = BoxFuture<'static, Result<Output, AdminError>>;

pub trait Command: Sync {
    /// Upper-case words that name it: `SHOW POOLS`, `PAUSE`.
    fn name(&self) -> &'static str;
    /// How to call it, for SHOW HELP and errors: `PAUSE [tenant]`.
    fn usage(&self) -> &'static str;
    /// Reads only: safe to run for a Describe before its Execute.
    fn reads_only(&self) -> bool {
        true
    }
    /// The columns a command that changes something answers with (a
    /// Describe can't run it to find out); none by default.
    fn columns(&self) -> &'static [(&'static str, Type)] {
        &[]
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run;
}

/// A command line split into its name and its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub name: String,
    pub arg: Option<String>,
}

/// `SHOW POOLS;`, `select stats`, `PAUSE acme`, `KILL "acme"`: the name in
/// upper case (`SELECT x` is `SHOW x`, as in PgBouncer), one optional
/// argument (double quotes removed). None when it has more words, but for
/// `MIGRATE DOWN N [tenant]`, whose argument is `N [tenant]`.
pub fn parse(line: &str) -> Option<Parsed> {
    let line = line.trim().trim_end_matches(';').trim();
    let mut words = line.split_whitespace();
    let first = words.next()?.to_ascii_uppercase();
    let mut ahead = words.clone();
    if first == "MIGRATE" && ahead.next().is_some_and(|w| w.eq_ignore_ascii_case("DOWN")) {
        let rest: Vec<&str> = ahead.collect();
        return (rest.len() <= 2).then(|| Parsed {
            name: "MIGRATE DOWN".into(),
            arg: (!rest.is_empty()).then(|| rest.join(" ")),
        });
    }
    let (name, arg) = if first == "SHOW" || first == "SELECT" {
        let what = words.next()?.to_ascii_uppercase();
        (format!("SHOW {what}"), words.next())
    } else {
        (first, words.next())
    };
    if words.next().is_some() {
        return None;
    }
    let arg = arg.map(|a| {
        a.strip_prefix('"')
            .and_then(|a| a.strip_suffix('"'))
            .map_or_else(|| a.to_owned(), |a| a.replace("\"\"", "\""))
    });
    Some(Parsed { name, arg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values() {
        assert_eq!(encode("7", Type::Int4, true), vec![0, 0, 0, 7]);
        assert_eq!(encode("7", Type::Int4, false), b"7".to_vec());
        // 123456789 = 1|2345|6789 in base 10000.
        assert_eq!(
            encode("123456789", Type::Numeric, true),
            vec![0, 3, 0, 2, 0, 0, 0, 0, 0, 1, 0x09, 0x29, 0x1a, 0x85]
        );
        assert_eq!(
            encode("0", Type::Numeric, true),
            vec![0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn parses_console_lines() {
        let p = |s: &str| parse(s).map(|p| (p.name, p.arg));
        assert_eq!(p("SHOW POOLS;"), Some(("SHOW POOLS".into(), None)));
        assert_eq!(p(" select stats "), Some(("SHOW STATS".into(), None)));
        assert_eq!(p("pause acme"), Some(("PAUSE".into(), Some("acme".into()))));
        assert_eq!(
            p("KILL \"a\"\"b\";"),
            Some(("KILL".into(), Some("a\"b".into())))
        );
        assert_eq!(p("PAUSE a b"), None);
        assert_eq!(
            p("migrate down 5 acme;"),
            Some(("MIGRATE DOWN".into(), Some("5 acme".into())))
        );
        assert_eq!(p("MIGRATE down"), Some(("MIGRATE DOWN".into(), None)));
        assert_eq!(p("MIGRATE DOWN 5 a b"), None);
        assert_eq!(p("  ;"), None);
    }
}
