//! LISTEN / NOTIFY through pgtenant, per tenant, in every pool mode (SPEC §4):
//! clients listen through one hub connection per (server, database, role);
//! notifications reach only listeners of the tenant that sent them.

pub mod hub;
pub mod owners;

pub use hub::{Hubs, Listener, Note};
pub use owners::{MarkerKey, Owners, Registration, ServerKey, MARKER_CHANNEL};
