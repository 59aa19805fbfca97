//! Every metric pgtenant exports: name, kind, help and labels, in one place
//! (SPEC §7). The rest of the code names metrics only through these.

use metrics::{KeyName, Recorder, SharedString, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn def(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [&'static str],
) -> Def {
    Def {
        name,
        kind,
        help,
        labels,
    }
}

use Kind::{Counter, Gauge, Histogram};

const TENANT: &[&str] = &["tenant", "tier"];

// Per tenant (tenant="_other" sums the tenants without a series of their own, per tier).
pub const CLIENT_CONNECTIONS: Def = def(
    "pgtenant_client_connections",
    Gauge,
    "Client connections by tenant and state (active: in a transaction; waiting: for a server connection; idle).",
    &["tenant", "tier", "state"],
);
pub const TRANSACTIONS: Def = def(
    "pgtenant_transactions_total",
    Counter,
    "Transactions completed by clients (ReadyForQuery back to idle).",
    TENANT,
);
pub const QUERIES: Def = def(
    "pgtenant_queries_total",
    Counter,
    "Client requests answered (each Query, or extended-protocol Sync).",
    TENANT,
);
pub const BYTES_RECEIVED: Def = def(
    "pgtenant_client_received_bytes_total",
    Counter,
    "Bytes received from clients.",
    TENANT,
);
pub const BYTES_SENT: Def = def(
    "pgtenant_client_sent_bytes_total",
    Counter,
    "Bytes sent to clients.",
    TENANT,
);
pub const ERRORS: Def = def(
    "pgtenant_errors_total",
    Counter,
    "Client errors by tenant and kind (auth, quota, timeout, server, protocol, isolation).",
    &["tenant", "tier", "kind"],
);
pub const REPREPARES: Def = def(
    "pgtenant_prepared_reprepares_total",
    Counter,
    "Client statements pgtenant prepared again on a server connection that lacked them.",
    TENANT,
);
pub const EVICTIONS: Def = def(
    "pgtenant_prepared_evictions_total",
    Counter,
    "Statements closed on a full server connection to make room (max_prepared_statements).",
    TENANT,
);
pub const POOL_QUOTA: Def = def(
    "pgtenant_pool_quota",
    Gauge,
    "Server connections a tenant may use at once.",
    TENANT,
);
pub const POOL_IN_USE: Def = def(
    "pgtenant_pool_in_use",
    Gauge,
    "Server connections lent to a tenant's clients now.",
    TENANT,
);
pub const MIGRATION_VERSION: Def = def(
    "pgtenant_migration_version",
    Gauge,
    "Newest migration applied to a tenant (tenants with a series of their own).",
    TENANT,
);
pub const MIGRATION_PENDING: Def = def(
    "pgtenant_migration_pending",
    Gauge,
    "Tenants behind the newest migration.",
    TENANT,
);
pub const MIGRATION_FAILED: Def = def(
    "pgtenant_migration_failed",
    Gauge,
    "Tenants whose last migration run failed or drifted.",
    TENANT,
);

// Per tier (per tenant with [metrics] per_tenant_histograms).
pub const TRANSACTION_SECONDS: Def = def(
    "pgtenant_transaction_duration_seconds",
    Histogram,
    "Time from a client's request to the end of its transaction (transaction mode).",
    TENANT,
);
pub const QUERY_SECONDS: Def = def(
    "pgtenant_query_duration_seconds",
    Histogram,
    "Time from a client's request to its answer (pipelined requests: to the last answer).",
    TENANT,
);
pub const POOL_WAIT_SECONDS: Def = def(
    "pgtenant_pool_wait_seconds",
    Histogram,
    "Time a client waited for a server connection.",
    TENANT,
);

// Global.
pub const SERVER_CONNECTIONS: Def = def(
    "pgtenant_server_connections",
    Gauge,
    "Server connections by server, database and state (active: lent; idle: pooled).",
    &["server", "database", "state"],
);
pub const TENANTS: Def = def(
    "pgtenant_tenants",
    Gauge,
    "Known tenants by status.",
    &["status"],
);
pub const CATALOG_UP: Def = def(
    "pgtenant_catalog_up",
    Gauge,
    "1 when the tenant catalog answered its last read; 0 while it is unreachable (tenants are served from the last snapshot).",
    &[],
);
pub const LOGIN_SECONDS: Def = def(
    "pgtenant_login_duration_seconds",
    Histogram,
    "Time from a client's first byte to its ReadyForQuery, for logins that succeeded.",
    &[],
);
pub const LOGINS_IN_FLIGHT: Def = def(
    "pgtenant_logins_in_flight",
    Gauge,
    "Clients connected but not yet logged in.",
    &[],
);
pub const CLIENTS_PARKED: Def = def(
    "pgtenant_clients_parked",
    Gauge,
    "Idle clients whose sessions wait in the parking lot, without a task (a part of the idle client connections).",
    &[],
);
pub const LOGINS_FAILED: Def = def(
    "pgtenant_logins_failed_total",
    Counter,
    "Logins failed or abandoned, by reason (timeout, auth, refused_tenant, client_gone, protocol, too_many_clients).",
    &["reason"],
);

pub const ALL: &[Def] = &[
    CLIENT_CONNECTIONS,
    TRANSACTIONS,
    QUERIES,
    BYTES_RECEIVED,
    BYTES_SENT,
    ERRORS,
    REPREPARES,
    EVICTIONS,
    POOL_QUOTA,
    POOL_IN_USE,
    MIGRATION_VERSION,
    MIGRATION_PENDING,
    MIGRATION_FAILED,
    TRANSACTION_SECONDS,
    QUERY_SECONDS,
    POOL_WAIT_SECONDS,
    SERVER_CONNECTIONS,
    TENANTS,
    CATALOG_UP,
    LOGIN_SECONDS,
    LOGINS_IN_FLIGHT,
    CLIENTS_PARKED,
    LOGINS_FAILED,
];

/// Gives the recorder every metric's help text.
pub fn describe(recorder: &impl Recorder) {
    for d in ALL {
        let name = KeyName::from_const_str(d.name);
        let help = SharedString::const_str(d.help);
        let unit = d.name.ends_with("_seconds").then_some(Unit::Seconds);
        match d.kind {
            Counter => recorder.describe_counter(name, unit, help),
            Gauge => recorder.describe_gauge(name, unit, help),
            Histogram => recorder.describe_histogram(name, unit, help),
        }
    }
}

/// Why a login failed (`pgtenant_logins_failed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    Timeout,
    Auth,
    RefusedTenant,
    ClientGone,
    Protocol,
    TooManyClients,
}

impl LoginFailure {
    pub const ALL: [LoginFailure; 6] = [
        LoginFailure::Timeout,
        LoginFailure::Auth,
        LoginFailure::RefusedTenant,
        LoginFailure::ClientGone,
        LoginFailure::Protocol,
        LoginFailure::TooManyClients,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoginFailure::Timeout => "timeout",
            LoginFailure::Auth => "auth",
            LoginFailure::RefusedTenant => "refused_tenant",
            LoginFailure::ClientGone => "client_gone",
            LoginFailure::Protocol => "protocol",
            LoginFailure::TooManyClients => "too_many_clients",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_suffixed_by_kind() {
        let mut names: Vec<&str> = ALL.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for d in ALL {
            assert!(d.name.starts_with("pgtenant_"), "{}", d.name);
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
        }
    }
}
