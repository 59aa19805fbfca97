//! Per-tenant users in the catalog (`pgtenant.tenant_users`): a user who may
//! log in to one tenant only (`alice.acme`), with a password stored as a
//! SCRAM verifier, never in plain text. `pgtenant tenant user add` computes
//! the verifier on the operator's machine; the watcher loads the rows.

use super::CatalogError;
use tokio_postgres::Client;

/// One row: (tenant, user name, SCRAM verifier).
pub type TenantUserRow = (String, String, String);

/// Every row, ordered.
pub async fn load_users(client: &Client) -> Result<Vec<TenantUserRow>, CatalogError> {
    Ok(client
        .query(
            "SELECT tenant, name, verifier FROM pgtenant.tenant_users ORDER BY tenant, name",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Adds or replaces `name`'s password for `tenant`; false when there is no
/// such tenant in the catalog.
pub async fn set_user(
    client: &Client,
    tenant: &str,
    name: &str,
    verifier: &str,
) -> Result<bool, CatalogError> {
    let exists = client
        .query_opt("SELECT 1 FROM pgtenant.tenants WHERE key = $1", &[&tenant])
        .await?
        .is_some();
    if !exists {
        return Ok(false);
    }
    client
        .execute(
            "INSERT INTO pgtenant.tenant_users(tenant, name, verifier) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, name) DO UPDATE SET verifier = EXCLUDED.verifier",
            &[&tenant, &name, &verifier],
        )
        .await?;
    Ok(true)
}

/// Removes a user; false when it wasn't there.
pub async fn remove_user(client: &Client, tenant: &str, name: &str) -> Result<bool, CatalogError> {
    Ok(client
        .execute(
            "DELETE FROM pgtenant.tenant_users WHERE tenant = $1 AND name = $2",
            &[&tenant, &name],
        )
        .await?
        == 1)
}
