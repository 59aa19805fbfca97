//! The soak (issue 15): writers commit across tenants of every mode while
//! random faults strike (PostgreSQL restarted fast or immediate, the network
//! to it stalled, slowed, reset or refusing, clients killed mid-transaction),
//! then a ledger check: every acknowledged commit present exactly once,
//! nothing a killed client wrote, no leaked server connection, no panic.
//!
//! Ignored by `cargo test`; `scripts/soak.sh [DURATION]` runs it (the test
//! suite runs 2 minutes of it, a soak proper runs 30). `PGTENANT_SOAK_SECS`
//! sets the duration, `PGTENANT_SOAK_SEED` replays a run's faults.

mod common;

use common::fault::{Accept, Fault, FaultRelay};
use common::ledger::Ledger;
use common::raw::{message, RawConn};
use common::*;
use pgtenant::config::TenantMode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APP_DB: &str = "soak_app";
const PLATFORM_DB: &str = "soak_platform";

/// The ledger every tenant writes to; for shared tenants a row-level-security
/// table like the shipped migrations' (pgtenant.target_mode says which).
const LEDGER_MIGRATION: &str = r#"
CREATE TABLE ledger (id bigint NOT NULL, writer int NOT NULL);
DO $$
BEGIN
    IF current_setting('pgtenant.target_mode', true) IS DISTINCT FROM 'shared' THEN
        RETURN;
    END IF;
    ALTER TABLE ledger ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
    ALTER TABLE ledger ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_rows ON ledger
        USING (tenant_id = (SELECT pgtenant.current_tenant()))
        WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
END
$$;
"#;

const TENANTS: [(&str, TenantMode); 5] = [
    ("sk_s1", TenantMode::Schema),
    ("sk_s2", TenantMode::Schema),
    ("sk_d1", TenantMode::Database),
    ("sk_f1", TenantMode::Shared),
    ("sk_f2", TenantMode::Shared),
];
const WRITERS_PER_TENANT: usize = 2;

/// A small deterministic generator: a failing run is replayed by its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Strike {
    RestartFast,
    RestartImmediate,
    Stall,
    Slow,
    Reset,
    Refuse,
    KillClients,
}

const STRIKES: [Strike; 7] = [
    Strike::RestartFast,
    Strike::RestartImmediate,
    Strike::Stall,
    Strike::Slow,
    Strike::Reset,
    Strike::Refuse,
    Strike::KillClients,
];

fn config(relay_port: u16, migrations: &std::path::Path) -> String {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    catalog_config_text(
        APP_DB,
        PLATFORM_DB,
        "[tiers.default]\npool_size = 3\n[tiers.free]\npool_size = 3\n",
    )
    .replace(shipped, &migrations.display().to_string())
    .replace("port = {PG_PORT}", &format!("port = {relay_port}"))
    .replacen(
        "[auth]",
        "[proxy]\nquery_timeout = \"2s\"\nquery_wait_timeout = \"5s\"\nserver_connect_timeout = \"2s\"\n\n[auth]",
        1,
    )
}

/// Where each tenant's ledger rows are, read straight from PostgreSQL.
async fn ledger_ids(key: &str) -> Vec<i64> {
    let platform = direct(PLATFORM_DB).await;
    let row = column(
        &platform,
        &format!(
            "SELECT mode || '|' || database || '|' || coalesce(schema, 'public') || '|' || id \
             FROM pgtenant.tenants WHERE key = '{key}'"
        ),
    )
    .await;
    let parts: Vec<&str> = row[0].split('|').collect();
    let (mode, database, schema, id) = (parts[0], parts[1], parts[2], parts[3]);
    let filter = if mode == "shared" {
        format!(" WHERE tenant_id = '{id}'")
    } else {
        String::new()
    };
    column(
        &direct(database).await,
        &format!("SELECT id FROM \"{schema}\".ledger{filter}"),
    )
    .await
    .iter()
    .map(|s| s.parse().expect("id"))
    .collect()
}

/// 100 clients of `key` each open a transaction, insert, and are killed
/// before committing: none of their ids may ever show up.
async fn kill_clients(proxy: std::net::SocketAddr, key: &str, ledger: &Ledger) {
    let user = format!("app.{key}");
    let mut clients = Vec::new();
    for _ in 0..100 {
        let Ok(mut c) = RawConn::connect(proxy, &[("user", &user), ("database", APP_DB)], "").await
        else {
            continue; // a login during another fault may be refused
        };
        let id = ledger.never_committed();
        let sql = format!(
            "BEGIN; INSERT INTO ledger (id, writer) VALUES ({id}, -1); SELECT pg_sleep(0.2)\0"
        );
        c.send(&message(b'Q', sql.as_bytes())).await;
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: scripts/soak.sh runs it"]
async fn soak() {
    let secs: u64 = std::env::var("PGTENANT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("PGTENANT_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    println!("soak: {secs} s, seed {seed}");
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    managed_roles().await;
    managed_database(APP_DB).await;
    managed_database(PLATFORM_DB).await;
    admin_sql(APP_DB, pgtenant::provision::HARDENING_SQL).await;
    let migrations = scratch("soak-migrations");
    std::fs::create_dir_all(&migrations).expect("migrations dir");
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).expect("shipped")
    {
        let f = f.expect("entry").path();
        std::fs::copy(&f, migrations.join(f.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(migrations.join("900_ledger.sql"), LEDGER_MIGRATION).expect("ledger migration");
    let relay = FaultRelay::start(([127, 0, 0, 1], pg_port()).into()).await;
    let text = config(relay.port(), &migrations);
    let cfg = catalog_config(&text);
    for (key, mode) in TENANTS {
        let tier = if matches!(mode, TenantMode::Shared) {
            "free"
        } else {
            "default"
        };
        provision_tenant(&cfg, key, mode, tier).await;
    }
    let proxy = start_proxy(&text).await;

    let ledger = Ledger::new();
    let mut writers = Vec::new();
    for (i, (key, _)) in TENANTS.iter().enumerate() {
        for w in 0..WRITERS_PER_TENANT {
            let conninfo = format!(
                "host=127.0.0.1 port={} user=app.{key} dbname={APP_DB}",
                proxy.addr.port()
            );
            let writer = (i * WRITERS_PER_TENANT + w) as i32;
            writers.push(tokio::spawn(ledger.clone().write_as(
                conninfo,
                "ledger".into(),
                key.to_string(),
                writer,
            )));
        }
    }

    let mut dice = Dice(seed);
    let mut struck: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    let cluster = cluster();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(1500 + dice.next(2500))).await;
        let strike = STRIKES[dice.next(STRIKES.len() as u64) as usize];
        *struck.entry(format!("{strike:?}")).or_default() += 1;
        println!("soak: {:>5.1}s {strike:?}", started.elapsed().as_secs_f64());
        match strike {
            Strike::RestartFast | Strike::RestartImmediate => {
                let mode = if matches!(strike, Strike::RestartFast) {
                    "fast"
                } else {
                    "immediate"
                };
                tokio::task::block_in_place(|| cluster.stop_server(mode)).expect("stop");
                tokio::time::sleep(Duration::from_millis(300 + dice.next(700))).await;
                tokio::task::block_in_place(|| cluster.start_server()).expect("start");
            }
            Strike::Stall => {
                relay.set_both(Fault::Stall);
                tokio::time::sleep(Duration::from_millis(1000 + dice.next(2500))).await;
                relay.set_both(Fault::Pass);
            }
            Strike::Slow => {
                relay.set_both(Fault::Slow(Duration::from_millis(5)));
                tokio::time::sleep(Duration::from_millis(2000)).await;
                relay.set_both(Fault::Pass);
            }
            Strike::Reset => relay.reset_all(),
            Strike::Refuse => {
                relay.accept(Accept::Close);
                relay.reset_all();
                tokio::time::sleep(Duration::from_millis(500 + dice.next(1500))).await;
                relay.accept(Accept::Forward);
            }
            Strike::KillClients => {
                let key = TENANTS[dice.next(TENANTS.len() as u64) as usize].0;
                kill_clients(proxy.addr, key, &ledger).await;
            }
        }
    }
    // Calm: every writer must get through again, then stop.
    let calm = ledger.acked_total();
    let recovered = wait_until(Duration::from_secs(10), || async {
        ledger.acked_total() >= calm + 50
    })
    .await;
    ledger.stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for w in writers {
        acked += w.await.expect("writer");
    }
    assert!(
        recovered,
        "writers did not get through after the last fault"
    );

    let mut report = Vec::new();
    let mut clean = true;
    for (key, mode) in TENANTS {
        let tally = ledger.check(key, &ledger_ids(key).await);
        clean &= tally.clean();
        report.push(format!("  {key} ({mode:?}): {tally:?}"));
    }
    let admin = direct("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (seen, counted) = loop {
        let seen: i64 = scalar(
            &admin,
            // Links: `pgtenant/<key>` (role isolation) or `pgtenant`
            // (context); not the catalog's or LISTEN's own connections.
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgtenant' \
             OR (application_name LIKE 'pgtenant/%' AND application_name <> 'pgtenant/listen')",
        )
        .await
        .parse()
        .expect("count");
        let counted = proxy.proxy.pools.server_links("main") as i64;
        if seen == counted || Instant::now() > deadline {
            break (seen, counted);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let panicked = panics.load(Ordering::SeqCst);
    println!(
        "soak summary: {secs} s, seed {seed}\n  faults: {struck:?}\n  commits acknowledged: {acked}\n  \
         errors told to clients: {:?}\n  reconnects: {}\n  server links: {seen} on PostgreSQL, {counted} counted by pgtenant\n  panics: {panicked}\n{}",
        ledger.errors.lock().expect("ledger lock"),
        ledger.reconnects.load(Ordering::Relaxed),
        report.join("\n")
    );
    assert!(
        clean,
        "lost, duplicated or unexpected commits (see the summary)"
    );
    assert_eq!(seen, counted, "leaked server connections");
    assert_eq!(panicked, 0, "panics during the soak");
    assert!(acked > 100, "the load ran ({acked} commits)");
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
