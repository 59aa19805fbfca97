//! The migrations folder: `NNN_name.sql`, applied in numeric order (`.down.sql`
//! files are reverts, not applied here). The full runner with ledger, locks and
//! retries is the migration sidecar's job; provisioning only needs the files.

use std::path::Path;

#[derive(Debug, Clone)]
pub struct MigrationFile {
    pub version: u32,
    pub name: String,
    pub sql: String,
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
        files.push(MigrationFile {
            version,
            name: rest.trim_end_matches(".sql").to_owned(),
            sql: std::fs::read_to_string(&path)?.replace("\r\n", "\n"),
        });
    }
    files.sort_by_key(|f| f.version);
    Ok(files)
}
