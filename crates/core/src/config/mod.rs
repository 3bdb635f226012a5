//! Loading TOML files with errors that name the file, the key and the
//! reason: shared by the agent's config, the policy file and HQ's config.
//!
//! - [`error`]: [`ConfigError`] and the decoding that maps TOML and serde
//!   failures onto it.
//! - [`check`]: small value checks (identifiers, text, paths), each returning
//!   the reason a value is unacceptable.
//! - [`credentials`]: an S3 access key in a file only its owner may read.

pub mod check;
pub mod credentials;
pub mod error;

pub use error::ConfigError;
