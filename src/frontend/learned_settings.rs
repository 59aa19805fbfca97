//! Session settings whose values no SQL text shows
//! (`set_config('app.user', $1, false)`, a value bound by the driver): when
//! the transaction that ran one ends, pgtenant asks the server what the
//! setting is now and follows that value onto the client's next links, as it
//! follows a literal `SET` (SPEC §4). Asking after the end makes a rollback,
//! a failed statement or a savepoint come out right without a model of them.

use super::client::ClientState;
use super::policy::set_config_replay;
use crate::sql::literal;

/// In its own transaction with no statement timeout, like the pin check: the
/// client's own `statement_timeout` must not fail it. The first column is
/// the link's encoding: values are followed only as UTF-8 (pgtenant reads
/// and replays them so; another encoding would garble them).
fn learn_sql(names: &[String]) -> String {
    let columns: Vec<String> = names
        .iter()
        .map(|n| format!(", pg_catalog.current_setting({}, true)", literal(n)))
        .collect();
    format!(
        "{} SELECT pg_catalog.current_setting('client_encoding'){}; COMMIT",
        super::pin_check::OWN_TRANSACTION,
        columns.concat()
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
    let mut values = rows.into_iter().next().unwrap_or_default().into_iter();
    if values.next().flatten().as_deref() != Some("UTF8") {
        return Ok(()); // Not followed: the link is reset, as before learning.
    }
    let max = client.limits.max_settings;
    for (name, value) in names.iter().zip(values) {
        let current = &mut client.settings.current;
        match value {
            Some(value) if current.contains(name) || current.len() < max => {
                current.set(name, set_config_replay(name, &value))
            }
            Some(_) => {}
            None => current.remove(name),
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
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 0; SELECT pg_catalog.current_setting('client_encoding'), pg_catalog.current_setting('app.user', true), pg_catalog.current_setting('it''s', true); COMMIT"
        );
    }
}
