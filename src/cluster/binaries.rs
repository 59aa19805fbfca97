//! Locating initdb/pg_ctl: `PG_BINDIR`, `pg_config --bindir`, Debian's
//! /usr/lib/postgresql/<newest>/bin, then PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

pub fn find_bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
        return has_server(&d).then_some(d);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(d) = from_pg_config.filter(|d| has_server(d)) {
        return Some(d);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((v, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, d)) = debian.pop() {
        return Some(d);
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has_server(d)))
}
