//! What the metrics listener answers for a running proxy: `/metrics` (the
//! registry rendered over the pools, tenants and migration status),
//! `/healthz` (alive) and `/readyz` (catalog loaded, every server reachable).

use crate::app::Proxy;
use crate::metrics::{Reply, Routes, View};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for each server's TCP handshake.
const READY_CONNECT: Duration = Duration::from_secs(2);

pub fn routes(proxy: Arc<Proxy>) -> Routes {
    Arc::new(move |path: String| {
        let proxy = proxy.clone();
        Box::pin(async move {
            match path.as_str() {
                "/metrics" => Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: scrape(&proxy),
                },
                "/healthz" => Reply::text(200, "ok\n"),
                "/readyz" => match not_ready(&proxy).await {
                    None => match degraded(&proxy) {
                        None => Reply::text(200, "ready\n"),
                        // Still serving: a load balancer keeps it in.
                        Some(why) => Reply::text(200, format!("degraded: {why}\n")),
                    },
                    Some(why) => Reply::text(503, format!("not ready: {why}\n")),
                },
                _ => Reply::text(404, "try /metrics, /healthz or /readyz\n"),
            }
        })
    })
}

/// The metrics text of `proxy` now.
pub fn scrape(proxy: &Proxy) -> String {
    let tenants = proxy.tenants.snapshot();
    proxy.metrics.render(&View {
        pools: proxy.pools.pools(),
        counters: proxy.pools.counters(),
        tenants: &tenants,
        migrations: proxy.sidecar.status.all(),
        catalog_up: proxy.config.catalog.as_ref().map(|_| {
            proxy.catalog_loaded.load(Ordering::Acquire)
                && proxy.catalog_down_since_ms.load(Ordering::Relaxed) == 0
        }),
        parked: proxy.parked_clients(),
    })
}

/// What works less well than it should while the proxy still serves: the
/// catalog unreachable (tenants served from the last snapshot; new tenants
/// and changes wait until it is back).
fn degraded(proxy: &Proxy) -> Option<String> {
    let since = proxy.catalog_down_since_ms.load(Ordering::Relaxed);
    if since == 0 {
        return None;
    }
    let now = crate::pool::roster::now_us() / 1000;
    Some(format!(
        "the tenant catalog has been unreachable for {}s; serving the last snapshot of {} tenant(s), changes wait until it is back",
        now.saturating_sub(since) / 1000,
        proxy.tenants.snapshot().len()
    ))
}

/// Why the proxy can't serve yet, if it can't.
async fn not_ready(proxy: &Proxy) -> Option<String> {
    if proxy.config.catalog.is_some() && !proxy.catalog_loaded.load(Ordering::Acquire) {
        return Some("the tenant catalog has not been loaded yet".into());
    }
    for (name, s) in &proxy.config.servers {
        let reach = tokio::time::timeout(READY_CONNECT, async {
            if let Some(path) = crate::tls::unix_socket_path(&s.host, s.port) {
                tokio::net::UnixStream::connect(path).await.map(drop)
            } else {
                tokio::net::TcpStream::connect((s.host.as_str(), s.port))
                    .await
                    .map(drop)
            }
        })
        .await;
        match reach {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(format!("server {name} ({}:{}): {e}", s.host, s.port)),
            Err(_) => {
                return Some(format!(
                    "server {name} ({}:{}): no answer within {READY_CONNECT:?}",
                    s.host, s.port
                ))
            }
        }
    }
    None
}
