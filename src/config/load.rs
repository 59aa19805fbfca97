//! Reading a config file: TOML → types → validation.

use super::types::Config;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
}

pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// Parses and validates; `origin` names the source in messages.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let problems = super::validate::problems(&cfg);
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        })
    }
}

/// A secret given inline or through an environment variable.
pub fn secret(inline: &Option<String>, env: &Option<String>) -> Result<Option<String>, String> {
    match (inline, env) {
        (Some(_), Some(_)) => Err("give either the password or its _env variable, not both".into()),
        (Some(p), None) => Ok(Some(p.clone())),
        (None, Some(var)) => std::env::var(var)
            .map(Some)
            .map_err(|_| format!("environment variable {var} is not set")),
        (None, None) => Ok(None),
    }
}

/// The environment variables the config reads secrets from (every
/// `*_env` key): kept from the commands pgtenant runs for others.
pub fn secret_env_names(cfg: &super::Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in cfg.servers.values() {
        names.extend(s.password_env.iter().chain(&s.admin_password_env).cloned());
    }
    for u in &cfg.auth.users {
        names.extend(u.password_env.iter().cloned());
    }
    if let Some(c) = &cfg.catalog {
        names.extend(c.role_secret_env.iter().cloned());
    }
    for t in &cfg.tenants {
        names.extend(t.role_password_env.iter().cloned());
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[servers.main]
user = "postgres"
[[tenants]]
key = "acme"
mode = "schema"
server = "main"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_str(MINIMAL, "test").expect("valid");
        assert_eq!(c.proxy.listen, "127.0.0.1:6432");
        assert_eq!(c.servers["main"].port, 5432);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_str(&format!("{MINIMAL}\n[proxy]\nlisten_addr = \"x\"\n"), "t")
            .expect_err("unknown key");
        assert!(e.to_string().contains("listen_addr"), "{e}");
    }

    #[test]
    fn peering_ids_are_checked() {
        let bad = "[peering]\nid = 2\npeers = [{ id = 2, host = \"a\", port = 1 }, { id = 3, host = \"b\", port = 1 }, { id = 3, host = \"c\", port = 1 }, { id = 1024, host = \"d\", port = 1 }]\n";
        let e = parse_str(&format!("{MINIMAL}\n{bad}"), "t").expect_err("bad peering");
        let text = e.to_string();
        for want in [
            "id 2 is this replica's own peering.id",
            "id 3 is listed twice",
            "id 1024 must be 1 to 1023",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        let e = parse_str(
            &format!("{MINIMAL}\n[peering]\npeers = [{{ id = 1, host = \"a\", port = 1 }}]\n"),
            "t",
        )
        .expect_err("peers without an id");
        assert!(e.to_string().contains("needs peering.id"), "{e}");
        let ok = parse_str(
            &format!(
                "{MINIMAL}\n[peering]\nid = 1\npeers = [{{ id = 2, host = \"a\", port = 1 }}]\n"
            ),
            "t",
        )
        .expect("valid peering");
        assert_eq!((ok.peering.id, ok.peering.peers[0].port), (1, 1));
    }

    #[test]
    fn bad_duration_is_explained() {
        let e = parse_str(
            &format!("[proxy]\nquery_wait_timeout = \"5 parsecs\"\n{MINIMAL}"),
            "t",
        )
        .expect_err("bad duration");
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }

    #[test]
    fn check_warns_about_tenants_without_a_boundary() {
        let c = parse_str(MINIMAL, "t").expect("valid");
        let w = super::super::warnings(&c);
        assert!(
            w.iter().any(|w| w.contains("\"acme\" has no role")),
            "{w:?}"
        );
    }

    #[test]
    fn tenant_on_missing_server_is_named() {
        let e = parse_str(
            &MINIMAL.replace("server = \"main\"", "server = \"nope\""),
            "t",
        )
        .expect_err("missing server");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn bad_tenant_key_and_missing_env_are_reported_together() {
        let text = MINIMAL
            .replace("key = \"acme\"", "key = \"Acme!\"")
            .replace(
                "user = \"postgres\"",
                "user = \"postgres\"\npassword_env = \"PGTENANT_TEST_SURELY_UNSET\"",
            );
        let e = parse_str(&text, "t").expect_err("invalid");
        let s = e.to_string();
        assert!(
            s.contains("Acme!") && s.contains("PGTENANT_TEST_SURELY_UNSET"),
            "{s}"
        );
    }
}

#[cfg(test)]
mod example_file {
    /// The shipped example must stay valid as options change.
    #[test]
    fn example_config_is_valid() {
        for var in [
            "PGTENANT_APP_PASSWORD",
            "PGTENANT_MAIN_PASSWORD",
            "PGTENANT_MAIN_ADMIN_PASSWORD",
        ] {
            // Unit tests in this module don't read these concurrently.
            std::env::set_var(var, "x");
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgtenant.example.toml");
        if let Err(e) = super::load_file(std::path::Path::new(path)) {
            panic!("{e}");
        }
    }
}
