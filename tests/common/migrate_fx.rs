//! A migration test's own server database, catalog database, migrations
//! folder and config file, with helpers to provision tenants and run
//! `pgtenant migrate` (as a library call or as the CLI).

use super::{managed_database, pg_port, scratch, ADMIN_ROLE, SERVICE_ROLE};
use pgtenant::config::{Config, TenantMode, TenantStatus};
use pgtenant::migrate::{self, Report, RunOptions};
use pgtenant::provision::{self, CreateRequest};
use std::path::PathBuf;

/// A test's own server database, catalog database and migrations folder.
pub struct Fx {
    pub cfg: Config,
    pub path: PathBuf,
    pub dir: PathBuf,
}

impl Fx {
    pub async fn new(name: &str, extra: &str) -> Fx {
        let base = scratch(&format!("mg-{name}"));
        let dir = base.join("migrations");
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&dir).expect("migrations dir");
        // Provisioned and migrated through the managed admin (SPEC §5).
        managed_database(&format!("{name}_app")).await;
        managed_database(&format!("{name}_platform")).await;
        let text = format!(
            r#"
[auth]
method = "trust"
users = [{{ name = "app" }}]

[servers.main]
port = {port}
database = "{name}_app"
user = "{SERVICE_ROLE}"
admin_user = "{ADMIN_ROLE}"

[catalog]
server = "main"
database = "{name}_platform"
role_secret = "test-only-secret"

[migrations]
dir = "{dir}"
{extra}
"#,
            port = pg_port(),
            dir = dir.display()
        );
        let path = base.join("pgtenant.toml");
        std::fs::write(&path, &text).expect("config");
        let cfg = pgtenant::config::parse_str(&text, "test").expect("valid config");
        Fx { cfg, path, dir }
    }

    pub fn write(&self, file: &str, sql: &str) {
        std::fs::write(self.dir.join(file), sql).expect("write migration");
    }

    pub async fn create(&self, key: &str, mode: TenantMode) {
        provision::create(
            &self.cfg,
            &CreateRequest {
                key: key.into(),
                mode,
                tier: "default".into(),
                server: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create {key}: {e}"));
    }

    pub async fn status(&self, key: &str, s: TenantStatus) {
        provision::set_status(&self.cfg, key, s)
            .await
            .expect("status");
    }

    pub async fn run(&self) -> Report {
        self.run_with(RunOptions::default()).await
    }

    pub async fn run_with(&self, opts: RunOptions) -> Report {
        migrate::run(&self.cfg, &opts).await.expect("run")
    }

    /// `migrate down --to N` (for one tenant's target, or all).
    pub async fn down(&self, to: u32, tenant: Option<&str>) -> Report {
        self.run_with(RunOptions {
            tenant: tenant.map(str::to_owned),
            direction: migrate::Direction::Down { to },
            ..RunOptions::default()
        })
        .await
    }

    /// Runs `pgtenant migrate` with `args`; (exit code, stdout).
    pub async fn cli(&self, args: &[&str]) -> (i32, String) {
        let (code, stdout, _) = self.cli_full(args).await;
        (code, stdout)
    }

    /// Runs `pgtenant migrate` with `args`; (exit code, stdout, stderr).
    pub async fn cli_full(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
            .arg("migrate")
            .arg("--config")
            .arg(&self.path)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run pgtenant migrate");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
