//! SHOW DATABASES: one row per tenant, PgBouncer 1.23's 14 columns (`name`
//! is the tenant key, `database` its server database), then pgtenant's.

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use crate::config::{PoolMode, TenantMode};
use std::sync::Arc;

pub struct ShowDatabases;

pub fn mode_name(m: PoolMode) -> &'static str {
    match m {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

pub fn tenant_mode(m: TenantMode) -> &'static str {
    match m {
        TenantMode::Schema => "schema",
        TenantMode::Database => "database",
        TenantMode::Shared => "shared",
    }
}

impl Command for ShowDatabases {
    fn name(&self) -> &'static str {
        "SHOW DATABASES"
    }
    fn usage(&self) -> &'static str {
        "SHOW DATABASES"
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[
                ("name", Text),
                ("host", Text),
                ("port", Int4),
                ("database", Text),
                ("force_user", Text),
                ("pool_size", Int4),
                ("min_pool_size", Int4),
                ("reserve_pool", Int4),
                ("server_lifetime", Int4),
                ("pool_mode", Text),
                ("max_connections", Int4),
                ("current_connections", Int4),
                ("paused", Int4),
                ("disabled", Int4),
                ("mode", Text),
                ("tier", Text),
                ("status", Text),
                ("schema", Text),
            ]);
            let snapshot = proxy.tenants.snapshot();
            let mut tenants: Vec<_> = snapshot.values().collect();
            tenants.sort_by(|a, b| a.key.cmp(&b.key));
            for t in tenants {
                let server = proxy.config.servers.get(&*t.target.server);
                let reserve = proxy.config.tiers.get(&t.tier).map_or(0, |x| x.reserve);
                o.row(vec![
                    v(&t.key),
                    v(&t.target.host),
                    v(t.target.port),
                    v(&t.target.database),
                    v(&t.target.user),
                    v(t.pool_size),
                    v(0),
                    v(reserve),
                    v(proxy.config.proxy.server_lifetime.as_secs()),
                    v(mode_name(t.pool_mode)),
                    v(server.map_or(0, |s| s.max_connections)),
                    v(proxy.pools.server_links(&t.target.server)),
                    v(u8::from(proxy.pools.is_tenant_paused(&t.key))),
                    v(u8::from(!crate::tenant::servable(t.status))),
                    v(tenant_mode(t.mode)),
                    v(&t.tier),
                    v(crate::catalog::status_text(t.status)),
                    t.schema.clone(),
                ]);
            }
            Ok(o)
        })
    }
}
