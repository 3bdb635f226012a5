//! HQ recipients: the X25519 public keys segments are sealed to.
//!
//! A recipient is written as in every age tool: Bech32 with the human-readable
//! part `age` and a 32-byte X25519 public key as data (`age1…`). Parsing is the
//! only thing done with it here; the matching identity (`AGE-SECRET-KEY-1…`)
//! never reaches the agent.

use std::fmt;
use std::str::FromStr;

/// An age X25519 recipient (`age1…`): HQ's public key, or an escrow key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    public_key: [u8; 32],
    text: String,
}

/// Why a string is not an age X25519 recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("not Bech32: {0}")]
    Bech32(String),
    #[error(
        "human-readable part is `{0}`, expected `age` (an X25519 recipient starts with `age1`)"
    )]
    WrongPrefix(String),
    #[error("key is {0} bytes, expected 32")]
    WrongLength(usize),
    #[error("recipients are written in lower case")]
    MixedCase,
}

impl Recipient {
    /// The raw X25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Builds a recipient from a raw X25519 public key.
    pub fn from_public_key(public_key: [u8; 32]) -> Self {
        let hrp = bech32::Hrp::parse_unchecked("age");
        // Encoding 32 bytes under a 3-letter prefix cannot exceed Bech32's length limit.
        let text = bech32::encode::<bech32::Bech32>(hrp, &public_key)
            .unwrap_or_else(|_| unreachable!("32-byte key always encodes"));
        Recipient { public_key, text }
    }
}

impl FromStr for Recipient {
    type Err = RecipientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(RecipientError::MixedCase);
        }
        let (hrp, data) = bech32::decode(s).map_err(|e| RecipientError::Bech32(e.to_string()))?;
        if hrp.as_str() != "age" {
            return Err(RecipientError::WrongPrefix(hrp.to_string()));
        }
        let public_key: [u8; 32] = data
            .as_slice()
            .try_into()
            .map_err(|_| RecipientError::WrongLength(data.len()))?;
        Ok(Recipient {
            public_key,
            text: s.to_owned(),
        })
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_age_generates() {
        let id = age::x25519::Identity::generate();
        let text = id.to_public().to_string();
        let r: Recipient = text.parse().expect("valid recipient");
        assert_eq!(r.to_string(), text);
        assert_eq!(
            Recipient::from_public_key(*r.public_key()).to_string(),
            text
        );
    }

    #[test]
    fn rejects_identities_and_garbage() {
        let id = age::x25519::Identity::generate();
        let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
        assert_eq!(secret.parse::<Recipient>(), Err(RecipientError::MixedCase));
        assert!(matches!(
            secret.to_lowercase().parse::<Recipient>(),
            Err(RecipientError::WrongPrefix(_))
        ));
        assert!(matches!(
            "age1qqqq".parse::<Recipient>(),
            Err(RecipientError::Bech32(_))
        ));
    }
}
