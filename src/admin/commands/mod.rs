//! Every console command, one file each.

mod kill;
mod kill_client;
mod migrate;
mod pause;
mod reconnect;
mod reload;
mod resume;
mod show_clients;
mod show_config;
mod show_databases;
mod show_help;
mod show_lists;
mod show_migrations;
mod show_pools;
mod show_stats;
mod show_tenants;
mod show_tiers;
mod show_version;
mod shutdown;
mod status;
mod wait_close;

use super::command::Command;

pub static ALL: &[&dyn Command] = &[
    &show_help::ShowHelp,
    &show_pools::ShowPools,
    &show_clients::ShowSockets(show_clients::Side::Clients),
    &show_clients::ShowSockets(show_clients::Side::Servers),
    &show_stats::ShowStats(show_stats::Kind::Stats),
    &show_stats::ShowStats(show_stats::Kind::Totals),
    &show_stats::ShowStats(show_stats::Kind::Averages),
    &show_databases::ShowDatabases,
    &show_lists::ShowLists,
    &show_config::ShowConfig,
    &show_version::ShowVersion,
    &show_tenants::ShowTenants,
    &show_migrations::ShowMigrations,
    &show_tiers::ShowTiers,
    &pause::Pause,
    &resume::Resume,
    &kill::Kill,
    &status::SetStatus(status::Change::Suspend),
    &status::SetStatus(status::Change::Activate),
    &kill_client::KillClient,
    &reconnect::Reconnect,
    &wait_close::WaitClose,
    &migrate::Migrate,
    &migrate::MigrateDown,
    &reload::Reload,
    &shutdown::Shutdown,
];

/// The command named `name` (upper case).
pub fn find(name: &str) -> Option<&'static dyn Command> {
    ALL.iter().copied().find(|c| c.name() == name)
}

/// The tenant a command names, if known.
pub(super) fn tenant(
    proxy: &crate::app::Proxy,
    key: &str,
) -> Result<std::sync::Arc<crate::tenant::Tenant>, super::AdminError> {
    proxy.tenants.get(key).ok_or_else(|| {
        super::AdminError::new(
            crate::protocol::sqlstate::INVALID_CATALOG_NAME,
            format!("no such tenant: {key}"),
        )
    })
}
