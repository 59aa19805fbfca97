//! Configuration: serde types in the shape of SPEC §11, loading with secrets from
//! the environment, and validation with messages that name the offending key.
//! Owns no sockets and starts nothing.

mod duration;
mod load;
mod types;
mod validate;

pub use load::{load_file, parse_str, secret, secret_env_names, ConfigError};
pub use types::*;
pub use validate::{looks_like_uuid, valid_tenant_key, warnings};
