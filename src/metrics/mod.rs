//! Prometheus metrics (SPEC §7): one catalog of names and help texts, a
//! recorder per proxy, per-tenant series with bounded cardinality, and the
//! HTTP listener for `/metrics`, `/healthz` and `/readyz`. It reads the pools,
//! the tenant directory and the sidecar's status board; nothing below it
//! calls it (pools get their histograms through a factory).

pub mod catalog;
mod http;
mod registry;

pub use catalog::LoginFailure;
pub use http::{serve_http, Reply, Routes};
pub use registry::{LoginInFlight, Metrics, View, OTHER};
