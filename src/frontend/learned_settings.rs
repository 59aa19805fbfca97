//! Session settings whose values no SQL text shows
//! (`set_config('app.user', $1, false)`, a value bound by the driver): when
//! the transaction that ran one ends, pgtenant asks the server what the
//! setting is now and follows that value onto the client's next links, as it
//! follows a literal `SET` (SPEC §4). Asking after the end makes a rollback,
//! a failed statement or a savepoint come out right without a model of them.

use super::client::ClientState;
use super::policy::set_config_replay;
use crate::sql::literal;

/// Most names one client has waiting to be learned (each costs a column).
pub(super) const MAX_LEARNED: usize = 16;

/// In its own transaction with no statement timeout, like the pin check: the
/// client's own `statement_timeout` must not fail it.
fn learn_sql(names: &[String]) -> String {
    let columns: Vec<String> = names
        .iter()
        .map(|n| format!("pg_catalog.current_setting({}, true)", literal(n)))
        .collect();
    format!(
        "BEGIN; SET LOCAL statement_timeout = 0; SELECT {}; COMMIT",
        columns.join(", ")
    )
}

/// Asks the server for the settings `client.learn` names and records them
/// as the client's own (a setting the session never had is dropped).
pub(super) async fn learn_settings(
    client: &mut ClientState,
    conn: &mut crate::backend::ServerConn,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let names = std::mem::take(&mut client.learn);
    let rows = tokio::time::timeout(timeout, conn.query_rows(&learn_sql(&names)))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let values = rows.into_iter().next().unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        match values.get(i).cloned().flatten() {
            Some(value) => client
                .settings
                .current
                .set(name, set_config_replay(name, &value)),
            None => client.settings.current.remove(name),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_as_literals() {
        assert_eq!(
            learn_sql(&["app.user".to_owned(), "it's".to_owned()]),
            "BEGIN; SET LOCAL statement_timeout = 0; SELECT pg_catalog.current_setting('app.user', true), pg_catalog.current_setting('it''s', true); COMMIT"
        );
    }
}
