//! SHOW VERSION: one row, `pgtenant <version>`.

use super::super::command::{v, Command, Output, Run, Type::*};
use crate::app::Proxy;
use std::sync::Arc;

pub struct ShowVersion;

impl Command for ShowVersion {
    fn name(&self) -> &'static str {
        "SHOW VERSION"
    }
    fn usage(&self) -> &'static str {
        "SHOW VERSION"
    }
    fn run(&self, _: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            let mut o = Output::table(&[("version", Text)]);
            o.row(vec![v(concat!("pgtenant ", env!("CARGO_PKG_VERSION")))]);
            Ok(o)
        })
    }
}
