//! Tenants: the resolved model, the directory of known tenants, and resolution of
//! a connection's tenant from its startup packet (SPEC §2). No sockets here.

mod directory;
mod model;
mod resolve;
pub mod roles;
pub mod signing;

pub use directory::TenantDirectory;
pub use model::{quote_ident, SignedId, Target, Tenant, TenantContext};
pub use resolve::{resolve, tenant_from_server_name, Resolution, ResolveError, ResolvedBy};

/// The schema a `schema` tenant gets when none is named: `t_<key>`. The
/// one home of that rule (provisioning, routing and migrations agree on it).
pub fn default_schema(key: &str) -> String {
    format!("t_{key}")
}

/// The schema a tenant's connections use: its own (or the default) for a
/// `schema` tenant, the shared schema (`public` unless named) for a `shared`
/// one, none of pgtenant's choosing for a `database` tenant.
pub fn home_schema(
    mode: crate::config::TenantMode,
    key: &str,
    named: Option<&str>,
) -> Option<String> {
    use crate::config::TenantMode;
    match mode {
        TenantMode::Schema => Some(named.map_or_else(|| default_schema(key), str::to_owned)),
        TenantMode::Shared => Some(named.unwrap_or("public").to_owned()),
        TenantMode::Database => None,
    }
}

/// Whether a tenant of this status is served (trial or active): the one
/// home of that rule.
pub fn servable(s: crate::config::TenantStatus) -> bool {
    matches!(
        s,
        crate::config::TenantStatus::Active | crate::config::TenantStatus::Trial
    )
}
