//! The client side: accepting connections, the login handshake, and the
//! per-client session that borrows server connections and relays frames.

mod cancel;
mod checkout;
mod client;
mod departure;
mod handshake;
mod learned_settings;
mod listener;
mod login_gate;
mod owner_route;
mod parking;
mod pin_check;
mod policy;
mod relay;
mod rewrite;
mod secure;
mod session;
mod session_end;
mod session_state;
mod silence;
mod tracker;

pub use cancel::{CancelRegistry, CancelTarget, MAX_PEER_ID};
pub use client::{Client, ClientState};
pub use listener::{accept_loop, ClientListener};
pub use login_gate::{LoginGate, LoginPass};
pub use owner_route::{Grant, OwnerRoutes};
pub use parking::ParkingLot;
pub use relay::{Downstream, RelayEnd, Upstream};
pub(crate) use session::{parking_lot, ParkedSession};
pub use tracker::TxnTracker;
