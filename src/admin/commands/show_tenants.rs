//! SHOW TENANTS: key, mode, tier, status, server, database, schema, pool use,
//! quota, clients, migration version.

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::Arc;

pub struct ShowTenants;

impl Command for ShowTenants {
    fn name(&self) -> &'static str {
        "SHOW TENANTS"
    }
    fn usage(&self) -> &'static str {
        "SHOW TENANTS"
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[
                ("key", Text),
                ("mode", Text),
                ("tier", Text),
                ("status", Text),
                ("server", Text),
                ("database", Text),
                ("schema", Text),
                ("pool_in_use", Int4),
                ("quota", Int4),
                ("clients", Int4),
                ("migration_version", Int4),
            ]);
            let snapshot = proxy.tenants.snapshot();
            let mut tenants: Vec<_> = snapshot.values().collect();
            tenants.sort_by(|a, b| a.key.cmp(&b.key));
            let pools = proxy.pools.pools();
            for t in tenants {
                let stats = pools.iter().find(|p| p.key == t.key).map(|p| p.stats());
                let migrated = proxy.sidecar.status.get(&t.key).and_then(|m| m.version);
                o.row(vec![
                    v(&t.key),
                    v(super::show_databases::tenant_mode(t.mode)),
                    v(&t.tier),
                    v(crate::catalog::status_text(t.status)),
                    v(&t.target.server),
                    v(&t.target.database),
                    t.schema.clone(),
                    v(stats.map_or(0, |s| s.active)),
                    v(t.pool_size),
                    v(stats.map_or(0, |s| s.clients)),
                    migrated.map(|m| m.to_string()),
                ]);
            }
            Ok(o)
        })
    }
}
