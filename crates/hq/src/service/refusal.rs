//! Why a message is not kept: the refusal every check returns, shared by
//! the message checks ([`ingest`](super::ingest)) and the command checks
//! ([`commands`](super::commands)), which import it and not each other.

/// Why a message is quarantined.
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
}

pub fn refuse(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// A check's result: a database error, or kept (`Ok`) or refused.
pub type Step<T> = Result<Result<T, Refusal>, sqlx::Error>;

/// A Base64 Ed25519 public key.
pub fn decode_key(key: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}
