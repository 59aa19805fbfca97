//! Holds: how `tenant promote|demote|move` stops a tenant's new transactions
//! on every replica for a moment (SPEC §9). The mover inserts a row into
//! `pgtenant.holds`; each replica's watcher sees it (NOTIFY, or its next
//! poll), holds the tenant's new transactions like PAUSE does, and reports
//! in `pgtenant.replicas.quiet` once none of the tenant's transactions runs
//! there. The mover waits until every live replica (one whose heartbeat is
//! recent) is quiet, copies the last changes, and then changes the tenant's
//! route and deletes the hold in one catalog transaction: a replica installs
//! the new route before it lets the held clients go.

use super::{mode_text, status_text, CatalogError};
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

/// The tenants held now (holds past `EXPIRE` are ignored).
pub async fn load_holds(client: &Client) -> Result<Vec<String>, CatalogError> {
    Ok(client
        .query(
            "SELECT tenant FROM pgtenant.holds
              WHERE since > now() - make_interval(secs => $1) ORDER BY tenant",
            &[&EXPIRE.as_secs_f64()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A replica's heartbeat: it is alive, and of the held tenants these have no
/// transaction running on it.
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

/// Holds tenant `key`; false when it is held already (another move runs).
pub async fn hold(client: &Client, key: &str, purpose: &str) -> Result<bool, CatalogError> {
    Ok(client
        .execute(
            "INSERT INTO pgtenant.holds (tenant, purpose) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&key, &purpose],
        )
        .await?
        == 1)
}

/// Lets the tenant's clients go on where they were.
pub async fn release(client: &Client, key: &str) -> Result<(), CatalogError> {
    client
        .execute("DELETE FROM pgtenant.holds WHERE tenant = $1", &[&key])
        .await?;
    Ok(())
}

/// Live replicas that still run a transaction of held tenant `key` (or have
/// not seen the hold yet).
pub async fn busy_replicas(client: &Client, key: &str) -> Result<Vec<String>, CatalogError> {
    Ok(client
        .query(
            "SELECT id FROM pgtenant.replicas
              WHERE seen > now() - make_interval(secs => $2) AND NOT ($1 = ANY (quiet))
              ORDER BY id",
            &[&key, &(LIVE.as_secs_f64())],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Gives tenant `t.key` its new route (mode, server, database, schema, role)
/// and deletes its hold, in one transaction: every replica sees both at once.
/// Refused when the hold is gone or too old (replicas may have let go).
pub async fn flip(client: &Client, t: &TenantConfig) -> Result<(), CatalogError> {
    client.batch_execute("BEGIN").await?;
    let work = async {
        let n = client
            .execute(
                "UPDATE pgtenant.tenants
                    SET mode = $2, server = $3, database = $4, schema = $5, role = $6,
                        status = $7, updated_at = now()
                  WHERE key = $1",
                &[
                    &t.key,
                    &mode_text(t.mode),
                    &t.server,
                    &t.database,
                    &t.schema,
                    &t.role,
                    &status_text(t.status),
                ],
            )
            .await?;
        if n != 1 {
            return Err(CatalogError::Gone(t.key.clone()));
        }
        let held = client
            .execute(
                "DELETE FROM pgtenant.holds
                  WHERE tenant = $1 AND since > now() - make_interval(secs => $2)",
                &[&t.key, &FLIP_BEFORE.as_secs_f64()],
            )
            .await?;
        if held != 1 {
            return Err(CatalogError::HoldLost(t.key.clone()));
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
