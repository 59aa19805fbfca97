//! The migrations folder: `NNN_name.sql`, applied in numeric order (`.down.sql`
//! files are reverts, not applied here), read and checksummed once per run.
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
}

impl MigrationFile {
    /// `NNN_name.sql`, as reports name it.
    pub fn file_name(&self) -> String {
        format!("{:03}_{}.sql", self.version, self.name)
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

/// The migration files of `dir`, by version. A missing folder means none.
pub fn migration_files(dir: &Path) -> std::io::Result<Vec<MigrationFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".sql") || name.ends_with(".down.sql") {
            continue;
        }
        let Some((num, rest)) = name.split_once('_') else {
            continue;
        };
        let Ok(version) = num.parse::<u32>() else {
            continue;
        };
        let sql = std::fs::read_to_string(&path)?.replace("\r\n", "\n");
        files.push(MigrationFile {
            version,
            name: rest.trim_end_matches(".sql").to_owned(),
            checksum: sha256_hex(&sql),
            no_transaction: sql.lines().next().map(str::trim) == Some(NO_TRANSACTION),
            sql,
        });
    }
    files.sort_by_key(|f| f.version);
    Ok(files)
}
