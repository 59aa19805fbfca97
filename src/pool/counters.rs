//! A tenant's activity, as plain atomics beside its pool: a session adds what
//! it counted locally once per transaction (never per message), and the
//! metrics module reads them at scrape time, where the label policy
//! (all / top / tier) decides which series they land in.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a client's request or connection failed (`pgtenant_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Auth,
    Quota,
    Timeout,
    Server,
    Protocol,
    Isolation,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Auth,
        ErrorKind::Quota,
        ErrorKind::Timeout,
        ErrorKind::Server,
        ErrorKind::Protocol,
        ErrorKind::Isolation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::Quota => "quota",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Server => "server",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Isolation => "isolation",
        }
    }
}

/// What one session did since it last flushed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    pub transactions: u64,
    pub queries: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Requests the statement guard refused (42501).
    pub isolation_refusals: u64,
    pub reprepares: u64,
    pub evictions: u64,
}

impl SessionStats {
    pub fn is_empty(&self) -> bool {
        *self == SessionStats::default()
    }
}

#[derive(Debug, Default)]
pub struct TenantCounters {
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Statements prepared again on a link that lacked them, and closed to
    /// make room on a full link.
    pub reprepares: AtomicU64,
    pub evictions: AtomicU64,
    /// Microseconds clients waited for a server connection.
    pub wait_us: AtomicU64,
    /// Microseconds from a request to the end of its transaction.
    pub xact_us: AtomicU64,
    errors: [AtomicU64; 6],
}

impl TenantCounters {
    /// Adds a session's counts (a few relaxed adds).
    pub fn add(&self, s: &SessionStats) {
        let r = Ordering::Relaxed;
        self.transactions.fetch_add(s.transactions, r);
        self.queries.fetch_add(s.queries, r);
        self.bytes_received.fetch_add(s.bytes_received, r);
        self.bytes_sent.fetch_add(s.bytes_sent, r);
        if s.reprepares > 0 {
            self.reprepares.fetch_add(s.reprepares, r);
        }
        if s.evictions > 0 {
            self.evictions.fetch_add(s.evictions, r);
        }
        if s.isolation_refusals > 0 {
            self.error(ErrorKind::Isolation, s.isolation_refusals);
        }
    }

    pub fn error(&self, kind: ErrorKind, n: u64) {
        self.errors[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }
}

/// A tier's latency histograms: handles into the metrics registry (no-ops
/// when metrics are off), recorded once per transaction without a lookup.
#[derive(Clone)]
pub struct Timings {
    pub transaction: metrics::Histogram,
    pub pool_wait: metrics::Histogram,
    /// From a client's request to its answer (a pipelined burst: to the
    /// last answer).
    pub query: metrics::Histogram,
    /// Metrics are on: worth reading the clock for `query`.
    pub enabled: bool,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            transaction: metrics::Histogram::noop(),
            pool_wait: metrics::Histogram::noop(),
            query: metrics::Histogram::noop(),
            enabled: false,
        }
    }
}

impl std::fmt::Debug for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timings")
    }
}

/// What a new pool counts into: its tenant's counters and its latency
/// histograms.
#[derive(Debug, Clone)]
pub struct Metering {
    pub counters: std::sync::Arc<TenantCounters>,
    pub timings: Timings,
}

/// Makes the histograms of a (tenant key, tier) pair.
#[derive(Clone)]
pub struct TimingsFactory(pub std::sync::Arc<MakeTimings>);

type MakeTimings = dyn Fn(&str, &str) -> Timings + Send + Sync;

impl TimingsFactory {
    pub fn make(&self, tenant: &str, tier: &str) -> Timings {
        (self.0)(tenant, tier)
    }
}

impl Default for TimingsFactory {
    fn default() -> Self {
        Self(std::sync::Arc::new(|_: &str, _: &str| Timings::default()))
    }
}

impl std::fmt::Debug for TimingsFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimingsFactory")
    }
}
