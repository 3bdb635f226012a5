//! Targets for what is signed: HQ's command envelopes and their payloads,
//! and the agent's records (manifests) and deletion receipts.
//!
//! An envelope's signature stops every mutated input at the signature
//! check, so the payload targets take the payload itself and, once it
//! parses, sign it with the test key and hand the envelope to the same
//! verifier the product runs on what it receives or finds on disk: the
//! code behind the signature is fuzzed too, as if a key holder had sent
//! the input.
//!
//! Invariant: each target calls the product's own entry point exactly as
//! the product calls it on untrusted bytes, and asserts only what the
//! product promises (a parsed command is written back as the same command).

use std::path::PathBuf;

use sargs_core::command::{self, Trust};
use sargs_core::retention::receipt::{self, Receipt};
use sargs_core::seal::manifest::Manifest;
use sargs_core::seal::sign::{DeviceKey, Envelope};
use sargs_core::seal::verify::{self, MediaCheck};

use crate::fixture::{self, AGENT};
use crate::Harness;

/// A command as the agent receives it on its command topics: the envelope
/// is parsed and checked against the test key, trusted as HQ's.
pub struct CommandEnvelope {
    trust: Trust,
}

impl CommandEnvelope {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        let dir = fixture::scratch("command_envelope")?;
        let key = fixture::key(dir.path())?;
        Ok(Box::new(CommandEnvelope {
            trust: Trust::new(vec![key.public_key()]),
        }))
    }
}

impl Harness for CommandEnvelope {
    fn run(&self, data: &[u8]) {
        let _ = command::verify(data, &self.trust, AGENT, fixture::now());
    }
}

/// A command payload: parsed and validated; one that parses is written
/// back (it must read as the same command), signed and verified whole.
pub struct CommandPayload {
    key: DeviceKey,
    trust: Trust,
}

impl CommandPayload {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        let dir = fixture::scratch("command_payload")?;
        let key = fixture::key(dir.path())?;
        let trust = Trust::new(vec![key.public_key()]);
        Ok(Box::new(CommandPayload { key, trust }))
    }
}

impl Harness for CommandPayload {
    fn run(&self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(parsed) = command::parse_payload(text) else {
            return;
        };
        let written = command::to_payload(&parsed);
        match command::parse_payload(&written) {
            Ok(again) => assert_eq!(again, parsed, "a command written back reads differently"),
            Err(e) => panic!("a command written back does not parse: {e}"),
        }
        let envelope = self.key.sign_envelope(text);
        let _ = command::verify(&envelope, &self.trust, AGENT, fixture::now());
    }
}

/// The input as a payload `parse` reads: its text and value, if it parses.
/// The input is first opened as a signed envelope of such a payload (as its
/// file holds it), against the test key.
fn payload<'a, T>(
    key: &DeviceKey,
    data: &'a [u8],
    parse: impl Fn(&str) -> serde_json::Result<T>,
) -> Option<(&'a str, T)> {
    let _ = Envelope::open(data, Some(&key.public_key())).map(|env| parse(&env.payload));
    let text = std::str::from_utf8(data).ok()?;
    let value = parse(text).ok()?;
    Some((text, value))
}

/// The place a record or receipt is written to be verified, removed after.
struct Written(PathBuf);

impl Written {
    fn new(path: PathBuf, bytes: &[u8]) -> Option<Written> {
        std::fs::write(&path, bytes).ok().map(|()| Written(path))
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A record: the envelope bytes opened against the device key, as read from
/// a camera's directory; and a manifest payload that parses, signed and
/// verified in a camera directory of its own (`sargsctl verify`'s check).
pub struct ManifestTarget {
    dir: tempfile::TempDir,
    key: DeviceKey,
}

impl ManifestTarget {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        let dir = fixture::scratch("manifest")?;
        let key = fixture::key(dir.path())?;
        std::fs::create_dir(dir.path().join("cam-1")).map_err(|e| e.to_string())?;
        // A media file the records may name.
        std::fs::write(dir.path().join("cam-1").join("1.age"), b"sealed")
            .map_err(|e| e.to_string())?;
        Ok(Box::new(ManifestTarget { dir, key }))
    }
}

impl Harness for ManifestTarget {
    fn run(&self, data: &[u8]) {
        let Some((text, m)) = payload(&self.key, data, |t| serde_json::from_str::<Manifest>(t))
        else {
            return;
        };
        let camera = self.dir.path().join("cam-1");
        let Some(_written) = Written::new(
            camera.join(format!("{}.json", m.sequence)),
            &self.key.sign_envelope(text),
        ) else {
            return;
        };
        let _ = verify::verify_camera_checked(
            &camera,
            &self.key.public_key(),
            &std::collections::HashSet::<String>::new(),
            MediaCheck::Hash,
        );
    }
}

/// A deletion receipt: the envelope bytes opened against the device key;
/// and a receipt payload that parses, signed and verified as the chain of
/// a receipts directory.
pub struct ReceiptTarget {
    dir: tempfile::TempDir,
    key: DeviceKey,
}

impl ReceiptTarget {
    pub fn make() -> Result<Box<dyn Harness>, String> {
        let dir = fixture::scratch("receipt")?;
        let key = fixture::key(dir.path())?;
        std::fs::create_dir(dir.path().join("receipts")).map_err(|e| e.to_string())?;
        Ok(Box::new(ReceiptTarget { dir, key }))
    }
}

impl Harness for ReceiptTarget {
    fn run(&self, data: &[u8]) {
        let Some((text, r)) = payload(&self.key, data, |t| serde_json::from_str::<Receipt>(t))
        else {
            return;
        };
        let dir = self.dir.path().join("receipts");
        let Some(_written) = Written::new(
            dir.join(format!("{:010}.json", r.sequence)),
            &self.key.sign_envelope(text),
        ) else {
            return;
        };
        let _ = receipt::verify_chain(&dir, &self.key.public_key());
    }
}
