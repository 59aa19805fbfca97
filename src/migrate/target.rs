//! What the sidecar migrates: every dedicated schema, every dedicated database
//! (its `public` schema), and each shared schema once, from the catalog merged
//! with the config file's tenants. Suspended and cancelled tenants are skipped
//! (a shared schema is migrated while any of its tenants is trial or active).

use crate::config::{Config, TenantConfig, TenantMode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub server: String,
    pub database: String,
    pub schema: String,
    pub mode: TenantMode,
    /// Migrations run as this role (`SET LOCAL ROLE`), so the tenant's role
    /// owns what they create; None runs them as the server's admin user.
    pub role: Option<String>,
    /// The tenants served by this target (several for a shared schema).
    pub tenants: Vec<String>,
    /// Some tenant of it is trial or active.
    pub servable: bool,
}

impl Target {
    /// How reports name it: the tenant key, or `shared:<database>.<schema>`.
    pub fn label(&self) -> String {
        match self.mode {
            TenantMode::Shared => format!("shared:{}.{}", self.database, self.schema),
            _ => self.tenants.first().cloned().unwrap_or_default(),
        }
    }

    /// `pgtenant.target_mode` while its migrations run.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            TenantMode::Schema => "schema",
            TenantMode::Database => "database",
            TenantMode::Shared => "shared",
        }
    }

    /// The database-and-schema pair its advisory lock is derived from.
    pub fn lock_name(&self) -> String {
        format!("{}/{}", self.database, self.schema)
    }

    /// The target of one tenant spec; None when its server is unknown.
    pub fn of(cfg: &Config, t: &TenantConfig) -> Option<Target> {
        let server = cfg.servers.get(&t.server)?;
        let database = t.database.clone().unwrap_or_else(|| match t.mode {
            TenantMode::Database => t.key.clone(),
            _ => server.database.clone(),
        });
        // A database tenant's objects live in its database's `public`.
        let schema = crate::tenant::home_schema(t.mode, &t.key, t.schema.as_deref())
            .unwrap_or_else(|| "public".into());
        Some(Target {
            server: t.server.clone(),
            database,
            schema,
            mode: t.mode,
            role: match t.mode {
                TenantMode::Shared => None,
                _ => t.role.clone(),
            },
            tenants: vec![t.key.clone()],
            servable: crate::tenant::servable(t.status),
        })
    }
}

/// Every target of `specs`, shared schemas folded into one target each.
/// With `only`, just the target serving that tenant.
pub fn targets(cfg: &Config, specs: &[&TenantConfig], only: Option<&str>) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for t in specs {
        if only.is_some_and(|k| k != t.key) {
            continue;
        }
        let Some(target) = Target::of(cfg, t) else {
            tracing::warn!(tenant = %t.key, server = %t.server, "not migrated: unknown server");
            continue;
        };
        let same = out.iter_mut().find(|o| {
            o.mode == TenantMode::Shared
                && target.mode == TenantMode::Shared
                && o.server == target.server
                && o.database == target.database
                && o.schema == target.schema
        });
        match same {
            Some(o) => {
                o.tenants.push(t.key.clone());
                o.servable |= target.servable;
            }
            None => out.push(target),
        }
    }
    out
}
