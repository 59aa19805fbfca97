//! SUSPEND tenant / ACTIVATE tenant: the tenant's status in the catalog, as
//! `pgtenant tenant suspend|activate` does; every replica follows within a
//! second (suspended tenants' new transactions are refused).

use super::super::command::{AdminError, Command, Output, Run};
use crate::app::Proxy;
use crate::config::TenantStatus;
use std::sync::Arc;

#[derive(Clone, Copy)]
pub enum Change {
    Suspend,
    Activate,
}

pub struct SetStatus(pub Change);

impl Command for SetStatus {
    fn name(&self) -> &'static str {
        match self.0 {
            Change::Suspend => "SUSPEND",
            Change::Activate => "ACTIVATE",
        }
    }
    fn usage(&self) -> &'static str {
        match self.0 {
            Change::Suspend => "SUSPEND tenant",
            Change::Activate => "ACTIVATE tenant",
        }
    }
    fn reads_only(&self) -> bool {
        false
    }
    fn run(&self, proxy: Arc<Proxy>, arg: Option<String>) -> Run {
        let change = self.0;
        let tag = self.name();
        Box::pin(async move {
            let key = arg.ok_or_else(|| {
                AdminError::new(
                    crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                    format!("{tag} needs a tenant"),
                )
            })?;
            let status = match change {
                Change::Suspend => TenantStatus::Suspended,
                Change::Activate => TenantStatus::Active,
            };
            crate::provision::set_status(&proxy.config, &key, status)
                .await
                .map_err(|e| {
                    AdminError::new(
                        crate::protocol::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        e.to_string(),
                    )
                })?;
            Ok(Output::done(tag))
        })
    }
}
