//! Verifying a signed command before anything acts on it.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};

use super::{parse_payload, to_payload, Command, Target};
use crate::seal::sign::{DeviceKey, Envelope, EnvelopeError};

/// How far in the future `issued_at` may be (clock skew between HQ and agent).
pub const MAX_SKEW_MINUTES: i64 = 5;
/// The longest validity window a command may ask for.
pub const MAX_VALIDITY_DAYS: i64 = 31;

/// The HQ keys an agent trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<[u8; 32]>,
}

impl Trust {
    pub fn new(keys: Vec<[u8; 32]>) -> Trust {
        Trust { keys }
    }

    /// From Base64 public keys, naming the first that does not decode.
    pub fn from_b64(keys: &[String]) -> Result<Trust, String> {
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let key = base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("key [{i}] {k:?} is not a Base64 Ed25519 public key"))?;
            out.push(key);
        }
        Ok(Trust { keys: out })
    }

    /// Whether `key` (raw Ed25519 public key bytes) is one of these.
    pub fn trusts(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k.as_slice() == key)
    }
}

/// A command that passed every check, with the exact payload that was signed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub command: Command,
    pub payload: String,
}

/// Why a command was refused. `Display` is the reason HQ reads; [`Rejection::code`]
/// the stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not a signed command envelope: a bare command is refused; sign it with `sargsctl`")]
    Unsigned,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("unsupported envelope or command version: {0}")]
    UnsupportedVersion(u32),
    #[error("signature does not verify over the payload")]
    BadSignature,
    #[error("signed by {0}, which is not among this agent's [hq] command_keys")]
    UntrustedKey(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("addressed to agent {target:?}, not to this agent ({agent:?})")]
    WrongTarget { target: String, agent: String },
    #[error("issued at {issued_at}, more than {MAX_SKEW_MINUTES} minutes in the future of this agent's clock ({now})")]
    NotYetValid {
        issued_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("expired at {expires_at} (agent clock {now})")]
    Expired {
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("command {id} was already applied; nothing changed")]
    Replayed { id: String },
    #[error("refused: {0}")]
    Refused(String),
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::Malformed(_) => "malformed",
            Rejection::UnsupportedVersion(_) => "unsupported-version",
            Rejection::BadSignature => "bad-signature",
            Rejection::UntrustedKey(_) => "untrusted-key",
            Rejection::Invalid(_) => "invalid",
            Rejection::WrongTarget { .. } => "wrong-target",
            Rejection::NotYetValid { .. } => "not-yet-valid",
            Rejection::Expired { .. } => "expired",
            Rejection::Replayed { .. } => "replayed",
            Rejection::Refused(_) => "refused",
        }
    }
}

/// Checks, in order: envelope, signature, trusted signer, schema, target,
/// issue time, expiry and validity window.
pub fn verify(
    bytes: &[u8],
    trust: &Trust,
    agent_id: &str,
    now: DateTime<Utc>,
) -> Result<Verified, Rejection> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
    if value.get("payload").is_none() || value.get("sig").is_none() {
        return Err(Rejection::Unsigned);
    }
    let env = Envelope::open(bytes, None).map_err(|e| match e {
        EnvelopeError::BadSignature => Rejection::BadSignature,
        EnvelopeError::Unsupported(v, _) => Rejection::UnsupportedVersion(v),
        other => Rejection::Malformed(other.to_string()),
    })?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&env.key)
        .map_err(|e| Rejection::Malformed(format!("key: {e}")))?;
    if !trust.trusts(&key) {
        return Err(Rejection::UntrustedKey(env.key));
    }
    let command = parse_payload(&env.payload)?;
    if let Target::Agent(target) = &command.target {
        if target != agent_id {
            return Err(Rejection::WrongTarget {
                target: target.clone(),
                agent: agent_id.to_owned(),
            });
        }
    }
    if command.issued_at > now + Duration::minutes(MAX_SKEW_MINUTES) {
        return Err(Rejection::NotYetValid {
            issued_at: command.issued_at,
            now,
        });
    }
    if now >= command.expires_at {
        return Err(Rejection::Expired {
            expires_at: command.expires_at,
            now,
        });
    }
    if command.expires_at <= command.issued_at
        || command.expires_at - command.issued_at > Duration::days(MAX_VALIDITY_DAYS)
    {
        return Err(Rejection::Invalid(format!(
            "expires_at: the validity window must be positive and at most {MAX_VALIDITY_DAYS} days"
        )));
    }
    Ok(Verified {
        command,
        payload: env.payload,
    })
}

/// Signs `command` with HQ's key: the envelope bytes, ready to send or write.
pub fn sign(key: &DeviceKey, command: &Command) -> Vec<u8> {
    key.sign_envelope(&to_payload(command))
}
