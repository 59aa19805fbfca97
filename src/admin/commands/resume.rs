//! RESUME [tenant]: lets the waiting transactions of a paused tenant (or of
//! every tenant) go on.

use super::super::command::{Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;

pub struct Resume;

impl Command for Resume {
    fn name(&self) -> &'static str {
        "RESUME"
    }
    fn usage(&self) -> &'static str {
        "RESUME [tenant]"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        Box::pin(async move {
            match &arg {
                Some(key) => {
                    let t = super::tenant(&proxy, key)?;
                    proxy.pools.resume(Some(&t.key));
                }
                None => proxy.pools.resume(None),
            }
            Ok(Output::done("RESUME"))
        })
    }
}
