//! The migration sidecar (SPEC §8): numbered SQL files applied to every tenant
//! target (dedicated schemas, dedicated databases, each shared schema once),
//! each target keeping its own ledger. Planning costs one connection per
//! database; a per-target advisory lock makes concurrent runners (replicas)
//! apply each version once; `lock_timeout` with retries keeps migrations from
//! stalling tenant traffic; one target's failure never stops the others.

mod apply;
mod console;
mod each;
mod files;
pub mod ledger;
mod report;
mod runner;
mod target;

pub use apply::{apply_target, ApplySettings, Direction, Failure, Outcome};
pub use console::{migrate_command, MigrateCommand};
pub use each::{each_for_new_tenant, run_each, EachOptions};
pub use files::{migration_files, MigrationFile};
pub use report::{Report, State, StatusBoard, TargetReport, TenantMigration};
pub use runner::{database_gate, run, run_targets, MigrateError, Progress, RunOptions};
pub use target::{targets, Target};
