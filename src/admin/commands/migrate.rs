//! MIGRATE [tenant]: runs the migration sidecar now (as `pgtenant migrate`)
//! and answers with its summary: target, from, to, status, error.

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
        Box::pin(async move {
            let report = crate::sidecar::migrate(&proxy, arg).await.map_err(|e| {
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
        })
    }
}
