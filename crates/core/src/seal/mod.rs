//! Sealing: everything that makes a segment unreadable to all but HQ and
//! provable to everyone.
//!
//! - [`age`]: the age v1 encryptor written with `ring` (no plaintext byte ever
//!   leaves memory unencrypted; at most one 64 KiB chunk is held).
//! - [`sign`]: the device's Ed25519 key and the signed envelope used for
//!   manifests and gap records (signature over the exact payload bytes).
//! - [`manifest`]: what a manifest states, and the per-camera hash chain.
//! - [`verify`]: checking a camera's chain, signatures and ciphertext hashes
//!   without any decryption key.
//! - `open` (feature `open`, HQ only): the reader, with HQ's identity,
//!   salvaging a segment cut short up to its last whole chunk.

pub mod age;
pub mod manifest;
#[cfg(any(feature = "open", test))]
pub mod open;
pub mod recipient;
pub mod sign;
pub mod verify;

pub use recipient::{Recipient, RecipientError};
