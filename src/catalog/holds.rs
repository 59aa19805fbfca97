//! Holds: how `tenant promote|demote|move` stops a tenant's new transactions
//! on every replica for a moment (SPEC §9). The mover inserts a row into
//! `pgtenant.holds`; each replica's watcher sees it (NOTIFY, or its next
//! poll), holds the tenant's new transactions like PAUSE does, and reports
//! in `pgtenant.replicas.quiet` once none of the tenant's transactions runs
//! there. The mover waits until every live replica (one whose heartbeat is
//! recent) is quiet, copies the last changes, and then changes the tenant's
//! route and deletes the hold in one catalog transaction: a replica installs
//! the new route before it lets the held clients go.

use super::{mode_text, CatalogError};
use crate::config::TenantConfig;
use std::time::Duration;
use tokio_postgres::Client;

/// A replica is live while its heartbeat is younger than this.
pub const LIVE: Duration = Duration::from_secs(15);

/// Replicas ignore a hold older than this: a mover that died holding a
/// tenant does not stop it for good.
pub const EXPIRE: Duration = Duration::from_secs(60);

/// A mover flips the route only under a hold younger than this, well before
/// replicas would give up on it.
pub const FLIP_BEFORE: Duration = Duration::from_secs(30);

/// How often a replica with no hold to report refreshes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// One hold: the tenant and the hold's id. A replica reports holds (not
/// tenants) quiet, so a report about an earlier hold of the same tenant never
/// counts for a later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub tenant: String,
    pub id: i64,
}

impl Hold {
    /// How a replica names it in `pgtenant.replicas.quiet`.
    pub fn tag(&self) -> String {
        format!("{}#{}", self.tenant, self.id)
    }
}

/// The holds in force (those past `EXPIRE` are ignored).
pub async fn load_holds(client: &Client) -> Result<Vec<Hold>, CatalogError> {
    Ok(client
        .query(
            "SELECT tenant, id FROM pgtenant.holds
              WHERE since > now() - make_interval(secs => $1) ORDER BY tenant",
            &[&EXPIRE.as_secs_f64()],
        )
        .await?
        .iter()
        .map(|r| Hold {
            tenant: r.get(0),
            id: r.get(1),
        })
        .collect())
}

/// A replica's heartbeat: it is alive, and of the holds these (tags) have no
/// transaction of their tenant running on it.
pub async fn heartbeat(
    client: &Client,
    replica: &str,
    quiet: &[String],
) -> Result<(), CatalogError> {
    client
        .execute(
            "INSERT INTO pgtenant.replicas (id, seen, quiet) VALUES ($1, now(), $2)
             ON CONFLICT (id) DO UPDATE SET seen = now(), quiet = EXCLUDED.quiet",
            &[&replica, &quiet],
        )
        .await?;
    Ok(())
}

/// A replica shutting down leaves (the movers stop waiting for it).
pub async fn leave(client: &Client, replica: &str) -> Result<(), CatalogError> {
    client
        .execute("DELETE FROM pgtenant.replicas WHERE id = $1", &[&replica])
        .await?;
    Ok(())
}

/// Holds tenant `key`; None when it is held already (another move runs). A
/// hold past `EXPIRE` (its mover died) is taken over.
pub async fn hold(client: &Client, key: &str, purpose: &str) -> Result<Option<Hold>, CatalogError> {
    Ok(client
        .query_opt(
            "INSERT INTO pgtenant.holds AS h (tenant, purpose) VALUES ($1, $2)
             ON CONFLICT (tenant) DO UPDATE
                SET id = DEFAULT, purpose = EXCLUDED.purpose, since = now()
              WHERE h.since <= now() - make_interval(secs => $3)
             RETURNING id",
            &[&key, &purpose, &EXPIRE.as_secs_f64()],
        )
        .await?
        .map(|r| Hold {
            tenant: key.to_owned(),
            id: r.get(0),
        }))
}

/// Lets the tenant's clients go on where they were.
pub async fn release(client: &Client, hold: &Hold) -> Result<(), CatalogError> {
    client
        .execute(
            "DELETE FROM pgtenant.holds WHERE tenant = $1 AND id = $2",
            &[&hold.tenant, &hold.id],
        )
        .await?;
    Ok(())
}

/// Live replicas that still run a transaction of the held tenant (or have
/// not seen the hold yet).
pub async fn busy_replicas(client: &Client, hold: &Hold) -> Result<Vec<String>, CatalogError> {
    Ok(client
        .query(
            "SELECT id FROM pgtenant.replicas
              WHERE seen > now() - make_interval(secs => $2) AND NOT ($1 = ANY (quiet))
              ORDER BY id",
            &[&hold.tag(), &(LIVE.as_secs_f64())],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Gives the tenant its new route (mode, server, database, schema, role)
/// and deletes its hold, in one transaction: every replica sees both at once.
/// Refused when the route is no longer `from` (changed meanwhile), or the
/// hold is gone or too old (replicas may have let go). The tenant's status
/// is left as it is now.
pub async fn flip(
    client: &Client,
    from: &TenantConfig,
    to: &TenantConfig,
    hold: &Hold,
) -> Result<(), CatalogError> {
    client.batch_execute("BEGIN").await?;
    let work = async {
        let n = client
            .execute(
                "UPDATE pgtenant.tenants
                    SET mode = $2, server = $3, database = $4, schema = $5, role = $6,
                        updated_at = now()
                  WHERE key = $1 AND mode = $7 AND server = $8
                    AND database IS NOT DISTINCT FROM $9 AND schema IS NOT DISTINCT FROM $10",
                &[
                    &to.key,
                    &mode_text(to.mode),
                    &to.server,
                    &to.database,
                    &to.schema,
                    &to.role,
                    &mode_text(from.mode),
                    &from.server,
                    &from.database,
                    &from.schema,
                ],
            )
            .await?;
        if n != 1 {
            return Err(CatalogError::Gone(to.key.clone()));
        }
        let held = client
            .execute(
                "DELETE FROM pgtenant.holds
                  WHERE tenant = $1 AND id = $2 AND since > now() - make_interval(secs => $3)",
                &[&hold.tenant, &hold.id, &FLIP_BEFORE.as_secs_f64()],
            )
            .await?;
        if held != 1 {
            return Err(CatalogError::HoldLost(to.key.clone()));
        }
        client.batch_execute("COMMIT").await?;
        Ok(())
    };
    let r = work.await;
    if r.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    r
}

/// Whether the catalog routes tenant `t.key` as `t` says (after a flip whose
/// outcome was not seen).
pub async fn routed_as(client: &Client, t: &TenantConfig) -> Result<bool, CatalogError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pgtenant.tenants
              WHERE key = $1 AND mode = $2 AND server = $3
                AND database IS NOT DISTINCT FROM $4 AND schema IS NOT DISTINCT FROM $5",
            &[
                &t.key,
                &mode_text(t.mode),
                &t.server,
                &t.database,
                &t.schema,
            ],
        )
        .await?
        .is_some())
}
