//! Server-connection pools: one per tenant, a quota per tenant, a connection
//! budget per server with least-recently-used eviction of idle links, waiters
//! with a deadline, and a reaper for idle/old links. Pools never decode SQL.
//!
//! Hand-written rather than bb8: bb8 has one size per pool and no notion of a
//! budget shared by many pools with LRU eviction across them, which is the core
//! of per-tenant pooling (and of sharing links between tenants later).

mod budget;
mod counters;
mod lease;
mod link_group;
mod manager;
mod quota;
pub mod roster;
pub mod signals;
mod startups;
mod tenant_pool;

pub use budget::ServerBudget;
pub use counters::{ErrorKind, Metering, SessionStats, TenantCounters, Timings, TimingsFactory};
pub use lease::Lease;
pub use link_group::LinkGroup;
pub use manager::{LoginRepair, PoolError, PoolManager, PoolSettings};
pub use quota::{Quota, Slot};
pub use startups::{LoginTemplate, SharedStartups};
pub use tenant_pool::{PoolStats, TenantPool};
