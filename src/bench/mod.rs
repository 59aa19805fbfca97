//! `pgtenant bench`: a load generator for what pgbench cannot vary, the
//! tenant per client connection (issue 14's "1,000 active tenants"). It keeps
//! `connections` client connections open, spread round-robin over `tenants`
//! tenants, and runs `clients` transactions at once, each on the idle
//! connection that has waited longest: with more connections than clients,
//! every tenant gets turns and no tenant stays warm. `--connect` opens a fresh
//! connection (a login) per transaction instead, for logins per second.
//!
//! Every answer is checked: the bench table holds the tenant's own key in
//! each row, so a transaction routed to another tenant's schema counts as a
//! wrong-tenant answer and fails the run (isolation checked under load).
//! `bench init` makes those tables directly on PostgreSQL, one schema per
//! tenant (`t_<key>`, the schema a `schema` tenant gets by default).

mod fixture;
mod latency;
mod load;

pub use fixture::{init, tenant_keys};
pub use latency::LatencySummary;
pub use load::{run, Outcome, Protocol, RunOptions};

/// What can stop a bench before it measures anything.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect for tenant {tenant}: {message}")]
    Connect { tenant: String, message: String },
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Usage(String),
}

/// A driver error with the server's SQLSTATE and message when it has them
/// (tokio-postgres's own text is only "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
