//! The users clients may log in as, with what we need to check their password.

use super::scram::ScramVerifier;
use crate::config::{secret, Config};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Credential {
    /// Plain password when configured in clear (needed for md5).
    pub plain: Option<String>,
    /// SCRAM verifier, derived once at load (4096 PBKDF2 rounds is not per-login work).
    pub scram: Option<ScramVerifier>,
}

#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: HashMap<String, Credential>,
}

impl UserDb {
    pub fn from_config(cfg: &Config) -> Self {
        let users = cfg
            .auth
            .users
            .iter()
            .map(|u| {
                let pw = secret(&u.password, &u.password_env).ok().flatten();
                let cred = match pw {
                    Some(p) if p.starts_with("SCRAM-SHA-256$") => Credential {
                        plain: None,
                        scram: ScramVerifier::parse(&p),
                    },
                    Some(p) => Credential {
                        scram: ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
                            p.as_bytes(),
                        )),
                        plain: Some(p),
                    },
                    None => Credential {
                        plain: None,
                        scram: None,
                    },
                };
                (u.name.clone(), cred)
            })
            .collect();
        Self { users }
    }

    /// One user with a SCRAM password (the one-time owner routes of
    /// `migrate --each`).
    pub fn one(name: &str, password: &str) -> Self {
        let cred = Credential {
            plain: None,
            scram: ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
                password.as_bytes(),
            )),
        };
        Self {
            users: HashMap::from([(name.to_owned(), cred)]),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.users.get(name)
    }
}

/// Users of one tenant each, from the catalog (`pgtenant tenant user add`):
/// replaced whole when the catalog's rows change.
#[derive(Debug, Default)]
pub struct TenantUsers {
    rows: std::sync::Mutex<Vec<(String, String, String)>>,
    users: std::sync::RwLock<std::sync::Arc<HashMap<(String, String), Credential>>>,
}

impl TenantUsers {
    /// Installs `rows` (tenant, name, SCRAM verifier) if they differ from
    /// the last ones; a verifier that doesn't parse is skipped, with a warning.
    pub fn replace(&self, rows: Vec<(String, String, String)>) {
        let mut last = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        if *last == rows {
            return;
        }
        let users = rows
            .iter()
            .filter_map(|(tenant, name, verifier)| {
                let Some(scram) = ScramVerifier::parse(verifier) else {
                    tracing::warn!(%tenant, user = %name, "catalog user skipped: not a SCRAM verifier");
                    return None;
                };
                let cred = Credential {
                    plain: None,
                    scram: Some(scram),
                };
                Some(((tenant.clone(), name.clone()), cred))
            })
            .collect();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(users);
        *last = rows;
    }

    pub fn get(&self, tenant: &str, user: &str) -> Option<Credential> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_owned(), user.to_owned()))
            .cloned()
    }
}
