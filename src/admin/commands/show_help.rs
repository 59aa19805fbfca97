//! SHOW HELP: as PgBouncer, a notice `Console usage` with the commands in
//! its detail, and no rows.

use super::super::command::{Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;

pub struct ShowHelp;

impl Command for ShowHelp {
    fn name(&self) -> &'static str {
        "SHOW HELP"
    }
    fn usage(&self) -> &'static str {
        "SHOW HELP"
    }
    fn run(&self, _: Arc<Proxy>, _: Option<String>) -> Run {
        let detail: String = super::ALL
            .iter()
            .map(|c| format!("\n\t{}", c.usage()))
            .collect();
        Box::pin(async move {
            let mut o = Output::done("SHOW");
            o.notice = Some(("Console usage".into(), detail));
            Ok(o)
        })
    }
}
