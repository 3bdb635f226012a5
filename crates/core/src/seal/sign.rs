//! The device signing key and the signed envelope.
//!
//! Every manifest, gap record, receipt, command and export record travels as
//! an envelope whose signature covers the **exact payload bytes**:
//!
//! ```json
//! {"v":1,"alg":"ed25519","key":"<base64 public key>","payload":"<JSON text>","sig":"<base64>"}
//! ```
//!
//! `payload` is a JSON document carried as a string, so any verifier in any
//! language takes the string's UTF-8 bytes, checks the Ed25519 signature over
//! them, and only then parses them: no canonicalisation is needed.
//!
//! Invariants of the key file: created once with `O_EXCL`, mode 0600, in a
//! 0700 directory, fsynced before use; never overwritten. A key file readable
//! by group or others is refused rather than used.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// Version of the envelope format.
pub const ENVELOPE_VERSION: u32 = 1;

/// Problems with the device key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not an Ed25519 PKCS#8 key ({reason})")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: mode {mode:o} lets others read the signing key; run `chmod 600` on it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("could not generate a key: the system random source failed")]
    Random,
}

/// The device's Ed25519 signing key.
pub struct DeviceKey {
    pair: Ed25519KeyPair,
}

impl DeviceKey {
    /// Loads the existing key at `path` (never creates one).
    pub fn load(path: &Path) -> Result<DeviceKey, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io_err)?;
        let mode = std::fs::metadata(path)
            .map_err(io_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        Self::from_pkcs8(&bytes).map_err(|reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        })
    }

    /// Loads the key at `path`, creating it (and its directory, 0700) on first run.
    pub fn load_or_create(path: &Path) -> Result<DeviceKey, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| KeyError::Random)?;
                if let Some(dir) = path.parent() {
                    crate::fsutil::create_private_dir(dir).map_err(io_err)?;
                }
                let mut f = crate::fsutil::create_new(path, 0o600).map_err(io_err)?;
                io::Write::write_all(&mut f, pkcs8.as_ref()).map_err(io_err)?;
                f.sync_all().map_err(io_err)?;
                if let Some(dir) = path.parent() {
                    crate::fsutil::sync_dir(dir).map_err(io_err)?;
                }
                tracing::info!(path = %path.display(), "generated a new device signing key");
                Self::from_pkcs8(pkcs8.as_ref()).map_err(|reason| KeyError::Malformed {
                    path: path.to_owned(),
                    reason,
                })
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// A fresh key held only in memory (tests, tools).
    pub fn generate() -> Result<DeviceKey, KeyError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Random)
    }

    fn from_pkcs8(bytes: &[u8]) -> Result<DeviceKey, String> {
        Ed25519KeyPair::from_pkcs8(bytes)
            .map(|pair| DeviceKey { pair })
            .map_err(|e| e.to_string())
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// The public key as written in envelopes (standard Base64).
    pub fn public_key_b64(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }

    /// Wraps `payload` (a JSON document) in a signed envelope.
    pub fn sign(&self, payload: &str) -> Envelope {
        let sig = self.pair.sign(payload.as_bytes());
        Envelope {
            v: ENVELOPE_VERSION,
            alg: "ed25519".into(),
            key: self.public_key_b64(),
            payload: payload.to_owned(),
            sig: STANDARD.encode(sig.as_ref()),
        }
    }

    /// [`DeviceKey::sign`], as the bytes to be written ([`Envelope::to_bytes`]).
    pub fn sign_envelope(&self, payload: &str) -> Vec<u8> {
        self.sign(payload).to_bytes()
    }
}

/// A signed document as stored and transmitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub alg: String,
    /// Signer's Ed25519 public key, standard Base64.
    pub key: String,
    /// The signed JSON document, as text.
    pub payload: String,
    /// Ed25519 signature over `payload`'s UTF-8 bytes, standard Base64.
    pub sig: String,
}

/// Why an envelope was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a signed envelope: {0}")]
    Malformed(String),
    #[error("unsupported envelope version {0} or algorithm {1:?}")]
    Unsupported(u32, String),
    #[error("signed by key {found}, expected {expected}")]
    WrongKey { found: String, expected: String },
    #[error("signature does not verify")]
    BadSignature,
}

impl Envelope {
    /// The envelope as its file holds it: compact JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("plain strings"));
        out.push(b'\n');
        out
    }

    /// Parses envelope bytes, checks the signature, and (if given) that the
    /// signer is `expected_key`. Returns the envelope; its `payload` is verified.
    pub fn open(bytes: &[u8], expected_key: Option<&[u8; 32]>) -> Result<Envelope, EnvelopeError> {
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        env.check(expected_key)?;
        Ok(env)
    }

    /// [`Envelope::open`] of an envelope already parsed as JSON (an
    /// envelope inside a message), without checking the signature yet: the
    /// envelope and its signer's key. [`Envelope::verify`] checks it.
    pub fn parse_value(value: &serde_json::Value) -> Result<(Envelope, Vec<u8>), EnvelopeError> {
        let env =
            Envelope::deserialize(value).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        let key = env.signer()?;
        Ok((env, key))
    }

    /// The version, the algorithm, and the signer's key bytes.
    fn signer(&self) -> Result<Vec<u8>, EnvelopeError> {
        if self.v != ENVELOPE_VERSION || self.alg != "ed25519" {
            return Err(EnvelopeError::Unsupported(self.v, self.alg.clone()));
        }
        STANDARD
            .decode(&self.key)
            .map_err(|e| EnvelopeError::Malformed(format!("key: {e}")))
    }

    /// Checks the signature against the key the envelope names.
    pub fn verify(&self, key: &[u8]) -> Result<(), EnvelopeError> {
        let sig = STANDARD
            .decode(&self.sig)
            .map_err(|e| EnvelopeError::Malformed(format!("sig: {e}")))?;
        signature::UnparsedPublicKey::new(&signature::ED25519, key)
            .verify(self.payload.as_bytes(), &sig)
            .map_err(|_| EnvelopeError::BadSignature)
    }

    fn check(&self, expected_key: Option<&[u8; 32]>) -> Result<(), EnvelopeError> {
        let key = self.signer()?;
        if let Some(expected) = expected_key {
            if key.as_slice() != expected.as_slice() {
                return Err(EnvelopeError::WrongKey {
                    found: self.key.clone(),
                    expected: STANDARD.encode(expected),
                });
            }
        }
        self.verify(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_open_round_trip() {
        let key = DeviceKey::generate().expect("key");
        let bytes = key.sign_envelope(r#"{"a":1}"#);
        let env = Envelope::open(&bytes, Some(&key.public_key())).expect("verifies");
        assert_eq!(env.payload, r#"{"a":1}"#);
        // What is written is what was signed, byte for byte.
        assert_eq!(env.to_bytes(), bytes);
        assert_eq!(env.key, key.public_key_b64());
    }

    #[test]
    fn tampering_and_wrong_key_are_detected() {
        let key = DeviceKey::generate().expect("key");
        let other = DeviceKey::generate().expect("key");
        let bytes = key.sign_envelope(r#"{"a":1}"#);
        let tampered = String::from_utf8(bytes.clone())
            .expect("utf8")
            .replace(r#"\"a\":1"#, r#"\"a\":2"#);
        assert_eq!(
            Envelope::open(tampered.as_bytes(), None).map(|_| ()),
            Err(EnvelopeError::BadSignature)
        );
        assert!(matches!(
            Envelope::open(&bytes, Some(&other.public_key())),
            Err(EnvelopeError::WrongKey { .. })
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device/signing.pk8");
        let a = DeviceKey::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = DeviceKey::load_or_create(&path).expect("reload");
        assert_eq!(a.public_key(), b.public_key());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            DeviceKey::load_or_create(&path),
            Err(KeyError::Exposed { .. })
        ));
    }
}
