//! SHOW MIGRATIONS: the sidecar's status board, per tenant.

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::Arc;

pub struct ShowMigrations;

impl Command for ShowMigrations {
    fn name(&self) -> &'static str {
        "SHOW MIGRATIONS"
    }
    fn usage(&self) -> &'static str {
        "SHOW MIGRATIONS"
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[
                ("tenant", Text),
                ("version", Int4),
                ("target_version", Int4),
                ("state", Text),
                ("last_error", Text),
            ]);
            for (key, m) in proxy.sidecar.status.all() {
                o.row(vec![
                    v(key),
                    m.version.map(|x| x.to_string()),
                    m.target_version.map(|x| x.to_string()),
                    v(m.state.as_str()),
                    m.last_error,
                ]);
            }
            Ok(o)
        })
    }
}
