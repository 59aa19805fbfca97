//! The client side: accepting connections, the login handshake, and the
//! per-client session that borrows server connections and relays frames.

mod cancel;
mod handshake;
mod listener;
mod relay;
mod session;

pub use cancel::{CancelRegistry, CancelTarget};
pub use listener::accept_loop;
pub use relay::{Direction, RelayEnd, TxnTracker};
