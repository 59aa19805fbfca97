//! SHUTDOWN: as SIGTERM: stop accepting, let in-flight transactions finish
//! (up to shutdown_timeout), tell idle clients 57P01, exit.

use super::super::command::{Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;

pub struct Shutdown;

impl Command for Shutdown {
    fn name(&self) -> &'static str {
        "SHUTDOWN"
    }
    fn usage(&self) -> &'static str {
        "SHUTDOWN"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            tracing::info!("SHUTDOWN from the admin console");
            proxy.begin_shutdown();
            Ok(Output::done("SHUTDOWN"))
        })
    }
}
