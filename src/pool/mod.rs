//! Server-connection pools: one per tenant, a quota per tenant, a connection
//! budget per server with least-recently-used eviction of idle links, waiters
//! with a deadline, and a reaper for idle/old links. Pools never decode SQL.

mod budget;
mod lease;
mod manager;
mod tenant_pool;

pub use budget::ServerBudget;
pub use lease::Lease;
pub use manager::{PoolError, PoolManager, PoolSettings};
pub use tenant_pool::{PoolStats, TenantPool};
