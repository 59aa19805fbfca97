//! The admin console (SPEC §6): the virtual databases `pgtenant` and
//! `pgbouncer` for `auth.admin_users`, answering the simple and the extended
//! protocol with real RowDescription/DataRow. PgBouncer's views keep
//! PgBouncer's column names and order (a pool's `database` is the tenant
//! key; pgtenant's columns are appended), so PgBouncer tooling works.
//! One file per command, behind [`command::Command`].

mod command;
mod commands;
mod session;

pub use command::{AdminError, Command, Output, Type};
pub use session::serve_console;

/// Database names that open the console.
pub const CONSOLE_DATABASES: [&str; 2] = ["pgtenant", "pgbouncer"];

/// The ParameterStatus values the console greets with: what drivers need
/// (psycopg2 requires client_encoding; DateStyle ISO spares it a SET), and
/// a server_version psql accepts quietly.
pub fn greeting(
    proxy: &crate::app::Proxy,
    params: &crate::protocol::startup::StartupParams,
) -> Vec<(String, String)> {
    let server_version = proxy
        .pools
        .pools()
        .iter()
        .find_map(|p| p.cached_params())
        .and_then(|ps| {
            ps.iter()
                .find(|(k, _)| k == "server_version")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| "15.0".into());
    let mut out: Vec<(String, String)> = [
        ("server_version", server_version.as_str()),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    if let Some(app) = params.get("application_name") {
        out.push(("application_name".into(), app.to_owned()));
    }
    out
}
