//! RECONNECT [tenant]: closes the tenant's (or every) server connection as
//! soon as it is idle: idle ones now, lent ones when they come back; new
//! transactions get fresh connections.

use super::super::command::{Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;

pub struct Reconnect;

impl Command for Reconnect {
    fn name(&self) -> &'static str {
        "RECONNECT"
    }
    fn usage(&self) -> &'static str {
        "RECONNECT [tenant]"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move {
            if let Some(key) = &arg {
                super::tenant(&proxy, key)?;
            }
            for g in proxy.pools.groups_of(arg.as_deref()) {
                g.reconnect();
            }
            Ok(Output::done("RECONNECT"))
        })
    }
}
