//! One server connection: connect, log in, remember what the server reported,
//! run pgtenant's own housekeeping statements, cancel. Never decodes client SQL.

mod conn;
mod settings;

pub use conn::{send_cancel, BackendError, ExecError, LinkState, ServerConn, ServerParams};
pub use settings::{Overrides, Settings};
