//! RELOAD: reads the config file again (as SIGHUP does). An invalid file
//! changes nothing and the error says why; otherwise tiers and static
//! tenants apply at once, and a notice names sections that need a restart.

use super::super::command::{AdminError, Command, Output, Run};
use crate::app::Proxy;
use std::sync::Arc;

pub struct Reload;

impl Command for Reload {
    fn name(&self) -> &'static str {
        "RELOAD"
    }
    fn usage(&self) -> &'static str {
        "RELOAD"
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, _: Option<String>) -> Run {
        Box::pin(async move {
            match crate::app::reload(&proxy) {
                Ok(notes) => {
                    let mut o = Output::done("RELOAD");
                    if !notes.is_empty() {
                        o.notice = Some(("config reloaded".into(), notes.join("\n")));
                    }
                    Ok(o)
                }
                Err(why) => Err(AdminError::new(
                    "F0000",
                    format!("config reload failed; the old config stays: {why}"),
                )),
            }
        })
    }
}
