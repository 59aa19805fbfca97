//! A tenant as the proxy uses it: where its connections go and its limits.

use super::signing::ContextKey;
use crate::config::{Config, Isolation, PoolMode, TenantConfig, TenantMode, TenantStatus};
use std::sync::Arc;

/// Where a tenant's server connections go and how they log in. Two tenants with
/// equal targets could share connections (the catalog issue builds on this).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub server: Arc<str>,
    pub host: Arc<str>,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    /// Session defaults sent in the server's startup `options` (`-c name=value`):
    /// `search_path` for schema tenants on their own links (already quoted), the
    /// tier's `statement_timeout`. Being session defaults, `RESET`/`DISCARD ALL`
    /// restore them. Shared links carry no search_path here: it is part of the
    /// context set on every checkout.
    pub settings: Vec<(String, String)>,
    /// How connections to the server are secured (shared: cancel requests
    /// carry it too).
    pub tls: Arc<crate::config::ServerTlsSettings>,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub key: String,
    pub mode: TenantMode,
    pub status: TenantStatus,
    pub tier: String,
    pub schema: Option<String>,
    pub target: Target,
    pub pool_size: usize,
    pub pool_mode: PoolMode,
    pub max_client_conn: usize,
    /// Server connections clients may keep pinned between transactions.
    pub max_pinned: usize,
    /// Context isolation: what pgtenant sets on a shared link at each checkout.
    /// Shared by every client of the tenant (each session holds it).
    pub context: Option<Arc<TenantContext>>,
}

/// A tenant's context on shared links, set at every checkout (pipelined ahead
/// of the client's first message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    /// The tenant's key: marks links already in this context.
    pub owner: Arc<str>,
    /// The quoted search_path value.
    pub search_path: String,
    /// Shared-table tenants: the id pgtenant signs for each server backend.
    pub signed: Option<SignedId>,
}

/// A shared tenant's id and the key of its database (see `signing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedId {
    pub id: String,
    pub key: ContextKey,
}

impl Tenant {
    /// Links are shared by tenants with the same group key: same server,
    /// database, login and startup settings.
    pub fn group_key(&self) -> String {
        match &self.context {
            Some(_) => {
                let mut key = format!(
                    "shared:{}/{}/{}",
                    self.target.server, self.target.database, self.target.user
                );
                for (k, v) in &self.target.settings {
                    key.push_str(&format!("/{k}={v}"));
                }
                key
            }
            None => format!("tenant:{}", self.key),
        }
    }
}

/// Settings shared-tenant links pin in their startup options. Startup options
/// outrank role and database defaults, so a tenant that runs `ALTER ROLE
/// CURRENT_USER SET ...` through dynamic SQL can't switch these off for the
/// tier's next connections, and `DISCARD ALL` restores them.
const SHARED_PINS: [(&str, &str); 6] = [
    ("row_security", "on"),
    ("default_transaction_read_only", "off"),
    ("standard_conforming_strings", "on"),
    ("transform_null_equals", "off"),
    ("exit_on_error", "off"),
    ("idle_session_timeout", "0"),
];

/// Quotes an identifier the way PostgreSQL's quote_ident does, always: no
/// identifier from config or catalog ever reaches SQL unquoted.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

impl Tenant {
    /// Builds every tenant of a validated config.
    pub fn all_from_config(cfg: &Config) -> Vec<Tenant> {
        cfg.tenants
            .iter()
            .filter_map(|t| Tenant::build(cfg, t))
            .collect()
    }

    /// Builds one tenant (from the config file or a catalog row). None when it
    /// names a server the config doesn't have.
    pub fn build(cfg: &Config, t: &TenantConfig) -> Option<Tenant> {
        let server = cfg.servers.get(&t.server)?;
        let tier_name = t.tier.clone().unwrap_or_else(|| "default".into());
        let tier = cfg.tiers.get(&tier_name).cloned().unwrap_or_default();
        let isolation = Isolation::effective(t.mode, tier.isolation);
        let schema = super::home_schema(t.mode, &t.key, t.schema.as_deref());
        let database = t.database.clone().unwrap_or_else(|| match t.mode {
            TenantMode::Database => t.key.clone(),
            _ => server.database.clone(),
        });
        let (user, password) = match &t.role {
            Some(role) => (
                role.clone(),
                crate::config::secret(&t.role_password, &t.role_password_env)
                    .ok()
                    .flatten()
                    .or_else(|| super::roles::derived_password(cfg, role)),
            ),
            None => (
                server.user.clone(),
                crate::config::secret(&server.password, &server.password_env)
                    .ok()
                    .flatten(),
            ),
        };
        let search_path = schema.as_ref().map(|s| match t.mode {
            TenantMode::Schema => format!("{}, public", quote_ident(s)),
            _ => quote_ident(s),
        });
        let timeout = tier.statement_timeout.map(|d| {
            (
                "statement_timeout".to_owned(),
                format!("{}ms", d.as_millis()),
            )
        });
        let signed = match t.mode {
            TenantMode::Shared => {
                let (Some(id), Some(secret)) = (t.id.clone(), super::roles::role_secret(cfg))
                else {
                    tracing::warn!(tenant = %t.key, "shared tenant without an id or without [catalog] role_secret: not served");
                    return None;
                };
                Some(SignedId {
                    id,
                    key: ContextKey::derive(&secret, &database),
                })
            }
            _ => None,
        };
        let context = (isolation == Isolation::Context).then(|| {
            Arc::new(TenantContext {
                owner: t.key.as_str().into(),
                search_path: search_path.clone().unwrap_or_else(|| "public".into()),
                signed,
            })
        });
        let settings: Vec<(String, String)> = match &context {
            Some(_) if t.mode == TenantMode::Shared => SHARED_PINS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain(timeout)
                .collect(),
            Some(_) => timeout.into_iter().collect(),
            None => search_path
                .map(|p| ("search_path".to_owned(), p))
                .into_iter()
                .chain(timeout)
                .collect(),
        };
        Some(Tenant {
            key: t.key.clone(),
            mode: t.mode,
            status: t.status,
            tier: tier_name,
            schema: schema.clone(),
            target: Target {
                server: t.server.as_str().into(),
                host: server.host.as_str().into(),
                port: server.port,
                database,
                user,
                password,
                settings,
                tls: Arc::new(server.tls_settings()),
            },
            pool_size: t.pool_size.unwrap_or(tier.pool_size),
            pool_mode: t
                .pool_mode
                .or(tier.pool_mode)
                .unwrap_or(cfg.proxy.pool_mode),
            max_client_conn: t.max_client_conn.unwrap_or(tier.max_client_conn),
            max_pinned: tier
                .max_pinned
                .unwrap_or(t.pool_size.unwrap_or(tier.pool_size).div_ceil(2).max(1)),
            context,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn quotes_hostile_identifiers() {
        assert_eq!(quote_ident("t_acme"), "\"t_acme\"");
        assert_eq!(quote_ident("a\"; drop"), "\"a\"\"; drop\"");
    }
}
