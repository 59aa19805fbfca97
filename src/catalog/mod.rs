//! The tenant catalog (SPEC §3): the `pgtenant.tenants` table in the control
//! database (schema, rows, admin connections), per-tenant users and the watcher that keeps
//! every replica's tenant directory in step with it. The I/O side of
//! tenants; `tenant/` itself opens no sockets.

pub mod holds;
mod table;
mod users;
pub mod watcher;

pub use table::*;
pub use users::{load_users, remove_user, set_user, TenantUserRow};
