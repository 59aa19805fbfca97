//! The load itself: connections, workers, tallies.

use super::{BenchError, LatencySummary};
use futures_util::{StreamExt, TryStreamExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

/// How each transaction's query is sent, as pgbench's `-M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// One Query message with the value inline.
    Simple,
    /// Parse/Bind/Execute of an unnamed statement each time.
    Extended,
    /// A named statement prepared once per connection.
    Prepared,
}

/// A bench run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A libpq URL with `{tenant}` where the tenant key goes (user name
    /// `app.{tenant}`, `options=-ctenant%3D{tenant}`, or a database name).
    pub url: String,
    pub keys: Vec<String>,
    /// Client connections kept open (ignored with `connect`).
    pub connections: usize,
    /// Transactions in flight.
    pub clients: usize,
    pub duration: Duration,
    /// Run, unmeasured, this long first.
    pub warmup: Duration,
    pub protocol: Protocol,
    /// A new connection (login) per transaction.
    pub connect: bool,
    /// `aid` is drawn from 1..=rows.
    pub rows: u32,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub transactions: u64,
    pub errors: u64,
    pub wrong_tenant: u64,
    /// Tenants that got at least one right answer.
    pub served: usize,
    pub tenants: usize,
    pub elapsed: Duration,
    pub latency: Option<LatencySummary>,
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn tps(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }

    /// No error, no wrong answer, every tenant served.
    pub fn passed(&self) -> bool {
        self.errors == 0 && self.wrong_tenant == 0 && self.served == self.tenants
    }

    /// The report: readable lines, then one `key=value` line for scripts.
    pub fn report(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut out = format!(
            "transactions: {} in {:.1} s ({:.1} per second)\n\
             errors: {}, wrong-tenant answers: {}, tenants served: {} of {}\n",
            self.transactions,
            self.elapsed.as_secs_f64(),
            self.tps(),
            self.errors,
            self.wrong_tenant,
            self.served,
            self.tenants
        );
        let (avg, p50, p99, max) = self.latency.map_or((0.0, 0.0, 0.0, 0.0), |l| {
            (ms(l.avg), ms(l.p50), ms(l.p99), ms(l.max))
        });
        out += &format!("latency ms: avg {avg:.3}, p50 {p50:.3}, p99 {p99:.3}, max {max:.3}\n");
        if let Some(e) = &self.first_error {
            out += &format!("first error: {e}\n");
        }
        out += &format!(
            "summary tps={:.1} lat_avg_ms={avg:.3} lat_p99_ms={p99:.3} errors={} wrong_tenant={} served={} tenants={}\n",
            self.tps(),
            self.errors,
            self.wrong_tenant,
            self.served,
            self.tenants
        );
        out
    }
}

const SQL: &str = "SELECT tenant, abalance FROM bench_accounts WHERE aid = $1";
/// Connections opened at once before the run (a login storm is not the point).
const OPEN_AT_ONCE: usize = 16;

struct Conn {
    client: Client,
    tenant: usize,
    stmt: Option<Statement>,
}

struct Shared {
    opts: RunOptions,
    /// Idle connections, longest idle first.
    idle: Mutex<VecDeque<Conn>>,
    served: Vec<AtomicU64>,
    /// `connect` mode: the tenant the next login is for.
    next_tenant: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

/// A poisoned lock only means a worker panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    wrong: u64,
    samples: Vec<u32>,
}

/// Runs the load and tallies it. Fails only when the connections can't be
/// opened; errors during the run are counted.
pub async fn run(opts: RunOptions) -> Result<Outcome, BenchError> {
    if opts.keys.is_empty() || opts.clients == 0 || opts.rows == 0 {
        return Err(BenchError::Usage(
            "tenants, clients and rows must be at least 1".into(),
        ));
    }
    if !opts.connect && opts.connections < opts.clients {
        return Err(BenchError::Usage(format!(
            "--connections ({}) must be at least --clients ({})",
            opts.connections, opts.clients
        )));
    }
    if !opts.url.contains("{tenant}") {
        return Err(BenchError::Usage(
            "--url needs {tenant} where the tenant key goes".into(),
        ));
    }
    let started = Instant::now();
    let conns: Vec<Conn> = if opts.connect {
        Vec::new()
    } else {
        futures_util::stream::iter(0..opts.connections)
            .map(|i| open(&opts, i % opts.keys.len()))
            .buffered(OPEN_AT_ONCE)
            .try_collect()
            .await?
    };
    if !opts.connect {
        eprintln!(
            "bench: {} connections open over {} tenants in {:.1} s",
            conns.len(),
            opts.keys.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let shared = Arc::new(Shared {
        served: (0..opts.keys.len()).map(|_| AtomicU64::new(0)).collect(),
        idle: Mutex::new(conns.into()),
        next_tenant: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        opts,
    });
    let measure_from = Instant::now() + shared.opts.warmup;
    let until = measure_from + shared.opts.duration;
    let workers: Vec<_> = (0..shared.opts.clients)
        .map(|_| tokio::spawn(worker(shared.clone(), measure_from, until)))
        .collect();
    let mut total = Tally::default();
    for w in workers {
        let t = w
            .await
            .map_err(|e| BenchError::Usage(format!("a bench worker failed: {e}")))?;
        total.ok += t.ok;
        total.errors += t.errors;
        total.wrong += t.wrong;
        total.samples.extend(t.samples);
    }
    let served = shared
        .served
        .iter()
        .filter(|n| n.load(Ordering::Relaxed) > 0)
        .count();
    let first_error = lock(&shared.first_error).clone();
    Ok(Outcome {
        transactions: total.ok + total.wrong,
        errors: total.errors,
        wrong_tenant: total.wrong,
        served,
        tenants: shared.opts.keys.len(),
        elapsed: shared.opts.duration,
        latency: LatencySummary::of(&mut total.samples),
        first_error,
    })
}

async fn open(opts: &RunOptions, tenant: usize) -> Result<Conn, BenchError> {
    let key = &opts.keys[tenant];
    let url = opts.url.replace("{tenant}", key);
    let (client, connection) =
        tokio_postgres::connect(&url, NoTls)
            .await
            .map_err(|e| BenchError::Connect {
                tenant: key.clone(),
                message: super::describe(&e),
            })?;
    tokio::spawn(connection);
    let stmt = match opts.protocol {
        Protocol::Prepared => Some(client.prepare_typed(SQL, &[Type::INT4]).await?),
        Protocol::Simple | Protocol::Extended => None,
    };
    Ok(Conn {
        client,
        tenant,
        stmt,
    })
}

async fn worker(shared: Arc<Shared>, measure_from: Instant, until: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < until {
        let begun = Instant::now();
        let result = if shared.opts.connect {
            login_and_query(&shared).await
        } else {
            query_on_idle(&shared).await
        };
        let ended = Instant::now();
        if begun < measure_from || ended > until {
            continue;
        }
        match result {
            Some(Ok((tenant, true))) => {
                tally.ok += 1;
                let us = ended.duration_since(begun).as_micros();
                tally.samples.push(u32::try_from(us).unwrap_or(u32::MAX));
                shared.served[tenant].fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok((_, false))) => tally.wrong += 1,
            Some(Err(e)) => {
                tally.errors += 1;
                lock(&shared.first_error).get_or_insert(e);
                // No storm of failing logins (a refused port would take
                // 100,000 a second, and one may connect to itself).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None => {}
        }
    }
    tally
}

/// One transaction on the longest-idle connection: Some((tenant, answer
/// was the tenant's own)), or None when no connection was idle (after lost
/// connections could not be reopened).
async fn query_on_idle(shared: &Shared) -> Option<Result<(usize, bool), String>> {
    let popped = lock(&shared.idle).pop_front();
    let Some(conn) = popped else {
        tokio::time::sleep(Duration::from_millis(10)).await;
        return None;
    };
    let result = query(&shared.opts, &conn).await;
    let tenant = conn.tenant;
    let conn = if conn.client.is_closed() {
        match open(&shared.opts, tenant).await {
            Ok(c) => Some(c),
            Err(e) => {
                lock(&shared.first_error).get_or_insert(e.to_string());
                None
            }
        }
    } else {
        Some(conn)
    };
    if let Some(conn) = conn {
        lock(&shared.idle).push_back(conn);
    }
    Some(result.map(|right| (tenant, right)))
}

/// A login for the next tenant in turn, one transaction, and a Terminate.
async fn login_and_query(shared: &Shared) -> Option<Result<(usize, bool), String>> {
    let tenant = shared.next_tenant.fetch_add(1, Ordering::Relaxed) % shared.opts.keys.len();
    let conn = match open(&shared.opts, tenant).await {
        Ok(c) => c,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(
        query(&shared.opts, &conn)
            .await
            .map(|right| (tenant, right)),
    )
}

/// Runs the bench query; Ok(whether the row came from the connection's own
/// tenant).
async fn query(opts: &RunOptions, conn: &Conn) -> Result<bool, String> {
    let aid = i32::try_from(rand::random::<u32>() % opts.rows + 1).unwrap_or(1);
    let expected = opts.keys[conn.tenant].as_str();
    let got = match (&conn.stmt, opts.protocol) {
        (Some(stmt), _) => first_tenant(conn.client.query(stmt, &[&aid]).await),
        (None, Protocol::Extended) => {
            first_tenant(conn.client.query_typed(SQL, &[(&aid, Type::INT4)]).await)
        }
        (None, _) => {
            let sql = format!("SELECT tenant, abalance FROM bench_accounts WHERE aid = {aid}");
            conn.client
                .simple_query(&sql)
                .await
                .map(|msgs| {
                    msgs.iter().find_map(|m| match m {
                        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                        _ => None,
                    })
                })
                .map_err(|e| super::describe(&e))
        }
    }?;
    Ok(got.as_deref() == Some(expected))
}

fn first_tenant(
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
) -> Result<Option<String>, String> {
    rows.map(|r| r.first().map(|row| row.get::<_, String>(0)))
        .map_err(|e| super::describe(&e))
}
