//! Tier reserves (SPEC §4): a premium tenant is served promptly while free
//! tenants flood the server. Its own test binary, so no other test competes
//! for the CPU while it measures latency.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premium_reserve_is_served_while_free_tenants_flood() {
    tenant_fixture("rv_app", &[("t_busy", "Busy"), ("t_quiet", "Quiet")]).await;
    let cfg = r#"
[proxy]
query_wait_timeout = "20s"

[auth]
method = "trust"
users = [{ name = "app" }]

[servers.main]
port = {PG_PORT}
database = "rv_app"
user = "postgres"
max_connections = 4

[tiers.free]
pool_size = 4

[tiers.premium]
pool_size = 2
reserve = 2

[[tenants]]
key = "rvfree1"
mode = "schema"
server = "main"
schema = "t_busy"
tier = "free"

[[tenants]]
key = "rvfree2"
mode = "schema"
server = "main"
schema = "t_quiet"
tier = "free"

[[tenants]]
key = "rvprem"
mode = "schema"
server = "main"
schema = "t_busy"
tier = "premium"
"#;
    let proxy = start_proxy(cfg).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..12 {
        let c = connect(
            &proxy,
            &format!("user=app.rvfree{} dbname=rv_app", 1 + i % 2),
        )
        .await
        .expect("free client");
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.simple_query("SELECT pg_sleep(0.1)")
                    .await
                    .expect("free query");
            }
        }));
    }
    // Free tenants now hold every shared slot (4 - 2 reserved) and queue for more.
    let saturated = wait_until(Duration::from_secs(5), || async {
        proxy.proxy.pools.server_links("main") >= 2
    })
    .await;
    assert!(saturated);
    let premium = connect(&proxy, "user=app.rvprem dbname=rv_app")
        .await
        .expect("premium");
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(scalar(&premium, "SELECT 'served'").await, "served");
        slowest = slowest.max(started.elapsed());
        assert!(proxy.proxy.pools.server_links("main") <= 4);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.expect("flood client");
    }
    assert!(
        slowest < Duration::from_millis(100),
        "premium waited {slowest:?} during the flood"
    );
}
