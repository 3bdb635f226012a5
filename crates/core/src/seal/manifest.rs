//! Manifests: what the agent states, signed, about each stretch of a camera's
//! time line.
//!
//! A camera's history is a hash chain of records, each a signed envelope (see
//! [`super::sign`]) whose payload is a [`Manifest`]:
//! - `record = "segment"`: a sealed media file exists for `start..end`;
//! - `record = "gap"`: nothing was recorded for `start..end`, and `gap.reason`
//!   says why (source lost, agent stopped, crash).
//! - a `segment` record with a `dock` object: a body camera's recording,
//!   ingested from the camera's storage at a dock and sealed byte for byte.
//!
//! Chain invariant: record `n` carries `sequence = n` and
//! `prev_manifest_sha256` = SHA-256 of record `n-1`'s payload bytes (64 zeros
//! for the first record); `start` never precedes the previous record's `end`
//! by more than a frame's jitter — unless the record is flagged with a
//! `clock_fault` (the agent's wall clock went back or stepped: its times
//! cannot be vouched for, and the flag says so). A verifier that holds the device key can
//! therefore prove for any time range: recorded, or an explicit gap.
//!
//! Ingested recordings (`dock` present) are the exception to the time rule:
//! a body camera records only when its officer starts it and its files
//! reach the gateway in the order they are docked, so its records follow one
//! another in ingest order and each states its own recording interval; the
//! time between them is not tiled with gap records (nothing the gateway
//! could vouch for). See `docs/format.md`, "Body cameras".
//!
//! The JSON Schema of the payload is published in `docs/manifest.schema.json`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::SyncState;

/// Version of the manifest payload format.
pub const MANIFEST_VERSION: u32 = 1;

/// SHA-256 that opens a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Kind of record in a camera's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Segment,
    Gap,
}

/// The signed statement about one stretch of a camera's time line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub v: u32,
    pub record: RecordKind,
    /// Globally unique: `{agent}/{camera}/{sequence}`.
    pub segment_id: String,
    pub agent_id: String,
    pub camera_id: String,
    /// `stationary`, `vehicle` or `body`.
    pub camera_kind: String,
    /// Position in this camera's chain, from 1.
    pub sequence: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub duration_ms: u64,
    /// Whether the agent's clock was disciplined when the record was sealed.
    pub clock: SyncState,
    /// Present when the agent cannot vouch for the record's times, with
    /// why ([`ClockFault`]): the wall clock stepped while the record was
    /// open or since, had not been synchronised again after a step, ran
    /// back behind the previous record, or reads an impossible date.
    /// Absent otherwise (and in every record written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_fault: Option<ClockFault>,
    /// Purpose of the recording, verbatim from the policy (id, text, legal basis, reference).
    pub purpose: serde_json::Value,
    /// The controller notice, verbatim from the policy.
    pub notice: serde_json::Value,
    pub policy: PolicyRef,
    pub retention: Retention,
    /// Present for `segment` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    /// Present for `gap` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    /// Present for a recording ingested from a docked body camera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dock: Option<Dock>,
    pub prev_manifest_sha256: String,
    pub agent_version: String,
    pub sealed_at: DateTime<Utc>,
}

/// Why a record's times cannot be vouched for (`docs/format.md`, "Clock
/// faults").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockFault {
    /// The wall clock stepped against the monotonic clock while the record
    /// was open, or had not been synchronised again since a step, or the
    /// record starts before its predecessor ends: its times mix clocks.
    Stepped,
    /// The record's time is earlier than [`crate::clock::time_floor`]: a
    /// board that booted without a real-time clock.
    Impossible,
}

/// Which policy the purpose and retention come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    pub id: String,
    pub reference: String,
}

/// The retention class and the instant the record must be deleted by.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub class: String,
    /// The class's period as written in the policy, e.g. `30 days`.
    pub keep: String,
    /// `start + keep`, in calendar units: the latest instant the record may exist
    /// unless a hold or a data-subject request covers it.
    pub delete_after: DateTime<Utc>,
}

/// The sealed media file of a segment record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// File name beside the manifest.
    pub file: String,
    /// `video/mp4` (fragmented MP4) for recorded segments; for an ingested
    /// recording the container the camera wrote (`video/quicktime`,
    /// `video/x-matroska`, …, `application/octet-stream` when unknown).
    pub container: String,
    /// `h264`, `h265`, or for ingested recordings also `mjpeg`, `vp8`,
    /// `vp9`, `av1`; `unknown` otherwise.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `passthrough` (camera's own stream), `encoded` (raw source encoded by
    /// the agent), `transcoded` (decoded, masked, re-encoded) or `original`
    /// (a docked camera's file, sealed byte for byte).
    pub encoding: String,
    pub masks: Masks,
    pub ciphertext_sha256: String,
    pub ciphertext_bytes: u64,
    /// age recipients the file is sealed to.
    pub recipients: Vec<String>,
    /// True when the segment was cut short (crash, power loss, source lost):
    /// the age stream lacks its final chunk; every whole chunk is salvageable.
    pub truncated: bool,
}

/// Privacy masks applied before encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Masks {
    pub rects: Vec<MaskRect>,
    /// `sha256:<hex>` of the canonical mask list: the mask configuration version.
    pub version: String,
}

/// What a dock ingest knows about a body camera's recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dock {
    /// The camera's serial (its directory name in the dock path).
    pub camera_serial: String,
    /// The officer the camera is issued to (an identifier from the config).
    pub officer_id: String,
    /// The file's path on the camera, relative to the camera's storage.
    pub original_name: String,
    pub original_bytes: u64,
    /// SHA-256 of the original bytes: the plaintext of the sealed file.
    pub original_sha256: String,
    /// The file's modification time as the camera's file system states it.
    pub original_modified: Option<DateTime<Utc>>,
    /// The recording's start as its container states it, on the camera's clock.
    pub recorded_start: Option<DateTime<Utc>>,
    /// The recording's duration as its container states it.
    pub recorded_duration_ms: Option<u64>,
    /// Where the record's `start` comes from: `container` (as recorded),
    /// `container-corrected` (minus the camera's clock offset) or `ingest`
    /// (the camera's time could not be used; see `docs/format.md`).
    pub start_source: String,
    /// Camera clock minus gateway clock when docked, if the camera states it.
    pub camera_clock_offset_ms: Option<i64>,
    pub ingested_at: DateTime<Utc>,
    /// Host name of the gateway that ingested the file.
    pub gateway: String,
    /// False when the file does not parse as video (it is sealed all the
    /// same, as evidence); `probe_error` then says what the parser said.
    pub parses_as_video: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_error: Option<String>,
}

/// Why nothing was recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    pub reason: String,
}

impl Manifest {
    /// The payload text that gets signed.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("plain data"))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses 64 lower- or upper-case hex digits.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// A privacy mask: a rectangle blacked out before encoding, in pixels of
/// the encoded frame (origin top-left). Always non-empty and inside the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The mask configuration version: SHA-256 over the rectangles in order.
pub fn masks_version(rects: &[MaskRect]) -> String {
    let canon: String = rects
        .iter()
        .map(|r| format!("{},{},{},{};", r.x, r.y, r.width, r.height))
        .collect();
    format!("sha256:{}", sha256_hex(canon.as_bytes()))
}
