//! `sargs-hq`: HQ's side of sargs.
//!
//! - [`export`]: recordings released to an entitled recipient, each checked
//!   against its chain, its receipts and its protections before a byte is
//!   decrypted (`docs/export.md`).
//! - [`broker`]: the MQTT client `sargsctl` publishes commands and watches
//!   the fleet with.
//!
//! The `sargsctl` binary is a thin command line over these and over
//! [`sargs_core`]. Nothing here records video: the crate builds without
//! GStreamer (`docs/design.md`, "Layers and packages").

pub mod broker;
pub mod export;
pub mod fetch;
pub mod service;
pub mod verbs;
