//! The migrations folder: `NNN_name.sql`, applied in numeric order, each
//! with an optional `NNN_name.down.sql` that reverts it (`migrate down`),
//! read and checksummed once per run.
//! A first line `-- pgtenant:no-transaction` runs the file outside a
//! transaction, one statement at a time (for `CREATE INDEX CONCURRENTLY`).

use std::path::Path;

#[derive(Debug, Clone)]
pub struct MigrationFile {
    pub version: u32,
    pub name: String,
    /// The text with CRLF normalised to LF.
    pub sql: String,
    /// SHA-256 of `sql`, hex: recorded in each target's ledger.
    pub checksum: String,
    /// Starts with `-- pgtenant:no-transaction`.
    pub no_transaction: bool,
    /// `NNN_name.down.sql`, if there is one.
    pub down: Option<DownFile>,
}

/// A revert: run newest first by `migrate down`, with the same
/// transaction rules as an up file.
#[derive(Debug, Clone)]
pub struct DownFile {
    pub sql: String,
    pub no_transaction: bool,
}

impl MigrationFile {
    /// `NNN_name.sql`, as reports name it.
    pub fn file_name(&self) -> String {
        format!("{:03}_{}.sql", self.version, self.name)
    }

    /// `NNN_name.down.sql`.
    pub fn down_name(&self) -> String {
        format!("{:03}_{}.down.sql", self.version, self.name)
    }
}

const NO_TRANSACTION: &str = "-- pgtenant:no-transaction";

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Transaction control in a file would commit part of it without its ledger
/// row (and end the SET LOCALs it runs under): pgtenant owns the transaction.
fn transaction_control(sql: &str) -> Option<String> {
    crate::sql::statements(sql).into_iter().find_map(|tokens| {
        let word = |i: usize| match tokens.get(i) {
            Some(crate::sql::Token::Word(w)) => w.as_str(),
            _ => "",
        };
        let control = match word(0) {
            "begin" | "commit" | "rollback" | "abort" | "savepoint" | "release" => true,
            "start" => word(1) == "transaction",
            // Not END: it also closes `BEGIN ATOMIC` function bodies.
            _ => false,
        };
        control.then(|| word(0).to_uppercase())
    })
}

/// The migration files of `dir`, by version. A missing folder means none.
/// Errors (InvalidData) for what would make runs differ between replicas or
/// break a file's atomicity: two files with one version, a `.sql` file not
/// named `NNN_name.sql`, a version above 2^31-1, transaction control.
pub fn migration_files(dir: &Path) -> std::io::Result<Vec<MigrationFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    let mut downs = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".sql") {
            continue;
        }
        let down = name.ends_with(".down.sql");
        let parsed = name
            .split_once('_')
            .and_then(|(num, rest)| Some((num.parse::<u32>().ok()?, rest)));
        let Some((version, rest)) = parsed.filter(|(v, _)| *v <= i32::MAX as u32) else {
            return Err(invalid(format!(
                "{name}: migration files are named NNN_name.sql or NNN_name.down.sql (version up to 2147483647)"
            )));
        };
        let text = std::fs::read_to_string(&path)?;
        let sql = text
            .strip_prefix('\u{feff}')
            .unwrap_or(&text)
            .replace("\r\n", "\n");
        if let Some(stmt) = transaction_control(&sql) {
            return Err(invalid(format!(
                "{name}: {stmt} is not allowed in a migration: pgtenant runs each file in its own transaction (first line `{NO_TRANSACTION}` to run it outside one)"
            )));
        }
        let no_transaction = sql.lines().next().map(str::trim) == Some(NO_TRANSACTION);
        if down {
            let stem = rest.trim_end_matches(".down.sql").to_owned();
            downs.push((
                version,
                stem,
                name.to_owned(),
                DownFile {
                    sql,
                    no_transaction,
                },
            ));
            continue;
        }
        files.push(MigrationFile {
            version,
            name: rest.trim_end_matches(".sql").to_owned(),
            checksum: sha256_hex(&sql),
            no_transaction,
            sql,
            down: None,
        });
    }
    for (version, stem, name, down) in downs {
        let Some(up) = files
            .iter_mut()
            .find(|f| f.version == version && f.name == stem)
        else {
            return Err(invalid(format!(
                "{name}: no {version:03}_{stem}.sql beside it to revert"
            )));
        };
        up.down = Some(down);
    }
    files.sort_by_key(|f| f.version);
    if let Some(w) = files.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(invalid(format!(
            "{} and {}: two migrations with version {}",
            w[0].file_name(),
            w[1].file_name(),
            w[0].version
        )));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrations folder, removed when dropped.
    struct Folder(std::path::PathBuf);

    impl std::ops::Deref for Folder {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn folder(files: &[(&str, &str)]) -> Folder {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgtenant-files-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, sql) in files {
            std::fs::write(dir.join(name), sql).expect("write");
        }
        Folder(dir)
    }

    #[test]
    fn rejects_what_would_make_runs_differ_or_break_atomicity() {
        for bad in [
            vec![("001_a.sql", "SELECT 1;"), ("001_b.sql", "SELECT 2;")],
            vec![("1-a.sql", "SELECT 1;")],
            vec![("99999999999_a.sql", "SELECT 1;")],
            vec![(
                "001_a.sql",
                "CREATE TABLE a (x int); COMMIT; CREATE TABLE b (x int);",
            )],
            vec![("001_a.sql", "begin;\nCREATE TABLE a (x int);")],
        ] {
            let dir = folder(&bad);
            assert!(migration_files(&dir).is_err(), "{bad:?}");
        }
        let dir = folder(&[
            ("001_a.sql", "\u{feff}-- pgtenant:no-transaction\r\nCREATE INDEX CONCURRENTLY i ON t (a);"),
            ("002_b.sql", "DO $$BEGIN PERFORM 1; END$$; CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END;"),
        ]);
        let files = migration_files(&dir).expect("valid");
        assert!(files[0].no_transaction, "BOM and CRLF are normalised away");
        assert_eq!(files[1].version, 2);
    }
}
