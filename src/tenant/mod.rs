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

/// Whether a tenant of this status is served (trial or active): the one
/// home of that rule.
pub fn servable(s: crate::config::TenantStatus) -> bool {
    matches!(
        s,
        crate::config::TenantStatus::Active | crate::config::TenantStatus::Trial
    )
}
