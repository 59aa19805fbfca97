//! KILL tenant: disconnects the tenant's clients (57P01) at once when they
//! are between transactions, and at the end of the one they are in.

use super::super::command::{AdminError, Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;

pub struct Kill;

impl Command for Kill {
    fn name(&self) -> &'static str {
        "KILL"
    }
    fn usage(&self) -> &'static str {
        "KILL tenant"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move {
            let key = arg.ok_or_else(|| {
                AdminError::new(
                    crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                    "KILL needs a tenant",
                )
            })?;
            let t = super::tenant(&proxy, &key)?;
            proxy.pools.kill(&t.key);
            Ok(Output::done("KILL"))
        })
    }
}
