//! KILL_CLIENT id: disconnects one client (its `id` in SHOW CLIENTS), at
//! once between transactions, else when its transaction ends.

use super::super::command::{AdminError, Command, Output, Run};
use crate::app::Proxy;
use crate::protocol::sqlstate;
use std::sync::Arc;

pub struct KillClient;

impl Command for KillClient {
    fn name(&self) -> &'static str {
        "KILL_CLIENT"
    }
    fn usage(&self) -> &'static str {
        "KILL_CLIENT id"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move {
            let id: u64 = arg.as_deref().and_then(|a| a.parse().ok()).ok_or_else(|| {
                AdminError::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "KILL_CLIENT needs a client id (SHOW CLIENTS)",
                )
            })?;
            let client = proxy.pools.roster.client(id).ok_or_else(|| {
                AdminError::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("no client with id {id}"),
                )
            })?;
            client.signals.raise(crate::pool::signals::Signal::KILL);
            Ok(Output::done("KILL_CLIENT"))
        })
    }
}
