//! MIGRATE [tenant]: runs the migration sidecar now (as `pgtenant migrate`)
//! and answers with its summary: target, from, to, status, error.
//! MIGRATE DOWN N [tenant]: reverts down to version N (`migrate down`).

use super::super::command::{v, AdminError, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::Arc;

pub struct Migrate;

const COLUMNS: [(&str, super::super::command::Type); 5] = [
    ("target", Text),
    ("from", Text),
    ("to", Text),
    ("status", Text),
    ("error", Text),
];

impl Command for Migrate {
    fn name(&self) -> &'static str {
        "MIGRATE"
    }
    fn usage(&self) -> &'static str {
        "MIGRATE [tenant]"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn columns(&self) -> &'static [(&'static str, super::super::command::Type)] {
        &COLUMNS
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move { summary(proxy, arg, crate::migrate::Direction::Up).await })
    }
}

pub struct MigrateDown;

impl Command for MigrateDown {
    fn name(&self) -> &'static str {
        "MIGRATE DOWN"
    }
    fn usage(&self) -> &'static str {
        "MIGRATE DOWN version [tenant]"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn columns(&self) -> &'static [(&'static str, super::super::command::Type)] {
        &COLUMNS
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move {
            let arg = arg.unwrap_or_default();
            let mut words = arg.split_whitespace();
            let to = words
                .next()
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| {
                    AdminError::new(
                        crate::protocol::sqlstate::INVALID_PARAMETER_VALUE,
                        "MIGRATE DOWN needs the version to end at: MIGRATE DOWN version [tenant]",
                    )
                })?;
            let tenant = words.next().map(str::to_owned);
            summary(proxy, tenant, crate::migrate::Direction::Down { to }).await
        })
    }
}

/// Runs the sidecar in `direction` and answers with its summary.
async fn summary(
    proxy: Arc<Proxy>,
    tenant: Option<String>,
    direction: crate::migrate::Direction,
) -> Result<Output, AdminError> {
    let report = crate::sidecar::migrate_in(&proxy, tenant, direction)
        .await
        .map_err(|e| {
            AdminError::new(
                crate::protocol::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                e.to_string(),
            )
        })?;
    let mut o = Output::table(&COLUMNS);
    for t in &report.targets {
        o.row(t.cells().map(v).to_vec());
    }
    o.tag = "MIGRATE".into();
    Ok(o)
}
