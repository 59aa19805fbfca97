//! What pins a transaction-mode client to its server link, asked of the
//! server itself after a transaction that may have taken or released
//! something (SPEC §4: advisory locks, held cursors, temporary tables).

use super::client::{ClientState, PinReason};
use super::learned_settings::learn_settings;

/// How pgtenant's questions after a client's transaction begin: their own
/// transaction, whatever the client's defaults (a serializable, read-only,
/// deferrable default would wait for a snapshot), with no statement timeout
/// (the client's, say 1ms, must not fail them). A macro so `PIN_CHECK_SQL`
/// can be built from it at compile time.
macro_rules! own_transaction {
    () => {
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 0;"
    };
}
pub(super) const OWN_TRANSACTION: &str = own_transaction!();

/// What a transaction-mode client's transaction left on its link that
/// pgtenant must ask the server about: its pins, and settings whose values
/// no SQL text showed. Runs before the link goes back to the pool.
pub(super) async fn after_transaction(
    client: &mut ClientState,
    conn: &mut crate::backend::ServerConn,
    timeout: std::time::Duration,
) -> Result<(), String> {
    if client.check_pins || client.pinned() {
        update_pin(client, conn, timeout).await?;
    }
    if !client.learn.is_empty() {
        learn_settings(client, conn, timeout).await?;
    }
    Ok(())
}

/// What pins a session to its backend: session advisory locks, held cursors,
/// temporary tables. Asked of the server itself after a transaction that may
/// have taken or released one, so pgtenant never guesses from SQL text.
/// In its own transaction ([`OWN_TRANSACTION`]).
pub(super) const PIN_CHECK_SQL: &str = concat!(
    own_transaction!(),
    " SELECT \
    (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND granted), \
    (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable), \
    (SELECT count(*) FROM pg_catalog.pg_class WHERE relpersistence = 't' AND relnamespace = pg_catalog.pg_my_temp_schema()); COMMIT"
);

async fn update_pin(
    client: &mut ClientState,
    conn: &mut crate::backend::ServerConn,
    timeout: std::time::Duration,
) -> Result<(), String> {
    client.check_pins = false;
    let rows = tokio::time::timeout(timeout, conn.query_rows(PIN_CHECK_SQL))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let count = |i: usize| -> u32 {
        rows.first()
            .and_then(|r| r.get(i).cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let reason = PinReason {
        advisory_locks: count(0),
        held_cursors: count(1),
        temp_tables: count(2),
    };
    match (client.pin.is_some(), reason.any()) {
        (_, true) => {
            if client.pin.is_none() {
                tracing::info!(
                    advisory_locks = reason.advisory_locks,
                    held_cursors = reason.held_cursors,
                    temp_tables = reason.temp_tables,
                    "client pinned to its server connection until these are released"
                );
            }
            // Pinned by something pgtenant did not see coming: count it if
            // the cap allows (the link is held either way).
            if client.pin_slot.is_none() {
                client.pin_slot = client.pins.try_acquire().ok();
            }
            client.pin = Some(reason);
        }
        (true, false) => {
            tracing::debug!("client unpinned from its server connection");
            client.pin = None;
            client.pin_slot = None;
        }
        (false, false) => client.pin_slot = None,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pin_check_runs_in_its_own_transaction() {
        assert!(super::PIN_CHECK_SQL.starts_with(super::OWN_TRANSACTION));
    }
}
