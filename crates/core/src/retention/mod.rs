//! What retention proves, shared by the agent that enforces it and HQ that
//! audits it.
//!
//! - [`rules`]: what protects a record from deletion, decided from plain
//!   facts (pure functions, no I/O).
//! - [`receipt`]: signed, chained deletion receipts and their verification.
//! - [`index`]: the SQLite index of a data directory, written by the agent's
//!   retention engine and read by HQ's export; [`offloads`], its record of
//!   what is verified in the evidence store.

pub mod index;
pub mod offloads;
pub mod receipt;
pub mod rules;
