//! SHOW LISTS: PgBouncer's 14 rows of list sizes (pools are tenant pools;
//! peers and DNS lists are always empty here).

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::Arc;

pub struct ShowLists;

impl Command for ShowLists {
    fn name(&self) -> &'static str {
        "SHOW LISTS"
    }
    fn usage(&self) -> &'static str {
        "SHOW LISTS"
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[("list", Text), ("items", Int4)]);
            let pools = proxy.pools.pools();
            let used_servers: usize = proxy
                .config
                .servers
                .keys()
                .map(|s| proxy.pools.server_links(s))
                .sum();
            let free_servers: usize = pools.iter().map(|p| p.stats().idle).sum();
            let rows: [(&str, usize); 14] = [
                ("databases", proxy.tenants.snapshot().len()),
                ("users", proxy.config.auth.users.len()),
                ("peers", 0),
                ("pools", pools.len()),
                ("peer_pools", 0),
                ("free_clients", 0),
                ("used_clients", proxy.client_count()),
                ("login_clients", 0),
                ("free_servers", free_servers),
                ("used_servers", used_servers.saturating_sub(free_servers)),
                ("dns_names", 0),
                ("dns_zones", 0),
                ("dns_queries", 0),
                ("dns_pending", 0),
            ];
            for (list, n) in rows {
                o.row(vec![v(list), v(n)]);
            }
            Ok(o)
        })
    }
}
