//! SHOW POOLS: one row per tenant pool, PgBouncer's 16 columns (a pool's
//! `database` is the tenant key, `user` the server login), then pgtenant's.

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::Arc;

pub struct ShowPools;

impl Command for ShowPools {
    fn name(&self) -> &'static str {
        "SHOW POOLS"
    }
    fn usage(&self) -> &'static str {
        "SHOW POOLS"
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[
                ("database", Text),
                ("user", Text),
                ("cl_active", Int4),
                ("cl_waiting", Int4),
                ("cl_active_cancel_req", Int4),
                ("cl_waiting_cancel_req", Int4),
                ("sv_active", Int4),
                ("sv_active_cancel", Int4),
                ("sv_being_canceled", Int4),
                ("sv_idle", Int4),
                ("sv_used", Int4),
                ("sv_tested", Int4),
                ("sv_login", Int4),
                ("maxwait", Int4),
                ("maxwait_us", Int4),
                ("pool_mode", Text),
                ("tier", Text),
                ("quota", Int4),
                ("paused", Int4),
            ]);
            let mut pools = proxy.pools.pools();
            pools.sort_by(|a, b| a.key.cmp(&b.key));
            let now = crate::pool::roster::now_us();
            let clients = proxy.pools.roster.clients();
            for p in pools {
                // Its clients waiting (for its quota, or held by PAUSE), and
                // how long the oldest has waited.
                let waits: Vec<u64> = clients
                    .iter()
                    .filter(|c| *c.tenant == *p.key && c.phase().is_waiting())
                    .map(|c| now.saturating_sub(c.request_us()))
                    .collect();
                let maxwait = waits.iter().copied().max().unwrap_or(0);
                let s = p.stats();
                let mode = proxy
                    .tenants
                    .get(&p.key)
                    .map_or(proxy.config.proxy.pool_mode, |t| t.pool_mode);
                o.row(vec![
                    v(&p.key),
                    v(&p.target().user),
                    v(s.clients.saturating_sub(waits.len())),
                    v(waits.len()),
                    v(0),
                    v(0),
                    v(s.active),
                    v(0),
                    v(0),
                    v(s.idle),
                    v(0),
                    v(0),
                    v(0),
                    v(maxwait / 1_000_000),
                    v(maxwait % 1_000_000),
                    v(super::show_databases::mode_name(mode)),
                    v(&p.tier),
                    v(s.quota),
                    v(u8::from(proxy.pools.is_paused(&p))),
                ]);
            }
            Ok(o)
        })
    }
}
