//! What pins a transaction-mode client to its server link, asked of the
//! server itself after a transaction that may have taken or released
//! something (SPEC §4: advisory locks, held cursors, temporary tables).

use super::client::{ClientState, PinReason};

/// What pins a session to its backend: session advisory locks, held cursors,
/// temporary tables. Asked of the server itself after a transaction that may
/// have taken or released one, so pgtenant never guesses from SQL text.
/// Its own transaction with no statement timeout: the client's settings
/// (say statement_timeout = 1ms) must not make the check fail.
pub(super) const PIN_CHECK_SQL: &str = "BEGIN; SET LOCAL statement_timeout = 0; SELECT \
    (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND granted), \
    (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable), \
    (SELECT count(*) FROM pg_catalog.pg_class WHERE relpersistence = 't' AND relnamespace = pg_catalog.pg_my_temp_schema()); COMMIT";

pub(super) async fn update_pin(
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
