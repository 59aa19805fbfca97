//! Authentication: clients to pgtenant (trust, md5, SCRAM-SHA-256) and pgtenant
//! to servers (trust, cleartext, md5, SCRAM-SHA-256).

pub mod backend;
mod frontend;
mod query;
mod rules;
mod scram;
mod users;

pub use frontend::{authenticate_client, AuthError};
pub use query::{AuthQuery, LookupServer};
pub use rules::{choose, parse_address, AuthRule, LoginFacts};
pub use scram::{seed_mock_secret, ScramVerifier};
pub use users::{Credential, TenantUsers, UserDb};
