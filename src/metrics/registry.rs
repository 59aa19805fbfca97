//! The process's metrics: a Prometheus recorder of its own (not the global
//! one, so several proxies in one process never mix), login metrics recorded
//! as they happen, latency histograms handed to pools once, and per-tenant
//! series published at scrape time from the pools' counters under the label
//! policy that bounds their number.

use super::catalog::{self as c, Def, LoginFailure};
use crate::config::{MetricsConfig, TenantLabels, TenantStatus};
use crate::migrate::{State, TenantMigration};
use crate::pool::{ErrorKind, TenantCounters, TenantPool, Timings, TimingsFactory};
use crate::tenant::Tenant;
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Seconds: from 100 µs to 30 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

const META: Metadata<'static> = Metadata::new("pgtenant", Level::INFO, None);

/// The label of tenants without a series of their own.
pub const OTHER: &str = "_other";

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    policy: TenantLabels,
    top: usize,
    per_tenant_histograms: bool,
    /// Tenants with series of their own: once given, kept (a counter that
    /// moved between series would look like a reset).
    labelled: Mutex<HashSet<String>>,
    logins_in_flight: Gauge,
    login_seconds: Histogram,
    logins_failed: [Counter; 6],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("policy", &self.policy)
            .finish()
    }
}

/// What a scrape reads, handed over by the app.
pub struct View<'a> {
    pub pools: Vec<Arc<TenantPool>>,
    pub counters: Vec<(String, Arc<TenantCounters>)>,
    pub tenants: &'a HashMap<String, Arc<Tenant>>,
    pub migrations: Vec<(String, TenantMigration)>,
    /// The catalog answered its last read (`None`: no catalog configured).
    pub catalog_up: Option<bool>,
    /// Idle clients parked (see `frontend::parking`).
    pub parked: usize,
}

fn key(d: &Def, labels: &[(&'static str, String)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect();
    Key::from_parts(d.name, labels)
}

/// Per-tenant sums under one (tenant, tier) label pair.
#[derive(Default)]
struct Agg {
    transactions: u64,
    queries: u64,
    received: u64,
    sent: u64,
    errors: [u64; 6],
    reprepares: u64,
    evictions: u64,
    active: u64,
    waiting: u64,
    idle: u64,
    quota: u64,
    in_use: u64,
    pending: u64,
    failed: u64,
    version: Option<u64>,
}

impl Metrics {
    pub fn new(cfg: &MetricsConfig) -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        c::describe(&recorder);
        let handle = recorder.handle();
        let logins_failed = LoginFailure::ALL.map(|r| {
            recorder.register_counter(
                &key(&c::LOGINS_FAILED, &[("reason", r.as_str().to_owned())]),
                &META,
            )
        });
        Metrics {
            logins_in_flight: recorder.register_gauge(&key(&c::LOGINS_IN_FLIGHT, &[]), &META),
            login_seconds: recorder.register_histogram(&key(&c::LOGIN_SECONDS, &[]), &META),
            logins_failed,
            recorder,
            handle,
            policy: cfg.tenant_labels,
            top: cfg.top_tenants,
            per_tenant_histograms: cfg.per_tenant_histograms,
            labelled: Mutex::default(),
        }
    }

    /// Histograms for new pools: per tier, or per tenant when asked.
    pub fn timings_factory(self: &Arc<Self>) -> TimingsFactory {
        let me = self.clone();
        TimingsFactory(Arc::new(move |tenant: &str, tier: &str| {
            let mut labels = vec![("tier", tier.to_owned())];
            if me.per_tenant_histograms {
                labels.insert(0, ("tenant", tenant.to_owned()));
            }
            Timings {
                transaction: me
                    .recorder
                    .register_histogram(&key(&c::TRANSACTION_SECONDS, &labels), &META),
                pool_wait: me
                    .recorder
                    .register_histogram(&key(&c::POOL_WAIT_SECONDS, &labels), &META),
                query: me
                    .recorder
                    .register_histogram(&key(&c::QUERY_SECONDS, &labels), &META),
                enabled: true,
            }
        }))
    }

    /// A login began; the guard counts it in flight until dropped.
    pub fn login_started(&self) -> LoginInFlight {
        self.logins_in_flight.increment(1.0);
        LoginInFlight(self.logins_in_flight.clone())
    }

    pub fn login_succeeded(&self, took: Duration) {
        self.login_seconds.record(took.as_secs_f64());
    }

    pub fn login_failed(&self, why: LoginFailure) {
        self.logins_failed[why as usize].increment(1);
    }

    /// Drains histogram samples into their buckets (also done by a scrape);
    /// run now and then so samples never pile up between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Which tenants get series of their own now.
    fn choose(&self, counters: &[(String, Arc<TenantCounters>)]) -> HashSet<String> {
        let mut labelled = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        match self.policy {
            TenantLabels::Tier => {}
            TenantLabels::All => labelled.extend(counters.iter().map(|(k, _)| k.clone())),
            TenantLabels::Top if labelled.len() < self.top => {
                let mut busy: Vec<(u64, &String)> = counters
                    .iter()
                    .filter(|(k, _)| !labelled.contains(k))
                    .map(|(k, c)| (c.transactions.load(Ordering::Relaxed), k))
                    .filter(|(n, _)| *n > 0)
                    .collect();
                busy.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
                let room = self.top - labelled.len();
                labelled.extend(busy.into_iter().take(room).map(|(_, k)| k.clone()));
            }
            TenantLabels::Top => {}
        }
        labelled.clone()
    }

    /// The Prometheus text of everything, per-tenant series refreshed.
    pub fn render(&self, view: &View<'_>) -> String {
        let labelled = self.choose(&view.counters);
        let tier_of = |key: &str| -> String {
            view.tenants
                .get(key)
                .map(|t| t.tier.clone())
                .unwrap_or_else(|| "unknown".into())
        };
        let label = |key: &str| -> (String, String) {
            let tier = tier_of(key);
            if labelled.contains(key) {
                (key.to_owned(), tier)
            } else {
                (OTHER.to_owned(), tier)
            }
        };
        let mut aggs: BTreeMap<(String, String), Agg> = BTreeMap::new();
        for (k, ctr) in &view.counters {
            let a = aggs.entry(label(k)).or_default();
            let r = Ordering::Relaxed;
            a.transactions += ctr.transactions.load(r);
            a.queries += ctr.queries.load(r);
            a.received += ctr.bytes_received.load(r);
            a.sent += ctr.bytes_sent.load(r);
            a.reprepares += ctr.reprepares.load(r);
            a.evictions += ctr.evictions.load(r);
            for kind in ErrorKind::ALL {
                a.errors[kind as usize] += ctr.errors(kind);
            }
        }
        let mut servers: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut groups_seen = HashSet::new();
        for p in &view.pools {
            let s = p.stats();
            let a = aggs.entry(label(&p.key)).or_default();
            let active = s.active as u64;
            let waiting = s.waiting as u64;
            a.active += active;
            a.waiting += waiting;
            a.idle += (s.clients as u64).saturating_sub(active + waiting);
            a.quota += s.quota as u64;
            a.in_use += active;
            let target = p.target();
            let srv = servers
                .entry((target.server.to_string(), target.database.clone()))
                .or_default();
            srv.0 += active;
            if groups_seen.insert(p.group.name.clone()) {
                srv.1 += p.group.idle_count() as u64;
            }
        }
        for (k, m) in &view.migrations {
            let (tenant, tier) = label(k);
            let behind = match (m.version, m.target_version) {
                (Some(v), Some(t)) => v < t,
                (None, Some(_)) => true,
                _ => false,
            };
            let own = tenant != OTHER;
            let a = aggs.entry((tenant, tier)).or_default();
            a.pending += u64::from(behind);
            a.failed += u64::from(matches!(m.state, State::Failed | State::Drift));
            if own {
                a.version = m.version.map(u64::from);
            }
        }
        let rec = &self.recorder;
        let counter = |d: &Def, labels: &[(&'static str, String)], v: u64| {
            rec.register_counter(&key(d, labels), &META).absolute(v);
        };
        let gauge = |d: &Def, labels: &[(&'static str, String)], v: f64| {
            rec.register_gauge(&key(d, labels), &META).set(v);
        };
        for ((tenant, tier), a) in &aggs {
            let l = [("tenant", tenant.clone()), ("tier", tier.clone())];
            counter(&c::TRANSACTIONS, &l, a.transactions);
            counter(&c::QUERIES, &l, a.queries);
            counter(&c::BYTES_RECEIVED, &l, a.received);
            counter(&c::BYTES_SENT, &l, a.sent);
            counter(&c::REPREPARES, &l, a.reprepares);
            counter(&c::EVICTIONS, &l, a.evictions);
            for kind in ErrorKind::ALL {
                let mut with = l.to_vec();
                with.push(("kind", kind.as_str().to_owned()));
                counter(&c::ERRORS, &with, a.errors[kind as usize]);
            }
            for (state, v) in [
                ("active", a.active),
                ("waiting", a.waiting),
                ("idle", a.idle),
            ] {
                let mut with = l.to_vec();
                with.push(("state", state.to_owned()));
                gauge(&c::CLIENT_CONNECTIONS, &with, v as f64);
            }
            gauge(&c::POOL_QUOTA, &l, a.quota as f64);
            gauge(&c::POOL_IN_USE, &l, a.in_use as f64);
            gauge(&c::MIGRATION_PENDING, &l, a.pending as f64);
            gauge(&c::MIGRATION_FAILED, &l, a.failed as f64);
            if let Some(v) = a.version {
                gauge(&c::MIGRATION_VERSION, &l, v as f64);
            }
        }
        for ((server, database), (active, idle)) in servers {
            for (state, v) in [("active", active), ("idle", idle)] {
                let l = [
                    ("server", server.clone()),
                    ("database", database.clone()),
                    ("state", state.to_owned()),
                ];
                gauge(&c::SERVER_CONNECTIONS, &l, v as f64);
            }
        }
        let mut statuses: BTreeMap<&str, u64> = [
            TenantStatus::Trial,
            TenantStatus::Active,
            TenantStatus::Suspended,
            TenantStatus::Cancelled,
        ]
        .iter()
        .map(|s| (crate::catalog::status_text(*s), 0))
        .collect();
        for t in view.tenants.values() {
            *statuses
                .entry(crate::catalog::status_text(t.status))
                .or_default() += 1;
        }
        for (status, n) in statuses {
            gauge(&c::TENANTS, &[("status", status.to_owned())], n as f64);
        }
        if let Some(up) = view.catalog_up {
            gauge(&c::CATALOG_UP, &[], if up { 1.0 } else { 0.0 });
        }
        gauge(&c::CLIENTS_PARKED, &[], view.parked as f64);
        self.handle.render()
    }
}

/// Counts a login in flight until dropped.
pub struct LoginInFlight(Gauge);

impl Drop for LoginInFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: TenantLabels, top: usize) -> MetricsConfig {
        MetricsConfig {
            listen: None,
            tenant_labels: policy,
            top_tenants: top,
            per_tenant_histograms: false,
        }
    }

    /// 2,000 tenants, tenant i with i transactions.
    fn busy_tenants() -> Vec<(String, Arc<TenantCounters>)> {
        (0..2000u64)
            .map(|i| {
                let c = TenantCounters::default();
                c.transactions.store(i, Ordering::Relaxed);
                (format!("t{i:04}"), Arc::new(c))
            })
            .collect()
    }

    fn render(m: &Metrics, counters: &[(String, Arc<TenantCounters>)]) -> String {
        m.render(&View {
            pools: Vec::new(),
            counters: counters.to_vec(),
            tenants: &HashMap::new(),
            migrations: Vec::new(),
            catalog_up: None,
            parked: 0,
        })
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    fn transactions(text: &str) -> Vec<(String, u64)> {
        series(text)
            .into_iter()
            .filter_map(|l| l.strip_prefix("pgtenant_transactions_total{tenant=\""))
            .map(|l| {
                let (tenant, rest) = l.split_once('"').expect("label");
                let v = rest.rsplit(' ').next().expect("value");
                (tenant.to_owned(), v.parse().expect("number"))
            })
            .collect()
    }

    #[test]
    fn top_labels_the_busiest_and_sums_the_rest_within_bounds() {
        let m = Metrics::new(&config(TenantLabels::Top, 50));
        let text = render(&m, &busy_tenants());
        let mut got = transactions(&text);
        got.sort();
        let mut want: Vec<(String, u64)> =
            (1950..2000u64).map(|i| (format!("t{i:04}"), i)).collect();
        want.push((OTHER.to_owned(), (0..1950u64).sum()));
        want.sort();
        assert_eq!(got, want);
        let n = series(&text).len();
        assert!(n < 1500, "{n} series for 2,000 tenants");
        // Labels stick: a quieter run later keeps the same 51.
        let text = render(&m, &busy_tenants());
        assert_eq!(transactions(&text).len(), 51);
    }

    #[test]
    fn tier_labels_none_and_all_labels_every_tenant() {
        let counters = busy_tenants();
        let tier = Metrics::new(&config(TenantLabels::Tier, 50));
        assert_eq!(
            transactions(&render(&tier, &counters)),
            vec![(OTHER.to_owned(), (0..2000u64).sum())]
        );
        let all = Metrics::new(&config(TenantLabels::All, 50));
        assert_eq!(transactions(&render(&all, &counters)).len(), 2000);
    }
}
