//! A record's and a receipt's row, as the ledger keeps them, from their
//! signed envelopes ([`bulk`](super::bulk) writes them).
//!
//! Invariant: a row is made only from an envelope already checked against
//! the agent's enrolled key, and only when the document names that agent.

use sargs_core::retention::receipt::Receipt;
use sargs_core::seal::manifest::{self, ClockFault, Manifest, RecordKind};

use super::db::ms;
use super::prepare::Signed;
use super::refusal::{refuse, Refusal};

/// The deadline of a record with a clock fault until its receipt says the
/// agent's: 9999-12-31T23:59:59Z, never due (the agent's own pending
/// deadline). Its manifest's deadline came from the clock that was wrong.
pub const PENDING_MS: i64 = 253_402_300_799_000;

/// A record's row, from its signed manifest.
pub struct RecordRow {
    pub agent: String,
    pub camera: String,
    pub sequence: i64,
    pub segment_id: String,
    pub kind: &'static str,
    pub start_ms: i64,
    pub end_ms: i64,
    pub class: String,
    /// The deadline the ledger judges by: the manifest's, or for a record
    /// with a clock fault [`PENDING_MS`] until its receipt brings the
    /// agent's.
    pub delete_after_ms: i64,
    /// The manifest's `clock_fault`, if any.
    pub clock_fault: Option<&'static str>,
    pub sha: String,
    pub prev: String,
    pub ciphertext_sha256: Option<String>,
    pub bytes: Option<i64>,
    pub truncated: i64,
    pub gap_reason: Option<String>,
    pub envelope: String,
}

impl RecordRow {
    /// `signed` has been checked against `agent`'s enrolled key.
    pub fn new(agent: &str, signed: &Signed, m: &Manifest) -> Result<RecordRow, Refusal> {
        if m.agent_id != agent {
            return Err(refuse(
                "agent-mismatch",
                format!("the manifest is agent {:?}'s", m.agent_id),
            ));
        }
        let env = &signed.envelope;
        let (kind, media, gap_reason) = match m.record {
            RecordKind::Segment => ("segment", m.media.as_ref(), None),
            RecordKind::Gap => ("gap", None, m.gap.as_ref().map(|g| g.reason.clone())),
        };
        Ok(RecordRow {
            agent: agent.to_owned(),
            camera: m.camera_id.clone(),
            sequence: m.sequence as i64,
            segment_id: m.segment_id.clone(),
            kind,
            start_ms: ms(m.start),
            end_ms: ms(m.end),
            class: m.retention.class.clone(),
            delete_after_ms: match m.clock_fault {
                None => ms(m.retention.delete_after),
                Some(_) => PENDING_MS,
            },
            clock_fault: m.clock_fault.map(|f| match f {
                ClockFault::Stepped => "stepped",
                ClockFault::Impossible => "impossible",
            }),
            sha: manifest::sha256_hex(env.payload.as_bytes()),
            prev: m.prev_manifest_sha256.clone(),
            ciphertext_sha256: media.map(|x| x.ciphertext_sha256.clone()),
            bytes: media.map(|x| x.ciphertext_bytes as i64),
            truncated: i64::from(media.is_some_and(|x| x.truncated)),
            gap_reason,
            envelope: serde_json::to_string(env).unwrap_or_default(),
        })
    }
}

/// A receipt's row, from its signed envelope.
pub struct ReceiptRow {
    pub agent: String,
    pub sequence: i64,
    pub segment_id: String,
    pub camera: String,
    pub class: String,
    pub delete_after_ms: i64,
    pub deleted_at_ms: i64,
    pub reason: String,
    pub command_id: Option<String>,
    pub manifest_sha256: String,
    pub ciphertext_sha256: String,
    pub sha: String,
    pub prev: String,
    pub envelope: String,
}

impl ReceiptRow {
    /// `signed` has been checked against `agent`'s enrolled key.
    pub fn new(agent: &str, signed: &Signed, r: &Receipt) -> Result<ReceiptRow, Refusal> {
        if r.agent_id != agent {
            return Err(refuse(
                "agent-mismatch",
                format!("the receipt is agent {:?}'s", r.agent_id),
            ));
        }
        let env = &signed.envelope;
        Ok(ReceiptRow {
            agent: agent.to_owned(),
            sequence: r.sequence as i64,
            segment_id: r.segment_id.clone(),
            camera: r.camera_id.clone(),
            class: r.class.clone(),
            delete_after_ms: ms(r.delete_after),
            deleted_at_ms: ms(r.deleted_at),
            reason: r.reason.as_str().to_owned(),
            command_id: r.command_id.clone(),
            manifest_sha256: r.manifest_sha256.clone(),
            ciphertext_sha256: r.ciphertext_sha256.clone(),
            sha: manifest::sha256_hex(env.payload.as_bytes()),
            prev: r.prev_receipt_sha256.clone(),
            envelope: serde_json::to_string(env).unwrap_or_default(),
        })
    }
}
