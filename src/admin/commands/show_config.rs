//! SHOW CONFIG: key, value, default, changeable for the `[proxy]` settings
//! (durations in milliseconds, as PgBouncer's *_timeout keys are seconds
//! with a unit-less value: the unit is in the key's documentation).

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use crate::config::ProxyConfig;
use std::sync::Arc;

pub struct ShowConfig;

fn entries(p: &ProxyConfig) -> Vec<(&'static str, String)> {
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    vec![
        ("listen", p.listen.clone()),
        (
            "pool_mode",
            super::show_databases::mode_name(p.pool_mode).to_owned(),
        ),
        ("username_separator", p.username_separator.clone()),
        ("query_wait_timeout", ms(p.query_wait_timeout)),
        ("server_idle_timeout", ms(p.server_idle_timeout)),
        ("server_lifetime", ms(p.server_lifetime)),
        ("server_connect_timeout", ms(p.server_connect_timeout)),
        ("client_login_timeout", ms(p.client_login_timeout)),
        ("query_timeout", ms(p.query_timeout)),
        ("shutdown_timeout", ms(p.shutdown_timeout)),
        ("max_client_conn", p.max_client_conn.to_string()),
        (
            "max_prepared_statements",
            p.max_prepared_statements.to_string(),
        ),
        ("max_client_settings", p.max_client_settings.to_string()),
        ("max_client_statements", p.max_client_statements.to_string()),
        ("max_client_listens", p.max_client_listens.to_string()),
        ("worker_threads", p.worker_threads.to_string()),
    ]
}

impl Command for ShowConfig {
    fn name(&self) -> &'static str {
        "SHOW CONFIG"
    }
    fn usage(&self) -> &'static str {
        "SHOW CONFIG"
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[
                ("key", Text),
                ("value", Text),
                ("default", Text),
                ("changeable", Text),
            ]);
            let defaults = entries(&ProxyConfig::default());
            for (key, value) in entries(&proxy.config.proxy) {
                let default = defaults
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, d)| d.clone());
                o.row(vec![v(key), v(value), default, v("no")]);
            }
            Ok(o)
        })
    }
}
