//! pgtenant: a PostgreSQL wire-protocol proxy for multi-tenant SaaS. It finds a
//! connection's tenant, routes it to the tenant's schema or database, and pools
//! server connections per tenant. See README.md for the module map.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod frontend;
pub mod log_throttle;
pub mod metrics;
pub mod migrate;
pub mod net;
pub mod notify;
pub mod observe;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub mod provision;
pub mod sidecar;
pub mod sql;
pub mod tenant;
pub mod tls;
