//! PAUSE [tenant]: new transactions of the tenant (or of every tenant) wait;
//! running ones finish. Answers once none of its server connections is lent
//! (or after shutdown_timeout, with a notice of how many still are).

use super::super::command::{Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Pause;

impl Command for Pause {
    fn name(&self) -> &'static str {
        "PAUSE"
    }
    fn usage(&self) -> &'static str {
        "PAUSE [tenant]"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move {
            let pools = match &arg {
                Some(key) => {
                    let t = super::tenant(&proxy, key)?;
                    proxy.pools.pause(Some(&t.key));
                    proxy
                        .pools
                        .pools()
                        .into_iter()
                        .filter(|p| p.key == t.key)
                        .collect()
                }
                None => {
                    proxy.pools.pause(None);
                    proxy.pools.pools()
                }
            };
            let deadline = Instant::now() + proxy.config.proxy.shutdown_timeout;
            let busy = || pools.iter().map(|p| p.stats().active).sum::<usize>();
            while busy() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut o = Output::done("PAUSE");
            let left = busy();
            if left > 0 {
                o.notice = Some((
                    format!("paused; {left} server connection(s) still lent (pinned or session-mode clients)"),
                    String::new(),
                ));
            }
            Ok(o)
        })
    }
}
