//! SHOW TIERS: each tier's limits.

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::Arc;

pub struct ShowTiers;

impl Command for ShowTiers {
    fn name(&self) -> &'static str {
        "SHOW TIERS"
    }
    fn usage(&self) -> &'static str {
        "SHOW TIERS"
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[
                ("name", Text),
                ("pool_size", Int4),
                ("reserve", Int4),
                ("max_client_conn", Int4),
                ("pool_mode", Text),
                ("statement_timeout_ms", Int8),
                ("isolation", Text),
                ("max_pinned", Int4),
                ("tenants", Int4),
            ]);
            let snapshot = proxy.tenants.snapshot();
            for (name, t) in &proxy.config.tiers {
                let members = snapshot.values().filter(|x| &x.tier == name).count();
                o.row(vec![
                    v(name),
                    v(t.pool_size),
                    v(t.reserve),
                    v(t.max_client_conn),
                    t.pool_mode
                        .map(|m| super::show_databases::mode_name(m).to_owned()),
                    t.statement_timeout.map(|d| d.as_millis().to_string()),
                    t.isolation.map(|i| format!("{i:?}").to_lowercase()),
                    t.max_pinned.map(|x| x.to_string()),
                    v(members),
                ]);
            }
            Ok(o)
        })
    }
}
