//! What can be known of a message without the database: its id, its topic,
//! its JSON, and for a record or receipt its signed envelope parsed and its
//! signature checked against the key the envelope names.
//!
//! The collector prepares messages on their way from the broker, in a task
//! of their own, while the previous batch is being committed: hashing,
//! parsing and verifying Ed25519 signatures is most of a message's CPU, and
//! doing it outside the transaction keeps both cores busy and the
//! transaction short.
//!
//! Invariant: preparing decides nothing that needs the ledger. Whether the
//! agent is enrolled, whether the envelope's key is the one enrolled, and
//! whether the message was kept before are decided in the transaction
//! ([`ingest`](super::ingest)); a prepared signature is only trusted once
//! the key it was checked against is found to be the enrolled one.

use serde_json::Value;

use sargs_core::retention::receipt::Receipt;
use sargs_core::seal::manifest::Manifest;
use sargs_core::seal::sign::{Envelope, EnvelopeError};

use super::message::{message_id, parse_topic, Rules, Topic};
use super::refusal::{decode_key, refuse, Refusal};

/// A message from the broker, ready for the transaction.
pub struct Prepared {
    /// SHA-256 of topic and payload ([`message_id`]).
    pub id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// The agent the topic names (none for the fleet's command topic or a
    /// topic that is not the fleet's).
    pub agent: Option<String>,
    pub body: Body,
}

/// What the message is, as far as it can be told without the database.
pub enum Body {
    /// Refused whatever the ledger holds: not a topic of the fleet, too
    /// large, not a JSON object, or naming another agent than its topic.
    Refused(Refusal),
    /// A JSON object on one of the fleet's topics. `text` is the payload.
    Json {
        kind: Topic,
        text: String,
        value: Value,
        /// For a record or receipt event: its envelope.
        signed: Option<Result<Box<Signed>, Refusal>>,
        /// For a record or receipt event: the event without its envelope
        /// (the record's or receipt's row keeps that), as `messages` keeps it.
        stored: Option<String>,
    },
}

/// A signed record or receipt, parsed, its signature checked against the
/// key the envelope names.
pub struct Signed {
    pub envelope: Envelope,
    /// The signer's key, as the envelope names it.
    key: Vec<u8>,
    /// The signature against that key.
    verified: Result<(), EnvelopeError>,
    /// The signed document, read (refused only once the key and the
    /// signature are known to be right).
    pub doc: Result<Doc, Refusal>,
}

/// The signed document.
pub enum Doc {
    Manifest(Box<Manifest>),
    Receipt(Box<Receipt>),
}

impl Prepared {
    /// Prepares one message.
    pub fn new(rules: &Rules, topic: &str, payload: &[u8]) -> Prepared {
        let id = message_id(topic, payload);
        let parsed = parse_topic(&rules.prefix, topic);
        let agent = parsed.as_ref().and_then(|(a, _)| a.clone());
        let body = match parsed {
            None => Body::Refused(refuse(
                "topic",
                format!("not a topic of the fleet under {:?}", rules.prefix),
            )),
            Some(_) if payload.len() > rules.max_payload_bytes => Body::Refused(refuse(
                "oversized",
                format!(
                    "{} bytes, more than the {} allowed",
                    payload.len(),
                    rules.max_payload_bytes
                ),
            )),
            Some((agent, kind)) => json(agent.as_deref(), kind, payload),
        };
        Prepared {
            id,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            agent,
            body,
        }
    }
}

fn json(agent: Option<&str>, kind: Topic, payload: &[u8]) -> Body {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Body::Refused(refuse("malformed", "not UTF-8 text"));
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Body::Refused(refuse("malformed", "not a JSON object")),
        Err(e) => return Body::Refused(refuse("malformed", format!("not JSON: {e}"))),
    };
    if kind != Topic::Commands {
        let named = value
            .get("agent")
            .or_else(|| value.get("agent_id"))
            .and_then(Value::as_str);
        if agent.is_some() && named != agent {
            return Body::Refused(refuse(
                "agent-mismatch",
                format!("the payload names agent {named:?}, the topic {agent:?}"),
            ));
        }
    }
    let signed = match (kind, value.get("event").and_then(Value::as_str)) {
        (Topic::Events, Some("segment.sealed" | "gap.recorded")) => Some(signed(&value, |p| {
            match serde_json::from_str::<Manifest>(p) {
                Ok(m) => Ok(Doc::Manifest(Box::new(m))),
                Err(e) => Err(refuse("malformed", format!("manifest: {e}"))),
            }
        })),
        (Topic::Events, Some("segment.deleted")) => Some(signed(&value, |p| {
            match serde_json::from_str::<Receipt>(p) {
                Ok(r) => Ok(Doc::Receipt(Box::new(r))),
                Err(e) => Err(refuse("malformed", format!("receipt: {e}"))),
            }
        })),
        _ => None,
    };
    let stored = signed.as_ref().map(|_| {
        let mut rest = value.clone();
        if let Some(o) = rest.as_object_mut() {
            o.remove("envelope");
        }
        rest.to_string()
    });
    Body::Json {
        kind,
        text: text.to_owned(),
        value,
        signed,
        stored,
    }
}

/// The event's envelope: parsed, its signature checked against the key it
/// names, its payload read by `doc`.
fn signed(
    v: &Value,
    doc: impl FnOnce(&str) -> Result<Doc, Refusal>,
) -> Result<Box<Signed>, Refusal> {
    let Some(env) = v.get("envelope") else {
        return Err(refuse("unsigned", "no signed `envelope` in the event"));
    };
    let (envelope, key) =
        Envelope::parse_value(env).map_err(|e| refuse("malformed", e.to_string()))?;
    let verified = envelope.verify(&key);
    let doc = doc(&envelope.payload);
    Ok(Box::new(Signed {
        envelope,
        key,
        verified,
        doc,
    }))
}

impl Signed {
    /// The envelope against the enrolled key, with the codes and in the
    /// order of [`Envelope::open`]: a key other than the enrolled one
    /// first, then the signature.
    pub fn check(&self, enrolled: &str) -> Result<(), Refusal> {
        let Some(enrolled) = decode_key(enrolled) else {
            return Err(refuse("key", "the enrolled device key does not decode"));
        };
        if self.key != enrolled {
            return Err(refuse(
                "wrong-key",
                format!(
                    "signed by {}, not by the agent's enrolled device key",
                    self.envelope.key
                ),
            ));
        }
        match &self.verified {
            Ok(()) => Ok(()),
            Err(EnvelopeError::BadSignature) => {
                Err(refuse("bad-signature", "the signature does not verify"))
            }
            Err(e) => Err(refuse("malformed", e.to_string())),
        }
    }
}
