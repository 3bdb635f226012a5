//! `sargs-core`: the formats and proofs that the edge agent (`sargs`) and HQ
//! (`sargsctl`, `sargs-hq`) share.
//!
//! Everything a recording is judged by lives here, once: the age v1 writer,
//! manifests, signatures and chains and their verification, deletion
//! receipts, signed command envelopes and their wire types, scopes, the
//! policy model and the rules that say what protects a record. Whatever one
//! side writes, the other side reads with this same code.
//!
//! The crate needs neither GStreamer nor an async runtime: it is plain
//! `std`, `ring`, `serde` and SQLite, so HQ's tools build on a machine with
//! no media stack. It depends on no other crate of the workspace; the agent
//! and HQ depend on it (`docs/design.md`, "Layers and packages").

pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod fsutil;
#[cfg(any(feature = "keygen", test))]
pub mod keys;
pub mod layout;
pub mod link;
pub mod policy;
pub mod retention;
pub mod seal;

/// The version of sargs, stamped into every manifest and receipt.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
