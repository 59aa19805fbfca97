//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES: per tenant, PgBouncer 1.23's
//! columns (microseconds for times). Averages are per second (counts,
//! bytes) and per transaction or query (times) since pgtenant started,
//! where PgBouncer uses its last stats period. SHOW STATS also carries
//! `total_requests` (= total_query_count), the pre-1.8 column Debian's
//! prometheus-pgbouncer-exporter still reads.

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone, Copy)]
pub enum Kind {
    Stats,
    Totals,
    Averages,
}

pub struct ShowStats(pub Kind);

/// One tenant's totals: assignments, xacts, queries, received, sent,
/// xact µs, query µs, wait µs.
fn totals(c: &crate::pool::TenantCounters) -> [u64; 8] {
    let r = Ordering::Relaxed;
    let xacts = c.transactions.load(r);
    let xact_us = c.xact_us.load(r);
    [
        xacts,
        xacts,
        c.queries.load(r),
        c.bytes_received.load(r),
        c.bytes_sent.load(r),
        xact_us,
        xact_us,
        c.wait_us.load(r),
    ]
}

/// Per second for counts and bytes, per transaction / query for times.
fn averages(t: &[u64; 8], secs: u64) -> [u64; 8] {
    let per = |a: u64, b: u64| a.checked_div(b).unwrap_or(0);
    [
        per(t[0], secs),
        per(t[1], secs),
        per(t[2], secs),
        per(t[3], secs),
        per(t[4], secs),
        per(t[5], t[1]),
        per(t[6], t[2]),
        per(t[7], t[0]),
    ]
}

const SHORT: [&str; 8] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
];

const TOTAL: [&str; 8] = [
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
];

const AVG: [&str; 8] = [
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];

impl Command for ShowStats {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Stats => "SHOW STATS",
            Kind::Totals => "SHOW STATS_TOTALS",
            Kind::Averages => "SHOW STATS_AVERAGES",
        }
    }
    fn usage(&self) -> &'static str {
        match self.0 {
            Kind::Stats => "SHOW STATS",
            Kind::Totals => "SHOW STATS_TOTALS",
            Kind::Averages => "SHOW STATS_AVERAGES",
        }
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        let kind = self.0;
        Box::pin(async move {
            let mut columns = vec![("database", Text)];
            match kind {
                Kind::Stats => {
                    columns.extend(TOTAL.iter().map(|n| (*n, Numeric)));
                    columns.extend(AVG.iter().map(|n| (*n, Numeric)));
                    columns.push(("total_requests", Numeric));
                }
                Kind::Totals | Kind::Averages => {
                    columns.extend(SHORT.iter().map(|n| (*n, Numeric)));
                }
            }
            let mut o = Output::table(&columns);
            let secs = proxy.started.elapsed().as_secs().max(1);
            let mut counters = proxy.pools.counters();
            counters.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, c) in counters {
                let t = totals(&c);
                let a = averages(&t, secs);
                let mut row = vec![v(key)];
                match kind {
                    Kind::Stats => {
                        row.extend(t.iter().map(v));
                        row.extend(a.iter().map(v));
                        row.push(v(t[2]));
                    }
                    Kind::Totals => row.extend(t.iter().map(v)),
                    Kind::Averages => row.extend(a.iter().map(v)),
                }
                o.row(row);
            }
            Ok(o)
        })
    }
}
