//! WAIT_CLOSE [tenant]: answers once every server connection RECONNECT
//! marked (of the tenant, or all) is closed, or after shutdown_timeout with
//! a notice of how many are left.

use super::super::command::{Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct WaitClose;

impl Command for WaitClose {
    fn name(&self) -> &'static str {
        "WAIT_CLOSE"
    }
    fn usage(&self) -> &'static str {
        "WAIT_CLOSE [tenant]"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move {
            if let Some(key) = &arg {
                super::tenant(&proxy, key)?;
            }
            let groups = proxy.pools.groups_of(arg.as_deref());
            let left = || {
                proxy
                    .pools
                    .roster
                    .servers()
                    .iter()
                    .filter(|s| {
                        groups.iter().any(|g| {
                            g.name == s.tenant_group && s.connected_us < g.reconnected_us()
                        })
                    })
                    .count()
            };
            let deadline = Instant::now() + proxy.config.proxy.shutdown_timeout;
            while left() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut o = Output::done("WAIT_CLOSE");
            let n = left();
            if n > 0 {
                o.notice = Some((
                    format!("{n} server connection(s) still open after shutdown_timeout"),
                    String::new(),
                ));
            }
            Ok(o)
        })
    }
}
