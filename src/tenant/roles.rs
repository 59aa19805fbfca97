//! Per-tenant login roles. Their passwords are derived from one secret
//! (`[catalog] role_secret_env`): HMAC-SHA256 of the role name, hex encoded. No
//! per-tenant password is stored anywhere, every replica can compute it, and
//! rotating the secret means re-setting the roles' passwords.

use crate::config::{secret, Config};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The role a provisioned tenant gets: `t_<key>` (keys are `[a-z0-9_-]`).
pub fn role_name(key: &str) -> String {
    format!("t_{key}")
}

/// The secret, when configured.
pub fn role_secret(cfg: &Config) -> Option<String> {
    let c = cfg.catalog.as_ref()?;
    secret(&c.role_secret, &c.role_secret_env).ok().flatten()
}

/// The password of `role`, when a role secret is configured.
pub fn derived_password(cfg: &Config, role: &str) -> Option<String> {
    let key = role_secret(cfg)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(b"pgtenant-role:");
    mac.update(role.as_bytes());
    Some(
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}
