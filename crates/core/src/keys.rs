//! HQ's age identity, the key that opens every sealed segment (`sargsctl
//! keygen`, and the throwaway identity of `sargs demo`, which plays HQ for a
//! first run).
//!
//! This is the one place sargs makes an age identity, with the `age` crate's
//! X25519 implementation: `ring`, which seals every segment, makes only
//! ephemeral X25519 keys and cannot export a secret. The agent links this
//! module (feature `keygen`) for `sargs demo` alone; sealing never touches it.

pub use age::secrecy::{ExposeSecret, SecretString};

/// A new identity: its public recipient (`age1…`) and the identity file's
/// text as `age -i` reads it. The text is wiped from memory when dropped.
pub fn new_identity() -> (String, SecretString) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        crate::clock::now().to_rfc3339(),
        id.to_string().expose_secret()
    );
    (recipient, SecretString::from(text))
}
